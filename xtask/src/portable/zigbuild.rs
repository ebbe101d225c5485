//! cargo-zigbuild and Zig (both from PyPI) in a virtualenv of their own,
//! installed on first use and reused afterwards: zig links against the
//! symbols of an old glibc, which the host's linker cannot.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::cmd::{self, phase, probe};
use crate::prereqs;

pub const CARGO_ZIGBUILD_VERSION: &str = "0.24.1";
pub const ZIGLANG_VERSION: &str = "0.17.1";
/// Written last by an install: a directory without it is half-installed.
const COMPLETE_MARKER: &str = "tcpstate-install-complete";

/// A usable cargo-zigbuild with its Zig.
pub struct Zigbuild {
    venv: PathBuf,
}

impl Zigbuild {
    /// The installed pair, installing it (and, on Debian/Ubuntu as root,
    /// python3-venv) when missing.
    pub fn ensure(fallback_dir: &Path) -> Result<Self> {
        let venv = venv_dir(fallback_dir);
        let zb = Self { venv };
        if zb.is_complete() {
            return Ok(zb);
        }
        // Checkouts share the directory: one installs, the others wait.
        let _lock = install_lock(&zb.venv)?;
        if zb.is_complete() {
            return Ok(zb);
        }
        zb.install()?;
        anyhow::ensure!(
            zb.is_complete(),
            "installed cargo-zigbuild {CARGO_ZIGBUILD_VERSION} and ziglang {ZIGLANG_VERSION} into \
             {}, but they do not report those versions",
            zb.venv.display()
        );
        Ok(zb)
    }

    fn python(&self) -> PathBuf {
        self.venv.join("bin/python3")
    }

    fn cargo_zigbuild(&self) -> PathBuf {
        self.venv.join("bin/cargo-zigbuild")
    }

    fn is_complete(&self) -> bool {
        if !self.venv.join(COMPLETE_MARKER).is_file() {
            return false;
        }
        let zigbuild = probe(Command::new(self.cargo_zigbuild()).arg("--version"));
        let zig = probe(Command::new(self.python()).args(["-m", "ziglang", "version"]));
        zigbuild.as_deref() == Some(&format!("cargo-zigbuild {CARGO_ZIGBUILD_VERSION}"))
            && zig.as_deref() == Some(ZIGLANG_VERSION)
    }

    fn install(&self) -> Result<()> {
        if self.venv.exists() {
            fs::remove_dir_all(&self.venv)
                .with_context(|| format!("removing the incomplete {}", self.venv.display()))?;
        }
        let python = cmd::find_program("python3", &[]);
        let venv_works = python.as_ref().is_some_and(|p| make_venv(p, &self.venv));
        if !venv_works {
            // Debian's python3 comes without venv/ensurepip.
            prereqs::install_packages(
                "Python 3 with venv (to install cargo-zigbuild and Zig from PyPI)",
                &["python3", "python3-venv"],
            )
            .with_context(|| self.manual_install_help())?;
            let python = cmd::find_program("python3", &[])
                .context("python3 installed, but `python3` is still not found")?;
            let _ = fs::remove_dir_all(&self.venv);
            anyhow::ensure!(
                make_venv(&python, &self.venv),
                "`{} -m venv {}` failed\n{}",
                python.display(),
                self.venv.display(),
                self.manual_install_help()
            );
        }

        let mut pip = Command::new(self.python());
        pip.args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
        ])
        .arg(format!("cargo-zigbuild=={CARGO_ZIGBUILD_VERSION}"))
        .arg(format!("ziglang=={ZIGLANG_VERSION}"));
        phase(format!(
            "installing cargo-zigbuild and Zig for the portable build ({})",
            cmd::show(&pip)
        ));
        cmd::run(&mut pip).with_context(|| self.manual_install_help())?;
        fs::write(self.venv.join(COMPLETE_MARKER), "")
            .with_context(|| format!("writing into {}", self.venv.display()))?;
        Ok(())
    }

    fn manual_install_help(&self) -> String {
        format!(
            "to install them by hand:\n  python3 -m venv {0}\n  {0}/bin/pip install \
             cargo-zigbuild=={CARGO_ZIGBUILD_VERSION} ziglang=={ZIGLANG_VERSION}\n  \
             touch {0}/{COMPLETE_MARKER}",
            self.venv.display()
        )
    }

    /// `cargo-zigbuild zigbuild`, running the same cargo (and so rustc) as
    /// this xtask, with this venv's Zig.
    pub fn command(&self) -> Result<Command> {
        let mut c = Command::new(self.cargo_zigbuild());
        cmd::scrub_cargo_run_env(&mut c);
        c.arg("zigbuild")
            .env("CARGO_ZIGBUILD_PYTHON_PATH", self.python());
        // cargo-zigbuild runs `cargo` from PATH: put the toolchain of the cargo
        // that runs xtask first (on a machine with Debian's cargo too).
        if let Some(toolchain_bin) = env::var_os("CARGO")
            .map(PathBuf::from)
            .and_then(|cargo| cargo.parent().map(Path::to_path_buf))
        {
            c.env("PATH", cmd::path_with(&toolchain_bin)?);
        }
        Ok(c)
    }
}

/// An exclusive lock next to `venv`, held until dropped (or the process ends).
fn install_lock(venv: &Path) -> Result<fs::File> {
    let parent = venv.parent().context("venv path has no parent")?;
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = venv.file_name().context("venv path has no name")?;
    let path = parent.join(format!("{}.lock", name.to_string_lossy()));
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if file.try_lock().is_err() {
        phase(format!(
            "waiting for another checkout installing cargo-zigbuild ({})",
            path.display()
        ));
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
    }
    Ok(file)
}

fn make_venv(python: &Path, dir: &Path) -> bool {
    let mut venv = Command::new(python);
    venv.args(["-m", "venv"]).arg(dir);
    phase(format!("creating {}", cmd::show(&venv)));
    cmd::run(&mut venv).is_ok() && dir.join("bin/python3").is_file()
}

/// `$XDG_CACHE_HOME/tcpstate/…` or `~/.cache/tcpstate/…` (kept across clean
/// checkouts: the pair is about 440 MB), else under `fallback_dir`.
fn venv_dir(fallback_dir: &Path) -> PathBuf {
    let name = format!("zigbuild-{CARGO_ZIGBUILD_VERSION}-zig-{ZIGLANG_VERSION}");
    let cache = env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
        .or_else(|| {
            env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| Path::new(&h).join(".cache"))
        });
    match cache {
        Some(dir) => dir.join("tcpstate").join(name),
        None => fallback_dir.join(name),
    }
}

//! Checks the build/test prerequisites and installs missing ones when that can
//! be done safely (Debian/Ubuntu as root for packages; `cargo install` for
//! bpf-linker). Nothing is reinstalled when everything is present.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd::{self, phase, probe};
use crate::toolchain::{cargo_bin_dirs, BpfToolchain};

const TOOLCHAIN_PKGS: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
];
/// Needed to compile bpf-linker against Debian's LLVM 22.
const LLVM_PKGS: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
];
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_SERIES: &str = "0.13.";

#[derive(Default, Clone, Copy)]
pub struct Needs {
    /// `ip` and `ss` (iproute2), and tmux, used by the kernel integration
    /// tests.
    pub iproute2: bool,
    /// A Prometheus server (Debian's `prometheus`), which the metrics
    /// integration test runs to scrape `tcpstate serve`.
    pub prometheus: bool,
}

pub struct Prereqs {
    pub toolchain: BpfToolchain,
    pub bpf_linker: PathBuf,
}

pub fn ensure(needs: Needs) -> Result<Prereqs> {
    let mut apt = Apt::new();

    let toolchain = match BpfToolchain::detect() {
        Some(tc) => tc,
        None => {
            if let Some(reason) = Apt::cannot_install() {
                bail!(
                    "{}\n(not installing automatically: {reason})",
                    missing_toolchain_help()
                );
            }
            apt.install(
                "the Debian Rust toolchain with a prebuilt BPF core",
                TOOLCHAIN_PKGS,
            )?;
            BpfToolchain::detect().context(
                "installed the Debian Rust packages, but /usr/bin/rustc still has no \
                 library for bpfel-unknown-none",
            )?
        }
    };

    let (bpf_linker, linker_version) = match find_bpf_linker() {
        Some((path, version)) if version.starts_with(BPF_LINKER_SERIES) => (path, version),
        found => {
            if let Some((path, version)) = found {
                phase(format!(
                    "{} is version {version}, need {BPF_LINKER_SERIES}x",
                    path.display()
                ));
            }
            install_bpf_linker(&toolchain, &mut apt)?;
            match find_bpf_linker() {
                Some((path, version)) if version.starts_with(BPF_LINKER_SERIES) => (path, version),
                Some((path, version)) => bail!(
                    "after installing bpf-linker {BPF_LINKER_VERSION}, {} (version {version}) \
                     is found first; remove it or fix PATH",
                    path.display()
                ),
                None => bail!("bpf-linker was installed but is not on PATH or in ~/.cargo/bin"),
            }
        }
    };

    let mut extra = String::new();
    if needs.iproute2 {
        let sbin = [PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")];
        let missing = || {
            ["ip", "ss"]
                .iter()
                .any(|p| cmd::find_program(p, &sbin).is_none())
        };
        if missing() {
            apt.install(
                "iproute2 (ip, ss: used by the integration tests)",
                &["iproute2"],
            )?;
            anyhow::ensure!(
                !missing(),
                "iproute2 installed, but `ip`/`ss` are still not found"
            );
        }
        // The real terminal `tcpstate top` is tested in.
        let bin = [PathBuf::from("/usr/bin")];
        let no_tmux = || cmd::find_program("tmux", &bin).is_none();
        if no_tmux() {
            apt.install("tmux (the terminal `tcpstate top` is tested in)", &["tmux"])?;
            anyhow::ensure!(!no_tmux(), "tmux installed, but `tmux` is still not found");
        }
        extra = "; ip, ss, tmux present".into();
    }
    if needs.prometheus {
        let bin = [PathBuf::from("/usr/bin")];
        let missing = || cmd::find_program("prometheus", &bin).is_none();
        if missing() {
            apt.install(
                "prometheus (scrapes `tcpstate serve` in the integration tests)",
                &["--no-install-recommends", "prometheus"],
            )?;
            anyhow::ensure!(
                !missing(),
                "prometheus installed, but `prometheus` is still not found"
            );
        }
        extra.push_str("; prometheus present");
    }

    phase(format!(
        "prerequisites ok (BPF toolchain: {toolchain}; bpf-linker {linker_version} at {}{extra})",
        bpf_linker.display()
    ));
    Ok(Prereqs {
        toolchain,
        bpf_linker,
    })
}

/// Installs Debian packages (as root on Debian/Ubuntu), or fails with the
/// commands to run.
pub fn install_packages(what: &str, pkgs: &[&str]) -> Result<()> {
    Apt::new().install(what, pkgs)
}

/// Finds `program` in /usr/bin, /usr/sbin or PATH, installing Debian's
/// `package` when it is missing (as root on Debian/Ubuntu; otherwise stops
/// with the command to run). Returns its path.
pub fn ensure_program(program: &str, package: &str, what: &str) -> Result<PathBuf> {
    let dirs = [PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")];
    if let Some(path) = cmd::find_program(program, &dirs) {
        return Ok(path);
    }
    Apt::new().install(
        &format!("{program} ({what})"),
        &["--no-install-recommends", package],
    )?;
    cmd::find_program(program, &dirs)
        .with_context(|| format!("{package} installed, but `{program}` is still not found"))
}

fn find_bpf_linker() -> Option<(PathBuf, String)> {
    let path = cmd::find_program("bpf-linker", &cargo_bin_dirs())?;
    let out = probe(Command::new(&path).arg("--version")).unwrap_or_default();
    // "bpf-linker 0.13.0"
    let version = out
        .split_whitespace()
        .nth(1)
        .unwrap_or("unknown")
        .to_string();
    Some((path, version))
}

fn install_bpf_linker(toolchain: &BpfToolchain, apt: &mut Apt) -> Result<()> {
    let mut install = cmd::cargo();
    install.args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION]);
    if toolchain.is_debian() {
        // Must link against the same LLVM major version as Debian's rustc (22).
        if !Path::new(LLVM_PREFIX).join("bin/llvm-config").is_file() {
            apt.install("LLVM 22 development files (to build bpf-linker)", LLVM_PKGS)?;
        }
        install.env("LLVM_PREFIX", LLVM_PREFIX).args([
            "--no-default-features",
            "--features",
            "llvm-22",
        ]);
    }
    install.args(["--locked", "--force"]);
    phase(format!(
        "installing bpf-linker {BPF_LINKER_VERSION} ({})",
        cmd::show(&install)
    ));
    cmd::run(&mut install)
}

fn missing_toolchain_help() -> String {
    format!(
        "no toolchain can build the eBPF crate: need either Debian's rustc with the prebuilt \
         core for bpfel-unknown-none (/usr/lib/rustlib/bpfel-unknown-none/lib), or a rustup \
         nightly toolchain with rust-src. Either, on Debian/Ubuntu:\n  \
         sudo apt-get update\n  \
         sudo DEBIAN_FRONTEND=noninteractive apt-get install -y {}\n  \
         LLVM_PREFIX={LLVM_PREFIX} cargo install bpf-linker --version {BPF_LINKER_VERSION} \
         --no-default-features --features llvm-22 --locked\n\
         or, with rustup:\n  \
         rustup toolchain install nightly --component rust-src\n  \
         cargo install bpf-linker --version {BPF_LINKER_VERSION} --locked",
        TOOLCHAIN_PKGS.join(" ")
    )
}

/// apt-get, used only on Debian/Ubuntu as root; otherwise reports the commands.
pub struct Apt {
    updated: bool,
}

impl Apt {
    pub fn new() -> Self {
        Self { updated: false }
    }

    /// Why packages cannot be installed automatically, if they cannot.
    fn cannot_install() -> Option<&'static str> {
        if !is_debian_like() {
            Some("not Debian/Ubuntu")
        } else if !cmd::is_root() {
            Some("not root")
        } else {
            None
        }
    }

    pub fn install(&mut self, what: &str, pkgs: &[&str]) -> Result<()> {
        let install_line = format!(
            "DEBIAN_FRONTEND=noninteractive apt-get install -y {}",
            pkgs.join(" ")
        );
        if let Some(reason) = Self::cannot_install() {
            bail!(
                "{what} is missing (not installing automatically: {reason}). Run:\n  \
                 sudo apt-get update\n  sudo {install_line}\n\
                 (or the equivalent packages of your distribution)"
            );
        }
        if !self.updated {
            let mut update = apt_get();
            update.arg("update");
            phase("updating package lists (apt-get update)");
            cmd::run(&mut update)?;
            self.updated = true;
        }
        let mut install = apt_get();
        install.args(["install", "-y"]).args(pkgs);
        phase(format!("installing {what} ({install_line})"));
        cmd::run(&mut install)
    }
}

fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// /etc/os-release ID or ID_LIKE mentions debian or ubuntu.
fn is_debian_like() -> bool {
    let text = fs::read_to_string("/etc/os-release")
        .or_else(|_| fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    os_release_is_debian_like(&text)
}

fn os_release_is_debian_like(text: &str) -> bool {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(key, _)| matches!(key.trim(), "ID" | "ID_LIKE"))
        .flat_map(|(_, value)| {
            value
                .trim()
                .trim_matches(|c| c == '"' || c == '\'')
                .split_whitespace()
                .map(str::to_ascii_lowercase)
                .collect::<Vec<_>>()
        })
        .any(|id| id == "debian" || id == "ubuntu")
}

#[cfg(test)]
mod tests {
    use super::os_release_is_debian_like;

    #[test]
    fn os_release() {
        assert!(os_release_is_debian_like("NAME=\"Debian\"\nID=debian\n"));
        assert!(os_release_is_debian_like(
            "ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n"
        ));
        assert!(os_release_is_debian_like("ID=ubuntu\nID_LIKE=debian\n"));
        assert!(!os_release_is_debian_like(
            "ID=fedora\nID_LIKE=\"rhel centos\"\n"
        ));
        assert!(!os_release_is_debian_like(
            "ID=arch\nNAME=\"debian-like\"\n"
        ));
    }
}

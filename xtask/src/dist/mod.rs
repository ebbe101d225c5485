//! `cargo xtask dist`: the release binary with its man pages and shell
//! completions next to it, a Debian package in target/dist, and the checks
//! of what was built (package contents, systemd units, alert rules).

mod chroot;
mod deb;
mod rules;
mod verify;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::cmd::{self, phase};
use crate::prereqs::{self, Needs};
use crate::workspace::{expect_file, Workspace};
use crate::{ebpf, userspace};

/// The generator of man pages and completions built with the binary
/// (tcpstate-user/src/bin/tcpstate-docs.rs).
const DOCS_BIN: &str = "tcpstate-docs";

#[derive(clap::Args)]
pub struct DistArgs {
    /// Also install and remove the package in a fresh Debian root
    /// (debootstrap, cached under target/dist/chroot-cache; the first run
    /// downloads about 50 MB from Debian's archive).
    #[arg(long)]
    pub install_check: bool,
}

pub fn run(ws: &Workspace, args: &DistArgs) -> Result<i32> {
    let pre = prereqs::ensure(Needs::default())?;
    let obj = ebpf::build(ws, &pre)?;
    let bin = userspace::build(ws, &obj, true)?;
    let docs = generate_docs(&bin)?;
    phase(format!(
        "man pages in {}, completions in {}",
        docs.man1.display(),
        docs.completions.display()
    ));

    check_contrib(ws)?;

    let version = binary_version(&bin)?;
    let dist_dir = ws.target_dir.join("dist");
    let package = deb::build(
        ws,
        &deb::Inputs {
            bin: &bin,
            docs: &docs,
            version: &version,
            out_dir: &dist_dir,
        },
    )?;
    verify::package(&package, &version)?;
    verify::units(&package, &dist_dir)?;
    phase(format!("package: {}", package.display()));

    let context = container_context(ws, &bin, &dist_dir)?;
    phase(format!(
        "container build context: {} (podman build -f Containerfile {})",
        context.display(),
        context.display()
    ));

    if args.install_check {
        chroot::install_check(&dist_dir, &package, &version)?;
    }
    Ok(0)
}

/// The checks of contrib/ that need no build: alert rules (promtool check
/// and unit tests) and the dashboard's shape; `cargo xtask test` runs them.
pub fn check_contrib(ws: &Workspace) -> Result<()> {
    rules::check(ws)
}

/// Where the generated man pages and completions are.
pub struct Docs {
    pub man1: PathBuf,
    pub completions: PathBuf,
}

/// Runs tcpstate-docs (built with the binary) to write `man/man1` and
/// `completions` next to the binary.
fn generate_docs(bin: &Path) -> Result<Docs> {
    let dir = bin.parent().context("the binary has a directory")?;
    let tool = dir.join(DOCS_BIN);
    expect_file(&tool, "tcpstate-docs (man page and completion generator)")?;
    for sub in ["man", "completions"] {
        let old = dir.join(sub);
        if old.exists() {
            std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
        }
    }
    cmd::run(Command::new(&tool).arg(dir))?;
    Ok(Docs {
        man1: dir.join("man/man1"),
        completions: dir.join("completions"),
    })
}

/// "0.1.0" from `tcpstate --version` ("tcpstate 0.1.0"): the version of the
/// binary that goes into the package.
fn binary_version(bin: &Path) -> Result<String> {
    let out = cmd::probe(Command::new(bin).arg("--version"))
        .with_context(|| format!("`{} --version` failed", bin.display()))?;
    parse_version(&out).with_context(|| format!("unexpected `tcpstate --version` output: {out:?}"))
}

fn parse_version(out: &str) -> Option<String> {
    let version = out.strip_prefix("tcpstate ")?.trim();
    let ok = !version.is_empty()
        && version.starts_with(|c: char| c.is_ascii_digit())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~-".contains(c));
    ok.then(|| version.to_string())
}

/// target/dist/container: the Containerfile and the binary, ready for
/// `podman build` / `docker build`.
fn container_context(ws: &Workspace, bin: &Path, dist_dir: &Path) -> Result<PathBuf> {
    let dir = dist_dir.join("container");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (from, to) in [
        (
            ws.root.join("contrib/container/Containerfile"),
            dir.join("Containerfile"),
        ),
        (bin.to_path_buf(), dir.join("tcpstate")),
    ] {
        std::fs::copy(&from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn version_from_the_binary() {
        assert_eq!(parse_version("tcpstate 0.1.0").as_deref(), Some("0.1.0"));
        assert_eq!(
            parse_version("tcpstate 1.2.3-rc1\n").as_deref(),
            Some("1.2.3-rc1")
        );
        assert_eq!(parse_version("tcpstate"), None);
        assert_eq!(parse_version("other 0.1.0"), None);
        assert_eq!(parse_version("tcpstate ../x"), None);
        assert_eq!(parse_version("tcpstate 1 2"), None);
    }
}

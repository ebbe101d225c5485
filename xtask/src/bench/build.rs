//! Builds what the bench runs: tcpstate (release: what users run) and the
//! churn generator and probe from the tests crate.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::cmd::{self, phase};
use crate::userspace::{self, BPF_OBJECT_ENV};
use crate::workspace::{expect_file, Workspace};
use crate::{ebpf, prereqs};

pub const CHURN_BIN: &str = "tcpstate-churn";
pub const PROBE_BIN: &str = "tcpstate-bench-probe";

pub struct Built {
    pub tcpstate: PathBuf,
    pub churn: PathBuf,
    pub probe: PathBuf,
}

pub fn all(ws: &Workspace, release: bool, iproute2: bool) -> Result<Built> {
    // Whatever else other commands need, the bench needs only this.
    #[allow(clippy::needless_update)]
    let needs = prereqs::Needs {
        iproute2,
        ..Default::default()
    };
    let pre = prereqs::ensure(needs)?;
    let obj = ebpf::build(ws, &pre)?;
    let tcpstate = userspace::build(ws, &obj, release)?;
    let (churn, probe) = helpers(ws, &obj, release)?;
    Ok(Built {
        tcpstate,
        churn,
        probe,
    })
}

/// A tcpstate binary given with `--tcpstate` (for instance one built from
/// another commit, to compare), with the release helpers a previous bench
/// built: nothing is built.
pub fn prebuilt(ws: &Workspace, tcpstate: &Path) -> Result<Built> {
    let dir = ws.target_dir.join("release");
    let (churn, probe) = (dir.join(CHURN_BIN), dir.join(PROBE_BIN));
    anyhow::ensure!(
        tcpstate.is_file(),
        "--tcpstate {}: no such file",
        tcpstate.display()
    );
    for helper in [&churn, &probe] {
        anyhow::ensure!(
            helper.is_file(),
            "{} is missing: run `cargo xtask bench` once without --tcpstate to build it",
            helper.display()
        );
    }
    Ok(Built {
        tcpstate: tcpstate.to_path_buf(),
        churn,
        probe,
    })
}

/// `tcpstate-churn` and `tcpstate-bench-probe` (tests crate).
pub fn helpers(ws: &Workspace, obj: &Path, release: bool) -> Result<(PathBuf, PathBuf)> {
    let mut build = cmd::cargo();
    build
        .args([
            "build",
            "-p",
            "tcpstate-tests",
            "--bin",
            CHURN_BIN,
            "--bin",
            PROBE_BIN,
        ])
        .env(BPF_OBJECT_ENV, obj)
        .env("CARGO_TARGET_DIR", &ws.target_dir)
        .current_dir(&ws.root);
    if release {
        build.arg("--release");
    }
    phase(format!(
        "building the churn generator and the bench probe ({})",
        if release { "release" } else { "debug" }
    ));
    cmd::run(&mut build)?;
    let dir = ws
        .target_dir
        .join(if release { "release" } else { "debug" });
    let (churn, probe) = (dir.join(CHURN_BIN), dir.join(PROBE_BIN));
    expect_file(&churn, "churn generator")?;
    expect_file(&probe, "bench probe")?;
    Ok((churn, probe))
}

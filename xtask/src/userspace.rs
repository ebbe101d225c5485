//! Builds the userspace package (tcpstate-user) with the eBPF object embedded.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::cmd::{self, phase};
use crate::workspace::{expect_file, Workspace};

/// Environment variable read by tcpstate-user's build.rs.
pub const BPF_OBJECT_ENV: &str = "TCPSTATE_BPF_OBJECT";

/// Returns the absolute path of the `tcpstate` binary.
pub fn build(ws: &Workspace, bpf_object: &Path, release: bool) -> Result<PathBuf> {
    let mut build = cmd::cargo();
    build.args(["build", "-p", "tcpstate-user"]);
    if release {
        build.arg("--release");
    }
    build
        .env(BPF_OBJECT_ENV, bpf_object)
        .env("CARGO_TARGET_DIR", &ws.target_dir)
        .current_dir(&ws.root);
    phase(format!(
        "building userspace ({})",
        if release { "release" } else { "debug" }
    ));
    cmd::run(&mut build)?;
    let bin = ws.user_bin(release);
    expect_file(&bin, "tcpstate binary")?;
    Ok(bin)
}

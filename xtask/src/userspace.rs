//! Builds the userspace package (tcpstate-user) with the eBPF object embedded.
//! Always the portable binary (`crate::portable`).

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::workspace::Workspace;

/// Environment variable read by tcpstate-user's build.rs.
pub const BPF_OBJECT_ENV: &str = "TCPSTATE_BPF_OBJECT";

/// Returns the absolute path of the `tcpstate` binary: always the portable
/// kind (see `portable`), checked before it is returned.
pub fn build(ws: &Workspace, bpf_object: &Path, release: bool) -> Result<PathBuf> {
    crate::portable::build(ws, bpf_object, BPF_OBJECT_ENV, release)
}

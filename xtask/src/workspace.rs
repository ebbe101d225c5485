//! Paths inside the workspace.

use std::env;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Name of the userspace binary (package `tcpstate-user`) and of the eBPF binary.
pub const BIN_NAME: &str = "tcpstate";
/// Target triple of the eBPF object.
pub const BPF_TARGET: &str = "bpfel-unknown-none";

pub struct Workspace {
    pub root: PathBuf,
    /// Cargo's target directory for the userspace workspace (absolute).
    pub target_dir: PathBuf,
}

impl Workspace {
    pub fn locate() -> Result<Self> {
        // `cargo run` sets CARGO_MANIFEST_DIR to .../xtask; fall back to the
        // path this binary was compiled from.
        let manifest_dir = env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        let root = manifest_dir
            .parent()
            .context("xtask manifest directory has no parent")?
            .to_path_buf();
        anyhow::ensure!(
            root.join("Cargo.toml").is_file(),
            "workspace root {} has no Cargo.toml",
            root.display()
        );
        let cwd = env::current_dir().context("reading the current directory")?;
        let target_dir = env::var_os("CARGO_TARGET_DIR")
            .or_else(|| env::var_os("CARGO_BUILD_TARGET_DIR"))
            .filter(|dir| !dir.is_empty())
            .map(|dir| cwd.join(dir))
            .unwrap_or_else(|| root.join("target"));
        Ok(Self { root, target_dir })
    }

    pub fn ebpf_dir(&self) -> PathBuf {
        self.root.join("tcpstate-ebpf")
    }

    /// Separate target directory for the eBPF crate (its own lock file and profile).
    pub fn bpf_target_dir(&self) -> PathBuf {
        self.target_dir.join("bpf")
    }

    /// The eBPF object; always built with the release profile.
    pub fn bpf_object(&self) -> PathBuf {
        self.bpf_target_dir()
            .join(BPF_TARGET)
            .join("release")
            .join(BIN_NAME)
    }

    /// The `tcpstate` binary xtask builds (portable: built with `--target`).
    pub fn user_bin(&self, release: bool) -> PathBuf {
        let profile = if release { "release" } else { "debug" };
        self.target_dir
            .join(crate::portable::TARGET)
            .join(profile)
            .join(BIN_NAME)
    }
}

/// Fails with a clear message when an expected build output is missing.
pub fn expect_file(path: &Path, what: &str) -> Result<()> {
    anyhow::ensure!(
        path.is_file(),
        "{what} not found at {} after a successful build",
        path.display()
    );
    Ok(())
}

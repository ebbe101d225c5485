//! Which compiler builds the eBPF crate.
//!
//! (a) Debian: /usr/bin/rustc ships a prebuilt `core` for bpfel-unknown-none
//!     (package libstd-rust-web-dev-bpf), so no `-Z build-std` is needed.
//! (b) rustup nightly with the rust-src component: `-Z build-std=core`.
//!
//! (a) is preferred when present.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd::{self, probe};
use crate::workspace::BPF_TARGET;

pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
pub const DEBIAN_CARGO: &str = "/usr/bin/cargo";

pub enum BpfToolchain {
    Debian {
        rustc: PathBuf,
        cargo: PathBuf,
        version: String,
    },
    Nightly {
        rustup: PathBuf,
        version: String,
    },
}

impl BpfToolchain {
    pub fn detect() -> Option<Self> {
        detect_debian().or_else(detect_nightly)
    }

    pub fn is_debian(&self) -> bool {
        matches!(self, Self::Debian { .. })
    }
}

impl fmt::Display for BpfToolchain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Debian { rustc, version, .. } => {
                write!(f, "Debian {version} ({})", rustc.display())
            }
            Self::Nightly { version, .. } => write!(f, "rustup nightly {version} + rust-src"),
        }
    }
}

fn detect_debian() -> Option<BpfToolchain> {
    let rustc = PathBuf::from(DEBIAN_RUSTC);
    let cargo = PathBuf::from(DEBIAN_CARGO);
    if !rustc.is_file() || !cargo.is_file() {
        return None;
    }
    let sysroot = probe(Command::new(&rustc).args(["--print", "sysroot"]))?;
    let core_dir = Path::new(&sysroot)
        .join("lib/rustlib")
        .join(BPF_TARGET)
        .join("lib");
    if !core_dir.is_dir() {
        return None;
    }
    let version = probe(Command::new(&rustc).arg("--version"))?;
    Some(BpfToolchain::Debian {
        rustc,
        cargo,
        version: short_version(&version),
    })
}

fn detect_nightly() -> Option<BpfToolchain> {
    let rustup = cmd::find_program("rustup", &cargo_bin_dirs())?;
    let rustc = |arg: &[&str]| {
        let mut c = Command::new(&rustup);
        c.args(["run", "nightly", "rustc"]).args(arg);
        cmd::scrub_for_bpf(&mut c);
        probe(&mut c)
    };
    let sysroot = rustc(&["--print", "sysroot"])?;
    if !Path::new(&sysroot)
        .join("lib/rustlib/src/rust/library")
        .is_dir()
    {
        return None;
    }
    let version = rustc(&["--version"])?;
    Some(BpfToolchain::Nightly {
        rustup,
        version: short_version(&version),
    })
}

/// "rustc 1.96.0 (ac68faa20 2026-05-25) (...)" -> "rustc 1.96.0".
fn short_version(v: &str) -> String {
    v.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// `~/.cargo/bin` (or `$CARGO_HOME/bin`), searched before PATH.
pub fn cargo_bin_dirs() -> Vec<PathBuf> {
    cmd::cargo_home()
        .map(|h| vec![h.join("bin")])
        .unwrap_or_default()
}

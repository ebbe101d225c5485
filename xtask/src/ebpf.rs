//! Builds the eBPF crate (tcpstate-ebpf) for bpfel-unknown-none.
//!
//! Always with the release profile: the verifier needs optimized code.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::cmd::{self, phase};
use crate::prereqs::Prereqs;
use crate::toolchain::BpfToolchain;
use crate::workspace::{expect_file, Workspace, BPF_TARGET};

/// `--btf` makes bpf-linker emit .BTF/.BTF.ext; globals are found by symbol.
const BPF_RUSTFLAGS: &str = "-C debuginfo=2 -C link-arg=--btf";

/// Returns the absolute path of the eBPF object.
pub fn build(ws: &Workspace, pre: &Prereqs) -> Result<PathBuf> {
    let mut build = match &pre.toolchain {
        BpfToolchain::Debian { rustc, cargo, .. } => {
            let mut c = Command::new(cargo);
            cmd::scrub_for_bpf(&mut c);
            // Debian's prebuilt core for the BPF target is found in rustc's
            // sysroot; aya-ebpf needs `feature(asm_experimental_arch)`.
            c.env("RUSTC", rustc).env("RUSTC_BOOTSTRAP", "1");
            c.args(["build", "--release"]);
            c
        }
        BpfToolchain::Nightly { rustup, .. } => {
            let mut c = Command::new(rustup);
            cmd::scrub_for_bpf(&mut c);
            c.args(["run", "nightly", "cargo", "build", "--release"])
                .args(["-Z", "build-std=core"]);
            c
        }
    };
    let linker_dir = pre
        .bpf_linker
        .parent()
        .context("bpf-linker path has no parent directory")?;
    build
        .args(["--locked", "--target", BPF_TARGET])
        .env("RUSTFLAGS", BPF_RUSTFLAGS)
        .env("CARGO_TARGET_DIR", ws.bpf_target_dir())
        .env("PATH", cmd::path_with(linker_dir)?)
        .current_dir(ws.ebpf_dir());

    phase(format!(
        "building eBPF object with {} ({})",
        pre.toolchain,
        cmd::show(&build)
    ));
    cmd::run(&mut build).context(
        "building the eBPF crate failed (if Cargo.lock is out of date, run the same \
         command without --locked in tcpstate-ebpf/)",
    )?;
    let obj = ws.bpf_object();
    expect_file(&obj, "eBPF object")?;
    Ok(obj)
}

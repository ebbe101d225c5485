//! The portable `tcpstate`: every binary xtask builds (debug and release, so
//! the tested binary is the shipped kind) is linked by cargo-zigbuild against
//! glibc 2.17's symbols, then checked: its ELF needs nothing newer than the
//! floor and nothing outside glibc, it embeds the BPF object, and it starts.

pub mod elf_needs;
mod zigbuild;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd::{self, phase};
use crate::workspace::{expect_file, Workspace, BIN_NAME};
use elf_needs::GlibcVersion;

/// The oldest glibc the binary runs on (RHEL/CentOS 7).
pub const GLIBC_FLOOR: GlibcVersion = GlibcVersion(2, 17, 0);
/// The triple cargo builds for; binaries land in `target/<it>/<profile>/`.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// cargo-zigbuild's spelling: the triple with the glibc version to link against.
fn zig_target() -> String {
    format!("{TARGET}.{GLIBC_FLOOR}")
}

/// Builds tcpstate-user for the glibc floor with `bpf_object` embedded,
/// checks the result and returns its path.
pub fn build(
    ws: &Workspace,
    bpf_object: &Path,
    bpf_object_env: &str,
    release: bool,
) -> Result<PathBuf> {
    let zigbuild = zigbuild::Zigbuild::ensure(&ws.target_dir)?;
    let mut build = zigbuild.command()?;
    build
        .args(["-p", "tcpstate-user", "--target", &zig_target()])
        .env(bpf_object_env, bpf_object)
        .env("CARGO_TARGET_DIR", &ws.target_dir)
        .current_dir(&ws.root);
    if release {
        build.arg("--release");
    }
    phase(format!(
        "building userspace ({}, portable: glibc {GLIBC_FLOOR}+ via cargo-zigbuild)",
        if release { "release" } else { "debug" }
    ));
    cmd::run(&mut build)?;
    let bin = ws.user_bin(release);
    expect_file(&bin, "tcpstate binary")?;
    verify(&bin, bpf_object)?;
    Ok(bin)
}

/// The checks every built binary passes: runs on the glibc floor, carries the
/// BPF object, starts here.
pub fn verify(bin: &Path, bpf_object: &Path) -> Result<()> {
    let data = fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
    let needs = elf_needs::read(&data).with_context(|| format!("checking {}", bin.display()))?;
    let problems = needs.problems(GLIBC_FLOOR);
    if !problems.is_empty() {
        bail!(
            "{} would not run on every glibc {GLIBC_FLOOR}+ system:\n  {}",
            bin.display(),
            problems.join("\n  ")
        );
    }

    let object = fs::read(bpf_object)
        .with_context(|| format!("reading the BPF object {}", bpf_object.display()))?;
    anyhow::ensure!(
        !object.is_empty() && memchr::memmem::find(&data, &object).is_some(),
        "{} does not embed the BPF object {} (tcpstate-user/build.rs)",
        bin.display(),
        bpf_object.display()
    );

    let version = cmd::probe(Command::new(bin).arg("--version"));
    anyhow::ensure!(
        version
            .as_deref()
            .is_some_and(|v| v.starts_with(&format!("{BIN_NAME} "))),
        "`{} --version` failed or printed {version:?} instead of \"{BIN_NAME} VERSION\"",
        bin.display()
    );

    let linking = if needs.is_static() {
        "fully static".to_string()
    } else {
        format!(
            "needs glibc {} at most, libraries {}",
            needs
                .newest_glibc()
                .map_or_else(|| "(no versioned symbol)".to_string(), |v| v.to_string()),
            needs.libraries.join(" ")
        )
    };
    phase(format!(
        "checked {}: {linking} (floor {GLIBC_FLOOR}); BPF object embedded ({} bytes); `--version` runs",
        bin.display(),
        object.len()
    ));
    Ok(())
}

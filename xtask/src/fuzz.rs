//! `cargo xtask fuzz`: the recording reader under libFuzzer (cargo-fuzz,
//! rustup nightly). The tests run a short deterministic smoke form of the
//! same entry point (`tcpstate::recording::fuzz_read`) on every run.
use crate::{cmd, workspace::Workspace};
use anyhow::{bail, Context, Result};
use std::process::Command;

pub fn run(ws: &Workspace, seconds: u64) -> Result<i32> {
    if cmd::probe(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])).is_none() {
        bail!(
            "the fuzzer needs rustup's nightly toolchain: run `rustup toolchain install nightly`"
        );
    }
    let cargo_fuzz = cmd::cargo_home().map(|home| home.join("bin"));
    if cmd::find_program("cargo-fuzz", cargo_fuzz.as_slice()).is_none() {
        cmd::phase("installing cargo-fuzz (cargo install cargo-fuzz --locked)");
        cmd::run(cmd::cargo().args(["install", "cargo-fuzz", "--locked"]))
            .context("installing cargo-fuzz")?;
    }
    let fuzz_dir = ws.root.join("tcpstate-user").join("fuzz");
    cmd::phase(format!("fuzzing the recording reader for {seconds} s"));
    let mut fuzz = Command::new("cargo");
    cmd::scrub_cargo_run_env(&mut fuzz);
    fuzz.current_dir(&fuzz_dir)
        .args(["+nightly", "fuzz", "run", "--fuzz-dir"])
        .arg(&fuzz_dir)
        .args([
            "recording_reader",
            "--",
            &format!("-max_total_time={seconds}"),
        ]);
    cmd::run(&mut fuzz)?;
    Ok(0)
}

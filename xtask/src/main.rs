//! `cargo xtask`: builds the eBPF object and the userspace binary, runs it and
//! runs the test suites. See `cargo xtask --help`.

mod bench;
mod cmd;
mod dist;
mod ebpf;
mod fuzz;
mod portable;
mod prereqs;
mod run;
mod test;
mod toolchain;
mod userspace;
mod vm;
mod workspace;

use std::ffi::OsString;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::prereqs::Needs;
use crate::workspace::Workspace;

#[derive(Parser)]
#[command(name = "xtask", about = "Build, run and test tcpstate")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the eBPF object (always optimized) and the userspace binary.
    Build {
        /// Build the userspace binary with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Build, then run tcpstate (through `sudo -E` when not root).
    Run {
        /// Build the userspace binary with the release profile.
        #[arg(long)]
        release: bool,
        /// Arguments for tcpstate, after `--`.
        #[arg(last = true, value_name = "TCPSTATE_ARGS")]
        args: Vec<OsString>,
    },
    /// fmt + clippy, unit tests, then (as root) the kernel integration tests
    /// on this host's kernel and, in VMs, on Debian's 5.10 and 6.1 kernels.
    Test {
        /// Kernels for the kernel tests: `host` (the running kernel), `5.10`,
        /// `6.1`, `6.12` (each booted in a VM), or `all` (every one). Repeat
        /// or separate with commas. Default: host, 5.10 and 6.1.
        #[arg(long = "kernel", value_name = "VERSION", value_delimiter = ',')]
        kernels: Vec<String>,
        /// Which kernel tests each VM runs. Default: `full` when `--kernel`
        /// is given, else `ci` (all but the longest two, which the host runs).
        #[arg(long, value_enum)]
        vm_suite: Option<vm::Suite>,
        /// Arguments for the integration test run (e.g. a test name filter), after `--`.
        #[arg(last = true, value_name = "TEST_ARGS")]
        args: Vec<OsString>,
    },
    /// Benchmark: tcpstate's cost under connection churn, next to no tracer
    /// and bpftrace; writes BENCHMARKS.md and JSON (as root).
    Bench(bench::BenchArgs),
    /// Two tcpstate binaries, one command, in interleaved rounds at a fixed
    /// load: the median per-round difference of their CPU per transition
    /// (as root; the churn generator of an earlier `cargo xtask bench`)
    Ab(bench::ab::AbArgs),
    /// Release binary with man pages and completions next to it, the Debian
    /// package target/dist/tcpstate_VERSION_ARCH.deb and a container build
    /// context, each checked (package contents, systemd units, alert rules).
    Dist(dist::DistArgs),
    /// Fuzz the recording reader with libFuzzer (needs rustup nightly).
    Fuzz {
        /// How long to fuzz.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Build only the eBPF object.
    #[command(hide = true)]
    BuildEbpf,
    /// Check (and install if possible) the prerequisites only.
    #[command(hide = true)]
    Prereqs,
}

fn main() {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            std::process::exit(1);
        }
    }
}

/// Runs one subcommand; returns the process exit code.
fn dispatch(command: Command) -> Result<i32> {
    let ws = Workspace::locate()?;
    match command {
        Command::Build { release } => {
            let pre = prereqs::ensure(Needs::default())?;
            let obj = ebpf::build(&ws, &pre)?;
            let bin = userspace::build(&ws, &obj, release)?;
            println!("{}", bin.display());
            Ok(0)
        }
        Command::Run { release, args } => {
            let pre = prereqs::ensure(Needs::default())?;
            let obj = ebpf::build(&ws, &pre)?;
            let bin = userspace::build(&ws, &obj, release)?;
            run::run(&bin, &args)
        }
        Command::Test {
            kernels,
            vm_suite,
            args,
        } => {
            let plan = test::Plan::parse(&kernels, vm_suite)?;
            test::test(&ws, &plan, &args)
        }
        Command::BuildEbpf => {
            let pre = prereqs::ensure(Needs::default())?;
            let obj = ebpf::build(&ws, &pre)?;
            println!("{}", obj.display());
            Ok(0)
        }
        Command::Prereqs => {
            prereqs::ensure(Needs {
                iproute2: true,
                prometheus: true,
            })?;
            Ok(0)
        }
        Command::Fuzz { seconds } => fuzz::run(&ws, seconds),
        Command::Bench(args) => bench::run(&ws, &args),
        Command::Ab(args) => bench::ab::run(&ws, &args),
        Command::Dist(args) => dist::run(&ws, &args),
    }
}

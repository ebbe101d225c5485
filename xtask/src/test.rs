//! `cargo xtask test`: fmt + clippy, unit tests, kernel integration tests.

use std::ffi::OsString;
use std::process::Command;

use anyhow::{Context, Result};

use crate::cmd::{self, phase};
use crate::ebpf;
use crate::prereqs::{self, Needs};
use crate::userspace::{self, BPF_OBJECT_ENV};
use crate::vm;
use crate::workspace::Workspace;

/// Environment variable the integration tests read to find the binary.
const BIN_ENV: &str = "TCPSTATE_BIN";

/// Which kernels the kernel tests run on.
pub struct Plan {
    /// The running kernel, directly.
    pub host: bool,
    /// Debian kernels, each in a VM.
    pub vms: Vec<vm::Series>,
    pub suite: vm::Suite,
}

impl Plan {
    /// From `--kernel` values (`host`, a series of the matrix, `all`).
    pub fn parse(kernels: &[String], suite: Option<vm::Suite>) -> Result<Plan> {
        if kernels.is_empty() {
            return Ok(Plan {
                host: true,
                vms: vec![vm::MATRIX[0], vm::MATRIX[1]],
                suite: suite.unwrap_or(vm::Suite::Ci),
            });
        }
        let mut plan = Plan {
            host: false,
            vms: Vec::new(),
            suite: suite.unwrap_or(vm::Suite::Full),
        };
        for name in kernels {
            match name.as_str() {
                "host" => plan.host = true,
                "all" => {
                    plan.host = true;
                    plan.vms = vm::MATRIX.to_vec();
                }
                other => {
                    let series = vm::series(other).with_context(|| {
                        format!(
                            "--kernel {other}: not in the matrix; use host, all, or one of {}",
                            vm::MATRIX
                                .iter()
                                .map(|s| s.name)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })?;
                    if !plan.vms.contains(&series) {
                        plan.vms.push(series);
                    }
                }
            }
        }
        Ok(plan)
    }
}

/// Returns the exit code (0 also when the integration tests were skipped; the
/// output says so).
pub fn test(ws: &Workspace, plan: &Plan, test_args: &[OsString]) -> Result<i32> {
    let root = cmd::is_root();
    let pre = prereqs::ensure(Needs {
        iproute2: root,
        prometheus: root,
    })?;

    phase("checking formatting (cargo fmt --all -- --check; rustfmt --check tcpstate-ebpf)");
    cmd::run(ws_cargo(ws).args(["fmt", "--all", "--", "--check"]))?;
    // The eBPF crate is outside the workspace; rustfmt follows its `mod`s.
    cmd::run(
        Command::new(rustfmt())
            .args(["--check", "--edition", "2021"])
            .arg(ws.ebpf_dir().join("src/main.rs")),
    )?;

    let obj = ebpf::build(ws, &pre)?;

    phase("running clippy (cargo clippy --workspace --all-targets -- -D warnings)");
    cmd::run(
        ws_cargo(ws)
            .args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
            .env(BPF_OBJECT_ENV, &obj),
    )?;

    let bin = userspace::build(ws, &obj, false)?;

    phase("running unit tests (cargo test --workspace --exclude tcpstate-tests)");
    cmd::run(
        ws_cargo(ws)
            .args(["test", "--workspace", "--exclude", "tcpstate-tests"])
            .env(BPF_OBJECT_ENV, &obj),
    )?;

    if root {
        phase("checking the alert rules and the dashboard (promtool check/test rules; contrib/)");
        crate::dist::check_contrib(ws)?;
    }
    phase("fmt, clippy and unit tests passed");
    if !root {
        phase(
            "kernel integration tests (host and VMs): SKIPPED (not root: they load a BPF \
             program, and the VMs need kernel modules installed; run: sudo -E cargo xtask test)",
        );
        return Ok(0);
    }
    if plan.host {
        host_kernel_tests(ws, &obj, &bin, test_args)?;
    }
    if !plan.vms.is_empty() {
        let binaries = vm::test_binaries(ws, &obj)?;
        vm::run_matrix(ws, &plan.vms, plan.suite, &bin, &binaries, test_args)?;
    }
    phase(format!(
        "all tests passed (fmt, clippy, unit{}{})",
        if plan.host {
            ", kernel tests on the host"
        } else {
            ""
        },
        if plan.vms.is_empty() {
            String::new()
        } else {
            format!(
                ", kernel tests ({:?}) on {}",
                plan.suite,
                plan.vms
                    .iter()
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    ));
    Ok(0)
}

/// The kernel tests on the running kernel, then the bench smoke.
fn host_kernel_tests(
    ws: &Workspace,
    obj: &std::path::Path,
    bin: &std::path::Path,
    test_args: &[OsString],
) -> Result<()> {
    let _lock = kernel_tests_lock()?;
    phase("running kernel integration tests on the host's kernel (cargo test -p tcpstate-tests)");
    let mut integration = ws_cargo(ws);
    integration
        .args(["test", "-p", "tcpstate-tests"])
        .env(BPF_OBJECT_ENV, obj)
        .env(BIN_ENV, bin);
    // One test at a time: each test loads its own BPF programs, and the
    // kernel skips a tracepoint's programs on a CPU that is already running
    // one (counted as lost), so concurrent tracers would make the tests'
    // exact expectations depend on scheduling.
    integration
        .arg("--")
        .arg("--test-threads=1")
        .args(test_args);
    cmd::run(&mut integration)?;
    // Only the full run: a filtered one (`-- NAME`) runs just those tests.
    if test_args.is_empty() {
        phase("running the bench smoke (cargo xtask bench --smoke: figures produced, JSON well formed)");
        crate::bench::smoke(ws, obj, bin)?;
    }
    Ok(())
}

/// Where every checkout on this host takes its turn at the kernel tests (and
/// benchmarks: anything that attaches tracers to the host's tracepoint).
const KERNEL_TESTS_LOCK: &str = "/run/lock/tcpstate-kernel-tests.lock";

/// Takes the host-wide lock of the kernel tests, waiting for another
/// checkout's run to end: two runs at once see each other's sockets and make
/// the kernel skip each other's programs, so their exact expectations fail.
/// The lock goes with the process, also when it dies.
pub(crate) fn kernel_tests_lock() -> Result<std::fs::File> {
    let dir = std::path::Path::new(KERNEL_TESTS_LOCK)
        .parent()
        .expect("lock path has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(KERNEL_TESTS_LOCK)
        .with_context(|| format!("opening {KERNEL_TESTS_LOCK}"))?;
    if file.try_lock().is_err() {
        phase(format!(
            "waiting for another run of the kernel tests on this host ({KERNEL_TESTS_LOCK})"
        ));
        file.lock()
            .with_context(|| format!("locking {KERNEL_TESTS_LOCK}"))?;
    }
    Ok(file)
}

/// The outer cargo, run at the workspace root with our target directory.
fn ws_cargo(ws: &Workspace) -> Command {
    let mut c = cmd::cargo();
    c.env("CARGO_TARGET_DIR", &ws.target_dir)
        .current_dir(&ws.root);
    c
}

fn rustfmt() -> OsString {
    std::env::var_os("RUSTFMT").unwrap_or_else(|| "rustfmt".into())
}

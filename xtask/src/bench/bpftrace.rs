//! bpftrace, the tool people reach for today: found, or installed from the
//! Debian package as root; its scripts on the same tracepoint.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::cmd::{self, phase};

/// One line per TCP transition, printing the tracepoint's fields (what
/// `tcpstates.bt` does), like `tcpstate trace`.
pub const STREAM_SCRIPT: &str = r#"tracepoint:sock:inet_sock_set_state /args->protocol == 6/ { printf("%llu %d %s 0x%llx %d %s %d %s %d %d %d\n", nsecs, pid, comm, (uint64)args->skaddr, args->family, ntop(args->saddr), args->sport, ntop(args->daddr), args->dport, args->oldstate, args->newstate); }"#;

/// Counts in a map, prints nothing until the end: the floor of what the
/// tracepoint costs with a BPF program on it.
pub const COUNT_SCRIPT: &str =
    "tracepoint:sock:inet_sock_set_state { @[args->oldstate, args->newstate] = count(); }";

/// bpftrace's path and version, or why it is not available.
pub fn locate(install: bool) -> Result<(PathBuf, String), String> {
    let dirs = [PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")];
    if cmd::find_program("bpftrace", &dirs).is_none() && install {
        try_install()?;
    }
    let path = cmd::find_program("bpftrace", &dirs).ok_or_else(|| {
        "bpftrace is not installed (Debian package `bpftrace`: apt-get install bpftrace)"
            .to_string()
    })?;
    let version = cmd::probe(Command::new(&path).arg("--version"))
        .unwrap_or_else(|| "unknown version".to_string());
    Ok((path, version))
}

fn try_install() -> Result<(), String> {
    if !cmd::is_root() {
        return Err("bpftrace is not installed, and installing it needs root".into());
    }
    if cmd::find_program("apt-get", &[]).is_none() {
        return Err("bpftrace is not installed and there is no apt-get to install it".into());
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    phase("installing bpftrace for the comparison (apt-get install -y bpftrace)");
    if apt(&["install", "-y", "-q", "bpftrace"]) {
        return Ok(());
    }
    phase("updating package lists (apt-get update), then installing bpftrace again");
    if apt(&["update", "-q"]) && apt(&["install", "-y", "-q", "bpftrace"]) {
        return Ok(());
    }
    Err("apt-get install bpftrace failed".into())
}

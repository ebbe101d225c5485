//! The machine the figures come from.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

use crate::cmd;

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub host: String,
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub memory_gib: f64,
    pub date_utc: String,
    pub tcpstate: String,
    pub bpftrace: Option<String>,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

pub fn describe(tcpstate: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|x| x.1))
        .map(|m| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb = super::procfs::status_field(&meminfo, "MemTotal").unwrap_or(0);
    Machine {
        host: read("/proc/sys/kernel/hostname"),
        kernel: read("/proc/sys/kernel/osrelease"),
        cpu_model,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: mem_kb as f64 / (1024.0 * 1024.0),
        date_utc: utc_now(),
        tcpstate: cmd::probe(Command::new(tcpstate).arg("--version"))
            .unwrap_or_else(|| "unknown".into()),
        bpftrace: None,
    }
}

/// Now, as `YYYY-MM-DD HH:MM:SS UTC` (from `date`: the calendar arithmetic
/// lives in the tcpstate library, which xtask does not link).
pub fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

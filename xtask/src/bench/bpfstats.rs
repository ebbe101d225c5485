//! BPF program statistics: `kernel.bpf_stats_enabled` for the run, and each
//! program's run time, run count (aya's `loaded_programs()`) and recursion
//! misses (the times the kernel skipped it).

use std::fs;
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{Context, Result};
use aya_obj::generated::bpf_prog_info;

use crate::cmd::phase;

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Sets `kernel.bpf_stats_enabled=1` until dropped, then restores the value
/// it had.
pub struct StatsEnabled {
    old: String,
}

impl StatsEnabled {
    pub fn enable() -> Result<Self> {
        let old = fs::read_to_string(SYSCTL)
            .with_context(|| format!("reading {SYSCTL} (kernel.bpf_stats_enabled)"))?
            .trim()
            .to_string();
        fs::write(SYSCTL, "1").with_context(|| format!("setting {SYSCTL} to 1"))?;
        phase(format!(
            "kernel.bpf_stats_enabled=1 for the run (was {old}; restored at the end)"
        ));
        Ok(Self { old })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        if let Err(e) = fs::write(SYSCTL, &self.old) {
            eprintln!(
                "xtask: warning: could not restore kernel.bpf_stats_enabled={}: {e}",
                self.old
            );
        }
    }
}

/// One program's counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProgSample {
    pub id: u32,
    pub name: String,
    /// BPF_PROG_TYPE_*, without the prefix (e.g. RAW_TRACEPOINT).
    pub prog_type: String,
    pub run_time_ns: u64,
    pub run_count: u64,
    pub recursion_misses: u64,
}

/// The counters of the programs `ids` (those still loaded).
pub fn sample(ids: &[u32]) -> Vec<ProgSample> {
    let mut out = Vec::new();
    for info in aya::programs::loaded_programs().flatten() {
        if !ids.contains(&info.id()) {
            continue;
        }
        let recursion_misses = info.fd().map(|fd| misses(fd.as_fd())).unwrap_or(0);
        out.push(ProgSample {
            id: info.id(),
            name: info.name_as_str().unwrap_or("?").to_string(),
            prog_type: format!("{:?}", info.program_type())
                .trim_start_matches("BPF_PROG_TYPE_")
                .to_string(),
            run_time_ns: info.run_time().as_nanos() as u64,
            run_count: info.run_count(),
            recursion_misses,
        });
    }
    out.sort_by_key(|p| p.id);
    out
}

/// Per program, what happened between two samples.
pub fn delta(before: &[ProgSample], after: &[ProgSample]) -> Vec<ProgSample> {
    after
        .iter()
        .map(|a| {
            let b = before.iter().find(|b| b.id == a.id);
            let sub = |f: fn(&ProgSample) -> u64| f(a).saturating_sub(b.map_or(0, f));
            ProgSample {
                id: a.id,
                name: a.name.clone(),
                prog_type: a.prog_type.clone(),
                run_time_ns: sub(|p| p.run_time_ns),
                run_count: sub(|p| p.run_count),
                recursion_misses: sub(|p| p.recursion_misses),
            }
        })
        .collect()
}

#[repr(C)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// `recursion_misses` of bpf_prog_info (not exposed by aya's ProgramInfo).
fn misses(fd: std::os::fd::BorrowedFd<'_>) -> u64 {
    // SAFETY: bpf_prog_info is plain old data; zero is a valid value.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoByFd {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<bpf_prog_info>() as u32,
        info: &mut info as *mut bpf_prog_info as u64,
    };
    // SAFETY: `attr` points at a live buffer of `info_len` bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoByFd,
            std::mem::size_of::<InfoByFd>(),
        )
    };
    if rc == 0 {
        info.recursion_misses
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_per_program() {
        let p = |id, t, c, m| ProgSample {
            id,
            name: format!("p{id}"),
            prog_type: "TRACEPOINT".into(),
            run_time_ns: t,
            run_count: c,
            recursion_misses: m,
        };
        let d = delta(&[p(1, 100, 10, 0)], &[p(1, 300, 15, 2), p(2, 50, 5, 0)]);
        assert_eq!(d, vec![p(1, 200, 5, 2), p(2, 50, 5, 0)]);
    }
}

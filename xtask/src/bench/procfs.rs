//! What /proc says about a process and the machine, for the benchmark.
//!
//! Not shared with `tcpstate::source::procfs`: xtask does not link the
//! tcpstate library, whose build embeds the BPF object that xtask itself
//! builds first (a dependency would compile the whole userspace, parquet
//! included, before every `cargo xtask` command, with a stale or empty
//! object). The two overlap in the `/proc/PID/stat` and `status` fields only.

use std::fs;
use std::time::Instant;

/// CPU time and context switches of one process (all its threads).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    pub user_s: f64,
    pub sys_s: f64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
}

impl ProcSample {
    pub fn since(&self, earlier: &ProcSample) -> ProcSample {
        ProcSample {
            user_s: (self.user_s - earlier.user_s).max(0.0),
            sys_s: (self.sys_s - earlier.sys_s).max(0.0),
            voluntary_switches: self
                .voluntary_switches
                .saturating_sub(earlier.voluntary_switches),
            involuntary_switches: self
                .involuntary_switches
                .saturating_sub(earlier.involuntary_switches),
        }
    }
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime and stime (fields 14 and 15 of /proc/PID/stat), in seconds.
pub fn parse_stat_cpu(stat: &str) -> Option<(f64, f64)> {
    // The command name (field 2) may contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = clock_ticks_per_sec();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime / ticks, stime / ticks))
}

/// A `Key:   123 kB`-style field of a /proc status file (the number only).
pub fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (user_s, sys_s) = parse_stat_cpu(&stat)?;
    let mut s = ProcSample {
        user_s,
        sys_s,
        ..ProcSample::default()
    };
    // /proc/PID/status counts the main thread's switches only: sum the tasks.
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(status) = fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        s.voluntary_switches += status_field(&status, "voluntary_ctxt_switches").unwrap_or(0);
        s.involuntary_switches += status_field(&status, "nonvoluntary_ctxt_switches").unwrap_or(0);
    }
    Some(s)
}

/// Peak resident set size (VmHWM), in bytes.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field(&status, "VmHWM").map(|kb| kb * 1024)
}

/// IDs of the BPF programs whose file descriptors `pid` holds.
pub fn bpf_prog_ids(pid: u32) -> Vec<u32> {
    let mut ids = Vec::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for entry in dir.flatten() {
        let Ok(info) = fs::read_to_string(entry.path()) else {
            continue;
        };
        if let Some(id) = status_field(&info, "prog_id") {
            if !ids.contains(&(id as u32)) {
                ids.push(id as u32);
            }
        }
    }
    ids.sort_unstable();
    ids
}

/// Busy CPU time of the whole machine (all CPUs), from /proc/stat.
#[derive(Clone, Copy, Debug)]
pub struct MachineSample {
    pub busy_s: f64,
    /// Time the hypervisor ran something else on our CPUs (part of busy):
    /// a reader starved this way lets the ring fill while the other CPU
    /// still produces.
    pub steal_s: f64,
    pub at: Instant,
}

/// Busy and stolen CPU time of the whole machine, in seconds, from the
/// aggregate "cpu " line of /proc/stat (user nice system idle iowait irq
/// softirq steal guest guest_nice, in ticks).
pub fn parse_machine_times(stat: &str) -> Option<(f64, f64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    const STEAL: usize = 7;
    // Missing only on kernels older than 2.6.11.
    let steal = v.get(STEAL).copied().unwrap_or(0.0);
    // Guest time is already counted in user.
    let busy: f64 = [0, 1, 2, 5, 6, STEAL]
        .iter()
        .filter_map(|&i| v.get(i))
        .sum();
    let hz = clock_ticks_per_sec();
    Some((busy / hz, steal / hz))
}

pub fn machine() -> MachineSample {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let (busy_s, steal_s) = parse_machine_times(&stat).unwrap_or((0.0, 0.0));
    MachineSample {
        busy_s,
        steal_s,
        at: Instant::now(),
    }
}

/// The time-wait sockets in /proc/net/sockstat's text ("TCP: ... tw N ...").
pub fn sockstat_tw(sockstat: &str) -> Option<u64> {
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == "tw")?;
    words.next()?.parse().ok()
}

/// Time-wait sockets now, in the bench's own network namespace.
pub fn time_wait_sockets() -> Option<u64> {
    sockstat_tw(&fs::read_to_string("/proc/net/sockstat").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_name() {
        let stat = "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        let (u, s) = parse_stat_cpu(stat).unwrap();
        let hz = clock_ticks_per_sec();
        assert!((u - 250.0 / hz).abs() < 1e-9 && (s - 50.0 / hz).abs() < 1e-9);
    }

    #[test]
    fn status_fields() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nvoluntary_ctxt_switches:\t17\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(status_field(status, "VmHWM"), Some(2048));
        assert_eq!(status_field(status, "voluntary_ctxt_switches"), Some(17));
        assert_eq!(status_field(status, "nonvoluntary_ctxt_switches"), Some(3));
        assert_eq!(
            status_field("pos:\t0\nflags:\t02\nprog_id:\t42\n", "prog_id"),
            Some(42)
        );
    }

    #[test]
    fn sockstat_time_wait() {
        let text = "sockets: used 100\nTCP: inuse 5 orphan 0 tw 131072 alloc 10 mem 1\nUDP: inuse 1 mem 0\n";
        assert_eq!(sockstat_tw(text), Some(131072));
        assert_eq!(sockstat_tw("TCP: inuse 5 tw\n"), None);
        assert_eq!(sockstat_tw("UDP: tw 3\n"), None);
        assert_eq!(sockstat_tw(""), None);
    }

    #[test]
    fn machine_busy() {
        let stat = "cpu  100 10 50 1000 5 1 2 3 0 0\ncpu0 1 2 3 4\n";
        let hz = clock_ticks_per_sec();
        let (busy, steal) = parse_machine_times(stat).unwrap();
        assert!((busy - 166.0 / hz).abs() < 1e-9);
        assert!((steal - 3.0 / hz).abs() < 1e-9);
        let (busy, steal) = parse_machine_times("cpu  1 2 3 4 5 6 7\n").unwrap();
        assert!((busy - 19.0 / hz).abs() < 1e-9 && steal == 0.0);
        assert_eq!(parse_machine_times("cpu0 1 2 3\n"), None);
    }
}

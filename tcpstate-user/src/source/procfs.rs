//! The one reader of `/proc` files about processes and the machine: the
//! tracer's own process (for its metrics) and the fields of
//! `/proc/PID/stat` and `/proc/PID/status` other readers need (owners in
//! the start-up snapshot). Parsers take the text, so they are tested on
//! samples; readers leave out what cannot be read.
//!
//! (`xtask`'s benchmark has its own small reader: it cannot link this
//! crate, whose build needs the BPF object that xtask builds.)

/// The tracer's own process, as `/proc/self` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SelfStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    /// Unix time, seconds.
    pub start_time_seconds: Option<f64>,
    pub open_fds: Option<u64>,
}

impl SelfStats {
    /// Reads `/proc/self/stat`, `/proc/self/status`, `/proc/stat` (boot
    /// time) and `/proc/self/fd`; what cannot be read is left out.
    pub fn read() -> SelfStats {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let times = stat.as_deref().and_then(parse_self_stat);
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| parse_boot_time(&s));
        SelfStats {
            cpu_seconds: times.map(|t| (t.utime + t.stime) as f64 / ticks),
            resident_bytes: status_kib(&status, "VmRSS").map(|kib| kib * 1024),
            virtual_bytes: status_kib(&status, "VmSize").map(|kib| kib * 1024),
            start_time_seconds: times
                .zip(boot_time)
                .map(|(t, boot)| boot as f64 + t.starttime as f64 / ticks),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|dir| dir.count() as u64),
        }
    }
}

/// Fields of `/proc/self/stat`, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatTimes {
    pub utime: u64,
    pub stime: u64,
    /// Since boot.
    pub starttime: u64,
}

/// `/proc/PID/stat`: fields 14 (utime), 15 (stime) and 22 (starttime).
pub fn parse_self_stat(text: &str) -> Option<StatTimes> {
    let field = |n: usize| stat_field(text.as_bytes(), n);
    Some(StatTimes {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
    })
}

/// Field `n` (1-based, as proc(5) numbers them, from 3 on) of
/// `/proc/PID/stat`. The comm (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so fields are counted after the last `)`.
pub fn stat_field(stat: &[u8], n: usize) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let after = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    // Field 3 (state) is the first after the comm.
    after
        .split_ascii_whitespace()
        .nth(n.checked_sub(3)?)?
        .parse()
        .ok()
}

/// `btime` of `/proc/stat`: boot time, Unix seconds.
pub fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// A `Name:   1234 kB` line of `/proc/self/status`, in KiB.
pub fn status_kib(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// The command line of a live process, for telling apart workers of one
/// program.
pub fn cmdline(tgid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{tgid}/cmdline")).ok()?;
    let text: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect();
    (!text.is_empty()).then(|| text.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat = "1234 (tcp state) (x)) S 1 1234 1234 0 -1 4194560 2000 0 0 0 150 25 0 0 20 0 1 0 98765 123456789 2500 18446744073709551615";
        assert_eq!(
            parse_self_stat(stat),
            Some(StatTimes {
                utime: 150,
                stime: 25,
                starttime: 98765
            })
        );
        assert_eq!(parse_self_stat("1234 (x) S 1"), None);
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
        let status = "Name:\ttcpstate\nVmSize:\t  123456 kB\nVmRSS:\t    7890 kB\n";
        assert_eq!(status_kib(status, "VmRSS"), Some(7890));
        assert_eq!(status_kib(status, "VmSize"), Some(123456));
        assert_eq!(status_kib(status, "VmSwap"), None);
        let me = SelfStats::read();
        assert!(me.resident_bytes.is_some_and(|b| b > 0), "{me:?}");
        assert!(
            me.cpu_seconds.is_some() && me.start_time_seconds.is_some(),
            "{me:?}"
        );
    }

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let stat = b"1 (a) b) S 1 2 3";
        assert_eq!(stat_field(stat, 4), Some(1));
        assert_eq!(stat_field(stat, 6), Some(3));
        assert_eq!(stat_field(stat, 7), None);
        assert_eq!(stat_field(stat, 2), None, "fields before 3 are not numbers");
        assert_eq!(stat_field(b"no parenthesis", 3), None);
        assert_eq!(stat_field(b"1 (x) S \xff", 4), None);
    }
}

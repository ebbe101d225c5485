//! Converts the kernel's boot-time timestamps into wall-clock time.
//!
//! The BPF program stamps events with `bpf_ktime_get_boot_ns` (CLOCK_BOOTTIME).
//! At start we read CLOCK_BOOTTIME and CLOCK_REALTIME as a pair and map one
//! onto the other; later NTP steps of the wall clock are not followed, which
//! keeps the durations between events exact.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootClock {
    /// CLOCK_BOOTTIME at the pairing, in ns.
    pub boot_ns: u64,
    /// CLOCK_REALTIME at the pairing, in ns since the Unix epoch.
    pub wall_ns: u64,
}

fn read_clock(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; both clocks exist on every Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_BOOTTIME now, in ns: the clock the BPF program stamps events with.
pub fn boot_now_ns() -> u64 {
    read_clock(libc::CLOCK_BOOTTIME)
}

impl BootClock {
    /// Pairs the two clocks: of a few tries, keeps the one whose reading of
    /// the real-time clock was bracketed most tightly by two boot-time reads.
    pub fn now() -> Self {
        let mut best = (
            u64::MAX,
            BootClock {
                boot_ns: 0,
                wall_ns: 0,
            },
        );
        for _ in 0..5 {
            let before = read_clock(libc::CLOCK_BOOTTIME);
            let wall = read_clock(libc::CLOCK_REALTIME);
            let after = read_clock(libc::CLOCK_BOOTTIME);
            let gap = after.saturating_sub(before);
            if gap < best.0 {
                let pair = BootClock {
                    boot_ns: before + gap / 2,
                    wall_ns: wall,
                };
                best = (gap, pair);
            }
        }
        best.1
    }

    /// Boot-time nanoseconds of a wall-clock instant (the inverse of
    /// [`BootClock::wall_ns`]).
    pub fn boot_of_wall(&self, wall_ns: u64) -> u64 {
        if wall_ns >= self.wall_ns {
            self.boot_ns.saturating_add(wall_ns - self.wall_ns)
        } else {
            self.boot_ns.saturating_sub(self.wall_ns - wall_ns)
        }
    }

    /// Wall-clock nanoseconds since the epoch for a boot-time stamp.
    pub fn wall_ns(&self, boot_ns: u64) -> u64 {
        if boot_ns >= self.boot_ns {
            self.wall_ns.saturating_add(boot_ns - self.boot_ns)
        } else {
            self.wall_ns.saturating_sub(self.boot_ns - boot_ns)
        }
    }
}

/// RFC 3339 in UTC with nanoseconds, e.g. `2026-11-22T11:23:45.123456789Z`.
/// chrono formats it; `trace --json` calls this once per second of events
/// and writes the fraction itself (see `sinks::json_line`), so chrono's
/// general-purpose formatting is paid once per second, not per event.
pub fn rfc3339_utc(wall_ns: u64) -> String {
    let secs = (wall_ns / 1_000_000_000) as i64;
    let nanos = (wall_ns % 1_000_000_000) as u32;
    // Every u64 of nanoseconds is within chrono's range (up to year 2554).
    chrono::DateTime::from_timestamp(secs, nanos)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Parses RFC 3339 (`2026-11-22T11:23:45Z`, `2026-11-22T11:23:45.5+01:00`,
/// also with a space for the `T`) into nanoseconds since the epoch; None
/// for anything else, or a time before the epoch.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let time = chrono::DateTime::parse_from_rfc3339(text.trim()).ok()?;
    u64::try_from(time.timestamp_nanos_opt()?).ok()
}

/// Local time of day with microseconds, e.g. `11:23:45.123456`, for tables.
pub fn local_time_of_day(wall_ns: u64) -> String {
    let secs = (wall_ns / 1_000_000_000) as libc::time_t;
    let micros = wall_ns % 1_000_000_000 / 1_000;
    // SAFETY: zeroed `tm` is a valid out-parameter for localtime_r.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call.
    let ok = !unsafe { libc::localtime_r(&secs, &mut tm) }.is_null();
    if !ok {
        return rfc3339_utc(wall_ns);
    }
    format!(
        "{:02}:{:02}:{:02}.{micros:06}",
        tm.tm_hour, tm.tm_min, tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000000000Z");
        // 2000-02-29 (a leap day in a century leap year) 12:34:56.000000789
        assert_eq!(
            rfc3339_utc(951_827_696_000_000_789),
            "2000-02-29T12:34:56.000000789Z"
        );
        assert_eq!(
            rfc3339_utc(1_795_000_000_123_000_000),
            "2026-11-18T11:06:40.123000000Z"
        );
    }

    #[test]
    fn parses_rfc3339_round_trip_and_offsets() {
        for ns in [0u64, 951_827_696_000_000_789, 1_795_000_000_123_000_000] {
            assert_eq!(parse_rfc3339(&rfc3339_utc(ns)), Some(ns));
        }
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-01 00:00:01.5Z"), Some(1_500_000_000));
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-11-22",
            "2026-11-22T25:00:00Z",
            "yesterday",
            "2026-11-22T11:00:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn maps_boot_time_both_ways() {
        let clock = BootClock {
            boot_ns: 1_000,
            wall_ns: 10_000,
        };
        assert_eq!(clock.wall_ns(1_500), 10_500);
        assert_eq!(clock.wall_ns(400), 9_400);
        assert_eq!(clock.wall_ns(0), 9_000);
        assert_eq!(clock.boot_of_wall(10_500), 1_500);
        assert_eq!(clock.boot_of_wall(9_400), 400);
    }

    #[test]
    fn pairing_is_consistent_with_the_real_clocks() {
        let clock = BootClock::now();
        let wall_now = read_clock(libc::CLOCK_REALTIME);
        let predicted = clock.wall_ns(boot_now_ns());
        // Both readings happen within the same few milliseconds.
        assert!(
            predicted.abs_diff(wall_now) < 50_000_000,
            "{predicted} vs {wall_now}"
        );
    }
}

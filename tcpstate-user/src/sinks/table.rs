//! Human-readable table for the terminal.
use super::{Annotation, TraceSink};
use crate::{
    clock::{local_time_of_day, BootClock},
    views::trace::TraceRow,
};
use std::io::{self, Write};

pub struct TableSink<W: Write> {
    out: W,
    clock: BootClock,
    header_done: bool,
}

impl<W: Write> TableSink<W> {
    pub fn new(out: W, clock: BootClock) -> Self {
        Self {
            out,
            clock,
            header_done: false,
        }
    }

    fn header(&mut self) -> io::Result<()> {
        if !self.header_done {
            self.header_done = true;
            writeln!(
                self.out,
                "{:<15} {:>7} {:<15} {:<24} {:<24} {:>12}    {:<12} {:>10}",
                "TIME", "PID", "COMM", "LOCAL", "REMOTE", "OLD", "NEW", "MS"
            )?;
        }
        Ok(())
    }
}

/// Milliseconds with microsecond precision, `-` when unknown.
pub fn format_ms(ns: Option<u64>) -> String {
    match ns {
        Some(ns) => format!("{}.{:03}", ns / 1_000_000, ns / 1_000 % 1_000),
        None => "-".to_string(),
    }
}

impl<W: Write> TraceSink for TableSink<W> {
    fn transition(&mut self, row: &TraceRow, _: &Annotation) -> io::Result<()> {
        self.header()?;
        let t = &row.transition;
        writeln!(
            self.out,
            "{:<15} {:>7} {:<15} {:<24} {:<24} {:>12} -> {:<12} {:>10}",
            local_time_of_day(self.clock.wall_ns(t.ts_boot_ns)),
            t.task.tgid,
            t.task.comm,
            t.local,
            t.remote,
            t.old,
            t.new,
            format_ms(row.in_old_state_ns),
        )
    }

    fn lost(&mut self, total: u64, ts_boot_ns: u64) -> io::Result<()> {
        self.header()?;
        writeln!(
            self.out,
            "{:<15} !! {total} transitions lost in the kernel so far (the summary says why)",
            local_time_of_day(self.clock.wall_ns(ts_boot_ns)),
        )
    }

    fn call_failed(&mut self, f: &crate::wire::CallFailure) -> io::Result<()> {
        self.header()?;
        writeln!(
            self.out,
            "{:<15} {:>7} {:<15} !! {}() to {} failed: {}",
            local_time_of_day(self.clock.wall_ns(f.ts_boot_ns)),
            f.task.tgid,
            f.task.comm,
            f.call.name(),
            f.addr,
            crate::wire::errno_name(f.errno),
        )
    }

    fn kill(&mut self, k: &crate::kill_log::KillRecord) -> io::Result<()> {
        self.header()?;
        writeln!(
            self.out,
            "{:<15} {:>7} {:<15} !! kill {} {} -> {} (held by {}): {}",
            local_time_of_day(self.clock.wall_ns(k.ts_boot_ns)),
            k.killer_pid,
            "tcpstate kill",
            k.state.name(),
            k.local,
            k.remote,
            k.owner
                .map_or_else(|| "-".to_string(), |o| format!("{} {}", o.tgid, o.comm)),
            match k.outcome.errno() {
                Some(e) => format!(
                    "refused: {}",
                    std::io::Error::from_raw_os_error(i32::from(e))
                ),
                None => k.outcome.name().replace('_', " "),
            },
        )
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds() {
        assert_eq!(format_ms(None), "-");
        assert_eq!(format_ms(Some(0)), "0.000");
        assert_eq!(format_ms(Some(1_234_567)), "1.234");
        assert_eq!(format_ms(Some(61_000_000_000)), "61000.000");
    }
}

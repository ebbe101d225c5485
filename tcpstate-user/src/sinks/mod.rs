//! Sinks: where a view's output goes.
pub mod json;
pub mod table;

use crate::views::trace::TraceRow;
use std::io;

/// Output of the `trace` command, in any format.
pub trait TraceSink {
    fn transition(&mut self, row: &TraceRow) -> io::Result<()>;
    /// The kernel's lost counter grew to `total` (at boot time `ts_boot_ns`).
    fn lost(&mut self, total: u64, ts_boot_ns: u64) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}

//! Sinks: where a view's output goes.
pub mod csv;
pub mod http;
pub mod json;
pub mod json_line;
pub mod parquet;
pub mod refreshed;
pub mod table;

use crate::{model::Owner, views::trace::TraceRow};
use std::io;

/// What the connection model adds to a transition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Annotation {
    pub connection_id: Option<u64>,
    pub owner: Option<Owner>,
}

/// Output of the `trace` command, in any format.
pub trait TraceSink {
    fn transition(&mut self, row: &TraceRow, annotation: &Annotation) -> io::Result<()>;
    /// The kernel's lost counter grew to `total` (at boot time `ts_boot_ns`).
    fn lost(&mut self, total: u64, ts_boot_ns: u64) -> io::Result<()>;
    /// A connect() or bind() failed (issue 11). Rows of transitions (CSV,
    /// Parquet) have no place for it: JSON Lines and the table show it.
    fn call_failed(&mut self, _failure: &crate::wire::CallFailure) -> io::Result<()> {
        Ok(())
    }
    /// `tcpstate kill` acted on a socket (issue 12; from recordings).
    /// Like failed calls, only JSON Lines and the table show it.
    fn kill(&mut self, _kill: &crate::kill_log::KillRecord) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()>;
    /// The end: write what a format needs last (Parquet's footer).
    fn finish(&mut self) -> io::Result<()> {
        self.flush()
    }
}

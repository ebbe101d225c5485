//! The kernel's TCP counters at the start and the end of the watch (read
//! by [`crate::source::net_counters`]), and those the report shows.
pub use crate::source::net_counters::NetCounters;
use serde::Serialize;
use std::collections::BTreeMap;

/// The counters shown (those the kernel has): what the findings use, and a
/// few that explain them.
pub const SHOWN: [&str; 27] = [
    "TcpExt.TCPTimeWaitOverflow",
    "TcpExt.TW",
    "TcpExt.TWRecycled",
    "TcpExt.TWKilled",
    "TcpExt.ListenOverflows",
    "TcpExt.ListenDrops",
    "TcpExt.TCPReqQFullDrop",
    "TcpExt.TCPReqQFullDoCookies",
    "TcpExt.SyncookiesSent",
    "TcpExt.SyncookiesRecv",
    "TcpExt.SyncookiesFailed",
    "TcpExt.TCPAbortOnClose",
    "TcpExt.TCPAbortOnData",
    "TcpExt.TCPAbortOnTimeout",
    "TcpExt.TCPAbortOnMemory",
    "TcpExt.TCPAbortOnLinger",
    "TcpExt.TCPAbortFailed",
    "TcpExt.TCPKeepAlive",
    "TcpExt.PAWSEstab",
    "TcpExt.TCPSynRetrans",
    "Tcp.ActiveOpens",
    "Tcp.PassiveOpens",
    "Tcp.AttemptFails",
    "Tcp.EstabResets",
    "Tcp.CurrEstab",
    "Tcp.RetransSegs",
    "Tcp.OutRsts",
];

/// The counters at the start and the end of the watch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CounterDelta {
    pub start: NetCounters,
    pub end: NetCounters,
}

/// What `--json` shows: the counters in [`SHOWN`] the kernel has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CountersView {
    pub start: BTreeMap<&'static str, i64>,
    pub end: BTreeMap<&'static str, i64>,
    pub delta: BTreeMap<&'static str, i64>,
}

impl CounterDelta {
    /// End minus start; None when either is missing.
    pub fn delta(&self, name: &str) -> Option<i64> {
        Some(self.end.get(name)? - self.start.get(name)?)
    }

    /// The delta, 0 when unknown (for conditions).
    pub fn grew(&self, name: &str) -> i64 {
        self.delta(name).unwrap_or(0).max(0)
    }

    pub fn view(&self) -> CountersView {
        let pick = |c: &NetCounters| -> BTreeMap<&'static str, i64> {
            SHOWN.iter().filter_map(|&n| Some((n, c.get(n)?))).collect()
        };
        CountersView {
            start: pick(&self.start),
            end: pick(&self.end),
            delta: SHOWN
                .iter()
                .filter_map(|&n| Some((n, self.delta(n)?)))
                .collect(),
        }
    }
}

//! The kernel's TCP counters (`/proc/net/netstat` TcpExt, `/proc/net/snmp`
//! Tcp), read at the start and at the end of the watch. They are those of
//! the reader's network namespace.
use serde::Serialize;
use std::collections::BTreeMap;

/// Counters by `Section.Name`, e.g. `TcpExt.ListenOverflows`, `Tcp.OutRsts`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct NetCounters(pub BTreeMap<String, i64>);

/// The sections kept.
const SECTIONS: [&str; 2] = ["TcpExt", "Tcp"];

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

impl NetCounters {
    /// Reads both files; an unreadable file leaves its counters out.
    pub fn read() -> Self {
        let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
        let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
        Self::parse(&[&netstat, &snmp])
    }

    /// Files made of line pairs, `Section: Name1 Name2 ...` then
    /// `Section: v1 v2 ...`. Lines that do not pair up are passed over.
    pub fn parse(files: &[&str]) -> Self {
        let mut out = BTreeMap::new();
        for text in files {
            let lines: Vec<&str> = text.lines().collect();
            for pair in lines.windows(2) {
                let (Some((section, names)), Some((again, values))) =
                    (pair[0].split_once(':'), pair[1].split_once(':'))
                else {
                    continue;
                };
                if section != again || !SECTIONS.contains(&section) {
                    continue;
                }
                // The names line is the one that does not parse as numbers.
                let values: Option<Vec<i64>> =
                    values.split_whitespace().map(|v| v.parse().ok()).collect();
                let Some(values) = values else { continue };
                let names: Vec<&str> = names.split_whitespace().collect();
                if names.len() != values.len() || names.iter().any(|n| n.parse::<i64>().is_ok()) {
                    continue;
                }
                for (name, value) in names.into_iter().zip(values) {
                    out.insert(format!("{section}.{name}"), value);
                }
            }
        }
        NetCounters(out)
    }

    pub fn get(&self, name: &str) -> Option<i64> {
        self.0.get(name).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

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

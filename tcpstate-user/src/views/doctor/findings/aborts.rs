//! Connections the kernel aborted with a RST during the watch
//! (TcpExt.TCPAbortOn*).
use super::evidence;
use crate::views::doctor::{DoctorInput, Finding, Severity};
use std::collections::BTreeMap;

/// Counter, what it means, what to do.
const ABORTS: [(&str, &str, &str); 6] = [
    (
        "TcpExt.TCPAbortOnClose",
        "closed with data still unread: the kernel sent a RST instead of a FIN",
        "read until end of file before close(), unless discarding the data is intended",
    ),
    (
        "TcpExt.TCPAbortOnData",
        "data arrived after the program closed: answered with a RST",
        "the peer kept sending after this side closed: a protocol mismatch, or a close before the exchange was over",
    ),
    (
        "TcpExt.TCPAbortOnTimeout",
        "given up after retransmission, keepalive or orphan-probe timeouts: the peer stopped answering",
        "peers or the path to them go away; check the network and the peers",
    ),
    (
        "TcpExt.TCPAbortOnMemory",
        "killed for lack of memory (net.ipv4.tcp_mem) or too many orphaned sockets (net.ipv4.tcp_max_orphans)",
        "see `dmesg` for `out of memory -- consider tuning tcp_mem` or `too many orphaned sockets`",
    ),
    (
        "TcpExt.TCPAbortOnLinger",
        "cut short in FIN_WAIT2 because the program set TCP_LINGER2 below 0",
        "intended by the program that set it",
    ),
    (
        "TcpExt.TCPAbortFailed",
        "a RST that should have been sent could not be (no memory)",
        "see `dmesg` for memory pressure",
    ),
];

pub fn finding(input: &DoctorInput) -> Option<Finding> {
    let grown: Vec<_> = ABORTS
        .iter()
        .filter_map(|&(name, meaning, advice)| {
            let n = input.counters.grew(name);
            (n > 0).then_some((name, n, meaning, advice))
        })
        .collect();
    if grown.is_empty() {
        return None;
    }
    let total: i64 = grown.iter().map(|g| g.1).sum();
    let memory = grown
        .iter()
        .any(|g| g.0 == "TcpExt.TCPAbortOnMemory" || g.0 == "TcpExt.TCPAbortFailed");
    let deltas: BTreeMap<&str, i64> = grown.iter().map(|g| (g.0, g.1)).collect();
    Some(Finding {
        id: "aborts",
        severity: if memory {
            Severity::Warning
        } else {
            Severity::Info
        },
        title: format!("{total} connections aborted by the kernel with a RST during the watch"),
        evidence: evidence(&deltas),
        details: grown
            .iter()
            .map(|(name, n, meaning, _)| format!("{name} +{n}: {meaning}"))
            .collect(),
        advice: grown
            .iter()
            .map(|(name, _, _, advice)| format!("{name}: {advice}"))
            .collect(),
    })
}

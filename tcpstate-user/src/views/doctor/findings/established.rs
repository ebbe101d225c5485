//! ESTABLISHED connections older than a threshold, and whether keepalive
//! would ever notice a dead peer.
use super::evidence;
use crate::views::doctor::{
    duration_text, facts::OldEstablished, value_text, DoctorInput, Finding, Severity,
};
use serde::Serialize;

#[derive(Serialize)]
struct Evidence<'a> {
    threshold_s: f64,
    established_now: usize,
    /// Already there at the start: their age is only a lower bound.
    predating_start: usize,
    keepalive_time_s: Option<u64>,
    keepalive_intvl_s: Option<u64>,
    keepalive_probes: Option<u64>,
    by_owner: &'a [OldEstablished],
}

pub fn finding(input: &DoctorInput) -> Option<Finding> {
    let e = &input.facts.established;
    if e.old_by_owner.is_empty() {
        return None;
    }
    let s = &input.sysctls;
    let total: usize = e.old_by_owner.iter().map(|o| o.count).sum();
    let no_timer: usize = e.old_by_owner.iter().map(|o| o.keepalive.no_timer).sum();
    let top = &e.old_by_owner[0];
    let threshold = duration_text(e.threshold_s);
    let mut details: Vec<String> = e
        .old_by_owner
        .iter()
        .take(10)
        .map(|o| {
            format!(
                "{}: {} connections ESTABLISHED for more than {threshold}, the oldest {}{}; keepalive timer: {} with, {} without, {} unknown; e.g. {}",
                o.process.text(),
                o.count,
                if o.age_is_lower_bound {
                    "at least since the start: "
                } else {
                    ""
                },
                duration_text(o.oldest_age_s),
                o.keepalive.keepalive,
                o.keepalive.no_timer,
                o.keepalive.unknown,
                o.remote_examples.join(", ")
            )
        })
        .collect();
    details.push(format!(
        "{} ESTABLISHED connections in all; {} already existed at the start (their age is only known to be at least the watch)",
        e.total, e.predating_start
    ));
    details.push("tcpstate sees state changes, not traffic: this is the time in ESTABLISHED, not the idle time; `ss -tio` shows lastsnd/lastrcv (ms since the last data)".to_string());
    let (time, intvl, probes) = (s.keepalive_time, s.keepalive_intvl, s.keepalive_probes);
    let detect = match (time, intvl, probes) {
        (Some(t), Some(i), Some(p)) => format!(
            " — a dead peer is noticed after {} at the earliest",
            duration_text((t + i * p) as f64)
        ),
        _ => String::new(),
    };
    Some(Finding {
        id: "old-established",
        severity: if no_timer > 0 {
            Severity::Warning
        } else {
            Severity::Info
        },
        title: format!(
            "{total} ESTABLISHED connections older than {threshold}, most held by {} ({})",
            top.process.text(),
            top.count
        ),
        evidence: evidence(&Evidence {
            threshold_s: e.threshold_s,
            established_now: e.total,
            predating_start: e.predating_start,
            keepalive_time_s: time,
            keepalive_intvl_s: intvl,
            keepalive_probes: probes,
            by_owner: &e.old_by_owner,
        }),
        details,
        advice: vec![
            format!(
                "net.ipv4.tcp_keepalive_time (now {} s; the default is 7200) applies only to sockets with SO_KEEPALIVE: after that much idle time the kernel probes every tcp_keepalive_intvl ({} s) and drops the connection after tcp_keepalive_probes ({}) unanswered probes{detect}. Lowering it changes nothing for sockets without SO_KEEPALIVE.",
                value_text(time),
                value_text(intvl),
                value_text(probes),
            ),
            "Whether the owner set SO_KEEPALIVE cannot be seen from the tracepoints tcpstate uses. The keepalive counts come from the kernel's socket dump at the end (the timer `ss -o` shows): a pending keepalive timer means SO_KEEPALIVE is set; no timer at all normally means it is not; a retransmit timer hides it (unknown).".to_string(),
            "Where the peer may vanish (a NAT or firewall dropping idle flows, a crashed host), enable SO_KEEPALIVE in the program (TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT set it per socket, overriding the sysctls), or use application heartbeats or idle timeouts; TCP_USER_TIMEOUT bounds how long unacknowledged data may wait. Long-lived connections themselves are normal for pools and streams.".to_string(),
        ],
    })
}

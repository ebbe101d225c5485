//! Listen queue overflows (ListenOverflows, ListenDrops), full accept
//! queues, and CLOSE_WAIT sockets never accepted.
use super::evidence;
use crate::views::doctor::{
    facts::{AcceptBacklog, ListenQueue},
    value_text, DoctorInput, Finding, Severity,
};
use serde::Serialize;

#[derive(Serialize)]
struct Evidence<'a> {
    /// Over the watch.
    listen_overflows: Option<i64>,
    listen_drops: Option<i64>,
    syn_queue_full_drops: Option<i64>,
    syncookies_sent: Option<i64>,
    somaxconn: Option<u64>,
    max_syn_backlog: Option<u64>,
    syncookies: Option<u32>,
    /// Listeners with connections waiting at the end, fullest first.
    listen_queues: &'a [ListenQueue],
    /// CLOSE_WAIT sockets never accepted, per listener.
    accept_backlog: &'a [AcceptBacklog],
}

fn is_full(q: &ListenQueue) -> bool {
    q.backlog > 0 && q.queued >= q.backlog
}

pub fn finding(input: &DoctorInput) -> Option<Finding> {
    let c = &input.counters;
    let overflows = c.grew("TcpExt.ListenOverflows");
    let drops = c.grew("TcpExt.ListenDrops");
    let facts = &input.facts;
    let full: Vec<&ListenQueue> = facts.listen_queues.iter().filter(|q| is_full(q)).collect();
    if overflows == 0 && drops == 0 && facts.accept_backlog.is_empty() && full.is_empty() {
        return None;
    }
    let s = &input.sysctls;
    let severity = if overflows > 0 || drops > 0 {
        Severity::Critical
    } else {
        Severity::Warning
    };
    let title = if overflows > 0 || drops > 0 {
        format!(
            "Listen queues overflowed: {drops} incoming connections dropped during the watch ({overflows} with a full accept queue)"
        )
    } else if let Some(q) = full.first() {
        format!(
            "The accept queue of {} ({}) is full: {} waiting for accept()",
            q.local,
            q.owner.text(),
            q.queued
        )
    } else {
        let total: usize = facts.accept_backlog.iter().map(|b| b.count).sum();
        format!("{total} connections closed by their clients before being accepted")
    };
    let mut details = Vec::new();
    if overflows > 0 || drops > 0 {
        details.push(format!(
            "TcpExt.ListenOverflows +{overflows} (accept queue full), TcpExt.ListenDrops +{drops} (every drop at a listener, overflows included) during the {:.1} s watch",
            input.watch_secs
        ));
    }
    let cookies = c.grew("TcpExt.SyncookiesSent");
    let syn_full = c.grew("TcpExt.TCPReqQFullDrop");
    if cookies > 0 || syn_full > 0 {
        details.push(format!(
            "SYN queue: {cookies} SYN cookies sent (TcpExt.SyncookiesSent), {syn_full} SYNs dropped with it full (TcpExt.TCPReqQFullDrop)"
        ));
    }
    for q in facts.listen_queues.iter().take(5) {
        details.push(format!(
            "{} ({}): {} connections waiting for accept(), backlog {}{}",
            q.local,
            q.owner.text(),
            q.queued,
            q.backlog,
            if is_full(q) { " — full" } else { "" }
        ));
    }
    for b in &facts.accept_backlog {
        details.push(format!(
            "{} ({}): {} connections in CLOSE_WAIT never accepted, the oldest {:.1} s: their clients gave up waiting",
            b.listener.as_deref().unwrap_or("an unknown listener"),
            b.listener_owner.text(),
            b.count,
            b.oldest_age_s
        ));
    }
    let somaxconn_default = match input.kernel.at_least(5, 4) {
        Some(false) => "128 on this kernel; 4096 since Linux 5.4",
        _ => "default 4096 since Linux 5.4, 128 before",
    };
    let mut advice = vec![
        format!(
            "A listener's accept queue holds min(the backlog the program passes to listen(), net.core.somaxconn = {} ({somaxconn_default})) connections. When it is full the kernel drops the handshake's last ACK and the client retransmits: seconds of latency, or a failed connect.",
            value_text(s.somaxconn)
        ),
        "The cause is almost always the program not calling accept() fast enough: a blocked event loop, too few workers, or a server that stopped accepting. Fix that first.".to_string(),
        "Then raise both the program's listen() backlog (many servers and runtimes default to 128 or 511) and net.core.somaxconn: one without the other changes nothing.".to_string(),
    ];
    let mut syn = format!(
        "net.ipv4.tcp_max_syn_backlog (now {}) bounds the half-open connections (the SYN queue), not the accept queue.",
        value_text(s.max_syn_backlog)
    );
    match s.syncookies {
        Some(0) => syn.push_str(" net.ipv4.tcp_syncookies is 0: a full SYN queue drops SYNs; 1 (the default) answers with SYN cookies only when it is full."),
        Some(v) => syn.push_str(&format!(" With net.ipv4.tcp_syncookies = {v}, a full SYN queue falls back to SYN cookies instead of dropping.")),
        None => {}
    }
    advice.push(syn);
    if !facts.accept_backlog.is_empty() {
        advice.push("Connections that reach CLOSE_WAIT before being accepted mean the listener's owner is not accepting at all, or far too slowly: look at that process first.".to_string());
    }
    Some(Finding {
        id: "listen-overflow",
        severity,
        title,
        evidence: evidence(&Evidence {
            listen_overflows: c.delta("TcpExt.ListenOverflows"),
            listen_drops: c.delta("TcpExt.ListenDrops"),
            syn_queue_full_drops: c.delta("TcpExt.TCPReqQFullDrop"),
            syncookies_sent: c.delta("TcpExt.SyncookiesSent"),
            somaxconn: s.somaxconn,
            max_syn_backlog: s.max_syn_backlog,
            syncookies: s.syncookies,
            listen_queues: &facts.listen_queues[..facts.listen_queues.len().min(10)],
            accept_backlog: &facts.accept_backlog,
        }),
        details,
        advice,
    })
}

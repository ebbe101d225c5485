//! Corrections of common TCP advice, for the running kernel: always listed.
use super::{value_text, DoctorInput, Note};

pub fn notes(input: &DoctorInput) -> Vec<Note> {
    let s = &input.sysctls;
    let k = &input.kernel;
    let mut out = Vec::new();
    let recycle = match (s.tw_recycle, k.at_least(4, 12)) {
        (Some(v), _) => format!(
            "net.ipv4.tcp_tw_recycle exists here (= {v}): this kernel ({}) is older than Linux 4.12, which removed it. Keep it 0: it dropped connections from clients behind NAT (their timestamps are not from one clock).",
            k.release
        ),
        (None, Some(false)) => format!(
            "net.ipv4.tcp_tw_recycle cannot be read on this kernel ({}): keep it 0 if it exists — it dropped connections from clients behind NAT, and Linux 4.12 removed it.",
            k.release
        ),
        (None, _) => "net.ipv4.tcp_tw_recycle does not exist on this kernel: Linux 4.12 removed it, after it broke clients behind NAT. Advice to set it is obsolete.".to_string(),
    };
    out.push(Note {
        id: "tcp_tw_recycle",
        text: recycle,
    });
    out.push(Note {
        id: "tcp_fin_timeout",
        text: format!(
            "net.ipv4.tcp_fin_timeout (now {}) does not shorten TIME_WAIT: it is how long an orphaned FIN_WAIT2 socket waits for the peer's FIN. TIME_WAIT lasts 60 s, fixed in the kernel (TCP_TIMEWAIT_LEN).",
            value_text(s.fin_timeout)
        ),
    });
    out.push(Note {
        id: "tcp_max_tw_buckets",
        text: format!(
            "net.ipv4.tcp_max_tw_buckets (now {}) does not make TIME_WAIT shorter: beyond it the kernel closes without TIME_WAIT (TCPTimeWaitOverflow). Lowering it hides the symptom and loses TIME_WAIT's protection; raising it costs a few hundred bytes per socket.",
            value_text(s.max_tw_buckets)
        ),
    });
    let values = match k.at_least(4, 18) {
        Some(false) => "0 off, 1 on (this kernel has no loopback-only 2, added in 4.18)",
        _ => "0 off, 1 every destination, 2 loopback only (the default since Linux 4.18)",
    };
    out.push(Note {
        id: "tcp_tw_reuse",
        text: format!(
            "net.ipv4.tcp_tw_reuse (now {}: {values}) only lets outgoing connections (connect()) reuse a TIME_WAIT port, and only with TCP timestamps; it never affects the TIME_WAIT of accepted connections.",
            value_text(s.tw_reuse)
        ),
    });
    if input.facts.lost_events > 0 || input.facts.uncertain_connections > 0 {
        out.push(Note {
            id: "lost-events",
            text: format!(
                "{} transitions were lost in the kernel and {} connections are uncertain: the counts above may miss some.",
                input.facts.lost_events, input.facts.uncertain_connections
            ),
        });
    }
    if input.counters.start.is_empty() || input.counters.end.is_empty() {
        out.push(Note {
            id: "counters",
            text: "The kernel's counters (/proc/net/netstat, /proc/net/snmp) could not be read: findings based on them are left out.".to_string(),
        });
    } else {
        out.push(Note {
            id: "namespace",
            text: "Sysctls and counters are those of tcpstate's network namespace; the traced connections are those of every namespace.".to_string(),
        });
    }
    out
}

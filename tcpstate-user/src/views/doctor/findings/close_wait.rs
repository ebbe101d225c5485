//! CLOSE_WAIT leaks: the peer closed and the program never closed its end.
use super::evidence;
use crate::views::doctor::{duration_text, facts::CloseWaitLeak, DoctorInput, Finding, Severity};
use serde::Serialize;

/// From this many leaked sockets on, the leak is critical: descriptors and
/// memory run out.
pub const CRITICAL_COUNT: usize = 1000;

#[derive(Serialize)]
struct Evidence<'a> {
    threshold_s: f64,
    total: usize,
    processes: &'a [CloseWaitLeak],
}

fn sockets(n: usize) -> String {
    if n == 1 {
        "1 socket".to_string()
    } else {
        format!("{n} sockets")
    }
}

pub fn finding(input: &DoctorInput) -> Option<Finding> {
    let leaks = &input.facts.close_wait;
    if leaks.is_empty() {
        return None;
    }
    let total: usize = leaks.iter().map(|l| l.count).sum();
    let top = &leaks[0];
    let threshold = input.facts.close_wait_threshold_s;
    let title = if leaks.len() == 1 {
        format!(
            "CLOSE_WAIT leak: {} held by {} for more than {}",
            sockets(top.count),
            top.process.text(),
            duration_text(threshold)
        )
    } else {
        format!(
            "CLOSE_WAIT leak: {total} sockets in {} processes, most held by {} ({})",
            leaks.len(),
            top.process.text(),
            top.count
        )
    };
    let details = leaks
        .iter()
        .map(|l| {
            let ports: Vec<String> = l.local_ports.iter().take(5).map(u16::to_string).collect();
            format!(
                "{}{}: {} in CLOSE_WAIT for more than {}, the oldest {}{}; local ports {}{}; {} remote peers",
                l.process.text(),
                l.cmdline
                    .as_ref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default(),
                sockets(l.count),
                duration_text(threshold),
                if l.age_is_lower_bound { "at least " } else { "" },
                duration_text(l.oldest_age_s),
                ports.join(","),
                if l.local_ports.len() > 5 { ",..." } else { "" },
                l.remote_peers
            )
        })
        .collect();
    let who = top.process.text();
    Some(Finding {
        id: "close-wait-leak",
        severity: if total >= CRITICAL_COUNT {
            Severity::Critical
        } else {
            Severity::Warning
        },
        title,
        evidence: evidence(&Evidence {
            threshold_s: threshold,
            total,
            processes: leaks,
        }),
        details,
        advice: vec![
            format!(
                "The peers closed these connections and {who} never closed its end: only the program can fix it, by calling close() once a read returns 0 (end of file) — on every path, errors and timeouts included."
            ),
            "No sysctl fixes a CLOSE_WAIT leak: CLOSE_WAIT has no timeout, the kernel keeps the socket as long as the program holds its descriptor (tcp_fin_timeout is about FIN_WAIT2 on the side that closed, not CLOSE_WAIT).".to_string(),
            "Look where the program reads from these ports: a missing close() on an error path, a pool that never notices connections closed by the peer, or workers stuck elsewhere. `ls -l /proc/PID/fd` shows the descriptors; they grow until the process hits its file limit (EMFILE). Restarting it frees them until the leak builds up again.".to_string(),
        ],
    })
}

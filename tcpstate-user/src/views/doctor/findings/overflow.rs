//! Closes that got no TIME_WAIT because `tcp_max_tw_buckets` was reached.
use super::evidence;
use crate::views::doctor::{value_text, DoctorInput, Finding, Severity};
use serde::Serialize;

/// Kernel memory per time-wait socket, roughly (a `tcp_timewait_sock` slab
/// object plus its hash entry): a few hundred bytes.
pub const BYTES_PER_BUCKET: u64 = 256;

#[derive(Serialize)]
struct Evidence {
    /// TcpExt.TCPTimeWaitOverflow over the watch.
    tcp_time_wait_overflow: Option<i64>,
    /// The closes the model saw skip TIME_WAIT during the watch.
    overflowed_closes_seen: u64,
    max_tw_buckets: Option<u64>,
    time_wait_now: usize,
}

pub fn finding(input: &DoctorInput) -> Option<Finding> {
    let kernel = input.counters.grew("TcpExt.TCPTimeWaitOverflow");
    let seen = input.facts.time_wait.overflow_closes;
    if kernel == 0 && seen == 0 {
        return None;
    }
    let buckets = input.sysctls.max_tw_buckets;
    let overflowed = (kernel as u64).max(seen);
    let mut details = vec![format!(
        "{overflowed} closes skipped TIME_WAIT during the watch (TcpExt.TCPTimeWaitOverflow +{kernel}; {seen} of them seen by the tracer): the table held net.ipv4.tcp_max_tw_buckets = {} sockets; {} TIME_WAIT sockets now",
        value_text(buckets),
        input.facts.time_wait.now
    )];
    details.push("the kernel logs `TCP: time wait bucket table overflow` for these".to_string());
    let raise = match buckets {
        Some(n) => format!(
            "Raising net.ipv4.tcp_max_tw_buckets (now {n}) lets every close keep its TIME_WAIT; each costs a few hundred bytes of kernel memory (about {BYTES_PER_BUCKET}): doubling it costs about {} MiB more at most.",
            n * BYTES_PER_BUCKET / (1 << 20)
        ),
        None => "Raising net.ipv4.tcp_max_tw_buckets lets every close keep its TIME_WAIT; each costs a few hundred bytes of kernel memory.".to_string(),
    };
    Some(Finding {
        id: "time-wait-overflow",
        severity: Severity::Warning,
        title: format!("{overflowed} connections closed without TIME_WAIT: tcp_max_tw_buckets reached"),
        evidence: evidence(&Evidence {
            tcp_time_wait_overflow: input.counters.delta("TcpExt.TCPTimeWaitOverflow"),
            overflowed_closes_seen: seen,
            max_tw_buckets: buckets,
            time_wait_now: input.facts.time_wait.now,
        }),
        details,
        advice: vec![
            raise,
            "Lowering it is no fix: beyond the limit the kernel simply skips TIME_WAIT, which hides the symptom and drops what TIME_WAIT protects — a delayed segment of the old connection can be taken into a new one with the same 4-tuple (the hazards RFC 1337 describes).".to_string(),
            "Better, create fewer: reuse connections in the program that closes first (see the TIME_WAIT finding).".to_string(),
        ],
    })
}

//! `connect-failures` (issue 11): connect() calls that failed during the
//! watch, and the advice for each cause. EADDRNOTAVAIL from connect() (and
//! EADDRINUSE from bind()) is a client out of local ports towards one
//! destination; refused, timed-out and unreachable ones say the peer or
//! the route is the problem, not this host's ports.
use super::evidence;
use crate::views::doctor::{DoctorInput, Finding, Severity};
use crate::views::ports::FailureRow;

fn is_exhaustion(f: &FailureRow) -> bool {
    matches!(
        (f.call, f.errno_name),
        ("connect", "EADDRNOTAVAIL") | ("bind", "EADDRINUSE")
    )
}

fn who(f: &FailureRow) -> String {
    format!(
        "{}/{}",
        f.tgid.map_or("?".to_string(), |t| t.to_string()),
        f.comm.as_deref().unwrap_or("?")
    )
}

pub fn finding(input: &DoctorInput) -> Option<Finding> {
    let failures = &input.facts.call_failures;
    if failures.is_empty() {
        return None;
    }
    let exhausted: Vec<&FailureRow> = failures.iter().filter(|f| is_exhaustion(f)).collect();
    let total: u64 = failures.iter().map(|f| f.count).sum();
    let mut details: Vec<String> = failures
        .iter()
        .take(10)
        .map(|f| {
            format!(
                "{} {}: {} × {} by {}",
                f.call,
                f.address,
                f.count,
                f.errno_name,
                who(f)
            )
        })
        .collect();
    if failures.len() > 10 {
        details.push(format!("and {} more", failures.len() - 10));
    }
    let mut advice = Vec::new();
    if !exhausted.is_empty() {
        exhaustion_advice(input, &mut advice);
    }
    if failures.iter().any(|f| !is_exhaustion(f)) {
        advice.push(
            "Refused (ECONNREFUSED), timed-out (ETIMEDOUT) and unreachable (ENETUNREACH, EHOSTUNREACH) connects are about the destination or the route, not this host's ports: check that the service listens there, its accept queue (see listen-overflow), firewalls and routes."
                .to_string(),
        );
    }
    Some(Finding {
        id: "connect-failures",
        severity: if exhausted.is_empty() {
            Severity::Warning
        } else {
            Severity::Critical
        },
        title: if exhausted.is_empty() {
            format!("{total} connect() calls failed during the watch")
        } else {
            let n: u64 = exhausted.iter().map(|f| f.count).sum();
            format!("Local ports exhausted: {n} connect()/bind() calls found no free port")
        },
        evidence: evidence(failures),
        details,
        advice,
    })
}

/// What helps a client that runs out of ports towards one destination,
/// given this kernel's settings. (`tcp_tw_recycle` is not among them: it
/// broke clients behind NAT and was removed in Linux 4.12.)
fn exhaustion_advice(input: &DoctorInput, advice: &mut Vec<String>) {
    let s = &input.sysctls;
    let (low, high) = s.port_range();
    advice.push(
        "Reuse connections instead of opening one per request: a connection pool, HTTP keep-alive; every closed connection holds its local port in TIME_WAIT for 60 s."
            .to_string(),
    );
    advice.push(
        "Spread the connections: each (source address, destination address, destination port) has its own set of ports, so more source addresses (bind() before connect(), with IP_BIND_ADDRESS_NO_PORT so that bind() does not take a port itself) or more destination addresses or ports multiply the room. A bind() to a port of its own (without IP_BIND_ADDRESS_NO_PORT) takes it for every destination."
            .to_string(),
    );
    let timestamps_on = s.timestamps.is_none_or(|t| t != 0);
    let reuse = match (s.tw_reuse, timestamps_on) {
        (_, false) => "net.ipv4.tcp_timestamps is 0: tcp_tw_reuse never applies without TCP timestamps; turn them back on first.".to_string(),
        (Some(1), true) => "net.ipv4.tcp_tw_reuse is 1 already: connect() may take a TIME_WAIT port towards the same destination once that socket is old enough and the old connection used timestamps; ports still run out when connections are opened faster than that.".to_string(),
        (reuse, true) => format!(
            "net.ipv4.tcp_tw_reuse is {}: set it to 1 to let connect() take over a TIME_WAIT port towards the same destination (outgoing connections only, and only when the old connection used TCP timestamps and its TIME_WAIT socket is at least {} s old); 2 does so for loopback only. It does not shorten TIME_WAIT or touch incoming connections.",
            reuse.map_or("unknown".to_string(), |r| r.to_string()),
            s.tw_reuse_delay_secs()
        ),
    };
    advice.push(reuse);
    advice.push(format!(
        "Widen net.ipv4.ip_local_port_range (now {low} {high}: {} ports), e.g. to 1024 65535, listing the ports services listen on in net.ipv4.ip_local_reserved_ports. Both are per network namespace: set them in the client's.",
        s.port_range_size()
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(call: &'static str, errno: u8, count: u64) -> FailureRow {
        FailureRow {
            netns: 1,
            call,
            address: "192.0.2.1:8081".into(),
            errno,
            errno_name: crate::wire::errno_name(errno),
            tgid: Some(42),
            comm: Some("client".into()),
            count,
        }
    }

    #[test]
    fn no_failures_no_finding() {
        assert_eq!(finding(&DoctorInput::default()), None);
    }

    #[test]
    fn exhaustion_is_critical_with_advice_for_this_kernel() {
        let mut input = DoctorInput::default();
        input.facts.call_failures = vec![row("connect", 99, 5), row("connect", 111, 1)];
        input.sysctls.tw_reuse = Some(2);
        input.sysctls.timestamps = Some(1);
        input.sysctls.local_port_range = Some((40000, 40099));
        let f = finding(&input).expect("a finding");
        assert_eq!((f.id, f.severity), ("connect-failures", Severity::Critical));
        assert!(f.title.contains("5 connect()"), "{}", f.title);
        let advice = f.advice.join("\n");
        assert!(advice.contains("tcp_tw_reuse is 2"), "{advice}");
        assert!(advice.contains("40000 40099: 100 ports"), "{advice}");
        assert!(advice.contains("IP_BIND_ADDRESS_NO_PORT"), "{advice}");
        assert!(advice.contains("ECONNREFUSED"), "{advice}");
        assert!(!advice.contains("tw_recycle"), "{advice}");
        input.sysctls.timestamps = Some(0);
        let advice = finding(&input).unwrap().advice.join("\n");
        assert!(
            advice.contains("never applies without TCP timestamps"),
            "{advice}"
        );
    }

    #[test]
    fn refused_only_is_a_warning_without_port_advice() {
        let mut input = DoctorInput::default();
        input.facts.call_failures = vec![row("handshake", 110, 3)];
        let f = finding(&input).expect("a finding");
        assert_eq!(f.severity, Severity::Warning);
        assert!(!f.advice.join("\n").contains("ip_local_port_range"));
    }
}

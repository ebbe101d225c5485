//! ESTABLISHED connections whose peer looks gone, as `tcpstate stale`
//! judges them from the kernel's `tcp_info` in the dump at the end of the
//! watch (issue 12).
use super::evidence;
use crate::views::{
    doctor::{DoctorInput, Finding, Severity},
    kill::{human_ms, owner_text},
};

pub fn finding(input: &DoctorInput) -> Option<Finding> {
    let report = &input.dead_peers;
    let first = report.rows.first()?;
    let silence = human_ms(report.silent_for_ms);
    let mut details: Vec<String> = report
        .rows
        .iter()
        .take(10)
        .map(|row| {
            format!(
                "{}: {} -> {} {}: {}",
                owner_text(&row.socket),
                row.socket.sock.local,
                row.socket.sock.remote,
                row.verdict.name(),
                row.how()
            )
        })
        .collect();
    if report.rows.len() > 10 {
        details.push(format!(
            "and {} more (`tcpstate stale`)",
            report.rows.len() - 10
        ));
    }
    details.push(format!(
        "{} idle ESTABLISHED connection(s) have a keepalive timer: not counted as dead, the kernel probes them and ends them if the peer is gone",
        report.idle_keepalive_on
    ));
    Some(Finding {
        id: "dead-peer",
        severity: Severity::Warning,
        title: format!(
            "{} ESTABLISHED connection(s) look dead (nothing from the peer for {silence} or more), e.g. held by {}",
            report.rows.len(),
            owner_text(&first.socket)
        ),
        evidence: evidence(&report.to_json()),
        details,
        advice: vec![
            "A connection without SO_KEEPALIVE whose peer vanished (power cut, NAT or firewall timeout, a lost FIN) stays ESTABLISHED for as long as the process keeps it. Enable SO_KEEPALIVE in the program and set TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT per socket (the net.ipv4.tcp_keepalive_* sysctls only apply to sockets with SO_KEEPALIVE).".to_string(),
            "Where data waits unacknowledged (peer-not-answering), TCP_USER_TIMEOUT bounds how long before the kernel gives up (otherwise net.ipv4.tcp_retries2, about 15 minutes). Application timeouts or heartbeats on reads catch a silent peer at any layer.".to_string(),
            "To end them now: `tcpstate kill --pid PID --state ESTABLISHED --older-than 5m` (shows the selection first; --dry-run only shows it). The process then gets ECONNABORTED on its next call on the socket.".to_string(),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        source::snapshot::{inspect::Inspected, tcp_info::TcpInfo},
        testkit,
        views::stale::StaleReport,
    };

    fn silent_connection(timer: u8) -> Inspected {
        let quiet = TcpInfo {
            last_ack_recv_ms: 3_600_000,
            ..TcpInfo::default()
        };
        testkit::established(Some((77, "postgres")), timer, Some(quiet))
    }

    #[test]
    fn only_when_a_connection_looks_dead_and_with_keepalive_advice() {
        let mut input = DoctorInput::default();
        assert!(finding(&input).is_none());
        input.dead_peers = StaleReport::new(&[silent_connection(2)], 300_000);
        assert!(finding(&input).is_none(), "keepalive on is not dead");
        input.dead_peers = StaleReport::new(&[silent_connection(0), silent_connection(2)], 300_000);
        let f = finding(&input).unwrap();
        assert_eq!(f.id, "dead-peer");
        assert!(
            f.title.starts_with("1 ESTABLISHED connection(s) look dead"),
            "{}",
            f.title
        );
        assert!(f.title.contains("77 postgres"), "{}", f.title);
        assert!(
            f.details[0].contains("idle-no-keepalive"),
            "{:?}",
            f.details
        );
        assert!(f.details[1].starts_with("1 idle"), "{:?}", f.details);
        let advice = f.advice.join(" ");
        for word in [
            "SO_KEEPALIVE",
            "TCP_KEEPIDLE",
            "TCP_USER_TIMEOUT",
            "Application timeouts",
        ] {
            assert!(advice.contains(word), "{word}: {advice}");
        }
        assert_eq!(f.evidence["stale"], 1);
    }
}

//! `tcpstate kill`: which sockets a selection takes, the plan shown before
//! acting, and the outcome per socket. Pure: the sockets (with their
//! `tcp_info` and owners) and the kernel's answers are given.
//!
//! Age: `kill` takes no trace, so the moment a socket entered its state is
//! not known. What the kernel does know is how long the peer has been
//! silent (`tcpi_last_ack_recv`: since the last segment from the peer that
//! TCP accepted). For a CLOSE_WAIT socket that is at least the time since
//! the peer's FIN; for ESTABLISHED it is the idle time. `--older-than`
//! compares with it, and the output calls it QUIET, not age.
use crate::{
    addr::Endpoint,
    filter::Filter,
    source::snapshot::{destroy::DestroyOutcome, inspect::Inspected},
    tcp::TcpState,
};
use std::fmt::Write;

/// What selects sockets: the shared filters, plus owner and quiet time.
#[derive(Clone, Debug, Default)]
pub struct Criteria {
    /// Ports, addresses, family, namespaces, cgroups; `states` are the
    /// states to take (none: every state but LISTEN and TIME_WAIT).
    pub filter: Filter,
    /// Owner tgids.
    pub pids: Vec<u32>,
    /// Owner command names (as in /proc/PID/comm).
    pub comms: Vec<String>,
    /// Only sockets whose peer was silent at least this long.
    pub older_than_ms: Option<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("TIME_WAIT sockets are never killed: no process holds them, the kernel frees each within 60 s, and they keep a late segment of the old connection out of a new one with the same addresses and ports (see `tcpstate doctor` for having fewer)")]
    TimeWait,
    #[error("name what to kill: at least one of --state, --pid, --comm, --port, --laddr, --raddr, --cgroup")]
    NoSelection,
    #[error("{selected} sockets selected, more than --max {max}: narrow the selection or raise --max; nothing was killed")]
    TooMany { selected: usize, max: usize },
}

/// The peer's silence in milliseconds, None where it means nothing
/// (LISTEN) or the kernel sent no `tcp_info`.
pub fn quiet_ms(s: &Inspected) -> Option<u64> {
    if s.state == TcpState::Listen {
        return None;
    }
    s.sock.tcp_info.map(|i| u64::from(i.last_ack_recv_ms))
}

impl Criteria {
    /// Refuses selections that must not run at all.
    pub fn check(&self) -> Result<(), Refusal> {
        if self.filter.states.contains(&TcpState::TimeWait) {
            return Err(Refusal::TimeWait);
        }
        let f = &self.filter;
        let named = !(f.states.is_empty()
            && self.pids.is_empty()
            && self.comms.is_empty()
            && f.ports.is_empty()
            && f.laddrs.is_empty()
            && f.raddrs.is_empty()
            && f.cgroups.is_empty());
        if named {
            Ok(())
        } else {
            Err(Refusal::NoSelection)
        }
    }

    pub fn matches(&self, s: &Inspected) -> bool {
        let f = &self.filter;
        let state_ok = if f.states.is_empty() {
            // LISTEN only when asked for by name; TIME_WAIT never.
            !matches!(
                s.state,
                TcpState::Listen | TcpState::TimeWait | TcpState::NewSynRecv | TcpState::Close
            )
        } else {
            f.states.contains(&s.state)
        };
        let (l, r) = (&s.sock.local, &s.sock.remote);
        let owner = s.owner.as_ref();
        state_ok
            && (f.ports.is_empty() || f.ports.iter().any(|&p| p == l.port || p == r.port))
            && (f.laddrs.is_empty() || f.laddrs.iter().any(|a| a.matches(l.ip, l.port)))
            && (f.raddrs.is_empty() || f.raddrs.iter().any(|a| a.matches(r.ip, r.port)))
            && f.family.is_none_or(|fam| fam == s.sock.family)
            && (f.netns.is_empty() || f.netns.contains(&s.netns))
            && (f.cgroups.is_empty() || f.cgroups.contains(&s.cgroup_id))
            && (self.pids.is_empty() || owner.is_some_and(|o| self.pids.contains(&o.tgid)))
            && (self.comms.is_empty()
                || owner.is_some_and(|o| self.comms.iter().any(|c| *c == o.comm.as_string())))
            && self
                .older_than_ms
                .is_none_or(|min| quiet_ms(s).is_some_and(|q| q >= min))
    }

    /// The sockets that match, in the order given.
    pub fn matching(&self, sockets: &[Inspected]) -> Vec<Inspected> {
        sockets
            .iter()
            .filter(|s| self.matches(s))
            .copied()
            .collect()
    }

    /// Err when `selected` is more than `max`.
    pub fn within_max(&self, selected: usize, max: usize) -> Result<(), Refusal> {
        if selected > max {
            return Err(Refusal::TooMany { selected, max });
        }
        Ok(())
    }

    /// The sockets to kill, in the order given; Err when more than `max`.
    pub fn select(&self, sockets: &[Inspected], max: usize) -> Result<Vec<Inspected>, Refusal> {
        self.check()?;
        let chosen = self.matching(sockets);
        self.within_max(chosen.len(), max)?;
        Ok(chosen)
    }
}

/// `1h02m`, `3m05s`, `12.3s`, `250ms`.
pub fn human_ms(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// The owner as shown: `PID COMM`, or `-` when unknown.
pub fn owner_text(s: &Inspected) -> String {
    s.owner.map_or_else(
        || "-".to_string(),
        |o| format!("{} {}", o.tgid, o.comm.as_string()),
    )
}

fn tuple(l: &Endpoint, r: &Endpoint) -> String {
    format!("{l} -> {r}")
}

/// The selection, one row per socket, and what QUIET means.
pub fn render_plan(chosen: &[Inspected]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:<12} {:<50} {:>8}",
        "OWNER", "STATE", "LOCAL -> REMOTE", "QUIET"
    );
    for s in chosen {
        let _ = writeln!(
            out,
            "{:<22} {:<12} {:<50} {:>8}",
            owner_text(s),
            s.state.name(),
            tuple(&s.sock.local, &s.sock.remote),
            quiet_ms(s).map_or_else(|| "-".to_string(), human_ms),
        );
    }
    let _ = writeln!(
        out,
        "{} socket(s) selected. QUIET: time since the last segment from the peer (the kernel's tcp_info last_ack_recv); for CLOSE_WAIT at least the time since the peer's FIN. The exact time each entered its state is not known without a trace.",
        chosen.len()
    );
    out
}

/// How an outcome is written.
pub fn outcome_text(outcome: DestroyOutcome) -> String {
    match outcome {
        DestroyOutcome::Destroyed => "destroyed".to_string(),
        DestroyOutcome::AlreadyGone => "already gone".to_string(),
        DestroyOutcome::Unsupported => "not supported by this kernel".to_string(),
        DestroyOutcome::Refused(errno) => {
            format!("refused: {}", std::io::Error::from_raw_os_error(errno))
        }
    }
}

/// The one line logged per kill attempt.
pub fn log_line(s: &Inspected, outcome: DestroyOutcome) -> String {
    format!(
        "kill {} {} of {} (netns {}): {}",
        s.state.name(),
        tuple(&s.sock.local, &s.sock.remote),
        owner_text(s),
        s.netns,
        outcome_text(outcome)
    )
}

/// Counts per outcome, for the closing line.
pub fn summary(outcomes: &[DestroyOutcome]) -> String {
    let count = |f: fn(&DestroyOutcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    format!(
        "{} destroyed, {} already gone, {} refused",
        count(|o| *o == DestroyOutcome::Destroyed),
        count(|o| *o == DestroyOutcome::AlreadyGone),
        count(|o| matches!(o, DestroyOutcome::Refused(_) | DestroyOutcome::Unsupported)),
    )
}

/// The line for a kernel without `SOCK_DESTROY`.
pub const UNSUPPORTED: &str = "this kernel was built without CONFIG_INET_DIAG_DESTROY, so it cannot destroy sockets on request; alternative: restart or signal the owning process so that it closes them, or have the peer send a reset (tools like killcx forge one)";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        filter::AddrFilter,
        source::snapshot::{diag::DiagSocket, owners::Holding, tcp_info::TcpInfo},
        tcp::Family,
        wire::Comm,
    };

    fn socket(state: TcpState, lport: u16, rport: u16, pid: Option<u32>, quiet: u32) -> Inspected {
        let ip = "127.0.0.1".parse().unwrap();
        Inspected {
            netns: 7,
            state,
            sock: DiagSocket {
                family: Family::Ipv4,
                state: state as u8,
                timer: 0,
                retrans: 0,
                local: Endpoint::new(ip, lport),
                remote: Endpoint::new(ip, rport),
                ifindex: 0,
                cookie: u64::from(lport) << 16 | u64::from(rport),
                expires_ms: 0,
                rqueue: 0,
                wqueue: 0,
                uid: 0,
                inode: 1,
                tcp_info: Some(TcpInfo {
                    last_ack_recv_ms: quiet,
                    ..TcpInfo::default()
                }),
            },
            owner: pid.map(|tgid| Holding {
                tgid,
                comm: Comm::from_str_lossy(if tgid == 10 { "leaky" } else { "other" }),
                holders: 1,
            }),
            cgroup_id: 0,
        }
    }

    fn sockets() -> Vec<Inspected> {
        vec![
            socket(TcpState::CloseWait, 80, 1000, Some(10), 60_000),
            socket(TcpState::CloseWait, 80, 1001, Some(10), 5_000),
            socket(TcpState::Established, 80, 1002, Some(10), 60_000),
            socket(TcpState::CloseWait, 81, 1003, Some(20), 60_000),
            socket(TcpState::Listen, 80, 0, Some(10), 0),
            socket(TcpState::TimeWait, 80, 1004, None, 0),
            socket(TcpState::CloseWait, 82, 1005, None, 60_000),
        ]
    }

    fn ports(chosen: &[Inspected]) -> Vec<u16> {
        chosen.iter().map(|s| s.sock.remote.port).collect()
    }

    #[test]
    fn selection_by_state_owner_and_quiet_time() {
        let all = sockets();
        let mut c = Criteria {
            pids: vec![10],
            ..Criteria::default()
        };
        c.filter.states = vec![TcpState::CloseWait];
        assert_eq!(ports(&c.select(&all, 10).unwrap()), [1000, 1001]);
        c.older_than_ms = Some(30_000);
        assert_eq!(ports(&c.select(&all, 10).unwrap()), [1000]);
        let by_comm = Criteria {
            comms: vec!["other".into()],
            ..Criteria::default()
        };
        assert_eq!(ports(&by_comm.select(&all, 10).unwrap()), [1003]);
    }

    #[test]
    fn listen_only_when_named_and_time_wait_never() {
        let all = sockets();
        let mut c = Criteria {
            pids: vec![10],
            ..Criteria::default()
        };
        assert_eq!(ports(&c.select(&all, 10).unwrap()), [1000, 1001, 1002]);
        c.filter.states = vec![TcpState::Listen];
        assert_eq!(ports(&c.select(&all, 10).unwrap()), [0]);
        // LISTEN has no quiet time: --older-than never takes it.
        c.older_than_ms = Some(0);
        assert!(c.select(&all, 10).unwrap().is_empty());
        c.filter.states = vec![TcpState::TimeWait, TcpState::CloseWait];
        assert_eq!(c.select(&all, 10), Err(Refusal::TimeWait));
        assert!(Refusal::TimeWait.to_string().contains("never killed"));
    }

    #[test]
    fn refusals() {
        let all = sockets();
        assert_eq!(
            Criteria::default().select(&all, 10),
            Err(Refusal::NoSelection)
        );
        let mut c = Criteria::default();
        c.filter.ports = vec![80];
        let err = c.select(&all, 2).unwrap_err();
        assert_eq!(
            err,
            Refusal::TooMany {
                selected: 3,
                max: 2
            }
        );
        assert!(err.to_string().contains("more than --max 2"), "{err}");
        c.filter.raddrs = vec!["127.0.0.1:1002".parse::<AddrFilter>().unwrap()];
        assert_eq!(ports(&c.select(&all, 2).unwrap()), [1002]);
        // An unknown owner never matches a pid.
        let none = Criteria {
            pids: vec![0],
            ..Criteria::default()
        };
        assert!(none.select(&all, 10).unwrap().is_empty());
    }

    #[test]
    fn plan_and_outcomes_say_what_happened() {
        let all = sockets();
        let plan = render_plan(&all[..2]);
        assert!(
            plan.contains("10 leaky") && plan.contains("CLOSE_WAIT"),
            "{plan}"
        );
        assert!(plan.contains("127.0.0.1:80 -> 127.0.0.1:1000"), "{plan}");
        assert!(plan.contains("1m00s") && plan.contains("5.0s"), "{plan}");
        assert!(plan.contains("2 socket(s) selected") && plan.contains("last_ack_recv"));
        let outcomes = [
            DestroyOutcome::Destroyed,
            DestroyOutcome::AlreadyGone,
            DestroyOutcome::Refused(libc::EPERM),
        ];
        assert_eq!(summary(&outcomes), "1 destroyed, 1 already gone, 1 refused");
        let line = log_line(&all[0], outcomes[2]);
        assert!(
            line.starts_with("kill CLOSE_WAIT 127.0.0.1:80 -> 127.0.0.1:1000 of 10 leaky"),
            "{line}"
        );
        assert!(line.contains("refused: Operation not permitted"), "{line}");
        assert_eq!(human_ms(250), "250ms");
        assert_eq!(human_ms(7_200_000 + 60_000), "2h01m");
    }
}

//! `tcpstate stale`: ESTABLISHED connections whose peer looks gone, judged
//! only from what the kernel reports for each socket (`tcp_info` and the
//! pending timer, from one sock_diag dump), grouped per owning process.
//!
//! Judgements, each row saying which one applied:
//! - peer not answering: data is unacknowledged and the retransmission
//!   timer has fired without answer (`tcpi_retransmits`/`tcpi_backoff`);
//! - zero window: the peer advertises no room and our probes go
//!   unanswered (zero-window probe timer, `tcpi_probes`);
//! - idle, no keepalive: nothing received for the threshold and no timer
//!   at all, so a vanished peer would never be noticed.
//!
//! An idle connection with a keepalive timer is not dead: the kernel
//! itself will find out; those are only counted. Retransmission counts are
//! the kernel's own `tcp_info` counters (no BPF program counts them).
use crate::{
    source::snapshot::{inspect::Inspected, TimerKind},
    tcp::TcpState,
    views::kill::{human_ms, owner_text},
};
use serde_json::json;
use std::fmt::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    PeerNotAnswering,
    ZeroWindow,
    IdleNoKeepalive,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::PeerNotAnswering => "peer-not-answering",
            Verdict::ZeroWindow => "zero-window",
            Verdict::IdleNoKeepalive => "idle-no-keepalive",
        }
    }
}

/// What one ESTABLISHED socket is, for `stale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judgement {
    Stale(Verdict),
    /// Idle past the threshold, keepalive timer running.
    IdleKeepaliveOn,
    /// Heard from the peer recently, or not ESTABLISHED.
    Fine,
    /// The kernel sent no tcp_info.
    Unknown,
}

fn timer_kind(s: &Inspected) -> Option<TimerKind> {
    TimerKind::from_raw(s.sock.timer)
}

/// The pending timer as `ss -o` would name it.
fn timer_name(s: &Inspected) -> &'static str {
    match timer_kind(s) {
        None => "none",
        Some(TimerKind::Retransmit) => "retransmit",
        Some(TimerKind::KeepAlive) => "keepalive",
        Some(TimerKind::ZeroWindowProbe) => "zero-window-probe",
        Some(TimerKind::TimeWait) => "time-wait",
        Some(TimerKind::Other(_)) => "other",
    }
}

pub fn judge(s: &Inspected, silent_for_ms: u64) -> Judgement {
    if s.state != TcpState::Established {
        return Judgement::Fine;
    }
    let Some(info) = s.sock.tcp_info else {
        return Judgement::Unknown;
    };
    if u64::from(info.last_ack_recv_ms) < silent_for_ms {
        return Judgement::Fine;
    }
    let timer = timer_kind(s);
    if timer == Some(TimerKind::ZeroWindowProbe) || (info.probes > 0 && info.snd_wnd == Some(0)) {
        return Judgement::Stale(Verdict::ZeroWindow);
    }
    if info.unacked > 0 && (info.retransmits > 0 || info.backoff > 0) {
        return Judgement::Stale(Verdict::PeerNotAnswering);
    }
    match timer {
        Some(TimerKind::KeepAlive) => Judgement::IdleKeepaliveOn,
        None => Judgement::Stale(Verdict::IdleNoKeepalive),
        // A retransmission pending that has not failed yet: undecided.
        _ => Judgement::Fine,
    }
}

/// One stale connection with its evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaleRow {
    pub socket: Inspected,
    pub verdict: Verdict,
}

impl StaleRow {
    /// How the judgement was made, in words.
    pub fn how(&self) -> String {
        let info = self.socket.sock.tcp_info.unwrap_or_default();
        let silent = human_ms(u64::from(info.last_ack_recv_ms));
        match self.verdict {
            Verdict::PeerNotAnswering => format!(
                "{} segment(s) unacknowledged, {} retransmission timeout(s) in a row unanswered (backoff {}), nothing from the peer for {silent} (tcp_info)",
                info.unacked, info.retransmits, info.backoff
            ),
            Verdict::ZeroWindow => format!(
                "the peer's window is zero and {} probe(s) went unanswered; nothing from the peer for {silent} (tcp_info, zero-window probe timer)",
                info.probes
            ),
            Verdict::IdleNoKeepalive => format!(
                "nothing from the peer for {silent} and no keepalive timer: a vanished peer would never be noticed (tcp_info, no timer pending)"
            ),
        }
    }
}

/// The whole result: stale rows grouped per owner, and what else was seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StaleReport {
    /// Sorted by owner (pid; unknown owners last), then by silence.
    pub rows: Vec<StaleRow>,
    pub established: usize,
    pub idle_keepalive_on: usize,
    pub without_info: usize,
    pub silent_for_ms: u64,
}

impl StaleReport {
    pub fn new(sockets: &[Inspected], silent_for_ms: u64) -> StaleReport {
        let mut report = StaleReport {
            silent_for_ms,
            ..StaleReport::default()
        };
        for s in sockets {
            if s.state == TcpState::Established {
                report.established += 1;
            }
            match judge(s, silent_for_ms) {
                Judgement::Stale(verdict) => report.rows.push(StaleRow {
                    socket: *s,
                    verdict,
                }),
                Judgement::IdleKeepaliveOn => report.idle_keepalive_on += 1,
                Judgement::Unknown => report.without_info += 1,
                Judgement::Fine => {}
            }
        }
        report.rows.sort_by_key(|r| {
            (
                r.socket.owner.map_or(u32::MAX, |o| o.tgid),
                std::cmp::Reverse(r.socket.sock.tcp_info.map_or(0, |i| i.last_ack_recv_ms)),
            )
        });
        report
    }

    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let mut owner = None;
        for row in &self.rows {
            let s = &row.socket;
            let this = owner_text(s);
            if owner.as_ref() != Some(&this) {
                let _ = writeln!(out, "{this}");
                owner = Some(this);
            }
            let _ = writeln!(
                out,
                "  {} -> {}  netns {}  {}: {}",
                s.sock.local,
                s.sock.remote,
                s.netns,
                row.verdict.name(),
                row.how()
            );
        }
        let _ = writeln!(
            out,
            "{} of {} ESTABLISHED connection(s) look dead (silent for {}+); {} idle with keepalive on (not dead: the kernel probes them){}",
            self.rows.len(),
            self.established,
            human_ms(self.silent_for_ms),
            self.idle_keepalive_on,
            if self.without_info > 0 {
                format!("; {} without tcp_info from the kernel", self.without_info)
            } else {
                String::new()
            }
        );
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut groups: Vec<serde_json::Value> = Vec::new();
        let mut current: Option<(Option<u32>, Vec<serde_json::Value>, String)> = None;
        let flush = |cur: Option<(Option<u32>, Vec<serde_json::Value>, String)>,
                     groups: &mut Vec<serde_json::Value>| {
            if let Some((pid, conns, comm)) = cur {
                groups.push(json!({"pid": pid, "comm": comm, "connections": conns}));
            }
        };
        for row in &self.rows {
            let s = &row.socket;
            let info = s.sock.tcp_info.unwrap_or_default();
            let pid = s.owner.map(|o| o.tgid);
            if current.as_ref().map(|c| c.0) != Some(pid) {
                flush(current.take(), &mut groups);
                let comm = s.owner.map(|o| o.comm.as_string()).unwrap_or_default();
                current = Some((pid, Vec::new(), comm));
            }
            if let Some(cur) = current.as_mut() {
                cur.1.push(json!({
                    "netns": s.netns,
                    "family": s.sock.family.name(),
                    "local": s.sock.local.to_string(),
                    "remote": s.sock.remote.to_string(),
                    "verdict": row.verdict.name(),
                    "how": row.how(),
                    "silent_ms": info.last_ack_recv_ms,
                    "last_data_recv_ms": info.last_data_recv_ms,
                    "last_data_sent_ms": info.last_data_sent_ms,
                    "unacked": info.unacked,
                    "retransmits": info.retransmits,
                    "total_retrans": info.total_retrans,
                    "backoff": info.backoff,
                    "probes": info.probes,
                    "timer": timer_name(s),
                }));
            }
        }
        flush(current, &mut groups);
        json!({
            "silent_for_ms": self.silent_for_ms,
            "established": self.established,
            "stale": self.rows.len(),
            "idle_keepalive_on": self.idle_keepalive_on,
            "without_tcp_info": self.without_info,
            "retransmits_source": "tcp_info",
            "processes": groups,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{source::snapshot::tcp_info::TcpInfo, testkit};

    fn conn(pid: Option<u32>, timer: u8, info: Option<TcpInfo>) -> Inspected {
        testkit::established(pid.map(|tgid| (tgid, "srv")), timer, info)
    }

    fn silent(ms: u32) -> TcpInfo {
        TcpInfo {
            last_ack_recv_ms: ms,
            last_data_recv_ms: ms,
            ..TcpInfo::default()
        }
    }

    #[test]
    fn judgements_follow_the_kernel_evidence() {
        let retrans = TcpInfo {
            unacked: 2,
            retransmits: 4,
            backoff: 4,
            ..silent(9_000)
        };
        assert_eq!(
            judge(&conn(Some(1), 1, Some(retrans)), 5_000),
            Judgement::Stale(Verdict::PeerNotAnswering)
        );
        // Recently heard from: fine whatever else.
        assert_eq!(
            judge(&conn(Some(1), 1, Some(retrans)), 10_000),
            Judgement::Fine
        );
        assert_eq!(
            judge(&conn(Some(1), 4, Some(silent(9_000))), 5_000),
            Judgement::Stale(Verdict::ZeroWindow)
        );
        assert_eq!(
            judge(&conn(Some(1), 0, Some(silent(9_000))), 5_000),
            Judgement::Stale(Verdict::IdleNoKeepalive)
        );
        assert_eq!(
            judge(&conn(Some(1), 2, Some(silent(9_000))), 5_000),
            Judgement::IdleKeepaliveOn
        );
        // Data in flight, not yet timed out: undecided, not dead.
        let in_flight = TcpInfo {
            unacked: 1,
            ..silent(9_000)
        };
        assert_eq!(
            judge(&conn(Some(1), 1, Some(in_flight)), 5_000),
            Judgement::Fine
        );
        assert_eq!(judge(&conn(Some(1), 0, None), 5_000), Judgement::Unknown);
        let mut cw = conn(Some(1), 0, Some(silent(9_000)));
        cw.state = TcpState::CloseWait;
        assert_eq!(judge(&cw, 5_000), Judgement::Fine);
    }

    #[test]
    fn report_groups_per_owner_and_counts_keepalive() {
        let sockets = [
            conn(None, 0, Some(silent(60_000))),
            conn(Some(7), 0, Some(silent(10_000))),
            conn(Some(3), 2, Some(silent(60_000))),
            conn(Some(7), 0, Some(silent(20_000))),
            conn(Some(3), 0, Some(silent(100))),
        ];
        let r = StaleReport::new(&sockets, 5_000);
        assert_eq!(
            (r.rows.len(), r.established, r.idle_keepalive_on),
            (3, 5, 1)
        );
        let owners: Vec<Option<u32>> = r
            .rows
            .iter()
            .map(|r| r.socket.owner.map(|o| o.tgid))
            .collect();
        assert_eq!(owners, [Some(7), Some(7), None]);
        let text = r.render_text();
        assert!(text.starts_with("7 srv\n"), "{text}");
        assert!(
            text.contains("idle-no-keepalive") && text.contains("20.0s"),
            "{text}"
        );
        assert!(
            text.contains("3 of 5 ESTABLISHED") && text.contains("1 idle with keepalive on"),
            "{text}"
        );
        let j = r.to_json();
        assert_eq!(j["processes"][0]["pid"], 7);
        assert_eq!(
            j["processes"][0]["connections"].as_array().unwrap().len(),
            2
        );
        assert_eq!(j["processes"][0]["connections"][0]["silent_ms"], 20_000);
        assert!(j["processes"][1]["pid"].is_null());
        assert_eq!(j["idle_keepalive_on"], 1);
        assert_eq!(j["processes"][0]["connections"][0]["timer"], "none");
    }
}

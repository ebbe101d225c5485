//! The `leaks` view: sockets left in CLOSE_WAIT, per owning process, and
//! not-yet-accepted ones per listener.
use super::owner::OwnerView;
use crate::model::LeakReport;
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ProcessLeak {
    pub tgid: Option<u32>,
    pub comm: Option<String>,
    #[serde(flatten)]
    pub cgroup: crate::source::cgroup::CgroupView,
    pub cmdline: Option<String>,
    pub count: usize,
    pub oldest_age_s: f64,
    /// The socket was already in CLOSE_WAIT when first seen: its age is at
    /// least this much.
    pub age_is_lower_bound: bool,
    pub local_ports: Vec<u16>,
    pub remote_peers: Vec<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BacklogView {
    pub listener: Option<String>,
    pub listener_owner: Option<OwnerView>,
    pub count: usize,
    pub oldest_age_s: f64,
    pub remote_peers: Vec<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LeaksView {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub threshold_s: f64,
    pub total: usize,
    pub processes: Vec<ProcessLeak>,
    /// CLOSE_WAIT sockets still in a listener's accept queue: not a leak of
    /// any process, but a sign of a stalled server.
    pub accept_backlog: Vec<BacklogView>,
    pub lost_events: u64,
}

impl crate::views::Report for LeaksView {
    fn table(&self) -> String {
        LeaksView::table(self)
    }
}

impl LeaksView {
    pub fn new(
        report: &LeakReport,
        lost_events: u64,
        cmdline: impl Fn(u32) -> Option<String>,
        mut cgroup: impl FnMut(u64) -> crate::source::cgroup::CgroupView,
    ) -> Self {
        let secs = |ns: u64| ns as f64 / 1e9;
        LeaksView {
            kind: "leaks",
            threshold_s: secs(report.threshold_ns),
            total: report.total(),
            processes: report
                .by_owner
                .iter()
                .map(|l| ProcessLeak {
                    tgid: l.tgid,
                    comm: l.comm.map(|c| c.as_string()),
                    cgroup: cgroup(l.cgroup_id),
                    cmdline: l.tgid.and_then(&cmdline),
                    count: l.count,
                    oldest_age_s: secs(l.oldest_age_ns),
                    age_is_lower_bound: l.age_is_lower_bound,
                    local_ports: l.local_ports.clone(),
                    remote_peers: l.remote_peers.iter().map(|p| p.to_string()).collect(),
                })
                .collect(),
            accept_backlog: report
                .accept_backlog
                .iter()
                .map(|b| BacklogView {
                    listener: b.listener_local.map(|l| l.to_string()),
                    listener_owner: b.listener_owner.as_ref().map(OwnerView::from),
                    count: b.count,
                    oldest_age_s: secs(b.oldest_age_ns),
                    remote_peers: b.remote_peers.iter().map(|p| p.to_string()).collect(),
                })
                .collect(),
            lost_events,
        }
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "CLOSE_WAIT for more than {}s: {} sockets ({} lost events)",
            self.threshold_s, self.total, self.lost_events
        );
        if !self.processes.is_empty() {
            let _ = writeln!(
                out,
                "{:>8} {:<16} {:>6} {:>10}  {:<20} {:<30} CMDLINE",
                "PID", "COMM", "COUNT", "OLDEST_S", "LOCAL_PORTS", "REMOTE_PEERS"
            );
        }
        for p in &self.processes {
            let _ = writeln!(
                out,
                "{:>8} {:<16} {:>6} {:>9.1}{} {:<20} {:<30} {}",
                p.tgid.map_or("?".into(), |t| t.to_string()),
                p.comm.as_deref().unwrap_or("?"),
                p.count,
                p.oldest_age_s,
                if p.age_is_lower_bound { "+" } else { " " },
                abbreviate(&p.local_ports.iter().map(u16::to_string).collect::<Vec<_>>()),
                abbreviate(&p.remote_peers),
                p.cmdline.as_deref().unwrap_or("")
            );
        }
        for b in &self.accept_backlog {
            let _ = writeln!(
                out,
                "accept backlog: {} CLOSE_WAIT sockets never accepted on {} (owner {}), oldest {:.1}s",
                b.count,
                b.listener.as_deref().unwrap_or("?"),
                b.listener_owner
                    .as_ref()
                    .map_or("?".to_string(), |o| format!("{}/{} ({})", o.tgid, o.comm, o.how)),
                b.oldest_age_s
            );
        }
        out
    }
}

/// The first few items and how many more.
pub fn abbreviate(items: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut text = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(",");
    if items.len() > SHOWN {
        let _ = write!(text, ",+{}", items.len() - SHOWN);
    }
    if text.is_empty() {
        text.push('-');
    }
    text
}

//! CLOSE_WAIT leaks: the peer closed, and the program never closed its end.
use super::{
    connection::{Connection, OpenKind},
    owner::Owner,
};
use crate::{addr::Endpoint, tcp::TcpState, wire::Comm};
use std::collections::{BTreeMap, BTreeSet};

/// Sockets in CLOSE_WAIT for longer than the threshold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeakReport {
    pub threshold_ns: u64,
    /// Per owning process (tgid), most sockets first; `tgid: None` holds the
    /// sockets whose owner is unknown and that are not a listener's children.
    pub by_owner: Vec<OwnerLeak>,
    /// Passive sockets with no owner yet: still in their listener's accept
    /// queue (or accepted with the accept unobserved), per listener.
    pub accept_backlog: Vec<BacklogLeak>,
}

impl LeakReport {
    pub fn total(&self) -> usize {
        self.by_owner.iter().map(|l| l.count).sum::<usize>()
            + self.accept_backlog.iter().map(|l| l.count).sum::<usize>()
    }
}

/// The leaked sockets of one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerLeak {
    pub tgid: Option<u32>,
    pub comm: Option<Comm>,
    /// The owner's cgroup v2 id (0: unknown).
    pub cgroup_id: u64,
    pub count: usize,
    pub oldest_age_ns: u64,
    /// Some ages are only lower bounds: the socket was already in CLOSE_WAIT
    /// when first seen.
    pub age_is_lower_bound: bool,
    pub local_ports: Vec<u16>,
    pub remote_peers: Vec<Endpoint>,
}

/// The not-yet-accepted CLOSE_WAIT sockets of one listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BacklogLeak {
    /// None when the listener is unknown (it predates the tracer).
    pub listener_skaddr: Option<u64>,
    pub listener_local: Option<Endpoint>,
    pub listener_owner: Option<Owner>,
    pub count: usize,
    pub oldest_age_ns: u64,
    pub age_is_lower_bound: bool,
    pub remote_peers: Vec<Endpoint>,
}

#[derive(Default)]
struct Group {
    count: usize,
    oldest_age_ns: u64,
    age_is_lower_bound: bool,
    local_ports: BTreeSet<u16>,
    remote_peers: BTreeSet<Endpoint>,
}

impl Group {
    fn add(&mut self, conn: &Connection, age_ns: u64, lower_bound: bool) {
        self.count += 1;
        self.oldest_age_ns = self.oldest_age_ns.max(age_ns);
        self.age_is_lower_bound |= lower_bound;
        self.local_ports.insert(conn.local.port);
        self.remote_peers.insert(conn.remote);
    }
}

/// Finds the CLOSE_WAIT sockets older than `threshold_ns` at `now_ns`.
pub(crate) fn close_wait_leaks<'a>(
    conns: impl Iterator<Item = &'a Connection>,
    now_ns: u64,
    threshold_ns: u64,
) -> LeakReport {
    // Per tgid: the owner's comm and cgroup, and its leaked sockets.
    type OwnerGroup = (Option<(Comm, u64)>, Group);
    let mut owners: BTreeMap<Option<u32>, OwnerGroup> = BTreeMap::new();
    type ListenerKey = (Option<u64>, Option<Endpoint>);
    let mut backlogs: BTreeMap<ListenerKey, (Option<Owner>, Group)> = BTreeMap::new();
    // Ordered by id so that the comm kept per process is deterministic.
    let mut leaked: Vec<&Connection> = conns.filter(|c| c.state == TcpState::CloseWait).collect();
    leaked.sort_by_key(|c| c.id);
    for conn in leaked {
        // A socket already in CLOSE_WAIT when first seen has been there at
        // least since then.
        let (since, lower_bound) = match conn.state_entered_ns() {
            Some(entered) => (entered, false),
            None => (conn.started_ns, true),
        };
        let age_ns = now_ns.saturating_sub(since);
        if age_ns <= threshold_ns {
            continue;
        }
        match (conn.owner(), conn.open) {
            (None, OpenKind::Passive) => {
                let listener = conn.listener();
                let key = (listener.and_then(|l| l.skaddr), listener.map(|l| l.local));
                let (_, group) = backlogs
                    .entry(key)
                    .or_insert_with(|| (listener.and_then(|l| l.owner), Group::default()));
                group.add(conn, age_ns, lower_bound);
            }
            (owner, _) => {
                let (_, group) = owners
                    .entry(owner.map(|o| o.tgid))
                    .or_insert_with(|| (owner.map(|o| (o.comm, o.cgroup_id)), Group::default()));
                group.add(conn, age_ns, lower_bound);
            }
        }
    }
    let mut by_owner: Vec<OwnerLeak> = owners
        .into_iter()
        .map(|(tgid, (owner, g))| OwnerLeak {
            tgid,
            comm: owner.map(|(comm, _)| comm),
            cgroup_id: owner.map_or(0, |(_, cgroup)| cgroup),
            count: g.count,
            oldest_age_ns: g.oldest_age_ns,
            age_is_lower_bound: g.age_is_lower_bound,
            local_ports: g.local_ports.into_iter().collect(),
            remote_peers: g.remote_peers.into_iter().collect(),
        })
        .collect();
    by_owner.sort_by_key(|l| std::cmp::Reverse(l.count));
    let mut accept_backlog: Vec<BacklogLeak> = backlogs
        .into_iter()
        .map(|((skaddr, local), (owner, g))| BacklogLeak {
            listener_skaddr: skaddr,
            listener_local: local,
            listener_owner: owner,
            count: g.count,
            oldest_age_ns: g.oldest_age_ns,
            age_is_lower_bound: g.age_is_lower_bound,
            remote_peers: g.remote_peers.into_iter().collect(),
        })
        .collect();
    accept_backlog.sort_by_key(|l| std::cmp::Reverse(l.count));
    LeakReport {
        threshold_ns,
        by_owner,
        accept_backlog,
    }
}

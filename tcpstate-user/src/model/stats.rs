//! Counts: sockets per state now (`ss -s` style), and the model's own
//! bookkeeping counters.
use super::{
    connection::{ClosedFirst, Connection},
    owner::Owner,
    time_wait::{TimeWaitCounters, TimeWaitTable},
};
use crate::{tcp::TcpState, wire::Comm};
use std::{collections::BTreeMap, net::IpAddr};

/// Sockets per state.
pub type StateTally = BTreeMap<TcpState, usize>;

/// Sockets per state of one local port or remote address: a flat array,
/// read like a [`StateTally`] (a `stat` report has one per port in use,
/// tens of thousands under churn, and allocating a map for each was most
/// of its cost).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateRow(Counts);

impl StateRow {
    /// The sockets in `state`; None when there are none (as a tally's
    /// `get`).
    pub fn get(&self, state: TcpState) -> Option<usize> {
        let n = self.0[state as usize];
        (n > 0).then_some(n)
    }

    /// The states with sockets, in state order.
    pub fn iter(&self) -> impl Iterator<Item = (TcpState, usize)> + '_ {
        TcpState::ALL
            .into_iter()
            .filter_map(|s| self.get(s).map(|n| (s, n)))
    }

    pub fn total(&self) -> usize {
        self.0.iter().sum()
    }
}

/// The sockets of one process, per state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessStates {
    /// None: owner not known (for instance not yet accepted).
    pub tgid: Option<u32>,
    pub comm: Option<Comm>,
    /// The owner's cgroup v2 id (0: unknown).
    pub cgroup_id: u64,
    pub states: StateTally,
}

/// Sockets now, per state and grouped several ways. TIME_WAIT comes from the
/// TIME_WAIT table (attributed to the owner of the connection that left it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub by_state: StateTally,
    /// In tgid order, unknown owner first.
    pub by_process: Vec<ProcessStates>,
    /// Empty from [`Model::stat_by_process`](super::Model::stat_by_process).
    pub by_local_port: BTreeMap<u16, StateRow>,
    /// Listeners are left out: they have no remote address. Empty from
    /// [`Model::stat_by_process`](super::Model::stat_by_process).
    pub by_remote_ip: BTreeMap<IpAddr, StateRow>,
    /// TIME_WAIT entries by who closed first (Local or Both).
    pub time_wait_by_closed_first: BTreeMap<ClosedFirst, usize>,
}

impl StateCounts {
    pub fn total(&self) -> usize {
        self.by_state.values().sum()
    }

    pub fn count(&self, state: TcpState) -> usize {
        self.by_state.get(&state).copied().unwrap_or(0)
    }

    /// The counts: live connections walked, TIME_WAIT from the table's
    /// running tally (in debug builds, checked against a walk of it).
    /// Without `endpoints`, `by_local_port` and `by_remote_ip` stay empty.
    pub(crate) fn collect<'a>(
        conns: impl Iterator<Item = &'a Connection>,
        time_wait: &TimeWaitTable,
        endpoints: bool,
    ) -> StateCounts {
        let tw = time_wait.tally();
        let mut tallies = Tallies::new(endpoints);
        if endpoints {
            // Sized once: growing by doubling rehashed them a dozen times.
            tallies.by_local_port.reserve(tw.by_local_port.len());
            tallies.by_remote_ip.reserve(tw.by_remote_ip.len());
        }
        let conns = Self::add_connections(&mut tallies, conns);
        let at = TcpState::TimeWait as usize;
        tallies.by_state[at] += tw.total;
        for (&tgid, p) in &tw.by_process {
            let process = tallies.processes.entry(tgid).or_insert_with(|| {
                let (comm, cgroup_id) = time_wait.name_of(tgid);
                (comm, cgroup_id, [0; STATE_SLOTS])
            });
            process.2[at] += p.count;
        }
        if endpoints {
            for (&port, &n) in &tw.by_local_port {
                tallies
                    .by_local_port
                    .entry(port)
                    .or_insert([0; STATE_SLOTS])[at] += n;
            }
            for (&ip, &n) in tw
                .by_remote_ip
                .iter()
                .filter(|(ip, _)| !ip.is_unspecified())
            {
                tallies.by_remote_ip.entry(ip).or_insert([0; STATE_SLOTS])[at] += n;
            }
        }
        let by_closed_first = tw.by_closed_first.iter().map(|(c, n)| (*c, *n)).collect();
        let counts = tallies.into_counts(by_closed_first);
        debug_assert_eq!(counts, Self::collect_by_walk(conns, time_wait, endpoints));
        counts
    }

    /// Live connections in id order, so that the comm kept per process is
    /// deterministic (the first connection's).
    fn add_connections<'a>(
        tallies: &mut Tallies,
        conns: impl Iterator<Item = &'a Connection>,
    ) -> Vec<&'a Connection> {
        let mut conns: Vec<&Connection> = conns.collect();
        conns.sort_by_key(|c| c.id);
        for c in &conns {
            let remote = (c.state != TcpState::Listen).then_some(c.remote.ip);
            tallies.add(c.state, c.owner(), c.local.port, remote);
        }
        conns
    }

    /// [`Self::collect`] by walking every TIME_WAIT entry, as it was before
    /// the running tally: what the tally is checked against.
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    fn collect_by_walk(
        conns: Vec<&Connection>,
        time_wait: &TimeWaitTable,
        endpoints: bool,
    ) -> StateCounts {
        let mut tallies = Tallies::new(endpoints);
        Self::add_connections(&mut tallies, conns.into_iter());
        let mut time_wait_by_closed_first = BTreeMap::new();
        for e in time_wait.iter() {
            *time_wait_by_closed_first.entry(e.closed_first).or_insert(0) += 1;
            let remote = Some(e.flow.remote.ip);
            tallies.add(TcpState::TimeWait, e.owner, e.flow.local.port, remote);
        }
        tallies.into_counts(time_wait_by_closed_first)
    }
}

/// Sockets per state, as a plain array indexed by the state's number.
type Counts = [usize; STATE_SLOTS];
const STATE_SLOTS: usize = 13;

/// What [`StateCounts::collect`] adds up, in flat arrays and hash maps
/// (hundreds of thousands of TIME_WAIT entries a second for `stat` on a busy
/// host), made into the ordered maps of [`StateCounts`] once at the end.
#[derive(Default)]
struct Tallies {
    /// Whether ports and remote addresses are counted.
    endpoints: bool,
    by_state: Counts,
    /// First-seen comm and cgroup of each process, in first-seen order.
    processes: foldhash::HashMap<Option<u32>, (Option<Comm>, u64, Counts)>,
    by_local_port: foldhash::HashMap<u16, Counts>,
    by_remote_ip: foldhash::HashMap<IpAddr, Counts>,
}

impl Tallies {
    fn new(endpoints: bool) -> Self {
        Tallies {
            endpoints,
            ..Tallies::default()
        }
    }

    fn add(
        &mut self,
        state: TcpState,
        owner: Option<Owner>,
        local_port: u16,
        remote_ip: Option<IpAddr>,
    ) {
        let at = state as usize;
        self.by_state[at] += 1;
        let tgid = owner.map(|o| o.tgid);
        let process = self.processes.entry(tgid).or_insert_with(|| {
            (
                owner.map(|o| o.comm),
                owner.map_or(0, |o| o.cgroup_id),
                [0; STATE_SLOTS],
            )
        });
        process.2[at] += 1;
        if !self.endpoints {
            return;
        }
        self.by_local_port
            .entry(local_port)
            .or_insert([0; STATE_SLOTS])[at] += 1;
        if let Some(ip) = remote_ip.filter(|ip| !ip.is_unspecified()) {
            self.by_remote_ip.entry(ip).or_insert([0; STATE_SLOTS])[at] += 1;
        }
    }

    fn into_counts(self, time_wait_by_closed_first: BTreeMap<ClosedFirst, usize>) -> StateCounts {
        let mut by_process: Vec<ProcessStates> = self
            .processes
            .into_iter()
            .map(|(tgid, (comm, cgroup_id, counts))| ProcessStates {
                tgid,
                comm,
                cgroup_id,
                states: tally(&counts),
            })
            .collect();
        by_process.sort_by_key(|p| p.tgid);
        StateCounts {
            by_state: tally(&self.by_state),
            by_process,
            by_local_port: rows(self.by_local_port),
            by_remote_ip: rows(self.by_remote_ip),
            time_wait_by_closed_first,
        }
    }
}

/// In key order (the keys are distinct: an unstable sort is as
/// deterministic, and the map is then built from a sorted run). Sorts
/// (key, position) pairs rather than moving the 100-byte rows.
fn rows<K: Ord + Copy>(counts: foldhash::HashMap<K, Counts>) -> BTreeMap<K, StateRow> {
    let (keys, rows): (Vec<K>, Vec<Counts>) = counts.into_iter().unzip();
    let mut order: Vec<(K, u32)> = keys.into_iter().zip(0..).collect();
    order.sort_unstable();
    order
        .into_iter()
        .map(|(key, at)| (key, StateRow(rows[at as usize])))
        .collect()
}

/// The states with a count, as the ordered map views print.
fn tally(counts: &Counts) -> StateTally {
    TcpState::ALL
        .iter()
        .filter(|s| counts[**s as usize] > 0)
        .map(|s| (*s, counts[*s as usize]))
        .collect()
}

/// What the model did with its input, and what it had to give up on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelStats {
    pub transitions: u64,
    pub owner_observations: u64,
    pub connections_started: u64,
    pub connections_finished: u64,
    /// Live connections dropped to stay within `max_connections`.
    pub evicted: u64,
    /// Transitions whose old state was not the state the model believed.
    pub inconsistent: u64,
    /// Transitions older than what was already applied for their socket
    /// (ignored, or merged when they were a missed birth).
    pub out_of_order: u64,
    /// Connections ended without their CLOSE being seen: a new socket was
    /// born at their address.
    pub missed_close: u64,
    /// Transitions with nothing to apply to (out of TIME_WAIT for a socket
    /// already finished, CLOSE→CLOSE).
    pub ignored: u64,
    /// Kernel records lost, as last reported.
    pub lost_events: u64,
    /// Connections marked uncertain because events were lost.
    pub uncertain_marked: u64,
    /// Owner observations that matched no socket (stale, or dropped while
    /// waiting for their socket).
    pub owner_unmatched: u64,
    /// Owner observations from task 0 (interrupt context), ignored.
    pub owner_ignored: u64,
    /// Snapshot sockets later matched to their transitions.
    pub snapshot_adopted: u64,
    /// Connections believed still closing (FIN_WAIT1, FIN_WAIT2, CLOSING)
    /// finished by inference when their local peer went LAST_ACK→CLOSE:
    /// their own way into TIME_WAIT was missed. Their entries are inferred.
    pub inferred_closes: u64,
    /// Connections whose own close came after their local peer's
    /// LAST_ACK→CLOSE, within the grace the inference waits (the kernel
    /// emits them in that order when the peer's ACK is processed inside
    /// `tcp_time_wait()`): applied as seen, nothing inferred.
    pub closes_after_peer: u64,
    /// Connections believed still closing when a new socket took their
    /// address, after lost events: given an inferred TIME_WAIT entry.
    pub inferred_superseded: u64,
    /// [`ResetSent`](crate::wire::ResetSent) inputs.
    pub resets_seen: u64,
    /// TIME_WAIT entries those resets destroyed (also counted in
    /// `time_wait.reset`).
    pub resets_time_wait_removed: u64,
    /// Resets with an unknown namespace whose 4-tuple was in TIME_WAIT in
    /// several namespaces: nothing removed.
    pub resets_ambiguous: u64,
    pub time_wait: TimeWaitCounters,
}

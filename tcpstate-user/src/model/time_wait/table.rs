//! The table of local TIME_WAIT sockets: one entry per hand-over to a
//! time-wait socket, with its predicted expiry, indexed by 4-tuple.
use super::expiry::{ExpiryKey, ExpiryOrder};
use super::tally::{OwnerName, TimeWaitTally};
use crate::model::{
    connection::{ClosedFirst, FlowKey},
    owner::Owner,
    slab::Slab,
};
use crate::{addr::Endpoint, tcp::Family, wire::Comm};
use foldhash::{fast::RandomState, HashMap, HashMapExt};
use hashbrown::HashTable;
use std::{collections::BTreeMap, hash::BuildHasher, net::IpAddr};

/// What the predicted expiry is based on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpiryBasis {
    /// The socket entered TIME_WAIT proper at its start (CLOSING→CLOSE):
    /// start + `time_wait_secs`. Exact.
    TimeWaitLen,
    /// Entered in the FIN_WAIT2 substate and the peer's FIN was seen on a
    /// locally traced peer (its CLOSE_WAIT→LAST_ACK): that time +
    /// `time_wait_secs`. Exact to within the loopback latency.
    PeerFin,
    /// Entered after FIN_WAIT2 with the peer's FIN unseen: start +
    /// max(`time_wait_secs`, `fin_timeout_secs`). An estimate: a peer FIN
    /// arriving late restarts the 60 s.
    FinTimeoutEstimate,
    /// From the snapshot, start unknown: snapshot time + `time_wait_secs`,
    /// the longest it can still live.
    Snapshot,
    /// Inferred when the connection, believed still closing, was superseded
    /// by a new socket at its address (its CLOSE was missed), with the
    /// peer's FIN unseen: the time of the new socket's birth +
    /// `time_wait_secs`. Start unknown; a rough estimate. A peer FIN seen
    /// later moves it to [`ExpiryBasis::PeerFin`].
    Superseded,
}

impl ExpiryBasis {
    /// Whether the expiry still depends on a peer FIN not seen yet.
    pub fn awaits_peer_fin(self) -> bool {
        matches!(
            self,
            ExpiryBasis::FinTimeoutEstimate | ExpiryBasis::Superseded
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            ExpiryBasis::TimeWaitLen => "time-wait-len",
            ExpiryBasis::PeerFin => "peer-fin",
            ExpiryBasis::FinTimeoutEstimate => "fin-timeout-estimate",
            ExpiryBasis::Snapshot => "snapshot",
            ExpiryBasis::Superseded => "superseded",
        }
    }
}

/// Why an entry left the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeWaitRemoval {
    /// Its predicted expiry passed.
    Expired,
    /// A new connection took the same 4-tuple (tcp_tw_reuse, or a SYN
    /// accepted in TIME_WAIT).
    Reused,
    /// Killed by a reset: one it received (RFC 1337 assassination) or one
    /// it sent. The tracepoint cannot show it: learnt from a
    /// [`ResetSent`](crate::wire::ResetSent), from the local peer's reset, or
    /// from the caller.
    Reset,
}

/// One inferred time-wait socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeWaitEntry {
    pub flow: FlowKey,
    pub family: Family,
    /// The owner of the connection that left it (time-wait sockets belong to
    /// no process; this is who caused it).
    pub owner: Option<Owner>,
    /// Local, or Both for a simultaneous close. Snapshot entries say Local:
    /// the two cannot be told apart afterwards.
    pub closed_first: ClosedFirst,
    /// None when unknown: snapshot entries, and entries inferred at a
    /// supersede ([`ExpiryBasis::Superseded`] or a `PeerFin` from one).
    pub started_ns: Option<u64>,
    pub expires_ns: u64,
    pub basis: ExpiryBasis,
    /// The connection that left it; None for snapshot entries.
    pub connection_id: Option<u64>,
    /// The hand-over to TIME_WAIT was not seen but inferred: the
    /// transitions into it were missed (lost events, BPF recursion misses)
    /// and the entry rests on other evidence (the local peer's close, or the
    /// socket's address being reused). Its connection is uncertain.
    pub inferred: bool,
}

/// Entries of the table, by what happened to them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeWaitCounters {
    pub inserted: u64,
    /// Not created: the namespace held `max_tw_buckets` already (mirrors the
    /// kernel's TCPTimeWaitOverflow).
    pub skipped_overflow: u64,
    /// Not created: the table's own memory bound was reached.
    pub skipped_memory: u64,
    pub expired: u64,
    pub reused: u64,
    pub reset: u64,
}

/// The outcome of an insertion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    Yes,
    Overflow,
    OverMemory,
}

/// Entries for one remote endpoint: how many local ports they hold.
#[derive(Clone, Debug, PartialEq)]
pub struct DestinationPorts {
    pub remote: Endpoint,
    /// Distinct local ports in TIME_WAIT towards `remote`.
    pub local_ports: usize,
    /// Of those, the ones inside the given range.
    pub in_range: usize,
    /// `in_range` over the size of the range: 1.0 means connect() to
    /// `remote` from one local address has no port left.
    pub share: f64,
}

/// A count per process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessCount {
    /// None: owner unknown.
    pub tgid: Option<u32>,
    /// The comm of the first entry seen for the process (threads differ).
    pub comm: Option<Comm>,
    pub count: usize,
}

/// The inferred TIME_WAIT sockets, bounded per namespace by the kernel's
/// `max_tw_buckets` and overall by a memory bound.
///
/// Entries live in a [`Slab`]; the flow index and the expiry order hold
/// slot numbers (the flow index hashes the flow read out of the slot), so
/// inserting and removing moves small values, not entries.
#[derive(Debug)]
pub struct TimeWaitTable {
    /// Each entry with its insertion sequence number and flow hash.
    entries: Slab<(TimeWaitEntry, u64, FlowHash)>,
    /// Slots by flow, each with its [`FlowHash`]: the table rehashes (to
    /// clear what removals left) without reading every entry.
    by_flow: HashTable<(u32, FlowHash)>,
    /// Expiry in order, ties by insertion.
    by_expiry: ExpiryOrder,
    hasher: RandomState,
    per_netns: HashMap<u32, usize>,
    max_per_netns: usize,
    max_total: usize,
    next_seq: u64,
    counters: TimeWaitCounters,
    /// Counts of the entries, kept as they come and go once asked for
    /// (a replay that reports once, at its end, pays one walk instead).
    tally: std::cell::OnceCell<TimeWaitTally>,
}

impl TimeWaitTable {
    pub fn new(max_per_netns: usize, max_total: usize) -> Self {
        Self {
            entries: Slab::default(),
            by_flow: HashTable::new(),
            by_expiry: ExpiryOrder::default(),
            hasher: RandomState::default(),
            per_netns: HashMap::new(),
            max_per_netns,
            max_total,
            next_seq: 0,
            counters: TimeWaitCounters::default(),
            tally: std::cell::OnceCell::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }

    pub fn len_in_netns(&self, netns: u32) -> usize {
        self.per_netns.get(&netns).copied().unwrap_or(0)
    }

    pub fn get(&self, flow: &FlowKey) -> Option<&TimeWaitEntry> {
        let slot = self.slot_of(flow)?;
        self.entries.get(slot).map(|(entry, _, _)| entry)
    }

    /// Entries in the order they expire.
    pub fn iter(&self) -> impl Iterator<Item = &TimeWaitEntry> {
        let entries = &self.entries;
        self.by_expiry
            .iter(move |key| is_current(entries, key))
            .filter_map(move |key| entries.get(key.slot).map(|(entry, _, _)| entry))
    }

    fn slot_of(&self, flow: &FlowKey) -> Option<u32> {
        self.slot_with_hash(flow, FlowHash::of(&self.hasher, flow))
    }

    fn slot_with_hash(&self, flow: &FlowKey, hash: FlowHash) -> Option<u32> {
        let entries = &self.entries;
        self.by_flow
            .find(hash.spread(), |&(slot, h)| {
                h == hash && entries.get(slot).is_some_and(|(e, _, _)| e.flow == *flow)
            })
            .map(|&(slot, _)| slot)
    }

    /// The entries in no particular order.
    #[cfg(test)]
    fn values(&self) -> impl Iterator<Item = &TimeWaitEntry> {
        self.entries.iter().map(|(_, (entry, _, _))| entry)
    }

    pub fn counters(&self) -> TimeWaitCounters {
        self.counters
    }

    /// The entries' counts (per process, port, address, destination).
    pub fn tally(&self) -> &TimeWaitTally {
        self.tally
            .get_or_init(|| TimeWaitTally::of(self.entries.iter().map(|(_, (entry, _, _))| entry)))
    }

    /// How the process `tgid`'s entries name it: as its first entry in
    /// expiry order does (the tally knows it when they all agree).
    pub fn name_of(&self, tgid: Option<u32>) -> OwnerName {
        let named =
            |e: &TimeWaitEntry| (e.owner.map(|o| o.comm), e.owner.map_or(0, |o| o.cgroup_id));
        match self.tally().by_process.get(&tgid) {
            Some(p) if p.names.len() == 1 => p.names[0].0,
            _ => self
                .iter()
                .find(|e| e.owner.map(|o| o.tgid) == tgid)
                .map_or((None, 0), named),
        }
    }

    /// Adds an entry. An entry already there for the same 4-tuple was
    /// evidently reused and is replaced, so a 4-tuple is never counted
    /// twice.
    pub(crate) fn insert(&mut self, entry: TimeWaitEntry) -> Inserted {
        let hash = FlowHash::of(&self.hasher, &entry.flow);
        if let Some(slot) = self.slot_with_hash(&entry.flow, hash) {
            self.remove_slot(slot, TimeWaitRemoval::Reused);
        }
        if self.len_in_netns(entry.flow.netns) >= self.max_per_netns {
            self.counters.skipped_overflow += 1;
            return Inserted::Overflow;
        }
        if self.entries.len() >= self.max_total {
            self.counters.skipped_memory += 1;
            return Inserted::OverMemory;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        *self.per_netns.entry(entry.flow.netns).or_insert(0) += 1;
        let expires_ns = entry.expires_ns;
        if let Some(tally) = self.tally.get_mut() {
            tally.add(&entry);
        }
        let slot = self.entries.insert((entry, seq, hash));
        self.by_expiry.insert(ExpiryKey {
            expires_ns,
            seq,
            slot,
        });
        self.by_flow
            .insert_unique(hash.spread(), (slot, hash), |(_, h)| h.spread());
        self.counters.inserted += 1;
        Inserted::Yes
    }

    pub(crate) fn remove(&mut self, flow: &FlowKey, why: TimeWaitRemoval) -> Option<TimeWaitEntry> {
        self.remove_if(flow, |_| Some(why))
    }

    /// Removes the entry for `flow` if `why` gives a reason for it (one
    /// lookup where a get and a remove would take two).
    pub(crate) fn remove_if(
        &mut self,
        flow: &FlowKey,
        why: impl FnOnce(&TimeWaitEntry) -> Option<TimeWaitRemoval>,
    ) -> Option<TimeWaitEntry> {
        let slot = self.slot_of(flow)?;
        let why = why(&self.entries.get(slot)?.0)?;
        self.remove_slot(slot, why)
    }

    fn remove_slot(&mut self, slot: u32, why: TimeWaitRemoval) -> Option<TimeWaitEntry> {
        let (entry, seq, hash) = self.entries.remove(slot)?;
        if let Some(tally) = self.tally.get_mut() {
            tally.remove(&entry);
        }
        let flow = &entry.flow;
        if let Ok(found) = self.by_flow.find_entry(hash.spread(), |&(s, _)| s == slot) {
            found.remove();
        }
        let entries = &self.entries;
        let key = ExpiryKey {
            expires_ns: entry.expires_ns,
            seq,
            slot,
        };
        self.by_expiry.remove(key, |k| is_current(entries, k));
        if let Some(count) = self.per_netns.get_mut(&flow.netns) {
            *count -= 1;
            if *count == 0 {
                self.per_netns.remove(&flow.netns);
            }
        }
        match why {
            TimeWaitRemoval::Expired => self.counters.expired += 1,
            TimeWaitRemoval::Reused => self.counters.reused += 1,
            TimeWaitRemoval::Reset => self.counters.reset += 1,
        }
        Some(entry)
    }

    /// Removes and returns the entries whose expiry is at or before
    /// `now_ns`, soonest first.
    pub(crate) fn expire(&mut self, now_ns: u64) -> Vec<TimeWaitEntry> {
        let mut gone = Vec::new();
        self.expire_each(now_ns, |entry| gone.push(entry));
        gone
    }

    /// [`Self::expire`], without collecting them (before each insertion).
    pub(crate) fn drop_expired(&mut self, now_ns: u64) {
        self.expire_each(now_ns, drop);
    }

    fn expire_each(&mut self, now_ns: u64, mut each: impl FnMut(TimeWaitEntry)) {
        loop {
            let entries = &self.entries;
            let Some(first) = self.by_expiry.first(|k| is_current(entries, k)) else {
                break;
            };
            if first.expires_ns > now_ns {
                break;
            }
            // Always current (`first` skips the rest), so this never loops.
            match self.remove_slot(first.slot, TimeWaitRemoval::Expired) {
                Some(entry) => each(entry),
                None => break,
            }
        }
    }

    /// The peer's FIN reached a socket that entered time-wait in the
    /// FIN_WAIT2 substate at `fin_ns`: from then on it lives `time_wait_ns`.
    /// Ignored if the entry is not waiting for it, or had expired by then.
    pub(crate) fn peer_fin(&mut self, flow: &FlowKey, fin_ns: u64, time_wait_ns: u64) {
        let Some(slot) = self.slot_of(flow) else {
            return;
        };
        let Some((entry, seq, _)) = self.entries.get_mut(slot) else {
            return;
        };
        if !entry.basis.awaits_peer_fin() || fin_ns > entry.expires_ns {
            return;
        }
        let old = ExpiryKey {
            expires_ns: entry.expires_ns,
            seq: *seq,
            slot,
        };
        entry.expires_ns = fin_ns.saturating_add(time_wait_ns);
        entry.basis = ExpiryBasis::PeerFin;
        let new = ExpiryKey {
            expires_ns: entry.expires_ns,
            ..old
        };
        if new != old {
            let entries = &self.entries;
            self.by_expiry.remove(old, |k| is_current(entries, k));
            self.by_expiry.insert(new);
        }
    }

    /// The entry for `local`/`remote` in `netns`; with `netns` 0 (unknown),
    /// in whichever namespace has one, if exactly one does. `Err(n)`: `n`
    /// namespaces have one (0: none; more: ambiguous).
    pub fn find(&self, netns: u32, local: Endpoint, remote: Endpoint) -> Result<FlowKey, usize> {
        let at = |netns| FlowKey {
            netns,
            local,
            remote,
        };
        if netns != 0 {
            let flow = at(netns);
            return self.slot_of(&flow).map(|_| flow).ok_or(0);
        }
        let mut found = self
            .per_netns
            .keys()
            .map(|&ns| at(ns))
            .filter(|flow| self.slot_of(flow).is_some());
        match (found.next(), found.count()) {
            (Some(flow), 0) => Ok(flow),
            (Some(_), more) => Err(1 + more),
            (None, _) => Err(0),
        }
    }

    /// Entries per owning process, most first.
    pub fn by_process(&self) -> Vec<ProcessCount> {
        let mut out: Vec<ProcessCount> = self
            .tally()
            .by_process
            .iter()
            .map(|(&tgid, p)| ProcessCount {
                tgid,
                comm: self.name_of(tgid).0,
                count: p.count,
            })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then(a.tgid.cmp(&b.tgid)));
        out
    }

    /// Entries per remote endpoint, most first.
    pub fn by_remote(&self) -> Vec<(Endpoint, usize)> {
        let mut out: Vec<(Endpoint, usize)> = self
            .tally()
            .by_remote
            .iter()
            .map(|(r, t)| (*r, t.entries))
            .collect();
        // Equal counts in endpoint order, as a stable sort of the ordered
        // map gave; unstable is as deterministic, no endpoint being twice.
        out.sort_unstable_by_key(|(remote, n)| (std::cmp::Reverse(*n), remote.sort_key()));
        out
    }

    /// Entries per remote address, most first.
    pub fn by_remote_ip(&self) -> Vec<(IpAddr, usize)> {
        most_first(
            self.tally()
                .by_remote_ip
                .iter()
                .map(|(ip, n)| (*ip, *n))
                .collect(),
        )
    }

    /// For each destination, the local ports its TIME_WAIT entries hold and
    /// their share of the ephemeral range `(low, high)` (inclusive, as in
    /// `net.ipv4.ip_local_port_range`); most pressed first.
    pub fn destinations(&self, range: (u16, u16)) -> Vec<DestinationPorts> {
        let (low, high) = (range.0.min(range.1), range.0.max(range.1));
        let size = f64::from(high - low) + 1.0;
        let mut out: Vec<DestinationPorts> = self
            .tally()
            .by_remote
            .iter()
            .map(|(remote, t)| {
                let in_range = t.in_range(low, high);
                DestinationPorts {
                    remote: *remote,
                    local_ports: t.ports.len(),
                    in_range,
                    share: in_range as f64 / size,
                }
            })
            .collect();
        // Unstable is deterministic: no endpoint is twice.
        out.sort_unstable_by_key(|d| (std::cmp::Reverse(d.in_range), d.remote.sort_key()));
        out
    }

    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let order: Vec<ExpiryKey> = self
            .by_expiry
            .iter(|k| is_current(&self.entries, k))
            .collect();
        assert_eq!(self.entries.len(), order.len());
        assert!(order.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(self.entries.len(), self.by_flow.len());
        assert_eq!(self.per_netns.values().sum::<usize>(), self.entries.len());
        for (slot, (entry, _, hash)) in self.entries.iter() {
            assert_eq!(*hash, FlowHash::of(&self.hasher, &entry.flow));
            assert!(order.iter().any(|k| k.slot == slot));
            assert_eq!(self.slot_of(&entry.flow), Some(slot));
            assert!(self.len_in_netns(entry.flow.netns) <= self.max_per_netns);
        }
        assert!(self.entries.len() <= self.max_total);
        if let Some(tally) = self.tally.get() {
            assert_eq!(*tally, TimeWaitTally::of(self.values()));
        }
    }
}

/// A flow's hash in 32 bits, kept next to its slot in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FlowHash(u32);

impl FlowHash {
    fn of(hasher: &RandomState, flow: &FlowKey) -> Self {
        let hash = hasher.hash_one(flow);
        FlowHash((hash >> 32) as u32 ^ hash as u32)
    }

    /// The 64 bits the table wants, from the 32 kept: an odd multiplier
    /// carries them into the top bits (the table's tag) too.
    fn spread(self) -> u64 {
        u64::from(self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

/// Whether `key` is the expiry key of the entry in its slot now (not of an
/// entry removed since, or of an expiry moved since).
fn is_current(entries: &Slab<(TimeWaitEntry, u64, FlowHash)>, key: &ExpiryKey) -> bool {
    entries
        .get(key.slot)
        .is_some_and(|(entry, seq, _)| *seq == key.seq && entry.expires_ns == key.expires_ns)
}

fn most_first<K: Ord>(counts: BTreeMap<K, usize>) -> Vec<(K, usize)> {
    let mut out: Vec<(K, usize)> = counts.into_iter().collect();
    // Stable: equal counts stay in key order.
    out.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn entry(netns: u32, local_port: u16, remote_port: u16, expires_ns: u64) -> TimeWaitEntry {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        TimeWaitEntry {
            flow: FlowKey {
                netns,
                local: Endpoint::new(ip, local_port),
                remote: Endpoint::new(ip, remote_port),
            },
            family: Family::Ipv4,
            owner: None,
            closed_first: ClosedFirst::Local,
            started_ns: Some(0),
            expires_ns,
            basis: ExpiryBasis::FinTimeoutEstimate,
            connection_id: None,
            inferred: false,
        }
    }

    #[test]
    fn overflow_is_per_namespace_and_never_over_counts() {
        let mut table = TimeWaitTable::new(2, 100);
        assert_eq!(table.insert(entry(1, 1000, 80, 10)), Inserted::Yes);
        assert_eq!(table.insert(entry(1, 1001, 80, 10)), Inserted::Yes);
        assert_eq!(table.insert(entry(1, 1002, 80, 10)), Inserted::Overflow);
        // The same 4-tuple again replaces, it does not add.
        assert_eq!(table.insert(entry(1, 1001, 80, 20)), Inserted::Yes);
        assert_eq!(table.insert(entry(2, 1002, 80, 10)), Inserted::Yes);
        assert_eq!(table.len(), 3);
        assert_eq!(table.len_in_netns(1), 2);
        assert_eq!(table.counters().skipped_overflow, 1);
        assert_eq!(table.counters().reused, 1);
        table.check_invariants();
    }

    #[test]
    fn memory_bound_is_separate_from_overflow() {
        let mut table = TimeWaitTable::new(10, 1);
        assert_eq!(table.insert(entry(1, 1000, 80, 10)), Inserted::Yes);
        assert_eq!(table.insert(entry(2, 1000, 80, 10)), Inserted::OverMemory);
        assert_eq!(table.counters().skipped_memory, 1);
        assert_eq!(table.counters().skipped_overflow, 0);
    }

    #[test]
    fn expires_in_order_and_peer_fin_moves_expiry() {
        let mut table = TimeWaitTable::new(10, 10);
        table.insert(entry(1, 1, 80, 30));
        table.insert(entry(1, 2, 80, 10));
        table.insert(entry(1, 3, 80, 20));
        table.peer_fin(&entry(1, 3, 80, 0).flow, 15, 100);
        assert_eq!(table.get(&entry(1, 3, 80, 0).flow).unwrap().expires_ns, 115);
        let gone: Vec<u16> = table.expire(30).iter().map(|e| e.flow.local.port).collect();
        assert_eq!(gone, vec![2, 1]);
        assert_eq!(table.len(), 1);
        assert_eq!(table.counters().expired, 2);
        table.check_invariants();
    }

    #[test]
    fn slots_reused_under_churn_keep_the_flow_index_and_expiry_order() {
        // Inserts (some replacing the same 4-tuple), resets, peer FINs and
        // expiry, against a plain map of what must be there.
        let mut table = TimeWaitTable::new(50, 80);
        // Kept from the start: checked at every step below.
        table.tally();
        // Port → (expiry, still awaiting the peer's FIN).
        let mut expected: BTreeMap<u16, (u64, bool)> = BTreeMap::new();
        let mut x = 99u64;
        let mut now = 0;
        for _ in 0..20_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let port = 1_000 + ((x >> 35) % 120) as u16;
            let flow = entry(1, port, 80, 0).flow;
            match (x >> 20) % 8 {
                0 => {
                    let removed = table.remove(&flow, TimeWaitRemoval::Reset);
                    assert_eq!(removed.is_some(), expected.remove(&port).is_some());
                }
                1 => {
                    table.peer_fin(&flow, now, 30);
                    if let Some((expires, awaiting)) = expected.get_mut(&port) {
                        if *awaiting && now <= *expires {
                            (*expires, *awaiting) = (now + 30, false);
                        }
                    }
                }
                2 => {
                    now += 3;
                    let gone = table.expire(now);
                    let due: Vec<u16> = expected
                        .iter()
                        .filter(|(_, &(e, _))| e <= now)
                        .map(|(&p, _)| p)
                        .collect();
                    assert_eq!(gone.len(), due.len());
                    assert!(gone.windows(2).all(|w| w[0].expires_ns <= w[1].expires_ns));
                    for p in due {
                        expected.remove(&p);
                    }
                }
                _ => {
                    let expires = now + 1 + (x >> 50) % 40;
                    expected.remove(&port);
                    if table.insert(entry(1, port, 80, expires)) == Inserted::Yes {
                        expected.insert(port, (expires, true));
                    }
                }
            }
            for (&port, &(expires, _)) in &expected {
                let flow = entry(1, port, 80, 0).flow;
                assert_eq!(table.get(&flow).map(|e| e.expires_ns), Some(expires));
            }
            assert_eq!(table.len(), expected.len());
        }
        table.check_invariants();
        let order: Vec<u64> = table.iter().map(|e| e.expires_ns).collect();
        assert!(order.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn destinations_measure_the_port_range() {
        let mut table = TimeWaitTable::new(100, 100);
        for port in 30_000..30_010 {
            table.insert(entry(1, port, 80, 1));
        }
        table.insert(entry(1, 5, 80, 1));
        table.insert(entry(1, 30_000, 443, 1));
        let dests = table.destinations((30_000, 30_099));
        assert_eq!(dests[0].remote.port, 80);
        assert_eq!(dests[0].local_ports, 11);
        assert_eq!(dests[0].in_range, 10);
        assert!((dests[0].share - 0.1).abs() < 1e-9);
        assert_eq!(dests[1].in_range, 1);
        assert_eq!(table.by_remote()[0].1, 11);
        assert_eq!(
            table.by_remote_ip(),
            vec![(IpAddr::V4(Ipv4Addr::LOCALHOST), 12)]
        );
    }
}

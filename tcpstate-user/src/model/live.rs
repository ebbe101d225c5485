//! The live connections, with the indexes the model looks them up by, kept
//! in step, and the memory bound.
//!
//! Connections live in a [`Slab`]; the indexes hold 4-byte slot numbers and
//! hash by the key read out of the slot, so an index costs about 5 bytes
//! per entry (with the hash table's control byte) rather than a copy of its
//! key.
use super::{
    connection::{tuple_is_complete, Connection, FlowKey},
    recency::Recency,
    slab::Slab,
};
use crate::{addr::Endpoint, tcp::TcpState};
use foldhash::{fast::RandomState, HashMap};
use hashbrown::HashTable;
use std::hash::{BuildHasher, Hash};

/// How a live connection is found. Sockets are keyed by kernel address;
/// snapshot sockets whose address was not given get a key of their own until
/// a transition reveals it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum SocketKey {
    Addr(u64),
    Snapshot(u64),
}

/// Where a live connection is stored: valid until it is removed (or, for a
/// snapshot socket, moved to its address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot(u32);

/// A listener's namespace and port.
type ListenKey = (u32, u16);

/// What one live connection takes in the table's storage (the indexes add
/// a 4-byte slot number and a control byte per hash-table bucket each).
pub const SLOT_BYTES: usize = std::mem::size_of::<Option<Connection>>();

#[derive(Debug, Default)]
pub(crate) struct LiveTable {
    slab: Slab<Connection>,
    /// Connections whose kernel address is known, by that address.
    by_addr: HashTable<u32>,
    /// Snapshot sockets whose address is not known yet (only from a start-up
    /// snapshot that lacked addresses: few), both ways.
    by_snapshot_key: HashMap<u64, u32>,
    snapshot_key_of: HashMap<u32, u64>,
    /// Connections with a complete 4-tuple (not listeners). Two live sockets
    /// with one 4-tuple (a stale entry and its successor) share an entry:
    /// the latest wins.
    by_flow: HashTable<u32>,
    listeners: HashMap<ListenKey, Vec<u32>>,
    hasher: RandomState,
    /// Stamps updates: the eviction order.
    recency: Recency,
}

/// The 4-tuple a connection is indexed under, if any.
fn indexed_flow(conn: &Connection) -> Option<FlowKey> {
    IndexedBy::of(conn).flow()
}

/// The listener key a connection is indexed under, if any.
fn indexed_listen(conn: &Connection) -> Option<ListenKey> {
    IndexedBy::of(conn).listen()
}

/// Whether `conn` is indexed under `flow` (field by field, without building
/// its key).
fn has_indexed_flow(conn: &Connection, flow: &FlowKey) -> bool {
    conn.local == flow.local
        && conn.remote == flow.remote
        && conn.netns == flow.netns
        && conn.state != TcpState::Listen
}

/// What a connection's index keys are made of: when this is unchanged, so
/// are its index entries.
#[derive(PartialEq)]
struct IndexedBy {
    netns: u32,
    local: Endpoint,
    remote: Endpoint,
    listening: bool,
}

impl IndexedBy {
    fn of(conn: &Connection) -> Self {
        IndexedBy {
            netns: conn.netns,
            local: conn.local,
            remote: conn.remote,
            listening: conn.state == TcpState::Listen,
        }
    }

    /// Listeners are not indexed by flow, nor half-known tuples.
    fn flow(&self) -> Option<FlowKey> {
        let complete = !self.listening && tuple_is_complete(&self.local, &self.remote);
        complete.then_some(FlowKey {
            netns: self.netns,
            local: self.local,
            remote: self.remote,
        })
    }

    fn listen(&self) -> Option<ListenKey> {
        self.listening.then_some((self.netns, self.local.port))
    }
}

impl LiveTable {
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn find(&self, key: SocketKey) -> Option<Slot> {
        match key {
            SocketKey::Addr(addr) => {
                let slab = &self.slab;
                self.by_addr
                    .find(self.hash(&addr), |&i| {
                        slab.get(i).and_then(|e| e.skaddr()) == Some(addr)
                    })
                    .map(|&i| Slot(i))
            }
            SocketKey::Snapshot(n) => self.by_snapshot_key.get(&n).map(|&i| Slot(i)),
        }
    }

    pub fn get(&self, slot: Slot) -> Option<&Connection> {
        self.slab.get(slot.0)
    }

    pub fn get_by_key(&self, key: SocketKey) -> Option<&Connection> {
        self.get(self.find(key)?)
    }

    /// For changes no index depends on (owner, listener, flags): neither the
    /// tuple nor the state may change. Does not count as an update; see
    /// [`Self::update`].
    pub fn get_mut(&mut self, slot: Slot) -> Option<&mut Connection> {
        self.slab.get_mut(slot.0)
    }

    /// Whether the connection is a snapshot socket not matched to its
    /// address yet.
    pub fn is_snapshot(&self, slot: Slot) -> bool {
        self.snapshot_key_of.contains_key(&slot.0)
    }

    pub fn values(&self) -> impl Iterator<Item = &Connection> {
        self.slab.iter().map(|(_, e)| e)
    }

    /// Neither the tuple nor the state may change (see [`Self::get_mut`]).
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Connection> {
        self.slab.values_mut()
    }

    pub fn by_flow(&self, flow: &FlowKey) -> Option<Slot> {
        let slab = &self.slab;
        self.by_flow
            .find(self.hash(flow), |&i| {
                slab.get(i).is_some_and(|e| has_indexed_flow(e, flow))
            })
            .map(|&i| Slot(i))
    }

    /// Live listeners on `port` in `netns`.
    pub fn listeners(&self, netns: u32, port: u16) -> impl Iterator<Item = (Slot, &Connection)> {
        self.listeners
            .get(&(netns, port))
            .into_iter()
            .flatten()
            .filter_map(|&i| Some((Slot(i), self.get(Slot(i))?)))
    }

    /// Inserts (replacing what `key` held) and indexes. Returns where, and
    /// the flow newly indexed. `key` must agree with the connection's
    /// address: `Addr` its known address, `Snapshot` when unknown.
    pub fn insert(&mut self, key: SocketKey, mut conn: Connection) -> (Slot, Option<FlowKey>) {
        if let Some(old) = self.find(key) {
            self.remove(old);
        }
        debug_assert_eq!(
            conn.skaddr(),
            match key {
                SocketKey::Addr(addr) => Some(addr),
                SocketKey::Snapshot(_) => None,
            }
        );
        conn.update_stamp = self.next_stamp();
        let slot = self.slab.insert(conn);
        match key {
            SocketKey::Addr(addr) => {
                let hash = self.hash(&addr);
                let (slab, hasher) = (&self.slab, &self.hasher);
                self.by_addr.insert_unique(hash, slot, |&i| {
                    hasher.hash_one(slab.get(i).and_then(|e| e.skaddr()).unwrap_or(0))
                });
            }
            SocketKey::Snapshot(n) => {
                self.by_snapshot_key.insert(n, slot);
                self.snapshot_key_of.insert(slot, n);
            }
        }
        let slot = Slot(slot);
        (slot, self.reindex(slot, None, None))
    }

    /// Applies `change` to the connection as an update (it becomes the most
    /// recently updated), then brings the indexes in line with its state and
    /// tuple. Returns what `change` returned, and the connection's flow if
    /// that changed and is now complete (so the caller can look for a
    /// TIME_WAIT it reuses).
    pub fn update<R>(
        &mut self,
        slot: Slot,
        change: impl FnOnce(&mut Connection) -> R,
    ) -> Option<(R, Option<FlowKey>)> {
        // Stamped before the borrow (renumbering reads every slot); a slot
        // not in use wastes a stamp, nothing more.
        let stamp = self.next_stamp();
        let conn = self.slab.get_mut(slot.0)?;
        conn.update_stamp = stamp;
        let before = IndexedBy::of(conn);
        let result = change(conn);
        if IndexedBy::of(conn) == before {
            return Some((result, None));
        }
        Some((result, self.reindex(slot, before.flow(), before.listen())))
    }

    /// Moves the connection's index entries from the keys it was indexed
    /// under to the ones its state and tuple give now. Returns its flow if
    /// that changed and is complete.
    fn reindex(
        &mut self,
        slot: Slot,
        old_flow: Option<FlowKey>,
        old_listen: Option<ListenKey>,
    ) -> Option<FlowKey> {
        let conn = self.slab.get(slot.0)?;
        let (flow, listen) = (indexed_flow(conn), indexed_listen(conn));
        if old_listen != listen {
            self.unindex_listener(slot, old_listen);
            if let Some(lk) = listen {
                self.listeners.entry(lk).or_default().push(slot.0);
            }
        }
        if old_flow == flow {
            return None;
        }
        self.unindex_flow(slot, old_flow.as_ref());
        let flow = flow?;
        self.index_flow(slot, &flow);
        Some(flow)
    }

    pub fn remove(&mut self, slot: Slot) -> Option<Connection> {
        let conn = self.slab.get(slot.0)?;
        let (flow, listen, addr) = (indexed_flow(conn), indexed_listen(conn), conn.skaddr());
        self.unindex_flow(slot, flow.as_ref());
        self.unindex_listener(slot, listen);
        match self.snapshot_key_of.remove(&slot.0) {
            Some(n) => {
                self.by_snapshot_key.remove(&n);
            }
            None => {
                let hash = self.hash(&addr.unwrap_or(0));
                if let Ok(found) = self.by_addr.find_entry(hash, |&i| i == slot.0) {
                    found.remove();
                }
            }
        }
        self.slab.remove(slot.0)
    }

    /// Moves a snapshot socket to the address its transitions use; returns
    /// where it is now.
    pub fn rekey(&mut self, from: Slot, skaddr: u64) -> Option<Slot> {
        let mut conn = self.remove(from)?;
        conn.set_skaddr(skaddr);
        Some(self.insert(SocketKey::Addr(skaddr), conn).0)
    }

    /// Drops the least recently updated connections until at most `max`
    /// remain, plus a slack of `max / 16` so that the O(n) selection runs
    /// rarely. Returns how many were dropped.
    pub fn evict_over(&mut self, max: usize) -> usize {
        let len = self.slab.len();
        if len <= max {
            return 0;
        }
        let count = (len - max + max / 16).min(len);
        let mut order: Vec<(u32, u32)> =
            self.slab.iter().map(|(i, c)| (c.update_stamp, i)).collect();
        order.select_nth_unstable_by_key(count - 1, |(stamp, _)| *stamp);
        for &(_, i) in &order[..count] {
            self.remove(Slot(i));
        }
        count
    }

    /// The stamp of an update now (see [`Recency`]).
    fn next_stamp(&mut self) -> u32 {
        let slab = &mut self.slab;
        self.recency
            .next(|| slab.values_mut().map(|c| &mut c.update_stamp).collect())
    }

    fn hash(&self, key: &impl Hash) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Points `flow` at `slot`, replacing an older connection's entry.
    fn index_flow(&mut self, slot: Slot, flow: &FlowKey) {
        let hash = self.hash(flow);
        let (slab, hasher) = (&self.slab, &self.hasher);
        let same_flow = |&i: &u32| slab.get(i).is_some_and(|e| has_indexed_flow(e, flow));
        match self.by_flow.find_mut(hash, same_flow) {
            Some(held) => *held = slot.0,
            None => {
                self.by_flow.insert_unique(hash, slot.0, |&i| {
                    let flow = slab.get(i).and_then(indexed_flow);
                    flow.map_or(0, |flow| hasher.hash_one(flow))
                });
            }
        }
    }

    /// Removes `slot`'s entry for `flow`, if it holds it (a newer connection
    /// with the same flow may).
    fn unindex_flow(&mut self, slot: Slot, flow: Option<&FlowKey>) {
        let Some(flow) = flow else { return };
        if let Ok(found) = self.by_flow.find_entry(self.hash(flow), |&i| i == slot.0) {
            found.remove();
        }
    }

    fn unindex_listener(&mut self, slot: Slot, listen: Option<ListenKey>) {
        let Some(lk) = listen else { return };
        if let Some(slots) = self.listeners.get_mut(&lk) {
            slots.retain(|&i| i != slot.0);
            if slots.is_empty() {
                self.listeners.remove(&lk);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let entries = self.slab.iter().count();
        assert_eq!(entries, self.slab.len());
        assert_eq!(self.by_addr.len() + self.by_snapshot_key.len(), entries);
        assert_eq!(self.by_snapshot_key.len(), self.snapshot_key_of.len());
        for (&n, &i) in &self.by_snapshot_key {
            assert_eq!(self.snapshot_key_of.get(&i), Some(&n));
            assert_eq!(self.slab.get(i).unwrap().skaddr(), None);
        }
        for &i in &self.by_addr {
            let addr = self.slab.get(i).unwrap().skaddr().unwrap();
            assert_eq!(self.find(SocketKey::Addr(addr)), Some(Slot(i)));
        }
        // Each indexed flow points at a connection with that flow, once.
        let mut flows = std::collections::HashSet::new();
        for &i in &self.by_flow {
            let flow = indexed_flow(self.slab.get(i).unwrap()).unwrap();
            assert!(flows.insert(flow), "{flow:?} indexed twice");
            assert_eq!(self.by_flow(&flow), Some(Slot(i)));
        }
        // A connection with a flow need not be indexed by it: a newer one
        // with the same flow took the entry, and may have left since.
        for (i, entry) in self.slab.iter() {
            if let Some(lk) = indexed_listen(entry) {
                assert!(self.listeners[&lk].contains(&i));
            }
        }
        for (lk, slots) in &self.listeners {
            for &i in slots {
                assert_eq!(indexed_listen(self.slab.get(i).unwrap()), Some(*lk));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        addr::Endpoint,
        model::{config::ModelConfig, intern::Interner},
        testkit::{self, ep10 as ep, task},
        wire::Transition,
    };

    /// A transition at `skaddr` ns, towards 10.0.0.9:443 (or none: LISTEN).
    fn transition(skaddr: u64, old: TcpState, new: TcpState, local: Endpoint) -> Transition {
        let remote = if new == TcpState::Listen {
            ep(0, 0)
        } else {
            ep(9, 443)
        };
        Transition {
            local,
            remote,
            task: task(1, "t"),
            netns: 1,
            ..testkit::transition(skaddr, skaddr, old, new)
        }
    }

    fn conn(skaddr: u64, old: TcpState, new: TcpState, local: Endpoint) -> Connection {
        let t = transition(skaddr, old, new, local);
        Connection::from_first(
            skaddr,
            &t,
            &ModelConfig::default(),
            &mut Interner::default(),
        )
    }

    #[test]
    fn the_latest_connection_with_a_flow_wins_and_the_older_stays_found_by_address() {
        use TcpState::*;
        let mut live = LiveTable::default();
        let (a, flow) = live.insert(
            SocketKey::Addr(1),
            conn(1, SynSent, Established, ep(1, 5000)),
        );
        assert!(flow.is_some());
        let (b, _) = live.insert(
            SocketKey::Addr(2),
            conn(2, SynSent, Established, ep(1, 5000)),
        );
        let flow = flow.unwrap();
        assert_eq!(live.by_flow(&flow), Some(b));
        live.check_invariants();
        // The older one leaves: the newer keeps the flow.
        assert_eq!(live.remove(a).map(|c| c.id), Some(1));
        assert_eq!(live.by_flow(&flow), Some(b));
        live.check_invariants();
        live.remove(b);
        assert_eq!(live.by_flow(&flow), None);
        assert_eq!(live.len(), 0);
        live.check_invariants();
    }

    #[test]
    fn updates_move_the_indexes_with_the_state_and_tuple() {
        use TcpState::*;
        let mut live = LiveTable::default();
        let (l, flow) = live.insert(SocketKey::Addr(7), conn(7, Close, Listen, ep(1, 80)));
        assert_eq!(flow, None);
        assert_eq!(
            live.listeners(1, 80).map(|(s, _)| s).collect::<Vec<_>>(),
            vec![l]
        );
        // The listener closes: out of the listener index.
        let t = transition(8, Listen, Close, ep(1, 80));
        let (ended, _) = live
            .update(l, |c| c.enter(&t, &ModelConfig::default()))
            .unwrap();
        assert!(ended);
        assert_eq!(live.listeners(1, 80).count(), 0);
        live.check_invariants();
        // A connecting socket learns its port: indexed by flow from then on.
        let (c, flow) = live.insert(SocketKey::Addr(9), conn(9, Close, SynSent, ep(1, 0)));
        assert_eq!(flow, None);
        let t = transition(10, SynSent, Established, ep(1, 40000));
        let (_, flow) = live
            .update(c, |c| c.enter(&t, &ModelConfig::default()))
            .unwrap();
        assert_eq!(flow.map(|f| f.local.port), Some(40000));
        assert_eq!(live.by_flow(&flow.unwrap()), Some(c));
        live.check_invariants();
    }

    #[test]
    fn reused_addresses_and_snapshot_keys_stay_consistent() {
        use TcpState::*;
        let mut live = LiveTable::default();
        // Snapshot socket without an address, then moved to its address.
        let mut snap = conn(0, SynSent, Established, ep(2, 6000));
        snap = Connection::preexisting(
            snap.id,
            None,
            snap.netns,
            snap.family,
            Established,
            snap.local,
            snap.remote,
            None,
            1,
        );
        let (s, _) = live.insert(SocketKey::Snapshot(1), snap);
        assert!(live.is_snapshot(s));
        live.check_invariants();
        let moved = live.rekey(s, 0x50).unwrap();
        assert!(!live.is_snapshot(moved));
        assert_eq!(live.find(SocketKey::Addr(0x50)), Some(moved));
        assert_eq!(live.find(SocketKey::Snapshot(1)), None);
        live.check_invariants();
        // The same address reused many times: one connection at a time.
        for round in 0..1_000u64 {
            let port = 10_000 + (round % 7) as u16;
            live.insert(
                SocketKey::Addr(0x60),
                conn(0x60, SynSent, Established, ep(3, port)),
            );
            assert_eq!(live.len(), 2);
        }
        live.check_invariants();
    }

    #[test]
    fn eviction_drops_the_least_recently_updated() {
        evicts_the_least_recently_updated(LiveTable::default());
    }

    #[test]
    fn eviction_order_survives_the_update_counter_renumbering() {
        // 100 live at most, 201 updates: renumbered at least once.
        evicts_the_least_recently_updated(LiveTable {
            recency: Recency::with_limit(150),
            ..LiveTable::default()
        });
    }

    fn evicts_the_least_recently_updated(mut live: LiveTable) {
        use TcpState::*;
        let mut slots = Vec::new();
        for i in 0..100u64 {
            let (slot, _) = live.insert(
                SocketKey::Addr(i),
                conn(i, SynSent, Established, ep(4, 1000 + i as u16)),
            );
            slots.push(slot);
        }
        // The oldest, touched, is now the newest.
        live.update(slots[0], |_| ());
        let dropped = live.evict_over(64);
        assert_eq!(dropped, 100 - 64 + 4);
        assert!(live.find(SocketKey::Addr(0)).is_some());
        assert!(live.find(SocketKey::Addr(1)).is_none());
        assert!(live.find(SocketKey::Addr(99)).is_some());
        assert_eq!(live.len(), 60);
        live.check_invariants();
        // Slots freed by eviction are reused without confusing the indexes.
        for i in 200..300u64 {
            live.insert(
                SocketKey::Addr(i),
                conn(i, SynSent, Established, ep(5, 1000 + i as u16)),
            );
            live.evict_over(64);
        }
        live.check_invariants();
        // What is left is the newest, every one of them.
        let mut left: Vec<u64> = live.values().filter_map(Connection::skaddr).collect();
        left.sort_unstable();
        let newest: Vec<u64> = (300 - left.len() as u64..300).collect();
        assert_eq!(left, newest);
    }
}

//! The live connections, with the indexes the model looks them up by, kept
//! in step, and the memory bound.
use super::connection::{Connection, FlowKey};
use crate::tcp::TcpState;
use foldhash::HashMap;

/// How a live connection is found. Sockets are keyed by kernel address;
/// snapshot sockets whose address was not given get a key of their own until
/// a transition reveals it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum SocketKey {
    Addr(u64),
    Snapshot(u64),
}

/// A listener's namespace and port.
type ListenKey = (u32, u16);

#[derive(Debug)]
struct Slot {
    conn: Connection,
    /// Logical time of the last update, unique: the eviction order.
    touched: u64,
    /// What the indexes currently hold for this slot.
    flow: Option<FlowKey>,
    listen: Option<ListenKey>,
}

#[derive(Debug, Default)]
pub(crate) struct LiveTable {
    slots: HashMap<SocketKey, Slot>,
    /// Connections with a complete 4-tuple (not listeners). Two live sockets
    /// with one 4-tuple (a stale entry and its successor) share an entry:
    /// the latest wins.
    by_flow: HashMap<FlowKey, SocketKey>,
    listeners: HashMap<ListenKey, Vec<SocketKey>>,
    clock: u64,
}

impl LiveTable {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn get(&self, key: SocketKey) -> Option<&Connection> {
        self.slots.get(&key).map(|slot| &slot.conn)
    }

    /// After changing the connection's state or tuple, call [`Self::update`].
    pub fn get_mut(&mut self, key: SocketKey) -> Option<&mut Connection> {
        self.slots.get_mut(&key).map(|slot| &mut slot.conn)
    }

    pub fn values(&self) -> impl Iterator<Item = &Connection> {
        self.slots.values().map(|slot| &slot.conn)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Connection> {
        self.slots.values_mut().map(|slot| &mut slot.conn)
    }

    pub fn by_flow(&self, flow: &FlowKey) -> Option<SocketKey> {
        self.by_flow.get(flow).copied()
    }

    /// Live listeners on `port` in `netns`.
    pub fn listeners(
        &self,
        netns: u32,
        port: u16,
    ) -> impl Iterator<Item = (SocketKey, &Connection)> {
        self.listeners
            .get(&(netns, port))
            .into_iter()
            .flatten()
            .filter_map(|key| Some((*key, self.get(*key)?)))
    }

    /// Inserts (or replaces) and indexes. Returns the flow newly indexed.
    pub fn insert(&mut self, key: SocketKey, conn: Connection) -> Option<FlowKey> {
        self.remove(key);
        self.clock += 1;
        self.slots.insert(
            key,
            Slot {
                conn,
                touched: self.clock,
                flow: None,
                listen: None,
            },
        );
        self.update(key)
    }

    /// Marks the connection as just updated and brings the indexes in line
    /// with its state and tuple. Returns its flow if that changed and is now
    /// complete (so the caller can look for a TIME_WAIT it reuses).
    pub fn update(&mut self, key: SocketKey) -> Option<FlowKey> {
        self.clock += 1;
        let clock = self.clock;
        let slot = self.slots.get_mut(&key)?;
        slot.touched = clock;
        let listening = slot.conn.state == TcpState::Listen;
        let flow = if listening {
            None
        } else {
            slot.conn.complete_flow()
        };
        let listen = listening.then_some((slot.conn.netns, slot.conn.local.port));
        let (old_flow, old_listen) = (slot.flow, slot.listen);
        slot.flow = flow;
        slot.listen = listen;
        if old_listen != listen {
            self.unindex_listener(key, old_listen);
            if let Some(lk) = listen {
                self.listeners.entry(lk).or_default().push(key);
            }
        }
        if old_flow == flow {
            return None;
        }
        self.unindex_flow(key, old_flow);
        let flow = flow?;
        self.by_flow.insert(flow, key);
        Some(flow)
    }

    pub fn remove(&mut self, key: SocketKey) -> Option<Connection> {
        let slot = self.slots.remove(&key)?;
        self.unindex_flow(key, slot.flow);
        self.unindex_listener(key, slot.listen);
        Some(slot.conn)
    }

    /// Moves a snapshot socket to the key its transitions use.
    pub fn rekey(&mut self, from: SocketKey, to: SocketKey) {
        if let Some(conn) = self.remove(from) {
            self.insert(to, conn);
        }
    }

    /// Drops the least recently updated connections until at most `max`
    /// remain, plus a slack of `max / 16` so that the O(n) selection runs
    /// rarely. Returns how many were dropped.
    pub fn evict_over(&mut self, max: usize) -> usize {
        if self.slots.len() <= max {
            return 0;
        }
        let count = (self.slots.len() - max + max / 16).min(self.slots.len());
        let mut order: Vec<(u64, SocketKey)> = self
            .slots
            .iter()
            .map(|(key, slot)| (slot.touched, *key))
            .collect();
        order.select_nth_unstable_by_key(count - 1, |(touched, _)| *touched);
        for (_, key) in &order[..count] {
            self.remove(*key);
        }
        count
    }

    fn unindex_flow(&mut self, key: SocketKey, flow: Option<FlowKey>) {
        if let Some(flow) = flow {
            if self.by_flow.get(&flow) == Some(&key) {
                self.by_flow.remove(&flow);
            }
        }
    }

    fn unindex_listener(&mut self, key: SocketKey, listen: Option<ListenKey>) {
        let Some(lk) = listen else { return };
        if let Some(keys) = self.listeners.get_mut(&lk) {
            keys.retain(|k| *k != key);
            if keys.is_empty() {
                self.listeners.remove(&lk);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        for (flow, key) in &self.by_flow {
            let slot = &self.slots[key];
            assert_eq!(slot.flow.as_ref(), Some(flow));
            assert_eq!(slot.conn.complete_flow().as_ref(), Some(flow));
        }
        for (lk, keys) in &self.listeners {
            for key in keys {
                let slot = &self.slots[key];
                assert_eq!(slot.listen, Some(*lk));
                assert_eq!(slot.conn.state, TcpState::Listen);
            }
        }
        for (key, slot) in &self.slots {
            if let Some(lk) = slot.listen {
                assert!(self.listeners[&lk].contains(key));
            }
            assert_eq!(slot.listen.is_some(), slot.conn.state == TcpState::Listen);
        }
    }
}

//! [`Model`]: transitions and owner observations in; live connections,
//! finished connections, TIME_WAIT sockets, leaks and counts out.
use super::{
    config::ModelConfig,
    connection::{
        is_birth, tuple_is_complete, Connection, EndKind, FlowKey, ListenerRef, OpenKind,
    },
    intern::Interner,
    leaks::{close_wait_leaks, LeakReport},
    live::{LiveTable, Slot, SocketKey},
    owner::{Owner, OwnerHow, PendingOwners},
    recent::RecentlyClosed,
    snapshot::{ExistingSocket, ExistingSocketError},
    stats::{ModelStats, StateCounts},
    time_wait::{deferred::DeferredCloses, enters_time_wait, TimeWaitTable},
};
use crate::{
    tcp::TcpState,
    wire::{Item, Transition},
};

/// Finished sockets remembered for recognising late transitions.
const RECENTLY_CLOSED: usize = 1 << 14;

/// The state of every traced socket, reconstructed from transitions.
///
/// Pure and deterministic: no I/O and no clock; time comes only from event
/// timestamps and the `now_ns` arguments (CLOCK_BOOTTIME nanoseconds, like
/// the events). Never panics on any input: transitions that contradict what
/// the model believes are counted, and the kernel's word is taken.
#[derive(Debug)]
pub struct Model {
    // Visible to the model's modules: the TIME_WAIT rules
    // (time_wait/rules.rs) are methods of the model too.
    pub(super) config: ModelConfig,
    pub(super) live: LiveTable,
    /// Owners and listeners, shared by the connections that refer to them.
    pub(super) owners: Interner<Owner>,
    pub(super) listener_refs: Interner<ListenerRef>,
    pub(super) time_wait: TimeWaitTable,
    pub(super) pending: PendingOwners,
    pub(super) recently_closed: RecentlyClosed,
    pub(super) deferred_closes: DeferredCloses,
    pub(super) stats: ModelStats,
    pub(super) next_id: u64,
    pub(super) next_snapshot_key: u64,
    pub(super) lost_seen: Option<u64>,
}

impl Default for Model {
    fn default() -> Self {
        Self::new(ModelConfig::default())
    }
}

impl Model {
    pub fn new(config: ModelConfig) -> Self {
        let config = ModelConfig {
            max_connections: config.max_connections.max(1),
            ..config
        };
        Self {
            live: LiveTable::default(),
            owners: Interner::default(),
            listener_refs: Interner::default(),
            time_wait: TimeWaitTable::new(config.max_tw_buckets, config.max_connections),
            pending: PendingOwners::new(config.max_pending_owners),
            recently_closed: RecentlyClosed::new(RECENTLY_CLOSED),
            deferred_closes: DeferredCloses::default(),
            stats: ModelStats::default(),
            next_id: 1,
            next_snapshot_key: 0,
            lost_seen: None,
            config,
        }
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Applies a batch in timestamp order. Records from different CPUs can
    /// reach the ring buffer a few microseconds out of order (the order of
    /// reservation, not of the events); a stable sort by timestamp puts the
    /// transitions of one socket back in order, as long as they are in the
    /// same batch. Returns the connections that finished, in order.
    pub fn apply_batch(&mut self, batch: &[Item]) -> Vec<Connection> {
        let mut order: Vec<&Item> = batch.iter().collect();
        order.sort_by_key(|item| item.ts_boot_ns());
        let mut finished = Vec::new();
        for item in order {
            self.apply_into(item, &mut finished);
        }
        finished
    }

    /// Applies one input; returns the connections it finished.
    pub fn apply(&mut self, item: &Item) -> Vec<Connection> {
        let mut finished = Vec::new();
        self.apply_into(item, &mut finished);
        finished
    }

    /// [`Model::apply`], appending the connections it finished to
    /// `finished` (a buffer the caller reuses).
    pub fn apply_into(&mut self, item: &Item, finished: &mut Vec<Connection>) {
        if !matches!(item, Item::Transition(_)) {
            self.settle_before(item.ts_boot_ns(), finished);
        }
        match item {
            Item::Transition(t) => self.apply_transition_into(t, finished),
            Item::Accepted(seen) => {
                self.apply_owner(seen.ts_boot_ns, seen.skaddr, Owner::accepted(seen))
            }
            Item::Lost { total, .. } => self.on_lost(*total),
            Item::ResetSent(r) => self.apply_reset(r),
            // Failed calls change no socket's state; views count them.
            Item::CallFailed(_) => {}
            // A kill's effect arrives as the transitions it caused.
            Item::Kill(_) => {}
        }
    }

    /// Applies one transition. Returns the connections it finished: usually
    /// none, or the one it closed; also, first, a connection whose CLOSE was
    /// missed when this transition is the birth of a new socket at its
    /// address. Finished connections are forgotten.
    pub fn apply_transition(&mut self, t: &Transition) -> Vec<Connection> {
        let mut finished = Vec::new();
        self.apply_transition_into(t, &mut finished);
        finished
    }

    /// [`Model::apply_transition`], appending to `finished`.
    pub fn apply_transition_into(&mut self, t: &Transition, finished: &mut Vec<Connection>) {
        self.settle_before(t.ts_boot_ns, finished);
        self.stats.transitions += 1;
        let mut slot = self.live.find(SocketKey::Addr(t.skaddr));
        if slot.is_none() && !is_birth(t) {
            slot = self.adopt_snapshot(t);
        }
        let ts = t.ts_boot_ns;
        let Some((slot, conn)) = slot.and_then(|s| Some((s, self.live.get(s)?))) else {
            if self.predates_a_close(t) {
                self.stats.out_of_order += 1;
            } else if t.old == TcpState::TimeWait
                || (t.old == TcpState::Close && t.new == TcpState::Close)
            {
                // The tail of a socket already finished (a time-wait socket
                // leaving TIME_WAIT), or no change at all.
                self.stats.ignored += 1;
            } else {
                self.start(t, finished);
            }
            return;
        };
        if ts < conn.started_ns || ts < conn.last_ns {
            // Older than what was applied: it arrived late (another batch).
            self.stats.out_of_order += 1;
            if is_birth(t) && ts < conn.started_ns {
                self.merge_late_birth(slot, t);
            }
            return;
        }
        if is_birth(t) {
            self.supersede(slot, ts, finished);
            self.start(t, finished);
        } else {
            self.advance(slot, t, finished);
        }
    }

    /// Finishes, by inference, the connections whose close their peer proved
    /// long enough before `ts` (see [`Model::defer_close_from_peer`]).
    fn settle_before(&mut self, ts: u64, finished: &mut Vec<Connection>) {
        if !self.deferred_closes.is_empty() {
            self.settle_deferred_closes(ts, finished);
        }
    }

    /// The end of the input: the closes still waiting for their own
    /// transition are inferred now. Call it once nothing more will come
    /// (live or replay alike, so that both finish the same connections).
    pub fn settle(&mut self, finished: &mut Vec<Connection>) {
        self.settle_before(u64::MAX, finished);
    }

    /// Records who holds the socket at `skaddr`, as seen in process context
    /// at `ts` (accept(); socket I/O). Observations from task 0 (interrupt
    /// context) are ignored; an observation for a socket not seen yet waits
    /// (bounded) for the socket's first transition.
    pub fn apply_owner(&mut self, ts: u64, skaddr: u64, owner: Owner) {
        self.stats.owner_observations += 1;
        if owner.tgid == 0 {
            self.stats.owner_ignored += 1;
            return;
        }
        let slot = self.live.find(SocketKey::Addr(skaddr));
        match slot.and_then(|s| Some((s, self.live.get(s)?))) {
            Some((slot, conn)) => {
                if conn.birth_seen() && ts < conn.started_ns {
                    // About an earlier socket at the same address.
                    self.stats.owner_unmatched += 1;
                    return;
                }
                let owners = &mut self.owners;
                self.live
                    .update(slot, |conn| conn.offer_owner(owner, owners));
            }
            None if self.recently_closed.predates_close(skaddr, ts) => {
                self.stats.owner_unmatched += 1;
            }
            None => {
                let dropped = self.pending.dropped();
                self.pending.insert(skaddr, owner, ts);
                self.stats.owner_unmatched += self.pending.dropped() - dropped;
            }
        }
    }

    /// The kernel's lost-record counter is now `total`. If it grew, every
    /// live connection may have missed a transition and is marked uncertain.
    /// A counter that went down was restarted and counts from zero.
    pub fn on_lost(&mut self, total: u64) {
        let previous = self.lost_seen.filter(|&p| p <= total).unwrap_or(0);
        self.lost_seen = Some(total);
        if total <= previous {
            return;
        }
        self.stats.lost_events += total - previous;
        for conn in self.live.values_mut() {
            if !conn.uncertain {
                conn.uncertain = true;
                self.stats.uncertain_marked += 1;
            }
        }
    }

    /// Adds a socket that existed before tracing started, seen at `now_ns`.
    /// TIME_WAIT sockets go to the TIME_WAIT table, with the longest expiry
    /// they can have. A socket already known from a transition keeps what
    /// the transitions said and only gains the owner if it had none.
    ///
    /// Take `now_ns` just before reading the snapshot, with the tracer
    /// already running: transitions older than `now_ns` are taken as already
    /// reflected in the snapshot and ignored, newer ones are applied (one
    /// that the snapshot had already caught then counts as inconsistent,
    /// and the state still ends right).
    pub fn insert_existing(
        &mut self,
        sock: ExistingSocket,
        now_ns: u64,
    ) -> Result<(), ExistingSocketError> {
        self.insert_existing_expiring(sock, now_ns, None)
    }

    /// [`Model::insert_existing`], with the time a TIME_WAIT socket has left
    /// when the kernel says (sock_diag does): its expiry is then exact
    /// rather than the longest it could be.
    pub fn insert_existing_expiring(
        &mut self,
        sock: ExistingSocket,
        now_ns: u64,
        time_wait_left_ns: Option<u64>,
    ) -> Result<(), ExistingSocketError> {
        let owner = sock.owner.map(|o| Owner {
            how: OwnerHow::Snapshot,
            ..o
        });
        let flow = FlowKey {
            netns: sock.netns,
            local: sock.local,
            remote: sock.remote,
        };
        match sock.state {
            TcpState::Close | TcpState::NewSynRecv => {
                return Err(ExistingSocketError::UnsupportedState(sock.state))
            }
            TcpState::TimeWait => {
                let left = time_wait_left_ns.unwrap_or(self.config.time_wait_ns());
                return self.insert_existing_time_wait(&sock, flow, owner, now_ns, left);
            }
            _ => {}
        }
        let known = match sock.skaddr_or_cookie {
            Some(addr) => self.live.find(SocketKey::Addr(addr)),
            None if sock.state == TcpState::Listen => self
                .live
                .listeners(sock.netns, sock.local.port)
                .find(|(_, c)| c.local == sock.local && c.family == sock.family)
                .map(|(slot, _)| slot),
            None => self.live.by_flow(&flow),
        };
        if let Some(slot) = known {
            if let (Some(owner), Some(conn)) = (owner, self.live.get_mut(slot)) {
                conn.offer_owner(owner, &mut self.owners);
            }
            return Ok(());
        }
        let key = match sock.skaddr_or_cookie {
            Some(addr) => SocketKey::Addr(addr),
            None => {
                self.next_snapshot_key += 1;
                SocketKey::Snapshot(self.next_snapshot_key)
            }
        };
        let mut conn = Connection::preexisting(
            self.take_id(),
            sock.skaddr_or_cookie,
            sock.netns,
            sock.family,
            sock.state,
            sock.local,
            sock.remote,
            owner.map(|o| self.owners.intern(o)),
            now_ns,
        );
        if let Some(pending) = sock.skaddr_or_cookie.and_then(|a| self.pending.take(a)) {
            conn.offer_owner(pending.owner, &mut self.owners);
        }
        self.stats.connections_started += 1;
        if let (_, Some(flow)) = self.live.insert(key, conn) {
            self.tuple_taken(flow, now_ns);
        }
        self.evict();
        Ok(())
    }

    pub fn time_wait(&self) -> &TimeWaitTable {
        &self.time_wait
    }

    /// CLOSE_WAIT sockets older than `close_wait_leak_secs` at `now_ns`.
    pub fn leaks(&self, now_ns: u64) -> LeakReport {
        close_wait_leaks(self.live.values(), now_ns, self.config.close_wait_leak_ns())
    }

    /// Sockets per state now, TIME_WAIT included.
    pub fn stat(&self) -> StateCounts {
        StateCounts::collect(self.live.values(), &self.time_wait, true)
    }

    /// [`Self::stat`] without the counts per local port and per remote
    /// address (left empty): what `serve`, `top`, `doctor` and `report`
    /// read, without a row for each of tens of thousands of ports.
    pub fn stat_by_process(&self) -> StateCounts {
        StateCounts::collect(self.live.values(), &self.time_wait, false)
    }

    /// Live connections marked uncertain (no sort, unlike
    /// [`Self::connections`]: reports count them every second).
    pub fn uncertain_connections(&self) -> usize {
        self.live.values().filter(|c| c.uncertain).count()
    }

    /// Live connections, oldest first.
    pub fn connections(&self) -> impl Iterator<Item = &Connection> {
        let mut conns: Vec<&Connection> = self.live.values().collect();
        conns.sort_by_key(|c| c.id);
        conns.into_iter()
    }

    /// The live connection at a kernel address.
    pub fn connection(&self, skaddr: u64) -> Option<&Connection> {
        self.live.get_by_key(SocketKey::Addr(skaddr))
    }

    /// Live connections.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.len() == 0
    }

    /// Owner observations waiting for their socket's first transition.
    pub fn pending_owners(&self) -> usize {
        self.pending.len()
    }

    pub fn stats(&self) -> ModelStats {
        ModelStats {
            time_wait: self.time_wait.counters(),
            ..self.stats
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// A connection begins with `t`, its first transition seen.
    fn start(&mut self, t: &Transition, finished: &mut Vec<Connection>) {
        let id = self.take_id();
        let mut conn = Connection::from_first(id, t, &self.config, &mut self.owners);
        self.stats.connections_started += 1;
        if let Some(pending) = self.pending.take(t.skaddr) {
            // Only an observation made after a birth can be about this
            // socket; before one, it was about its predecessor.
            if !conn.birth_seen() || pending.ts_boot_ns >= t.ts_boot_ns {
                conn.offer_owner(pending.owner, &mut self.owners);
            } else {
                self.stats.owner_unmatched += 1;
            }
        }
        if conn.open == OpenKind::Passive {
            let listener = self.find_listener(&conn);
            conn.set_listener(listener.map(|l| self.listener_refs.intern(l)));
        }
        if conn.end.is_some() {
            if let Some(flow) = conn.complete_flow() {
                self.tuple_taken(flow, t.ts_boot_ns);
            }
            self.finish(conn, t, finished);
            return;
        }
        if let (_, Some(flow)) = self.live.insert(SocketKey::Addr(t.skaddr), conn) {
            self.tuple_taken(flow, t.ts_boot_ns);
        }
        self.evict();
    }

    /// Applies `t` to the live connection at `slot`.
    fn advance(&mut self, slot: Slot, t: &Transition, finished: &mut Vec<Connection>) {
        let Some(conn) = self.live.get(slot) else {
            return;
        };
        let inconsistent = conn.state != t.old;
        if inconsistent {
            self.stats.inconsistent += 1;
        }
        let config = &self.config;
        let Some((ended, new_flow)) = self.live.update(slot, |conn| {
            conn.uncertain |= inconsistent;
            conn.enter(t, config)
        }) else {
            return;
        };
        if let Some(flow) = new_flow {
            self.tuple_taken(flow, t.ts_boot_ns);
        }
        if ended {
            if let Some(conn) = self.live.remove(slot) {
                self.finish(conn, t, finished);
            }
            return;
        }
        let Some(conn) = self.live.get(slot) else {
            return;
        };
        let needs_listener = conn.open == OpenKind::Passive && !conn.has_listener();
        let flow = conn.flow();
        if needs_listener {
            // A child's first transition may carry the listener's
            // addresses; the real ones are known now.
            let listener = self.find_listener(conn);
            let listener = listener.map(|l| self.listener_refs.intern(l));
            if let Some(conn) = self.live.get_mut(slot) {
                conn.set_listener(listener);
            }
        }
        if t.new == TcpState::LastAck {
            self.peer_sent_fin(&flow, t.ts_boot_ns);
        }
    }

    /// The connection at `key` was replaced at `ts` by a new socket without
    /// its CLOSE being seen.
    ///
    /// After lost events, a connection believed still closing (FIN_WAIT1,
    /// FIN_WAIT2, CLOSING) most likely missed its way into TIME_WAIT (the
    /// usual victims of BPF recursion misses are FIN_WAIT1→FIN_WAIT2 and
    /// FIN_WAIT2→CLOSE, both in softirq): its socket was freed, and an
    /// active closer is freed through the time-wait hand-over far more
    /// often than by a reset or a timeout. It gets an inferred entry; its
    /// end stays Unknown. Without lost events nothing is inferred.
    fn supersede(&mut self, slot: Slot, ts: u64, finished: &mut Vec<Connection>) {
        if let Some(mut conn) = self.live.remove(slot) {
            conn.uncertain = true;
            conn.end = Some(EndKind::Unknown);
            let closing = matches!(
                conn.state,
                TcpState::FinWait1 | TcpState::FinWait2 | TcpState::Closing
            );
            // The kernel reuses an address only after freeing the socket, so
            // a supersede proves a missed CLOSE even when the lost counter
            // has not been read yet (it is read after the batch that holds
            // the miss). An active closer is freed through the time-wait
            // hand-over far more often than by a reset: infer TIME_WAIT.
            if closing {
                if let Some(fate) = self.infer_time_wait_of_superseded(&conn, ts) {
                    conn.time_wait = fate;
                }
            }
            self.stats.missed_close += 1;
            self.stats.connections_finished += 1;
            finished.push(conn);
        }
    }

    /// A birth that arrives after later transitions of its socket: fills in
    /// what only the birth tells (owner, start).
    fn merge_late_birth(&mut self, slot: Slot, t: &Transition) {
        let Some(conn) = self.live.get_mut(slot) else {
            return;
        };
        let fits = !conn.birth_seen()
            && conn
                .states()
                .next()
                .is_some_and(|v| v.state == t.new && v.entered_ns.is_none());
        if !fits {
            return;
        }
        conn.visits_mut().set_first_entered(t.ts_boot_ns);
        conn.started_ns = t.ts_boot_ns;
        conn.mark_birth_seen();
        if conn.open != OpenKind::Preexisting {
            conn.open = OpenKind::of_first(t);
        }
        if let Some(owner) = Owner::from_transition(t) {
            conn.offer_owner(owner, &mut self.owners);
        }
    }

    /// A transition for an unknown address may be the first one of a
    /// snapshot socket whose address was not known: match it by 4-tuple (or
    /// a listener by local endpoint) and move it to its address.
    /// Returns where the adopted socket is now.
    fn adopt_snapshot(&mut self, t: &Transition) -> Option<Slot> {
        let live = &self.live;
        let candidate = if t.old == TcpState::Listen {
            live.listeners(t.netns, t.local.port)
                .find(|(s, c)| live.is_snapshot(*s) && c.local == t.local && c.family == t.family)
                .map(|(s, _)| s)
        } else if tuple_is_complete(&t.local, &t.remote) {
            live.by_flow(&FlowKey {
                netns: t.netns,
                local: t.local,
                remote: t.remote,
            })
            .filter(|s| live.is_snapshot(*s))
        } else {
            None
        };
        let slot = self.live.rekey(candidate?, t.skaddr)?;
        if let Some(pending) = self.pending.take(t.skaddr) {
            if let Some(conn) = self.live.get_mut(slot) {
                conn.offer_owner(pending.owner, &mut self.owners);
            }
        }
        self.stats.snapshot_adopted += 1;
        Some(slot)
    }

    /// The live listener a passive connection came from: same namespace,
    /// family and port, and the same address or a wildcard one (an exact
    /// address wins; among equals, the newest).
    fn find_listener(&self, child: &Connection) -> Option<ListenerRef> {
        let mut best: Vec<(u8, &Connection)> = Vec::new();
        for (_, listener) in self.live.listeners(child.netns, child.local.port) {
            if listener.family != child.family || listener.id == child.id {
                continue;
            }
            let score = if !child.local.ip.is_unspecified() && listener.local.ip == child.local.ip {
                2
            } else if listener.local.ip.is_unspecified() {
                1
            } else {
                continue;
            };
            match best.first() {
                Some((top, _)) if *top > score => continue,
                Some((top, _)) if *top < score => best.clear(),
                _ => {}
            }
            best.push((score, listener));
        }
        let (_, chosen) = best.iter().max_by_key(|(_, l)| l.id)?;
        let tgid = chosen.owner().map(|o| o.tgid);
        Some(ListenerRef {
            skaddr: chosen.skaddr(),
            connection_id: chosen.id,
            local: chosen.local,
            owner: chosen.owner(),
            ambiguous: best.iter().any(|(_, l)| l.owner().map(|o| o.tgid) != tgid),
        })
    }

    /// A transition for an unknown address that is older than what ended
    /// there: the late tail of a finished socket. Seen either as the CLOSE at
    /// the same address, or as the time-wait socket its 4-tuple went to (a
    /// 4-tuple has one socket at a time).
    fn predates_a_close(&self, t: &Transition) -> bool {
        if self.recently_closed.predates_close(t.skaddr, t.ts_boot_ns) {
            return true;
        }
        let flow = FlowKey {
            netns: t.netns,
            local: t.local,
            remote: t.remote,
        };
        // An inferred entry stands for transitions that were missed; one of
        // them arriving after all (delayed, not lost) is that tail too,
        // whatever its timestamp says.
        let closing = matches!(
            t.old,
            TcpState::FinWait1 | TcpState::FinWait2 | TcpState::Closing
        );
        !is_birth(t)
            && self.time_wait.get(&flow).is_some_and(|e| {
                e.started_ns.is_some_and(|started| t.ts_boot_ns < started)
                    || (e.inferred && closing)
            })
    }

    fn finish(&mut self, mut conn: Connection, t: &Transition, finished: &mut Vec<Connection>) {
        self.recently_closed.insert(t.skaddr, t.ts_boot_ns);
        if enters_time_wait(t.old, t.new) {
            conn.time_wait = self.enter_time_wait(&conn, t);
        }
        // After the entry: its expiry used the peer's FIN kept there.
        if !self.deferred_closes.is_empty() {
            self.close_confirmed(conn.id);
        }
        if (t.old, t.new) == (TcpState::CloseWait, TcpState::Close) {
            self.peer_reset(&conn, t.ts_boot_ns);
        }
        let peer_acked_fin = (t.old, t.new) == (TcpState::LastAck, TcpState::Close);
        if peer_acked_fin {
            self.defer_close_from_peer(&conn, t, finished);
        }
        self.stats.connections_finished += 1;
        finished.push(conn);
    }

    fn evict(&mut self) {
        self.stats.evicted += self.live.evict_over(self.config.max_connections) as u64;
    }

    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        self.live.check_invariants();
        self.time_wait.check_invariants();
        assert!(self.live.len() <= self.config.max_connections);
        for conn in self.live.values() {
            assert!(conn.is_live());
            assert!(conn.state_count() > 0);
            assert_eq!(conn.states().next_back().map(|v| v.state), Some(conn.state));
        }
    }
}

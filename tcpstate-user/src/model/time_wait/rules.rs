//! The rules that decide when a socket is in TIME_WAIT, and when it
//! leaves. They are methods of [`Model`], which holds the table next to
//! the live connections the rules look at:
//!
//! - **enter**: a connection's last transition hands it to a time-wait
//!   socket ([`enters_time_wait`]: FIN_WAIT2→CLOSE or CLOSING→CLOSE);
//!   [`Model::enter_time_wait`] predicts its expiry from the peer's FIN when
//!   the peer is traced here.
//! - **infer**: a peer's LAST_ACK→CLOSE proves our side got its FIN; if our
//!   side is still believed closing when a short grace has passed, its way
//!   into TIME_WAIT was missed ([`Model::defer_close_from_peer`]).
//! - **snapshot**: time-wait sockets older than the tracer
//!   ([`Model::insert_existing_time_wait`]).
//! - **supersede**: after lost events, a closing connection whose address
//!   is reused missed its way into TIME_WAIT
//!   ([`Model::infer_time_wait_of_superseded`]).
//! - **peer's FIN**: the peer's CLOSE_WAIT→LAST_ACK fixes the expiry of our
//!   side's entry ([`Model::peer_sent_fin`]).
//! - **reuse**: a live connection taking the 4-tuple ends the entry
//!   ([`Model::tuple_taken`]).
//! - **reset**: a RST destroys a time-wait socket without a transition
//!   ([`Model::apply_reset`], [`Model::peer_reset`]).
//! - **expire**: the kernel frees it after `time_wait_secs`
//!   ([`Model::expire`]).
use super::{deferred::DeferredClose, ExpiryBasis, Inserted, TimeWaitEntry, TimeWaitRemoval};
use crate::{
    model::{
        connection::{tuple_is_complete, ClosedFirst, Connection, FlowKey, TimeWaitFate},
        owner::Owner,
        snapshot::{ExistingSocket, ExistingSocketError},
        Model,
    },
    tcp::TcpState,
    wire::{ResetSent, Transition},
};

/// Whether `old → new` hands the connection to a time-wait socket. The
/// full socket goes to CLOSE and a separate mini socket (never seen on the
/// tracepoint) holds TIME_WAIT; a direct →TIME_WAIT is accepted too.
pub fn enters_time_wait(old: TcpState, new: TcpState) -> bool {
    matches!(
        (old, new),
        (TcpState::FinWait2 | TcpState::Closing, TcpState::Close) | (_, TcpState::TimeWait)
    )
}

impl Model {
    /// A RST this host sent. A time-wait socket is freed without any
    /// transition on the tracepoint, so the RST itself is the only sign that
    /// it killed one. The time-wait socket it destroys, if any, leaves the
    /// TIME_WAIT table (reason [`TimeWaitRemoval::Reset`]):
    ///
    /// - sent by a time-wait socket (`sender_state` TimeWait, the kernel's
    ///   TCP_TW_RST): that socket, local `segment_dst`, remote
    ///   `segment_src`, is destroyed;
    /// - otherwise the RST reaches `segment_src`; if that is a local
    ///   time-wait socket (local `segment_src`, remote `segment_dst`), it is
    ///   destroyed unless `rfc1337` is set (TIME-WAIT assassination). Under
    ///   churn a listener can answer a late segment of a connection that
    ///   already closed, and on loopback that RST reaches the peer's
    ///   time-wait socket.
    ///
    /// Live connections are left alone: one that receives the RST shows it
    /// with its own transition to CLOSE. With `netns` 0 (unknown) the
    /// 4-tuple is looked up in every namespace and acted on only if exactly
    /// one has it. A RST sent to `segment_src` by a socket in one namespace
    /// can reach a time-wait socket in another (two namespaces joined by a
    /// veth pair, as containers are): when the sender's namespace has no
    /// such entry and the address is not a loopback one (which never leaves
    /// its namespace), every namespace is looked at in the same way. A RST
    /// older than the entry it would remove was about an earlier socket
    /// with that 4-tuple and is ignored.
    pub fn apply_reset(&mut self, reset: &ResetSent) {
        self.stats.resets_seen += 1;
        let ts = reset.ts_boot_ns;
        let sent_by_time_wait = reset.sender_state == Some(TcpState::TimeWait);
        let (local, remote) = if sent_by_time_wait {
            (reset.segment_dst, reset.segment_src)
        } else if self.config.rfc1337 {
            return;
        } else {
            (reset.segment_src, reset.segment_dst)
        };
        let found = match self.time_wait.find(reset.netns, local, remote) {
            Err(0)
                if reset.netns != 0
                    && !sent_by_time_wait
                    && !local.ip.to_canonical().is_loopback() =>
            {
                self.time_wait.find(0, local, remote)
            }
            found => found,
        };
        let flow = match found {
            Ok(flow) => flow,
            Err(0) => return,
            Err(_) => {
                self.stats.resets_ambiguous += 1;
                return;
            }
        };
        let Some(entry) = self.time_wait.get(&flow) else {
            return;
        };
        if entry.started_ns.is_some_and(|started| ts < started) {
            return;
        }
        if entry.expires_ns <= ts {
            // The kernel had freed it already: the RST was for something
            // else (or nothing).
            self.time_wait.remove(&flow, TimeWaitRemoval::Expired);
            return;
        }
        if !sent_by_time_wait && self.received_by_live(&flow, entry) {
            return;
        }
        self.time_wait.remove(&flow, TimeWaitRemoval::Reset);
        self.stats.resets_time_wait_removed += 1;
    }

    /// Whether a RST to `flow` goes to a live, synchronized connection
    /// rather than to the time-wait `entry`. A live connection that takes a
    /// 4-tuple removes its TIME_WAIT entry, so the two coexist only when the
    /// live one is stale (its CLOSE missed) — unless it has moved since the
    /// entry was made.
    fn received_by_live(&self, flow: &FlowKey, entry: &TimeWaitEntry) -> bool {
        use TcpState::*;
        let Some(conn) = self.live.by_flow(flow).and_then(|slot| self.live.get(slot)) else {
            return false;
        };
        let synchronized = matches!(
            conn.state,
            Established | FinWait1 | FinWait2 | CloseWait | Closing | LastAck
        );
        synchronized
            && entry
                .started_ns
                .is_some_and(|started| conn.last_ns >= started)
    }

    /// Removes the TIME_WAIT entries whose predicted expiry is at or before
    /// `now_ns`, and returns them, soonest first.
    pub fn expire(&mut self, now_ns: u64) -> Vec<TimeWaitEntry> {
        self.time_wait
            .expire(now_ns.saturating_sub(self.config.time_wait_grace_ns()))
    }

    /// A time-wait socket was killed by a reset (learnt elsewhere: the
    /// tracepoint does not show it).
    pub fn time_wait_reset(&mut self, flow: &FlowKey) -> Option<TimeWaitEntry> {
        self.time_wait.remove(flow, TimeWaitRemoval::Reset)
    }

    /// A live connection now uses `flow`: a time-wait socket with the same
    /// 4-tuple is gone (reused, or expired if its time had come).
    pub(in crate::model) fn tuple_taken(&mut self, flow: FlowKey, ts: u64) {
        self.time_wait.remove_if(&flow, |entry| {
            Some(if entry.expires_ns <= ts {
                TimeWaitRemoval::Expired
            } else {
                TimeWaitRemoval::Reused
            })
        });
    }

    /// `peer` went LAST_ACK→CLOSE at `t`: the ACK of its FIN arrived, so
    /// the other end received that FIN. If the other end is traced here (the
    /// mirrored 4-tuple in the same namespace, as on loopback) and still
    /// believed in FIN_WAIT1, FIN_WAIT2 or CLOSING, its way into TIME_WAIT
    /// was missed, or is still to come (see [`super::deferred`]): the
    /// inference waits for it.
    pub(in crate::model) fn defer_close_from_peer(
        &mut self,
        peer: &Connection,
        t: &Transition,
        finished: &mut Vec<Connection>,
    ) {
        use TcpState::*;
        let ts = t.ts_boot_ns;
        let Some(flow) = peer.complete_flow().map(|f| f.mirrored()) else {
            return;
        };
        let Some(conn) = self.live.by_flow(&flow).and_then(|s| self.live.get(s)) else {
            return;
        };
        if !(matches!(conn.state, FinWait1 | FinWait2 | Closing) && conn.last_ns <= ts) {
            return;
        }
        let peer_fin_ns = peer
            .states()
            .rev()
            .find(|v| v.state == LastAck)
            .and_then(|v| v.entered_ns)
            .unwrap_or(ts);
        let close = DeferredClose {
            connection_id: conn.id,
            flow,
            peer_close: *t,
            peer_fin_ns,
        };
        if let Some(oldest) = self.deferred_closes.push(close) {
            self.infer_close_from_peer(oldest, finished);
        }
    }

    /// Applies the closes whose grace ended before `now_ns` (all with
    /// `u64::MAX`), oldest first.
    pub(in crate::model) fn settle_deferred_closes(
        &mut self,
        now_ns: u64,
        finished: &mut Vec<Connection>,
    ) {
        for close in self.deferred_closes.due(now_ns) {
            self.infer_close_from_peer(close, finished);
        }
    }

    /// The connection's own close arrived while its inference waited: the
    /// inference is dropped (the real transition is applied instead).
    pub(in crate::model) fn close_confirmed(&mut self, connection_id: u64) {
        if self.deferred_closes.take(connection_id).is_some() {
            self.stats.closes_after_peer += 1;
        }
    }

    /// A close proven by the peer whose own transition did not arrive in
    /// the grace: finish the connection, if it is still there and still
    /// closing, as if FIN_WAIT2→CLOSE (or CLOSING→CLOSE) had been seen when
    /// the peer closed (or at its own latest transition, if later), with a
    /// TIME_WAIT entry expiring `time_wait_secs` after the peer's FIN,
    /// marked inferred.
    fn infer_close_from_peer(&mut self, close: DeferredClose, finished: &mut Vec<Connection>) {
        use TcpState::*;
        let Some(slot) = self.live.by_flow(&close.flow) else {
            return;
        };
        let still_closing = self.live.get(slot).is_some_and(|c| {
            c.id == close.connection_id && matches!(c.state, FinWait1 | FinWait2 | Closing)
        });
        if !still_closing {
            return;
        }
        let Some(mut conn) = self.live.remove(slot) else {
            return;
        };
        let ts = close.peer_close.ts_boot_ns.max(conn.last_ns);
        let old = if conn.state == Closing {
            Closing
        } else {
            FinWait2
        };
        let inferred = Transition {
            ts_boot_ns: ts,
            skaddr: conn.skaddr().unwrap_or(0),
            family: conn.family,
            local: conn.local,
            remote: conn.remote,
            old,
            new: Close,
            netns: conn.netns,
            ..close.peer_close
        };
        conn.enter(&inferred, &self.config);
        conn.uncertain = true;
        if let Some(skaddr) = conn.skaddr() {
            // Late records of the transitions that were missed (if they were
            // only delayed) are then recognised as such.
            self.recently_closed.insert(skaddr, ts);
        }
        let expiry = (
            close.peer_fin_ns.saturating_add(self.config.time_wait_ns()),
            ExpiryBasis::PeerFin,
        );
        conn.time_wait = self.insert_time_wait(&conn, ts, Some(ts), old, expiry, true);
        self.stats.inferred_closes += 1;
        self.stats.connections_finished += 1;
        finished.push(conn);
    }

    /// Records the time-wait socket that `conn`'s last transition `t` left.
    pub(in crate::model) fn enter_time_wait(
        &mut self,
        conn: &Connection,
        t: &Transition,
    ) -> TimeWaitFate {
        let Some(flow) = conn.complete_flow() else {
            return TimeWaitFate::Untracked;
        };
        let ts = t.ts_boot_ns;
        let time_wait_ns = self.config.time_wait_ns();
        let (expires_ns, basis) = if (t.old, t.new) == (TcpState::FinWait2, TcpState::Close) {
            match self.peer_fin_ns(&flow) {
                // If the FIN came before our close, TIME_WAIT starts now.
                Some(fin) => (
                    fin.max(ts).saturating_add(time_wait_ns),
                    ExpiryBasis::PeerFin,
                ),
                None => (
                    ts.saturating_add(time_wait_ns.max(self.config.fin_timeout_ns())),
                    ExpiryBasis::FinTimeoutEstimate,
                ),
            }
        } else {
            (ts.saturating_add(time_wait_ns), ExpiryBasis::TimeWaitLen)
        };
        self.insert_time_wait(conn, ts, Some(ts), t.old, (expires_ns, basis), false)
    }

    /// Adds the TIME_WAIT entry of `conn`, which left `closing_state` for
    /// TIME_WAIT (at `started_ns`, when known), as of `ts`.
    fn insert_time_wait(
        &mut self,
        conn: &Connection,
        ts: u64,
        started_ns: Option<u64>,
        closing_state: TcpState,
        (expires_ns, basis): (u64, ExpiryBasis),
        inferred: bool,
    ) -> TimeWaitFate {
        let Some(flow) = conn.complete_flow() else {
            return TimeWaitFate::Untracked;
        };
        // What the kernel has freed by now does not count against the limit.
        self.time_wait
            .drop_expired(ts.saturating_sub(self.config.time_wait_grace_ns()));
        let closed_first = match conn.closed_first {
            ClosedFirst::Local | ClosedFirst::Both => conn.closed_first,
            _ if closing_state == TcpState::Closing => ClosedFirst::Both,
            _ => ClosedFirst::Local,
        };
        let entry = TimeWaitEntry {
            flow,
            family: conn.family,
            owner: conn.attributed_owner(),
            closed_first,
            started_ns,
            expires_ns,
            basis,
            connection_id: Some(conn.id),
            inferred,
        };
        match self.time_wait.insert(entry) {
            Inserted::Yes => TimeWaitFate::Entered,
            Inserted::Overflow => TimeWaitFate::Overflow,
            Inserted::OverMemory => TimeWaitFate::Untracked,
        }
    }

    /// `conn` went CLOSE_WAIT→CLOSE: it reset instead of sending its FIN
    /// (closed with unread data), or was reset for sending data. If its peer
    /// is local and in time-wait still waiting for that FIN, the RST (or the
    /// data) kills the time-wait socket.
    pub(in crate::model) fn peer_reset(&mut self, conn: &Connection, ts: u64) {
        let Some(flow) = conn.complete_flow().map(|f| f.mirrored()) else {
            return;
        };
        let waiting = self
            .time_wait
            .get(&flow)
            .is_some_and(|e| e.basis.awaits_peer_fin() && e.started_ns.is_none_or(|s| s <= ts));
        if waiting {
            self.time_wait.remove(&flow, TimeWaitRemoval::Reset);
        }
    }

    /// When the peer of a locally traced connection sent its FIN (it entered
    /// LAST_ACK), if it did.
    fn peer_fin_ns(&self, flow: &FlowKey) -> Option<u64> {
        let live_peer = || {
            let peer = self.live.get(self.live.by_flow(&flow.mirrored())?)?;
            (peer.state == TcpState::LastAck)
                .then(|| peer.state_entered_ns())
                .flatten()
        };
        // A peer that closed before our side's close arrived is gone from
        // the live table; its FIN was kept with the deferred inference.
        live_peer().or_else(|| self.deferred_closes.peer_fin_ns(flow))
    }

    pub(in crate::model) fn insert_existing_time_wait(
        &mut self,
        sock: &ExistingSocket,
        flow: FlowKey,
        owner: Option<Owner>,
        now_ns: u64,
        left_ns: u64,
    ) -> Result<(), ExistingSocketError> {
        if !tuple_is_complete(&flow.local, &flow.remote) {
            return Err(ExistingSocketError::IncompleteTuple);
        }
        self.time_wait
            .drop_expired(now_ns.saturating_sub(self.config.time_wait_grace_ns()));
        if self.time_wait.get(&flow).is_some() {
            // Seen entering TIME_WAIT while tracing: that entry knows more.
            return Ok(());
        }
        self.time_wait.insert(TimeWaitEntry {
            flow,
            family: sock.family,
            owner,
            closed_first: ClosedFirst::Local,
            started_ns: None,
            expires_ns: now_ns.saturating_add(left_ns),
            basis: ExpiryBasis::Snapshot,
            connection_id: None,
            inferred: false,
        });
        Ok(())
    }

    /// The peer of a connection traced here (the mirrored 4-tuple of
    /// `flow`) sent its FIN at `ts` (CLOSE_WAIT→LAST_ACK): our side's
    /// time-wait socket, if it waits for that FIN, now has its final
    /// `time_wait_secs`.
    pub(in crate::model) fn peer_sent_fin(&mut self, flow: &FlowKey, ts: u64) {
        self.time_wait
            .peer_fin(&flow.mirrored(), ts, self.config.time_wait_ns());
    }

    /// `conn`, believed closing, was superseded at `ts` by a new socket at
    /// its address: its way into TIME_WAIT was missed (see
    /// `Model::supersede`). An inferred entry; None when its 4-tuple is not
    /// complete.
    pub(in crate::model) fn infer_time_wait_of_superseded(
        &mut self,
        conn: &Connection,
        ts: u64,
    ) -> Option<TimeWaitFate> {
        let flow = conn.complete_flow()?;
        let time_wait_ns = self.config.time_wait_ns();
        let expiry = match self.peer_fin_ns(&flow) {
            Some(fin) => (fin.saturating_add(time_wait_ns), ExpiryBasis::PeerFin),
            None => (ts.saturating_add(time_wait_ns), ExpiryBasis::Superseded),
        };
        let fate = self.insert_time_wait(conn, ts, None, conn.state, expiry, true);
        self.stats.inferred_superseded += 1;
        Some(fate)
    }
}

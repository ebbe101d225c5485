//! Closes proven by the local peer, held until their own transition has had
//! time to arrive.
//!
//! A peer's LAST_ACK→CLOSE proves that our side received its FIN. If our side
//! is still believed closing then, its FIN_WAIT2→CLOSE was either missed or
//! is still to come: the kernel can emit the two in that order. Its
//! `tcp_time_wait()` re-enables bottom halves after handing the socket to its
//! time-wait mini socket and before `tcp_done()` moves it to CLOSE; when the
//! FIN was taken from the socket's backlog (the owner was still inside
//! close()), the pending softirq runs there, and on loopback it delivers
//! the ACK just sent: the peer goes LAST_ACK→CLOSE first (seen on Linux
//! 5.10 under emulation). So the inference waits [`PEER_CLOSE_GRACE_NS`] of
//! event time; our side's own CLOSE arriving in that time settles it for
//! certain instead.

use crate::{model::connection::FlowKey, wire::Transition};

/// How long (event time) an inferred close waits for the real one. The real
/// one follows within microseconds on the same CPU; this leaves room for an
/// emulated or heavily loaded machine, while a connection finished by
/// inference shows a little later than its peer.
pub const PEER_CLOSE_GRACE_NS: u64 = 10_000_000;

/// At most this many waiting at once (each waits at most the grace, so only
/// a flood of lost events comes near it); beyond it the oldest is settled
/// at once.
pub const MAX_DEFERRED: usize = 4096;

/// One close inferred from the peer, not yet applied.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DeferredClose {
    /// The connection believed closing, by id (its slot may be reused).
    pub connection_id: u64,
    /// Its 4-tuple, to find it.
    pub flow: FlowKey,
    /// The peer's LAST_ACK→CLOSE.
    pub peer_close: Transition,
    /// When the peer sent its FIN (entered LAST_ACK): our side's time-wait
    /// expiry counts from it.
    pub peer_fin_ns: u64,
}

/// The closes waiting, oldest first.
#[derive(Debug, Default)]
pub(crate) struct DeferredCloses {
    waiting: Vec<DeferredClose>,
}

impl DeferredCloses {
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Adds one; returns the oldest, to settle now, when over the bound. A
    /// connection waits once: a second proof for it changes nothing.
    pub fn push(&mut self, close: DeferredClose) -> Option<DeferredClose> {
        if self
            .waiting
            .iter()
            .any(|d| d.connection_id == close.connection_id)
        {
            return None;
        }
        self.waiting.push(close);
        (self.waiting.len() > MAX_DEFERRED).then(|| self.waiting.remove(0))
    }

    /// Takes out the ones whose grace ended before `now_ns` (all of them
    /// with `u64::MAX`), oldest first.
    pub fn due(&mut self, now_ns: u64) -> Vec<DeferredClose> {
        let mut due = Vec::new();
        self.waiting.retain(|d| {
            let ends = d.peer_close.ts_boot_ns.saturating_add(PEER_CLOSE_GRACE_NS);
            let now_due = ends < now_ns || now_ns == u64::MAX;
            if now_due {
                due.push(*d);
            }
            !now_due
        });
        due
    }

    /// The connection's own close arrived: its entry, if it had one.
    pub fn take(&mut self, connection_id: u64) -> Option<DeferredClose> {
        let at = self
            .waiting
            .iter()
            .position(|d| d.connection_id == connection_id)?;
        Some(self.waiting.remove(at))
    }

    /// When the peer of `flow` sent its FIN, if a close of `flow` waits.
    pub fn peer_fin_ns(&self, flow: &FlowKey) -> Option<u64> {
        self.waiting
            .iter()
            .find(|d| d.flow == *flow)
            .map(|d| d.peer_fin_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        tcp::TcpState,
        testkit::{ep10, transition},
    };

    fn close(id: u64, ts: u64) -> DeferredClose {
        let flow = FlowKey {
            netns: 1,
            local: ep10(1, id as u16),
            remote: ep10(2, 80),
        };
        DeferredClose {
            connection_id: id,
            flow,
            peer_close: transition(ts, 0xbeef, TcpState::LastAck, TcpState::Close),
            peer_fin_ns: ts - 1,
        }
    }

    #[test]
    fn due_after_the_grace_and_all_at_the_end() {
        let mut d = DeferredCloses::default();
        assert!(d.push(close(1, 1_000)).is_none());
        assert!(d.push(close(1, 2_000)).is_none(), "one wait per connection");
        assert!(d.push(close(2, 5_000)).is_none());
        assert!(d.due(1_000 + PEER_CLOSE_GRACE_NS).is_empty(), "not past it");
        let due = d.due(1_001 + PEER_CLOSE_GRACE_NS);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].peer_close.ts_boot_ns, 1_000);
        assert_eq!(d.peer_fin_ns(&close(2, 5_000).flow), Some(4_999));
        assert!(d.take(1).is_none(), "settled already");
        let rest = d.due(u64::MAX);
        assert_eq!(rest.len(), 1);
        assert!(d.is_empty());
    }

    #[test]
    fn bounded_and_taken_by_the_real_close() {
        let mut d = DeferredCloses::default();
        for id in 0..MAX_DEFERRED as u64 {
            assert!(d.push(close(id, 10 + id)).is_none());
        }
        let oldest = d.push(close(u64::MAX, 1)).expect("over the bound");
        assert_eq!(oldest.connection_id, 0);
        assert_eq!(d.take(7).map(|c| c.connection_id), Some(7));
        assert!(d.take(7).is_none());
        assert_eq!(d.due(u64::MAX).len(), MAX_DEFERRED - 1);
    }
}

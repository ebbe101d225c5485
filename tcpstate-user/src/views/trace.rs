//! The `trace` view: every transition, with the time the socket spent in the
//! state it is leaving.
use crate::{
    clock::{rfc3339_utc, BootClock},
    model::Owner,
    tcp::TcpState,
    wire::Transition,
};
use foldhash::{HashMap, HashMapExt};
use serde::Serialize;

/// Remembers when each live socket entered its current state.
///
/// Bounded: a socket whose CLOSE was never seen (lost event, or a socket that
/// predates the tracer and lives forever) must not grow the table without
/// limit. When full, entries older than the newest half are dropped and
/// counted; their next transition then shows an unknown duration.
#[derive(Debug)]
pub struct StateClock {
    entered: HashMap<u64, u64>,
    capacity: usize,
    evicted: u64,
}

/// One transition and how long its socket was in the old state, when known
/// (unknown for the first transition seen of a socket).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TraceRow {
    pub transition: Transition,
    pub in_old_state_ns: Option<u64>,
}

pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// One transition as every output format has it: JSON Lines (`trace
/// --json`, `export --format jsonl`), CSV and Parquet. Field names are
/// stable; new fields are only ever added.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TransitionRecord {
    /// Always `"transition"` (JSON Lines also carry `"lost"` lines).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Wall-clock time, RFC 3339 in UTC with nanoseconds.
    pub time: String,
    /// Nanoseconds since boot (CLOCK_BOOTTIME), as the kernel stamped it.
    pub ts_boot_ns: u64,
    /// The connection (socket lifetime) this transition belongs to.
    pub connection_id: Option<u64>,
    pub skaddr: String,
    /// Network namespace inode; 0 when unknown.
    pub netns: u32,
    pub family: &'static str,
    pub laddr: String,
    pub lport: u16,
    pub raddr: String,
    pub rport: u16,
    pub old: &'static str,
    pub new: &'static str,
    /// Milliseconds in `old` for this socket; null when not known.
    pub old_state_ms: Option<f64>,
    /// The process that owns the socket, as known at this transition.
    pub owner_tgid: Option<u32>,
    pub owner_pid: Option<u32>,
    pub owner_comm: Option<String>,
    /// How the owner was determined: connect, listen, accept, socket-io,
    /// listener, snapshot.
    pub owner_how: Option<&'static str>,
    /// The owner's cgroup v2 id (0 when unknown).
    pub owner_cgroup_id: Option<u64>,
    /// The task on the CPU when it happened: context, not the owner.
    pub ctx_pid: u32,
    pub ctx_tgid: u32,
    pub ctx_comm: String,
    pub cpu: u32,
}

impl TransitionRecord {
    pub fn new(
        row: &TraceRow,
        clock: &BootClock,
        connection_id: Option<u64>,
        owner: Option<&Owner>,
    ) -> Self {
        let t = &row.transition;
        TransitionRecord {
            kind: "transition",
            time: rfc3339_utc(clock.wall_ns(t.ts_boot_ns)),
            ts_boot_ns: t.ts_boot_ns,
            connection_id,
            skaddr: format!("{:#x}", t.skaddr),
            netns: t.netns,
            family: t.family.name(),
            laddr: t.local.ip.to_string(),
            lport: t.local.port,
            raddr: t.remote.ip.to_string(),
            rport: t.remote.port,
            old: t.old.name(),
            new: t.new.name(),
            old_state_ms: row.in_old_state_ns.map(|ns| ns as f64 / 1e6),
            owner_tgid: owner.map(|o| o.tgid),
            owner_pid: owner.map(|o| o.pid),
            owner_comm: owner.map(|o| o.comm.as_string()),
            owner_how: owner.map(|o| o.how.name()),
            owner_cgroup_id: owner.map(|o| o.cgroup_id),
            ctx_pid: t.task.pid,
            ctx_tgid: t.task.tgid,
            ctx_comm: t.task.comm.as_string(),
            cpu: t.cpu,
        }
    }
}

impl Default for StateClock {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl StateClock {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entered: HashMap::new(),
            capacity: capacity.max(2),
            evicted: 0,
        }
    }

    pub fn observe(&mut self, t: &Transition) -> TraceRow {
        let since = self.entered.get(&t.skaddr).copied();
        // Records from different CPUs can arrive slightly out of order; a
        // negative duration is reported as unknown rather than as zero.
        let in_old_state_ns = since.and_then(|entered| t.ts_boot_ns.checked_sub(entered));
        if t.new == TcpState::Close {
            // The address is free for reuse by an unrelated socket.
            self.entered.remove(&t.skaddr);
        } else {
            if self.entered.len() >= self.capacity && !self.entered.contains_key(&t.skaddr) {
                self.evict_oldest_half();
            }
            self.entered.insert(t.skaddr, t.ts_boot_ns);
        }
        TraceRow {
            transition: *t,
            in_old_state_ns,
        }
    }

    fn evict_oldest_half(&mut self) {
        let mut stamps: Vec<u64> = self.entered.values().copied().collect();
        let middle = stamps.len() / 2;
        let (_, cutoff, _) = stamps.select_nth_unstable(middle);
        let cutoff = *cutoff;
        let before = self.entered.len();
        self.entered.retain(|_, &mut ts| ts >= cutoff);
        self.evicted += (before - self.entered.len()) as u64;
    }

    /// Sockets whose entry time was dropped to stay within capacity.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    pub fn len(&self) -> usize {
        self.entered.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entered.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::transition;

    #[test]
    fn measures_time_in_the_old_state() {
        use TcpState::*;
        let mut clock = StateClock::default();
        assert_eq!(
            clock
                .observe(&transition(100, 1, Close, SynSent))
                .in_old_state_ns,
            None
        );
        assert_eq!(
            clock
                .observe(&transition(350, 1, SynSent, Established))
                .in_old_state_ns,
            Some(250)
        );
        assert_eq!(
            clock
                .observe(&transition(1350, 1, Established, Close))
                .in_old_state_ns,
            Some(1000)
        );
        assert!(clock.is_empty());
    }

    #[test]
    fn reused_address_starts_fresh() {
        use TcpState::*;
        let mut clock = StateClock::default();
        clock.observe(&transition(10, 7, Close, Listen));
        clock.observe(&transition(20, 7, Listen, Close));
        // A new socket at the same address: its first transition is unknown.
        assert_eq!(
            clock
                .observe(&transition(30, 7, Close, SynSent))
                .in_old_state_ns,
            None
        );
    }

    #[test]
    fn out_of_order_is_unknown_not_negative() {
        use TcpState::*;
        let mut clock = StateClock::default();
        clock.observe(&transition(500, 1, Close, SynSent));
        assert_eq!(
            clock
                .observe(&transition(400, 1, SynSent, Established))
                .in_old_state_ns,
            None
        );
    }

    #[test]
    fn stays_bounded_and_counts_evictions() {
        use TcpState::*;
        let mut clock = StateClock::with_capacity(100);
        for i in 0..1_000u64 {
            clock.observe(&transition(i, i, Close, SynSent));
            assert!(clock.len() <= 100);
        }
        assert!(clock.evicted() >= 900 - 50, "evicted {}", clock.evicted());
        // The newest sockets are still known.
        assert_eq!(
            clock
                .observe(&transition(1_999, 999, SynSent, Established))
                .in_old_state_ns,
            Some(1_000)
        );
    }
}

//! Who owns a socket, and how we know.
//!
//! Most transitions run in softirq, where the task on the CPU is unrelated to
//! the socket. Owners therefore come only from transitions that run inside a
//! system call of the owner (connect(), listen()), from separate owner
//! observations (accept()), and from a snapshot of existing
//! sockets.
use crate::tcp::TcpState;
use crate::wire::{Comm, OwnerSeen, Transition};
use foldhash::{HashMap, HashMapExt};
use std::collections::VecDeque;

/// How the owner of a socket was learnt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnerHow {
    /// CLOSE→SYN_SENT runs inside connect().
    Connect,
    /// CLOSE→LISTEN runs inside listen().
    Listen,
    /// The accept() that returned the socket.
    Accept,
    /// A send or receive on the socket.
    SocketIo,
    /// Not observed: the owner of the listener the socket came from. Only
    /// used where an owner is needed for attribution (TIME_WAIT entries),
    /// never stored as a connection's owner.
    InheritedFromListener,
    /// A snapshot of the sockets that existed when tracing started.
    Snapshot,
}

impl OwnerHow {
    /// Better evidence replaces worse: a socket seen through I/O first and
    /// then through accept() is attributed to the accepting process.
    fn rank(self) -> u8 {
        match self {
            OwnerHow::InheritedFromListener => 0,
            OwnerHow::SocketIo => 1,
            OwnerHow::Snapshot => 2,
            OwnerHow::Connect | OwnerHow::Listen | OwnerHow::Accept => 3,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OwnerHow::Connect => "connect",
            OwnerHow::Listen => "listen",
            OwnerHow::Accept => "accept",
            OwnerHow::SocketIo => "socket-io",
            OwnerHow::InheritedFromListener => "listener",
            OwnerHow::Snapshot => "snapshot",
        }
    }
}

/// The process that owns a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub tgid: u32,
    pub pid: u32,
    pub comm: Comm,
    pub how: OwnerHow,
    /// The owner's cgroup (v2 id, the cgroup directory's inode); 0 when
    /// unknown.
    pub cgroup_id: u64,
}

/// By task and cgroup only: the comm is compared, not hashed (interning
/// hashes an owner per connection). Equal owners still hash equal.
impl std::hash::Hash for Owner {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from(self.tgid) << 32 | u64::from(self.pid));
        state.write_u64(self.cgroup_id ^ (self.how as u64) << 56);
    }
}

impl Owner {
    /// The owner a transition reveals, if it runs in the owner's system call.
    /// Task 0 is the idle task: the transition ran in interrupt context.
    pub fn from_transition(t: &Transition) -> Option<Owner> {
        let how = match (t.old, t.new) {
            (TcpState::Close, TcpState::SynSent) => OwnerHow::Connect,
            (TcpState::Close, TcpState::Listen) => OwnerHow::Listen,
            _ => return None,
        };
        (t.task.tgid != 0).then_some(Owner {
            tgid: t.task.tgid,
            pid: t.task.pid,
            comm: t.task.comm,
            how,
            cgroup_id: t.cgroup_id,
        })
    }

    /// Whether `self` should replace `current` as a socket's owner.
    pub fn replaces(&self, current: Option<&Owner>) -> bool {
        current.is_none_or(|current| self.how.rank() > current.how.rank())
    }
}

impl Owner {
    /// The process an accept() returned the socket to.
    pub fn accepted(seen: &OwnerSeen) -> Owner {
        Owner {
            tgid: seen.task.tgid,
            pid: seen.task.pid,
            comm: seen.task.comm,
            how: OwnerHow::Accept,
            cgroup_id: seen.cgroup_id,
        }
    }
}

/// Owner observations for sockets the model has not seen a transition of
/// yet (typically sockets older than the tracer). Bounded: when full, the
/// oldest observation is dropped.
#[derive(Debug)]
pub(crate) struct PendingOwners {
    by_addr: HashMap<u64, Pending>,
    /// Insertion order, for dropping the oldest; may hold entries already
    /// taken, which are skipped and compacted away.
    order: VecDeque<(u64, u64)>,
    capacity: usize,
    next_seq: u64,
    dropped: u64,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Pending {
    pub owner: Owner,
    pub ts_boot_ns: u64,
    seq: u64,
}

impl PendingOwners {
    pub fn new(capacity: usize) -> Self {
        Self {
            by_addr: HashMap::new(),
            order: VecDeque::new(),
            capacity,
            next_seq: 0,
            dropped: 0,
        }
    }

    pub fn insert(&mut self, skaddr: u64, owner: Owner, ts_boot_ns: u64) {
        if let Some(existing) = self.by_addr.get_mut(&skaddr) {
            if owner.replaces(Some(&existing.owner)) {
                existing.owner = owner;
                existing.ts_boot_ns = ts_boot_ns;
            }
            return;
        }
        if self.capacity == 0 {
            self.dropped += 1;
            return;
        }
        while self.by_addr.len() >= self.capacity {
            let Some((addr, seq)) = self.order.pop_front() else {
                break;
            };
            if self.by_addr.get(&addr).is_some_and(|p| p.seq == seq) {
                self.by_addr.remove(&addr);
                self.dropped += 1;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_addr.insert(
            skaddr,
            Pending {
                owner,
                ts_boot_ns,
                seq,
            },
        );
        self.order.push_back((skaddr, seq));
        if self.order.len() > self.capacity.saturating_mul(2) {
            let by_addr = &self.by_addr;
            self.order
                .retain(|(addr, seq)| by_addr.get(addr).is_some_and(|p| p.seq == *seq));
        }
    }

    pub fn take(&mut self, skaddr: u64) -> Option<Pending> {
        self.by_addr.remove(&skaddr)
    }

    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    /// Observations dropped to stay within capacity.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(tgid: u32, how: OwnerHow) -> Owner {
        Owner {
            tgid,
            pid: tgid,
            comm: Comm::from_str_lossy("p"),
            how,
            cgroup_id: 0,
        }
    }

    /// `stat` and the other counting views load the BPF program so that it
    /// reads the task for `transition_names_owner`'s transitions only: an
    /// owner taken from any other would be task 0.
    #[test]
    fn owners_come_only_from_transitions_that_carry_the_task_in_every_mode() {
        for old in TcpState::ALL {
            for new in TcpState::ALL {
                let t = Transition {
                    task: crate::testkit::task(7, "p"),
                    ..crate::testkit::transition(1, 0x10, old, new)
                };
                if Owner::from_transition(&t).is_some() {
                    assert!(
                        tcpstate_common::transition_names_owner(old as i32, new as i32),
                        "{old:?} -> {new:?} names an owner but the BPF program may not read its task"
                    );
                }
            }
        }
    }

    #[test]
    fn accept_replaces_socket_io_but_not_the_reverse() {
        let io = owner(1, OwnerHow::SocketIo);
        let accept = owner(2, OwnerHow::Accept);
        assert!(accept.replaces(Some(&io)));
        assert!(!io.replaces(Some(&accept)));
        assert!(io.replaces(None));
        assert!(!owner(3, OwnerHow::Accept).replaces(Some(&owner(4, OwnerHow::Connect))));
    }

    #[test]
    fn pending_owners_stay_bounded_and_drop_the_oldest() {
        let mut pending = PendingOwners::new(3);
        for addr in 0..10u64 {
            pending.insert(addr, owner(addr as u32, OwnerHow::SocketIo), addr);
            assert!(pending.len() <= 3);
            assert!(pending.order.len() <= 7);
        }
        assert_eq!(pending.dropped(), 7);
        assert!(pending.take(6).is_none());
        assert_eq!(pending.take(9).map(|p| p.owner.tgid), Some(9));
        // Taken entries leave stale order slots, which must not grow forever.
        for addr in 100..1_000u64 {
            pending.insert(addr, owner(1, OwnerHow::SocketIo), addr);
            pending.take(addr);
        }
        assert!(pending.order.len() <= 6);
    }
}

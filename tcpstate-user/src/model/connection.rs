//! One socket lifetime, as reconstructed from its transitions.
use super::{
    config::ModelConfig,
    intern::Interner,
    owner::{Owner, OwnerHow},
    visits::{Iter as VisitIter, Visits},
};
use crate::{addr::Endpoint, tcp::Family, tcp::TcpState, wire::Transition};
use std::{
    hash::{Hash, Hasher},
    net::IpAddr,
    sync::Arc,
};

/// A TCP 4-tuple within a network namespace: the identity of a connection
/// as the kernel's hash tables see it. The same 4-tuple in two namespaces
/// (containers) is two different connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowKey {
    pub netns: u32,
    pub local: Endpoint,
    pub remote: Endpoint,
}

/// Two or three words instead of the dozen writes a derived hash makes (it
/// hashes every part of both `IpAddr`s separately): flow lookups are on the
/// per-transition path. An IPv4 address among IPv6 ones hashes as its
/// IPv4-mapped form, which only makes those two collide; equality still
/// tells them apart.
impl Hash for FlowKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let ports = u64::from(self.local.port) | u64::from(self.remote.port) << 16;
        state.write_u64(u64::from(self.netns) << 32 | ports);
        match (self.local.ip, self.remote.ip) {
            (IpAddr::V4(local), IpAddr::V4(remote)) => {
                state.write_u64(u64::from(local.to_bits()) << 32 | u64::from(remote.to_bits()))
            }
            (local, remote) => {
                state.write_u128(ipv6_bits(local));
                state.write_u128(ipv6_bits(remote));
            }
        }
    }
}

fn ipv6_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        IpAddr::V6(v6) => v6.to_bits(),
    }
}

impl FlowKey {
    /// The same connection seen from the other end (both ends are traced
    /// when it runs over loopback or between local namespaces).
    pub fn mirrored(&self) -> FlowKey {
        FlowKey {
            netns: self.netns,
            local: self.remote,
            remote: self.local,
        }
    }
}

/// Whether both ends are known: an unconnected or half-set-up socket has a
/// zero port or an unspecified address.
pub fn tuple_is_complete(local: &Endpoint, remote: &Endpoint) -> bool {
    local.port != 0 && remote.port != 0 && !local.ip.is_unspecified() && !remote.ip.is_unspecified()
}

/// How the socket came to exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpenKind {
    /// connect(): CLOSE→SYN_SENT.
    Active,
    /// A child of a listener: LISTEN→SYN_RECV.
    Passive,
    /// listen(): CLOSE→LISTEN.
    Listener,
    /// From the snapshot of sockets that existed when tracing started.
    Preexisting,
    /// First seen in the middle of its life (it predates the tracer, or its
    /// first transitions were lost) in a state that does not tell.
    Unknown,
}

impl OpenKind {
    /// What the first transition seen tells. SYN_SENT happens only on the
    /// connecting side and SYN_RECV (simultaneous open aside) only on a
    /// listener's child, so a socket first seen leaving them is classified
    /// even when its beginning was missed.
    pub fn of_first(t: &Transition) -> OpenKind {
        use TcpState::*;
        match (t.old, t.new) {
            (Close, SynSent) | (SynSent, _) => OpenKind::Active,
            (Close, Listen) | (Listen, Close) => OpenKind::Listener,
            (Listen, SynRecv) | (SynRecv, _) => OpenKind::Passive,
            _ => OpenKind::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OpenKind::Active => "active",
            OpenKind::Passive => "passive",
            OpenKind::Listener => "listener",
            OpenKind::Preexisting => "preexisting",
            OpenKind::Unknown => "unknown",
        }
    }
}

/// Which side started closing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClosedFirst {
    /// We sent the first FIN (FIN_WAIT1): this side ends in TIME_WAIT.
    Local,
    /// The peer's FIN came first (CLOSE_WAIT).
    Remote,
    /// Both FINs crossed (FIN_WAIT1→CLOSING): both sides end in TIME_WAIT.
    Both,
    /// Ended by a reset before any FIN.
    Reset,
    /// No close seen: still open, or never connected (listener, failed
    /// connect).
    NotClosed,
}

impl ClosedFirst {
    /// The side that closed first after `old → new`, given what was known.
    /// State-based so that it also works when transitions were missed.
    /// Both states count: after missed transitions, the old state the
    /// kernel reports may be the only sign of who closed first.
    pub fn after(self, old: TcpState, new: TcpState) -> ClosedFirst {
        let known = self.implied_by(old).implied_by(new);
        let reset =
            new == TcpState::Close && matches!(old, TcpState::Established | TcpState::SynRecv);
        if known == ClosedFirst::NotClosed && reset {
            return ClosedFirst::Reset;
        }
        known
    }

    fn implied_by(self, state: TcpState) -> ClosedFirst {
        use ClosedFirst::*;
        use TcpState::*;
        match (self, state) {
            (NotClosed, FinWait1 | FinWait2 | TimeWait) => Local,
            (NotClosed | Local, Closing) => Both,
            (NotClosed, CloseWait | LastAck) => Remote,
            (current, _) => current,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ClosedFirst::Local => "local",
            ClosedFirst::Remote => "remote",
            ClosedFirst::Both => "both",
            ClosedFirst::Reset => "reset",
            ClosedFirst::NotClosed => "not-closed",
        }
    }
}

/// How the connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndKind {
    /// Orderly: FIN exchange completed, or a listener closed.
    Normal,
    /// Aborted by a reset sent or received (or retries exhausted), without
    /// TIME_WAIT.
    Reset,
    /// SYN_SENT→CLOSE quickly: the peer answered with a reset.
    Refused,
    /// SYN_SENT→CLOSE after the SYN timeout.
    Timeout,
    /// The end was not seen, or does not tell.
    Unknown,
}

impl EndKind {
    /// Classifies the last transition (into CLOSE or TIME_WAIT).
    /// `in_syn_sent_ns` is how long SYN_SENT lasted, when known.
    fn of_last(t: &Transition, in_syn_sent_ns: Option<u64>, config: &ModelConfig) -> EndKind {
        use TcpState::*;
        match (t.old, t.new) {
            (_, TimeWait) => EndKind::Normal,
            (FinWait2 | Closing | LastAck | Listen, Close) => EndKind::Normal,
            (SynSent, Close) => match in_syn_sent_ns {
                Some(d) if d >= config.syn_timeout_ns() => EndKind::Timeout,
                Some(_) => EndKind::Refused,
                None => EndKind::Unknown,
            },
            (Established | SynRecv | FinWait1 | CloseWait, Close) => EndKind::Reset,
            _ => EndKind::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EndKind::Normal => "normal",
            EndKind::Reset => "reset",
            EndKind::Refused => "refused",
            EndKind::Timeout => "timeout",
            EndKind::Unknown => "unknown",
        }
    }
}

/// Whether the socket's life as a full socket ends with `state`.
pub fn is_terminal(state: TcpState) -> bool {
    matches!(state, TcpState::Close | TcpState::TimeWait)
}

/// A transition that can only be the first of a socket's life: a socket
/// leaves CLOSE only when created or reused by connect()/listen(), and a
/// listener's child is a new socket.
pub fn is_birth(t: &Transition) -> bool {
    (t.old == TcpState::Close && t.new != TcpState::Close)
        || (t.old == TcpState::Listen && t.new == TcpState::SynRecv)
}

/// The listener a passive connection came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerRef {
    /// None for a listener from the snapshot whose address was not given.
    pub skaddr: Option<u64>,
    pub connection_id: u64,
    pub local: Endpoint,
    pub owner: Option<Owner>,
    /// More than one live listener matched equally well (SO_REUSEPORT) and
    /// their owners differ: `owner` is one of them.
    pub ambiguous: bool,
}

/// What became of the connection's TIME_WAIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeWaitFate {
    /// The connection did not end in TIME_WAIT (or has not ended).
    None,
    /// An entry was added to the TIME_WAIT table.
    Entered,
    /// The namespace already held `max_tw_buckets` time-wait sockets: the
    /// kernel closes without TIME_WAIT (TCPTimeWaitOverflow).
    Overflow,
    /// Not tracked: the table's memory bound was reached, or the 4-tuple was
    /// not known.
    Untracked,
}

/// One socket lifetime: from its first transition (or the snapshot) to its
/// CLOSE. A later transition on the same address starts a new connection.
///
/// Kept compact, since a million may be live at once: owners and listeners
/// are shared (see [`Interner`]), the states visited are stored inline for
/// an ordinary life, and what can be derived is read through methods.
#[derive(Clone, Debug, PartialEq)]
pub struct Connection {
    /// Monotonic, unique within a model.
    pub id: u64,
    /// The kernel address; meaningful only when marked known.
    skaddr: u64,
    /// First transition seen (or snapshot time).
    pub started_ns: u64,
    /// Time of the latest transition applied.
    pub last_ns: u64,
    pub netns: u32,
    /// The real 4-tuple, filled in as transitions reveal it (the source port
    /// of a connecting socket is 0 at CLOSE→SYN_SENT; a listener's child may
    /// carry the listener's addresses at LISTEN→SYN_RECV).
    pub local: Endpoint,
    pub remote: Endpoint,
    owner: Option<Arc<Owner>>,
    listener: Option<Arc<ListenerRef>>,
    visits: Visits,
    pub family: Family,
    pub open: OpenKind,
    pub state: TcpState,
    pub closed_first: ClosedFirst,
    /// None while live.
    pub end: Option<EndKind>,
    pub time_wait: TimeWaitFate,
    /// Transitions may have been missed (lost events, or an inconsistent
    /// sequence): the states and classification may be wrong.
    pub uncertain: bool,
    marks: Marks,
    /// The live table's eviction order (see [`Recency`]), kept here where it
    /// fills what would be padding: beside the connection it took 8 bytes a
    /// slot, in a table of its own an extra cache miss per update.
    ///
    /// [`Recency`]: super::recency::Recency
    pub(super) update_stamp: u32,
}

/// Facts about a connection, one bit each: the slot's size is what a
/// million live connections cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Marks(u8);

impl Marks {
    /// The transition that created the socket was seen.
    const BIRTH_SEEN: u8 = 1;
    /// `skaddr` holds the socket's address.
    const SKADDR_KNOWN: u8 = 2;
    /// The CLOSE (or TIME_WAIT) was seen, at `last_ns`.
    const END_SEEN: u8 = 4;

    fn has(self, mark: u8) -> bool {
        self.0 & mark != 0
    }

    fn set(&mut self, mark: u8) {
        self.0 |= mark;
    }
}

impl Connection {
    /// A connection starting with its first seen transition `t` (which may
    /// also be its last).
    pub fn from_first(
        id: u64,
        t: &Transition,
        config: &ModelConfig,
        owners: &mut Interner<Owner>,
    ) -> Connection {
        let birth_seen = is_birth(t);
        let mut conn = Connection {
            id,
            skaddr: t.skaddr,
            started_ns: t.ts_boot_ns,
            last_ns: t.ts_boot_ns,
            netns: t.netns,
            local: t.local,
            remote: t.remote,
            owner: Owner::from_transition(t).map(|o| owners.intern(o)),
            listener: None,
            // The state it was in before; CLOSE before a birth is not a
            // state the socket lived in, and a child was never in LISTEN.
            visits: if birth_seen {
                Visits::new()
            } else {
                Visits::starting(t.old, None)
            },
            family: t.family,
            open: OpenKind::of_first(t),
            state: t.old,
            closed_first: ClosedFirst::NotClosed,
            end: None,
            time_wait: TimeWaitFate::None,
            marks: Marks(if birth_seen {
                Marks::BIRTH_SEEN | Marks::SKADDR_KNOWN
            } else {
                Marks::SKADDR_KNOWN
            }),
            update_stamp: 0,
            uncertain: false,
        };
        conn.enter(t, config);
        conn
    }

    /// A socket from the snapshot, in `state` since before `now_ns`.
    #[allow(clippy::too_many_arguments)]
    pub fn preexisting(
        id: u64,
        skaddr: Option<u64>,
        netns: u32,
        family: Family,
        state: TcpState,
        local: Endpoint,
        remote: Endpoint,
        owner: Option<Arc<Owner>>,
        now_ns: u64,
    ) -> Connection {
        Connection {
            id,
            skaddr: skaddr.unwrap_or(0),
            started_ns: now_ns,
            last_ns: now_ns,
            netns,
            local,
            remote,
            owner,
            listener: None,
            visits: Visits::starting(state, None),
            family,
            open: OpenKind::Preexisting,
            state,
            closed_first: ClosedFirst::NotClosed.implied_by(state),
            end: None,
            time_wait: TimeWaitFate::None,
            uncertain: false,
            marks: Marks(if skaddr.is_some() {
                Marks::SKADDR_KNOWN
            } else {
                0
            }),
            update_stamp: 0,
        }
    }

    /// Applies `t`, whose old state should be the current one (the caller
    /// counts it when it is not). Returns whether `t` ended the connection.
    pub fn enter(&mut self, t: &Transition, config: &ModelConfig) -> bool {
        let ts = t.ts_boot_ns;
        let in_syn_sent_ns = self
            .visits
            .last()
            .filter(|last| last.state == TcpState::SynSent)
            .and_then(|last| ts.checked_sub(last.entered_ns?));
        self.visits.push(t.new, ts);
        self.closed_first = self.closed_first.after(t.old, t.new);
        self.local = merge_endpoint(self.local, t.local);
        self.remote = merge_endpoint(self.remote, t.remote);
        self.state = t.new;
        self.last_ns = ts;
        if is_terminal(t.new) {
            self.marks.set(Marks::END_SEEN);
            self.end = Some(EndKind::of_last(t, in_syn_sent_ns, config));
            return true;
        }
        false
    }

    /// Whether the transition that created the socket was seen.
    pub fn birth_seen(&self) -> bool {
        self.marks.has(Marks::BIRTH_SEEN)
    }

    pub(crate) fn mark_birth_seen(&mut self) {
        self.marks.set(Marks::BIRTH_SEEN);
    }

    /// None for a socket from the snapshot not matched to a transition yet.
    pub fn skaddr(&self) -> Option<u64> {
        self.marks.has(Marks::SKADDR_KNOWN).then_some(self.skaddr)
    }

    pub(crate) fn set_skaddr(&mut self, skaddr: u64) {
        self.skaddr = skaddr;
        self.marks.set(Marks::SKADDR_KNOWN);
    }

    /// Who holds the socket. None until known: a passive socket has no
    /// owner until it is accepted (or used).
    pub fn owner(&self) -> Option<Owner> {
        self.owner.as_deref().copied()
    }

    /// Adopts `owner` if it is better evidence than the current one.
    pub fn offer_owner(&mut self, owner: Owner, owners: &mut Interner<Owner>) -> bool {
        if owner.replaces(self.owner.as_deref()) {
            self.owner = Some(owners.intern(owner));
            return true;
        }
        false
    }

    /// For passive connections: the listener they came from.
    pub fn listener(&self) -> Option<ListenerRef> {
        self.listener.as_deref().copied()
    }

    pub fn has_listener(&self) -> bool {
        self.listener.is_some()
    }

    pub(crate) fn set_listener(&mut self, listener: Option<Arc<ListenerRef>>) {
        self.listener = listener;
    }

    /// States in the order visited, the current one last. When more than
    /// [`MAX_VISITS`](super::visits::MAX_VISITS) were seen, the oldest after
    /// the first are dropped.
    pub fn states(&self) -> VisitIter<'_> {
        self.visits.iter()
    }

    /// How many states [`Self::states`] holds.
    pub fn state_count(&self) -> usize {
        self.visits.len()
    }

    /// States dropped from [`Self::states`] to stay within the limit.
    pub fn states_dropped(&self) -> u32 {
        self.visits.dropped()
    }

    pub(crate) fn visits_mut(&mut self) -> &mut Visits {
        &mut self.visits
    }

    /// Time of the CLOSE; None while live or when the end was not seen.
    pub fn ended_ns(&self) -> Option<u64> {
        self.marks.has(Marks::END_SEEN).then_some(self.last_ns)
    }

    /// The owner to charge for this socket: its own, or for a passive socket
    /// never seen accepted, its listener's (marked as inherited).
    pub fn attributed_owner(&self) -> Option<Owner> {
        self.owner().or_else(|| {
            let listener = self.listener.as_deref().filter(|l| !l.ambiguous)?;
            Some(Owner {
                how: OwnerHow::InheritedFromListener,
                ..listener.owner?
            })
        })
    }

    pub fn flow(&self) -> FlowKey {
        FlowKey {
            netns: self.netns,
            local: self.local,
            remote: self.remote,
        }
    }

    /// The 4-tuple, when both ends are known.
    pub fn complete_flow(&self) -> Option<FlowKey> {
        tuple_is_complete(&self.local, &self.remote).then(|| self.flow())
    }

    /// When the current state was entered; None when it already was when
    /// first seen.
    pub fn state_entered_ns(&self) -> Option<u64> {
        self.visits.last().and_then(|v| v.entered_ns)
    }

    /// From the first transition seen to the CLOSE.
    pub fn lifetime_ns(&self) -> Option<u64> {
        self.ended_ns()?.checked_sub(self.started_ns)
    }

    /// Time since the first transition seen.
    pub fn age_ns(&self, now_ns: u64) -> u64 {
        now_ns.saturating_sub(self.started_ns)
    }

    pub fn is_live(&self) -> bool {
        self.end.is_none()
    }
}

/// Known beats unknown, newer known beats older known.
fn merge_endpoint(known: Endpoint, seen: Endpoint) -> Endpoint {
    Endpoint {
        ip: if seen.ip.is_unspecified() {
            known.ip
        } else {
            seen.ip
        },
        port: if seen.port == 0 {
            known.port
        } else {
            seen.port
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::ep10 as ep;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn merge_keeps_known_parts() {
        let unspecified = Endpoint::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
        assert_eq!(merge_endpoint(ep(1, 80), unspecified), ep(1, 80));
        assert_eq!(
            merge_endpoint(
                ep(1, 0),
                Endpoint::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5)
            ),
            ep(1, 5)
        );
        assert_eq!(merge_endpoint(ep(1, 80), ep(2, 81)), ep(2, 81));
    }

    #[test]
    fn closed_first_follows_the_states() {
        use ClosedFirst::*;
        use TcpState::*;
        assert_eq!(NotClosed.after(Established, FinWait1), Local);
        assert_eq!(Local.after(FinWait1, Closing), Both);
        assert_eq!(NotClosed.after(Established, CloseWait), Remote);
        assert_eq!(NotClosed.after(Established, Close), Reset);
        assert_eq!(NotClosed.after(SynSent, Close), NotClosed);
        assert_eq!(Remote.after(CloseWait, Close), Remote);
        // FIN_WAIT1 and FIN_WAIT2 missed: the old state still tells.
        assert_eq!(NotClosed.after(FinWait2, Close), Local);
        assert_eq!(NotClosed.after(LastAck, Close), Remote);
    }
}

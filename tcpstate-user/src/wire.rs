//! Decoding of ring-buffer records into [`Transition`]s.
//!
//! The bytes come from the kernel, or from a file that may be damaged, so they
//! are treated as untrusted: the length is checked, the struct is copied out
//! with `read_unaligned`, and every enumerated field is validated.
use crate::{
    addr::{ip_from_wire, Endpoint},
    tcp::{Family, TcpState},
};
use tcpstate_common::{kind, Event, EVENT_SIZE};

/// The task that was running when an event fired. For transitions driven by
/// incoming packets this is whatever the CPU was doing, not the owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Task {
    pub tgid: u32,
    pub pid: u32,
    pub comm: Comm,
}

/// A task's `comm`: up to 15 bytes, NUL-padded, not necessarily UTF-8.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Comm(pub [u8; 16]);

impl Comm {
    pub fn from_str_lossy(name: &str) -> Self {
        let mut bytes = [0u8; 16];
        let len = name.len().min(15);
        bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
        Comm(bytes)
    }

    /// The name's bytes, up to the first NUL.
    pub fn name_bytes(&self) -> &[u8] {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(self.0.len());
        &self.0[..len]
    }

    pub fn as_string(&self) -> String {
        String::from_utf8_lossy(self.name_bytes()).into_owned()
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_string())
    }
}

impl std::fmt::Display for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.as_string())
    }
}

/// One TCP state transition of one socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Nanoseconds since boot (CLOCK_BOOTTIME).
    pub ts_boot_ns: u64,
    /// Kernel address of the socket; reused after the socket is freed.
    pub skaddr: u64,
    pub family: Family,
    pub local: Endpoint,
    pub remote: Endpoint,
    pub old: TcpState,
    pub new: TcpState,
    /// The task on the CPU when it happened (context, not owner).
    pub task: Task,
    pub cgroup_id: u64,
    pub netns: u32,
    pub cpu: u32,
}

/// A process seen holding a socket, in its own context (accept()).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnerSeen {
    pub ts_boot_ns: u64,
    pub skaddr: u64,
    pub task: Task,
    pub cgroup_id: u64,
    pub netns: u32,
}

/// A RST the host sent in answer to a segment from `segment_src` to
/// `segment_dst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetSent {
    pub ts_boot_ns: u64,
    /// The socket that sent it (0: none), its state, and its namespace
    /// (0: unknown).
    pub sender: u64,
    pub sender_state: Option<TcpState>,
    pub netns: u32,
    pub segment_src: Endpoint,
    pub segment_dst: Endpoint,
}

/// One thing a source delivers, in the order it happened: what a ring-buffer
/// record turned out to be, or a change of the kernel's lost count. The one
/// input type from the source to the model (and into recordings); Copy, no
/// heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    Transition(Transition),
    /// accept() returned this socket to `task`.
    Accepted(OwnerSeen),
    /// The host sent a RST in answer to a segment.
    ResetSent(ResetSent),
    /// The kernel's count of transitions it could not deliver grew to
    /// `total`; `ts_boot_ns` is when the new total was read. Never decoded
    /// from a record: the source makes it.
    Lost {
        total: u64,
        ts_boot_ns: u64,
    },
    /// A connect() or bind() call failed (issue 11).
    CallFailed(CallFailure),
    /// `tcpstate kill` acted on a socket (issue 12): never from the kernel,
    /// from the kill's datagram to the recorder.
    Kill(crate::kill_log::KillRecord),
}

impl Item {
    /// When it happened (or, for `Lost`, when it was read), CLOCK_BOOTTIME.
    pub fn ts_boot_ns(&self) -> u64 {
        match self {
            Item::Transition(t) => t.ts_boot_ns,
            Item::Accepted(a) => a.ts_boot_ns,
            Item::ResetSent(r) => r.ts_boot_ns,
            Item::Lost { ts_boot_ns, .. } => *ts_boot_ns,
            Item::CallFailed(f) => f.ts_boot_ns,
            Item::Kill(k) => k.ts_boot_ns,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record is {got} bytes, expected {EVENT_SIZE}")]
    Length { got: usize },
    #[error("unknown record kind {0}")]
    Kind(u8),
    #[error("unknown TCP state {0}")]
    State(u8),
    #[error("unknown address family {0}")]
    Family(u16),
    #[error("a failed call's record has no errno")]
    Errno,
}

/// Decodes one ring-buffer record. Records longer than [`EVENT_SIZE`] are
/// rejected too: the ring buffer rounds sizes up to 8 bytes, and our record
/// is already a multiple of 8, so any other length means a mismatch.
pub fn decode(bytes: &[u8]) -> Result<Item, DecodeError> {
    if bytes.len() != EVENT_SIZE {
        return Err(DecodeError::Length { got: bytes.len() });
    }
    // SAFETY: the length was checked above; `Event` is plain old data made of
    // integers and byte arrays, so every bit pattern is a valid value, and
    // `read_unaligned` makes no alignment assumption about `bytes`.
    let event: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) };
    decode_event(&event)
}

pub fn decode_event(event: &Event) -> Result<Item, DecodeError> {
    match event.kind {
        kind::TRANSITION => Ok(Item::Transition(transition(event)?)),
        kind::OWNER_ACCEPT => Ok(Item::Accepted(OwnerSeen {
            ts_boot_ns: event.ts_boot_ns,
            skaddr: event.skaddr,
            task: task(event),
            cgroup_id: event.cgroup_id,
            netns: event.netns,
        })),
        kind::RESET_SENT => Ok(Item::ResetSent(ResetSent {
            ts_boot_ns: event.ts_boot_ns,
            sender: event.skaddr,
            sender_state: match event.oldstate {
                0 => None,
                raw => Some(state(raw)?),
            },
            netns: event.netns,
            segment_src: Endpoint::new(ip_from_wire(event.saddr), event.sport),
            segment_dst: Endpoint::new(ip_from_wire(event.daddr), event.dport),
        })),
        tcpstate_common::KIND_CONNECT_FAILED | tcpstate_common::KIND_BIND_FAILED => {
            Ok(Item::CallFailed(call_failure(event)?))
        }
        other => Err(DecodeError::Kind(other)),
    }
}

fn state(raw: u8) -> Result<TcpState, DecodeError> {
    TcpState::from_raw(raw).ok_or(DecodeError::State(raw))
}

fn task(event: &Event) -> Task {
    Task {
        tgid: event.tgid,
        pid: event.pid,
        comm: Comm(event.comm),
    }
}

fn transition(event: &Event) -> Result<Transition, DecodeError> {
    Ok(Transition {
        ts_boot_ns: event.ts_boot_ns,
        skaddr: event.skaddr,
        family: Family::from_raw(event.family).ok_or(DecodeError::Family(event.family))?,
        local: Endpoint::new(ip_from_wire(event.saddr), event.sport),
        remote: Endpoint::new(ip_from_wire(event.daddr), event.dport),
        old: state(event.oldstate)?,
        new: state(event.newstate)?,
        task: task(event),
        cgroup_id: event.cgroup_id,
        netns: event.netns,
        cpu: event.cpu,
    })
}

/// Encodes a transition back into a wire record (recordings and tests).
pub fn encode(t: &Transition) -> Event {
    let mut event = Event::zeroed();
    event.kind = kind::TRANSITION;
    event.ts_boot_ns = t.ts_boot_ns;
    event.skaddr = t.skaddr;
    event.family = t.family.raw();
    event.saddr = wire_ip(t.local.ip);
    event.daddr = wire_ip(t.remote.ip);
    event.sport = t.local.port;
    event.dport = t.remote.port;
    event.oldstate = t.old as u8;
    event.newstate = t.new as u8;
    event.tgid = t.task.tgid;
    event.pid = t.task.pid;
    event.comm = t.task.comm.0;
    event.cgroup_id = t.cgroup_id;
    event.netns = t.netns;
    event.cpu = t.cpu;
    event
}

fn wire_ip(ip: std::net::IpAddr) -> [u8; 16] {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

/// The bytes of a wire record, as the kernel writes them.
pub fn event_bytes(event: &Event) -> [u8; EVENT_SIZE] {
    let mut out = [0u8; EVENT_SIZE];
    // SAFETY: `Event` is `repr(C)` plain old data of exactly EVENT_SIZE bytes
    // with explicit padding fields, so all of its bytes are initialised.
    unsafe { std::ptr::write_unaligned(out.as_mut_ptr().cast::<Event>(), *event) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn sample() -> Transition {
        Transition {
            ts_boot_ns: 123_456_789,
            skaddr: 0xffff_8880_1234_5678,
            family: Family::Ipv4,
            local: Endpoint::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 41000),
            remote: Endpoint::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 8080),
            old: TcpState::SynSent,
            new: TcpState::Established,
            task: Task {
                tgid: 42,
                pid: 43,
                comm: Comm::from_str_lossy("curl"),
            },
            cgroup_id: 7,
            netns: 4026531840,
            cpu: 1,
        }
    }

    #[test]
    fn round_trips_through_bytes() {
        let t = sample();
        let bytes = event_bytes(&encode(&t));
        assert_eq!(decode(&bytes), Ok(Item::Transition(t)));
    }

    #[test]
    fn decodes_at_any_alignment() {
        let t = sample();
        let mut buf = [0u8; EVENT_SIZE + 3];
        buf[3..].copy_from_slice(&event_bytes(&encode(&t)));
        assert_eq!(decode(&buf[3..]), Ok(Item::Transition(t)));
    }

    #[test]
    fn decodes_accept_records() {
        let mut event = Event::zeroed();
        event.kind = kind::OWNER_ACCEPT;
        event.skaddr = 0xffff_0000_dead_beef;
        event.tgid = 10;
        event.pid = 11;
        event.comm = Comm::from_str_lossy("nginx").0;
        event.ts_boot_ns = 5;
        // Fields that do not apply (states, family) are ignored, even garbage.
        event.oldstate = 200;
        event.family = 99;
        let Ok(Item::Accepted(seen)) = decode(&event_bytes(&event)) else {
            panic!("not an accept record");
        };
        assert_eq!(
            (seen.skaddr, seen.task.tgid, seen.task.pid),
            (0xffff_0000_dead_beef, 10, 11)
        );
        assert_eq!(seen.task.comm.as_string(), "nginx");
    }

    #[test]
    fn decodes_reset_records() {
        let mut event = Event::zeroed();
        event.kind = kind::RESET_SENT;
        event.saddr = std::net::Ipv4Addr::new(127, 0, 0, 1)
            .to_ipv6_mapped()
            .octets();
        event.daddr = std::net::Ipv4Addr::new(127, 0, 0, 2)
            .to_ipv6_mapped()
            .octets();
        event.sport = 40000;
        event.dport = 80;
        event.oldstate = TcpState::Listen as u8;
        let Ok(Item::ResetSent(reset)) = decode(&event_bytes(&event)) else {
            panic!("not a reset record");
        };
        assert_eq!(reset.segment_src.to_string(), "127.0.0.1:40000");
        assert_eq!(reset.segment_dst.to_string(), "127.0.0.2:80");
        assert_eq!(reset.sender_state, Some(TcpState::Listen));
        event.oldstate = 0;
        let Ok(Item::ResetSent(reset)) = decode(&event_bytes(&event)) else {
            panic!("not a reset record");
        };
        assert_eq!(reset.sender_state, None);
        event.oldstate = 99;
        assert_eq!(decode(&event_bytes(&event)), Err(DecodeError::State(99)));
    }

    #[test]
    fn ipv6_round_trips() {
        let mut t = sample();
        t.family = Family::Ipv6;
        t.local = Endpoint::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 1);
        t.remote = Endpoint::new(IpAddr::V6("2001:db8::2".parse().unwrap()), 2);
        assert_eq!(decode(&event_bytes(&encode(&t))), Ok(Item::Transition(t)));
    }

    #[test]
    fn rejects_short_long_and_empty_buffers() {
        let bytes = event_bytes(&encode(&sample()));
        assert_eq!(decode(&[]), Err(DecodeError::Length { got: 0 }));
        assert_eq!(
            decode(&bytes[..EVENT_SIZE - 1]),
            Err(DecodeError::Length {
                got: EVENT_SIZE - 1
            })
        );
        let mut long = bytes.to_vec();
        long.extend_from_slice(&[0; 8]);
        assert_eq!(
            decode(&long),
            Err(DecodeError::Length {
                got: EVENT_SIZE + 8
            })
        );
    }

    #[test]
    fn rejects_bad_kind_state_and_family() {
        let mut event = encode(&sample());
        event.kind = 0;
        assert_eq!(decode(&event_bytes(&event)), Err(DecodeError::Kind(0)));

        let mut event = encode(&sample());
        event.newstate = 13;
        assert_eq!(decode(&event_bytes(&event)), Err(DecodeError::State(13)));

        let mut event = encode(&sample());
        event.oldstate = 0;
        assert_eq!(decode(&event_bytes(&event)), Err(DecodeError::State(0)));

        let mut event = encode(&sample());
        event.family = 1;
        assert_eq!(decode(&event_bytes(&event)), Err(DecodeError::Family(1)));
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic generator: every byte pattern must decode to a
        // value or an error, never a panic.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut ok = 0;
        for _ in 0..20_000 {
            let mut buf = [0u8; EVENT_SIZE];
            for b in buf.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            // Make some of them plausible so the valid path is exercised too.
            if state.is_multiple_of(4) {
                use std::mem::offset_of;
                buf[offset_of!(Event, kind)] = kind::TRANSITION;
                buf[offset_of!(Event, oldstate)] = (state % 12 + 1) as u8;
                buf[offset_of!(Event, newstate)] = (state % 11 + 1) as u8;
                let family = offset_of!(Event, family);
                buf[family..family + 2].copy_from_slice(&tcpstate_common::AF_INET6.to_ne_bytes());
            }
            if decode(&buf).is_ok() {
                ok += 1;
            }
        }
        assert!(ok > 0, "no plausible record decoded");
    }

    #[test]
    fn comm_handles_full_width_and_invalid_utf8() {
        let full = Comm(*b"0123456789abcdef");
        assert_eq!(full.as_string(), "0123456789abcdef");
        let mut raw = [0u8; 16];
        raw[..3].copy_from_slice(&[0x66, 0xff, 0x67]);
        assert_eq!(Comm(raw).as_string(), "f\u{fffd}g");
        assert_eq!(
            Comm::from_str_lossy("a-very-long-process-name").as_string(),
            "a-very-long-pro"
        );
    }
}

// ---- Issue 11 (ports): failed connect() and bind() calls ----

/// Which call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailedCall {
    Connect,
    Bind,
}

impl FailedCall {
    pub fn name(self) -> &'static str {
        match self {
            FailedCall::Connect => "connect",
            FailedCall::Bind => "bind",
        }
    }
}

/// A connect() or bind() on a TCP socket that returned an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallFailure {
    pub ts_boot_ns: u64,
    pub call: FailedCall,
    /// Positive errno (EADDRNOTAVAIL is 99).
    pub errno: u8,
    /// The caller.
    pub task: Task,
    pub cgroup_id: u64,
    /// The socket's network namespace, 0 when unknown.
    pub netns: u32,
    pub skaddr: u64,
    pub family: Family,
    /// The address passed: the destination (connect) or the address asked
    /// for (bind).
    pub addr: Endpoint,
}

fn call_failure(event: &Event) -> Result<CallFailure, DecodeError> {
    let call = if event.kind == tcpstate_common::KIND_BIND_FAILED {
        FailedCall::Bind
    } else {
        FailedCall::Connect
    };
    let addr = match call {
        FailedCall::Bind => Endpoint::new(ip_from_wire(event.saddr), event.sport),
        FailedCall::Connect => Endpoint::new(ip_from_wire(event.daddr), event.dport),
    };
    if event.oldstate == 0 {
        return Err(DecodeError::Errno);
    }
    Ok(CallFailure {
        ts_boot_ns: event.ts_boot_ns,
        call,
        errno: event.oldstate,
        task: task(event),
        cgroup_id: event.cgroup_id,
        netns: event.netns,
        skaddr: event.skaddr,
        family: Family::from_raw(event.family).ok_or(DecodeError::Family(event.family))?,
        addr,
    })
}

/// Encodes a failed call back into a wire record (tests).
pub fn encode_failure(f: &CallFailure) -> Event {
    let mut event = Event::zeroed();
    event.kind = match f.call {
        FailedCall::Connect => tcpstate_common::KIND_CONNECT_FAILED,
        FailedCall::Bind => tcpstate_common::KIND_BIND_FAILED,
    };
    event.ts_boot_ns = f.ts_boot_ns;
    event.skaddr = f.skaddr;
    event.family = f.family.raw();
    match f.call {
        FailedCall::Connect => {
            event.daddr = wire_ip(f.addr.ip);
            event.dport = f.addr.port;
        }
        FailedCall::Bind => {
            event.saddr = wire_ip(f.addr.ip);
            event.sport = f.addr.port;
        }
    }
    event.oldstate = f.errno;
    event.tgid = f.task.tgid;
    event.pid = f.task.pid;
    event.comm = f.task.comm.0;
    event.cgroup_id = f.cgroup_id;
    event.netns = f.netns;
    event
}

/// The name of an errno connect() or bind() returns; "other" for the rest,
/// so that labels built from it stay few.
pub fn errno_name(errno: u8) -> &'static str {
    match errno {
        1 => "EPERM",
        11 => "EAGAIN",
        13 => "EACCES",
        22 => "EINVAL",
        97 => "EAFNOSUPPORT",
        98 => "EADDRINUSE",
        99 => "EADDRNOTAVAIL",
        101 => "ENETUNREACH",
        103 => "ECONNABORTED",
        104 => "ECONNRESET",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        113 => "EHOSTUNREACH",
        _ => "other",
    }
}

#[cfg(test)]
mod call_failure_tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn failure(call: FailedCall, ip: IpAddr) -> CallFailure {
        CallFailure {
            ts_boot_ns: 123,
            call,
            errno: 99,
            task: Task {
                tgid: 10,
                pid: 11,
                comm: Comm::from_str_lossy("client"),
            },
            cgroup_id: 5,
            netns: 4026531840,
            skaddr: 0xffff_8880_0000_1000,
            family: if ip.is_ipv4() {
                Family::Ipv4
            } else {
                Family::Ipv6
            },
            addr: Endpoint::new(ip, 8080),
        }
    }

    fn bytes(event: &Event) -> Vec<u8> {
        // SAFETY: `Event` is plain old data of EVENT_SIZE bytes.
        unsafe { std::slice::from_raw_parts((event as *const Event).cast::<u8>(), EVENT_SIZE) }
            .to_vec()
    }

    #[test]
    fn failed_calls_decode_as_encoded() {
        for call in [FailedCall::Connect, FailedCall::Bind] {
            for ip in [
                IpAddr::V4(Ipv4Addr::new(10, 200, 0, 2)),
                IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
            ] {
                let f = failure(call, ip);
                assert_eq!(decode(&bytes(&encode_failure(&f))), Ok(Item::CallFailed(f)));
            }
        }
    }

    #[test]
    fn hostile_failure_records_are_refused() {
        let f = failure(FailedCall::Connect, IpAddr::V4(Ipv4Addr::LOCALHOST));
        let good = bytes(&encode_failure(&f));
        assert_eq!(decode(&good[..50]), Err(DecodeError::Length { got: 50 }));
        let mut long = good.clone();
        long.extend_from_slice(&[0; 8]);
        assert!(matches!(decode(&long), Err(DecodeError::Length { .. })));
        let mut no_errno = encode_failure(&f);
        no_errno.oldstate = 0;
        assert_eq!(decode(&bytes(&no_errno)), Err(DecodeError::Errno));
        let mut family = encode_failure(&f);
        family.family = 1;
        assert_eq!(decode(&bytes(&family)), Err(DecodeError::Family(1)));
        let mut kind = encode_failure(&f);
        kind.kind = 9;
        assert_eq!(decode(&bytes(&kind)), Err(DecodeError::Kind(9)));
    }

    #[test]
    fn errno_names_are_bounded() {
        assert_eq!(errno_name(99), "EADDRNOTAVAIL");
        assert_eq!(errno_name(111), "ECONNREFUSED");
        assert_eq!(errno_name(200), "other");
    }
}

//! The sock_diag netlink dump of TCP sockets: what `ss -tan` asks the kernel.
//!
//! One `SOCK_DIAG_BY_FAMILY` dump per address family, over a raw
//! `NETLINK_SOCK_DIAG` socket, in the network namespace of the caller. The
//! replies come from the kernel but are still parsed as untrusted bytes:
//! every length is checked and every field is copied out of the buffer with
//! `from_ne_bytes`, so short or garbled input is an error, never a panic.
use super::{tcp_info::TcpInfo, SnapshotError};
use crate::{
    addr::{ip_from_wire, Endpoint},
    tcp::Family,
};
use std::{
    io,
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicU32, Ordering},
};

/// `NETLINK_SOCK_DIAG` (`include/uapi/linux/netlink.h`).
const NETLINK_SOCK_DIAG: libc::c_int = 4;
/// `SOCK_DIAG_BY_FAMILY` (`include/uapi/linux/sock_diag.h`).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP_INTR: u16 = 0x10;
/// `NLM_F_ROOT | NLM_F_MATCH`.
const NLM_F_DUMP: u16 = 0x300;
/// `sizeof(struct nlmsghdr)`.
const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct inet_diag_req_v2)`.
const REQ_LEN: usize = 56;
/// `sizeof(struct inet_diag_msg)`.
pub(super) const DIAG_MSG_LEN: usize = 72;
/// `idiag_ext` bit asking for `INET_DIAG_INFO` (attribute 2): `1 << (2 - 1)`.
const EXT_INFO: u8 = 1 << (INET_DIAG_INFO - 1);
/// The attribute carrying `struct tcp_info`.
const INET_DIAG_INFO: u16 = 2;
/// `sizeof(struct rtattr)`.
const RTA_HDRLEN: usize = 4;
/// Every state bit, TIME_WAIT and NEW_SYN_RECV included.
const ALL_STATES: u32 = 0xffff_ffff;
/// The kernel sends dumps in chunks of at most 32 KiB; twice that leaves
/// room, and a datagram longer than the buffer is detected anyway.
const RECV_BUF_LEN: usize = 64 * 1024;
/// A dump that stalls this long is reported rather than waited for forever.
const RECV_TIMEOUT_S: libc::time_t = 5;

/// One TCP socket as sock_diag reports it (`struct inet_diag_msg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiagSocket {
    pub family: Family,
    /// The raw `idiag_state`, not yet checked against [`TcpState`](crate::tcp::TcpState).
    pub state: u8,
    /// `idiag_timer`: 0 none, 1 retransmit (or SYN-ACK for a request
    /// socket), 2 keepalive, 3 TIME_WAIT, 4 zero-window probe.
    pub timer: u8,
    /// `idiag_retrans`: retransmits (or keepalive probes) so far.
    pub retrans: u8,
    pub local: Endpoint,
    pub remote: Endpoint,
    /// Interface the socket is bound to, 0 if none.
    pub ifindex: u32,
    /// The kernel's socket cookie (`sock_gen_cookie`), unique per socket
    /// for the life of the boot. A TIME_WAIT socket keeps its full
    /// socket's cookie.
    pub cookie: u64,
    /// Milliseconds until the timer in `timer` fires, 0 without a timer.
    pub expires_ms: u32,
    /// LISTEN: connections waiting for accept(); others: unread bytes.
    pub rqueue: u32,
    /// LISTEN: the backlog; others: unsent or unacknowledged bytes.
    pub wqueue: u32,
    pub uid: u32,
    /// Inode of the socket in sockfs (what `/proc/PID/fd/N` links to), 0
    /// when no file refers to it (TIME_WAIT, request and orphaned sockets).
    pub inode: u32,
    /// The kernel's `struct tcp_info`, when the dump asked for it
    /// ([`dump_with_info`]) and the kernel sent it.
    pub tcp_info: Option<TcpInfo>,
}

/// What a dump passed over without failing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpStats {
    /// Messages skipped: foreign sender or sequence number, unknown message
    /// type, unknown address family.
    pub skipped_messages: u32,
    /// The kernel flagged the dump as interrupted (`NLM_F_DUMP_INTR`): the
    /// socket tables changed under it, so sockets may be missing or doubled.
    pub interrupted: bool,
}

/// Whether a reply chunk finished the dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Progress {
    More,
    Done,
}

/// Dumps the TCP sockets of one family in the current network namespace,
/// appending them to `out`.
pub(super) fn dump(
    family: Family,
    out: &mut Vec<DiagSocket>,
    stats: &mut DumpStats,
) -> Result<(), SnapshotError> {
    dump_extended(family, 0, out, stats)
}

/// Like [`dump`], with each socket's `struct tcp_info` (`INET_DIAG_INFO`),
/// for the commands that judge connections by the kernel's counters.
pub fn dump_with_info(
    family: Family,
    out: &mut Vec<DiagSocket>,
    stats: &mut DumpStats,
) -> Result<(), SnapshotError> {
    dump_extended(family, EXT_INFO, out, stats)
}

fn dump_extended(
    family: Family,
    ext: u8,
    out: &mut Vec<DiagSocket>,
    stats: &mut DumpStats,
) -> Result<(), SnapshotError> {
    static NEXT_SEQ: AtomicU32 = AtomicU32::new(1);
    let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
    let sock = open()?;
    let mut request = request(family, seq);
    request[NLMSG_HDRLEN + 2] = ext;
    send(&sock, &request).map_err(|error| SnapshotError::Send {
        family: family.name(),
        error,
    })?;
    let mut buf = vec![0u8; RECV_BUF_LEN];
    loop {
        let len = recv(&sock, &mut buf).map_err(|error| SnapshotError::Recv {
            family: family.name(),
            error,
        })?;
        let Some(len) = len else {
            // Not from the kernel: someone else wrote to our port.
            stats.skipped_messages += 1;
            continue;
        };
        if len == 0 {
            return Err(malformed(family, "the reply ended before NLMSG_DONE"));
        }
        let Some(chunk) = buf.get(..len) else {
            return Err(malformed(
                family,
                format!("a {len}-byte datagram did not fit the {RECV_BUF_LEN}-byte buffer"),
            ));
        };
        if parse_chunk(chunk, seq, family, out, stats)? == Progress::Done {
            return Ok(());
        }
    }
}

fn malformed(family: Family, what: impl Into<String>) -> SnapshotError {
    SnapshotError::Malformed {
        family: family.name(),
        what: what.into(),
    }
}

pub(crate) fn open() -> Result<OwnedFd, SnapshotError> {
    // SAFETY: plain system call; the descriptor it returns is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(SnapshotError::Socket(io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval {
        tv_sec: RECV_TIMEOUT_S,
        tv_usec: 0,
    };
    // SAFETY: `timeout` is a valid timeval of the size passed. A failure only
    // loses the timeout, so it is ignored.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    Ok(sock)
}

fn kernel_address() -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain integers; all zeroes is valid (pid 0 is
    // the kernel, groups 0 is unicast).
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr
}

pub(crate) fn send(sock: &OwnedFd, request: &[u8]) -> io::Result<()> {
    let addr = kernel_address();
    loop {
        // SAFETY: the buffer and address are valid for the lengths passed.
        let sent = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                request.as_ptr().cast(),
                request.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent >= 0 {
            return if sent as usize == request.len() {
                Ok(())
            } else {
                Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "short netlink send",
                ))
            };
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// One datagram: its full length (which may exceed `buf`: `MSG_TRUNC`), or
/// None if it did not come from the kernel.
pub(crate) fn recv(sock: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        let mut from = kernel_address();
        let mut from_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: the buffer and address are valid and writable for the
        // lengths passed.
        let got = unsafe {
            libc::recvfrom(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
                (&mut from as *mut libc::sockaddr_nl).cast(),
                &mut from_len,
            )
        };
        if got >= 0 {
            return Ok((from.nl_pid == 0).then_some(got as usize));
        }
        let error = io::Error::last_os_error();
        match error.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no reply from the kernel within {RECV_TIMEOUT_S} s"),
                ))
            }
            _ => return Err(error),
        }
    }
}

/// The dump request: `struct nlmsghdr` + `struct inet_diag_req_v2` for TCP,
/// every state, no extensions, no socket filter.
pub(super) fn request(family: Family, seq: u32) -> [u8; NLMSG_HDRLEN + REQ_LEN] {
    let mut msg = [0u8; NLMSG_HDRLEN + REQ_LEN];
    msg[0..4].copy_from_slice(&((NLMSG_HDRLEN + REQ_LEN) as u32).to_ne_bytes());
    msg[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    msg[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel fills in our port.
    let req = &mut msg[NLMSG_HDRLEN..];
    req[0] = family.raw() as u8; // sdiag_family
    req[1] = libc::IPPROTO_TCP as u8; // sdiag_protocol
    req[2] = 0; // idiag_ext
    req[3] = 0; // pad
    req[4..8].copy_from_slice(&ALL_STATES.to_ne_bytes());
    // id (struct inet_diag_sockid) stays zeroed: no filter.
    msg
}

fn u16_ne(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u16_be(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_ne(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn i32_ne(bytes: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn array16(bytes: &[u8], at: usize) -> Option<[u8; 16]> {
    bytes.get(at..at + 16)?.try_into().ok()
}

/// Parses one datagram of the reply to the dump with sequence number `seq`,
/// appending its sockets to `out`.
pub(super) fn parse_chunk(
    chunk: &[u8],
    seq: u32,
    family: Family,
    out: &mut Vec<DiagSocket>,
    stats: &mut DumpStats,
) -> Result<Progress, SnapshotError> {
    let mut rest = chunk;
    while !rest.is_empty() {
        let (Some(len), Some(kind), Some(flags), Some(msg_seq)) = (
            u32_ne(rest, 0),
            u16_ne(rest, 4),
            u16_ne(rest, 6),
            u32_ne(rest, 8),
        ) else {
            return Err(malformed(
                family,
                format!("{} trailing bytes are not a netlink header", rest.len()),
            ));
        };
        let len = len as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(malformed(
                family,
                format!(
                    "a netlink message claims {len} bytes with {} left",
                    rest.len()
                ),
            ));
        }
        let payload = &rest[NLMSG_HDRLEN..len];
        // NLMSG_ALIGN: messages start on 4-byte boundaries; the padding of
        // the last one may be missing.
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        if msg_seq != seq {
            stats.skipped_messages += 1;
            continue;
        }
        if flags & NLM_F_DUMP_INTR != 0 {
            stats.interrupted = true;
        }
        match kind {
            SOCK_DIAG_BY_FAMILY => match parse_diag_msg(payload) {
                Some(Ok(sock)) => out.push(sock),
                Some(Err(())) => stats.skipped_messages += 1,
                None => {
                    return Err(malformed(
                        family,
                        format!(
                            "an inet_diag_msg of {} bytes, expected at least {DIAG_MSG_LEN}",
                            payload.len()
                        ),
                    ))
                }
            },
            NLMSG_DONE => {
                // Since Linux 4.x the payload is the dump's final status.
                if let Some(status) = i32_ne(payload, 0).filter(|&s| s < 0) {
                    return Err(kernel_error(family, status));
                }
                return Ok(Progress::Done);
            }
            NLMSG_ERROR => {
                let Some(status) = i32_ne(payload, 0) else {
                    return Err(malformed(family, "an NLMSG_ERROR without an error code"));
                };
                if status != 0 {
                    return Err(kernel_error(family, status));
                }
                // An acknowledgement: not an error.
            }
            NLMSG_OVERRUN => {
                return Err(malformed(family, "the kernel reported an overrun"));
            }
            NLMSG_NOOP => {}
            _ => stats.skipped_messages += 1,
        }
    }
    Ok(Progress::More)
}

fn kernel_error(family: Family, status: i32) -> SnapshotError {
    SnapshotError::Kernel {
        family: family.name(),
        error: io::Error::from_raw_os_error(status.checked_neg().unwrap_or(i32::MAX)),
    }
}

/// `struct inet_diag_msg`. None if too short; `Err` for a socket of an
/// address family other than IPv4 and IPv6.
fn parse_diag_msg(p: &[u8]) -> Option<Result<DiagSocket, ()>> {
    if p.len() < DIAG_MSG_LEN {
        return None;
    }
    let raw_family = *p.first()?;
    let Some(family) = Family::from_raw(u16::from(raw_family)) else {
        return Some(Err(()));
    };
    // struct inet_diag_sockid at offset 4.
    let ip = |at| {
        let bytes = array16(p, at)?;
        Some(match family {
            Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
            Family::Ipv6 => ip_from_wire(bytes),
        })
    };
    let cookie_lo = u32_ne(p, 44)?;
    let cookie_hi = u32_ne(p, 48)?;
    Some(Ok(DiagSocket {
        family,
        state: *p.get(1)?,
        timer: *p.get(2)?,
        retrans: *p.get(3)?,
        local: Endpoint::new(ip(8)?, u16_be(p, 4)?),
        remote: Endpoint::new(ip(24)?, u16_be(p, 6)?),
        ifindex: u32_ne(p, 40)?,
        cookie: u64::from(cookie_lo) | (u64::from(cookie_hi) << 32),
        expires_ms: u32_ne(p, 52)?,
        rqueue: u32_ne(p, 56)?,
        wqueue: u32_ne(p, 60)?,
        uid: u32_ne(p, 64)?,
        inode: u32_ne(p, 68)?,
        tcp_info: find_info(p.get(DIAG_MSG_LEN..).unwrap_or(&[])),
    }))
}

/// The `INET_DIAG_INFO` attribute among those following the message, if
/// present and well formed; malformed attributes end the search.
fn find_info(mut attrs: &[u8]) -> Option<TcpInfo> {
    while attrs.len() >= RTA_HDRLEN {
        let len = usize::from(u16_ne(attrs, 0)?);
        let kind = u16_ne(attrs, 2)?;
        if len < RTA_HDRLEN || len > attrs.len() {
            return None;
        }
        if kind == INET_DIAG_INFO {
            return TcpInfo::decode(&attrs[RTA_HDRLEN..len]);
        }
        attrs = attrs.get(len.next_multiple_of(4)..)?;
    }
    None
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub const SEQ: u32 = 7;

    /// A netlink message, padded to 4 bytes.
    pub fn nlmsg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut msg = Vec::new();
        msg.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&1234u32.to_ne_bytes());
        msg.extend_from_slice(payload);
        while msg.len() % 4 != 0 {
            msg.push(0);
        }
        msg
    }

    /// `struct inet_diag_msg` for `sock`, as the kernel lays it out.
    pub fn diag_msg(sock: &DiagSocket) -> Vec<u8> {
        let wire = |ip: IpAddr| match ip {
            IpAddr::V4(v4) if sock.family == Family::Ipv4 => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&v4.octets());
                b
            }
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        let mut p = vec![
            sock.family.raw() as u8,
            sock.state,
            sock.timer,
            sock.retrans,
        ];
        p.extend_from_slice(&sock.local.port.to_be_bytes());
        p.extend_from_slice(&sock.remote.port.to_be_bytes());
        p.extend_from_slice(&wire(sock.local.ip));
        p.extend_from_slice(&wire(sock.remote.ip));
        p.extend_from_slice(&sock.ifindex.to_ne_bytes());
        p.extend_from_slice(&(sock.cookie as u32).to_ne_bytes());
        p.extend_from_slice(&((sock.cookie >> 32) as u32).to_ne_bytes());
        for v in [
            sock.expires_ms,
            sock.rqueue,
            sock.wqueue,
            sock.uid,
            sock.inode,
        ] {
            p.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(p.len(), DIAG_MSG_LEN);
        p
    }

    pub fn sock(state: u8, local: &str, remote: &str) -> DiagSocket {
        let local: std::net::SocketAddr = local.parse().unwrap();
        let remote: std::net::SocketAddr = remote.parse().unwrap();
        let family = if local.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        };
        DiagSocket {
            family,
            state,
            timer: 0,
            retrans: 0,
            local: Endpoint::new(crate::addr::ip_from_wire(v6(local.ip())), local.port()),
            remote: Endpoint::new(crate::addr::ip_from_wire(v6(remote.ip())), remote.port()),
            ifindex: 0,
            cookie: 0x1_0000_0000 + u64::from(local.port()),
            expires_ms: 0,
            rqueue: 0,
            wqueue: 0,
            uid: 1000,
            inode: 500 + u32::from(local.port()),
            tcp_info: None,
        }
    }

    fn v6(ip: IpAddr) -> [u8; 16] {
        match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        }
    }

    fn parse(chunk: &[u8]) -> (Result<Progress, SnapshotError>, Vec<DiagSocket>, DumpStats) {
        let mut out = Vec::new();
        let mut stats = DumpStats::default();
        let r = parse_chunk(chunk, SEQ, Family::Ipv4, &mut out, &mut stats);
        (r, out, stats)
    }

    #[test]
    fn request_matches_the_kernel_layout() {
        let r = request(Family::Ipv6, 9);
        assert_eq!(r.len(), 72);
        assert_eq!(u32_ne(&r, 0), Some(72));
        assert_eq!(u16_ne(&r, 4), Some(20));
        assert_eq!(u16_ne(&r, 6), Some(0x301));
        assert_eq!(u32_ne(&r, 8), Some(9));
        assert_eq!(&r[16..20], &[10, 6, 0, 0]);
        assert_eq!(u32_ne(&r, 20), Some(u32::MAX));
        assert!(r[24..].iter().all(|&b| b == 0));
    }

    #[test]
    fn parses_a_multi_message_dump() {
        let listener = sock(10, "0.0.0.0:80", "0.0.0.0:0");
        let mut v6 = sock(1, "[2001:db8::1]:443", "[2001:db8::2]:50000");
        v6.rqueue = 17;
        let mut mapped = sock(8, "[::ffff:10.0.0.1]:22", "[::ffff:10.0.0.2]:40000");
        mapped.cookie = 0xdead_beef_0bad_f00d;
        let mut tw = sock(6, "10.0.0.1:40001", "10.0.0.9:80");
        (tw.timer, tw.expires_ms, tw.inode) = (3, 59_123, 0);
        let mut first = Vec::new();
        for s in [&listener, &v6] {
            first.extend(nlmsg(SOCK_DIAG_BY_FAMILY, 2, SEQ, &diag_msg(s)));
        }
        let (r, out, stats) = parse(&first);
        assert_eq!(r.unwrap(), Progress::More);
        assert_eq!(out, vec![listener, v6]);
        assert_eq!(stats, DumpStats::default());

        let mut second = Vec::new();
        for s in [&mapped, &tw] {
            second.extend(nlmsg(SOCK_DIAG_BY_FAMILY, 2, SEQ, &diag_msg(s)));
        }
        second.extend(nlmsg(NLMSG_NOOP, 2, SEQ, &[]));
        // A stale message of another dump and one of an unknown type.
        second.extend(nlmsg(SOCK_DIAG_BY_FAMILY, 2, SEQ + 1, &diag_msg(&tw)));
        second.extend(nlmsg(99, 2, SEQ, &[1, 2, 3]));
        second.extend(nlmsg(NLMSG_DONE, 2, SEQ, &0i32.to_ne_bytes()));
        // Anything after NLMSG_DONE is not looked at.
        second.extend([0xff; 5]);
        let (r, out, stats) = parse(&second);
        assert_eq!(r.unwrap(), Progress::Done);
        assert_eq!(out, vec![mapped, tw]);
        assert_eq!(out[0].local.ip, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(out[0].family, Family::Ipv6);
        assert_eq!(out[0].cookie, 0xdead_beef_0bad_f00d);
        assert_eq!(out[1].expires_ms, 59_123);
        assert_eq!(stats.skipped_messages, 2);
        assert!(!stats.interrupted);
    }

    #[test]
    fn done_without_payload_and_interrupted_dumps() {
        let (r, out, _) = parse(&nlmsg(NLMSG_DONE, 2, SEQ, &[]));
        assert_eq!(r.unwrap(), Progress::Done);
        assert!(out.is_empty());
        let s = sock(1, "1.2.3.4:5", "6.7.8.9:10");
        let chunk = nlmsg(SOCK_DIAG_BY_FAMILY, 2 | NLM_F_DUMP_INTR, SEQ, &diag_msg(&s));
        let (r, out, stats) = parse(&chunk);
        assert_eq!(r.unwrap(), Progress::More);
        assert_eq!(out.len(), 1);
        assert!(stats.interrupted);
    }

    #[test]
    fn tcp_info_attribute_is_decoded() {
        use crate::source::snapshot::tcp_info::TcpInfo;
        let s = sock(1, "1.2.3.4:5", "6.7.8.9:10");
        let info = TcpInfo {
            unacked: 3,
            last_ack_recv_ms: 4_000,
            total_retrans: 2,
            snd_wnd: Some(100),
            ..TcpInfo::default()
        };
        let attr = |kind: u16, body: &[u8]| {
            let mut a = ((RTA_HDRLEN + body.len()) as u16).to_ne_bytes().to_vec();
            a.extend_from_slice(&kind.to_ne_bytes());
            a.extend_from_slice(body);
            while !a.len().is_multiple_of(4) {
                a.push(0);
            }
            a
        };
        let mut msg = diag_msg(&s);
        // Another attribute first (INET_DIAG_MEMINFO), then the info.
        msg.extend(attr(1, &[0; 15]));
        msg.extend(attr(INET_DIAG_INFO, &info.encode(232)));
        let (r, out, _) = parse(&nlmsg(SOCK_DIAG_BY_FAMILY, 2, SEQ, &msg));
        assert_eq!(r.unwrap(), Progress::More);
        assert_eq!(out[0].tcp_info, Some(info));
        // A truncated or lying attribute is ignored, not an error.
        let mut bad = diag_msg(&s);
        bad.extend(attr(INET_DIAG_INFO, &info.encode(232)));
        bad[DIAG_MSG_LEN..DIAG_MSG_LEN + 2].copy_from_slice(&9999u16.to_ne_bytes());
        let (r, out, _) = parse(&nlmsg(SOCK_DIAG_BY_FAMILY, 2, SEQ, &bad));
        assert_eq!(r.unwrap(), Progress::More);
        assert_eq!(out[0].tcp_info, None);
        let mut short = diag_msg(&s);
        short.extend(attr(INET_DIAG_INFO, &[0; 50]));
        assert_eq!(
            parse(&nlmsg(SOCK_DIAG_BY_FAMILY, 2, SEQ, &short)).1[0].tcp_info,
            None
        );
    }

    #[test]
    fn unknown_family_is_skipped() {
        let mut msg = diag_msg(&sock(1, "1.2.3.4:5", "6.7.8.9:10"));
        msg[0] = 1; // AF_UNIX
        let (r, out, stats) = parse(&nlmsg(SOCK_DIAG_BY_FAMILY, 2, SEQ, &msg));
        assert_eq!(r.unwrap(), Progress::More);
        assert!(out.is_empty());
        assert_eq!(stats.skipped_messages, 1);
    }

    #[test]
    fn errors_from_the_kernel_are_reported() {
        let mut payload = (-libc::ENOENT).to_ne_bytes().to_vec();
        payload.extend_from_slice(&request(Family::Ipv4, SEQ)[..16]);
        let (r, _, _) = parse(&nlmsg(NLMSG_ERROR, 0, SEQ, &payload));
        let e = r.unwrap_err();
        assert!(matches!(&e, SnapshotError::Kernel { error, .. }
            if error.raw_os_error() == Some(libc::ENOENT)));
        let text = e.to_string();
        assert!(text.contains("ipv4") && text.contains("modprobe"), "{text}");

        // An acknowledgement (error 0) is not an error.
        let (r, _, _) = parse(&nlmsg(NLMSG_ERROR, 0, SEQ, &0i32.to_ne_bytes()));
        assert_eq!(r.unwrap(), Progress::More);
        // NLMSG_DONE carrying a failure.
        let (r, _, _) = parse(&nlmsg(NLMSG_DONE, 2, SEQ, &(-libc::EPERM).to_ne_bytes()));
        assert!(matches!(r, Err(SnapshotError::Kernel { .. })));
        // An error without its code, an overrun, an absurd errno.
        for chunk in [
            nlmsg(NLMSG_ERROR, 0, SEQ, &[1, 2]),
            nlmsg(NLMSG_OVERRUN, 0, SEQ, &[]),
        ] {
            assert!(matches!(
                parse(&chunk).0,
                Err(SnapshotError::Malformed { .. })
            ));
        }
        let (r, _, _) = parse(&nlmsg(NLMSG_ERROR, 0, SEQ, &i32::MIN.to_ne_bytes()));
        assert!(r.is_err());
    }

    #[test]
    fn truncated_messages_are_errors() {
        let s = sock(1, "1.2.3.4:5", "6.7.8.9:10");
        let full = nlmsg(SOCK_DIAG_BY_FAMILY, 2, SEQ, &diag_msg(&s));
        for cut in 1..full.len() {
            let (r, out, _) = parse(&full[..cut]);
            assert!(
                matches!(r, Err(SnapshotError::Malformed { .. })),
                "cut at {cut}"
            );
            assert!(out.is_empty());
        }
        // A header whose length is consistent but whose payload is short.
        let short = nlmsg(SOCK_DIAG_BY_FAMILY, 2, SEQ, &diag_msg(&s)[..40]);
        let e = parse(&short).0.unwrap_err().to_string();
        assert!(e.contains("inet_diag_msg of 40 bytes"), "{e}");
        // A length below the header size would loop forever if accepted.
        let mut zero = full.clone();
        zero[..4].copy_from_slice(&0u32.to_ne_bytes());
        assert!(parse(&zero).0.is_err());
        // An empty datagram is simply "more to come".
        assert_eq!(parse(&[]).0.unwrap(), Progress::More);
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut valid = Vec::new();
        for port in 1..4 {
            let s = sock(1, &format!("10.0.0.1:{port}"), "10.0.0.2:80");
            valid.extend(nlmsg(SOCK_DIAG_BY_FAMILY, 2, SEQ, &diag_msg(&s)));
        }
        valid.extend(nlmsg(NLMSG_DONE, 2, SEQ, &0i32.to_ne_bytes()));
        for round in 0..20_000 {
            let mut buf: Vec<u8> = if round % 2 == 0 {
                let len = (next() % 300) as usize;
                (0..len).map(|_| next() as u8).collect()
            } else {
                // Mutations of a valid dump: flipped bytes and truncation.
                let mut b = valid.clone();
                for _ in 0..(next() % 4 + 1) {
                    let at = (next() as usize) % b.len();
                    b[at] = next() as u8;
                }
                b.truncate((next() as usize) % (b.len() + 1));
                b
            };
            if round % 7 == 0 && buf.len() >= 12 {
                // Plausible headers get the parser further.
                let len = (next() as usize % (buf.len() + 8)) as u32;
                buf[..4].copy_from_slice(&len.to_ne_bytes());
                buf[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
                buf[8..12].copy_from_slice(&SEQ.to_ne_bytes());
            }
            let mut out = Vec::new();
            let mut stats = DumpStats::default();
            let _ = parse_chunk(&buf, SEQ, Family::Ipv6, &mut out, &mut stats);
            assert!(out.len() <= buf.len() / (NLMSG_HDRLEN + DIAG_MSG_LEN));
        }
    }
}

//! Ending one socket with the kernel's `SOCK_DESTROY` sock_diag request (what
//! `ss -K` sends): the kernel aborts the connection as if a reset arrived
//! (`tcp_abort`, error ECONNABORTED for the process) and frees it once no
//! file refers to it any more.
//!
//! The request names the socket exactly (family, addresses, ports, bound
//! interface and the socket cookie from the dump), so a socket that was
//! replaced by another with the same 4-tuple is not touched: the kernel
//! answers ENOENT. It acts in the network namespace the netlink socket was
//! created in, and needs CAP_NET_ADMIN there and a kernel built with
//! `CONFIG_INET_DIAG_DESTROY`.
use super::{diag, diag::DiagSocket, SnapshotError};
use crate::tcp::Family;
use std::{
    io,
    net::IpAddr,
    os::fd::OwnedFd,
    sync::atomic::{AtomicU32, Ordering},
};

/// `SOCK_DESTROY` (`include/uapi/linux/sock_diag.h`).
const SOCK_DESTROY: u16 = 21;
const NLMSG_ERROR: u16 = 2;
/// `NLM_F_REQUEST | NLM_F_ACK`: the kernel always answers with an error
/// message, 0 on success.
const FLAGS: u16 = 0x1 | 0x4;
const NLMSG_HDRLEN: usize = 16;
const REQ_LEN: usize = 56;
const RECV_BUF_LEN: usize = 8 * 1024;

/// What the kernel did with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestroyOutcome {
    Destroyed,
    /// No such socket any more (closed since the dump, or its cookie
    /// differs: another connection took the 4-tuple).
    AlreadyGone,
    /// The kernel has no `SOCK_DESTROY` (built without
    /// `CONFIG_INET_DIAG_DESTROY`).
    Unsupported,
    /// Refused with this errno (EPERM: no CAP_NET_ADMIN).
    Refused(i32),
}

impl DestroyOutcome {
    /// From the errno of the kernel's answer (0: done).
    pub fn from_errno(errno: i32) -> DestroyOutcome {
        match errno {
            0 => DestroyOutcome::Destroyed,
            libc::ENOENT => DestroyOutcome::AlreadyGone,
            libc::EOPNOTSUPP => DestroyOutcome::Unsupported,
            other => DestroyOutcome::Refused(other),
        }
    }
}

/// A netlink socket for destroy requests, in the namespace of the thread
/// that opened it.
pub struct Destroyer {
    sock: OwnedFd,
}

impl Destroyer {
    pub fn open() -> Result<Destroyer, SnapshotError> {
        Ok(Destroyer {
            sock: diag::open()?,
        })
    }

    /// Asks the kernel to destroy `target`; Err only when the request
    /// could not be sent or answered.
    pub fn destroy(&self, target: &DiagSocket) -> io::Result<DestroyOutcome> {
        static NEXT_SEQ: AtomicU32 = AtomicU32::new(1);
        let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
        diag::send(&self.sock, &request(target, seq))?;
        let mut buf = vec![0u8; RECV_BUF_LEN];
        loop {
            let Some(len) = diag::recv(&self.sock, &mut buf)? else {
                continue;
            };
            let chunk = buf.get(..len).unwrap_or(&buf);
            if let Some(errno) = parse_answer(chunk, seq)? {
                return Ok(DestroyOutcome::from_errno(errno));
            }
        }
    }
}

/// The address as the kernel stores it for a socket of `family`: IPv4
/// sockets in the first 4 bytes, IPv6 ones (v4-mapped included) in 16.
fn wire_address(family: Family, ip: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match (family, ip) {
        (Family::Ipv4, IpAddr::V4(v4)) => out[..4].copy_from_slice(&v4.octets()),
        (_, IpAddr::V4(v4)) => out = v4.to_ipv6_mapped().octets(),
        (_, IpAddr::V6(v6)) => out = v6.octets(),
    }
    out
}

/// `struct nlmsghdr` + `struct inet_diag_req_v2` naming exactly `target`.
pub fn request(target: &DiagSocket, seq: u32) -> [u8; NLMSG_HDRLEN + REQ_LEN] {
    let mut msg = [0u8; NLMSG_HDRLEN + REQ_LEN];
    msg[0..4].copy_from_slice(&((NLMSG_HDRLEN + REQ_LEN) as u32).to_ne_bytes());
    msg[4..6].copy_from_slice(&SOCK_DESTROY.to_ne_bytes());
    msg[6..8].copy_from_slice(&FLAGS.to_ne_bytes());
    msg[8..12].copy_from_slice(&seq.to_ne_bytes());
    let req = &mut msg[NLMSG_HDRLEN..];
    req[0] = target.family.raw() as u8;
    req[1] = libc::IPPROTO_TCP as u8;
    // idiag_states: only the state it was seen in.
    let states = 1u32.checked_shl(u32::from(target.state)).unwrap_or(0);
    req[4..8].copy_from_slice(&states.to_ne_bytes());
    req[8..10].copy_from_slice(&target.local.port.to_be_bytes());
    req[10..12].copy_from_slice(&target.remote.port.to_be_bytes());
    req[12..28].copy_from_slice(&wire_address(target.family, target.local.ip));
    req[28..44].copy_from_slice(&wire_address(target.family, target.remote.ip));
    req[44..48].copy_from_slice(&target.ifindex.to_ne_bytes());
    req[48..52].copy_from_slice(&(target.cookie as u32).to_ne_bytes());
    req[52..56].copy_from_slice(&((target.cookie >> 32) as u32).to_ne_bytes());
    msg
}

/// The errno (positive; 0 for success) of the answer to request `seq` in
/// `chunk`, None if the chunk holds no such answer.
pub fn parse_answer(mut chunk: &[u8], seq: u32) -> io::Result<Option<i32>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    while chunk.len() >= NLMSG_HDRLEN {
        let word = |at: usize| u32::from_ne_bytes(chunk[at..at + 4].try_into().unwrap_or([0; 4]));
        let len = word(0) as usize;
        let kind = u16::from_ne_bytes([chunk[4], chunk[5]]);
        if len < NLMSG_HDRLEN || len > chunk.len() {
            return Err(bad("malformed netlink answer to SOCK_DESTROY"));
        }
        if kind == NLMSG_ERROR && word(8) == seq {
            let code = chunk[..len]
                .get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4)
                .map(|b| i32::from_ne_bytes(b.try_into().unwrap_or([0; 4])))
                .ok_or_else(|| bad("NLMSG_ERROR without an error code"))?;
            return Ok(Some(code.checked_neg().unwrap_or(i32::MAX)));
        }
        chunk = chunk.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::snapshot::diag::tests::{nlmsg, sock};

    #[test]
    fn request_names_the_socket_exactly() {
        let mut s = sock(8, "10.0.0.1:8080", "10.0.0.2:40000");
        (s.cookie, s.ifindex) = (0x1122_3344_5566_7788, 3);
        let r = request(&s, 5);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), 21);
        assert_eq!(u16::from_ne_bytes([r[6], r[7]]), 5);
        let q = &r[16..];
        assert_eq!(&q[0..4], &[2, 6, 0, 0]);
        assert_eq!(u32::from_ne_bytes(q[4..8].try_into().unwrap()), 1 << 8);
        assert_eq!(&q[8..12], &[0x1f, 0x90, 0x9c, 0x40]);
        assert_eq!(&q[12..16], &[10, 0, 0, 1]);
        assert!(q[16..28].iter().all(|&b| b == 0));
        assert_eq!(&q[28..32], &[10, 0, 0, 2]);
        assert_eq!(u32::from_ne_bytes(q[44..48].try_into().unwrap()), 3);
        assert_eq!(
            u32::from_ne_bytes(q[48..52].try_into().unwrap()),
            0x5566_7788
        );
        assert_eq!(
            u32::from_ne_bytes(q[52..56].try_into().unwrap()),
            0x1122_3344
        );
    }

    #[test]
    fn v4_mapped_addresses_of_ipv6_sockets_are_sent_mapped() {
        let s = sock(1, "[::ffff:10.0.0.1]:80", "[::ffff:10.0.0.2]:9");
        assert_eq!(s.family, Family::Ipv6);
        let q = &request(&s, 1)[16..];
        assert_eq!(q[0], libc::AF_INET6 as u8);
        assert_eq!(
            &q[12..28],
            &"::ffff:10.0.0.1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
    }

    #[test]
    fn answers_map_to_outcomes() {
        for (errno, outcome) in [
            (0, DestroyOutcome::Destroyed),
            (libc::ENOENT, DestroyOutcome::AlreadyGone),
            (libc::EOPNOTSUPP, DestroyOutcome::Unsupported),
            (libc::EPERM, DestroyOutcome::Refused(libc::EPERM)),
        ] {
            let chunk = nlmsg(NLMSG_ERROR, 0, 9, &(-errno).to_ne_bytes());
            let got = parse_answer(&chunk, 9).unwrap().unwrap();
            assert_eq!(DestroyOutcome::from_errno(got), outcome);
        }
        // Another request's answer, then ours.
        let mut two = nlmsg(NLMSG_ERROR, 0, 8, &(-libc::EPERM).to_ne_bytes());
        two.extend(nlmsg(NLMSG_ERROR, 0, 9, &0i32.to_ne_bytes()));
        assert_eq!(parse_answer(&two, 9).unwrap(), Some(0));
        assert_eq!(parse_answer(&two[..20], 9).unwrap(), None);
    }

    #[test]
    fn garbled_answers_are_errors_not_panics() {
        let good = nlmsg(NLMSG_ERROR, 0, 9, &0i32.to_ne_bytes());
        for cut in 0..good.len() {
            let _ = parse_answer(&good[..cut], 9);
        }
        let mut zero = good.clone();
        zero[..4].copy_from_slice(&0u32.to_ne_bytes());
        assert!(parse_answer(&zero, 9).is_err());
        assert!(parse_answer(&nlmsg(NLMSG_ERROR, 0, 9, &[1]), 9).is_err());
        assert_eq!(
            parse_answer(&nlmsg(NLMSG_ERROR, 0, 9, &i32::MIN.to_ne_bytes()), 9).unwrap(),
            Some(i32::MAX)
        );
    }
}

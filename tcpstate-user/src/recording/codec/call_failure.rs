//! Failed connect()/bind() calls in recordings (issue 11): an extension
//! record (head 255), so that readers that predate it skip it.
//!
//! Body: extension kind (1 byte, [`EXT_CALL_FAILURE`]), call (1: connect,
//! 2: bind), errno, family (4 or 6), then varints ts_boot_ns, netns, tgid,
//! pid, cgroup id, skaddr, the 16-byte comm, the address (4 or 16 bytes)
//! and the port (2 bytes, little-endian). Self-contained: it uses none of
//! the block's tables or registers.
use super::{put_varint, Cursor};
use crate::{
    addr::Endpoint,
    tcp::Family,
    wire::{CallFailure, Comm, FailedCall, Task},
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The extension kind of a failed call.
pub const EXT_CALL_FAILURE: u8 = 1;

pub fn encode(f: &CallFailure) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(EXT_CALL_FAILURE);
    out.push(match f.call {
        FailedCall::Connect => 1,
        FailedCall::Bind => 2,
    });
    out.push(f.errno);
    // The address as given: an IPv6 socket may pass an IPv4-mapped one.
    let ip = f.addr.ip;
    out.push(if ip.is_ipv4() { 4 } else { 6 });
    put_varint(&mut out, f.ts_boot_ns);
    put_varint(&mut out, u64::from(f.netns));
    put_varint(&mut out, u64::from(f.task.tgid));
    put_varint(&mut out, u64::from(f.task.pid));
    put_varint(&mut out, f.cgroup_id);
    put_varint(&mut out, f.skaddr);
    out.extend_from_slice(&f.task.comm.0);
    match ip {
        IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
    }
    out.extend_from_slice(&f.addr.port.to_le_bytes());
    out.push(match f.family {
        Family::Ipv4 => 4,
        Family::Ipv6 => 6,
    });
    out
}

/// Ok(None): an extension of another kind (skipped). Err: a damaged one.
pub fn decode(body: &[u8]) -> Result<Option<CallFailure>, &'static str> {
    let mut cur = Cursor::new(body);
    let bad = |_| "truncated failed-call record";
    match cur.u8() {
        Ok(EXT_CALL_FAILURE) => {}
        Ok(_) => return Ok(None),
        Err(_) => return Err("empty extension record"),
    }
    let call = match cur.u8().map_err(bad)? {
        1 => FailedCall::Connect,
        2 => FailedCall::Bind,
        _ => return Err("unknown failed call"),
    };
    let errno = cur.u8().map_err(bad)?;
    if errno == 0 {
        return Err("failed call without errno");
    }
    let ip_version = cur.u8().map_err(bad)?;
    let ts_boot_ns = cur.varint().map_err(bad)?;
    let netns = cur.varint_u32().map_err(bad)?;
    let tgid = cur.varint_u32().map_err(bad)?;
    let pid = cur.varint_u32().map_err(bad)?;
    let cgroup_id = cur.varint().map_err(bad)?;
    let skaddr = cur.varint().map_err(bad)?;
    let comm = Comm(cur.array::<16>().map_err(bad)?);
    let ip = match ip_version {
        4 => IpAddr::V4(Ipv4Addr::from(cur.array::<4>().map_err(bad)?)),
        6 => IpAddr::V6(Ipv6Addr::from(cur.array::<16>().map_err(bad)?)),
        _ => return Err("unknown address version in a failed-call record"),
    };
    let port = u16::from_le_bytes(cur.array::<2>().map_err(bad)?);
    let family = match cur.u8().map_err(bad)? {
        4 => Family::Ipv4,
        6 => Family::Ipv6,
        _ => return Err("unknown family in a failed-call record"),
    };
    if !cur.is_empty() {
        return Err("failed-call record longer than its fields");
    }
    Ok(Some(CallFailure {
        ts_boot_ns,
        call,
        errno,
        task: Task { tgid, pid, comm },
        cgroup_id,
        netns,
        skaddr,
        family,
        addr: Endpoint::new(ip, port),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CallFailure {
        CallFailure {
            ts_boot_ns: 5_000_000_123,
            call: FailedCall::Connect,
            errno: 99,
            task: Task {
                tgid: 4242,
                pid: 4243,
                comm: Comm::from_str_lossy("client"),
            },
            cgroup_id: 77,
            netns: 4026532001,
            skaddr: 0xffff_8881_0000_2000,
            family: Family::Ipv6,
            addr: Endpoint::new("fd00::2".parse().unwrap(), 80),
        }
    }

    #[test]
    fn round_trips_and_other_extensions_are_skipped() {
        let f = sample();
        assert_eq!(decode(&encode(&f)), Ok(Some(f)));
        let bind = CallFailure {
            call: FailedCall::Bind,
            errno: 98,
            family: Family::Ipv4,
            addr: Endpoint::new("10.1.2.3".parse().unwrap(), 40000),
            ..f
        };
        assert_eq!(decode(&encode(&bind)), Ok(Some(bind)));
        assert_eq!(decode(&[7, 1, 2, 3]), Ok(None));
    }

    #[test]
    fn damaged_records_are_refused_without_panicking() {
        super::super::check_damaged(decode, &encode(&sample()), &[(1, 9), (2, 0), (3, 5)]);
    }
}

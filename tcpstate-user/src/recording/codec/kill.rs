//! Kills by `tcpstate kill` in recordings (issue 12): an extension record
//! (head 255) like the failed calls, so that readers that predate it skip
//! it. The same bytes are the datagram `kill` sends to recorders
//! ([`crate::kill_log`]), so this decoder also guards the recorder.
//!
//! Body: extension kind (1 byte, [`EXT_KILL`]), outcome (1: destroyed,
//! 2: already gone, 3: refused), state (raw TCP state), family (4 or 6),
//! owner flag (0 or 1), then varints ts_boot_ns, killer pid, netns,
//! cookie, errno (0 unless refused), the local then the remote endpoint
//! (version 4 or 6, the 4 or 16 address bytes, the port little-endian),
//! and with an owner its tgid (varint) and 16-byte comm.
use super::{put_varint, Cursor};
use crate::{
    addr::Endpoint,
    kill_log::{KillOutcome, KillOwner, KillRecord},
    tcp::{Family, TcpState},
    wire::Comm,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The extension kind of a kill.
pub const EXT_KILL: u8 = 2;
/// No valid body is longer (both endpoints IPv6, every varint at its
/// longest); a datagram longer than this is refused before decoding.
pub const MAX_LEN: usize = 5 + 4 * 10 + 10 + 2 * 19 + 10 + 16;

pub fn encode(k: &KillRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.push(EXT_KILL);
    out.push(match k.outcome {
        KillOutcome::Destroyed => 1,
        KillOutcome::AlreadyGone => 2,
        KillOutcome::Refused(_) => 3,
    });
    out.push(k.state as u8);
    out.push(match k.family {
        Family::Ipv4 => 4,
        Family::Ipv6 => 6,
    });
    out.push(u8::from(k.owner.is_some()));
    put_varint(&mut out, k.ts_boot_ns);
    put_varint(&mut out, u64::from(k.killer_pid));
    put_varint(&mut out, u64::from(k.netns));
    put_varint(&mut out, k.cookie);
    put_varint(&mut out, u64::from(k.outcome.errno().unwrap_or(0)));
    for end in [k.local, k.remote] {
        match end.ip {
            IpAddr::V4(v4) => {
                out.push(4);
                out.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.push(6);
                out.extend_from_slice(&v6.octets());
            }
        }
        out.extend_from_slice(&end.port.to_le_bytes());
    }
    if let Some(owner) = k.owner {
        put_varint(&mut out, u64::from(owner.tgid));
        out.extend_from_slice(&owner.comm.0);
    }
    out
}

fn endpoint(cur: &mut Cursor) -> Result<Endpoint, &'static str> {
    let bad = |_| "truncated kill record";
    let ip = match cur.u8().map_err(bad)? {
        4 => IpAddr::V4(Ipv4Addr::from(cur.array::<4>().map_err(bad)?)),
        6 => IpAddr::V6(Ipv6Addr::from(cur.array::<16>().map_err(bad)?)),
        _ => return Err("unknown address version in a kill record"),
    };
    let port = u16::from_le_bytes(cur.array::<2>().map_err(bad)?);
    Ok(Endpoint::new(ip, port))
}

/// Ok(None): an extension of another kind (not this one's to read).
/// Err: a damaged kill record.
pub fn decode(body: &[u8]) -> Result<Option<KillRecord>, &'static str> {
    let mut cur = Cursor::new(body);
    let bad = |_| "truncated kill record";
    match cur.u8() {
        Ok(EXT_KILL) => {}
        Ok(_) => return Ok(None),
        Err(_) => return Err("empty extension record"),
    }
    if body.len() > MAX_LEN {
        return Err("kill record longer than its fields");
    }
    let outcome = cur.u8().map_err(bad)?;
    let state =
        TcpState::from_raw(cur.u8().map_err(bad)?).ok_or("unknown TCP state in a kill record")?;
    let family = match cur.u8().map_err(bad)? {
        4 => Family::Ipv4,
        6 => Family::Ipv6,
        _ => return Err("unknown family in a kill record"),
    };
    let has_owner = match cur.u8().map_err(bad)? {
        0 => false,
        1 => true,
        _ => return Err("unknown owner flag in a kill record"),
    };
    let ts_boot_ns = cur.varint().map_err(bad)?;
    let killer_pid = cur.varint_u32().map_err(bad)?;
    let netns = cur.varint_u32().map_err(bad)?;
    let cookie = cur.varint().map_err(bad)?;
    let errno = u16::try_from(cur.varint().map_err(bad)?)
        .map_err(|_| "errno out of range in a kill record")?;
    let outcome = match (outcome, errno) {
        (1, 0) => KillOutcome::Destroyed,
        (2, 0) => KillOutcome::AlreadyGone,
        (3, errno) if errno != 0 => KillOutcome::Refused(errno),
        (1..=3, _) => return Err("kill record's errno does not match its outcome"),
        _ => return Err("unknown outcome in a kill record"),
    };
    let local = endpoint(&mut cur)?;
    let remote = endpoint(&mut cur)?;
    let owner = if has_owner {
        Some(KillOwner {
            tgid: cur.varint_u32().map_err(bad)?,
            comm: Comm(cur.array::<16>().map_err(bad)?),
        })
    } else {
        None
    };
    if !cur.is_empty() {
        return Err("kill record longer than its fields");
    }
    Ok(Some(KillRecord {
        ts_boot_ns,
        killer_pid,
        netns,
        cookie,
        family,
        local,
        remote,
        state,
        owner,
        outcome,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KillRecord {
        KillRecord {
            ts_boot_ns: 9_000_000_456,
            killer_pid: 777,
            netns: 4026531840,
            cookie: 0x1234_5678_9abc,
            family: Family::Ipv4,
            local: Endpoint::new("127.0.0.1".parse().unwrap(), 41000),
            remote: Endpoint::new("127.0.0.1".parse().unwrap(), 8080),
            state: TcpState::CloseWait,
            owner: Some(KillOwner {
                tgid: 4242,
                comm: Comm::from_str_lossy("leaky"),
            }),
            outcome: KillOutcome::Destroyed,
        }
    }

    #[test]
    fn round_trips_every_outcome_and_skips_other_kinds() {
        let k = sample();
        assert_eq!(decode(&encode(&k)), Ok(Some(k)));
        let v6 = KillRecord {
            family: Family::Ipv6,
            local: Endpoint::new("fd00::1".parse().unwrap(), 1),
            remote: Endpoint::new("::ffff:10.0.0.1".parse().unwrap(), 65535),
            owner: None,
            outcome: KillOutcome::Refused(1),
            ts_boot_ns: u64::MAX,
            cookie: u64::MAX,
            killer_pid: u32::MAX,
            netns: u32::MAX,
            ..k
        };
        let body = encode(&v6);
        assert_eq!(decode(&body), Ok(Some(v6)));
        let longest = encode(&KillRecord {
            owner: k.owner.map(|o| KillOwner {
                tgid: u32::MAX,
                ..o
            }),
            outcome: KillOutcome::Refused(u16::MAX),
            ..v6
        });
        assert!(longest.len() <= MAX_LEN, "{} > {MAX_LEN}", longest.len());
        let gone = KillRecord {
            outcome: KillOutcome::AlreadyGone,
            ..k
        };
        assert_eq!(decode(&encode(&gone)), Ok(Some(gone)));
        assert_eq!(decode(&[1, 1, 2, 3]), Ok(None));
    }

    #[test]
    fn truncated_oversized_and_garbage_records_are_refused_without_panicking() {
        let body = encode(&sample());
        // Outcome, state, family, owner flag out of range.
        let out_of_range = [(1, 0), (1, 4), (2, 0), (2, 200), (3, 5), (4, 2)];
        super::super::check_damaged(decode, &body, &out_of_range);
        let mut huge = body.clone();
        huge.resize(64 * 1024, 0xff);
        assert!(decode(&huge).is_err());
        // Destroyed with an errno; refused without one.
        let mut with_errno = sample();
        with_errno.outcome = KillOutcome::Refused(1);
        let mut refused = encode(&with_errno);
        refused[1] = 1;
        assert!(decode(&refused).is_err());
        let mut no_errno = body.clone();
        no_errno[1] = 3;
        assert!(decode(&no_errno).is_err());
        // Bytes from a simple generator: an error or a record, never a
        // panic.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..200 {
            let mut garbage = vec![EXT_KILL];
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                garbage.push(state as u8);
            }
            let _ = decode(&garbage);
        }
    }
}

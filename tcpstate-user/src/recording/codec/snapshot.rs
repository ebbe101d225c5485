//! Snapshot payloads: the start-up sockets.
use super::*;

/// The fields every snapshot block repeats before its sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotPrefix {
    pub part: u32,
    pub total: u32,
    pub netns: u32,
    pub errors: SnapshotErrors,
}

fn put_prefix(out: &mut Vec<u8>, p: &SnapshotPrefix) {
    put_varint(out, u64::from(p.part));
    put_varint(out, u64::from(p.total));
    put_varint(out, u64::from(p.netns));
    // Every field, so that a new one cannot be forgotten here.
    let SnapshotErrors {
        unsupported_state,
        unknown_state,
        incomplete_time_wait,
        duplicates,
        skipped_messages,
        dump_interrupted,
        owner_unknown,
        proc_permission_denied,
        proc_vanished,
        proc_other_errors,
    } = p.errors;
    for v in [
        unsupported_state,
        unknown_state,
        incomplete_time_wait,
        duplicates,
        skipped_messages,
    ] {
        put_varint(out, u64::from(v));
    }
    out.push(u8::from(dump_interrupted));
    for v in [
        owner_unknown,
        proc_permission_denied,
        proc_vanished,
        proc_other_errors,
    ] {
        put_varint(out, u64::from(v));
    }
}

fn prefix(cur: &mut Cursor) -> Result<SnapshotPrefix, CodecError> {
    let part = cur.varint_u32()?;
    let total = cur.varint_u32()?;
    let netns = cur.varint_u32()?;
    let mut e = SnapshotErrors {
        unsupported_state: cur.varint_u32()?,
        unknown_state: cur.varint_u32()?,
        incomplete_time_wait: cur.varint_u32()?,
        duplicates: cur.varint_u32()?,
        skipped_messages: cur.varint_u32()?,
        ..SnapshotErrors::default()
    };
    e.dump_interrupted = match cur.u8()? {
        0 => false,
        1 => true,
        _ => return Err(cur.err("bad boolean")),
    };
    e.owner_unknown = cur.varint_u32()?;
    e.proc_permission_denied = cur.varint_u32()?;
    e.proc_vanished = cur.varint_u32()?;
    e.proc_other_errors = cur.varint_u32()?;
    Ok(SnapshotPrefix {
        part,
        total,
        netns,
        errors: e,
    })
}

const SF_IPV6: u8 = 1;
const SF_SKADDR: u8 = 2;
const SF_OWNER: u8 = 4;
const SF_TW_EXPIRES: u8 = 8;
const SF_TIMER: u8 = 16;

fn how_raw(how: OwnerHow) -> u8 {
    match how {
        OwnerHow::Connect => 0,
        OwnerHow::Listen => 1,
        OwnerHow::Accept => 2,
        OwnerHow::SocketIo => 3,
        OwnerHow::InheritedFromListener => 4,
        OwnerHow::Snapshot => 5,
    }
}

fn how_from_raw(raw: u8) -> Option<OwnerHow> {
    Some(match raw {
        0 => OwnerHow::Connect,
        1 => OwnerHow::Listen,
        2 => OwnerHow::Accept,
        3 => OwnerHow::SocketIo,
        4 => OwnerHow::InheritedFromListener,
        5 => OwnerHow::Snapshot,
        _ => return None,
    })
}

/// Splits a snapshot into block payloads of about `limit` bytes each;
/// returns (payload, sockets in it). A snapshot without sockets still
/// gives one block.
pub fn encode_snapshot(snapshot: &Snapshot, limit: usize) -> Vec<(Vec<u8>, u32)> {
    let mut parts = Vec::new();
    let total = snapshot.sockets.len() as u32;
    let mut rest = &snapshot.sockets[..];
    loop {
        let mut buf = Vec::new();
        put_prefix(
            &mut buf,
            &SnapshotPrefix {
                part: parts.len() as u32,
                total,
                netns: snapshot.netns,
                errors: snapshot.errors,
            },
        );
        let mut tables = EncTables::default();
        let mut last_netns = snapshot.netns;
        let mut count = 0u32;
        while let Some((s, tail)) = rest.split_first() {
            if count > 0 && buf.len() >= limit {
                break;
            }
            put_snapshot_socket(&mut buf, &mut tables, &mut last_netns, s);
            count += 1;
            rest = tail;
        }
        parts.push((buf, count));
        if rest.is_empty() {
            return parts;
        }
    }
}

fn put_snapshot_socket(
    out: &mut Vec<u8>,
    tables: &mut EncTables,
    last_netns: &mut u32,
    s: &SnapshotSocket,
) {
    let e = &s.existing;
    let mut flags = 0;
    if e.family == Family::Ipv6 {
        flags |= SF_IPV6;
    }
    if e.skaddr_or_cookie.is_some() {
        flags |= SF_SKADDR;
    }
    if e.owner.is_some() {
        flags |= SF_OWNER;
    }
    if s.time_wait_expires_in_ms.is_some() {
        flags |= SF_TW_EXPIRES;
    }
    if s.timer.is_some() {
        flags |= SF_TIMER;
    }
    out.push(flags);
    out.push(e.state as u8);
    put_netns(out, last_netns, e.netns);
    tables.endpoint(out, &e.local);
    tables.endpoint(out, &e.remote);
    if let Some(id) = e.skaddr_or_cookie {
        put_varint(out, id);
    }
    if let Some(owner) = &e.owner {
        put_varint(out, u64::from(owner.tgid));
        put_varint(out, u64::from(owner.pid));
        tables.comm(out, &owner.comm);
        out.push(how_raw(owner.how));
        put_varint(out, owner.cgroup_id);
    }
    put_varint(out, u64::from(s.inode));
    put_varint(out, s.cookie);
    if let Some(ms) = s.time_wait_expires_in_ms {
        put_varint(out, u64::from(ms));
    }
    put_varint(out, u64::from(s.holders));
    if let Some(timer) = &s.timer {
        match timer.kind {
            TimerKind::Retransmit => out.push(1),
            TimerKind::KeepAlive => out.push(2),
            TimerKind::TimeWait => out.push(3),
            TimerKind::ZeroWindowProbe => out.push(4),
            TimerKind::Other(raw) => out.extend_from_slice(&[5, raw]),
        }
        put_varint(out, u64::from(timer.expires_in_ms));
        out.push(timer.retransmits);
    }
    put_varint(out, u64::from(s.uid));
    put_varint(out, u64::from(s.rqueue));
    put_varint(out, u64::from(s.wqueue));
}

/// Decodes one snapshot block: its prefix, and appends its sockets.
pub fn decode_snapshot(
    payload: &[u8],
    records: u32,
    out: &mut Vec<SnapshotSocket>,
) -> Result<SnapshotPrefix, CodecError> {
    let mut cur = Cursor::new(payload);
    let prefix = prefix(&mut cur)?;
    let mut tables = DecTables::default();
    let mut last_netns = prefix.netns;
    let mut decoded = 0u32;
    while !cur.is_empty() {
        out.push(snapshot_socket(&mut cur, &mut tables, &mut last_netns)?);
        decoded += 1;
    }
    if decoded != records {
        return Err(cur.err("record count differs from the block header"));
    }
    Ok(prefix)
}

fn snapshot_socket(
    cur: &mut Cursor,
    tables: &mut DecTables,
    last_netns: &mut u32,
) -> Result<SnapshotSocket, CodecError> {
    let flags = cur.u8()?;
    if flags >= 32 {
        return Err(cur.err("unknown snapshot socket flags"));
    }
    let state = cur.state()?;
    let netns = cur.netns(last_netns)?;
    let local = tables.endpoint(cur)?;
    let remote = tables.endpoint(cur)?;
    let skaddr_or_cookie = if flags & SF_SKADDR != 0 {
        Some(cur.varint()?)
    } else {
        None
    };
    let owner = if flags & SF_OWNER != 0 {
        let tgid = cur.varint_u32()?;
        let pid = cur.varint_u32()?;
        let comm = tables.comm(cur)?;
        let how = how_from_raw(cur.u8()?).ok_or(cur.err("unknown owner kind"))?;
        let cgroup_id = cur.varint()?;
        Some(Owner {
            tgid,
            pid,
            comm,
            how,
            cgroup_id,
        })
    } else {
        None
    };
    let inode = cur.varint_u32()?;
    let cookie = cur.varint()?;
    let time_wait_expires_in_ms = if flags & SF_TW_EXPIRES != 0 {
        Some(cur.varint_u32()?)
    } else {
        None
    };
    let holders = cur.varint_u32()?;
    let timer = if flags & SF_TIMER != 0 {
        let kind = match cur.u8()? {
            1 => TimerKind::Retransmit,
            2 => TimerKind::KeepAlive,
            3 => TimerKind::TimeWait,
            4 => TimerKind::ZeroWindowProbe,
            5 => TimerKind::Other(cur.u8()?),
            _ => return Err(cur.err("unknown timer kind")),
        };
        Some(SocketTimer {
            kind,
            expires_in_ms: cur.varint_u32()?,
            retransmits: cur.u8()?,
        })
    } else {
        None
    };
    Ok(SnapshotSocket {
        existing: ExistingSocket {
            skaddr_or_cookie,
            netns,
            family: if flags & SF_IPV6 != 0 {
                Family::Ipv6
            } else {
                Family::Ipv4
            },
            state,
            local,
            remote,
            owner,
        },
        inode,
        cookie,
        time_wait_expires_in_ms,
        holders,
        timer,
        uid: cur.varint_u32()?,
        rqueue: cur.varint_u32()?,
        wqueue: cur.varint_u32()?,
    })
}

//! Encoding of block payloads: items (section 5 of
//! `docs/recording-format.md`) and the start-up snapshot (section 6).
//!
//! Every block is self-contained: the tables (sockets, tasks, addresses,
//! comms) and the registers (previous timestamp, skaddr, netns, cgroup)
//! start empty in each block, so any block decodes without the others.
//!
//! The decoder treats its input as hostile: every read is bounds-checked,
//! every table reference is checked against the table, and nothing is
//! allocated from a count read from the payload (tables grow one entry per
//! record actually decoded).
use crate::{
    addr::Endpoint,
    model::{ExistingSocket, Owner, OwnerHow},
    source::{
        snapshot::{Snapshot, SnapshotErrors, SnapshotSocket, SocketTimer, TimerKind},
        Item,
    },
    tcp::{Family, TcpState},
    wire::{Comm, OwnerSeen, ResetSent, Task, Transition},
};
use foldhash::{HashMap, HashMapExt};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Head bytes below this are transitions: `(old - 1) * 12 + (new - 1)`.
pub const HEAD_TRANSITIONS: u8 = 144;
pub const HEAD_ACCEPTED: u8 = 144;
pub const HEAD_RESET: u8 = 145;
pub const HEAD_LOST: u8 = 146;
/// A record of a later format revision: varint length, then that many
/// bytes, which readers that do not know it skip.
pub const HEAD_EXTENSION: u8 = 255;

/// Why a payload could not be decoded: what, and at which payload byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodecError {
    pub at: usize,
    pub what: &'static str,
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at payload byte {}", self.what, self.at)
    }
}

// ---------------------------------------------------------------------------
// Primitives

#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A netns as a varint: 0 = the same as the `last` register, else netns + 1.
#[inline]
fn put_netns(out: &mut Vec<u8>, last: &mut u32, netns: u32) {
    if netns == *last {
        out.push(0);
    } else {
        put_varint(out, u64::from(netns) + 1);
        *last = netns;
    }
}

/// A reading position in a payload.
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn err(&self, what: &'static str) -> CodecError {
        CodecError { at: self.pos, what }
    }

    #[inline]
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        match self.buf.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(self.err("payload ends inside a record")),
        }
    }

    #[inline]
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        match self.buf.get(self.pos..).and_then(|rest| rest.get(..n)) {
            Some(slice) => {
                self.pos += n;
                Ok(slice)
            }
            None => Err(self.err("payload ends inside a record")),
        }
    }

    #[inline]
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    #[inline]
    pub fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    #[inline]
    pub fn u64_le(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// An unsigned LEB128 number of at most 10 bytes that fits in a u64.
    #[inline]
    pub fn varint(&mut self) -> Result<u64, CodecError> {
        let first = self.u8()?;
        if first < 0x80 {
            return Ok(u64::from(first));
        }
        let mut value = u64::from(first & 0x7f);
        let mut shift = 7;
        loop {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return Err(self.err("number over 64 bits"));
            }
            value |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(value);
            }
            shift += 7;
        }
    }

    #[inline]
    pub fn varint_u32(&mut self) -> Result<u32, CodecError> {
        u32::try_from(self.varint()?).map_err(|_| self.err("number over 32 bits"))
    }

    #[inline]
    fn zigzag(&mut self) -> Result<i64, CodecError> {
        Ok(unzigzag(self.varint()?))
    }

    #[inline]
    fn netns(&mut self, last: &mut u32) -> Result<u32, CodecError> {
        match self.varint()? {
            0 => Ok(*last),
            x => {
                let netns = u32::try_from(x - 1).map_err(|_| self.err("netns over 32 bits"))?;
                *last = netns;
                Ok(netns)
            }
        }
    }

    fn state(&mut self) -> Result<TcpState, CodecError> {
        let raw = self.u8()?;
        TcpState::from_raw(raw).ok_or(self.err("unknown TCP state"))
    }
}

// ---------------------------------------------------------------------------
// Shared tables: addresses and comms

/// A comm's significant bytes: all of them up to the last non-zero one, so
/// that any 16-byte value round-trips exactly.
fn comm_len(comm: &[u8; 16]) -> usize {
    16 - comm.iter().rev().take_while(|&&b| b == 0).count()
}

#[derive(Default)]
struct EncTables {
    ips: HashMap<IpAddr, u32>,
    comms: HashMap<[u8; 16], u32>,
}

impl EncTables {
    fn clear(&mut self) {
        self.ips.clear();
        self.comms.clear();
    }

    /// 0: IPv4 literal (4 bytes); 1: IPv6 literal (16 bytes); k >= 2: the
    /// (k-2)th address introduced in this block.
    fn ip(&mut self, out: &mut Vec<u8>, ip: IpAddr) {
        if let Some(&k) = self.ips.get(&ip) {
            put_varint(out, u64::from(k) + 2);
            return;
        }
        match ip {
            IpAddr::V4(v4) => {
                out.push(0);
                out.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.push(1);
                out.extend_from_slice(&v6.octets());
            }
        }
        let k = self.ips.len() as u32;
        self.ips.insert(ip, k);
    }

    fn endpoint(&mut self, out: &mut Vec<u8>, ep: &Endpoint) {
        self.ip(out, ep.ip);
        out.extend_from_slice(&ep.port.to_le_bytes());
    }

    /// 0: literal (length byte 0..=16, bytes); k >= 1: the (k-1)th comm
    /// introduced in this block.
    fn comm(&mut self, out: &mut Vec<u8>, comm: &Comm) {
        if let Some(&k) = self.comms.get(&comm.0) {
            put_varint(out, u64::from(k) + 1);
            return;
        }
        out.push(0);
        let len = comm_len(&comm.0);
        out.push(len as u8);
        out.extend_from_slice(&comm.0[..len]);
        let k = self.comms.len() as u32;
        self.comms.insert(comm.0, k);
    }
}

#[derive(Default)]
struct DecTables {
    ips: Vec<IpAddr>,
    comms: Vec<Comm>,
}

impl DecTables {
    fn clear(&mut self) {
        self.ips.clear();
        self.comms.clear();
    }

    #[inline]
    fn ip(&mut self, cur: &mut Cursor) -> Result<IpAddr, CodecError> {
        match cur.varint()? {
            0 => {
                let ip = IpAddr::V4(Ipv4Addr::from(cur.array::<4>()?));
                self.ips.push(ip);
                Ok(ip)
            }
            1 => {
                let ip = IpAddr::V6(Ipv6Addr::from(cur.array::<16>()?));
                self.ips.push(ip);
                Ok(ip)
            }
            k => usize::try_from(k - 2)
                .ok()
                .and_then(|k| self.ips.get(k).copied())
                .ok_or(cur.err("address reference out of range")),
        }
    }

    #[inline]
    fn endpoint(&mut self, cur: &mut Cursor) -> Result<Endpoint, CodecError> {
        let ip = self.ip(cur)?;
        Ok(Endpoint::new(ip, cur.u16()?))
    }

    fn comm(&mut self, cur: &mut Cursor) -> Result<Comm, CodecError> {
        match cur.varint()? {
            0 => {
                let len = usize::from(cur.u8()?);
                if len > 16 {
                    return Err(cur.err("comm longer than 16 bytes"));
                }
                let mut comm = Comm::default();
                comm.0[..len].copy_from_slice(cur.bytes(len)?);
                self.comms.push(comm);
                Ok(comm)
            }
            k => usize::try_from(k - 1)
                .ok()
                .and_then(|k| self.comms.get(k).copied())
                .ok_or(cur.err("comm reference out of range")),
        }
    }
}

// ---------------------------------------------------------------------------
// Items

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct SockKey {
    skaddr: u64,
    netns: u32,
    family: Family,
    local: Endpoint,
    remote: Endpoint,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct TaskKey {
    tgid: u32,
    pid: u32,
    comm: [u8; 16],
    cgroup: u64,
}

/// Entries referred to by "distance since last use": a table whose n-th
/// use refers to entry `uses[n]`. Encoded reference `d` (>= 1) means "the
/// entry of use number `uses.len() - d`".
struct Recency {
    /// Encoder: each entry's last use number.
    last_use: Vec<u32>,
    uses: u32,
}

impl Recency {
    fn new() -> Self {
        Self {
            last_use: Vec::new(),
            uses: 0,
        }
    }

    fn clear(&mut self) {
        self.last_use.clear();
        self.uses = 0;
    }

    /// Distance to encode for an existing entry; records the use.
    #[inline]
    fn touch(&mut self, entry: u32) -> u64 {
        let slot = &mut self.last_use[entry as usize];
        let d = self.uses - *slot;
        *slot = self.uses;
        self.uses += 1;
        u64::from(d)
    }

    /// Adds an entry and records its first use; returns its index.
    fn add(&mut self) -> u32 {
        let entry = self.last_use.len() as u32;
        self.last_use.push(self.uses);
        self.uses += 1;
        entry
    }
}

/// Builds the payload of one items block.
pub struct ItemEncoder {
    pub buf: Vec<u8>,
    pub records: u32,
    pub first_ts: Option<u64>,
    prev_ts: u64,
    last_skaddr: u64,
    last_netns: u32,
    last_cgroup: u64,
    socks: HashMap<SockKey, u32>,
    sock_ids: HashMap<(u64, u32), u32>,
    sock_use: Recency,
    tasks: HashMap<TaskKey, u32>,
    task_use: Recency,
    tables: EncTables,
}

impl Default for ItemEncoder {
    fn default() -> Self {
        Self {
            buf: Vec::new(),
            records: 0,
            first_ts: None,
            prev_ts: 0,
            last_skaddr: 0,
            last_netns: 0,
            last_cgroup: 0,
            socks: HashMap::new(),
            sock_ids: HashMap::new(),
            sock_use: Recency::new(),
            tasks: HashMap::new(),
            task_use: Recency::new(),
            tables: EncTables::default(),
        }
    }
}

impl ItemEncoder {
    /// Starts a new block (keeps the allocations).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.records = 0;
        self.first_ts = None;
        self.prev_ts = 0;
        self.last_skaddr = 0;
        self.last_netns = 0;
        self.last_cgroup = 0;
        self.socks.clear();
        self.sock_ids.clear();
        self.sock_use.clear();
        self.tasks.clear();
        self.task_use.clear();
        self.tables.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    pub fn push(&mut self, item: &Item) {
        match item {
            Item::Transition(t) => self.transition(t),
            Item::Accepted(seen) => {
                self.buf.push(HEAD_ACCEPTED);
                self.ts(seen.ts_boot_ns);
                self.sock_id(seen.skaddr, seen.netns);
                self.task(&seen.task, seen.cgroup_id);
            }
            Item::ResetSent(reset) => {
                self.buf.push(HEAD_RESET);
                self.ts(reset.ts_boot_ns);
                self.buf.push(reset.sender_state.map_or(0, |s| s as u8));
                self.sock_id(reset.sender, reset.netns);
                self.tables.endpoint(&mut self.buf, &reset.segment_src);
                self.tables.endpoint(&mut self.buf, &reset.segment_dst);
            }
            Item::Lost { total, ts_boot_ns } => {
                self.buf.push(HEAD_LOST);
                self.ts(*ts_boot_ns);
                put_varint(&mut self.buf, *total);
            }
        }
        self.records += 1;
    }

    #[inline]
    fn transition(&mut self, t: &Transition) {
        self.buf.push((t.old as u8 - 1) * 12 + (t.new as u8 - 1));
        self.ts(t.ts_boot_ns);
        let key = SockKey {
            skaddr: t.skaddr,
            netns: t.netns,
            family: t.family,
            local: t.local,
            remote: t.remote,
        };
        match self.socks.get(&key) {
            Some(&entry) => put_varint(&mut self.buf, self.sock_use.touch(entry)),
            None => {
                self.buf.push(0);
                self.buf.push(u8::from(key.family == Family::Ipv6));
                self.skaddr(key.skaddr);
                self.tables.endpoint(&mut self.buf, &key.local);
                self.tables.endpoint(&mut self.buf, &key.remote);
                put_netns(&mut self.buf, &mut self.last_netns, key.netns);
                let entry = self.sock_use.add();
                self.socks.insert(key, entry);
                self.sock_ids.insert((key.skaddr, key.netns), entry);
            }
        }
        self.task(&t.task, t.cgroup_id);
        put_varint(&mut self.buf, u64::from(t.cpu));
    }

    #[inline]
    fn ts(&mut self, ts: u64) {
        if self.first_ts.is_none() {
            self.first_ts = Some(ts);
            self.prev_ts = ts;
        }
        put_varint(&mut self.buf, zigzag(ts.wrapping_sub(self.prev_ts) as i64));
        self.prev_ts = ts;
    }

    fn skaddr(&mut self, skaddr: u64) {
        put_varint(
            &mut self.buf,
            zigzag(skaddr.wrapping_sub(self.last_skaddr) as i64),
        );
        self.last_skaddr = skaddr;
    }

    /// A socket named only by (skaddr, netns): 0 = literal skaddr (delta)
    /// and netns; 1 = skaddr 0 ("none") and netns; d + 1 = the socket entry
    /// at recency distance d.
    fn sock_id(&mut self, skaddr: u64, netns: u32) {
        if let Some(&entry) = self.sock_ids.get(&(skaddr, netns)) {
            put_varint(&mut self.buf, self.sock_use.touch(entry) + 1);
        } else if skaddr == 0 {
            self.buf.push(1);
            put_netns(&mut self.buf, &mut self.last_netns, netns);
        } else {
            self.buf.push(0);
            self.skaddr(skaddr);
            put_netns(&mut self.buf, &mut self.last_netns, netns);
        }
    }

    /// 0 = a new task entry follows; d >= 1 = the entry at recency distance d.
    #[inline]
    fn task(&mut self, task: &Task, cgroup: u64) {
        let key = TaskKey {
            tgid: task.tgid,
            pid: task.pid,
            comm: task.comm.0,
            cgroup,
        };
        if let Some(&entry) = self.tasks.get(&key) {
            put_varint(&mut self.buf, self.task_use.touch(entry));
            return;
        }
        self.buf.push(0);
        let same_pid = task.pid == task.tgid;
        let same_cgroup = cgroup == self.last_cgroup;
        self.buf
            .push(u8::from(same_pid) | (u8::from(same_cgroup) << 1));
        put_varint(&mut self.buf, u64::from(task.tgid));
        if !same_pid {
            put_varint(&mut self.buf, u64::from(task.pid));
        }
        self.tables.comm(&mut self.buf, &task.comm);
        if !same_cgroup {
            put_varint(&mut self.buf, cgroup);
            self.last_cgroup = cgroup;
        }
        let entry = self.task_use.add();
        self.tasks.insert(key, entry);
    }
}

#[derive(Clone, Copy)]
struct SockEntry {
    skaddr: u64,
    netns: u32,
    family: Family,
    local: Endpoint,
    remote: Endpoint,
}

#[derive(Clone, Copy)]
struct TaskEntry {
    task: Task,
    cgroup: u64,
}

/// Decodes items blocks; keeps its tables' allocations between blocks.
#[derive(Default)]
pub struct ItemDecoder {
    socks: Vec<SockEntry>,
    sock_uses: Vec<u32>,
    tasks: Vec<TaskEntry>,
    task_uses: Vec<u32>,
    tables: DecTables,
}

impl ItemDecoder {
    /// Decodes a whole payload, appending to `out`. On error, `out` may
    /// hold some of the block's items: the caller drops them.
    pub fn decode(
        &mut self,
        payload: &[u8],
        records: u32,
        first_ts: u64,
        out: &mut Vec<Item>,
    ) -> Result<(), CodecError> {
        self.socks.clear();
        self.sock_uses.clear();
        self.tasks.clear();
        self.task_uses.clear();
        self.tables.clear();
        // The smallest record is 2 bytes, so this bounds the reservation by
        // the payload actually read, whatever `records` claims.
        out.reserve((records as usize).min(payload.len() / 2));
        let mut regs = Registers {
            ts: first_ts,
            skaddr: 0,
            netns: 0,
            cgroup: 0,
        };
        let mut cur = Cursor::new(payload);
        let mut decoded = 0u32;
        while !cur.is_empty() {
            let head = cur.u8()?;
            let item = match head {
                0..HEAD_TRANSITIONS => {
                    Item::Transition(self.transition(head, &mut cur, &mut regs)?)
                }
                HEAD_ACCEPTED => {
                    let ts_boot_ns = regs.ts(&mut cur)?;
                    let (skaddr, netns) = self.sock_id(&mut cur, &mut regs)?;
                    let task = self.task(&mut cur, &mut regs)?;
                    Item::Accepted(OwnerSeen {
                        ts_boot_ns,
                        skaddr,
                        task: task.task,
                        cgroup_id: task.cgroup,
                        netns,
                    })
                }
                HEAD_RESET => {
                    let ts_boot_ns = regs.ts(&mut cur)?;
                    let sender_state = match cur.u8()? {
                        0 => None,
                        raw => Some(TcpState::from_raw(raw).ok_or(cur.err("unknown TCP state"))?),
                    };
                    let (sender, netns) = self.sock_id(&mut cur, &mut regs)?;
                    let segment_src = self.tables.endpoint(&mut cur)?;
                    let segment_dst = self.tables.endpoint(&mut cur)?;
                    Item::ResetSent(ResetSent {
                        ts_boot_ns,
                        sender,
                        sender_state,
                        netns,
                        segment_src,
                        segment_dst,
                    })
                }
                HEAD_LOST => Item::Lost {
                    ts_boot_ns: regs.ts(&mut cur)?,
                    total: cur.varint()?,
                },
                HEAD_EXTENSION => {
                    let len = usize::try_from(cur.varint()?)
                        .map_err(|_| cur.err("extension record too long"))?;
                    cur.bytes(len)?;
                    decoded += 1;
                    continue;
                }
                _ => return Err(cur.err("unknown record kind")),
            };
            out.push(item);
            decoded += 1;
        }
        if decoded != records {
            return Err(cur.err("record count differs from the block header"));
        }
        Ok(())
    }

    #[inline]
    fn transition(
        &mut self,
        head: u8,
        cur: &mut Cursor,
        regs: &mut Registers,
    ) -> Result<Transition, CodecError> {
        let old = TcpState::ALL[usize::from(head / 12)];
        let new = TcpState::ALL[usize::from(head % 12)];
        let ts_boot_ns = regs.ts(cur)?;
        let sock = match cur.varint()? {
            0 => {
                let flags = cur.u8()?;
                if flags > 1 {
                    return Err(cur.err("unknown socket flags"));
                }
                regs.skaddr = regs.skaddr.wrapping_add(cur.zigzag()? as u64);
                let local = self.tables.endpoint(cur)?;
                let remote = self.tables.endpoint(cur)?;
                let netns = cur.netns(&mut regs.netns)?;
                let entry = SockEntry {
                    skaddr: regs.skaddr,
                    netns,
                    family: if flags == 1 {
                        Family::Ipv6
                    } else {
                        Family::Ipv4
                    },
                    local,
                    remote,
                };
                self.sock_uses.push(self.socks.len() as u32);
                self.socks.push(entry);
                entry
            }
            d => self.sock_ref(cur, d)?,
        };
        let task = self.task(cur, regs)?;
        let cpu = cur.varint_u32()?;
        Ok(Transition {
            ts_boot_ns,
            skaddr: sock.skaddr,
            family: sock.family,
            local: sock.local,
            remote: sock.remote,
            old,
            new,
            task: task.task,
            cgroup_id: task.cgroup,
            netns: sock.netns,
            cpu,
        })
    }

    #[inline]
    fn sock_ref(&mut self, cur: &Cursor, d: u64) -> Result<SockEntry, CodecError> {
        let uses = self.sock_uses.len() as u64;
        if d > uses {
            return Err(cur.err("socket reference out of range"));
        }
        let entry = self.sock_uses[(uses - d) as usize];
        self.sock_uses.push(entry);
        Ok(self.socks[entry as usize])
    }

    fn sock_id(
        &mut self,
        cur: &mut Cursor,
        regs: &mut Registers,
    ) -> Result<(u64, u32), CodecError> {
        match cur.varint()? {
            0 => {
                regs.skaddr = regs.skaddr.wrapping_add(cur.zigzag()? as u64);
                Ok((regs.skaddr, cur.netns(&mut regs.netns)?))
            }
            1 => Ok((0, cur.netns(&mut regs.netns)?)),
            d => {
                let entry = self.sock_ref(cur, d - 1)?;
                Ok((entry.skaddr, entry.netns))
            }
        }
    }

    #[inline]
    fn task(&mut self, cur: &mut Cursor, regs: &mut Registers) -> Result<TaskEntry, CodecError> {
        let d = cur.varint()?;
        if d != 0 {
            let uses = self.task_uses.len() as u64;
            if d > uses {
                return Err(cur.err("task reference out of range"));
            }
            let entry = self.task_uses[(uses - d) as usize];
            self.task_uses.push(entry);
            return Ok(self.tasks[entry as usize]);
        }
        let flags = cur.u8()?;
        if flags > 3 {
            return Err(cur.err("unknown task flags"));
        }
        let tgid = cur.varint_u32()?;
        let pid = if flags & 1 != 0 {
            tgid
        } else {
            cur.varint_u32()?
        };
        let comm = self.tables.comm(cur)?;
        if flags & 2 == 0 {
            regs.cgroup = cur.varint()?;
        }
        let entry = TaskEntry {
            task: Task { tgid, pid, comm },
            cgroup: regs.cgroup,
        };
        self.task_uses.push(self.tasks.len() as u32);
        self.tasks.push(entry);
        Ok(entry)
    }
}

struct Registers {
    ts: u64,
    skaddr: u64,
    netns: u32,
    cgroup: u64,
}

impl Registers {
    #[inline]
    fn ts(&mut self, cur: &mut Cursor) -> Result<u64, CodecError> {
        self.ts = self.ts.wrapping_add(cur.zigzag()? as u64);
        Ok(self.ts)
    }
}

// ---------------------------------------------------------------------------
// Snapshot

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

//! Item payloads: the encoder and the (hostile-input) decoder.
use super::*;

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
            Item::CallFailed(f) => self.extension(&super::call_failure::encode(f)),
            Item::Kill(k) => self.extension(&super::kill::encode(k)),
        }
        self.records += 1;
    }

    /// An extension record: readers that predate it skip it.
    fn extension(&mut self, payload: &[u8]) {
        self.buf.push(HEAD_EXTENSION);
        put_varint(&mut self.buf, payload.len() as u64);
        self.buf.extend_from_slice(payload);
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
                    let body = cur.bytes(len)?;
                    match super::call_failure::decode(body) {
                        Ok(Some(failure)) => Item::CallFailed(failure),
                        Ok(None) => match super::kill::decode(body) {
                            Ok(Some(kill)) => Item::Kill(kill),
                            Ok(None) => {
                                decoded += 1;
                                continue;
                            }
                            Err(what) => return Err(cur.err(what)),
                        },
                        Err(what) => return Err(cur.err(what)),
                    }
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

//! Synthetic traffic shaped like a busy host's connection churn, for
//! measuring the recording format's size and speed (and for tests).
//!
//! The host runs a web server (`nginx`, 8 worker processes) on
//! 10.0.0.1:443 that ~2,000 client addresses (10% IPv6) connect to, a
//! Java backend on 127.0.0.1:8080 that nginx connects to over loopback
//! (both ends traced: 10 transitions and an accept per connection), and
//! the backend's connections to 20 database servers: 7.6 items per
//! connection on average (5 to 10 transitions, plus an accept for incoming
//! ones). Connections arrive about every 60 µs (by default); each handshake
//! and each close takes 2 to 42 µs between steps, with a lifetime of 1 to
//! 200 ms in between, so about 1,700 connections are open at a time and
//! items are 8 µs apart on average.
//! Transitions driven by packets run in softirq context (mostly
//! `swapper/N`), the others in the owner's. Socket addresses are reused
//! like a slab's; about 0.3% of items are RSTs, and the lost counter grows
//! now and then. Deterministic for a seed.
use crate::{
    addr::Endpoint,
    source::Item,
    tcp::{Family, TcpState, TcpState::*},
    wire::{Comm, OwnerSeen, ResetSent, Task, Transition},
};
use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// A xorshift64* generator: small, fast, deterministic.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

#[derive(Clone, Copy)]
enum Ctx {
    Owner,
    Irq,
}

#[derive(Clone, Copy)]
enum Step {
    T(usize, TcpState, TcpState, Ctx),
    Accept(usize),
    /// The connection's lifetime passes.
    Gap,
}

use Ctx::*;
use Step::*;

const INCOMING_SERVER_CLOSES: &[Step] = &[
    T(0, Close, SynRecv, Irq),
    T(0, SynRecv, Established, Irq),
    Accept(0),
    Gap,
    T(0, Established, FinWait1, Owner),
    T(0, FinWait1, FinWait2, Irq),
    T(0, FinWait2, Close, Irq),
];

const INCOMING_CLIENT_CLOSES: &[Step] = &[
    T(0, Close, SynRecv, Irq),
    T(0, SynRecv, Established, Irq),
    Accept(0),
    Gap,
    T(0, Established, CloseWait, Irq),
    T(0, CloseWait, LastAck, Owner),
    T(0, LastAck, Close, Irq),
];

/// nginx (side 0) to the backend (side 1) over loopback.
const LOOPBACK: &[Step] = &[
    T(0, Close, SynSent, Owner),
    T(1, Close, SynRecv, Irq),
    T(1, SynRecv, Established, Irq),
    T(0, SynSent, Established, Irq),
    Accept(1),
    Gap,
    T(0, Established, FinWait1, Owner),
    T(1, Established, CloseWait, Irq),
    T(0, FinWait1, FinWait2, Irq),
    T(1, CloseWait, LastAck, Owner),
    T(1, LastAck, Close, Irq),
    T(0, FinWait2, Close, Irq),
];

const OUTGOING: &[Step] = &[
    T(0, Close, SynSent, Owner),
    T(0, SynSent, Established, Irq),
    Gap,
    T(0, Established, FinWait1, Owner),
    T(0, FinWait1, FinWait2, Irq),
    T(0, FinWait2, Close, Irq),
];

const INIT_NETNS: u32 = 4_026_531_840;
const CPUS: u64 = 8;

#[derive(Clone, Copy)]
struct Side {
    skaddr: u64,
    family: Family,
    local: Endpoint,
    remote: Endpoint,
    owner: Task,
    cgroup: u64,
    netns: u32,
}

struct Conn {
    script: &'static [Step],
    pos: usize,
    sides: [Side; 2],
}

/// An endless, deterministic stream of synthetic items.
pub struct Churn {
    rng: XorShift,
    conns: Vec<Option<Conn>>,
    free_conns: Vec<usize>,
    due: BinaryHeap<Reverse<(u64, usize)>>,
    next_arrival: u64,
    free_skaddrs: Vec<u64>,
    next_skaddr: u64,
    next_port: u16,
    lost: u64,
    emitted: u64,
    mean_arrival_ns: u64,
}

impl Churn {
    /// A busy host: a new connection every 60 µs on average (about 120,000
    /// items a second).
    pub fn new(seed: u64) -> Self {
        Self::with_arrivals(seed, 60_000)
    }

    /// A new connection every `mean_arrival_ns` on average.
    pub fn with_arrivals(seed: u64, mean_arrival_ns: u64) -> Self {
        Self {
            rng: XorShift::new(seed),
            conns: Vec::new(),
            free_conns: Vec::new(),
            due: BinaryHeap::new(),
            next_arrival: 3_600_000_000_000,
            free_skaddrs: Vec::new(),
            next_skaddr: 0xffff_8881_0a40_0000,
            next_port: 32768,
            lost: 0,
            emitted: 0,
            mean_arrival_ns: mean_arrival_ns.max(1),
        }
    }

    /// The next `n` items.
    pub fn take_items(&mut self, n: usize) -> Vec<Item> {
        (0..n).map(|_| self.next_item()).collect()
    }

    fn skaddr(&mut self) -> u64 {
        // A slab reuses recently freed objects first.
        if self.free_skaddrs.len() > 64 || (!self.free_skaddrs.is_empty() && self.rng.chance(700)) {
            let i = self.rng.below(self.free_skaddrs.len().min(16) as u64) as usize;
            let at = self.free_skaddrs.len() - 1 - i;
            return self.free_skaddrs.swap_remove(at);
        }
        let addr = self.next_skaddr;
        self.next_skaddr += 0x980;
        if self.rng.chance(20) {
            self.next_skaddr += 0x8000 * (1 + self.rng.below(64)); // another slab page
        }
        addr
    }

    fn port(&mut self) -> u16 {
        self.next_port = self.next_port.wrapping_add(1 + self.rng.below(7) as u16);
        if self.next_port < 32768 || self.next_port > 60999 {
            self.next_port = 32768 + self.rng.below(100) as u16;
        }
        self.next_port
    }

    fn nginx(&mut self) -> (Task, u64) {
        let tgid = 1000 + self.rng.below(8) as u32;
        let comm = Comm::from_str_lossy("nginx");
        (
            Task {
                tgid,
                pid: tgid,
                comm,
            },
            6100,
        )
    }

    fn java(&mut self) -> (Task, u64) {
        const NAMES: [&str; 3] = ["http-nio-8080-e", "HikariPool-1 ho", "java"];
        let k = self.rng.below(64) as u32;
        let comm = Comm::from_str_lossy(NAMES[(k % 3) as usize]);
        (
            Task {
                tgid: 2000,
                pid: 2001 + k,
                comm,
            },
            6200,
        )
    }

    fn client_ip(&mut self) -> (Family, IpAddr) {
        let k = self.rng.below(2000) as u32;
        if k.is_multiple_of(10) {
            let ip = Ipv6Addr::new(0x2001, 0xdb8, 0, k as u16, 0, 0, 0, 1);
            (Family::Ipv6, IpAddr::V6(ip))
        } else {
            let [_, _, a, b] = k.to_be_bytes();
            (Family::Ipv4, IpAddr::V4(Ipv4Addr::new(198, 51, 100 + a, b)))
        }
    }

    fn spawn(&mut self, at: u64) {
        let kind = self.rng.below(100);
        let (script, sides) = if kind < 50 {
            let (owner, cgroup) = self.nginx();
            let (family, client) = self.client_ip();
            let server = match family {
                Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                Family::Ipv6 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10)),
            };
            let side = Side {
                skaddr: self.skaddr(),
                family,
                local: Endpoint::new(server, 443),
                remote: Endpoint::new(client, 1024 + self.rng.below(64000) as u16),
                owner,
                cgroup,
                netns: INIT_NETNS,
            };
            let script = if self.rng.chance(600) {
                INCOMING_SERVER_CLOSES
            } else {
                INCOMING_CLIENT_CLOSES
            };
            (script, [side, side])
        } else if kind < 85 {
            let (nginx, nginx_cg) = self.nginx();
            let (java, java_cg) = self.java();
            let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
            let port = self.port();
            let client = Side {
                skaddr: self.skaddr(),
                family: Family::Ipv4,
                local: Endpoint::new(lo, port),
                remote: Endpoint::new(lo, 8080),
                owner: nginx,
                cgroup: nginx_cg,
                netns: INIT_NETNS,
            };
            let server = Side {
                skaddr: self.skaddr(),
                local: client.remote,
                remote: client.local,
                owner: java,
                cgroup: java_cg,
                ..client
            };
            (LOOPBACK, [client, server])
        } else {
            let (java, cgroup) = self.java();
            let db = self.rng.below(20) as u8;
            let side = Side {
                skaddr: self.skaddr(),
                family: Family::Ipv4,
                local: Endpoint::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), self.port()),
                remote: Endpoint::new(IpAddr::V4(Ipv4Addr::new(10, 2, 0, 10 + db)), 5432),
                owner: java,
                cgroup,
                netns: INIT_NETNS,
            };
            (OUTGOING, [side, side])
        };
        let conn = Conn {
            script,
            pos: 0,
            sides,
        };
        let id = match self.free_conns.pop() {
            Some(id) => {
                self.conns[id] = Some(conn);
                id
            }
            None => {
                self.conns.push(Some(conn));
                self.conns.len() - 1
            }
        };
        self.due.push(Reverse((at, id)));
    }

    /// The task on the CPU in softirq: mostly the idle task.
    fn irq_task(&mut self) -> (Task, u64, u32) {
        let cpu = self.rng.below(CPUS) as u32;
        if self.rng.chance(700) {
            let comm = Comm::from_str_lossy(&format!("swapper/{cpu}"));
            return (
                Task {
                    tgid: 0,
                    pid: 0,
                    comm,
                },
                1,
                cpu,
            );
        }
        let (task, cgroup) = if self.rng.chance(500) {
            self.nginx()
        } else {
            self.java()
        };
        (task, cgroup, cpu)
    }

    fn reset(&mut self, ts: u64) -> Item {
        let (_, client) = self.client_ip();
        let local = match client {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10)),
        };
        let (sender, sender_state) = if self.rng.chance(800) {
            (0, None)
        } else {
            (self.next_skaddr - 0x980, Some(TimeWait))
        };
        Item::ResetSent(ResetSent {
            ts_boot_ns: ts,
            sender,
            sender_state,
            netns: INIT_NETNS,
            segment_src: Endpoint::new(client, 1024 + self.rng.below(64000) as u16),
            segment_dst: Endpoint::new(local, [22, 25, 3306, 8443][self.rng.below(4) as usize]),
        })
    }

    pub fn next_item(&mut self) -> Item {
        self.emitted += 1;
        if self.emitted.is_multiple_of(150_000) {
            self.lost += 1 + self.rng.below(50);
            return Item::Lost {
                total: self.lost,
                ts_boot_ns: self.next_arrival,
            };
        }
        loop {
            let next_due = self.due.peek().map_or(u64::MAX, |r| r.0 .0);
            if self.next_arrival <= next_due {
                let at = self.next_arrival;
                self.next_arrival += 1 + self.rng.below(2 * self.mean_arrival_ns);
                self.spawn(at);
                continue;
            }
            let Reverse((ts, id)) = self.due.pop().expect("a connection is due");
            if self.rng.chance(3) {
                // The connection's step comes a little later.
                self.due.push(Reverse((ts + 1 + self.rng.below(500), id)));
                return self.reset(ts);
            }
            let conn = self.conns[id].as_mut().expect("live connection");
            let step = conn.script[conn.pos];
            conn.pos += 1;
            let done = conn.pos == conn.script.len();
            let sides = conn.sides;
            let item = match step {
                Gap => {
                    let life = 1_000_000 + self.rng.below(200_000_000);
                    self.due.push(Reverse((ts + life, id)));
                    continue;
                }
                Accept(side) => {
                    let s = sides[side];
                    Item::Accepted(OwnerSeen {
                        ts_boot_ns: ts,
                        skaddr: s.skaddr,
                        task: s.owner,
                        cgroup_id: s.cgroup,
                        netns: s.netns,
                    })
                }
                T(side, old, new, ctx) => {
                    let s = sides[side];
                    let (task, cgroup_id, cpu) = match ctx {
                        Ctx::Owner => (s.owner, s.cgroup, self.rng.below(CPUS) as u32),
                        Ctx::Irq => self.irq_task(),
                    };
                    if new == Close && old != Close {
                        self.free_skaddrs.push(s.skaddr);
                    }
                    Item::Transition(Transition {
                        ts_boot_ns: ts,
                        skaddr: s.skaddr,
                        family: s.family,
                        local: s.local,
                        remote: s.remote,
                        old,
                        new,
                        task,
                        cgroup_id,
                        netns: s.netns,
                        cpu,
                    })
                }
            };
            if done {
                self.conns[id] = None;
                self.free_conns.push(id);
            } else {
                self.due
                    .push(Reverse((ts + 2_000 + self.rng.below(40_000), id)));
            }
            return item;
        }
    }
}

impl Iterator for Churn {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        Some(self.next_item())
    }
}

//! Fixtures the unit tests share: endpoints, tasks and transitions built
//! from short literals. Each test module states only what its case is
//! about and takes the rest from here.
use crate::{
    addr::Endpoint,
    tcp::{Family, TcpState},
    wire::{Comm, Task, Transition},
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The initial network namespace's inode on a typical host.
pub const INIT_NETNS: u32 = 4_026_531_840;

/// `"10.0.0.1:80"` or `"[::1]:80"`.
pub fn ep(text: &str) -> Endpoint {
    let addr: SocketAddr = text
        .parse()
        .unwrap_or_else(|e| panic!("test endpoint {text:?}: {e}"));
    Endpoint::new(addr.ip(), addr.port())
}

/// `10.0.0.last:port`.
pub fn ep10(last: u8, port: u16) -> Endpoint {
    Endpoint::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), port)
}

/// A task whose thread is its process (pid = tgid).
pub fn task(tgid: u32, comm: &str) -> Task {
    task_thread(tgid, tgid, comm)
}

/// A task on one of its threads.
pub fn task_thread(tgid: u32, pid: u32, comm: &str) -> Task {
    Task {
        tgid,
        pid,
        comm: Comm::from_str_lossy(comm),
    }
}

/// A transition `old -> new` of socket `skaddr` at `ts`, between two
/// loopback endpoints, in task 0 of netns 0; tests change the fields their
/// case is about with struct update syntax.
pub fn transition(ts: u64, skaddr: u64, old: TcpState, new: TcpState) -> Transition {
    let loopback = Endpoint::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1);
    Transition {
        ts_boot_ns: ts,
        skaddr,
        family: Family::Ipv4,
        local: loopback,
        remote: loopback,
        old,
        new,
        task: task(0, ""),
        cgroup_id: 0,
        netns: 0,
        cpu: 0,
    }
}

/// An ESTABLISHED IPv4 socket as `kill`/`stale` see it in a sock_diag dump:
/// port 80 towards a peer whose port follows the owner's pid (distinct
/// sockets per owner), with the owner `(tgid, comm)`, the timer kind and the
/// kernel's `tcp_info`.
pub fn established(
    owner: Option<(u32, &str)>,
    timer: u8,
    tcp_info: Option<crate::source::snapshot::tcp_info::TcpInfo>,
) -> crate::source::snapshot::inspect::Inspected {
    use crate::source::snapshot::{diag::DiagSocket, inspect::Inspected, owners::Holding};
    let ip = "192.0.2.1".parse().unwrap();
    Inspected {
        netns: 1,
        state: TcpState::Established,
        sock: DiagSocket {
            family: Family::Ipv4,
            state: 1,
            timer,
            retrans: 0,
            local: Endpoint::new(ip, 80),
            remote: Endpoint::new(ip, 40_000 + owner.map_or(0, |(tgid, _)| tgid) as u16),
            ifindex: 0,
            cookie: 1,
            expires_ms: 0,
            rqueue: 0,
            wqueue: 0,
            uid: 0,
            inode: 1,
            tcp_info,
        },
        owner: owner.map(|(tgid, comm)| Holding {
            tgid,
            comm: Comm::from_str_lossy(comm),
            holders: 1,
        }),
        cgroup_id: 0,
    }
}

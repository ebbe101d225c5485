//! Scenario tests: synthetic transition sequences shaped like what the
//! tracepoint reports on this kernel for loopback connections.
use super::time_wait::deferred::PEER_CLOSE_GRACE_NS;
use super::*;
use crate::{
    addr::{ip_from_wire, Endpoint},
    tcp::{Family, TcpState, TcpState::*},
    testkit::{ep, task_thread},
    wire::{self, Comm, Item, OwnerSeen, ResetSent, Task, Transition},
};
use std::net::{IpAddr, Ipv4Addr};

const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;
const NETNS: u32 = 4026531840;

const SERVER: &str = "127.0.0.1:8080";
const CLIENT: &str = "127.0.0.1:50000";
const ANY: &str = "0.0.0.0:0";
const L_SK: u64 = 0xffff_8880_0000_0100;
const C_SK: u64 = 0xffff_8880_0000_0200;
const S_SK: u64 = 0xffff_8880_0000_0300;
const CLIENT_TGID: u32 = 100;
const SERVER_TGID: u32 = 200;

/// A task on a thread other than its main one.
fn task(tgid: u32, comm: &str) -> Task {
    task_thread(tgid, tgid + 1, comm)
}

/// Interrupt context: the idle task.
fn softirq() -> Task {
    task(0, "swapper/0")
}

fn client_task() -> Task {
    task(CLIENT_TGID, "client")
}

fn server_task() -> Task {
    task(SERVER_TGID, "server")
}

/// One socket as its transitions report it.
#[derive(Clone, Copy)]
struct Sock {
    skaddr: u64,
    local: Endpoint,
    remote: Endpoint,
    /// The task on the CPU: context, not owner.
    task: Task,
    netns: u32,
}

impl Sock {
    fn new(skaddr: u64, local: &str, remote: &str, task: Task) -> Sock {
        Sock {
            skaddr,
            local: ep(local),
            remote: ep(remote),
            task,
            netns: NETNS,
        }
    }

    /// The same socket reporting another 4-tuple (before it is complete).
    fn at(self, local: &str, remote: &str) -> Sock {
        Sock {
            local: ep(local),
            remote: ep(remote),
            ..self
        }
    }

    /// The same socket with another task on the CPU.
    fn on(self, task: Task) -> Sock {
        Sock { task, ..self }
    }

    fn t(&self, ts: u64, old: TcpState, new: TcpState) -> Transition {
        Transition {
            ts_boot_ns: ts,
            skaddr: self.skaddr,
            family: Family::Ipv4,
            local: self.local,
            remote: self.remote,
            old,
            new,
            task: self.task,
            cgroup_id: 0,
            netns: self.netns,
            cpu: 0,
        }
    }
}

/// An owner observation as the model takes it: by accept() (what the
/// source delivers) or by socket I/O.
#[derive(Clone, Copy)]
struct Seen {
    ts: u64,
    skaddr: u64,
    owner: Owner,
}

fn seen(ts: u64, skaddr: u64, tgid: u32, comm: &str, how: OwnerHow) -> Seen {
    Seen {
        ts,
        skaddr,
        owner: Owner {
            tgid,
            pid: tgid + 1,
            comm: Comm::from_str_lossy(comm),
            how,
            cgroup_id: 0,
        },
    }
}

/// The accept() item the source delivers for an observation.
fn accepted(seen: &Seen) -> Item {
    Item::Accepted(OwnerSeen {
        ts_boot_ns: seen.ts,
        skaddr: seen.skaddr,
        task: task_thread(seen.owner.tgid, seen.owner.pid, "o"),
        cgroup_id: seen.owner.cgroup_id,
        netns: NETNS,
    })
}

impl Model {
    fn observe(&mut self, seen: &Seen) {
        self.apply_owner(seen.ts, seen.skaddr, seen.owner);
    }
}

fn flow(local: &str, remote: &str) -> FlowKey {
    FlowKey {
        netns: NETNS,
        local: ep(local),
        remote: ep(remote),
    }
}

/// Applies one transition and checks the model's internal consistency.
fn step(m: &mut Model, t: Transition) -> Vec<Connection> {
    let finished = m.apply_transition(&t);
    m.check_invariants();
    finished
}

/// Applies a transition that must finish exactly one connection.
fn finish(m: &mut Model, t: Transition) -> Connection {
    let mut finished = step(m, t);
    assert_eq!(finished.len(), 1, "{finished:#?}");
    finished.pop().unwrap()
}

fn visited(conn: &Connection) -> Vec<TcpState> {
    conn.states().map(|v| v.state).collect()
}

fn owner_of(owner: Option<Owner>) -> Option<(u32, OwnerHow)> {
    owner.map(|o| (o.tgid, o.how))
}

/// The loopback pair: listener, client, and the server's child. The child's
/// transitions run in softirq, here in the client's context: a model that
/// took the task on the CPU as the owner would pick the client.
struct Pair {
    client: Sock,
    server: Sock,
}

fn open_pair(m: &mut Model, accepted: Option<OwnerHow>) -> Pair {
    let listener = Sock::new(L_SK, SERVER, ANY, server_task());
    let client = Sock::new(C_SK, CLIENT, SERVER, client_task());
    let server = Sock::new(S_SK, SERVER, CLIENT, client_task());
    step(m, listener.t(1_000, Close, Listen));
    step(m, client.at("127.0.0.1:0", SERVER).t(S, Close, SynSent));
    let child = server.at(SERVER, "0.0.0.0:50000");
    step(m, child.t(S + 10 * US, Listen, SynRecv));
    step(m, client.t(S + 20 * US, SynSent, Established));
    step(m, server.t(S + 30 * US, SynRecv, Established));
    if let Some(how) = accepted {
        m.observe(&seen(S + 50 * US, S_SK, SERVER_TGID, "server", how));
    }
    Pair { client, server }
}

#[test]
fn client_closes_first() {
    let mut m = Model::default();
    let Pair { client, server } = open_pair(&mut m, Some(OwnerHow::Accept));

    let c = m.connection(C_SK).unwrap();
    assert_eq!(c.open, OpenKind::Active);
    assert_eq!(c.local, ep(CLIENT), "source port from SYN_SENT→ESTABLISHED");
    assert_eq!(owner_of(c.owner()), Some((CLIENT_TGID, OwnerHow::Connect)));
    let s = m.connection(S_SK).unwrap();
    assert_eq!(s.open, OpenKind::Passive);
    assert_eq!((s.local, s.remote), (ep(SERVER), ep(CLIENT)));
    assert_eq!(owner_of(s.owner()), Some((SERVER_TGID, OwnerHow::Accept)));
    let listener = s.listener().unwrap();
    assert_eq!(listener.skaddr, Some(L_SK));
    assert_eq!(
        owner_of(listener.owner),
        Some((SERVER_TGID, OwnerHow::Listen))
    );
    assert!(!listener.ambiguous);

    step(&mut m, client.t(2 * S, Established, FinWait1));
    step(&mut m, server.t(2 * S + 10 * US, Established, CloseWait));
    step(&mut m, client.t(2 * S + 20 * US, FinWait1, FinWait2));
    // The orphaned client socket hands over to a time-wait socket ~14 µs
    // later, long before the server's FIN.
    let closed_at = 2 * S + 34 * US;
    let c = finish(
        &mut m,
        client.on(server_task()).t(closed_at, FinWait2, Close),
    );
    let path = vec![SynSent, Established, FinWait1, FinWait2, Close];
    assert_eq!(visited(&c), path);
    assert_eq!(c.closed_first, ClosedFirst::Local);
    assert_eq!(c.end, Some(EndKind::Normal));
    assert_eq!(c.time_wait, TimeWaitFate::Entered);
    assert_eq!(c.lifetime_ns(), Some(closed_at - S));
    assert!(!c.uncertain);

    let entry = *m.time_wait().get(&flow(CLIENT, SERVER)).unwrap();
    assert_eq!(
        owner_of(entry.owner),
        Some((CLIENT_TGID, OwnerHow::Connect))
    );
    assert_eq!(entry.closed_first, ClosedFirst::Local);
    assert_eq!(entry.basis, ExpiryBasis::FinTimeoutEstimate);
    assert_eq!(entry.expires_ns, closed_at + 60 * S);

    // The server closes a second later: its FIN reaches the time-wait
    // socket, which from then on lives 60 s.
    step(
        &mut m,
        server.on(server_task()).t(3 * S, CloseWait, LastAck),
    );
    let entry = *m.time_wait().get(&flow(CLIENT, SERVER)).unwrap();
    assert_eq!(entry.basis, ExpiryBasis::PeerFin);
    assert_eq!(entry.expires_ns, 63 * S);
    let s = finish(&mut m, server.t(3 * S + 20 * US, LastAck, Close));
    let path = vec![SynRecv, Established, CloseWait, LastAck, Close];
    assert_eq!(visited(&s), path);
    assert_eq!(s.closed_first, ClosedFirst::Remote);
    assert_eq!(s.end, Some(EndKind::Normal));
    assert_eq!(s.time_wait, TimeWaitFate::None);

    assert_eq!(m.time_wait().len(), 1);
    assert_eq!(m.len(), 1, "only the listener is left");
    let counts = m.stat();
    assert_eq!(counts.count(TimeWait), 1);
    assert_eq!(counts.count(Listen), 1);
    let by_closer = &counts.time_wait_by_closed_first;
    assert_eq!(by_closer.get(&ClosedFirst::Local), Some(&1));
}

#[test]
fn server_closes_first_time_wait_goes_to_the_accepting_process() {
    let mut m = Model::default();
    let Pair { client, server } = open_pair(&mut m, Some(OwnerHow::Accept));
    let server = server.on(server_task());
    step(&mut m, server.t(2 * S, Established, FinWait1));
    step(&mut m, client.t(2 * S + 5 * US, Established, CloseWait));
    // The client reads EOF and closes at once: its FIN arrives while the
    // server is still a full FIN_WAIT2 socket.
    step(&mut m, server.t(2 * S + 10 * US, FinWait1, FinWait2));
    step(&mut m, client.t(2 * S + 40 * US, CloseWait, LastAck));
    // Runs in softirq in the client's context: not the owner.
    let closed_at = 2 * S + 50 * US;
    let s = finish(
        &mut m,
        server.on(client_task()).t(closed_at, FinWait2, Close),
    );
    assert_eq!(s.closed_first, ClosedFirst::Local);
    assert_eq!(s.time_wait, TimeWaitFate::Entered);
    let c = finish(&mut m, client.t(2 * S + 60 * US, LastAck, Close));
    assert_eq!(c.closed_first, ClosedFirst::Remote);
    assert_eq!(c.time_wait, TimeWaitFate::None);

    let entry = m.time_wait().get(&flow(SERVER, CLIENT)).unwrap();
    assert_eq!(owner_of(entry.owner), Some((SERVER_TGID, OwnerHow::Accept)));
    // The FIN came before the close: TIME_WAIT runs from the close.
    assert_eq!(entry.basis, ExpiryBasis::PeerFin);
    assert_eq!(entry.expires_ns, closed_at + 60 * S);
    assert!(m.time_wait().get(&flow(CLIENT, SERVER)).is_none());
    let by_process = m.time_wait().by_process();
    assert_eq!(by_process.len(), 1);
    assert_eq!(by_process[0].tgid, Some(SERVER_TGID));
    assert_eq!(by_process[0].count, 1);
}

#[test]
fn unaccepted_server_socket_is_charged_to_its_listener_as_inherited() {
    let mut m = Model::default();
    let Pair { server, .. } = open_pair(&mut m, None);
    assert_eq!(
        m.connection(S_SK).unwrap().owner(),
        None,
        "not yet accepted"
    );
    step(&mut m, server.t(2 * S, Established, FinWait1));
    step(&mut m, server.t(2 * S + 10 * US, FinWait1, FinWait2));
    let s = finish(&mut m, server.t(2 * S + 20 * US, FinWait2, Close));
    assert_eq!(s.owner(), None);
    let entry = m.time_wait().get(&flow(SERVER, CLIENT)).unwrap();
    let inherited = Some((SERVER_TGID, OwnerHow::InheritedFromListener));
    assert_eq!(owner_of(entry.owner), inherited);
}

#[test]
fn accept_replaces_an_owner_seen_through_io_but_not_the_reverse() {
    let mut m = Model::default();
    open_pair(&mut m, Some(OwnerHow::SocketIo));
    m.observe(&seen(S + 60 * US, S_SK, 300, "worker", OwnerHow::Accept));
    m.observe(&seen(S + 70 * US, S_SK, 400, "other", OwnerHow::SocketIo));
    let owner = m.connection(S_SK).unwrap().owner();
    assert_eq!(owner_of(owner), Some((300, OwnerHow::Accept)));
    // Observations from interrupt context are never owners.
    m.observe(&seen(S + 80 * US, C_SK, 0, "swapper/0", OwnerHow::SocketIo));
    let owner = m.connection(C_SK).unwrap().owner();
    assert_eq!(owner_of(owner), Some((CLIENT_TGID, OwnerHow::Connect)));
    assert_eq!(m.stats().owner_ignored, 1);
}

#[test]
fn owner_comes_only_from_process_context() {
    let mut m = Model::default();
    // A connect() from the idle task cannot be: no owner rather than pid 0.
    let idle = Sock::new(1, "10.0.0.1:0", "10.0.0.2:80", softirq());
    step(&mut m, idle.t(10, Close, SynSent));
    assert_eq!(m.connection(1).unwrap().owner(), None);
    // Mid-life transitions never give an owner, whatever task runs them.
    let busy = Sock::new(2, "10.0.0.1:1", "10.0.0.2:80", task(77, "busy"));
    step(&mut m, busy.t(20, Established, CloseWait));
    let conn = m.connection(2).unwrap();
    assert_eq!((conn.owner(), conn.open), (None, OpenKind::Unknown));
    assert_eq!(visited(conn), vec![Established, CloseWait]);
    assert_eq!(conn.states().next().unwrap().entered_ns, None);
    assert_eq!(conn.closed_first, ClosedFirst::Remote);
}

#[test]
fn simultaneous_close_leaves_time_wait_on_both_sides() {
    let mut m = Model::default();
    let Pair { client, server } = open_pair(&mut m, Some(OwnerHow::Accept));
    step(&mut m, client.t(2 * S, Established, FinWait1));
    step(&mut m, server.t(2 * S + US, Established, FinWait1));
    step(&mut m, client.t(2 * S + 5 * US, FinWait1, Closing));
    step(&mut m, server.t(2 * S + 6 * US, FinWait1, Closing));
    let c = finish(&mut m, client.t(2 * S + 9 * US, Closing, Close));
    let s = finish(&mut m, server.t(2 * S + 10 * US, Closing, Close));
    for conn in [&c, &s] {
        assert_eq!(conn.closed_first, ClosedFirst::Both);
        assert_eq!(conn.end, Some(EndKind::Normal));
        assert_eq!(conn.time_wait, TimeWaitFate::Entered);
    }
    let c = m.time_wait().get(&flow(CLIENT, SERVER)).unwrap();
    assert_eq!(c.closed_first, ClosedFirst::Both);
    assert_eq!(c.owner.unwrap().tgid, CLIENT_TGID);
    assert_eq!(c.basis, ExpiryBasis::TimeWaitLen);
    assert_eq!(c.expires_ns, 62 * S + 9 * US);
    let s = m.time_wait().get(&flow(SERVER, CLIENT)).unwrap();
    assert_eq!(s.closed_first, ClosedFirst::Both);
    assert_eq!(s.owner.unwrap().tgid, SERVER_TGID);
    let counts = m.stat();
    assert_eq!(
        counts.time_wait_by_closed_first.get(&ClosedFirst::Both),
        Some(&2)
    );
}

#[test]
fn reset_leaves_no_time_wait() {
    let mut m = Model::default();
    let Pair { client, server } = open_pair(&mut m, Some(OwnerHow::Accept));
    let c = finish(&mut m, client.t(2 * S, Established, Close));
    let s = finish(&mut m, server.t(2 * S + 5 * US, Established, Close));
    for conn in [&c, &s] {
        assert_eq!(conn.closed_first, ClosedFirst::Reset);
        assert_eq!(conn.end, Some(EndKind::Reset));
        assert_eq!(conn.time_wait, TimeWaitFate::None);
    }
    assert!(m.time_wait().is_empty());
}

#[test]
fn a_reset_from_the_local_peer_kills_a_time_wait_waiting_for_its_fin() {
    let mut m = Model::default();
    let Pair { client, server } = open_pair(&mut m, Some(OwnerHow::Accept));
    step(&mut m, client.t(2 * S, Established, FinWait1));
    step(&mut m, server.t(2 * S + US, Established, CloseWait));
    step(&mut m, client.t(2 * S + 2 * US, FinWait1, FinWait2));
    finish(&mut m, client.t(2 * S + 3 * US, FinWait2, Close));
    assert_eq!(m.time_wait().len(), 1);
    // The server closes with unread data: RST instead of FIN.
    let s = finish(&mut m, server.t(3 * S, CloseWait, Close));
    assert_eq!(s.end, Some(EndKind::Reset));
    assert!(m.time_wait().is_empty());
    assert_eq!(m.stats().time_wait.reset, 1);
}

#[test]
fn refused_and_timed_out_connects() {
    let mut m = Model::default();
    let sock = Sock::new(1, "127.0.0.1:41000", "127.0.0.1:9", client_task());
    step(
        &mut m,
        sock.at("127.0.0.1:0", "127.0.0.1:9").t(S, Close, SynSent),
    );
    let refused = finish(&mut m, sock.on(softirq()).t(S + 80 * US, SynSent, Close));
    assert_eq!(refused.end, Some(EndKind::Refused));
    assert_eq!(refused.closed_first, ClosedFirst::NotClosed);
    assert_eq!(
        refused.local,
        ep("127.0.0.1:41000"),
        "tuple from the last transition"
    );
    assert_eq!(
        owner_of(refused.owner()),
        Some((CLIENT_TGID, OwnerHow::Connect))
    );
    assert_eq!(
        refused.states().next().unwrap().duration_ns(),
        Some(80 * US)
    );

    let sock = Sock::new(1, "10.0.0.1:41001", "192.0.2.1:80", client_task());
    step(
        &mut m,
        sock.at("10.0.0.1:0", "192.0.2.1:80")
            .t(2 * S, Close, SynSent),
    );
    let timeout = finish(&mut m, sock.on(softirq()).t(5 * S, SynSent, Close));
    assert_eq!(timeout.end, Some(EndKind::Timeout));
    assert_ne!(timeout.id, refused.id);
    assert_eq!(timeout.owner().unwrap().tgid, CLIENT_TGID);

    // First seen at SYN_SENT→CLOSE: how long it waited is unknown.
    let sock = Sock::new(2, "10.0.0.1:41002", "192.0.2.1:80", client_task());
    let unknown = finish(&mut m, sock.t(9 * S, SynSent, Close));
    assert_eq!(unknown.end, Some(EndKind::Unknown));
    assert_eq!(unknown.open, OpenKind::Active);
    assert!(m.time_wait().is_empty());
}

#[test]
fn listen_then_close() {
    let mut m = Model::default();
    let sock = Sock::new(L_SK, "0.0.0.0:9000", ANY, server_task());
    step(&mut m, sock.t(S, Close, Listen));
    assert_eq!(m.stat().count(Listen), 1);
    let listener = finish(&mut m, sock.on(softirq()).t(5 * S, Listen, Close));
    assert_eq!(listener.open, OpenKind::Listener);
    assert_eq!(listener.end, Some(EndKind::Normal));
    assert_eq!(listener.closed_first, ClosedFirst::NotClosed);
    assert_eq!(
        owner_of(listener.owner()),
        Some((SERVER_TGID, OwnerHow::Listen))
    );
    assert_eq!(listener.lifetime_ns(), Some(4 * S));
    assert_eq!(listener.time_wait, TimeWaitFate::None);
    assert!(m.is_empty());
    assert_eq!(m.stat().total(), 0);
}

#[test]
fn address_reuse_after_close_starts_a_new_connection() {
    let mut m = Model::default();
    let sock = Sock::new(7, "10.0.0.1:40000", "10.0.0.2:80", client_task());
    step(
        &mut m,
        sock.at("10.0.0.1:0", "10.0.0.2:80").t(S, Close, SynSent),
    );
    step(&mut m, sock.t(S + MS, SynSent, Established));
    let first = finish(&mut m, sock.t(2 * S, Established, Close));
    // The freed address is reused right away by an unrelated listener.
    let sshd = Sock::new(7, "0.0.0.0:22", ANY, task(1, "sshd"));
    assert!(step(&mut m, sshd.t(2 * S + 1, Close, Listen)).is_empty());
    let second = m.connection(7).unwrap().clone();
    assert_ne!(second.id, first.id);
    assert_eq!(second.open, OpenKind::Listener);
    assert_eq!(owner_of(second.owner()), Some((1, OwnerHow::Listen)));
    assert_eq!(visited(&second), vec![Listen]);

    // A CLOSE that was missed: the next birth at the address ends the old
    // connection as unknown and uncertain.
    let next = sock.at("10.0.0.1:0", "10.0.0.3:80");
    let finished = step(&mut m, next.t(3 * S, Close, SynSent));
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].id, second.id);
    assert_eq!(finished[0].end, Some(EndKind::Unknown));
    assert!(finished[0].uncertain);
    assert_eq!(finished[0].ended_ns(), None);
    assert_eq!(m.stats().missed_close, 1);
    assert_eq!(m.connection(7).unwrap().open, OpenKind::Active);
}

#[test]
fn lost_events_mark_uncertain_and_inconsistent_sequences_do_not_panic() {
    let mut m = Model::default();
    let Pair { client, server } = open_pair(&mut m, Some(OwnerHow::Accept));
    m.on_lost(0);
    assert_eq!(m.stats().uncertain_marked, 0);
    m.on_lost(5);
    assert!(m.connections().all(|c| c.uncertain));
    assert_eq!(m.stats().uncertain_marked, 3);
    assert_eq!(m.stats().lost_events, 5);
    m.on_lost(5);
    assert_eq!(m.stats().uncertain_marked, 3, "no growth, nothing new");

    // The client's FIN_WAIT1 and FIN_WAIT2 were lost: the kernel's word is
    // taken, the connection stays uncertain, the time-wait is recorded.
    let c = finish(&mut m, client.t(2 * S, FinWait2, Close));
    assert!(c.uncertain);
    assert_eq!(c.closed_first, ClosedFirst::Local);
    assert_eq!(c.time_wait, TimeWaitFate::Entered);
    assert_eq!(m.stats().inconsistent, 1);
    // Nonsense for the server: LAST_ACK→SYN_SENT, then CLOSE_WAIT→CLOSE.
    step(&mut m, server.t(3 * S, LastAck, SynSent));
    let s = finish(&mut m, server.t(4 * S, CloseWait, Close));
    assert!(s.uncertain);
    assert_eq!(s.end, Some(EndKind::Reset));
    assert_eq!(m.stats().inconsistent, 3);

    // Connections that start after the loss are certain; a counter that
    // restarts from zero and grows again is a loss.
    let later = Sock::new(9, "127.0.0.1:0", SERVER, client_task());
    step(&mut m, later.t(5 * S, Close, SynSent));
    assert!(!m.connection(9).unwrap().uncertain);
    m.on_lost(2);
    assert!(m.connection(9).unwrap().uncertain);
    assert_eq!(m.stats().lost_events, 7);
}

#[test]
fn out_of_order_transitions_in_one_batch_are_sorted() {
    let listener = Sock::new(L_SK, SERVER, ANY, server_task());
    let client = Sock::new(C_SK, CLIENT, SERVER, client_task());
    let server = Sock::new(S_SK, SERVER, CLIENT, client_task());
    let accept = seen(S + 4 * US, S_SK, SERVER_TGID, "server", OwnerHow::Accept);
    let t = Item::Transition;
    // The in-order story: open, client closes first, server closes.
    let in_order = vec![
        t(listener.t(1_000, Close, Listen)),
        t(client.at("127.0.0.1:0", SERVER).t(S, Close, SynSent)),
        t(server
            .at(SERVER, "0.0.0.0:50000")
            .t(S + US, Listen, SynRecv)),
        t(client.t(S + 2 * US, SynSent, Established)),
        t(server.t(S + 3 * US, SynRecv, Established)),
        accepted(&accept),
        t(client.t(2 * S, Established, FinWait1)),
        t(server.t(2 * S + US, Established, CloseWait)),
        t(client.t(2 * S + 2 * US, FinWait1, FinWait2)),
        Item::Lost {
            total: 0,
            ts_boot_ns: 2 * S + 2 * US,
        },
        t(client.t(2 * S + 3 * US, FinWait2, Close)),
        t(server.t(2 * S + 4 * US, CloseWait, LastAck)),
        t(server.t(2 * S + 5 * US, LastAck, Close)),
    ];
    let mut expected = Model::default();
    let expected_finished = expected.apply_batch(&in_order);
    assert_eq!(expected.stats().inconsistent, 0);
    assert_eq!(expected_finished.len(), 2);

    // As read from the ring buffer: neighbours from different CPUs swapped.
    let mut shuffled = in_order.clone();
    for pair in shuffled.chunks_mut(2) {
        pair.reverse();
    }
    let mut m = Model::default();
    let finished = m.apply_batch(&shuffled);
    m.check_invariants();
    assert_eq!(finished, expected_finished);
    assert!(finished.iter().all(|c| !c.uncertain));
    assert_eq!(m.stats(), expected.stats());
    assert_eq!(m.stats().out_of_order, 0);
    let entries: Vec<_> = m.time_wait().iter().collect();
    assert_eq!(entries, expected.time_wait().iter().collect::<Vec<_>>());
}

#[test]
fn late_transitions_from_a_later_batch_are_merged_or_ignored() {
    let mut m = Model::default();
    let client = Sock::new(C_SK, CLIENT, SERVER, softirq());
    m.apply_batch(&[Item::Transition(client.t(
        S + 20 * US,
        SynSent,
        Established,
    ))]);
    assert_eq!(m.connection(C_SK).unwrap().owner(), None);
    // Its birth comes one batch later: merged, not a new socket.
    let birth = client.at("127.0.0.1:0", SERVER).on(client_task());
    let finished = m.apply_batch(&[Item::Transition(birth.t(S, Close, SynSent))]);
    assert!(finished.is_empty());
    let c = m.connection(C_SK).unwrap();
    assert!(c.birth_seen());
    assert_eq!(c.started_ns, S);
    assert_eq!(owner_of(c.owner()), Some((CLIENT_TGID, OwnerHow::Connect)));
    assert_eq!(c.states().next().unwrap().duration_ns(), Some(20 * US));
    assert_eq!(c.local, ep(CLIENT), "the later, complete tuple is kept");
    assert_eq!((m.stats().out_of_order, m.stats().missed_close), (1, 0));
    // Older than the socket: about a previous one at the address.
    step(&mut m, client.t(S / 2, Established, Close));
    assert_eq!(m.connection(C_SK).unwrap().state, Established);
    assert_eq!(m.stats().out_of_order, 2);

    // After the CLOSE, a late FIN_WAIT1→FIN_WAIT2 must not resurrect the
    // socket nor count as a reuse of its own time-wait.
    step(&mut m, client.t(2 * S, Established, FinWait1));
    finish(&mut m, client.t(2 * S + 20 * US, FinWait2, Close));
    assert!(step(&mut m, client.t(2 * S + 10 * US, FinWait1, FinWait2)).is_empty());
    assert!(m.is_empty());
    assert_eq!(m.time_wait().len(), 1);
    assert_eq!(m.stats().out_of_order, 3);
    // Even on another address (a record with a wrong address, or the close
    // forgotten): the time-wait socket dates the 4-tuple.
    let other = Sock {
        skaddr: 0x4242,
        ..client
    };
    step(&mut m, other.t(2 * S + 10 * US, FinWait1, FinWait2));
    assert!(m.is_empty());
    assert_eq!(m.stats().out_of_order, 4);
}

#[test]
fn ipv4_mapped_and_ipv4_are_the_same_tuple() {
    // An IPv4 socket leaves a time-wait socket...
    let mut m = Model::default();
    close_clients_first(&mut m, C_SK, 1, S);
    let tw_flow = flow("127.0.0.1:40000", SERVER);
    assert!(m.time_wait().get(&tw_flow).is_some());

    // ...and a dual-stack IPv6 socket, whose addresses the kernel reports
    // in the mapped form, connects with the same 4-tuple (tcp_tw_reuse).
    let mapped = |text: &str| {
        let v4 = ep(text);
        let IpAddr::V4(ip) = v4.ip else {
            unreachable!()
        };
        Endpoint::new(IpAddr::V6(ip.to_ipv6_mapped()), v4.port)
    };
    let v6 = Sock::new(0x999, "127.0.0.1:40000", SERVER, client_task());
    let raw = Transition {
        family: Family::Ipv6,
        local: mapped("127.0.0.1:40000"),
        remote: mapped(SERVER),
        ..v6.t(3 * S, SynSent, Established)
    };
    assert_ne!(raw.local, tw_flow.local, "different before decoding");
    let bytes = wire::event_bytes(&wire::encode(&raw));
    let Ok(Item::Transition(decoded)) = wire::decode(&bytes) else {
        panic!("decoding failed");
    };
    assert_eq!(
        (decoded.local, decoded.remote),
        (tw_flow.local, tw_flow.remote)
    );
    let localhost = Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets();
    assert_eq!(ip_from_wire(localhost), ep(SERVER).ip);
    let birth = Transition {
        ts_boot_ns: 3 * S - US,
        old: Close,
        new: SynSent,
        local: Endpoint::new(decoded.local.ip, 0),
        ..decoded
    };
    step(&mut m, birth);
    step(&mut m, decoded);
    assert!(
        m.time_wait().is_empty(),
        "the v6 socket reused the v4 time-wait"
    );
    assert_eq!(m.stats().time_wait.reused, 1);
    assert_eq!(m.connection(0x999).unwrap().family, Family::Ipv6);
}

/// `count` clients (sockets `base..`, local ports 40000..) each close
/// first, one per millisecond from `at`; returns their time-wait fates.
fn close_clients_first(m: &mut Model, base: u64, count: u16, at: u64) -> Vec<TimeWaitFate> {
    (0..count)
        .map(|i| {
            let local = format!("127.0.0.1:{}", 40_000 + i);
            let sock = Sock::new(base + u64::from(i), &local, SERVER, client_task());
            let ts = at + u64::from(i) * MS;
            step(m, sock.at("127.0.0.1:0", SERVER).t(ts, Close, SynSent));
            step(m, sock.t(ts + 1, SynSent, Established));
            step(m, sock.t(ts + 2, Established, FinWait1));
            step(m, sock.t(ts + 3, FinWait1, FinWait2));
            finish(m, sock.t(ts + 4, FinWait2, Close)).time_wait
        })
        .collect()
}

#[test]
fn max_tw_buckets_overflow_is_counted_never_over_counted() {
    let mut m = Model::new(ModelConfig {
        max_tw_buckets: 3,
        ..ModelConfig::default()
    });
    let fates = close_clients_first(&mut m, 0x1000, 5, S);
    use TimeWaitFate::{Entered, Overflow};
    assert_eq!(fates, vec![Entered, Entered, Entered, Overflow, Overflow]);
    assert_eq!(m.time_wait().len(), 3);
    assert_eq!(m.stat().count(TimeWait), 3);
    assert_eq!(m.stats().time_wait.skipped_overflow, 2);

    // Another namespace has its own limit, as in the kernel.
    let other_ns = Sock {
        netns: 7,
        ..Sock::new(0x2000, "127.0.0.1:40000", SERVER, client_task())
    };
    let conn = finish(&mut m, other_ns.t(2 * S, FinWait2, Close));
    assert_eq!(conn.time_wait, Entered);
    assert_eq!(m.time_wait().len_in_netns(NETNS), 3);

    // Once the kernel would have freed them (60 s later), closes fit again
    // even if nobody called expire().
    let fates = close_clients_first(&mut m, 0x3000, 2, 70 * S);
    assert_eq!(fates, vec![Entered, Entered]);
    assert_eq!(m.time_wait().len_in_netns(NETNS), 2);
    assert_eq!(m.stats().time_wait.skipped_overflow, 2);
    assert_eq!(m.stats().time_wait.expired, 4);
}

#[test]
fn time_wait_expiry() {
    let mut m = Model::new(ModelConfig {
        fin_timeout_secs: 90,
        ..ModelConfig::default()
    });
    close_clients_first(&mut m, 0x1000, 1, S);
    let closed_at = S + 4;
    let entry = *m.time_wait().iter().next().unwrap();
    assert_eq!(
        entry.expires_ns,
        closed_at + 90 * S,
        "the longer of 60 s and fin_timeout"
    );
    // Kept for the grace period past the predicted expiry: the kernel's
    // coarse timers free it late, never early.
    let grace = m.config().time_wait_grace_ns();
    assert_eq!(grace, 5 * S);
    assert!(m.expire(closed_at + 90 * S + grace - 1).is_empty());
    assert_eq!(m.expire(closed_at + 90 * S + grace), vec![entry]);
    assert!(m.time_wait().is_empty());
    assert_eq!(m.stats().time_wait.expired, 1);

    // A snapshot TIME_WAIT socket: start unknown, so the longest it can live.
    let existing = ExistingSocket {
        skaddr_or_cookie: None,
        netns: NETNS,
        family: Family::Ipv4,
        state: TimeWait,
        local: ep("127.0.0.1:41000"),
        remote: ep(SERVER),
        owner: None,
    };
    m.insert_existing(existing, 500 * S).unwrap();
    let entry = m.time_wait().get(&flow("127.0.0.1:41000", SERVER)).unwrap();
    assert_eq!(entry.basis, ExpiryBasis::Snapshot);
    assert_eq!((entry.expires_ns, entry.started_ns), (560 * S, None));
    assert_eq!(m.expire(560 * S + grace).len(), 1);

    // With the time left that sock_diag reports, the expiry is exact.
    let exact = ExistingSocket {
        local: ep("127.0.0.1:41001"),
        ..existing
    };
    m.insert_existing_expiring(exact, 600 * S, Some(7 * S))
        .unwrap();
    let entry = m.time_wait().get(&flow("127.0.0.1:41001", SERVER)).unwrap();
    assert_eq!(entry.expires_ns, 607 * S);
}

#[test]
fn time_wait_reuse_of_the_same_four_tuple() {
    let mut m = Model::default();
    close_clients_first(&mut m, 0x1000, 1, S);
    assert_eq!(m.time_wait().len(), 1);
    // Same local port, other destination: not a reuse.
    let other_dest = Sock::new(0x50, "127.0.0.1:40000", "127.0.0.1:9090", client_task());
    step(&mut m, other_dest.t(2 * S, SynSent, Established));
    // Same 4-tuple in another namespace: not a reuse either.
    let other_ns = Sock {
        netns: 7,
        ..Sock::new(0x51, "127.0.0.1:40000", SERVER, client_task())
    };
    step(&mut m, other_ns.t(2 * S, SynSent, Established));
    assert_eq!(m.time_wait().len(), 1);
    // The same 4-tuple again (tcp_tw_reuse).
    let again = Sock::new(0x60, "127.0.0.1:40000", SERVER, client_task());
    step(
        &mut m,
        again.at("127.0.0.1:0", SERVER).t(3 * S, Close, SynSent),
    );
    step(&mut m, again.t(3 * S + 1, SynSent, Established));
    assert!(m.time_wait().is_empty());
    assert_eq!(m.stats().time_wait.reused, 1);
    assert_eq!(m.stats().time_wait.expired, 0);

    // A reset reported from elsewhere removes an entry too.
    close_clients_first(&mut m, 0x2000, 1, 4 * S);
    let flow = m.time_wait().iter().next().unwrap().flow;
    assert!(m.time_wait_reset(&flow).is_some());
    assert_eq!(m.stats().time_wait.reset, 1);
}

#[test]
fn time_wait_queries_per_destination_and_port_range() {
    let mut m = Model::default();
    close_clients_first(&mut m, 0x1000, 10, S);
    let dests = m.time_wait().destinations((40_000, 40_099));
    assert_eq!(dests.len(), 1);
    assert_eq!(dests[0].remote, ep(SERVER));
    assert_eq!((dests[0].local_ports, dests[0].in_range), (10, 10));
    assert!((dests[0].share - 0.1).abs() < 1e-9);
    assert_eq!(m.time_wait().by_remote(), vec![(ep(SERVER), 10)]);
    assert_eq!(m.time_wait().by_remote_ip(), vec![(ep(SERVER).ip, 10)]);
    let procs = m.time_wait().by_process();
    assert_eq!((procs[0].tgid, procs[0].count), (Some(CLIENT_TGID), 10));
    assert_eq!(
        procs[0].comm.map(|c| c.as_string()).as_deref(),
        Some("client")
    );
}

/// A passive child of the listener on `port`, peer port `peer_port`,
/// accepted by `owner` if given, in CLOSE_WAIT from `cw_at`.
fn passive_in_close_wait(
    m: &mut Model,
    skaddr: u64,
    port: u16,
    peer_port: u16,
    owner: Option<(u32, &str)>,
    cw_at: u64,
) {
    let local = format!("127.0.0.1:{port}");
    let peer = format!("127.0.0.1:{peer_port}");
    let child = Sock::new(skaddr, &local, &peer, softirq());
    let first = child.at(&local, &format!("0.0.0.0:{peer_port}"));
    step(m, first.t(cw_at - 3 * MS, Listen, SynRecv));
    step(m, child.t(cw_at - 2 * MS, SynRecv, Established));
    if let Some((tgid, comm)) = owner {
        m.observe(&seen(cw_at - MS, skaddr, tgid, comm, OwnerHow::Accept));
    }
    step(m, child.t(cw_at, Established, CloseWait));
}

#[test]
fn close_wait_leak_of_exactly_37_sockets() {
    let mut m = Model::default();
    let listener = Sock::new(L_SK, SERVER, ANY, task(300, "leaky"));
    step(&mut m, listener.t(1, Close, Listen));
    for i in 0..37u16 {
        let cw_at = S + u64::from(i) * MS;
        let skaddr = 0x1000 + u64::from(i);
        passive_in_close_wait(
            &mut m,
            skaddr,
            8080,
            50_000 + i,
            Some((300, "leaky")),
            cw_at,
        );
    }
    // A well-behaved client: its peers close, it closes right after.
    for i in 0..5u16 {
        let local = format!("127.0.0.1:{}", 41_000 + i);
        let good = Sock::new(
            0x2000 + u64::from(i),
            &local,
            "127.0.0.1:7000",
            task(400, "good"),
        );
        step(
            &mut m,
            good.at("127.0.0.1:0", "127.0.0.1:7000")
                .t(S, Close, SynSent),
        );
        step(&mut m, good.t(S + 1, SynSent, Established));
        step(&mut m, good.t(S + 2, Established, CloseWait));
        step(&mut m, good.t(S + 3, CloseWait, LastAck));
        finish(&mut m, good.t(S + 4, LastAck, Close));
    }
    assert_eq!(m.leaks(S + 30 * S).total(), 0, "not yet past 30 s");

    let report = m.leaks(71 * S);
    assert_eq!(report.total(), 37);
    assert!(report.accept_backlog.is_empty());
    assert_eq!(
        report.by_owner.len(),
        1,
        "nothing for the well-behaved process"
    );
    let leak = &report.by_owner[0];
    assert_eq!((leak.tgid, leak.count), (Some(300), 37));
    assert_eq!(leak.comm.map(|c| c.as_string()).as_deref(), Some("leaky"));
    assert_eq!(leak.oldest_age_ns, 70 * S);
    assert!(!leak.age_is_lower_bound);
    assert_eq!(leak.local_ports, vec![8080]);
    assert_eq!(leak.remote_peers.len(), 37);

    let counts = m.stat();
    assert_eq!(counts.count(CloseWait), 37);
    let leaky = counts
        .by_process
        .iter()
        .find(|p| p.tgid == Some(300))
        .unwrap();
    assert_eq!(leaky.states.get(&CloseWait), Some(&37));
    assert_eq!(leaky.states.get(&Listen), Some(&1));
    assert_eq!(counts.by_local_port[&8080].get(CloseWait), Some(37));
    assert!(!counts.by_process.iter().any(|p| p.tgid == Some(400)));
}

#[test]
fn not_yet_accepted_close_wait_is_grouped_under_its_listener() {
    let mut m = Model::default();
    let listener = Sock::new(L_SK, "0.0.0.0:9000", ANY, task(500, "slow"));
    step(&mut m, listener.t(1, Close, Listen));
    for i in 0..4u16 {
        passive_in_close_wait(&mut m, 0x1000 + u64::from(i), 9000, 50_000 + i, None, S);
    }
    passive_in_close_wait(&mut m, 0x2000, 9000, 51_000, Some((500, "slow")), S);
    let report = m.leaks(60 * S);
    assert_eq!(report.accept_backlog.len(), 1);
    let backlog = &report.accept_backlog[0];
    assert_eq!(backlog.count, 4);
    assert_eq!(backlog.listener_skaddr, Some(L_SK));
    assert_eq!(backlog.listener_local, Some(ep("0.0.0.0:9000")));
    assert_eq!(
        owner_of(backlog.listener_owner),
        Some((500, OwnerHow::Listen))
    );
    assert_eq!(backlog.remote_peers.len(), 4);
    assert_eq!(report.by_owner.len(), 1, "the accepted one");
    assert_eq!(
        (report.by_owner[0].tgid, report.by_owner[0].count),
        (Some(500), 1)
    );
}

#[test]
fn listener_matching_prefers_the_exact_address_then_reports_ambiguity() {
    let mut m = Model::default();
    let any = Sock::new(0x10, "0.0.0.0:9000", ANY, task(500, "any"));
    let exact = Sock::new(0x11, "127.0.0.1:9000", ANY, task(600, "exact"));
    step(&mut m, any.t(1, Close, Listen));
    step(&mut m, exact.t(2, Close, Listen));
    let child = Sock::new(0x20, "127.0.0.1:9000", "0.0.0.0:1", softirq());
    step(&mut m, child.t(3, Listen, SynRecv));
    let listener = m.connection(0x20).unwrap().listener().unwrap();
    assert_eq!((listener.skaddr, listener.ambiguous), (Some(0x11), false));
    // A child on another local address only fits the wildcard listener.
    let child = Sock::new(0x21, "10.1.1.1:9000", "0.0.0.0:1", softirq());
    step(&mut m, child.t(4, Listen, SynRecv));
    assert_eq!(
        m.connection(0x21).unwrap().listener().unwrap().skaddr,
        Some(0x10)
    );
    // SO_REUSEPORT: a second exact listener, in another process.
    let exact2 = Sock::new(0x12, "127.0.0.1:9000", ANY, task(700, "exact2"));
    step(&mut m, exact2.t(5, Close, Listen));
    let child = Sock::new(0x22, "127.0.0.1:9000", "0.0.0.0:2", softirq());
    step(&mut m, child.t(6, Listen, SynRecv));
    let listener = m.connection(0x22).unwrap().listener().unwrap();
    assert!(listener.ambiguous);
    assert_eq!(listener.skaddr, Some(0x12), "the newest of the equals");
}

#[test]
fn bounded_eviction_drops_the_least_recently_updated() {
    let max = 64;
    let mut m = Model::new(ModelConfig {
        max_connections: max,
        ..ModelConfig::default()
    });
    for i in 0..1_000u64 {
        let sock = Sock::new(0x10_000 + i, "10.0.0.1:0", "10.0.0.2:80", client_task());
        step(&mut m, sock.t(i, Close, SynSent));
        // Socket 0 keeps being updated, so it is never the oldest.
        m.observe(&seen(i, 0x10_000, 1, "x", OwnerHow::SocketIo));
        assert!(m.len() <= max);
    }
    let stats = m.stats();
    assert!(stats.evicted >= 1_000 - max as u64, "{}", stats.evicted);
    assert!(m.connection(0x10_000).is_some());
    assert!(m.connection(0x10_000 + 999).is_some());
    assert!(m.connection(0x10_001).is_none());
    let accounted = stats.connections_finished + stats.evicted + m.len() as u64;
    assert_eq!(stats.connections_started, accounted);
}

#[test]
fn snapshot_sockets_are_continued_by_their_transitions() {
    let mut m = Model::default();
    let owner = Owner {
        tgid: 42,
        pid: 42,
        comm: Comm::from_str_lossy("db"),
        how: OwnerHow::Accept,
        cgroup_id: 0,
    };
    let existing = |skaddr, state, local: &str, remote: &str| ExistingSocket {
        skaddr_or_cookie: skaddr,
        netns: NETNS,
        family: Family::Ipv4,
        state,
        local: ep(local),
        remote: ep(remote),
        owner: Some(owner),
    };
    let now = 100 * S;
    let a = existing(Some(0xa), Established, "10.0.0.1:5432", "10.0.0.9:40000");
    let b = existing(None, Established, "10.0.0.1:5432", "10.0.0.9:40001");
    let listener = existing(None, Listen, "0.0.0.0:5432", ANY);
    let stuck = existing(None, CloseWait, "10.0.0.1:5432", "10.0.0.9:40002");
    for sock in [a, b, listener, stuck] {
        m.insert_existing(sock, now).unwrap();
    }
    let closed = existing(None, Close, "10.0.0.1:5432", ANY);
    let error = ExistingSocketError::UnsupportedState(Close);
    assert_eq!(m.insert_existing(closed, now), Err(error));
    assert_eq!(m.len(), 4);
    let conn = m.connection(0xa).unwrap();
    assert_eq!(conn.open, OpenKind::Preexisting);
    assert_eq!(owner_of(conn.owner()), Some((42, OwnerHow::Snapshot)));

    // Known address: continued. Unknown address: matched by 4-tuple, and a
    // listener by its local endpoint.
    let sa = Sock::new(0xa, "10.0.0.1:5432", "10.0.0.9:40000", softirq());
    let sb = Sock::new(0xb, "10.0.0.1:5432", "10.0.0.9:40001", task(42, "db"));
    let sl = Sock::new(0xc, "0.0.0.0:5432", ANY, task(42, "db"));
    step(&mut m, sa.t(101 * S, Established, CloseWait));
    step(&mut m, sb.t(101 * S, Established, FinWait1));
    let listener = finish(&mut m, sl.t(102 * S, Listen, Close));
    assert_eq!(listener.open, OpenKind::Preexisting);
    assert_eq!(m.stats().snapshot_adopted, 2);
    assert_eq!(m.stats().inconsistent, 0);
    assert_eq!(m.len(), 3);
    let conn = m.connection(0xb).unwrap();
    assert_eq!(
        (conn.open, conn.skaddr()),
        (OpenKind::Preexisting, Some(0xb))
    );
    assert_eq!(conn.owner().unwrap().tgid, 42);
    assert_eq!(visited(conn), vec![Established, FinWait1]);
    // Already in CLOSE_WAIT at the snapshot: its age is a lower bound.
    let report = m.leaks(200 * S);
    assert_eq!(report.by_owner[0].count, 2);
    assert_eq!(report.by_owner[0].oldest_age_ns, 100 * S);
    assert!(report.by_owner[0].age_is_lower_bound);
    // A snapshot repeating a socket already known adds nothing.
    let again = existing(Some(0xa), CloseWait, "10.0.0.1:5432", "10.0.0.9:40000");
    m.insert_existing(again, now).unwrap();
    assert_eq!(m.len(), 3);
}

#[test]
fn owner_seen_before_the_first_transition_waits_for_it() {
    let mut m = Model::default();
    // I/O on a socket older than the tracer, then its first transition.
    m.observe(&seen(S, 0x77, 9, "app", OwnerHow::SocketIo));
    assert_eq!(m.pending_owners(), 1);
    let old = Sock::new(0x77, "10.0.0.1:1", "10.0.0.2:2", softirq());
    step(&mut m, old.t(2 * S, Established, CloseWait));
    assert_eq!(m.connection(0x77).unwrap().owner().unwrap().tgid, 9);
    // An observation older than a birth at its address was about the
    // previous socket.
    m.observe(&seen(3 * S, 0x78, 9, "app", OwnerHow::SocketIo));
    let new = Sock::new(0x78, "10.0.0.1:0", "10.0.0.2:2", task(10, "new"));
    step(&mut m, new.t(4 * S, Close, SynSent));
    assert_eq!(m.connection(0x78).unwrap().owner().unwrap().tgid, 10);
    assert_eq!(m.pending_owners(), 0);
    assert_eq!(m.stats().owner_unmatched, 1);
}

#[test]
fn state_counts_group_by_process_port_and_remote() {
    let mut m = Model::default();
    open_pair(&mut m, Some(OwnerHow::Accept));
    close_clients_first(&mut m, 0x1000, 2, 2 * S);
    let counts = m.stat();
    assert_eq!(counts.count(Established), 2);
    assert_eq!(counts.count(Listen), 1);
    assert_eq!(counts.count(TimeWait), 2);
    assert_eq!(counts.total(), 5);
    let client = counts
        .by_process
        .iter()
        .find(|p| p.tgid == Some(CLIENT_TGID))
        .unwrap();
    assert_eq!(client.states.get(&Established), Some(&1));
    assert_eq!(client.states.get(&TimeWait), Some(&2));
    assert_eq!(counts.by_local_port[&8080].get(Listen), Some(1));
    assert_eq!(counts.by_local_port[&8080].get(Established), Some(1));
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let remote_total = counts.by_remote_ip[&localhost].total();
    assert_eq!(remote_total, 4, "the listener has no remote");
}

/// The client closes first; its own way into TIME_WAIT is then missed: the
/// model last saw it enter `believed` (FIN_WAIT1, FIN_WAIT2 or CLOSING).
/// The server is left in CLOSE_WAIT (or LAST_ACK after CLOSING).
fn client_stuck_closing(m: &mut Model, believed: TcpState) -> Pair {
    let pair = open_pair(m, Some(OwnerHow::Accept));
    let (client, server) = (pair.client, pair.server);
    step(m, client.t(2 * S, Established, FinWait1));
    step(m, server.t(2 * S + 10 * US, Established, CloseWait));
    match believed {
        FinWait2 => {
            step(m, client.t(2 * S + 20 * US, FinWait1, FinWait2));
        }
        Closing => {
            step(m, client.t(2 * S + 20 * US, FinWait1, Closing));
        }
        _ => {}
    }
    // Missed: FIN_WAIT1→FIN_WAIT2 at 2 s + 20 µs, FIN_WAIT2→CLOSE at
    // 2 s + 34 µs (or CLOSING→CLOSE).
    pair
}

#[test]
fn missed_client_close_is_recovered_from_the_local_peer_last_ack() {
    for believed in [FinWait1, FinWait2, Closing] {
        let mut m = Model::default();
        let Pair { client, server } = client_stuck_closing(&mut m, believed);
        let server = server.on(server_task());
        step(&mut m, server.t(3 * S, CloseWait, LastAck));
        assert_eq!(m.connection(C_SK).unwrap().state, believed);
        // The server's FIN was acknowledged: the client got it.
        let closed_at = 3 * S + 20 * US;
        let finished = step(&mut m, server.on(softirq()).t(closed_at, LastAck, Close));
        assert_eq!(finished.len(), 1, "{finished:#?}");
        assert_eq!(
            m.connection(C_SK).unwrap().state,
            believed,
            "waits for its own close"
        );
        // Nothing of the client's in the grace: the next item after it
        // settles the inference.
        let after = closed_at + PEER_CLOSE_GRACE_NS + 1;
        let mut settled = Vec::new();
        m.apply_into(
            &Item::Lost {
                total: 0,
                ts_boot_ns: after,
            },
            &mut settled,
        );
        m.check_invariants();
        assert_eq!(settled.len(), 1, "{settled:#?}");
        let (c, s) = (&settled[0], &finished[0]);
        assert_eq!(s.skaddr(), Some(S_SK));
        assert_eq!(s.end, Some(EndKind::Normal));
        assert_eq!(c.skaddr(), Some(C_SK));
        assert_eq!(c.end, Some(EndKind::Normal));
        assert_eq!(c.ended_ns(), Some(closed_at));
        assert!(c.uncertain);
        assert_eq!(c.time_wait, TimeWaitFate::Entered);
        assert_eq!(visited(c).last(), Some(&Close));
        let both = believed == Closing;
        let closer = if both {
            ClosedFirst::Both
        } else {
            ClosedFirst::Local
        };
        assert_eq!(c.closed_first, closer);
        assert!(m.connection(C_SK).is_none());

        let entry = *m.time_wait().get(&flow(CLIENT, SERVER)).unwrap();
        assert!(entry.inferred);
        assert_eq!(entry.basis, ExpiryBasis::PeerFin);
        assert_eq!(entry.expires_ns, 3 * S + 60 * S, "LAST_ACK + 60 s");
        assert_eq!(entry.started_ns, Some(closed_at));
        assert_eq!(entry.closed_first, closer);
        assert_eq!(entry.connection_id, Some(c.id));
        assert_eq!(entry.owner.unwrap().tgid, CLIENT_TGID);
        let stats = m.stats();
        assert_eq!(stats.inferred_closes, 1);
        assert_eq!(stats.connections_finished, 2);
        assert_eq!(stats.time_wait.inserted, 1);
        assert_eq!(m.len(), 1, "only the listener is left");

        // The lost-event count comes a batch later; then the transitions
        // that were missed turn up after all (delayed, not lost), one of
        // them stamped after the inferred close: all ignored, no duplicate
        // entry, no new connection.
        let old = if both { Closing } else { FinWait2 };
        let late = [
            Item::Lost {
                total: 1,
                ts_boot_ns: 2 * S + 20 * US,
            },
            Item::Transition(client.t(2 * S + 20 * US, FinWait1, FinWait2)),
            Item::Transition(client.t(2 * S + 34 * US, old, Close)),
        ];
        assert!(m.apply_batch(&late).is_empty());
        let skewed = client.t(closed_at + US, old, Close);
        assert!(step(&mut m, skewed).is_empty());
        let stats = m.stats();
        assert_eq!(stats.out_of_order, 3);
        assert_eq!(stats.connections_started, 3);
        assert_eq!(stats.connections_finished, 2);
        assert_eq!(stats.time_wait.inserted, 1);
        assert_eq!(stats.time_wait.reused, 0);
        assert_eq!(m.time_wait().len(), 1);
        assert_eq!(m.time_wait().get(&flow(CLIENT, SERVER)), Some(&entry));
        assert_eq!(m.len(), 1);
    }
}

#[test]
fn a_close_that_comes_after_its_peers_is_applied_as_seen() {
    // The kernel can emit the peer's LAST_ACK→CLOSE before our side's own
    // way into TIME_WAIT (the ACK processed inside tcp_time_wait()): the
    // real transitions arriving in the grace replace the inference.
    for believed in [FinWait1, FinWait2, Closing] {
        let mut m = Model::default();
        let Pair { client, server } = client_stuck_closing(&mut m, believed);
        let server = server.on(server_task());
        step(&mut m, server.t(3 * S, CloseWait, LastAck));
        let closed_at = 3 * S + 20 * US;
        let finished = step(&mut m, server.on(softirq()).t(closed_at, LastAck, Close));
        assert_eq!(finished.len(), 1, "only the server: {finished:#?}");
        if believed == FinWait1 {
            assert!(step(&mut m, client.t(closed_at + US, FinWait1, FinWait2)).is_empty());
        }
        let old = if believed == Closing {
            Closing
        } else {
            FinWait2
        };
        let real = closed_at + 3 * US;
        let c = finish(&mut m, client.t(real, old, Close));
        assert_eq!(c.skaddr(), Some(C_SK));
        assert!(!c.uncertain, "{c:#?}");
        assert_eq!(c.end, Some(EndKind::Normal));
        assert_eq!(c.ended_ns(), Some(real));
        assert_eq!(c.time_wait, TimeWaitFate::Entered);
        let entry = *m.time_wait().get(&flow(CLIENT, SERVER)).unwrap();
        assert!(!entry.inferred);
        assert_eq!(entry.started_ns, Some(real));
        if believed != Closing {
            // The peer's FIN, kept while the inference waited, dates it:
            // TIME_WAIT counts from the later of that FIN and our close.
            assert_eq!(entry.basis, ExpiryBasis::PeerFin);
            assert_eq!(entry.expires_ns, real + 60 * S);
        }
        // The grace passing changes nothing more.
        let mut settled = Vec::new();
        m.settle(&mut settled);
        assert!(settled.is_empty(), "{settled:#?}");
        let stats = m.stats();
        assert_eq!(stats.closes_after_peer, 1);
        assert_eq!(stats.inferred_closes, 0);
        assert_eq!(stats.out_of_order, 0);
        assert_eq!(stats.time_wait.inserted, 1);
        m.check_invariants();
    }
}

#[test]
fn the_end_of_the_input_settles_closes_still_waiting() {
    let mut m = Model::default();
    let Pair { server, .. } = client_stuck_closing(&mut m, FinWait2);
    let server = server.on(server_task());
    step(&mut m, server.t(3 * S, CloseWait, LastAck));
    let closed_at = 3 * S + 20 * US;
    assert_eq!(step(&mut m, server.t(closed_at, LastAck, Close)).len(), 1);
    let mut settled = Vec::new();
    m.settle(&mut settled);
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0].skaddr(), Some(C_SK));
    assert!(settled[0].uncertain);
    assert_eq!(settled[0].ended_ns(), Some(closed_at));
    assert!(m.time_wait().get(&flow(CLIENT, SERVER)).unwrap().inferred);
    assert_eq!(m.stats().inferred_closes, 1);
    m.settle(&mut settled);
    assert_eq!(settled.len(), 1, "settled once");
    m.check_invariants();
}

#[test]
fn a_peer_close_does_not_finish_a_connection_that_is_not_closing() {
    // Nothing to infer for a client seen all the way to CLOSE, or for one
    // that is not closing (inconsistent input, or another 4-tuple).
    let mut m = Model::default();
    let Pair { server, .. } = open_pair(&mut m, Some(OwnerHow::Accept));
    step(&mut m, server.t(2 * S, Established, CloseWait));
    step(&mut m, server.t(2 * S + US, CloseWait, LastAck));
    let finished = step(&mut m, server.t(2 * S + 2 * US, LastAck, Close));
    assert_eq!(finished.len(), 1);
    assert_eq!(m.connection(C_SK).unwrap().state, Established);
    assert_eq!(m.stats().inferred_closes, 0);
    assert!(m.time_wait().is_empty());
}

#[test]
fn supersede_of_a_closing_connection_infers_time_wait_with_or_without_lost_events() {
    let next = Sock::new(C_SK, "127.0.0.1:0", "127.0.0.1:9090", client_task());
    let reborn = 4 * S;
    for lost in [false, true] {
        let mut m = Model::default();
        let Pair { client, server } = client_stuck_closing(&mut m, FinWait1);
        if lost {
            m.on_lost(1);
        }
        // A new socket at the client's address: its CLOSE was missed.
        let finished = step(&mut m, next.t(reborn, Close, SynSent));
        assert_eq!(finished.len(), 1);
        let c = &finished[0];
        assert_eq!((c.end, c.ended_ns()), (Some(EndKind::Unknown), None));
        assert!(c.uncertain);
        assert_eq!(m.stats().missed_close, 1);
        // The lost counter usually arrives a batch after the miss: the
        // supersede alone is the evidence.
        assert_eq!(m.stats().lost_events, u64::from(lost));
        assert_eq!(c.time_wait, TimeWaitFate::Entered);
        let entry = *m.time_wait().get(&flow(CLIENT, SERVER)).unwrap();
        assert!(entry.inferred);
        assert_eq!(entry.basis, ExpiryBasis::Superseded);
        assert_eq!(entry.expires_ns, reborn + 60 * S);
        assert_eq!(entry.started_ns, None);
        assert_eq!(entry.closed_first, ClosedFirst::Local);
        assert_eq!(entry.connection_id, Some(c.id));
        assert_eq!(m.stats().inferred_superseded, 1);

        // A late record of the old socket: out of order, nothing new.
        assert!(step(&mut m, client.t(2 * S + 34 * US, FinWait2, Close)).is_empty());
        assert_eq!(m.stats().out_of_order, 1);
        assert_eq!(m.time_wait().len(), 1);
        assert_eq!(m.stats().time_wait.inserted, 1);
        assert_eq!(m.connection(C_SK).unwrap().state, SynSent);

        // The server's FIN, seen later, dates the entry; its final ACK
        // finishes nothing more (the client is gone already).
        let server = server.on(server_task());
        step(&mut m, server.t(5 * S, CloseWait, LastAck));
        let entry = *m.time_wait().get(&flow(CLIENT, SERVER)).unwrap();
        assert_eq!(entry.basis, ExpiryBasis::PeerFin);
        assert_eq!(entry.expires_ns, 65 * S);
        assert!(entry.inferred);
        assert_eq!(step(&mut m, server.t(5 * S + US, LastAck, Close)).len(), 1);
        assert_eq!(m.stats().inferred_closes, 0);
        assert_eq!(m.connection(C_SK).unwrap().state, SynSent);
    }
}

#[test]
fn supersede_after_the_peer_fin_dates_the_inferred_entry_from_it() {
    let mut m = Model::default();
    let Pair { server, .. } = client_stuck_closing(&mut m, FinWait2);
    m.on_lost(3);
    step(&mut m, server.t(3 * S, CloseWait, LastAck));
    let next = Sock::new(C_SK, "127.0.0.1:0", "127.0.0.1:9090", client_task());
    let finished = step(&mut m, next.t(3 * S + 5 * US, Close, SynSent));
    assert_eq!(finished[0].time_wait, TimeWaitFate::Entered);
    let entry = m.time_wait().get(&flow(CLIENT, SERVER)).unwrap();
    assert!(entry.inferred);
    assert_eq!(entry.basis, ExpiryBasis::PeerFin);
    assert_eq!(entry.expires_ns, 63 * S);
    // Under a reset from the server instead, the entry goes.
    let mut m = Model::default();
    let Pair { server, .. } = client_stuck_closing(&mut m, FinWait2);
    m.on_lost(3);
    step(&mut m, next.t(3 * S, Close, SynSent));
    assert_eq!(m.time_wait().len(), 1);
    step(&mut m, server.t(3 * S + US, CloseWait, Close));
    assert!(m.time_wait().is_empty());
    assert_eq!(m.stats().time_wait.reset, 1);
}

fn reset(src: &str, dst: &str, sender: Option<TcpState>, ts: u64) -> ResetSent {
    ResetSent {
        ts_boot_ns: ts,
        sender: 0,
        netns: NETNS,
        segment_src: ep(src),
        segment_dst: ep(dst),
        sender_state: sender,
    }
}

fn apply_reset(m: &mut Model, r: ResetSent) {
    assert!(m.apply(&Item::ResetSent(r)).is_empty());
    m.check_invariants();
}

const TW_CLIENT: &str = "127.0.0.1:40000";

#[test]
fn a_listener_reset_kills_the_client_time_wait_unless_rfc1337() {
    for rfc1337 in [false, true] {
        let mut m = Model::new(ModelConfig {
            rfc1337,
            ..ModelConfig::default()
        });
        close_clients_first(&mut m, 0x1000, 2, S);
        assert_eq!(m.time_wait().len(), 2);
        // A late segment of the closed connection reached the listener,
        // which answered with a RST; the RST reaches the client's
        // time-wait socket.
        let rst = reset(TW_CLIENT, SERVER, Some(Listen), 2 * S);
        apply_reset(&mut m, rst);
        let stats = m.stats();
        assert_eq!(stats.resets_seen, 1);
        let tw = flow(TW_CLIENT, SERVER);
        if rfc1337 {
            assert!(m.time_wait().get(&tw).is_some());
            assert_eq!(
                (stats.time_wait.reset, stats.resets_time_wait_removed),
                (0, 0)
            );
        } else {
            assert!(m.time_wait().get(&tw).is_none());
            assert_eq!(m.time_wait().len(), 1, "the other one stays");
            assert_eq!(
                (stats.time_wait.reset, stats.resets_time_wait_removed),
                (1, 1)
            );
        }
    }
}

/// Two namespaces joined by a veth pair: the client's side, its server's
/// listener in another namespace.
const VETH_CLIENT: &str = "192.0.2.2:40000";
const VETH_SERVER: &str = "192.0.2.1:8081";
const SERVER_NETNS: u32 = 4026532001;

/// A client in `netns` that closed first towards `remote`: one TIME_WAIT
/// entry.
fn close_first_in(m: &mut Model, netns: u32, skaddr: u64, local: &str, remote: &str, at: u64) {
    let sock = Sock {
        netns,
        ..Sock::new(skaddr, local, remote, client_task())
    };
    step(m, sock.at("0.0.0.0:0", remote).t(at, Close, SynSent));
    step(m, sock.t(at + 1, SynSent, Established));
    step(m, sock.t(at + 2, Established, FinWait1));
    step(m, sock.t(at + 3, FinWait1, FinWait2));
    let conn = finish(m, sock.t(at + 4, FinWait2, Close));
    assert_eq!(conn.time_wait, TimeWaitFate::Entered);
}

/// The listener's RST answering a late segment (the client's time-wait
/// socket acknowledging a retransmitted FIN after the server's socket was
/// gone).
fn listener_reset_from(netns: u32, ts: u64) -> ResetSent {
    ResetSent {
        netns,
        ..reset(VETH_CLIENT, VETH_SERVER, Some(Listen), ts)
    }
}

#[test]
fn a_listener_reset_reaches_the_client_time_wait_in_another_namespace() {
    let mut m = Model::default();
    close_first_in(&mut m, NETNS, 0x1000, VETH_CLIENT, VETH_SERVER, S);
    close_first_in(&mut m, NETNS, 0x1001, "192.0.2.2:40001", VETH_SERVER, S);
    // The server's namespace has no such entry: the RST went over the veth.
    apply_reset(&mut m, listener_reset_from(SERVER_NETNS, 2 * S));
    let tw = FlowKey {
        netns: NETNS,
        ..flow(VETH_CLIENT, VETH_SERVER)
    };
    assert!(m.time_wait().get(&tw).is_none());
    assert_eq!(m.time_wait().len(), 1, "the other one stays");
    let stats = m.stats();
    assert_eq!(
        (stats.time_wait.reset, stats.resets_time_wait_removed),
        (1, 1)
    );
}

#[test]
fn a_listener_reset_prefers_its_own_namespace_and_never_guesses() {
    // The sender's namespace has the 4-tuple too: that is where it went.
    let mut m = Model::default();
    close_first_in(&mut m, NETNS, 0x1000, VETH_CLIENT, VETH_SERVER, S);
    close_first_in(&mut m, SERVER_NETNS, 0x2000, VETH_CLIENT, VETH_SERVER, S);
    apply_reset(&mut m, listener_reset_from(SERVER_NETNS, 2 * S));
    assert_eq!(m.time_wait().len_in_netns(NETNS), 1);
    assert_eq!(m.time_wait().len_in_netns(SERVER_NETNS), 0);

    // Two other namespaces have it: which one got the RST is unknown.
    let mut m = Model::default();
    close_first_in(&mut m, NETNS, 0x1000, VETH_CLIENT, VETH_SERVER, S);
    close_first_in(&mut m, 7, 0x2000, VETH_CLIENT, VETH_SERVER, S);
    apply_reset(&mut m, listener_reset_from(SERVER_NETNS, 2 * S));
    assert_eq!(m.time_wait().len(), 2);
    assert_eq!(m.stats().resets_ambiguous, 1);
    assert_eq!(m.stats().resets_time_wait_removed, 0);

    // With rfc1337 the client's time-wait socket ignores it.
    let mut m = Model::new(ModelConfig {
        rfc1337: true,
        ..ModelConfig::default()
    });
    close_first_in(&mut m, NETNS, 0x1000, VETH_CLIENT, VETH_SERVER, S);
    apply_reset(&mut m, listener_reset_from(SERVER_NETNS, 2 * S));
    assert_eq!(m.time_wait().len(), 1);

    // A RST sent by a time-wait socket destroys that socket, in the
    // sender's own namespace only.
    let mut m = Model::default();
    close_first_in(&mut m, NETNS, 0x1000, VETH_CLIENT, VETH_SERVER, S);
    apply_reset(
        &mut m,
        ResetSent {
            netns: SERVER_NETNS,
            ..reset(VETH_SERVER, VETH_CLIENT, Some(TimeWait), 2 * S)
        },
    );
    assert_eq!(m.time_wait().len(), 1);
}

#[test]
fn a_reset_sent_by_a_time_wait_socket_destroys_it() {
    // Even with rfc1337: that protects against resets received.
    let mut m = Model::new(ModelConfig {
        rfc1337: true,
        ..ModelConfig::default()
    });
    close_clients_first(&mut m, 0x1000, 1, S);
    // A segment from the server to the client's time-wait socket, answered
    // with a RST by that socket (TCP_TW_RST).
    apply_reset(&mut m, reset(SERVER, TW_CLIENT, Some(TimeWait), 2 * S));
    assert!(m.time_wait().is_empty());
    assert_eq!(m.stats().time_wait.reset, 1);
    assert_eq!(m.stats().resets_time_wait_removed, 1);
}

#[test]
fn resets_that_match_no_time_wait_are_harmless() {
    let mut m = Model::default();
    open_pair(&mut m, Some(OwnerHow::Accept));
    close_clients_first(&mut m, 0x1000, 1, S);
    let before = m.stats();
    let live = m.connection(C_SK).unwrap().clone();
    // Unknown tuple, no socket at all.
    apply_reset(&mut m, reset("10.9.9.9:1", "10.9.9.8:2", None, 2 * S));
    // Wrong direction: the time-wait socket is the segment's destination,
    // but a listener sent the RST (it went to the server's side).
    apply_reset(&mut m, reset(SERVER, TW_CLIENT, Some(Listen), 2 * S));
    // Towards a live, established connection: its own CLOSE will show it.
    apply_reset(&mut m, reset(CLIENT, SERVER, Some(Listen), 2 * S));
    // Older than the time-wait socket: about the socket before it.
    apply_reset(&mut m, reset(TW_CLIENT, SERVER, Some(Listen), S));
    // Same tuple, another namespace: a loopback address never leaves its
    // namespace (another namespace's own is another socket).
    let elsewhere = ResetSent {
        netns: 7,
        ..reset(TW_CLIENT, SERVER, Some(Listen), 2 * S)
    };
    apply_reset(&mut m, elsewhere);
    let stats = m.stats();
    assert_eq!(stats.resets_seen, 5);
    assert_eq!(
        ModelStats {
            resets_seen: before.resets_seen,
            ..stats
        },
        before
    );
    assert_eq!(m.time_wait().len(), 1);
    assert_eq!(m.connection(C_SK), Some(&live));
    assert_eq!(live.state, Established);
    // After its predicted expiry, a reset finds nothing to kill: the entry
    // goes as expired.
    apply_reset(&mut m, reset(TW_CLIENT, SERVER, Some(Listen), 100 * S));
    assert!(m.time_wait().is_empty());
    let tw = m.stats().time_wait;
    assert_eq!((tw.expired, tw.reset), (1, 0));
}

#[test]
fn a_reset_with_an_unknown_namespace_acts_only_when_one_namespace_matches() {
    let mut m = Model::default();
    close_clients_first(&mut m, 0x1000, 1, S);
    let unknown_ns = ResetSent {
        netns: 0,
        ..reset(TW_CLIENT, SERVER, Some(Listen), 2 * S)
    };
    apply_reset(&mut m, unknown_ns);
    assert!(m.time_wait().is_empty());
    assert_eq!(m.stats().resets_time_wait_removed, 1);

    // The same 4-tuple in TIME_WAIT in two namespaces: ambiguous.
    close_clients_first(&mut m, 0x2000, 1, 3 * S);
    let other_ns = Sock {
        netns: 7,
        ..Sock::new(0x3000, TW_CLIENT, SERVER, client_task())
    };
    finish(&mut m, other_ns.t(3 * S, FinWait2, Close));
    assert_eq!(m.time_wait().len(), 2);
    let later = ResetSent {
        ts_boot_ns: 4 * S,
        ..unknown_ns
    };
    apply_reset(&mut m, later);
    assert_eq!(m.time_wait().len(), 2);
    assert_eq!(m.stats().resets_ambiguous, 1);
    // Known namespace: exact.
    let in_7 = ResetSent { netns: 7, ..later };
    apply_reset(&mut m, in_7);
    assert!(m.time_wait().get(&flow(TW_CLIENT, SERVER)).is_some());
    assert_eq!(m.time_wait().len_in_netns(7), 0);
    assert_eq!(m.stats().resets_time_wait_removed, 2);
}

#[test]
fn resets_in_a_batch_are_ordered_by_time() {
    let mut m = Model::default();
    close_clients_first(&mut m, 0x1000, 1, S);
    // The RST (at 3 s) is delivered before the transitions that precede it;
    // sorting applies it last, against the second time-wait socket.
    let again = Sock::new(0x2000, TW_CLIENT, SERVER, client_task());
    let rst = reset(TW_CLIENT, SERVER, Some(Listen), 3 * S);
    let batch = [
        Item::ResetSent(rst),
        Item::Transition(again.at("127.0.0.1:0", SERVER).t(2 * S, Close, SynSent)),
        Item::Transition(again.t(2 * S + 1, SynSent, Established)),
        Item::Transition(again.t(2 * S + 2, Established, FinWait1)),
        Item::Transition(again.t(2 * S + 3, FinWait1, FinWait2)),
        Item::Transition(again.t(2 * S + 4, FinWait2, Close)),
    ];
    assert_eq!(Item::ResetSent(rst).ts_boot_ns(), 3 * S);
    assert_eq!(m.apply_batch(&batch).len(), 1);
    assert!(m.time_wait().is_empty());
    let tw = m.stats().time_wait;
    assert_eq!((tw.inserted, tw.reused, tw.reset), (2, 1, 1));
}

/// xorshift64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

const ENDPOINTS: [&str; 10] = [
    "127.0.0.1:0",
    "0.0.0.0:0",
    "127.0.0.1:8080",
    "127.0.0.1:50000",
    "127.0.0.1:50001",
    "[::1]:8080",
    "[::]:0",
    "10.0.0.1:80",
    "10.0.0.2:40000",
    "[::ffff:127.0.0.1]:50000",
];

fn random_transition(rng: &mut Rng, m: &Model, ts: &mut u64) -> Transition {
    let skaddr = 1 + rng.below(40);
    // Mostly bursts, sometimes long pauses; now and then a record from the
    // past or from the end of time (not followed by the next ones).
    let stamp = match rng.below(64) {
        0..=3 => ts.saturating_sub(rng.below(5_000)),
        4 => u64::MAX - rng.below(4),
        5..=8 => {
            *ts = ts.saturating_add(rng.below(100 * S));
            *ts
        }
        _ => {
            *ts = ts.saturating_add(rng.below(20 * MS));
            *ts
        }
    };
    // Half the time follow the model, to reach the deeper paths.
    let old = match m.connection(skaddr) {
        Some(conn) if rng.below(2) == 0 => conn.state,
        _ => rng.pick(&TcpState::ALL),
    };
    Transition {
        ts_boot_ns: stamp,
        skaddr,
        family: rng.pick(&[Family::Ipv4, Family::Ipv6]),
        local: ep(rng.pick(&ENDPOINTS)),
        remote: ep(rng.pick(&ENDPOINTS)),
        old,
        new: rng.pick(&TcpState::ALL),
        task: task(rng.below(3) as u32, "t"),
        cgroup_id: 0,
        netns: 1 + rng.below(2) as u32,
        cpu: 0,
    }
}

fn random_owner(rng: &mut Rng, ts: u64) -> Seen {
    let how = rng.pick(&[OwnerHow::Accept, OwnerHow::SocketIo]);
    let at = ts.saturating_sub(rng.below(S));
    seen(at, 1 + rng.below(60), rng.below(4) as u32, "o", how)
}

fn random_existing(rng: &mut Rng) -> ExistingSocket {
    ExistingSocket {
        skaddr_or_cookie: (rng.below(2) == 0).then(|| 1 + rng.below(60)),
        netns: 1 + rng.below(2) as u32,
        family: Family::Ipv4,
        state: rng.pick(&TcpState::ALL),
        local: ep(rng.pick(&ENDPOINTS)),
        remote: ep(rng.pick(&ENDPOINTS)),
        owner: None,
    }
}

fn random_reset(rng: &mut Rng, m: &Model, ts: u64) -> ResetSent {
    let stamp = match rng.below(16) {
        0 => u64::MAX - rng.below(4),
        1 => rng.below(S),
        _ => ts.saturating_sub(rng.below(2 * S)),
    };
    let sender_state = match rng.below(4) {
        0 => None,
        1 => Some(TimeWait),
        2 => Some(Listen),
        _ => Some(rng.pick(&TcpState::ALL)),
    };
    let entries = m.time_wait().len() as u64;
    // Often aimed at a time-wait socket, either way round, in its
    // namespace or an unknown one, to reach the removals.
    let target = (entries > 0 && rng.below(2) == 0)
        .then(|| m.time_wait().iter().nth(rng.below(entries) as usize))
        .flatten()
        .map(|e| e.flow);
    let (segment_src, segment_dst, netns) = match target {
        Some(flow) => {
            let other = 1 + rng.below(2) as u32;
            let netns = rng.pick(&[0, flow.netns, other]);
            if rng.below(2) == 0 {
                (flow.local, flow.remote, netns)
            } else {
                (flow.remote, flow.local, netns)
            }
        }
        None => (
            ep(rng.pick(&ENDPOINTS)),
            ep(rng.pick(&ENDPOINTS)),
            rng.below(3) as u32,
        ),
    };
    ResetSent {
        ts_boot_ns: stamp,
        sender: 0,
        netns,
        segment_src,
        segment_dst,
        sender_state,
    }
}

#[test]
fn hostile_input_never_panics() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut m = Model::new(ModelConfig {
        max_tw_buckets: 4,
        max_connections: 16,
        max_pending_owners: 4,
        close_wait_leak_secs: 0,
        fin_timeout_secs: 30,
        ..ModelConfig::default()
    });
    let mut ts = 0u64;
    let mut finished = 0u64;
    for _ in 0..30_000 {
        match rng.below(100) {
            0..=64 => {
                let t = random_transition(&mut rng, &m, &mut ts);
                finished += m.apply_transition(&t).len() as u64;
            }
            65..=69 => {
                let r = random_reset(&mut rng, &m, ts);
                assert!(m.apply(&Item::ResetSent(r)).is_empty());
            }
            70..=79 => m.observe(&random_owner(&mut rng, ts)),
            80..=82 => m.on_lost(rng.below(100)),
            83..=87 => {
                let now = ts.saturating_sub(rng.below(200 * S));
                m.expire(now.saturating_add(rng.below(200 * S)));
            }
            88..=90 => {
                let _ = m.insert_existing(random_existing(&mut rng), ts);
            }
            91..=92 => {
                let counts = m.stat();
                assert!(m.leaks(ts).total() <= counts.count(CloseWait));
                assert_eq!(counts.count(TimeWait), m.time_wait().len());
                let range = (rng.below(65_536) as u16, rng.below(65_536) as u16);
                for dest in m.time_wait().destinations(range) {
                    assert!(dest.in_range <= dest.local_ports);
                    assert!((0.0..=1.0).contains(&dest.share));
                }
                m.time_wait().by_process();
                m.time_wait().by_remote_ip();
            }
            _ => {
                let batch: Vec<Item> = (0..rng.below(8))
                    .map(|_| match rng.below(10) {
                        0 => Item::Lost {
                            total: rng.below(100),
                            ts_boot_ns: ts,
                        },
                        1..=2 => accepted(&random_owner(&mut rng, ts)),
                        3 => Item::ResetSent(random_reset(&mut rng, &m, ts)),
                        _ => Item::Transition(random_transition(&mut rng, &m, &mut ts)),
                    })
                    .collect();
                finished += m.apply_batch(&batch).len() as u64;
            }
        }
        m.check_invariants();
        let stats = m.stats();
        let accounted = stats.connections_finished + stats.evicted + m.len() as u64;
        assert_eq!(stats.connections_started, accounted);
        let tw = stats.time_wait;
        let gone = tw.expired + tw.reused + tw.reset;
        assert_eq!(tw.inserted, m.time_wait().len() as u64 + gone);
        assert!(m.time_wait().len_in_netns(1) <= 4);
        assert!(m.time_wait().len_in_netns(2) <= 4);
        assert!(stats.resets_time_wait_removed <= tw.reset);
        for entry in m.time_wait().iter() {
            // Inferred entries are only made for closing sockets, and those
            // made at a supersede have no start.
            assert!(matches!(
                entry.closed_first,
                ClosedFirst::Local | ClosedFirst::Both
            ));
            if entry.basis == ExpiryBasis::Superseded {
                assert!(entry.inferred && entry.started_ns.is_none());
            }
        }
    }
    let stats = m.stats();
    assert_eq!(stats.connections_finished, finished);
    // The generator must reach the interesting paths, or it proves little.
    assert!(stats.inconsistent > 100, "{stats:?}");
    assert!(stats.missed_close > 10, "{stats:?}");
    assert!(stats.out_of_order > 10, "{stats:?}");
    assert!(stats.evicted > 10, "{stats:?}");
    assert!(stats.time_wait.inserted > 10, "{stats:?}");
    assert!(stats.time_wait.skipped_overflow > 0, "{stats:?}");
    assert!(stats.snapshot_adopted > 0, "{stats:?}");
    assert!(stats.resets_seen > 1_000, "{stats:?}");
    assert!(stats.resets_time_wait_removed > 10, "{stats:?}");
    assert!(stats.resets_ambiguous > 0, "{stats:?}");
    assert!(stats.inferred_superseded > 10, "{stats:?}");
    assert!(stats.inferred_closes > 0, "{stats:?}");
}

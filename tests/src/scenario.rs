//! Connection scenarios on real sockets, and what the tracepoint must show
//! for each of them.
use crate::{
    netns::{self, in_netns, NetnsPair},
    tracer::{Collected, Tracer},
};
use socket2::{Domain, SockAddr, Socket, Type};
use std::{
    collections::BTreeMap,
    io::Read,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};
use tcpstate::{tcp::TcpState, wire::Transition};

/// Where the two ends of a scenario live.
#[derive(Clone, Copy, Debug)]
pub enum Network {
    LoopbackV4,
    LoopbackV6,
    /// Two namespaces joined by a veth pair, IPv4 between them.
    VethV4,
    VethV6,
}

/// A network set up for one scenario; removes its namespaces when dropped.
pub struct Net {
    pub server_ip: IpAddr,
    pub client_ip: IpAddr,
    pub server_ns: Option<String>,
    pub client_ns: Option<String>,
    _pair: Option<NetnsPair>,
}

impl Net {
    pub fn new(network: Network) -> Net {
        let loopback = |ip: IpAddr| Net {
            server_ip: ip,
            client_ip: ip,
            server_ns: None,
            client_ns: None,
            _pair: None,
        };
        let veth = |server: IpAddr, client: IpAddr| {
            let pair = NetnsPair::create();
            Net {
                server_ip: server,
                client_ip: client,
                server_ns: Some(pair.server.clone()),
                client_ns: Some(pair.client.clone()),
                _pair: Some(pair),
            }
        };
        match network {
            Network::LoopbackV4 => loopback(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Network::LoopbackV6 => loopback(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            Network::VethV4 => veth(netns::SERVER_V4.into(), netns::CLIENT_V4.into()),
            Network::VethV6 => veth(netns::SERVER_V6.into(), netns::CLIENT_V6.into()),
        }
    }

    fn domain(&self) -> Domain {
        Domain::for_address(SocketAddr::new(self.server_ip, 0))
    }

    /// A TCP socket in the server's namespace, bound to an ephemeral port.
    pub fn bound_server_socket(&self) -> (Socket, SocketAddr) {
        let domain = self.domain();
        let addr = SocketAddr::new(self.server_ip, 0);
        let socket = in_netns(self.server_ns.as_deref(), move || {
            Socket::new(domain, Type::STREAM, None).expect("socket")
        });
        socket.bind(&addr.into()).expect("bind server");
        let local = local_addr(&socket);
        (socket, local)
    }

    /// An unbound TCP socket in the client's namespace.
    pub fn client_socket(&self) -> Socket {
        let domain = self.domain();
        let socket = in_netns(self.client_ns.as_deref(), move || {
            Socket::new(domain, Type::STREAM, None).expect("socket")
        });
        socket
            .set_read_timeout(Some(crate::secs(5)))
            .expect("timeout");
        socket
    }

    fn unspecified(&self) -> SocketAddr {
        let ip = match self.server_ip {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        SocketAddr::new(ip, 0)
    }
}

fn local_addr(socket: &Socket) -> SocketAddr {
    socket
        .local_addr()
        .expect("local_addr")
        .as_socket()
        .expect("inet")
}

fn read_to_eof(socket: &mut Socket) {
    let mut buf = [0u8; 65536];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => panic!("reading until EOF: {e}"),
        }
    }
}

/// (old, new) of one transition.
type StatePair = (TcpState, TcpState);

/// One expected transition: (old, new, local, remote).
pub type Step = (TcpState, TcpState, SocketAddr, SocketAddr);

/// What one scenario must produce: each socket's exact sequence.
#[derive(Debug)]
pub struct Expected {
    pub port: u16,
    pub sockets: Vec<(&'static str, Vec<Step>)>,
}

impl Expected {
    pub fn total(&self) -> usize {
        self.sockets.iter().map(|(_, steps)| steps.len()).sum()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    ClientClosesFirst,
    ServerClosesFirst,
    BothCloseAtOnce,
    ResetByLinger0,
    Refused,
    ListenThenClose,
}

/// Runs `scenario` on `network` under a tracer and checks what it delivered.
pub fn run_and_check(network: Network, scenario: Scenario) {
    crate::require_root();
    let net = Net::new(network);
    let (tracer, expected) = drive(&net, scenario, Tracer::on_port);
    let complete = tracer.wait_until(crate::secs(10), |seen| seen.len() >= expected.total());
    // Anything extra from these sockets would arrive in the same burst; give
    // it time to show up before judging.
    std::thread::sleep(crate::millis(300));
    let collected = tracer.stop();
    assert!(
        complete,
        "{scenario:?} on {network:?}: only {} of {} transitions arrived: {:#?}",
        collected.transitions.len(),
        expected.total(),
        steps_of(&collected.transitions)
    );
    check(
        &collected,
        &expected,
        &format!("{scenario:?} on {network:?}"),
    );
}

use TcpState::*;

/// Drives `scenario` on `net`. `watch` is called with the server port once
/// it is known and before anything happens on it (to start a tracer).
pub fn drive<W>(net: &Net, scenario: Scenario, watch: impl FnOnce(u16) -> W) -> (W, Expected) {
    let (listener, server) = net.bound_server_socket();
    let port = server.port();
    let tracer = watch(port);
    let any = net.unspecified();
    let listen_steps = vec![(Close, Listen, server, any), (Listen, Close, server, any)];

    if scenario == Scenario::ListenThenClose {
        listener.listen(16).expect("listen");
        drop(listener);
        let sockets = vec![("listener", listen_steps)];
        return (tracer, Expected { port, sockets });
    }
    if scenario == Scenario::Refused {
        // `listener` stays bound but never listens: the SYN gets a RST.
        let client = net.client_socket();
        client
            .bind(&SockAddr::from(SocketAddr::new(net.client_ip, 0)))
            .expect("bind client");
        let me = local_addr(&client);
        let err = client
            .connect(&server.into())
            .expect_err("connect must be refused");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
        drop((client, listener));
        let steps = vec![(Close, SynSent, me, server), (SynSent, Close, me, server)];
        return (
            tracer,
            Expected {
                port,
                sockets: vec![("client", steps)],
            },
        );
    }

    listener.listen(16).expect("listen");
    let mut client = net.client_socket();
    if scenario == Scenario::BothCloseAtOnce {
        // A tiny receive window, so the server's FIN waits behind data.
        client.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    }
    client.connect(&server.into()).expect("connect");
    let me = local_addr(&client);
    let unbound = SocketAddr::new(net.client_ip, 0);
    let (mut child, _) = listener.accept().expect("accept");
    child
        .set_read_timeout(Some(crate::secs(5)))
        .expect("timeout");
    let open_client = vec![
        (Close, SynSent, unbound, server),
        (SynSent, Established, me, server),
    ];
    let open_child = vec![
        (Listen, SynRecv, server, me),
        (SynRecv, Established, server, me),
    ];
    let (client_close, child_close): (Vec<StatePair>, Vec<StatePair>) = match scenario {
        Scenario::ClientClosesFirst => {
            drop(client);
            read_to_eof(&mut child);
            drop(child);
            (active_close(), passive_close())
        }
        Scenario::ServerClosesFirst => {
            drop(child);
            read_to_eof(&mut client);
            drop(client);
            (passive_close(), active_close())
        }
        Scenario::BothCloseAtOnce => {
            both_close_at_once(&mut client, &mut child);
            drop((client, child));
            (
                vec![
                    (Established, FinWait1),
                    (FinWait1, FinWait2),
                    (FinWait2, Close),
                ],
                vec![
                    (Established, FinWait1),
                    (FinWait1, Closing),
                    (Closing, Close),
                ],
            )
        }
        Scenario::ResetByLinger0 => {
            client.set_linger(Some(Duration::ZERO)).expect("SO_LINGER");
            drop(client);
            // The RST closes the child; reading it reports the reset.
            let mut buf = [0u8; 16];
            let read = child.read(&mut buf);
            assert!(
                matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
                "expected a reset, got {read:?}"
            );
            drop(child);
            (vec![(Established, Close)], vec![(Established, Close)])
        }
        Scenario::Refused | Scenario::ListenThenClose => unreachable!(),
    };
    drop(listener);
    let with = |mut open: Vec<Step>, closing: Vec<StatePair>, local, remote| {
        open.extend(closing.into_iter().map(|(o, n)| (o, n, local, remote)));
        open
    };
    let sockets = vec![
        ("listener", listen_steps),
        ("client", with(open_client, client_close, me, server)),
        ("child", with(open_child, child_close, server, me)),
    ];
    (tracer, Expected { port, sockets })
}

fn active_close() -> Vec<StatePair> {
    vec![
        (Established, FinWait1),
        (FinWait1, FinWait2),
        (FinWait2, Close),
    ]
}

fn passive_close() -> Vec<StatePair> {
    vec![
        (Established, CloseWait),
        (CloseWait, LastAck),
        (LastAck, Close),
    ]
}

/// Both ends send their FIN before receiving the other's: the server's FIN
/// is queued behind data the client's full receive window holds back, so it
/// is still in flight when the client shuts down too.
fn both_close_at_once(client: &mut Socket, child: &mut Socket) {
    child.set_nonblocking(true).expect("nonblocking");
    let chunk = [0u8; 65536];
    loop {
        match child.send(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the window: {e}"),
        }
    }
    child
        .shutdown(std::net::Shutdown::Write)
        .expect("server shutdown");
    std::thread::sleep(crate::millis(50));
    client
        .shutdown(std::net::Shutdown::Write)
        .expect("client shutdown");
    std::thread::sleep(crate::millis(50));
    read_to_eof(client);
    child.set_nonblocking(false).expect("blocking");
    read_to_eof(child);
}

/// The (old, new, local, remote) of each transition, for failure messages.
pub fn steps_of(transitions: &[Transition]) -> Vec<String> {
    transitions
        .iter()
        .map(|t| {
            format!(
                "{:#x} {} -> {} {} {}",
                t.skaddr, t.old, t.new, t.local, t.remote
            )
        })
        .collect()
}

/// Splits transitions into socket lifetimes: by socket address, in time
/// order, a lifetime ending at CLOSE (the address can be reused after it).
pub fn lifetimes(transitions: &[Transition]) -> Vec<Vec<Transition>> {
    let mut sorted = transitions.to_vec();
    sorted.sort_by_key(|t| t.ts_boot_ns);
    let mut open: BTreeMap<u64, Vec<Transition>> = BTreeMap::new();
    let mut done = Vec::new();
    for t in sorted {
        let life = open.entry(t.skaddr).or_default();
        life.push(t);
        if t.new == Close {
            done.push(open.remove(&t.skaddr).expect("just inserted"));
        }
    }
    done.extend(open.into_values());
    done
}

/// Whether `t` is a child socket's LISTEN -> SYN_RECV carrying the
/// listener's addresses: on older kernels (seen on 6.1) that
/// transition fires before the peer's address and port are copied into the
/// new socket, so its remote end is still unspecified. The only step where
/// the remote end may differ from the expected one.
fn listener_view(t: &Transition, remote: SocketAddr) -> bool {
    t.old == Listen && t.new == SynRecv && remote.ip().is_unspecified() && remote.port() == 0
}

/// Each expected socket's sequence must match one lifetime exactly, and no
/// other lifetime may appear.
pub fn check(collected: &Collected, expected: &Expected, what: &str) {
    assert_eq!(collected.lost, 0, "{what}: the kernel lost events");
    let mut lives = lifetimes(&collected.transitions);
    for (role, steps) in &expected.sockets {
        let found = lives.iter().position(|life| {
            life.len() == steps.len()
                && life
                    .iter()
                    .zip(steps)
                    .all(|(t, &(old, new, local, remote))| {
                        let seen_remote = SocketAddr::new(t.remote.ip, t.remote.port);
                        t.old == old
                            && t.new == new
                            && SocketAddr::new(t.local.ip, t.local.port) == local
                            && (seen_remote == remote || listener_view(t, seen_remote))
                    })
        });
        match found {
            Some(index) => {
                lives.remove(index);
            }
            None => panic!(
                "{what}: no socket matched the {role}'s expected sequence\nexpected: {steps:#?}\nseen: {:#?}",
                lives.iter().map(|l| steps_of(l)).collect::<Vec<_>>()
            ),
        }
    }
    assert!(
        lives.is_empty(),
        "{what}: unexpected transitions on port {}: {:#?}",
        expected.port,
        lives.iter().map(|l| steps_of(l)).collect::<Vec<_>>()
    );
}

//! Port exhaustion (issue 11): in a client namespace whose
//! `ip_local_port_range` holds 100 ports, a client connects to one server
//! address until connect() fails. `tcpstate ports` must report the failures
//! for that client's pid, destination and errno with the exact count the
//! client saw, and the destination's 100 ports split by state as `ss`
//! shows them; a second destination has figures of its own; refused and
//! unreachable connects give their errnos with the caller's pid; a replay
//! of the recording gives the same report.
//!
//! Everything uses one port, so that `--port` filters in the kernel and the
//! ring buffer carries only this test's events whatever else the host does:
//! the exhausted destination is the server's IPv4 address, the second one
//! its IPv6 address (a pool of its own), the refused one the client's own
//! address (nothing listens there).
use serde_json::Value;
use std::{
    collections::BTreeMap,
    io::Read,
    net::{SocketAddr, TcpListener, TcpStream},
    process::Command,
};
use tcpstate_tests::{
    kernel,
    netns::{in_netns, netns_output, NetnsPair, CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6},
    require_root,
    running::{Peer, Running},
    secs,
    workload::Scratch,
};

const PEER: &str = env!("CARGO_BIN_EXE_tcpstate-test-peer");
/// The one port of the test.
const PORT: u16 = 8081;
const RANGE: (u16, u16) = (40000, 40099);
/// The client closes this many connections at once (they stay in
/// TIME_WAIT here) and keeps the others ESTABLISHED.
const CLOSE_FIRST: usize = 40;
/// Attempts after the first failure, each expected to fail too.
const EXTRA_ATTEMPTS: usize = 4;

fn ns_inode(name: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/run/netns/{name}"))
        .unwrap_or_else(|e| panic!("namespace {name}: {e}"))
        .ino()
}

fn sysctl_in(ns: &str, name: &'static str, value: &'static str) {
    in_netns(Some(ns), move || {
        let path = format!("/proc/sys/net/ipv4/{name}");
        std::fs::write(&path, value).unwrap_or_else(|e| panic!("writing {path}: {e}"));
    });
}

/// A server in the server namespace: each accepted connection is read to
/// EOF and closed (so that a client that closes first ends in TIME_WAIT);
/// the ones the client keeps stay open until the client dies.
fn serve(ns: &str, addr: SocketAddr) {
    let listener = in_netns(Some(ns), move || TcpListener::bind(addr).expect("bind"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
}

/// `ss` in namespace `ns`: sockets towards `peer`, counted by state (in
/// tcpstate's names).
fn ss_states(ns: &str, peer: SocketAddr) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in netns_output(ns, &["ss", "-Htan"]).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 5 || fields[4] != peer.to_string() {
            continue;
        }
        let state = match fields[0] {
            "ESTAB" => "ESTABLISHED".to_string(),
            other => other.replace("FIN-WAIT-", "FIN_WAIT").replace('-', "_"),
        };
        *counts.entry(state).or_insert(0) += 1;
    }
    counts
}

/// The local addresses of the time-wait sockets towards `peer` in `ns`.
fn time_wait_locals(ns: &str, peer: SocketAddr) -> Vec<SocketAddr> {
    netns_output(ns, &["ss", "-Htan", "state", "time-wait"])
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Recv-Q Send-Q Local Peer (a state filter drops the state column).
            (fields.len() >= 4 && fields[3] == peer.to_string())
                .then(|| fields[2].parse().expect("ss prints addresses"))
        })
        .collect()
}

/// `ss -tan` in namespace `ns`, as it prints it.
fn ss_listing(ns: &str) -> String {
    netns_output(ns, &["ss", "-tan"])
}

/// The TCP counters of both namespaces, to tell afterwards what the
/// kernel did that no transition shows (a time-wait socket ended by a RST,
/// retransmissions).
struct Counters {
    client: BTreeMap<String, u64>,
    server: BTreeMap<String, u64>,
}

impl Counters {
    fn read(pair: &NetnsPair) -> Counters {
        Counters {
            client: kernel::tcp_counters_in(&pair.client),
            server: kernel::tcp_counters_in(&pair.server),
        }
    }

    /// What moved since `self`, and both namespaces' sockets: printed
    /// with a failed comparison of the states, so that it explains itself.
    fn evidence(&self, pair: &NetnsPair) -> Evidence {
        let now = Counters::read(pair);
        let rsts = |c: &BTreeMap<String, u64>| c.get("TcpOutRsts").copied().unwrap_or(0);
        Evidence {
            server_rsts: rsts(&now.server) - rsts(&self.server),
            text: format!(
                "client namespace counters: {}\nserver namespace counters: {}\n\
                 client sockets:\n{}server sockets:\n{}",
                kernel::counters_moved(&self.client, &now.client),
                kernel::counters_moved(&self.server, &now.server),
                ss_listing(&pair.client),
                ss_listing(&pair.server),
            ),
        }
    }
}

struct Evidence {
    /// RSTs the server's namespace sent.
    server_rsts: u64,
    text: String,
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Waits until no socket towards `peer` is between states any more (the
/// closed ones have reached TIME_WAIT).
fn settled(ns: &str, peer: SocketAddr) -> BTreeMap<String, u64> {
    let deadline = std::time::Instant::now() + secs(20);
    loop {
        let states = ss_states(ns, peer);
        if states
            .keys()
            .all(|s| s == "ESTABLISHED" || s == "TIME_WAIT")
        {
            return states;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sockets towards {peer} did not settle: {states:?}"
        );
        std::thread::sleep(tcpstate_tests::millis(50));
    }
}

/// The last report a `ports --json` run printed.
fn last_report(lines: &[String], what: &str) -> Value {
    let line = lines
        .iter()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("{what} printed no report: {lines:#?}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: {e}: {line}"))
}

fn destination(report: &Value, netns: u64, remote: SocketAddr) -> &Value {
    report["destinations"]
        .as_array()
        .expect("destinations")
        .iter()
        .find(|d| d["netns"] == netns && d["remote"] == remote.to_string())
        .unwrap_or_else(|| panic!("no destination {remote} in netns {netns}: {report:#}"))
}

fn failures<'a>(report: &'a Value, netns: u64, call: &str, errno: i32) -> Vec<&'a Value> {
    report["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .filter(|f| f["netns"] == netns && f["call"] == call && f["errno"] == errno)
        .collect()
}

fn counts(states: &Value) -> BTreeMap<String, u64> {
    states
        .as_object()
        .expect("by_state")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().expect("a count")))
        .collect()
}

/// A blocking connect() from the client namespace by this process (a
/// non-blocking one would return EINPROGRESS); its errno. Both failures
/// here are immediate: a RST from the server's namespace, or no route.
fn failing_connect(ns: &str, to: SocketAddr) -> i32 {
    in_netns(Some(ns), move || {
        let err = TcpStream::connect(to).expect_err("connect() must fail");
        err.raw_os_error()
            .unwrap_or_else(|| panic!("connect to {to}: {err}"))
    })
}

/// Two bind() calls to `at` from namespace `ns` by this process, with
/// sockets of type `kind`; the second one's errno.
fn failing_bind(ns: &str, at: SocketAddr, kind: socket2::Type) -> i32 {
    in_netns(Some(ns), move || {
        let socket = || socket2::Socket::new(socket2::Domain::IPV4, kind, None).expect("socket");
        let first = socket();
        first.bind(&at.into()).expect("the first bind()");
        let err = socket()
            .bind(&at.into())
            .expect_err("the second bind() must fail");
        err.raw_os_error()
            .unwrap_or_else(|| panic!("bind to {at}: {err}"))
    })
}

#[test]
fn exhausted_destination_failures_headroom_and_replay() {
    require_root();
    let pair = NetnsPair::create();
    sysctl_in(&pair.client, "ip_local_port_range", "40000 40099");
    sysctl_in(&pair.client, "tcp_tw_reuse", "2");
    let client_ns = ns_inode(&pair.client);
    let netns_arg = client_ns.to_string();
    let scratch = Scratch::new("ports");
    let recording = scratch.path("ports.tcpst");
    let recording_arg = recording.to_str().expect("utf-8 path").to_string();
    let busy = SocketAddr::from((SERVER_V4, PORT));
    let other = SocketAddr::from((SERVER_V6, PORT));
    let refusing = SocketAddr::from((CLIENT_V4, PORT));
    let nowhere = SocketAddr::from(([198, 51, 100, 1], PORT));
    serve(&pair.server, busy);
    serve(&pair.server, other);
    let counters = Counters::read(&pair);
    // Started after the namespace is set up: its settings are read at start.
    let live = Running::start(&[
        "ports",
        "--json",
        "--netns",
        &netns_arg,
        "--port",
        "8081",
        "--record",
        &recording_arg,
    ]);

    // The second destination first: 3 kept, 2 closed by this process.
    let mut kept_other = in_netns(Some(&pair.client), move || {
        (0..5)
            .map(|_| TcpStream::connect(other).expect("connect to the second destination"))
            .collect::<Vec<_>>()
    });
    kept_other.truncate(3);

    let client = Peer::start(
        "ip",
        &[
            "netns",
            "exec",
            &pair.client,
            PEER,
            "exhaust",
            &busy.to_string(),
            &CLOSE_FIRST.to_string(),
            &EXTRA_ATTEMPTS.to_string(),
        ],
    );
    let said = client.next_line();
    let fields: Vec<&str> = said
        .strip_prefix("exhausted ")
        .unwrap_or_else(|| panic!("the client said {said}"))
        .split_whitespace()
        .collect();
    let (kept, closed, failed): (u64, u64, u64) = (
        fields[0].parse().unwrap(),
        fields[1].parse().unwrap(),
        fields[2].parse().unwrap(),
    );
    assert_eq!(
        fields[3],
        libc::EADDRNOTAVAIL.to_string(),
        "the client saw {said}"
    );
    client.wait_done();

    let refused = failing_connect(&pair.client, refusing);
    assert_eq!(refused, libc::ECONNREFUSED);
    let unreachable = failing_connect(&pair.client, nowhere);
    assert_eq!(unreachable, libc::ENETUNREACH);
    // After the refused connect(): a socket bound there, not listening,
    // still refuses. The UDP failure must not show: not a TCP socket.
    let taken = SocketAddr::from((CLIENT_V4, PORT));
    for kind in [socket2::Type::STREAM, socket2::Type::DGRAM] {
        assert_eq!(failing_bind(&pair.client, taken, kind), libc::EADDRINUSE);
    }

    let busy_states = settled(&pair.client, busy);
    let other_states = settled(&pair.client, other);
    std::thread::sleep(tcpstate_tests::millis(500));
    let (lines, stderr, status) = live.interrupt();
    assert!(status.success(), "ports failed: {stderr:#?}");
    let report = last_report(&lines, "live ports");
    let evidence = counters.evidence(&pair);
    assert_eq!(
        report["lost_events"], 0,
        "exact counts need every event: {stderr:#?}"
    );
    assert_eq!(report["lost_failures"], 0, "{stderr:#?}");

    // The exhausted destination: every port of the range, split as ss has it.
    let row = destination(&report, client_ns, busy);
    assert_eq!(row["local_ip"], CLIENT_V4.to_string());
    assert_eq!(row["port_range"], serde_json::json!([RANGE.0, RANGE.1]));
    assert_eq!(row["settings_read"], true, "{row:#}");
    assert_eq!(row["listening_in_range"], 0, "{row:#}");
    assert_eq!(row["usable"], 100, "{row:#}");
    // A RST from the server's listener ends a client time-wait socket when
    // it answers a late segment of a closed connection: under load the
    // client's ACK of the server's FIN can come after the server resent the
    // FIN, its socket is gone when the time-wait socket acknowledges the
    // second FIN, and the listener answers that (see
    // a_listener_reset_ends_a_time_wait_socket_of_another_namespace). ss
    // then lists one time-wait socket less than the client closed, and each
    // one missing must be a RST the server's namespace counted (it sends no
    // other). tcpstate follows those RSTs where it traces them (6.10+) and
    // must show what ss shows. Before, it cannot see the RST itself, but when
    // the RST comes while the client is still exhausting the range, the
    // freed port is taken again at once for the same 4-tuple (one more kept
    // than otherwise) and tcpstate sees that new connection replace the
    // time-wait socket, as the kernel did; a RST after the loop leaves the
    // entry until its expiry. So there it shows between what ss shows and
    // what the client closed.
    let server_rsts = evidence.server_rsts;
    let missing = |states: &BTreeMap<String, u64>, closed: u64| {
        let time_wait = states.get("TIME_WAIT").copied().unwrap_or(0);
        assert!(time_wait <= closed, "{states:?}\n{evidence}");
        closed - time_wait
    };
    let missing_here = missing(&busy_states, closed);
    let missing_there = missing(&other_states, 2);
    assert!(
        missing_here + missing_there <= server_rsts,
        "time-wait sockets missing from ss ({missing_here} and {missing_there}) beyond the \
         {server_rsts} RSTs of the server's namespace\n{evidence}"
    );
    let shown = counts(&row["by_state"]);
    if kernel::reports_resets_without_socket() {
        assert_eq!(shown, busy_states, "tcpstate vs ss: {row:#}\n{evidence}");
    } else {
        let states: Vec<&str> = shown.keys().map(String::as_str).collect();
        assert_eq!(
            states,
            ["ESTABLISHED", "TIME_WAIT"],
            "tcpstate vs the client: {row:#}\n{evidence}"
        );
        assert_eq!(
            shown["ESTABLISHED"], kept,
            "tcpstate vs the client: {row:#}\n{evidence}"
        );
        let time_wait = shown["TIME_WAIT"];
        assert!(
            time_wait <= closed && time_wait >= closed - missing_here,
            "tcpstate shows {time_wait} in TIME_WAIT: between ss's {} and the {closed} the client \
             closed expected\n{row:#}\n{evidence}",
            closed - missing_here
        );
    }
    assert_eq!(
        busy_states["ESTABLISHED"], kept,
        "ss vs what the client did\n{evidence}"
    );
    let in_use: u64 = shown.values().sum();
    assert_eq!(row["in_use"], in_use, "{row:#}");
    assert_eq!(row["free"], 100 - in_use, "{row:#}");
    assert!(in_use >= 100 - server_rsts, "{row:#}\n{evidence}");
    assert_eq!(
        row["time_wait_reusable"], false,
        "tw_reuse=2 is for loopback only"
    );
    assert_eq!(row["owners"][0]["tgid"], client.pid, "{row:#}");

    let exhausted = failures(&report, client_ns, "connect", libc::EADDRNOTAVAIL);
    assert_eq!(
        exhausted.len(),
        1,
        "one caller, one destination: {exhausted:#?}"
    );
    assert_eq!(exhausted[0]["tgid"], client.pid);
    assert_eq!(exhausted[0]["address"], busy.to_string());
    assert_eq!(exhausted[0]["errno_name"], "EADDRNOTAVAIL");
    assert_eq!(exhausted[0]["count"], failed, "as many as the client saw");
    assert_eq!(row["failures"], failed, "{row:#}");

    // The second destination: its own figures.
    let row = destination(&report, client_ns, other);
    assert_eq!(row["local_ip"], CLIENT_V6.to_string());
    let in_use: u64 = counts(&row["by_state"]).values().sum();
    assert_eq!(row["in_use"], in_use, "{row:#}");
    assert_eq!(row["free"], 100 - in_use, "{row:#}");
    // What the client did: 3 kept, 2 closed first; a RST can end one of
    // the time-wait sockets as above.
    let did: BTreeMap<String, u64> =
        [("ESTABLISHED".to_string(), 3), ("TIME_WAIT".to_string(), 2)].into();
    if kernel::reports_resets_without_socket() {
        assert_eq!(
            counts(&row["by_state"]),
            other_states,
            "{row:#}\n{evidence}"
        );
    } else {
        assert_eq!(counts(&row["by_state"]), did, "{row:#}\n{evidence}");
    }
    assert_eq!(
        other_states["ESTABLISHED"], 3,
        "{other_states:?}\n{evidence}"
    );
    assert_eq!(row["failures"], 0);

    // Refused and unreachable: this process is the caller.
    let me = std::process::id();
    for (errno, to) in [(libc::ECONNREFUSED, refusing), (libc::ENETUNREACH, nowhere)] {
        let seen = failures(&report, client_ns, "connect", errno);
        assert_eq!(seen.len(), 1, "errno {errno}: {:#}", report["failures"]);
        assert_eq!(seen[0]["tgid"], me);
        assert_eq!(seen[0]["address"], to.to_string());
        assert_eq!(seen[0]["count"], 1);
    }
    let bound = failures(&report, client_ns, "bind", libc::EADDRINUSE);
    assert_eq!(bound.len(), 1, "TCP only: {:#}", report["failures"]);
    assert_eq!(bound[0]["tgid"], me);
    assert_eq!(bound[0]["address"], taken.to_string());
    assert_eq!(bound[0]["count"], 1);
    // The refused SYN is also a failed handshake.
    let handshakes = failures(&report, client_ns, "handshake", libc::ECONNREFUSED);
    assert_eq!(handshakes.len(), 1, "{:#}", report["failures"]);
    assert_eq!(handshakes[0]["tgid"], me);

    // The recording, replayed, gives the same report.
    let replay = Command::new(tcpstate_tests::tcpstate_bin())
        .args([
            "ports",
            "--json",
            "--netns",
            &netns_arg,
            "--input",
            &recording_arg,
        ])
        .output()
        .expect("running tcpstate ports --input");
    assert!(
        replay.status.success(),
        "replay: {}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let replayed: Vec<String> = String::from_utf8_lossy(&replay.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(last_report(&replayed, "replayed ports"), report);
    drop(kept_other);
    drop(client);
}

/// A bare ACK from `from` to `to` with a sequence number no socket expects,
/// sent through a raw socket in namespace `ns`: a time-wait socket answers
/// it with an ACK of its own (out of window), as it answers a FIN the peer
/// retransmitted.
fn send_stray_ack(ns: &str, from: SocketAddr, to: SocketAddr) {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (from, to) else {
        panic!("IPv4 only");
    };
    let mut segment = [0u8; 20];
    segment[0..2].copy_from_slice(&src.port().to_be_bytes());
    segment[2..4].copy_from_slice(&dst.port().to_be_bytes());
    segment[4..8].copy_from_slice(&0x5eed_0001u32.to_be_bytes());
    segment[8..12].copy_from_slice(&0x5eed_0002u32.to_be_bytes());
    segment[12] = 5 << 4; // 20-byte header, no options
    segment[13] = 0x10; // ACK
    segment[14..16].copy_from_slice(&1024u16.to_be_bytes());
    // The checksum over the pseudo-header (addresses, protocol, length) and
    // the segment: the receiver drops a segment without a valid one.
    let mut words: Vec<u16> = Vec::new();
    for octets in [src.ip().octets(), dst.ip().octets()] {
        words.push(u16::from_be_bytes([octets[0], octets[1]]));
        words.push(u16::from_be_bytes([octets[2], octets[3]]));
    }
    words.extend([6, segment.len() as u16]);
    words.extend(
        segment
            .chunks(2)
            .map(|pair| u16::from_be_bytes([pair[0], pair[1]])),
    );
    let mut sum: u32 = words.iter().map(|&w| u32::from(w)).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    segment[16..18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    in_netns(Some(ns), move || {
        let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::TCP)).expect("raw socket");
        raw.send_to(&segment, &SockAddr::from(to))
            .expect("sending the stray ACK");
    });
}

/// What the ports test can meet under load, made on purpose: the client's
/// time-wait socket acknowledges a stray segment (as it does a FIN the server
/// retransmitted because the client's ACK came late); the server's socket is
/// gone, so its listener answers with a RST, and the RST ends the
/// time-wait socket (tcp_rfc1337 is 0). The listener is in the server's
/// namespace, the time-wait socket in the client's: tcpstate must follow
/// the RST across namespaces where it traces RSTs (6.10+); before, the RST
/// is not traced, and the server's namespace counts it.
#[test]
fn a_listener_reset_ends_a_time_wait_socket_of_another_namespace() {
    require_root();
    let pair = NetnsPair::create();
    let client_ns = ns_inode(&pair.client);
    let netns_arg = client_ns.to_string();
    let server = SocketAddr::from((SERVER_V4, PORT));
    serve(&pair.server, server);
    let live = Running::start(&["ports", "--json", "--netns", &netns_arg, "--port", "8081"]);
    let closed: Vec<SocketAddr> = in_netns(Some(&pair.client), move || {
        (0..2)
            .map(|_| {
                let stream = TcpStream::connect(server).expect("connect");
                stream.local_addr().expect("local address")
            })
            .collect()
    });
    settled(&pair.client, server);
    // Under load the server's listener can end one of them on its own
    // before the stray ACK (a late ACK, as in the exhausted-destination
    // test): the stray ACK then goes to one that ss still lists.
    let waiting = time_wait_locals(&pair.client, server);
    assert!(
        !waiting.is_empty() && waiting.iter().all(|local| closed.contains(local)),
        "the two closed connections {closed:?} should be in TIME_WAIT: {waiting:?}\n{}",
        ss_listing(&pair.client)
    );
    let counters = Counters::read(&pair);

    send_stray_ack(&pair.server, server, waiting[0]);
    let left = waiting.len() as u64 - 1;
    let deadline = std::time::Instant::now() + secs(5);
    while ss_states(&pair.client, server)
        .get("TIME_WAIT")
        .copied()
        .unwrap_or(0)
        != left
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the time-wait socket outlived the RST\n{}",
            counters.evidence(&pair)
        );
        std::thread::sleep(tcpstate_tests::millis(20));
    }
    let evidence = counters.evidence(&pair);
    // The counters were read after a RST of the listener's own had ended a
    // socket, if one did: only the stray ACK's RST counts here.
    assert_eq!(evidence.server_rsts, 1, "the listener's RST\n{evidence}");
    std::thread::sleep(tcpstate_tests::millis(300));
    let (lines, stderr, status) = live.interrupt();
    assert!(status.success(), "ports failed: {stderr:#?}");
    let report = last_report(&lines, "live ports");
    assert_eq!(report["lost_events"], 0, "{stderr:#?}");
    let row = destination(&report, client_ns, server);
    // Where RSTs sent without a socket are traced, what ss shows; before,
    // both connections the client closed (no RST is seen).
    let time_wait = if kernel::reports_resets_without_socket() {
        left
    } else {
        2
    };
    assert_eq!(
        counts(&row["by_state"]),
        [("TIME_WAIT".to_string(), time_wait)].into(),
        "{row:#}\n{evidence}"
    );
}

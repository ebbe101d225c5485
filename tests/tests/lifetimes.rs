//! Connection lifetimes from the real kernel: owners of both ends, TIME_WAIT
//! attributed to the side that closed first, CLOSE_WAIT leaks per process.
use serde_json::Value;
use std::net::TcpStream;
use tcpstate_tests::{
    require_root,
    running::{Peer, Running},
    scenario::{drive, Net, Network, Scenario},
    workload::{connect_and_close, connect_read_eof_close},
};

const PEER: &str = env!("CARGO_BIN_EXE_tcpstate-test-peer");

fn json_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Finished connections whose local or remote port is `port`.
fn connections_on(records: &[Value], port: u16) -> Vec<&Value> {
    records
        .iter()
        .filter(|r| r["type"] == "connection")
        .filter(|r| r["lport"] == port || r["rport"] == port)
        .collect()
}

#[test]
fn time_wait_goes_to_the_side_that_closed_first_and_its_process() {
    require_root();
    let life = Running::start(&["life", "--json"]);
    // The peer reads to EOF: our side (the test process) closes first.
    let server_waits = Peer::start(PEER, &["serve", "close-on-eof", "3"]);
    connect_and_close(server_waits.port, 3);
    server_waits.wait_done();
    // The peer closes at once: its side closes first.
    let server_closes = Peer::start(PEER, &["serve", "close-first", "3"]);
    connect_read_eof_close(server_closes.port, 3);
    server_closes.wait_done();
    std::thread::sleep(tcpstate_tests::millis(500));
    let (stdout, stderr, status) = life.interrupt();
    assert!(status.success(), "{stderr:?}");
    let records = json_lines(&stdout);
    let me = u64::from(std::process::id());

    for (peer, we_closed_first) in [(&server_waits, true), (&server_closes, false)] {
        let conns = connections_on(&records, peer.port);
        let ours: Vec<_> = conns.iter().filter(|c| c["open"] == "active").collect();
        let theirs: Vec<_> = conns.iter().filter(|c| c["open"] == "passive").collect();
        assert_eq!((ours.len(), theirs.len()), (3, 3), "{conns:#?}");
        let (closer, other, closer_tgid, other_tgid) = if we_closed_first {
            (&ours, &theirs, me, u64::from(peer.pid))
        } else {
            (&theirs, &ours, u64::from(peer.pid), me)
        };
        for c in closer.iter() {
            assert_eq!(c["closed_first"], "local", "{c}");
            assert_eq!(c["time_wait"], "entered", "{c}");
            assert_eq!(c["owner"]["tgid"], closer_tgid, "{c}");
            assert_eq!(c["uncertain"], false, "{c}");
        }
        for c in other.iter() {
            assert_eq!(c["closed_first"], "remote", "{c}");
            assert_eq!(c["time_wait"], "none", "{c}");
            assert_eq!(c["owner"]["tgid"], other_tgid, "{c}");
        }
        for c in &ours {
            assert_eq!(c["owner"]["how"], "connect", "{c}");
        }
        for c in &theirs {
            // Passive sockets: accept() names the peer process, never the
            // task that happened to run the softirq.
            assert_eq!(c["owner"]["how"], "accept", "{c}");
            assert_eq!(c["owner"]["comm"], "tcpstate-test-p", "{c}");
        }
    }
}

#[test]
fn simultaneous_close_gives_time_wait_on_both_and_reset_on_neither() {
    require_root();
    let net = Net::new(Network::LoopbackV4);
    // Both FINs cross: the side whose FIN_WAIT1 received the peer's FIN goes
    // through CLOSING ("both"); the other saw its own FIN acknowledged first
    // and reads as an ordinary active close. Both hold TIME_WAIT.
    for (scenario, closed_first, time_wait) in [
        (Scenario::BothCloseAtOnce, ["both", "local"], "entered"),
        (Scenario::ResetByLinger0, ["reset", "reset"], "none"),
    ] {
        let (life, expected) = drive(&net, scenario, |_| Running::start(&["life", "--json"]));
        std::thread::sleep(tcpstate_tests::millis(500));
        let (stdout, _, status) = life.interrupt();
        assert!(status.success());
        let records = json_lines(&stdout);
        let conns = connections_on(&records, expected.port);
        assert_eq!(conns.len(), 2, "{scenario:?}: {conns:#?}");
        let passive = conns
            .iter()
            .find(|c| c["open"] == "passive")
            .expect("server side");
        let active = conns
            .iter()
            .find(|c| c["open"] == "active")
            .expect("client side");
        assert_eq!(
            passive["closed_first"], closed_first[0],
            "{scenario:?}: {passive}"
        );
        assert_eq!(
            active["closed_first"], closed_first[1],
            "{scenario:?}: {active}"
        );
        for c in conns {
            assert_eq!(c["time_wait"], time_wait, "{scenario:?}: {c}");
        }
    }
}

#[test]
fn prefork_workers_own_the_sockets_they_accept() {
    require_root();
    let life = Running::start(&["life", "--json", "--listeners"]);
    let server = Peer::start(PEER, &["prefork", "3", "6"]);
    connect_and_close(server.port, 6);
    std::thread::sleep(tcpstate_tests::millis(500));
    let (stdout, _, status) = life.interrupt();
    assert!(status.success());
    let records = json_lines(&stdout);
    let conns = connections_on(&records, server.port);
    let passive: Vec<_> = conns.iter().filter(|c| c["open"] == "passive").collect();
    assert_eq!(passive.len(), 6, "{conns:#?}");
    let workers: Vec<u64> = server.workers.iter().map(|&w| u64::from(w)).collect();
    for c in passive {
        let owner = c["owner"]["tgid"].as_u64().expect("an owner");
        assert!(
            workers.contains(&owner),
            "owner {owner} is not a worker {workers:?}: {c}"
        );
        assert_ne!(owner, u64::from(server.pid), "the parent only listens: {c}");
        assert_eq!(c["owner"]["how"], "accept");
    }
}

#[test]
fn leaks_reports_exactly_the_sockets_a_process_never_closed() {
    require_root();
    const LEAKED: usize = 37;
    let leaks = Running::start(&["leaks", "--json", "--threshold", "1s", "--every", "100ms"]);
    let leaky = Peer::start(PEER, &["serve", "leak", &LEAKED.to_string()]);
    let tidy = Peer::start(PEER, &["serve", "close-on-eof", "5"]);
    connect_and_close(leaky.port, LEAKED);
    connect_and_close(tidy.port, 5);
    leaky.wait_done();
    tidy.wait_done();

    // Wait for a report in which the leaky process has crossed the 1 s
    // threshold with all its sockets.
    let deadline = std::time::Instant::now() + tcpstate_tests::secs(15);
    let report = loop {
        let line = leaks
            .stdout
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("no report showing the leak");
        let report: Value = serde_json::from_str(&line).expect("JSON");
        let found = report["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["tgid"] == leaky.pid && p["count"] == LEAKED);
        if found {
            break report;
        }
    };
    let processes = report["processes"].as_array().unwrap();
    let leak = processes.iter().find(|p| p["tgid"] == leaky.pid).unwrap();
    assert_eq!(leak["count"], LEAKED);
    assert_eq!(leak["local_ports"], serde_json::json!([leaky.port]));
    assert_eq!(leak["remote_peers"].as_array().unwrap().len(), LEAKED);
    assert_eq!(leak["comm"], "tcpstate-test-p");
    assert!(
        leak["cmdline"].as_str().unwrap().contains("serve leak 37"),
        "{leak}"
    );
    assert!(leak["oldest_age_s"].as_f64().unwrap() >= 1.0);
    assert!(
        !processes.iter().any(|p| p["tgid"] == tidy.pid),
        "a process that closes its sockets leaks nothing: {report}"
    );
    let (_, _, status) = leaks.interrupt();
    assert!(status.success());
}

#[test]
fn accept_owners_and_sent_resets_are_reported_by_the_kernel() {
    require_root();
    use tcpstate::{
        source::live::{HookStatus, LiveOptions},
        tcp::TcpState,
    };
    use tcpstate_tests::{tracer::Tracer, workload};
    let (listener, addr) = workload::bound_listener();
    let (unused, refused_addr) = workload::bound_listener();
    let tracer = Tracer::start(LiveOptions {
        lifetime_hooks: true,
        ..LiveOptions::default()
    });
    workload::client_closes_first(listener, 2);
    // Bound but not listening: the SYN is answered with a RST.
    let client = TcpStream::connect(refused_addr).expect_err("refused");
    drop((client, unused));
    let seen = tracer.wait_until(tcpstate_tests::secs(5), |t| {
        t.iter()
            .any(|t| t.remote.port == refused_addr.port() && t.new == TcpState::Close)
    });
    std::thread::sleep(tcpstate_tests::millis(200));
    let tracer_resets = tracer.program(tcpstate_common::PROGRAM_SEND_RESET).clone();
    let collected = tracer.stop();
    assert!(seen);
    // The two server sockets of `addr`, accepted by this process.
    let children: Vec<u64> = collected
        .transitions
        .iter()
        .filter(|t| t.local.port == addr.port() && t.new == TcpState::SynRecv)
        .map(|t| t.skaddr)
        .collect();
    assert_eq!(children.len(), 2);
    for child in &children {
        let owner = collected
            .accepted
            .iter()
            .find(|a| a.skaddr == *child)
            .unwrap_or_else(|| panic!("no accept() record for {child:#x}"));
        assert_eq!(owner.task.tgid, std::process::id());
        assert_ne!(owner.netns, 0, "network namespace read through BTF offsets");
    }
    assert!(collected.transitions.iter().all(|t| t.netns != 0));
    // Before Linux 6.10 the kernel does not report a RST sent without a
    // socket: tcpstate says so and attaches nothing for RSTs.
    if let HookStatus::Unavailable(why) = tracer_resets {
        assert!(why.contains("6.10"), "{why}");
        assert!(collected.resets.is_empty(), "{:?}", collected.resets);
        return;
    }
    assert_eq!(tracer_resets, HookStatus::Attached);
    let reset = collected
        .resets
        .iter()
        .find(|r| r.segment_dst.port == refused_addr.port())
        .expect("the RST answering the SYN");
    assert_eq!(reset.segment_dst.ip, refused_addr.ip());
    assert_eq!(reset.segment_src.ip.to_string(), "127.0.0.1");
    assert_eq!(reset.sender_state, None, "no socket sent it: {reset:?}");
}

/// What `stat` and the other counting views load: the task on the CPU only
/// for connect()'s and listen()'s transitions, the ones the model names
/// owners from; `trace` (and any recording) gets it for every transition.
/// Both programs see the same connections at once.
#[test]
fn counting_views_read_the_task_only_where_it_names_the_owner() {
    require_root();
    use tcpstate::{
        source::live::{ContextTask, LiveOptions},
        tcp::TcpState,
        wire::Transition,
    };
    use tcpstate_tests::{tracer::Tracer, workload};
    let (listener, addr) = workload::bound_listener();
    let start = |context_task| {
        Tracer::start(LiveOptions {
            any_port: Some(addr.port()),
            ring_bytes: 1 << 20,
            context_task,
            ..LiveOptions::default()
        })
    };
    let lean = start(ContextTask::OwnerTransitionsOnly);
    let full = start(ContextTask::EveryTransition);
    workload::client_closes_first(listener, 3);
    let done = |t: &[Transition]| t.iter().filter(|t| t.new == TcpState::Close).count() >= 7;
    assert!(
        lean.wait_until(tcpstate_tests::secs(10), done),
        "lean tracer"
    );
    assert!(
        full.wait_until(tcpstate_tests::secs(10), done),
        "full tracer"
    );
    let (lean, full) = (lean.stop(), full.stop());
    assert_eq!(lean.lost + full.lost, 0);
    let me = std::process::id();
    let ours = |t: &Transition| t.task.tgid == me && t.task.comm.as_string() != "";
    let no_task = |t: &Transition| {
        t.task.tgid == 0 && t.task.pid == 0 && t.task.comm.as_string() == "" && t.cgroup_id == 0
    };
    for (name, collected) in [("lean", &lean), ("full", &full)] {
        let pairs = workload::by_pair(&collected.transitions);
        assert_eq!(
            pairs.get(&(TcpState::Close, TcpState::SynSent)),
            Some(&3),
            "{name}: {pairs:?}"
        );
        for t in &collected.transitions {
            if matches!(
                (t.old, t.new),
                (TcpState::Close, TcpState::SynSent | TcpState::Listen)
            ) {
                assert!(
                    ours(t),
                    "{name}: connect()/listen() without this process: {t:?}"
                );
            }
        }
    }
    // The client's close() runs in this process: only the full program says so.
    let closes = |c: &tcpstate_tests::tracer::Collected| -> Vec<Transition> {
        c.transitions
            .iter()
            .filter(|t| (t.old, t.new) == (TcpState::Established, TcpState::FinWait1))
            .copied()
            .collect()
    };
    assert_eq!(closes(&lean).len(), 3);
    assert!(closes(&lean).iter().all(no_task), "{:?}", closes(&lean));
    assert_eq!(closes(&full).len(), 3);
    assert!(closes(&full).iter().all(ours), "{:?}", closes(&full));
    let lean_other = lean
        .transitions
        .iter()
        .filter(|t| !tcpstate_common::transition_names_owner(t.old as i32, t.new as i32));
    assert!(
        lean_other.clone().all(no_task),
        "{:?}",
        lean_other.collect::<Vec<_>>()
    );
}

#[test]
fn leaks_that_predate_the_tracer_are_found_from_the_start_up_snapshot() {
    require_root();
    const LEAKED: usize = 7;
    let leaky = Peer::start(PEER, &["serve", "leak", &LEAKED.to_string()]);
    connect_and_close(leaky.port, LEAKED);
    leaky.wait_done();
    std::thread::sleep(tcpstate_tests::millis(200));
    // Started after the leak: only the snapshot can know these sockets.
    let leaks = Running::start(&["leaks", "--json", "--threshold", "0s", "--every", "100ms"]);
    let deadline = std::time::Instant::now() + tcpstate_tests::secs(10);
    let leak = loop {
        let line = leaks
            .stdout
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("no report showing the old leak");
        let report: Value = serde_json::from_str(&line).expect("JSON");
        if let Some(p) = report["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["tgid"] == leaky.pid)
        {
            break p.clone();
        }
    };
    assert_eq!(leak["count"], LEAKED, "{leak}");
    assert_eq!(leak["local_ports"], serde_json::json!([leaky.port]));
    // Their age is only known to be at least the time since the start.
    assert_eq!(leak["age_is_lower_bound"], true, "{leak}");
    let (_, _, status) = leaks.interrupt();
    assert!(status.success());
}

#[test]
fn never_accepted_close_wait_is_an_accept_backlog_not_a_leak() {
    require_root();
    let leaks = Running::start(&["leaks", "--json", "--threshold", "1s", "--every", "100ms"]);
    let stalled = Peer::start(PEER, &["stall"]);
    connect_and_close(stalled.port, 4);
    let listener = format!("127.0.0.1:{}", stalled.port);
    let deadline = std::time::Instant::now() + tcpstate_tests::secs(15);
    let report = loop {
        let line = leaks
            .stdout
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("no report showing the accept backlog");
        let report: Value = serde_json::from_str(&line).expect("JSON");
        let found = report["accept_backlog"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["listener"] == listener.as_str() && b["count"] == 4);
        if found {
            break report;
        }
    };
    let backlog = report["accept_backlog"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["listener"] == listener.as_str())
        .unwrap();
    assert_eq!(backlog["listener_owner"]["tgid"], stalled.pid, "{backlog}");
    assert_eq!(backlog["listener_owner"]["how"], "listen", "{backlog}");
    assert!(
        !report["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["tgid"] == stalled.pid),
        "never accepted: not a leak of the process: {report}"
    );
    let (_, _, status) = leaks.interrupt();
    assert!(status.success());
}

#[test]
fn stat_counts_time_wait_per_process_and_by_who_closed_first() {
    require_root();
    let stat = Running::start(&["stat", "--json", "--every", "100ms"]);
    let server_closes = Peer::start(PEER, &["serve", "close-first", "3"]);
    connect_read_eof_close(server_closes.port, 3);
    server_closes.wait_done();
    let deadline = std::time::Instant::now() + tcpstate_tests::secs(15);
    let time_wait_of = |report: &Value| {
        report["by_process"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["tgid"] == server_closes.pid)
            .and_then(|p| p["states"]["TIME_WAIT"].as_u64())
    };
    let report = loop {
        let line = stat
            .stdout
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("no report with the peer's TIME_WAIT");
        let report: Value = serde_json::from_str(&line).expect("JSON");
        if time_wait_of(&report) == Some(3) {
            break report;
        }
    };
    assert!(report["by_state"]["TIME_WAIT"].as_u64().unwrap() >= 3);
    assert!(
        report["time_wait_by_closed_first"]["local"]
            .as_u64()
            .unwrap()
            >= 3
    );
    assert!(
        report["by_local_port"][server_closes.port.to_string()]["TIME_WAIT"] == 3,
        "{}",
        report["by_local_port"]
    );
    let (_, _, status) = stat.interrupt();
    assert!(status.success());
}

//! `tcpstate doctor` against the real kernel: a peer process that leaks
//! CLOSE_WAIT sockets and one that closes first (so that TIME_WAIT sits with
//! it) must both be named in the findings, with the right counts.
use serde_json::Value;
use std::{
    io::{BufRead, BufReader, Read},
    process::{Command, Stdio},
    sync::mpsc,
    time::Instant,
};
use tcpstate_tests::{
    require_root,
    running::Peer,
    tcpstate_bin,
    workload::{connect_and_close, connect_read_eof_close},
};

const PEER: &str = env!("CARGO_BIN_EXE_tcpstate-test-peer");

fn finding<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["id"] == id)
        .unwrap_or_else(|| panic!("no {id} finding in {report:#}"))
}

#[test]
fn doctor_names_the_close_wait_leak_and_the_time_wait_of_the_peers() {
    require_root();
    const LEAKED: usize = 9;
    const SHORT: usize = 20;
    let leaky = Peer::start(PEER, &["serve", "leak", &LEAKED.to_string()]);
    let closer = Peer::start(PEER, &["serve", "close-first", &SHORT.to_string()]);

    // The watch (and with it the age a CLOSE_WAIT needs to count as a leak,
    // half of it) grows on a slow machine, where the peers take longer.
    let watch_secs = 3 * tcpstate_tests::slowdown();
    let mut doctor = Command::new(tcpstate_bin())
        .args(["doctor", "--for", &format!("{watch_secs}s"), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tcpstate doctor");
    let mut stdout = doctor.stdout.take().unwrap();
    let (tx, stderr) = mpsc::channel();
    let err = doctor.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let started = Instant::now();
    loop {
        let line = stderr
            .recv_timeout(tcpstate_tests::secs(20))
            .expect("tcpstate doctor did not start tracing");
        assert!(!line.contains("error"), "tcpstate doctor: {line}");
        if line.contains(tcpstate_tests::STARTED) {
            break;
        }
    }

    // During the watch: the leaky peer is left with LEAKED sockets in
    // CLOSE_WAIT, the other one closes SHORT connections first.
    connect_and_close(leaky.port, LEAKED);
    connect_read_eof_close(closer.port, SHORT);
    leaky.wait_done();
    closer.wait_done();

    let deadline = started + tcpstate_tests::secs(30);
    let status = loop {
        if let Some(status) = doctor.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = doctor.kill();
            let _ = doctor.wait();
            panic!("tcpstate doctor --for {watch_secs}s still running after 30 s (scaled)");
        }
        std::thread::sleep(tcpstate_tests::millis(50));
    };
    let mut out = String::new();
    stdout.read_to_string(&mut out).expect("read stdout");
    let rest: Vec<String> = stderr.try_iter().collect();
    assert!(status.success(), "exit {status}: {rest:#?}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object: {out}");
    let report: Value = serde_json::from_str(lines[0]).expect("JSON");

    assert_eq!(report["type"], "doctor");
    assert!(report["host"].is_string());
    assert!(!report["kernel"]["release"].as_str().unwrap().is_empty());
    assert!(
        report["sysctls"]["net.ipv4.tcp_tw_reuse"].is_u64(),
        "{report:#}"
    );
    assert!(report["sysctls"]["net.ipv4.ip_local_port_range"].is_array());
    // What tcpstate itself can do on this kernel, part by part.
    let tracer = report["tracer"].as_array().expect("tracer parts");
    let part = |name: &str| {
        tracer
            .iter()
            .find(|p| p["part"] == name)
            .unwrap_or_else(|| panic!("no tracer part {name}: {tracer:#?}"))
    };
    for name in [
        tcpstate_common::PROGRAM_SET_STATE_RAW,
        tcpstate_common::PROGRAM_SET_STATE_RAW2,
    ] {
        assert_eq!(part(name)["status"], "attached", "{tracer:#?}");
    }
    // The second raw program stands in for the first: no classic one.
    assert_eq!(
        part(tcpstate_common::PROGRAM_SET_STATE)["status"],
        "off",
        "{tracer:#?}"
    );
    // Owners of accepted sockets: the syscalls always, fexit where allowed.
    let fexit = tracer
        .iter()
        .find(|p| p["hook"] == "fexit inet_csk_accept")
        .expect("the fexit part");
    assert_eq!(
        part(tcpstate_common::PROGRAM_ACCEPT4_EXIT)["status"],
        "attached"
    );
    assert!(
        ["attached", "unavailable"].contains(&fexit["status"].as_str().unwrap()),
        "{tracer:#?}"
    );
    let reset = part(tcpstate_common::PROGRAM_SEND_RESET);
    assert!(
        reset["status"] == "attached"
            || (reset["status"] == "unavailable"
                && reset["why"].as_str().unwrap().contains("6.10")),
        "{reset:#}"
    );
    assert!(
        ["counted", "unavailable"].contains(&part("skipped-hit count")["status"].as_str().unwrap()),
        "{tracer:#?}"
    );
    for part in ["start", "end", "delta"] {
        assert!(
            report["counters"][part]["TcpExt.ListenOverflows"].is_i64(),
            "{part}: {:#}",
            report["counters"]
        );
    }
    let watched = report["watch"]["seconds"].as_f64().unwrap();
    let watch = f64::from(watch_secs);
    assert!(
        (watch - 0.5..watch + 7.0).contains(&watched),
        "watched {watched} s"
    );

    let leak = finding(&report, "close-wait-leak");
    let processes = leak["evidence"]["processes"].as_array().unwrap();
    let peer = processes
        .iter()
        .find(|p| p["tgid"] == leaky.pid)
        .unwrap_or_else(|| panic!("the leaky peer {} is not named: {leak:#}", leaky.pid));
    assert_eq!(peer["count"], LEAKED, "{leak:#}");
    assert_eq!(peer["comm"], "tcpstate-test-p");
    assert_eq!(peer["local_ports"], serde_json::json!([leaky.port]));
    assert!(
        !processes.iter().any(|p| p["tgid"] == closer.pid),
        "the peer that closes leaks nothing: {leak:#}"
    );
    let advice = leak["advice"].to_string();
    assert!(advice.contains("No sysctl fixes"), "{advice}");

    let tw = finding(&report, "time-wait");
    let owner = tw["evidence"]["by_owner"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["tgid"] == closer.pid)
        .unwrap_or_else(|| panic!("the closing peer {} is not named: {tw:#}", closer.pid));
    assert_eq!(owner["comm"], "tcpstate-test-p");
    assert_eq!(owner["created"], SHORT, "{tw:#}");
    assert_eq!(owner["created_passive"], SHORT, "{tw:#}");
    assert!(owner["now"].as_u64().unwrap() >= SHORT as u64, "{tw:#}");

    let notes: Vec<&str> = report["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    for id in ["tcp_tw_recycle", "tcp_fin_timeout", "tcp_max_tw_buckets"] {
        assert!(notes.contains(&id), "{notes:?}");
    }
}

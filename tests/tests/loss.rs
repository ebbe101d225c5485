//! Loss accounting: with a tiny ring buffer and a burst, every transition is
//! either delivered or counted as lost, and the CLI reports the loss.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
};
use tcpstate::source::live::{LiveOptions, LiveSource};
use tcpstate_tests::{
    require_root, tcpstate_bin,
    workload::{self, LISTENER_TRANSITIONS, TRANSITIONS_PER_CONNECTION},
};

const CONNECTIONS: usize = 200;
const GENERATED: u64 = (CONNECTIONS * TRANSITIONS_PER_CONNECTION + LISTENER_TRANSITIONS) as u64;

#[test]
fn delivered_plus_lost_equals_generated() {
    require_root();
    let runtime = tcpstate_tests::runtime();
    let _context = runtime.enter();
    let (socket, addr) = workload::bound_listener();
    let mut source = LiveSource::open(&LiveOptions {
        ring_bytes: 4096,
        any_port: Some(addr.port()),
        ..LiveOptions::default()
    })
    .expect("load");
    // Nobody reads during the burst: the one-page ring overflows for sure.
    workload::client_closes_first(socket, CONNECTIONS);
    std::thread::sleep(tcpstate_tests::millis(200));
    let mut items = Vec::new();
    source.finish(&mut items);
    let stats = source.stats();
    assert!(
        stats.lost > 0,
        "a one-page ring cannot hold {GENERATED} records"
    );
    assert!(stats.delivered > 0);
    assert_eq!(stats.delivered + stats.lost, GENERATED, "{stats:?}");
    assert!(
        matches!(items.last(), Some(&tcpstate::source::Item::Lost { total, .. }) if total == stats.lost),
        "{:?}",
        items.last()
    );
}

#[test]
fn cli_reports_lost_events() {
    require_root();
    let (socket, addr) = workload::bound_listener();
    let port = addr.port().to_string();
    let mut child = Command::new(tcpstate_bin())
        .args([
            "-v",
            "trace",
            "--json",
            "--ring-size",
            "4096",
            "--port",
            &port,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tcpstate");
    let pid = child.id() as libc::pid_t;
    let (lines_tx, lines_rx) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let stderr_reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines_tx.send(line.clone());
            all.push(line);
        }
        all
    });
    // With -v, diagnostics may come before the line saying it is tracing.
    loop {
        let line = lines_rx
            .recv_timeout(tcpstate_tests::secs(20))
            .expect("tcpstate did not start");
        if line.contains(tcpstate_tests::STARTED) {
            break;
        }
    }

    // Stopped, it cannot drain: the burst must overflow the ring.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    workload::client_closes_first(socket, CONNECTIONS);
    std::thread::sleep(tcpstate_tests::millis(200));
    unsafe { libc::kill(pid, libc::SIGCONT) };
    // The warning comes as soon as the loss is seen, before exit (other
    // lines, such as the program's own diagnostic, may come first).
    let deadline = std::time::Instant::now() + tcpstate_tests::secs(10);
    loop {
        let line = lines_rx
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("no loss warning while running");
        if line.contains("lost in the kernel so far") {
            break;
        }
    }
    unsafe { libc::kill(pid, libc::SIGINT) };
    let output = child.wait_with_output().expect("wait");
    assert!(output.status.success(), "exit status {:?}", output.status);
    let stderr = stderr_reader.join().unwrap();

    let mut transitions = 0u64;
    let mut lost_total = 0u64;
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let value: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        match value["type"].as_str() {
            Some("transition") => transitions += 1,
            Some("lost") => lost_total = value["lost_total"].as_u64().expect("lost_total"),
            other => panic!("unexpected line type {other:?}: {line}"),
        }
    }
    assert!(lost_total > 0, "no lost line in the JSON output");
    assert_eq!(transitions + lost_total, GENERATED);
    // The program's own diagnostic, carried by aya-log and shown with -v.
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("ring buffer reserve failed on this CPU")),
        "{stderr:#?}"
    );
    let summary = stderr
        .iter()
        .rev()
        .find(|l| l.contains("transitions seen"))
        .expect("a summary line");
    assert!(
        summary.contains(&format!("{transitions} transitions seen"))
            && summary.contains(&format!("{lost_total} lost in the kernel (")),
        "summary: {summary}"
    );
    // The reader was stopped with the ring full: the summary must say so,
    // and its causes add up to the total (a lock that gave up or a skip by
    // the kernel may add a few on a busy host).
    let causes = summary
        .split(" lost in the kernel (")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("the causes of the loss");
    let count = |name: &str| -> u64 {
        causes
            .split(", ")
            .find_map(|part| part.strip_suffix(name))
            .map_or(0, |n| n.trim().parse().expect("a count"))
    };
    let full = count(" ring full");
    assert!(full > 0, "a full ring not named as the cause: {summary}");
    assert_eq!(
        full + count(" ring lock busy") + count(" skipped by the kernel"),
        lost_total,
        "summary: {summary}"
    );
}

//! A root process with a network listener: `serve` drops its capabilities
//! once the programs are attached and the snapshot is taken, keeps tracing
//! and counting, and answers a scrape while slow clients hold connections.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    time::Duration,
};
use tcpstate_tests::{require_root, running::Running, workload};

const CAP_BPF: u64 = 1 << 39;

/// A capability set of a task (`CapEff`, `CapPrm`, ...) from its status.
fn capability_set(status_path: &std::path::Path, field: &str) -> u64 {
    let status = std::fs::read_to_string(status_path)
        .unwrap_or_else(|e| panic!("read {}: {e}", status_path.display()));
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in {}", status_path.display()));
    u64::from_str_radix(hex.trim(), 16).expect("capability set in hex")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `GET /metrics` with `Connection: close`; the body up to the server's
/// close. The read timeout is a generous deadline proving "answered".
fn scrape(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader
        .read_line(&mut status)
        .unwrap_or_else(|e| panic!("no answer from {addr}: {e}"));
    assert!(status.starts_with("HTTP/1.1 200 "), "{status}");
    let mut rest = String::new();
    reader.read_to_string(&mut rest).expect("the response");
    let (_, body) = rest.split_once("\r\n\r\n").expect("head and body");
    body.to_string()
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn serve_drops_capabilities_and_keeps_serving() {
    require_root();
    let addr = format!("127.0.0.1:{}", free_port());
    let running = Running::start(&["serve", "--metrics", &addr]);

    // Every thread: CAP_BPF alone (to read its maps on kernels that ask for
    // it), nothing to pass on, nothing to regain by executing a program.
    let tasks = std::fs::read_dir(format!("/proc/{}/task", running.pid())).expect("tasks");
    for task in tasks {
        let status = task.expect("task").path().join("status");
        for field in ["CapEff", "CapPrm", "CapBnd"] {
            assert_eq!(
                capability_set(&status, field),
                CAP_BPF,
                "{field} of {}",
                status.display()
            );
        }
        for field in ["CapInh", "CapAmb"] {
            assert_eq!(capability_set(&status, field), 0, "{field}");
        }
    }

    // Tracing and counting go on.
    let before = scrape(&addr);
    let established = "tcpstate_transitions_total{old=\"SYN_SENT\",new=\"ESTABLISHED\"}";
    let opened_before = sample(&before, established).unwrap_or(0.0);
    const CONNECTIONS: usize = 20;
    let (socket, _) = workload::bound_listener();
    workload::client_closes_first(socket, CONNECTIONS);
    std::thread::sleep(Duration::from_millis(300));
    let after = scrape(&addr);
    let opened_after = sample(&after, established).unwrap_or(0.0);
    assert!(
        opened_after - opened_before >= CONNECTIONS as f64,
        "{opened_before} -> {opened_after}\n{after}"
    );
    for event in ["transition", "accept", "reset"] {
        let series = format!("tcpstate_lost_events_total{{event=\"{event}\"}}");
        assert!(sample(&after, &series).is_some(), "{series}: {after}");
    }

    // 200 clients each send half a request and hold the connection: a
    // scrape is answered all the same.
    let held: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut stream = TcpStream::connect(&addr).expect("connect a slow client");
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nUser-Ag")
                .expect("half a request");
            stream
        })
        .collect();
    let starved = scrape(&addr);
    assert!(starved.contains("tcpstate_sockets{"), "{starved}");
    drop(held);

    let (_, stderr, status) = running.interrupt();
    assert!(status.success(), "{status:?}: {stderr:?}");
    assert!(!stderr.iter().any(|l| l.contains("warning")), "{stderr:?}");
}

/// The other live commands drop the same way; `record --rotate` keeps what
/// its later snapshots read (other users' /proc/PID/fd) and what creating
/// the next files needs.
#[test]
fn every_live_command_drops_capabilities() {
    require_root();
    const CAP_DAC_OVERRIDE: u64 = 1 << 1;
    const CAP_DAC_READ_SEARCH: u64 = 1 << 2;
    const CAP_SYS_PTRACE: u64 = 1 << 19;
    let scratch = workload::Scratch::new("capabilities");
    let (one, rotating) = (scratch.path("one.rec"), scratch.path("rotating.rec"));
    let (one, rotating) = (one.to_str().unwrap(), rotating.to_str().unwrap());
    let cases: [(&[&str], u64); 5] = [
        (&["trace"], CAP_BPF),
        (&["stat"], CAP_BPF),
        (&["doctor", "--for", "1h"], CAP_BPF),
        (&["record", "--output", one], CAP_BPF),
        (
            &["record", "--output", rotating, "--rotate", "1G"],
            CAP_BPF | CAP_SYS_PTRACE | CAP_DAC_READ_SEARCH | CAP_DAC_OVERRIDE,
        ),
    ];
    for (args, kept) in cases {
        let running = Running::start(args);
        let status = std::path::PathBuf::from(format!("/proc/{}/status", running.pid()));
        for field in ["CapEff", "CapPrm", "CapBnd"] {
            assert_eq!(capability_set(&status, field), kept, "{field} of {args:?}");
        }
        let (_, stderr, exit) = running.interrupt();
        assert!(exit.success(), "{args:?}: {exit:?} {stderr:?}");
    }
}

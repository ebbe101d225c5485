//! Filters mean the same in every command: sockets of another port that
//! exist before the start (found by the start-up snapshot) are left out just
//! like traced ones, and a filter a command cannot apply is refused.
use serde_json::Value;
use std::{
    io::Read,
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};
use tcpstate::recording::RecordingReader;
use tcpstate_tests::{require_root, running::Running, tcpstate_bin, workload::Scratch};

/// Sockets on a port of their own, made before the tracer starts: a
/// listener, a server socket in CLOSE_WAIT (its client closed), and a
/// TIME_WAIT socket (the server closed first).
struct OtherPort {
    _listener: TcpListener,
    close_wait: Option<TcpStream>,
}

impl OtherPort {
    fn new() -> OtherPort {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).expect("connect");
        let (close_wait, _) = listener.accept().expect("accept");
        drop(client);
        let mut client = TcpStream::connect(addr).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        drop(server);
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut sink = Vec::new();
        client.read_to_end(&mut sink).expect("EOF from the server");
        drop(client);
        std::thread::sleep(Duration::from_millis(100));
        OtherPort {
            _listener: listener,
            close_wait: Some(close_wait),
        }
    }

    /// Closes the CLOSE_WAIT socket: transitions on the other port while
    /// the tracer runs.
    fn close(&mut self) {
        drop(self.close_wait.take());
    }
}

/// A listener on its own port, listening before the tracer starts.
fn own_listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// The first JSON report on `running`'s stdout for which `done` holds.
fn report_where(running: &Running, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let line = running
            .stdout
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no report with {what}"));
        let report: Value = serde_json::from_str(&line).expect("JSON");
        if done(&report) {
            return report;
        }
    }
}

#[test]
fn stat_port_counts_only_that_port() {
    require_root();
    let _other = OtherPort::new();
    let (listener, port) = own_listener();
    let p = port.to_string();
    let stat = Running::start(&["stat", "--json", "--every", "100ms", "--port", &p]);
    let _client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let _server = listener.accept().expect("accept");
    let report = report_where(&stat, "two ESTABLISHED sockets", |r| {
        r["by_state"]["ESTABLISHED"] == 2
    });
    assert_eq!(
        report["by_state"],
        serde_json::json!({"LISTEN": 1, "ESTABLISHED": 2}),
        "{report}"
    );
    let (_, _, status) = stat.interrupt();
    assert!(status.success());
}

#[test]
fn leaks_port_reports_only_that_port() {
    require_root();
    let _other = OtherPort::new();
    let (listener, port) = own_listener();
    let p = port.to_string();
    let leaks = Running::start(&[
        "leaks",
        "--json",
        "--threshold",
        "0s",
        "--every",
        "100ms",
        "--port",
        &p,
    ]);
    let client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (_leaked, _) = listener.accept().expect("accept");
    drop(client);
    let me = std::process::id();
    let report = report_where(&leaks, "this process's leak", |r| {
        r["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["tgid"] == me)
    });
    for process in report["processes"].as_array().unwrap() {
        assert_eq!(
            process["local_ports"],
            serde_json::json!([port]),
            "{report}"
        );
    }
    let (_, _, status) = leaks.interrupt();
    assert!(status.success());
}

#[test]
fn life_and_trace_port_show_only_that_port() {
    require_root();
    for command in ["life", "trace"] {
        let mut other = OtherPort::new();
        let (listener, port) = own_listener();
        let p = port.to_string();
        let running = Running::start(&[command, "--json", "--port", &p]);
        other.close();
        let client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        drop(client);
        drop(server);
        std::thread::sleep(Duration::from_millis(300));
        let (stdout, stderr, status) = running.interrupt();
        assert!(status.success(), "{stderr:?}");
        let records: Vec<Value> = stdout
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .filter(|r: &Value| r["type"] == "connection" || r["type"] == "transition")
            .collect();
        assert!(!records.is_empty(), "{command}: nothing shown: {stderr:?}");
        for record in &records {
            assert!(
                record["lport"] == port || record["rport"] == port,
                "{command} --port {port} showed {record}"
            );
        }
    }
}

#[test]
fn record_port_keeps_only_that_port_in_the_snapshot() {
    require_root();
    let _other = OtherPort::new();
    let (_listener, port) = own_listener();
    let scratch = Scratch::new("filters");
    let file = scratch.path("port.rec");
    let p = port.to_string();
    let recorder = Running::start(&["record", "-o", file.to_str().unwrap(), "--port", &p]);
    let (_, _, status) = recorder.interrupt();
    assert!(status.success());
    let reader = RecordingReader::open(&file).expect("open the recording");
    let snapshot = reader.snapshot().expect("a snapshot");
    assert!(
        snapshot
            .sockets
            .iter()
            .any(|s| s.existing.local.port == port),
        "the listener of port {port} is missing"
    );
    for socket in &snapshot.sockets {
        let s = &socket.existing;
        assert!(
            s.local.port == port || s.remote.port == port,
            "record --port {port} kept {s:?}"
        );
    }
}

/// A filter a command cannot apply is refused before anything is loaded.
#[test]
fn filters_a_command_cannot_apply_are_refused() {
    for (args, flag) in [
        (&["stat", "--state", "CLOSE_WAIT"][..], "--state"),
        (&["leaks", "--cgroup", "1"], "--cgroup"),
        (
            &["record", "-o", "/nonexistent/x.rec", "--state", "LISTEN"],
            "--state",
        ),
        (&["top", "--state", "LISTEN"], "--state"),
        (&["life", "--state", "LISTEN"], "--state"),
    ] {
        let mut child = std::process::Command::new(tcpstate_bin())
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run tcpstate");
        // Refused at once; one that runs instead is stopped, and fails.
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{args:?} was accepted: it ran");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .expect("stderr");
        assert!(!status.success(), "{args:?} was accepted");
        assert!(
            stderr.contains(&format!("does not take {flag}")) && stderr.lines().count() == 1,
            "{args:?}: {stderr}"
        );
    }
}

//! `tcpstate kill` and `tcpstate stale` against real sockets: a process
//! leaking CLOSE_WAIT sockets next to healthy connections, a server whose
//! peer vanished in another network namespace, and the refusals.
use std::{
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    process::{Command, Output, Stdio},
    sync::mpsc,
    time::Instant,
};
use tcpstate_tests::{
    millis,
    netns::{in_netns, NetnsPair, SERVER_V4},
    require_root,
    running::{Peer, Running},
    secs, tcpstate_bin,
};

const PEER: &str = env!("CARGO_BIN_EXE_tcpstate-test-peer");
const LEAKED: usize = 10;
const HEALTHY: usize = 5;

fn tcpstate(args: &[&str]) -> Output {
    Command::new(tcpstate_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tcpstate")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `ss` lines of sockets in `state` (ss's spelling) held by `pid`.
fn ss_of(pid: u32, state: &str) -> Vec<String> {
    let out = Command::new("ss")
        .args(["-Htanp", "state", state])
        .output()
        .expect("run ss (iproute2)");
    assert!(out.status.success(), "ss: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .map(str::to_string)
        .collect()
}

/// This test's own CLOSE_WAIT sockets on `port` (tests may run in
/// parallel in this process).
fn own_close_wait(port: u16) -> usize {
    ss_of(std::process::id(), "close-wait")
        .iter()
        .filter(|l| l.contains(&format!(":{port} ")))
        .count()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < secs(10), "timed out waiting for {what}");
        std::thread::sleep(millis(50));
    }
}

/// A peer process holding 10 CLOSE_WAIT sockets and 5 healthy connections
/// on its port (the clients, held by this test), plus 2 CLOSE_WAIT sockets
/// of this test's own on another port.
struct Leak {
    peer: Peer,
    /// The port of this test's own CLOSE_WAIT sockets.
    own_port: u16,
    _healthy: Vec<TcpStream>,
    _own: (TcpListener, Vec<TcpStream>),
}

fn leak() -> Leak {
    let peer = Peer::start(PEER, &["serve", "leak", &(LEAKED + HEALTHY).to_string()]);
    for _ in 0..LEAKED {
        drop(TcpStream::connect(("127.0.0.1", peer.port)).expect("connect"));
    }
    let healthy: Vec<TcpStream> = (0..HEALTHY)
        .map(|_| TcpStream::connect(("127.0.0.1", peer.port)).expect("connect"))
        .collect();
    peer.wait_done();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let own: Vec<TcpStream> = (0..2)
        .map(|_| {
            let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server, _) = listener.accept().unwrap();
            drop(client);
            server
        })
        .collect();
    let own_port = listener.local_addr().unwrap().port();
    wait_for("the CLOSE_WAIT sockets", || {
        ss_of(peer.pid, "close-wait").len() == LEAKED && own_close_wait(own_port) == 2
    });
    assert_eq!(ss_of(peer.pid, "established").len(), HEALTHY);
    Leak {
        peer,
        own_port,
        _healthy: healthy,
        _own: (listener, own),
    }
}

#[test]
fn kill_destroys_exactly_the_leaked_close_wait_sockets() {
    require_root();
    let leak = leak();
    let (pid, me) = (leak.peer.pid, std::process::id());
    let pid_text = pid.to_string();
    let port = leak.peer.port.to_string();
    let args = ["kill", "--state", "CLOSE_WAIT", "--pid", &pid_text];

    // The dry run lists the ten and changes nothing.
    let dry = tcpstate(&[&args[..], &["--dry-run"]].concat());
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    let plan = text(&dry.stdout);
    // Rows are `PID COMM STATE ...`; the closing note is not a row.
    let rows: Vec<&str> = plan
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("CLOSE_WAIT"))
        .collect();
    assert_eq!(rows.len(), LEAKED, "{plan}");
    assert!(
        rows.iter().all(|r| r.starts_with(&format!("{pid} "))),
        "{plan}"
    );
    assert!(plan.contains("10 socket(s) selected"), "{plan}");
    assert!(text(&dry.stderr).contains("dry run: nothing was killed"));
    assert_eq!(ss_of(pid, "close-wait").len(), LEAKED);

    // The kill, with a trace running: the model sees the transitions.
    let trace = Running::start(&["trace", "--json", "--port", &port]);
    let out = tcpstate(&[&args[..], &["--yes"]].concat());
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let destroyed = text(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("destroyed"))
        .count();
    assert_eq!(destroyed, LEAKED, "{}", text(&out.stdout));
    let logged = stderr
        .lines()
        .filter(|l| l.starts_with("tcpstate: kill CLOSE_WAIT"))
        .count();
    assert_eq!(logged, LEAKED, "{stderr}");
    assert!(
        stderr.contains("10 destroyed, 0 already gone, 0 refused"),
        "{stderr}"
    );
    assert!(
        ss_of(pid, "close-wait").is_empty(),
        "{:?}",
        ss_of(pid, "close-wait")
    );
    // Everything else is untouched.
    assert_eq!(ss_of(pid, "established").len(), HEALTHY);
    let healthy_clients = ss_of(me, "established")
        .iter()
        .filter(|l| l.contains(&format!(":{port} ")))
        .count();
    assert_eq!(healthy_clients, HEALTHY);
    assert_eq!(own_close_wait(leak.own_port), 2);
    std::thread::sleep(millis(300));
    let (lines, _, status) = trace.interrupt();
    assert!(status.success());
    let closed = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["old"] == "CLOSE_WAIT" && v["new"] == "CLOSE")
        .count();
    assert_eq!(closed, LEAKED, "{lines:#?}");
}

#[test]
fn refusals_are_one_line_and_kill_nothing() {
    require_root();
    let leak = leak();
    let pid = leak.peer.pid.to_string();
    let refused = |args: &[&str], env_prefix: &[&str], expect: &str| {
        let out = if env_prefix.is_empty() {
            tcpstate(args)
        } else {
            Command::new(env_prefix[0])
                .args(&env_prefix[1..])
                .arg(tcpstate_bin())
                .args(args)
                .stdin(Stdio::null())
                .output()
                .expect("run setpriv (util-linux)")
        };
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.contains("warning:")).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(lines[0].starts_with("tcpstate: error: "), "{stderr}");
        assert!(lines[0].contains(expect), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(ss_of(leak.peer.pid, "close-wait").len(), LEAKED, "{args:?}");
    };
    let kill = ["kill", "--state", "CLOSE_WAIT", "--pid", &pid, "--yes"];
    // Not root: an unprivileged uid without capabilities.
    refused(
        &kill,
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        "needs CAP_NET_ADMIN",
    );
    refused(
        &[
            "kill",
            "--state",
            "CLOSE_WAIT",
            "--pid",
            "999999999",
            "--yes",
        ],
        &[],
        "no process with pid 999999999",
    );
    refused(
        &[&kill[..], &["--max", "3"]].concat(),
        &[],
        "10 sockets selected, more than --max 3",
    );
    refused(
        &["kill", "--state", "CLOSE_WAIT", "--pid", &pid],
        &[],
        "refusing to kill without --yes",
    );
    refused(
        &["kill", "--state", "TIME_WAIT", "--yes"],
        &[],
        "TIME_WAIT sockets are never killed",
    );
}

/// A line from the peer's stdout, or a failure naming what was expected.
fn next(lines: &mpsc::Receiver<String>, what: &str) -> String {
    lines
        .recv_timeout(secs(10))
        .unwrap_or_else(|_| panic!("the server did not say {what}"))
}

#[test]
fn stale_finds_a_server_whose_peer_vanished_and_kill_ends_it() {
    require_root();
    let pair = NetnsPair::create();
    let mut server = Command::new("ip")
        .args(["netns", "exec", &pair.server, PEER, "hold-silent"])
        .arg(SERVER_V4.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server");
    // Killed even if the test fails.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut to_server = server.stdin.take().unwrap();
    let (tx, lines) = mpsc::channel();
    let out = server.stdout.take().unwrap();
    let _server = Reap(server);
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let ready = next(&lines, "ready");
    let fields: Vec<u32> = ready
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("server said {ready}"))
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    let (port, server_pid) = (fields[0] as u16, fields[1]);

    // The client sends data the server acknowledges, then vanishes: its
    // link goes down first, so neither its FIN nor anything else arrives.
    let client = in_netns(Some(&pair.client), move || {
        let mut c = TcpStream::connect((SERVER_V4, port)).expect("connect");
        c.write_all(&[1u8; 100]).unwrap();
        c
    });
    assert_eq!(next(&lines, "got"), "got");
    let status = Command::new("ip")
        .args(["-n", &pair.client, "link", "set", "veth0", "down"])
        .status()
        .unwrap();
    assert!(status.success());
    drop(client);
    // The server has something to say: it retransmits into the void.
    writeln!(to_server, "send").unwrap();
    assert_eq!(next(&lines, "sent"), "sent");

    let start = Instant::now();
    let conn = loop {
        let out = tcpstate(&[
            "stale",
            "--json",
            "--netns",
            &pair.server,
            "--silent-for",
            "1s",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let found = report["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"] == server_pid)
            .map(|p| p["connections"][0].clone());
        if let Some(conn) = found.filter(|c| c["verdict"] == "peer-not-answering") {
            break conn;
        }
        assert!(
            start.elapsed() < secs(30),
            "never reported stale: {report:#}"
        );
        std::thread::sleep(millis(500));
    };
    eprintln!("stale reported: {conn}");
    assert_eq!(conn["local"], format!("{SERVER_V4}:{port}"));
    assert!(conn["silent_ms"].as_u64().unwrap() >= 1000, "{conn}");
    assert!(conn["retransmits"].as_u64().unwrap() >= 1, "{conn}");
    assert!(conn["unacked"].as_u64().unwrap() >= 1, "{conn}");
    assert!(
        conn["how"].as_str().unwrap().contains("unacknowledged"),
        "{conn}"
    );

    // kill finds the server's namespace from its pid.
    let pid = server_pid.to_string();
    let out = tcpstate(&["kill", "--pid", &pid, "--state", "ESTABLISHED", "--yes"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 destroyed, 0 already gone, 0 refused"),
        "{stderr}"
    );
    // The server learns it on its next call.
    writeln!(to_server, "call").unwrap();
    assert_eq!(
        next(&lines, "the result of its call"),
        format!("error {}", libc::ECONNABORTED)
    );
}

#[test]
fn leaks_kill_hands_its_suspects_to_kill() {
    require_root();
    let leak = leak();
    let pid = leak.peer.pid.to_string();
    let args = ["leaks", "--kill", "--threshold", "0s", "--pid", &pid];
    let dry = tcpstate(&[&args[..], &["--dry-run"]].concat());
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    let plan = text(&dry.stdout);
    assert!(plan.contains("10 socket(s) selected"), "{plan}");
    assert_eq!(ss_of(leak.peer.pid, "close-wait").len(), LEAKED);
    // A threshold no suspect reaches selects nothing.
    let none = tcpstate(&[
        "leaks",
        "--kill",
        "--threshold",
        "1h",
        "--pid",
        &pid,
        "--yes",
    ]);
    assert!(none.status.success(), "{}", text(&none.stderr));
    assert!(text(&none.stdout).contains("0 socket(s) selected"));
    let out = tcpstate(&[&args[..], &["--yes"]].concat());
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("10 destroyed, 0 already gone, 0 refused"),
        "{stderr}"
    );
    assert!(ss_of(leak.peer.pid, "close-wait").is_empty());
    assert_eq!(ss_of(leak.peer.pid, "established").len(), HEALTHY);
}

/// IPv6 sockets, and IPv4 peers of a dual-stack IPv6 socket (v4-mapped
/// addresses): the destroy request names them as the kernel stores them.
#[test]
fn kill_ends_ipv6_and_v4_mapped_sockets() {
    require_root();
    let Ok(listener) = TcpListener::bind("[::]:0") else {
        eprintln!("note: no IPv6 here, skipped");
        return;
    };
    let port = listener.local_addr().unwrap().port();
    let mut held = Vec::new();
    for peer in ["[::1]", "127.0.0.1"] {
        let client = TcpStream::connect(format!("{peer}:{port}")).expect("connect");
        let (server, _) = listener.accept().unwrap();
        drop(client);
        held.push(server);
    }
    let me = std::process::id();
    let mine = || {
        ss_of(me, "close-wait")
            .into_iter()
            .filter(|l| l.contains(&format!(":{port} ")))
            .collect::<Vec<_>>()
    };
    wait_for("two CLOSE_WAIT sockets", || mine().len() == 2);
    let port_text = port.to_string();
    let out = tcpstate(&[
        "kill",
        "--port",
        &port_text,
        "--state",
        "CLOSE_WAIT",
        "--yes",
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("2 destroyed, 0 already gone, 0 refused"),
        "{stderr}"
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("[::1]:{port} -> [::1]:")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("127.0.0.1:{port} -> 127.0.0.1:")),
        "{stdout}"
    );
    assert!(mine().is_empty(), "{:?}", mine());
    drop(held);
}

/// Without --yes, a terminal is asked (here a pseudo-terminal from
/// `script`): anything but `y` kills nothing.
#[test]
fn kill_asks_a_terminal_for_confirmation() {
    require_root();
    let leak = leak();
    let command = format!(
        "{} kill --state CLOSE_WAIT --pid {}",
        tcpstate_bin().display(),
        leak.peer.pid
    );
    let on_terminal = |answer: &str| {
        let mut child = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run script (util-linux)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(answer.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let no = on_terminal("n\n");
    let said = text(&no.stdout);
    assert!(!no.status.success(), "{said}");
    assert!(said.contains("kill these 10 socket(s)? [y/N]"), "{said}");
    assert!(said.contains("not confirmed; nothing was killed"), "{said}");
    assert_eq!(ss_of(leak.peer.pid, "close-wait").len(), LEAKED);
    let yes = on_terminal("y\n");
    let said = text(&yes.stdout);
    assert!(yes.status.success(), "{said}");
    assert!(
        said.contains("10 destroyed, 0 already gone, 0 refused"),
        "{said}"
    );
    assert!(ss_of(leak.peer.pid, "close-wait").is_empty());
}

/// Issue 12: a kill while `record` runs is in the recording, one record
/// per socket, beside the transitions it caused.
#[test]
fn kill_while_recording_puts_every_kill_in_the_recording() {
    require_root();
    let leak = leak();
    let (pid, port) = (leak.peer.pid, leak.peer.port);
    let dir = tcpstate_tests::workload::Scratch::new("kill-record");
    let file = dir.path("kills.rec");
    let port_text = port.to_string();
    // Only the peer's port: kills by tests running beside this one (any
    // `kill` tells every recorder) are left out like their transitions.
    let recorder = Running::start(&["record", "-o", file.to_str().unwrap(), "--port", &port_text]);
    let inbox = std::path::Path::new("/run/tcpstate").join(format!("kill-{}.sock", recorder.pid()));
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = std::fs::metadata(&inbox).expect("the recorder listens for kills");
    assert!(meta.file_type().is_socket(), "{inbox:?}");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dir_mode = std::fs::metadata("/run/tcpstate")
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);

    // A dry run sends nothing.
    let pid_text = pid.to_string();
    let args = ["kill", "--state", "CLOSE_WAIT", "--pid", &pid_text];
    let dry = tcpstate(&[&args[..], &["--dry-run"]].concat());
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    let out = tcpstate(&[&args[..], &["--yes"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(ss_of(pid, "close-wait").is_empty());
    // The kills and the closes reach the file within its flush interval.
    std::thread::sleep(millis(1_500));
    let (_, stderr, status) = recorder.interrupt();
    assert!(status.success(), "{stderr:?}");
    assert!(!inbox.exists(), "the recorder left its socket behind");
    assert!(!stderr.iter().any(|l| l.contains("dropped")), "{stderr:?}");

    let replay = tcpstate(&["trace", "--input", file.to_str().unwrap(), "--json"]);
    assert!(replay.status.success(), "{}", text(&replay.stderr));
    let lines: Vec<serde_json::Value> = text(&replay.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let kills: Vec<&serde_json::Value> = lines.iter().filter(|v| v["type"] == "kill").collect();
    assert_eq!(kills.len(), LEAKED, "{lines:#?}");
    let tuple = |v: &serde_json::Value| {
        (
            v["laddr"].as_str().unwrap_or_default().to_string(),
            v["lport"].as_u64().unwrap_or_default(),
            v["raddr"].as_str().unwrap_or_default().to_string(),
            v["rport"].as_u64().unwrap_or_default(),
        )
    };
    let killer = kills[0]["killer_pid"].as_u64().unwrap();
    assert!(killer != u64::from(pid) && killer != u64::from(std::process::id()));
    for k in &kills {
        assert_eq!(k["outcome"], "destroyed", "{k}");
        assert_eq!(k["errno"], serde_json::Value::Null, "{k}");
        assert_eq!(k["state"], "CLOSE_WAIT", "{k}");
        assert_eq!(k["owner_tgid"], u64::from(pid), "{k}");
        assert_eq!(k["owner_comm"], "tcpstate-test-p", "{k}");
        assert_eq!(k["killer_pid"], killer, "{k}");
        assert_eq!(k["lport"], u64::from(port), "{k}");
        assert_eq!(k["laddr"], "127.0.0.1", "{k}");
        assert_eq!(k["family"], "ipv4", "{k}");
    }
    let mut killed: Vec<_> = kills.iter().map(|k| tuple(k)).collect();
    killed.sort();
    killed.dedup();
    assert_eq!(killed.len(), LEAKED, "ten different sockets: {killed:?}");
    let mut closed: Vec<_> = lines
        .iter()
        .filter(|v| v["type"] == "transition" && v["old"] == "CLOSE_WAIT" && v["new"] == "CLOSE")
        .map(tuple)
        .collect();
    closed.sort();
    assert_eq!(closed, killed, "the kills are those of the closes");

    // `report` counts and lists them; the JSON Lines export shows them.
    let report = tcpstate(&["report", file.to_str().unwrap()]);
    assert!(report.status.success(), "{}", text(&report.stderr));
    let report = text(&report.stdout);
    assert!(
        report.contains("10 socket(s) acted on by `tcpstate kill`"),
        "{report}"
    );
    assert_eq!(
        report.lines().filter(|l| l.contains("destroyed")).count(),
        LEAKED,
        "{report}"
    );
    let export = tcpstate(&["export", file.to_str().unwrap(), "--format", "jsonl"]);
    assert!(export.status.success(), "{}", text(&export.stderr));
    assert_eq!(
        text(&export.stdout)
            .lines()
            .filter(|l| l.contains("\"type\":\"kill\""))
            .count(),
        LEAKED
    );
}

//! Recordings from the real kernel: crash safety, replay equal to live,
//! damaged files, exports and reports.
use serde_json::Value;
use std::{
    collections::BTreeMap,
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Output},
};
use tcpstate::{recording::RecordingReader, source::Item, tcp::TcpState};
use tcpstate_tests::{
    require_root,
    running::{Peer, Running},
    tcpstate_bin,
    workload::{self, Scratch, LISTENER_TRANSITIONS, TRANSITIONS_PER_CONNECTION},
};

const PEER: &str = env!("CARGO_BIN_EXE_tcpstate-test-peer");

fn tcpstate(args: &[&str]) -> Output {
    Command::new(tcpstate_bin())
        .args(args)
        .output()
        .expect("run tcpstate")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// (old, new) counts of the transitions on `port` in a recording, and the
/// kernel's lost count it reached.
fn recorded_pairs(path: &Path, port: u16) -> (BTreeMap<(TcpState, TcpState), usize>, u64) {
    let mut reader = RecordingReader::open(path).expect("open the recording");
    let mut pairs = BTreeMap::new();
    let mut lost = 0;
    let mut items = Vec::new();
    loop {
        match reader.next_batch(&mut items) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => panic!("damaged recording: {e}"),
        }
        for item in &items {
            match item {
                Item::Transition(t) if t.local.port == port || t.remote.port == port => {
                    *pairs.entry((t.old, t.new)).or_default() += 1;
                }
                Item::Lost { total, .. } => lost = *total,
                _ => {}
            }
        }
    }
    (pairs, lost)
}

/// A recording of a small real workload on loopback: `count` connections
/// to a peer process that closes first (so the peer holds TIME_WAIT).
fn record_workload(dir: &Scratch, count: usize) -> (PathBuf, u16, u32) {
    let file = dir.path("workload.rec");
    let recorder = Running::start(&["record", "-o", file.to_str().unwrap()]);
    let peer = Peer::start(PEER, &["serve", "close-first", &count.to_string()]);
    for _ in 0..count {
        use std::io::Read;
        let mut s = TcpStream::connect(("127.0.0.1", peer.port)).expect("connect");
        let mut buf = [0u8; 8];
        let _ = s.read(&mut buf);
    }
    peer.wait_done();
    std::thread::sleep(tcpstate_tests::millis(300));
    let (_, stderr, status) = recorder.interrupt();
    assert!(status.success(), "{stderr:?}");
    (file, peer.port, peer.pid)
}

#[test]
fn a_recording_killed_with_sigkill_reads_back_up_to_its_last_flush() {
    require_root();
    let dir = Scratch::new("sigkill");
    let file = dir.path("killed.rec");
    let recorder = Running::start(&["record", "-o", file.to_str().unwrap()]);

    // Before the pause: flushed within a second, so it must survive.
    let (flushed, flushed_addr) = workload::bound_listener();
    workload::client_closes_first(flushed, 50);
    std::thread::sleep(tcpstate_tests::millis(1_500));
    // Right before the kill: may or may not be in the file.
    let (unflushed, _) = workload::bound_listener();
    workload::client_closes_first(unflushed, 50);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(recorder.pid(), libc::SIGKILL) };
    drop(recorder);

    let mode = std::fs::metadata(&file)
        .expect("the file exists")
        .permissions();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        mode.mode() & 0o777,
        0o600,
        "recordings reveal addresses: 0600"
    );
    let (pairs, lost) = recorded_pairs(&file, flushed_addr.port());
    let total = pairs.values().sum::<usize>() as u64;
    let expected = (50 * TRANSITIONS_PER_CONNECTION + LISTENER_TRANSITIONS) as u64;
    // Every transition before the last flush; one the kernel skipped is
    // in the recorded lost count instead (host-wide, so an upper bound).
    assert!(
        total <= expected && total + lost >= expected && (lost > 0 || total == expected),
        "{total} of {expected} transitions, {lost} lost: {pairs:?}"
    );
    // The CLI reads it too, with at most a warning about the cut block.
    let out = tcpstate(&["trace", "--json", "--input", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn replay_gives_the_same_output_as_live_byte_for_byte() {
    require_root();
    let dir = Scratch::new("replay");
    for command in ["trace", "life"] {
        let file = dir.path(&format!("{command}.rec"));
        let (socket, addr) = workload::bound_listener();
        let port = addr.port().to_string();
        let live = Running::start(&[
            command,
            "--json",
            "--port",
            &port,
            "--record",
            file.to_str().unwrap(),
        ]);
        workload::client_closes_first(socket, 20);
        std::thread::sleep(tcpstate_tests::millis(300));
        let (live_lines, stderr, status) = live.interrupt();
        assert!(status.success(), "{stderr:?}");
        assert!(!live_lines.is_empty());
        let replay = tcpstate(&[
            command,
            "--json",
            "--port",
            &port,
            "--input",
            file.to_str().unwrap(),
        ]);
        assert!(replay.status.success(), "{}", text(&replay.stderr));
        let mut live_text = live_lines.join("\n");
        live_text.push('\n');
        assert_eq!(
            text(&replay.stdout),
            live_text,
            "{command}: replay differs from live"
        );
    }
}

#[test]
fn export_jsonl_equals_trace_json_and_csv_has_a_row_per_transition() {
    require_root();
    let dir = Scratch::new("export");
    let (file, port, peer_pid) = record_workload(&dir, 4);
    let file = file.to_str().unwrap();
    let trace = tcpstate(&["trace", "--json", "--input", file]);
    let export = tcpstate(&["export", file, "--format", "jsonl"]);
    assert!(trace.status.success() && export.status.success());
    assert_eq!(text(&export.stdout), text(&trace.stdout));

    // The peer's accepted sockets carry their owner and connection id.
    let lines: Vec<Value> = text(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let owned = lines
        .iter()
        .filter(|l| l["lport"] == port && l["owner_how"] == "accept")
        .filter(|l| l["owner_tgid"] == peer_pid && l["connection_id"].is_u64())
        .count();
    assert!(
        owned >= 4 * 3,
        "accepted sockets' transitions with their owner: {owned}"
    );

    let csv_path = dir.path("out.csv");
    let csv = tcpstate(&[
        "export",
        file,
        "--format",
        "csv",
        "-o",
        csv_path.to_str().unwrap(),
    ]);
    assert!(csv.status.success(), "{}", text(&csv.stderr));
    let csv_text = std::fs::read_to_string(&csv_path).unwrap();
    let transitions = lines.iter().filter(|l| l["type"] == "transition").count();
    assert_eq!(
        csv_text.lines().count(),
        transitions + 1,
        "header + one row per transition"
    );
    assert!(
        csv_text.starts_with("time,ts_boot_ns,connection_id,"),
        "{}",
        &csv_text[..80]
    );

    let parquet_path = dir.path("out.parquet");
    let parquet = tcpstate(&[
        "export",
        file,
        "--format",
        "parquet",
        "-o",
        parquet_path.to_str().unwrap(),
    ]);
    assert!(parquet.status.success(), "{}", text(&parquet.stderr));
    let bytes = std::fs::read(&parquet_path).unwrap();
    assert!(
        bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"),
        "a parquet file"
    );
}

#[test]
fn report_summarises_a_recording() {
    require_root();
    let dir = Scratch::new("report");
    let (file, _port, peer_pid) = record_workload(&dir, 5);
    let out = tcpstate(&["report", "--json", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_str(&text(&out.stdout)).expect("JSON report");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(report["metadata"]["host_name"], host.trim());
    let producer = report["time_wait_by_process"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.starts_with(&format!("{peer_pid}/")))
        .unwrap_or_else(|| panic!("the peer produced TIME_WAIT: {report}"));
    assert_eq!(producer.1["time_wait"], 5, "{producer:?}");
    assert_eq!(producer.1["we_closed_first"], 5);
    let human = tcpstate(&["report", file.to_str().unwrap()]);
    let human = text(&human.stdout);
    assert!(
        human.contains("TIME_WAIT entered, by process") && human.contains("sockets over time"),
        "{human}"
    );
}

/// Every bad input: one line naming the file (and offset), never a panic.
#[test]
fn bad_recordings_get_one_clear_line() {
    require_root();
    let dir = Scratch::new("bad");
    let (good, _, _) = record_workload(&dir, 3);
    let bytes = std::fs::read(&good).unwrap();
    let write = |name: &str, data: &[u8]| {
        let path = dir.path(name);
        std::fs::write(&path, data).unwrap();
        path
    };
    let cases: Vec<(PathBuf, &str)> = vec![
        (write("empty.rec", &[]), "empty file"),
        (
            write("magic.rec", b"GIF89a this is not a recording at all"),
            "not a tcpstate recording",
        ),
        (dir.0.clone(), "is a directory"),
        (dir.path("missing.rec"), "no such file"),
        (
            {
                let mut newer = bytes.clone();
                newer[8] = 0xff; // the format version, right after the magic
                write("newer.rec", &newer)
            },
            "newer",
        ),
    ];
    for (path, expected) in cases {
        let out = tcpstate(&["trace", "--input", path.to_str().unwrap()]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{path:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{path:?}: {err}");
        assert!(
            err.contains(path.to_str().unwrap()) && err.to_lowercase().contains(expected),
            "{path:?}: {err}"
        );
    }

    // Cut in the middle of the last block: the complete blocks are read,
    // with a warning, and it is not an error (a crash leaves such files).
    let truncated = write("truncated.rec", &bytes[..bytes.len() - 7]);
    let out = tcpstate(&["trace", "--json", "--input", truncated.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("incomplete last block at byte"),
        "{}",
        text(&out.stderr)
    );

    // A flipped byte in a middle block: an error with the offset, and the
    // blocks before the damage still analysed.
    let many = dir.path("blocks.rec");
    let (socket, addr) = workload::bound_listener();
    // Only this port, so that every block holds its transitions.
    let recorder = Running::start(&[
        "record",
        "-o",
        many.to_str().unwrap(),
        "--port",
        &addr.port().to_string(),
    ]);
    socket.listen(64).unwrap();
    let listener: std::net::TcpListener = socket.into();
    for _ in 0..3 {
        // One burst per block: blocks are written at least every second.
        for _ in 0..5 {
            drop(TcpStream::connect(addr).unwrap());
            drop(listener.accept().unwrap());
        }
        std::thread::sleep(tcpstate_tests::millis(1_300));
    }
    let (_, _, status) = recorder.interrupt();
    assert!(status.success());
    let bytes = std::fs::read(&many).unwrap();
    // Where the items blocks end, from the reader's position after each.
    let mut reader = RecordingReader::open(&many).unwrap();
    let mut block_ends = vec![reader.offset()];
    let mut items = Vec::new();
    while reader.next_batch(&mut items).unwrap() {
        block_ends.push(reader.offset());
    }
    assert!(
        block_ends.len() >= 4,
        "three items blocks at least: {block_ends:?}"
    );
    let middle = ((block_ends[1] + block_ends[2]) / 2) as usize;
    let mut flipped = bytes.clone();
    flipped[middle] ^= 0x5a;
    let damaged = write("flipped.rec", &flipped);
    let out = tcpstate(&[
        "trace",
        "--json",
        "--port",
        &addr.port().to_string(),
        "--input",
        damaged.to_str().unwrap(),
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("damaged block at byte") && err.contains("bytes skipped"),
        "{err}"
    );
    let complete = tcpstate(&[
        "trace",
        "--json",
        "--port",
        &addr.port().to_string(),
        "--input",
        many.to_str().unwrap(),
    ]);
    // The same transitions (their annotations may differ after the gap).
    let keys = |output: &[u8]| -> std::collections::BTreeSet<String> {
        text(output)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v["type"] == "transition")
            .map(|v| {
                format!(
                    "{} {} {} {}",
                    v["ts_boot_ns"], v["skaddr"], v["old"], v["new"]
                )
            })
            .collect()
    };
    let (got, all) = (keys(&out.stdout), keys(&complete.stdout));
    assert!(!got.is_empty(), "the readable part is analysed");
    assert!(
        got.is_subset(&all) && got.len() < all.len(),
        "the damaged file gives part of the intact one's transitions: {} of {}",
        got.len(),
        all.len()
    );

    // No permission: a 0600 recording read by another user.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(tcpstate_bin())
        .args(["trace", "--input", good.to_str().unwrap()])
        .output()
        .expect("setpriv");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("permission denied"), "{err}");
}

#[test]
fn a_recording_still_being_written_can_be_read() {
    require_root();
    let dir = Scratch::new("growing");
    let file = dir.path("growing.rec");
    let recorder = Running::start(&["record", "-o", file.to_str().unwrap()]);
    let (socket, addr) = workload::bound_listener();
    workload::client_closes_first(socket, 10);
    std::thread::sleep(tcpstate_tests::millis(1_500));
    let out = tcpstate(&[
        "trace",
        "--json",
        "--port",
        &addr.port().to_string(),
        "--input",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let transitions = text(&out.stdout)
        .lines()
        .filter(|l| l.contains(r#""type":"transition""#))
        .count();
    assert_eq!(
        transitions,
        10 * TRANSITIONS_PER_CONNECTION + LISTENER_TRANSITIONS
    );
    let (_, _, status) = recorder.interrupt();
    assert!(status.success());
}

#[test]
fn stat_at_a_moment_of_a_recording() {
    require_root();
    let dir = Scratch::new("stat-at");
    let file = dir.path("leak.rec");
    let recorder = Running::start(&["record", "-o", file.to_str().unwrap()]);
    std::thread::sleep(tcpstate_tests::millis(1_200));
    let leaky = Peer::start(PEER, &["serve", "leak", "6"]);
    let streams: Vec<TcpStream> = (0..6)
        .map(|_| TcpStream::connect(("127.0.0.1", leaky.port)).unwrap())
        .collect();
    drop(streams);
    leaky.wait_done();
    std::thread::sleep(tcpstate_tests::millis(500));
    let (_, _, status) = recorder.interrupt();
    assert!(status.success());
    let close_wait_of_peer = |args: &[&str]| -> u64 {
        let out = tcpstate(args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let last = text(&out.stdout).lines().last().unwrap().to_string();
        let stat: Value = serde_json::from_str(&last).unwrap();
        stat["by_process"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["tgid"] == leaky.pid)
            .and_then(|p| p["states"]["CLOSE_WAIT"].as_u64())
            .unwrap_or(0)
    };
    let f = file.to_str().unwrap();
    assert_eq!(close_wait_of_peer(&["stat", "--json", "--input", f]), 6);
    assert_eq!(
        close_wait_of_peer(&["stat", "--json", "--input", f, "--at", "+1s"]),
        0
    );
}

#[test]
fn rotation_goes_on_in_numbered_files_each_readable_alone() {
    require_root();
    let dir = Scratch::new("rotate");
    let file = dir.path("rot.rec");
    let (socket, addr) = workload::bound_listener();
    socket.listen(64).unwrap();
    let listener: std::net::TcpListener = socket.into();
    let port = addr.port().to_string();
    let recorder = Running::start(&[
        "record",
        "-o",
        file.to_str().unwrap(),
        "--port",
        &port,
        "--rotate",
        "4K",
    ]);
    for _ in 0..4 {
        for _ in 0..30 {
            drop(TcpStream::connect(addr).unwrap());
            drop(listener.accept().unwrap());
        }
        // A block is written at least every second: the size grows.
        std::thread::sleep(tcpstate_tests::millis(1_200));
    }
    let (_, stderr, status) = recorder.interrupt();
    assert!(status.success(), "{stderr:?}");
    let mut files = vec![file.clone()];
    for n in 1.. {
        let next = PathBuf::from(format!("{}.{n}", file.display()));
        if !next.exists() {
            break;
        }
        files.push(next);
    }
    assert!(files.len() >= 2, "rotated at 4K: {files:?} {stderr:?}");
    let mut total = 0;
    for f in &files {
        let out = tcpstate(&[
            "trace",
            "--json",
            "--port",
            &port,
            "--input",
            f.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{f:?}: {}", text(&out.stderr));
        total += text(&out.stdout)
            .lines()
            .filter(|l| l.contains(r#""type":"transition""#))
            .count();
    }
    let mut all = vec!["trace", "--json", "--port", &port, "--input"];
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    all.extend(names.iter().map(String::as_str));
    let together = tcpstate(&all);
    assert!(together.status.success(), "{}", text(&together.stderr));
    let joined = text(&together.stdout)
        .lines()
        .filter(|l| l.contains(r#""type":"transition""#))
        .count();
    assert_eq!(
        joined, total,
        "the files in order hold every transition once"
    );
    assert!(
        total >= 4 * 30 * TRANSITIONS_PER_CONNECTION * 9 / 10,
        "{total}"
    );
}

#[test]
fn from_and_to_select_a_time_window() {
    require_root();
    let dir = Scratch::new("window");
    let file = dir.path("window.rec");
    let (socket, addr) = workload::bound_listener();
    socket.listen(64).unwrap();
    let listener: std::net::TcpListener = socket.into();
    let port = addr.port().to_string();
    let recorder = Running::start(&["record", "-o", file.to_str().unwrap(), "--port", &port]);
    let burst = || {
        for _ in 0..5 {
            drop(TcpStream::connect(addr).unwrap());
            drop(listener.accept().unwrap());
        }
    };
    burst();
    std::thread::sleep(tcpstate_tests::millis(2_000));
    burst();
    std::thread::sleep(tcpstate_tests::millis(300));
    let (_, _, status) = recorder.interrupt();
    assert!(status.success());
    let f = file.to_str().unwrap();
    let transitions = |extra: &[&str]| -> Vec<Value> {
        let mut args = vec!["trace", "--json", "--input", f];
        args.extend_from_slice(extra);
        let out = tcpstate(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v["type"] == "transition")
            .collect()
    };
    let all = transitions(&[]);
    // The gap between the bursts: the first transition after it.
    let mut gap_at = None;
    for pair in all.windows(2) {
        let (a, b) = (
            pair[0]["ts_boot_ns"].as_u64().unwrap(),
            pair[1]["ts_boot_ns"].as_u64().unwrap(),
        );
        if b - a > 1_000_000_000 {
            gap_at = Some(pair[1]["time"].as_str().unwrap().to_string());
        }
    }
    let second_burst_starts = gap_at.expect("two bursts two seconds apart");
    let later = transitions(&["--from", &second_burst_starts]);
    let earlier = transitions(&["--to", &second_burst_starts]);
    assert!(!later.is_empty() && !earlier.is_empty());
    assert_eq!(
        later.len() + earlier.len(),
        all.len() + 1,
        "the boundary is in both"
    );
    assert!(later
        .iter()
        .all(|v| v["time"].as_str().unwrap() >= second_burst_starts.as_str()));
}

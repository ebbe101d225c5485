//! A separate process for the owner tests: its sockets belong to it, not to
//! the test, so attribution to the right process can be checked.
//!
//! tcpstate-test-peer serve MODE COUNT     listen on 127.0.0.1:0, accept COUNT
//!     connections; MODE: leak (never close), close-on-eof (read to EOF,
//!     close), close-first (close at once after accept)
//! tcpstate-test-peer stall              listen on 127.0.0.1:0 and never
//!     accept (connections wait in the accept queue)
//! tcpstate-test-peer prefork WORKERS COUNT   the parent listens, forks
//!     WORKERS workers that accept (COUNT in all), read to EOF and close
//! tcpstate-test-peer hold-silent IP   listen on IP:0 (no SO_KEEPALIVE),
//!     accept one connection, read 100 bytes and say `got`; then per line
//!     on stdin: `send` writes 4000 bytes (say `sent`), `call` writes once
//!     more and says `ok` or `error ERRNO`
//! tcpstate-test-peer exhaust ADDR:PORT CLOSE_FIRST EXTRA   connect to
//!     ADDR:PORT until connect() fails: the first CLOSE_FIRST connections
//!     are closed at once (TIME_WAIT here), the others kept open; then
//!     EXTRA more attempts, each expected to fail too. Prints
//!     `exhausted KEPT CLOSED FAILED ERRNO` (ERRNO of every failure, or
//!     `mixed`) before `done`
//!
//! Prints `ready PORT PID [WORKER_PIDS...]` once listening, then `done`
//! when every connection was handled; then waits to be killed (so that
//! leaked sockets stay open).
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
};

fn read_to_eof(mut stream: TcpStream) {
    let mut buf = [0u8; 1024];
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: tcpstate-test-peer serve leak|close-on-eof|close-first COUNT | prefork WORKERS COUNT";
    let number = |i: usize| -> usize { args.get(i).and_then(|s| s.parse().ok()).expect(usage) };
    if args.first().map(String::as_str) == Some("hold-silent") {
        hold_silent(args.get(1).expect(usage));
        return;
    }
    let mut out = std::io::stdout();
    if args.first().map(String::as_str) == Some("exhaust") {
        // No listener: its port could come from the very range this mode
        // exhausts.
        let dest: std::net::SocketAddr = args.get(1).and_then(|a| a.parse().ok()).expect(usage);
        let close_first = number(2);
        let extra = number(3);
        writeln!(out, "ready 0 {}", std::process::id()).unwrap();
        out.flush().unwrap();
        let (kept, closed, failed, errno) = exhaust(dest, close_first, extra);
        writeln!(out, "exhausted {} {closed} {failed} {errno}", kept.len()).unwrap();
        writeln!(out, "done").unwrap();
        out.flush().unwrap();
        std::thread::park();
        drop(kept);
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local_addr").port();
    match args.first().map(String::as_str) {
        Some("serve") => {
            let mode = args.get(1).expect(usage).clone();
            let count = number(2);
            writeln!(out, "ready {port} {}", std::process::id()).unwrap();
            out.flush().unwrap();
            let mut held = Vec::new();
            for _ in 0..count {
                let (stream, _) = listener.accept().expect("accept");
                match mode.as_str() {
                    "leak" => held.push(stream),
                    "close-on-eof" => read_to_eof(stream),
                    "close-first" => drop(stream),
                    _ => panic!("{usage}"),
                }
            }
            writeln!(out, "done").unwrap();
            out.flush().unwrap();
            std::thread::park();
            drop(held);
        }
        Some("stall") => {
            writeln!(out, "ready {port} {}", std::process::id()).unwrap();
            out.flush().unwrap();
            std::thread::park();
            drop(listener);
        }
        Some("prefork") => {
            let workers = number(1);
            let count = number(2);
            assert!(count % workers == 0, "COUNT must be a multiple of WORKERS");
            let mut pids = Vec::new();
            for _ in 0..workers {
                // SAFETY: single-threaded at this point; the child only uses
                // the inherited listener and exits.
                let pid = unsafe { libc::fork() };
                assert!(pid >= 0, "fork failed");
                if pid == 0 {
                    // Die with the parent: the test kills only the parent.
                    // SAFETY: plain prctl call.
                    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                    for _ in 0..count / workers {
                        let (stream, _) = listener.accept().expect("accept");
                        read_to_eof(stream);
                    }
                    std::thread::park();
                    std::process::exit(0);
                }
                pids.push(pid.to_string());
            }
            writeln!(
                out,
                "ready {port} {} {}",
                std::process::id(),
                pids.join(" ")
            )
            .unwrap();
            out.flush().unwrap();
            std::thread::park();
        }
        _ => panic!("{usage}"),
    }
}

/// See `hold-silent` in the module comment: a server whose peer vanishes.
fn hold_silent(ip: &str) {
    let listener = TcpListener::bind((ip, 0)).expect("bind");
    let port = listener.local_addr().expect("local_addr").port();
    let mut out = std::io::stdout();
    writeln!(out, "ready {port} {}", std::process::id()).unwrap();
    out.flush().unwrap();
    let (mut stream, _) = listener.accept().expect("accept");
    let mut got = [0u8; 100];
    stream.read_exact(&mut got).expect("read 100 bytes");
    writeln!(out, "got").unwrap();
    out.flush().unwrap();
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).unwrap_or(0) > 0 {
        match line.trim() {
            "send" => {
                // Fits the send buffer: queued at once, then retransmitted.
                stream.write_all(&[7u8; 4000]).expect("send");
                writeln!(out, "sent").unwrap();
            }
            "call" => match stream.write(&[1u8]) {
                Ok(_) => writeln!(out, "ok").unwrap(),
                Err(e) => writeln!(out, "error {}", e.raw_os_error().unwrap_or(0)).unwrap(),
            },
            other => panic!("unknown command {other}"),
        }
        out.flush().unwrap();
        line.clear();
    }
}

/// See `exhaust` in the usage. Bounded: a range cannot hold more than
/// 65536 ports.
fn exhaust(
    dest: std::net::SocketAddr,
    close_first: usize,
    extra: usize,
) -> (Vec<TcpStream>, usize, usize, String) {
    let mut kept = Vec::new();
    let mut closed = 0;
    let mut errnos = Vec::new();
    while kept.len() + closed <= 65536 {
        match TcpStream::connect(dest) {
            Ok(stream) if closed < close_first => {
                drop(stream);
                closed += 1;
            }
            Ok(stream) => kept.push(stream),
            Err(e) => {
                errnos.push(e.raw_os_error().unwrap_or(0));
                break;
            }
        }
    }
    assert!(!errnos.is_empty(), "65536 connections and no failure");
    for _ in 0..extra {
        match TcpStream::connect(dest) {
            Ok(_) => panic!("connect() succeeded after the range was exhausted"),
            Err(e) => errnos.push(e.raw_os_error().unwrap_or(0)),
        }
    }
    let errno = if errnos.iter().all(|e| *e == errnos[0]) {
        errnos[0].to_string()
    } else {
        "mixed".to_string()
    };
    (kept, closed, errnos.len(), errno)
}

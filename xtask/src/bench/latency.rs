//! Delivery latency of an isolated event: with the kernel batching
//! wake-ups, a lone transition must still show at once (the program wakes
//! the reader when none happened for 50 ms; the reader also looks every
//! 50 ms). Measured from the kernel's timestamp of the transition to the
//! moment its JSON line is read from `tcpstate trace --json`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::child::{self, Guarded};
use super::output;
use super::summary::median;

#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub events: usize,
    pub median_ms: f64,
    pub max_ms: f64,
    pub samples_ms: Vec<f64>,
}

fn boot_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn measure(tcpstate: &Path, dir: &Path, events: usize) -> Result<Latency> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let stderr_path = dir.join("latency.stderr");
    let mut child = Command::new(tcpstate)
        .args(["trace", "--json", "--port", &addr.port().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(&stderr_path)?)
        .spawn()
        .context("starting tcpstate trace for the latency test")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut process = Guarded::new(child, Duration::from_secs(10));
    let (tx, rx) = mpsc::channel::<u64>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let read_at = boot_now_ns();
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["type"] == "transition" {
                if let Some(ts) = v["ts_boot_ns"].as_u64() {
                    let _ = tx.send(read_at.saturating_sub(ts));
                }
            }
        }
    });
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let end = Instant::now() + Duration::from_secs(60);
    while !stderr().contains("tracing TCP state transitions") {
        child::check()?;
        if process.try_wait().is_some() || Instant::now() > end {
            bail!(
                "tcpstate trace did not start: {}",
                output::tail(&stderr(), 3)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let connect = || {
        drop(TcpStream::connect_timeout(&addr, Duration::from_secs(1)));
        while let Ok((c, _)) = listener.accept() {
            drop(c);
        }
    };
    // One connection first, not counted: its lines show the program is on.
    connect();
    rx.recv_timeout(Duration::from_secs(5))
        .context("tcpstate trace showed no transition of a test connection within 5 s")?;
    let mut samples_ms = Vec::new();
    for _ in 0..events {
        // Quiet for longer than the 50 ms batching interval first.
        child::sleep(Duration::from_millis(300))?;
        while rx.try_recv().is_ok() {}
        connect();
        let first = rx
            .recv_timeout(Duration::from_secs(5))
            .context("an isolated transition was not shown within 5 s")?;
        samples_ms.push(first as f64 / 1e6);
    }
    process.stop();
    let _ = std::fs::remove_file(&stderr_path);
    Ok(Latency {
        events,
        median_ms: median(samples_ms.clone()).unwrap_or(f64::NAN),
        max_ms: samples_ms.iter().copied().fold(0.0, f64::max),
        samples_ms,
    })
}

//! Scrapes a running `tcpstate serve` once a second, as a Prometheus server
//! would (most scrape less often): serve renders its metrics only for a
//! scrape, so without one its cost would leave out the rendering.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The line serve prints once it listens: "... on http://ADDR/metrics".
const LISTENING: &str = "serving Prometheus metrics on http://";
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The address in serve's stderr, once it said where it listens.
pub fn address(stderr: &str) -> Option<SocketAddr> {
    let line = stderr.lines().find(|l| l.contains(LISTENING))?;
    let rest = &line[line.find(LISTENING)? + LISTENING.len()..];
    rest.split('/').next()?.parse().ok()
}

/// A thread that scrapes every [`INTERVAL`] until dropped.
pub struct Scraper {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Scraper {
    /// Scrapes the address serve prints in `stderr_path` (waits for it).
    pub fn start(stderr_path: PathBuf) -> Scraper {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let (s, a) = (stop.clone(), answered.clone());
        let thread = std::thread::spawn(move || {
            let mut addr = None;
            while !s.load(Ordering::Relaxed) {
                if addr.is_none() {
                    let text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                    addr = address(&text);
                }
                if let Some(addr) = addr {
                    if scrape(addr).is_some() {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let mut slept = Duration::ZERO;
                while slept < INTERVAL && !s.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                    slept += Duration::from_millis(20);
                }
            }
        });
        Scraper {
            stop,
            answered,
            thread: Some(thread),
        }
    }

    /// Stops scraping, waiting for a scrape under way (serve still runs and
    /// answers it); the scrapes answered with metrics.
    pub fn finish(mut self) -> u64 {
        self.stop_thread();
        self.answered.load(Ordering::Relaxed)
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// One GET /metrics; Some(bytes of the body) when it was answered 200.
fn scrape(addr: SocketAddr) -> Option<usize> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(12))).ok()?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = Vec::new();
    conn.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let ok = text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200");
    let body = text.find("\r\n\r\n").map(|i| text.len() - i - 4)?;
    ok.then_some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_from_serves_line() {
        let err = "tcpstate: tracing TCP state transitions (Ctrl-C to stop)\n\
                   tcpstate: serving Prometheus metrics on http://127.0.0.1:40123/metrics\n";
        assert_eq!(address(err), Some("127.0.0.1:40123".parse().unwrap()));
        assert_eq!(
            address("tcpstate: serving Prometheus metrics on http://x/metrics"),
            None
        );
        assert_eq!(address(""), None);
    }
}

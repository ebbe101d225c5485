//! `tcpstate-churn`: a bounded connection-churn generator for the benchmark
//! (`cargo xtask bench`). A server thread per listening address and N
//! client threads connect and close as fast as they can, or at a fixed
//! offered load, over loopback or between two network namespaces; then one
//! JSON line tells how many connections/s were achieved.
//!
//! It lives in the test crate, not in `tcpstate`: it is a load generator,
//! not something to ship to production hosts, and the benchmark and its
//! smoke test run it as a separate process, as they do tcpstate.
mod addrs;
mod args;
mod client;
mod netns;
mod server;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Instant,
};

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let options = match args::parse(&argv) {
        Ok(options) => options,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("tcpstate-churn: {e}");
            }
            eprintln!("{}", args::USAGE);
            std::process::exit(2);
        }
    };
    match run(&options) {
        Ok(ok) => std::process::exit(if ok { 0 } else { 1 }),
        Err(e) => {
            eprintln!("tcpstate-churn: error: {e}");
            std::process::exit(1);
        }
    }
}

fn cpu_seconds() -> (f64, f64) {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(usage.ru_utime), secs(usage.ru_stime))
}

/// Returns whether any connection succeeded.
fn run(o: &args::Options) -> std::io::Result<bool> {
    let mode = if o.netns.is_some() {
        addrs::Mode::Netns
    } else {
        addrs::Mode::Loopback
    };
    let (server_ns, client_ns) = match &o.netns {
        Some((s, c)) => (Some(s.clone()), Some(c.clone())),
        None => (None, None),
    };
    let listeners: Vec<_> = (0..o.listeners).map(|i| addrs::listener(mode, i)).collect();
    let sources: Vec<_> = (0..o.sources).map(|j| addrs::source(mode, j)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (port, servers) = server::start(&listeners, server_ns.as_deref(), o.close, stop.clone())?;

    let start = Instant::now();
    let plan = Arc::new(client::Plan {
        closer: o.close,
        listeners,
        port,
        sources,
        threads: o.clients,
        rate_per_thread: o.rate / o.clients as f64,
        deadline: start + o.duration,
        started: AtomicU64::new(0),
        count: o.count,
    });
    let clients: Vec<_> = (0..o.clients)
        .map(|t| {
            let plan = plan.clone();
            let ns = client_ns.clone();
            std::thread::spawn(move || {
                if let Some(ns) = ns {
                    netns::enter(&ns)?;
                }
                Ok::<_, std::io::Error>(client::run(&plan, t))
            })
        })
        .collect();
    let mut total = client::Outcome::default();
    for handle in clients {
        let out = handle
            .join()
            .map_err(|_| std::io::Error::other("client thread panicked"))??;
        total.connections += out.connections;
        total.errors += out.errors;
        total.first_error = total.first_error.or(out.first_error);
        total.finished = total.finished.max(out.finished);
    }
    let seconds = total
        .finished
        .map_or(0.0, |end| (end - start).as_secs_f64());
    stop.store(true, Ordering::Relaxed);
    for handle in servers {
        let _ = handle.join();
    }
    let (user, sys) = cpu_seconds();
    let line = serde_json::json!({
        "tool": "tcpstate-churn",
        "mode": mode.name(),
        "close": o.close.name(),
        "clients": o.clients,
        "listeners": o.listeners,
        "sources": o.sources,
        "offered_per_sec": (o.rate > 0.0).then_some(o.rate),
        "connections": total.connections,
        "errors": total.errors,
        "first_error": total.first_error.map(|e| std::io::Error::from_raw_os_error(e).to_string()),
        "seconds": seconds,
        "connections_per_sec": total.connections as f64 / seconds.max(1e-9),
        "cpu_user_s": user,
        "cpu_sys_s": sys,
    });
    println!("{line}");
    Ok(total.connections > 0)
}

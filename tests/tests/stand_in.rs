//! The raw program's stand-in leaves no slot behind (issue 15).
//!
//! Under saturating churn the kernel skips the stand-in for hits that come
//! while it runs (a softirq interrupting it), and the raw program's slot
//! for such a hit is never used up. Left held, a slot makes a later hit of
//! a socket at the same address look taken when the raw program was
//! skipped for it, and that transition is lost. Before the fix, 7 of the 8
//! slots of each CPU were held after a few seconds of churn.
use std::{
    net::{TcpListener, TcpStream},
    process::Command,
};
use tcpstate::source::live::{HookStatus, LiveOptions, LiveSource};
use tcpstate_tests::{millis, require_root};

const CHURN: &str = env!("CARGO_BIN_EXE_tcpstate-churn");

#[test]
fn saturating_churn_leaves_no_stand_in_slot_held() {
    require_root();
    let runtime = tcpstate_tests::runtime();
    let _context = runtime.enter();
    let source = LiveSource::open(&LiveOptions::default()).expect("load");
    assert_eq!(
        *source.raw_tracepoint(),
        HookStatus::Attached,
        "the raw program attaches on every kernel of the matrix"
    );
    // Bounded: at most 30,000 loopback connections in 3 s. Nobody drains
    // the ring meanwhile; what matters is that the programs run nested.
    let churn = Command::new(CHURN)
        .args(["--duration", "3", "--count", "30000"])
        .args(["--clients", "2", "--listeners", "2", "--sources", "16"])
        .output()
        .expect("run the churn generator");
    assert!(
        churn.status.success(),
        "churn failed: {}",
        String::from_utf8_lossy(&churn.stderr)
    );
    // A stand-in frees every slot older than its own hit's but the newest,
    // and that one once it has seen it held for a second: two rounds of
    // hits on every CPU, more than that apart, end any slot left by the
    // churn.
    for _ in 0..2 {
        std::thread::sleep(millis(1_100));
        for cpu in allowed_cpus() {
            std::thread::spawn(move || {
                pin_to(cpu);
                one_connection();
            })
            .join()
            .expect("connection thread");
        }
    }
    let held = source
        .stand_in_slots_held()
        .expect("read the RAW_TAKEN map");
    assert_eq!(held, 0, "slots of taken hits held at rest, over all CPUs");
}

/// One loopback connection, accepted and closed, on the calling thread.
fn one_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    drop(client);
    drop(server);
}

fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity writes
    // at most its size into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    assert_eq!(rc, 0, "sched_getaffinity");
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the set's size in bits.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

fn pin_to(cpu: usize) {
    // SAFETY: as in `allowed_cpus`; CPU_SET is given a CPU below
    // CPU_SETSIZE and the set it zeroed.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    assert_eq!(rc, 0, "sched_setaffinity to CPU {cpu}");
}

//! 1,000 loopback connections: every transition arrives, none is lost.
use std::collections::BTreeMap;
use tcpstate::source::live::HookStatus;
use tcpstate_tests::{
    require_root,
    tracer::Tracer,
    workload::{self, LISTENER_TRANSITIONS, TRANSITIONS_PER_CONNECTION},
};

#[test]
fn thousand_connections_all_delivered_none_lost() {
    require_root();
    const CONNECTIONS: usize = 1_000;
    let expected_total = CONNECTIONS * TRANSITIONS_PER_CONNECTION + LISTENER_TRANSITIONS;
    let (socket, addr) = workload::bound_listener();
    // Default ring size: this is the product's out-of-the-box behaviour.
    let tracer = Tracer::start(tcpstate::source::live::LiveOptions {
        any_port: Some(addr.port()),
        ..Default::default()
    });
    // The raw program is what keeps a busy host from losing transitions
    // (see source/live/misses.rs): it must attach on every kernel of the
    // matrix.
    assert_eq!(
        *tracer.program(tcpstate_common::PROGRAM_SET_STATE_RAW),
        HookStatus::Attached,
        "raw tracepoint program: {:?}",
        tracer.programs
    );
    workload::client_closes_first(socket, CONNECTIONS);
    let complete = tracer.wait_until(tcpstate_tests::secs(20), |seen| {
        seen.len() >= expected_total
    });
    std::thread::sleep(tcpstate_tests::millis(300));
    let collected = tracer.stop();
    assert!(
        complete,
        "only {} of {expected_total} arrived ({} lost in the kernel; {:?})",
        collected.transitions.len(),
        collected.lost,
        collected.stats
    );
    assert_eq!(collected.lost, 0, "lost events");
    assert_eq!(collected.stats.malformed, 0);

    let by_pair = workload::by_pair(&collected.transitions);
    let want = workload::client_closes_first_pairs(CONNECTIONS);
    assert_eq!(by_pair, want, "{}", duplicates(&collected.transitions));
    assert_eq!(collected.transitions.len(), expected_total);
    // Batching: far fewer wake-ups than records (figures live in the bench).
    eprintln!(
        "{} transitions, {} wake-ups",
        collected.stats.delivered, collected.stats.wakeups
    );
}

/// Transitions that arrived more than once (same socket, states and time),
/// to explain a count that is too high.
fn duplicates(transitions: &[tcpstate::wire::Transition]) -> String {
    let mut seen = BTreeMap::new();
    for t in transitions {
        *seen
            .entry((t.skaddr, t.old, t.new, t.ts_boot_ns))
            .or_insert(0usize) += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(10).collect();
    format!("duplicates: {dups:?}")
}

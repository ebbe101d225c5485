//! Two tracers at once (two `tcpstate` processes, or `serve` beside a
//! `record`): each records every transition exactly once. With the classic
//! tracepoint as the raw program's stand-in, the second tracer's classic
//! program ran from the perf probe the first one registered, ahead of its
//! own raw program, and could record a transition its raw program recorded
//! too; two raw programs per tracer run in the order they were attached.
use tcpstate::source::live::HookStatus;
use tcpstate_tests::{
    require_root,
    tracer::Tracer,
    workload::{self, LISTENER_TRANSITIONS, TRANSITIONS_PER_CONNECTION},
};

const CONNECTIONS: usize = 1_000;

#[test]
fn two_tracers_at_once_each_record_every_transition_once() {
    require_root();
    let expected_total = CONNECTIONS * TRANSITIONS_PER_CONNECTION + LISTENER_TRANSITIONS;
    let (socket, addr) = workload::bound_listener();
    let start = || {
        Tracer::start(tcpstate::source::live::LiveOptions {
            any_port: Some(addr.port()),
            ..Default::default()
        })
    };
    let first = start();
    let second = start();
    for tracer in [&first, &second] {
        for program in [
            tcpstate_common::PROGRAM_SET_STATE_RAW,
            tcpstate_common::PROGRAM_SET_STATE_RAW2,
        ] {
            assert_eq!(
                *tracer.program(program),
                HookStatus::Attached,
                "{program}: {:?}",
                tracer.programs
            );
        }
    }
    workload::client_closes_first(socket, CONNECTIONS);
    for tracer in [&first, &second] {
        let complete = tracer.wait_until(tcpstate_tests::secs(20), |seen| {
            seen.len() >= expected_total
        });
        assert!(complete, "only {} of {expected_total}", tracer.count());
    }
    std::thread::sleep(tcpstate_tests::millis(300));
    let want = workload::client_closes_first_pairs(CONNECTIONS);
    for (which, tracer) in [("first", first), ("second", second)] {
        let collected = tracer.stop();
        assert_eq!(collected.lost, 0, "{which} tracer: lost events");
        assert_eq!(
            workload::by_pair(&collected.transitions),
            want,
            "{which} tracer; transitions seen more than once: {:?}",
            repeated(&collected.transitions)
        );
        assert_eq!(collected.transitions.len(), expected_total, "{which}");
    }
}

/// Transitions a socket made twice in a row (the same states, one after
/// the other in time), each copy as (time, CPU): two copies from the two
/// programs on the tracepoint carry different times, one record read
/// twice the same time.
fn repeated(transitions: &[tcpstate::wire::Transition]) -> Vec<String> {
    let mut by_socket = std::collections::BTreeMap::<u64, Vec<_>>::new();
    for t in transitions {
        by_socket.entry(t.skaddr).or_default().push(t);
    }
    let mut twice = Vec::new();
    for (sk, mut seen) in by_socket {
        seen.sort_by_key(|t| t.ts_boot_ns);
        for pair in seen.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if (a.old, a.new) == (b.old, b.new) {
                twice.push(format!(
                    "{sk:#x} {} -> {} {:?} -> {:?}: ({}, CPU {}) and ({}, CPU {})",
                    a.local, a.remote, a.old, a.new, a.ts_boot_ns, a.cpu, b.ts_boot_ns, b.cpu
                ));
            }
        }
    }
    twice
}

//! The stand-in for the raw program's skipped hits: a second raw
//! tracepoint program on `inet_sock_set_state` (issue 15).
//!
//! The kernel skips a raw tracepoint program for a hit that arrives while
//! that same program is already running on the CPU (a softirq interrupting
//! it; Linux 6.2 and later, counted as its recursion_misses). This program
//! has a guard of its own, so it still runs for such a nested hit. Raw
//! tracepoint probes run in the order they were attached and this one is
//! attached after the first: for every hit it finds the ones the first
//! program took in `RAW_TAKEN` (and frees their slot), and records the
//! others itself. It replaces the classic tracepoint as the stand-in: the
//! kernel skips a classic tracepoint program whenever any other tracing
//! program runs on the CPU (`bpf_prog_active`), and its place among the
//! tracepoint's probes depends on other perf users of the tracepoint.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use super::{count_rescued, raw_never_skipped, raw_running_here, report, taken, try_set_state_raw};

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn tcpstate_set_state_raw2(ctx: RawTracePointContext) -> i32 {
    let lookup = taken::lookup(ctx.arg(0), ctx.arg::<u64>(2) as u32, !raw_running_here());
    // Still looked up where the raw program is never skipped: the lookup
    // and `settle` keep the slots free.
    if !lookup.taken() && !raw_never_skipped() {
        // The first program was skipped for this hit: this one answers for
        // it, whatever becomes of it (filtered out, written, or counted
        // lost when the ring buffer is full, counted once, there).
        count_rescued();
        if let Err(miss) = try_set_state_raw(&ctx, &mut 0) {
            report(&ctx, miss);
        }
    }
    taken::settle(lookup);
    0
}

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

use super::{
    forget_nested, raw_running_here, raw_runs, raw_took, report, try_set_state_raw, RESCUED,
};

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn tcpstate_set_state_raw2(ctx: RawTracePointContext) -> i32 {
    let runs_before = raw_runs();
    stand_in(&ctx);
    forget_nested(runs_before);
    0
}

#[inline(always)]
fn stand_in(ctx: &RawTracePointContext) {
    if !raw_running_here() && raw_took(ctx.arg(0), ctx.arg::<u64>(2) as u32) {
        return;
    }
    // The first program was skipped for this hit: this one answers for
    // it, whatever becomes of it (filtered out, written, or counted lost
    // when the ring buffer is full, counted once, there).
    if let Some(rescued) = RESCUED.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU map, valid for the program
        // run; the kernel does not run this program nested on one CPU
        // (where it would, before 6.2, the first program is never skipped
        // and this line is not reached).
        unsafe { *rescued += 1 };
    }
    if let Err(miss) = try_set_state_raw(ctx) {
        report(ctx, miss);
    }
}

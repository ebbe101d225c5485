//! The hits the raw program took, for its stand-in to look up (`RAW_TAKEN`).
//!
//! The kernel skips the raw program for a hit that arrives while it is
//! already running on that CPU (a softirq interrupting it, anywhere from
//! the kernel's bookkeeping before its first instruction to that after its
//! last); the stand-in (the second raw program, or the classic one where
//! that cannot attach) then records the hit itself. When the kernel runs the
//! raw program first for each hit (it was attached first), the stand-in
//! finds every hit the raw one took here, and records any other. Several
//! slots, because hits nest: the interrupted hit's entry must survive the
//! nested ones. A hit goes into a free slot, or else over the oldest.
//!
//! A slot nobody will use up is *stale*: the kernel skipped the stand-in
//! for its hit because the stand-in was running on the CPU (a softirq
//! interrupting it). Left behind, a stale slot makes a later hit look taken
//! when the raw program was skipped for it, and that hit is lost: a socket
//! freed and allocated again at the same address (the slab reuses them at
//! once under churn) reaching the same state. Before this was handled
//! (2026-12-07), a stand-in found 3.2 slots held on average, where one is
//! its own hit's; saturating churn lost 1 to 3 transitions in 5 runs.
//! [`settle`] frees stale slots at the end of each stand-in run:
//! - those written after the stand-in's own hit's (or, when the raw program
//!   did not take its hit, after the stand-in began): hits that came while
//!   it ran;
//! - those older than its own hit's that stay held for [`STALE_AFTER_NS`]:
//!   a hit interrupted between its two programs (a legitimately held slot)
//!   gets its stand-in within one softirq run, far sooner. These come from
//!   hits nested in the kernel's bookkeeping after a stand-in's last
//!   instruction, where nothing of ours runs to see them.
//!
//! When the classic program runs first (a perf user of the tracepoint
//! registered the kernel's perf probe before us), a hit's slot is never
//! found here and the raw program's `RAW_ACTIVE` flag decides, which covers
//! its own code only: a known gap of that mode, used only where the second
//! raw program cannot attach.
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::map, maps::PerCpuArray};

use tcpstate_common::{RawTaken, RAW_TAKEN_SLOTS as SLOTS};

/// A slot held this long beside a stand-in's own hit is stale (see the
/// module comment). A softirq run lasts a few milliseconds at most, but a
/// virtual CPU can be descheduled by its host for longer (steal time), and
/// freeing a slot still to be used records its hit twice; a stale slot
/// kept a second longer is a key a skipped hit must match within that
/// second to be lost.
const STALE_AFTER_NS: u64 = 1_000_000_000;

#[map(name = "RAW_TAKEN")]
static RAW_TAKEN: PerCpuArray<RawTaken> = PerCpuArray::with_max_entries(1, 0);

/// What a stand-in learned at its start, for [`settle`] at its end.
#[derive(Clone, Copy)]
pub struct Lookup {
    /// This CPU's count of raw program runs when the stand-in began.
    runs_before: u32,
    /// Whether the raw program took the stand-in's own hit.
    taken: bool,
    /// `written` of that hit's slot (when `taken`). Plain fields, not an
    /// `Option`: the compiler leaves the payload of a `None` unset, and
    /// the verifier refuses a program that copies an unset register.
    own: u32,
    /// Whether other slots were held (or not looked at): otherwise, and
    /// when no raw program ran since, [`settle`] has nothing to do.
    others: bool,
}

impl Lookup {
    /// Whether the raw program took this hit.
    #[inline(always)]
    pub fn taken(&self) -> bool {
        self.taken
    }
}

/// This CPU's entry. `None` never happens (a one-entry array always has its
/// entry); were it to, every hit would look not taken and be recorded.
#[inline(always)]
fn entry() -> Option<&'static mut RawTaken> {
    // SAFETY: this CPU's entry of a per-CPU map, valid and aligned for the
    // program run. A program interrupting this one on the CPU may write a
    // slot meanwhile: the worst outcome is a hit recorded twice or rescued
    // once more, never undefined memory.
    RAW_TAKEN.get_ptr_mut(0).map(|taken| unsafe { &mut *taken })
}

/// A stand-in's start: whether the raw program took this hit (then its
/// slot is used up). `look` false: the raw program was skipped for it,
/// known without looking.
#[inline(always)]
pub fn lookup(sk: u64, newstate: u32, look: bool) -> Lookup {
    let Some(taken) = entry() else {
        return Lookup {
            runs_before: 0,
            taken: false,
            own: 0,
            others: false,
        };
    };
    let runs_before = taken.runs;
    if !look {
        return Lookup {
            runs_before,
            taken: false,
            own: 0,
            others: true,
        };
    }
    // The common case, checked first: the slot written last is this hit's,
    // and no raw program ran since.
    let last = taken.last as usize % SLOTS;
    if taken.sk[last] == sk && taken.state[last] == newstate && taken.written[last] == runs_before {
        taken.sk[last] = 0;
        let others = taken.held > 1;
        taken.held = taken.held.saturating_sub(1);
        return Lookup {
            runs_before,
            taken: true,
            own: runs_before,
            others,
        };
    }
    // The newest matching slot: an older one can only be stale.
    let mut own = SLOTS;
    let mut own_age = u32::MAX;
    let mut held = 0;
    for i in 0..SLOTS {
        if taken.sk[i] != 0 {
            held += 1;
        }
        if taken.sk[i] == sk && taken.state[i] == newstate {
            let age = runs_before.wrapping_sub(taken.written[i]);
            if age < own_age {
                own = i;
                own_age = age;
            }
        }
    }
    let found = match taken.sk.get_mut(own) {
        Some(slot) => {
            *slot = 0;
            true
        }
        None => false,
    };
    taken.held = (held - usize::from(found)) as u32;
    Lookup {
        runs_before,
        taken: found,
        own: runs_before.wrapping_sub(own_age),
        others: held > usize::from(found),
    }
}

/// A stand-in's end: frees the stale slots (see the module comment).
#[inline(never)]
pub fn settle(lookup: Lookup) {
    let Some(taken) = entry() else {
        return;
    };
    // The common case: this hit's slot was the only one held, and no raw
    // program ran since the lookup.
    if !lookup.others && taken.runs == lookup.runs_before {
        return;
    }
    // Slots written after this are stale: written by one of the last
    // `fresh` runs (`written` is `runs` after the run's own increment).
    let after = if lookup.taken {
        lookup.own
    } else {
        lookup.runs_before
    };
    let fresh = taken.runs.wrapping_sub(after);
    let mut now = 0;
    let mut held = 0;
    for i in 0..SLOTS {
        if taken.sk[i] == 0 {
            continue;
        }
        if taken.runs.wrapping_sub(taken.written[i]) < fresh {
            taken.sk[i] = 0;
            continue;
        }
        held += 1;
        if now == 0 {
            // SAFETY: a helper without arguments, available to every
            // program type.
            now = unsafe { bpf_ktime_get_ns() };
        }
        if taken.seen_ns[i] == 0 {
            taken.seen_ns[i] = now;
        } else if now.wrapping_sub(taken.seen_ns[i]) > STALE_AFTER_NS {
            taken.sk[i] = 0;
            held -= 1;
        }
    }
    taken.held = held;
}

/// The raw program's end: records that it took this hit (whatever became
/// of it, even filtered out). Out of line: inlined, it makes the compiler
/// spill past the 512-byte stack of the program it ends.
#[inline(never)]
pub fn mark(sk: u64, newstate: u32) {
    if let Some(taken) = entry() {
        taken.runs = taken.runs.wrapping_add(1);
        let slot = free_or_oldest_slot(taken);
        if taken.sk[slot] == 0 {
            taken.held += 1;
        }
        taken.last = slot as u32;
        taken.sk[slot] = sk;
        taken.state[slot] = newstate;
        taken.written[slot] = taken.runs;
        taken.seen_ns[slot] = 0;
    }
}

#[inline(always)]
fn free_or_oldest_slot(taken: &RawTaken) -> usize {
    let mut oldest = 0;
    let mut oldest_age = 0;
    for i in 0..SLOTS {
        if taken.sk[i] == 0 {
            return i;
        }
        let age = taken.runs.wrapping_sub(taken.written[i]);
        if age > oldest_age {
            oldest = i;
            oldest_age = age;
        }
    }
    oldest
}

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
//! nested ones. A hit goes into a free slot, or else over the newest (see
//! `free_or_newest_slot`).
//!
//! A slot is keyed by the socket's address, the new state and a
//! fingerprint of the socket's first bytes (`sock_common`'s address pair,
//! hash and port pair: 16 bytes the raw program reads anyway, and the
//! stand-in reads only when the slot written last is not its hit's).
//!
//! A slot nobody will use up is *stale*: the kernel skipped the stand-in
//! for its hit because the stand-in was running on the CPU (a softirq
//! interrupting it; 70-190 times in 5 s of saturating churn on this 2-CPU
//! host, 2026-12-07). Keyed by socket and state only, a stale slot made a
//! later hit look taken when the raw program was skipped for it, and that
//! hit was lost: a socket freed and allocated again at the same address
//! (the slab reuses them at once under churn) reaching the same state, on
//! the same CPU, while the slot was held. The fingerprint tells the two
//! connections apart where their addresses, ports or hash are set: on
//! every transition the kernel can skip the raw program for (those in a
//! softirq that interrupted it), except a listener's new child going into
//! SYN_RECV, a copy of the listener at that moment, so two children of
//! one listener at one address still share a key (known gap: a stale slot
//! of one child, and the raw program skipped for the next child at the
//! same address on that CPU within the slot's life). Stale slots also come
//! from the raw program's first runs, before its stand-in is attached.
//! [`settle`] frees them at the end of each stand-in run:
//! - those written after the stand-in's own hit's (or, when the raw program
//!   did not take its hit, after the stand-in began): hits that came while
//!   it ran;
//! - of the older ones, all but the newest. TCP changes state in task and
//!   softirq context only, and softirqs do not nest, so at most one hit is
//!   between its two programs below the stand-in's own: the one its
//!   softirq interrupted, whose slot was written last before it;
//! - that newest older one too once it stays held for [`STALE_AFTER_NS`]
//!   (it can only be stale by then).
//!
//! Measured on 2026-12-07 with `tcpstate-churn` at 3,000 connections/s
//! beside a 200-connection test workload: one interrupt brought 8 or more
//! hits into a stand-in's entry bookkeeping, each leaving its slot, and the
//! next one evicted the oldest slot, the interrupted hit's: its stand-in
//! recorded it again (a transition twice, 0.1-0.3 ms apart, about once in
//! 200 runs), and the nested hits' slots, older than the stand-in's start,
//! stayed held for a second. Also, the ~2,700 raw runs before the stand-in
//! was attached left 7 of 8 slots held for the first second.
//!
//! When the classic program runs first (a perf user of the tracepoint
//! registered the kernel's perf probe before us), a hit's slot is never
//! found here and the raw program's `RAW_ACTIVE` flag decides, which covers
//! its own code only: a known gap of that mode, used only where the second
//! raw program cannot attach.
use core::sync::atomic::{compiler_fence, Ordering};

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::map, maps::PerCpuArray};

use tcpstate_common::{
    RawTaken, RAW_TAKEN_FINGERPRINT_BYTES as FINGERPRINT_BYTES, RAW_TAKEN_SLOTS as SLOTS,
    SOCK_HEAD_BYTES,
};

// The raw program folds the fingerprint from the socket bytes it reads anyway.
const _: () = assert!(FINGERPRINT_BYTES == 16 && FINGERPRINT_BYTES <= SOCK_HEAD_BYTES);

/// The one older slot a stand-in keeps is stale once held this long (see
/// the module comment). A softirq run lasts a few milliseconds at most, but
/// a virtual CPU can be descheduled by its host for longer (steal time),
/// and freeing a slot still to be used records its hit twice; a stale slot
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
    #[inline(always)]
    fn not_taken(runs_before: u32, others: bool) -> Lookup {
        Lookup {
            runs_before,
            taken: false,
            own: 0,
            others,
        }
    }

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
        return Lookup::not_taken(0, false);
    };
    let runs_before = taken.runs;
    if !look {
        return Lookup::not_taken(runs_before, true);
    }
    // The common case, checked first: the slot written last is this hit's,
    // and no raw program ran since. Without the fingerprint (a probe read,
    // +58 ns per transition measured with it here, 2026-12-07): a stale
    // slot passes this check only if it was written last, no raw run on
    // this CPU came after it, and yet the socket at its address was freed
    // and allocated again for the hit now (a gap left open).
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
    let fingerprint = fingerprint_at(sk);
    let matches = |i: usize| {
        taken.sk[i] == sk && taken.state[i] == newstate && taken.fingerprint[i] == fingerprint
    };
    let mut own = SLOTS;
    let mut own_age = u32::MAX;
    let mut held = 0;
    for i in 0..SLOTS {
        if taken.sk[i] != 0 {
            held += 1;
        }
        if matches(i) {
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
    // Of the older slots, only the newest can still be in use.
    let mut kept = SLOTS;
    let mut kept_age = u32::MAX;
    for i in 0..SLOTS {
        if taken.sk[i] == 0 {
            continue;
        }
        let age = taken.runs.wrapping_sub(taken.written[i]);
        if age < fresh {
            taken.sk[i] = 0;
            continue;
        }
        if age < kept_age {
            if let Some(older) = taken.sk.get_mut(kept) {
                *older = 0;
            }
            kept = i;
            kept_age = age;
        } else {
            taken.sk[i] = 0;
        }
    }
    taken.held = u32::from(kept < SLOTS);
    let (Some(seen), Some(sk)) = (taken.seen_ns.get_mut(kept), taken.sk.get_mut(kept)) else {
        return;
    };
    // SAFETY: a helper without arguments, available to every program type.
    let now = unsafe { bpf_ktime_get_ns() };
    if *seen == 0 {
        *seen = now;
    } else if now.wrapping_sub(*seen) > STALE_AFTER_NS {
        *sk = 0;
        taken.held = 0;
    }
}

/// The raw program's end: records that it took this hit (whatever became
/// of it, even filtered out). Out of line: inlined, it makes the compiler
/// spill past the 512-byte stack of the program it ends.
#[inline(never)]
pub fn mark(sk: u64, newstate: u32, fingerprint: u64) {
    if let Some(taken) = entry() {
        let runs = taken.runs.wrapping_add(1);
        taken.runs = runs;
        let slot = free_or_newest_slot(taken);
        let was_free = taken.sk[slot] == 0;
        // The socket is written last, and a slot taken over is emptied
        // first: a stand-in interrupting this (a softirq's, the kernel
        // having skipped the raw program for its hit) sees the slot either
        // free or whole. Half written (its socket with the old `written` or
        // `seen_ns`), its `settle` could free it as stale, and this hit's
        // stand-in would record it again.
        if !was_free {
            publish(&mut taken.sk[slot], 0);
        }
        taken.state[slot] = newstate;
        taken.fingerprint[slot] = fingerprint;
        taken.written[slot] = runs;
        taken.seen_ns[slot] = 0;
        publish(&mut taken.sk[slot], sk);
        taken.last = slot as u32;
        if was_free {
            taken.held += 1;
        }
    }
}

/// Writes a slot's socket after every write before it, as the compiler
/// emits them (a program interrupting this one on the CPU sees them in
/// program order; no other CPU uses this CPU's entry).
#[inline(always)]
fn publish(slot: &mut u64, sk: u64) {
    compiler_fence(Ordering::SeqCst);
    // SAFETY: a valid, aligned u64 of this CPU's entry (a reference).
    unsafe { core::ptr::write_volatile(slot, sk) };
    compiler_fence(Ordering::SeqCst);
}

/// A free slot, or else the one written last. All held means hits nested in
/// a stand-in's entry left theirs (the kernel skipped the stand-in for
/// them, one after the other in one interrupt): the newest is one of
/// them, while the oldest may be the interrupted hit's, still to be used.
#[inline(always)]
fn free_or_newest_slot(taken: &RawTaken) -> usize {
    let mut newest = 0;
    let mut newest_age = u32::MAX;
    for i in 0..SLOTS {
        if taken.sk[i] == 0 {
            return i;
        }
        let age = taken.runs.wrapping_sub(taken.written[i]);
        if age < newest_age {
            newest = i;
            newest_age = age;
        }
    }
    newest
}

/// A socket's fingerprint from its first bytes, as 32-bit words (the raw
/// program has them already): addresses, hash and ports, which differ
/// between two connections one after the other on one socket address.
#[inline(always)]
pub fn fingerprint(words: &[u32; FINGERPRINT_BYTES / 4]) -> u64 {
    (u64::from(words[0]) | u64::from(words[1]) << 32)
        ^ (u64::from(words[2]) | u64::from(words[3]) << 32).rotate_left(16)
}

/// A socket's fingerprint, read from it; 0 when it cannot be read (then the
/// raw program, whose read failed too, marked 0).
#[inline(always)]
pub fn fingerprint_at(sk: u64) -> u64 {
    let mut words = core::mem::MaybeUninit::<[u32; FINGERPRINT_BYTES / 4]>::uninit();
    super::read_words_in(&mut words, sk).map_or(0, |words| fingerprint(words))
}

//! Kernel side of tcpstate: one record per TCP state transition.
//!
//! Reads the fields of `sock:inet_sock_set_state`, keeps TCP only, applies the
//! optional load-time filters, reserves a record in the ring buffer, fills it
//! and submits it. When a record cannot be reserved, a per-CPU counter says so.
//!
//! Each program's body is a `try_*` function returning `Result`: a hit that
//! yields no record for another reason than a filter (a kernel read failed)
//! is an `Err`, which the entry point logs (aya-log; shown with `-v`).
#![no_std]
#![no_main]
// The atomic add of `bump`: core has no `fetch_add` for a target without
// compare-and-swap (bpfel-unknown-none), and the intrinsic compiles to the
// BPF atomic add every kernel has. The build already runs with
// RUSTC_BOOTSTRAP=1 (see ../shared/TOOLCHAIN.md).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod ports;
mod taken;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_get_smp_processor_id, bpf_ktime_get_boot_ns,
        bpf_probe_read_kernel,
    },
    macros::{fexit, map, raw_tracepoint, tracepoint},
    maps::{Array, PerCpuArray, RingBuf},
    programs::{FExitContext, RawTracePointContext, TracePointContext},
    EbpfContext, Global,
};
use aya_log_ebpf::warn;
use tcpstate_common::{
    kind, reset_offsets, syscall_exit_offsets, tp_offsets as off, Event, StructOffsets,
    DEFAULT_RING_BYTES, DEFAULT_WAKEUP_RECORDS, INET_SADDR_SPAN, IPPROTO_TCP, LOST_OWNERS,
    LOST_RESETS, LOST_TRANSITIONS, LOST_TRANSITIONS_RING_BUSY, RING_BUSY_ROOM_RECORDS,
    RING_RECORD_BYTES, SOCK_HEAD_BYTES,
};

mod raw2;

#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// 1 once the raw program is attached: the classic one then only stands in
/// for the hits the raw one misses.
#[map(name = "RAW_MODE")]
static RAW_MODE: Array<u32> = Array::with_max_entries(1, 0);

/// Per-CPU: 1 while the raw program's body runs on that CPU.
#[map(name = "RAW_ACTIVE")]
static RAW_ACTIVE: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// 1 once the classic program found a hit in `RAW_TAKEN`: the kernel runs
/// the raw program first (the order is fixed once both are attached).
///
/// Mutable globals stay `static mut`: aya-ebpf 0.2.1's `Global<T>` is
/// read-only, and core's atomics do not compile for the BPF target here
/// (bpf-linker's LLVM cannot select an atomic load for `--cpu generic`).
/// Each access is a volatile load or store of a whole word.
#[no_mangle]
static mut RAW_RUNS_FIRST: u32 = 0;

/// 1 once the raw program found itself running inside its own run on a
/// CPU: the kernel does not skip nested hits (before Linux 6.2). Then the
/// raw program takes every hit, the `RAW_ACTIVE` flag does not mean a
/// stand-in must answer, and no stand-in records anything (see
/// [`raw_never_skipped`]).
#[no_mangle]
static mut RAW_NESTS: u32 = 0;

/// Per-CPU: hits a stand-in (the second raw program, or the classic one)
/// answered for because the kernel skipped the raw one for them (recorded,
/// filtered out, or counted lost). Bumped atomically (`add_one`): before
/// Linux 6.2 the second raw program nests inside itself.
#[map(name = "RESCUED")]
static RESCUED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "LOST")]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(8, 0);

// Load-time settings; userspace overrides them before loading
// (`EbpfLoader::override_global`). Zero means "no filter".
#[no_mangle]
static FILTER_FAMILY: Global<u16> = Global::new(0);
#[no_mangle]
static FILTER_ANY_PORT: Global<u16> = Global::new(0);
/// Wake userspace once this many bytes are waiting (batching under load):
/// by default [`DEFAULT_WAKEUP_RECORDS`] records.
#[no_mangle]
static WAKEUP_BYTES: Global<u64> = Global::new(DEFAULT_WAKEUP_RECORDS * RING_RECORD_BYTES);
/// ...or when nobody was woken for this long (an isolated event is prompt).
#[no_mangle]
static WAKEUP_INTERVAL_NS: Global<u64> = Global::new(50_000_000);

/// 1: every transition record carries the task on the CPU; 0: only those
/// that can name the socket's owner do (see
/// [`tcpstate_common::transition_names_owner`]).
#[no_mangle]
static TASK_ON_EVERY_TRANSITION: Global<u32> = Global::new(1);

/// Kernel struct offsets from BTF; all zero when userspace could not read them.
#[no_mangle]
static OFFSETS: Global<StructOffsets> = Global::new(StructOffsets::zeroed());

/// Time of the last forced wake-up, shared by all CPUs. Races only make a
/// wake-up happen slightly earlier or later, never lose a record.
#[no_mangle]
static mut LAST_WAKEUP_NS: u64 = 0;

/// Why a hit gave no record, other than a filter or a full ring buffer
/// (those are not failures, or are counted in `LOST`).
#[derive(Clone, Copy)]
enum Miss {
    /// The socket's fields could not be read from kernel memory.
    SocketUnreadable,
    /// accept() returned this fd, but its socket could not be read.
    AcceptedSocketUnreadable(i64),
    /// A RST's segment headers could not be read.
    ResetSegmentUnreadable,
}

/// Out of line: the log call's stack stays out of the programs' own frame.
#[inline(never)]
fn report<C: EbpfContext>(ctx: &C, miss: Miss) {
    match miss {
        Miss::SocketUnreadable => {
            warn!(ctx, "a transition's socket could not be read: not recorded")
        }
        Miss::AcceptedSocketUnreadable(fd) => warn!(
            ctx,
            "accept() returned fd {} but its socket could not be read", fd
        ),
        Miss::ResetSegmentUnreadable => warn!(ctx, "a RST's segment headers could not be read"),
    }
}

#[tracepoint]
pub fn tcpstate_set_state(ctx: TracePointContext) -> u32 {
    let skaddr: u64 = field(&ctx, off::SKADDR);
    let newstate: i32 = field(&ctx, off::NEWSTATE);
    // Only as the raw program's stand-in does this program use its slots;
    // alone (no BTF), it is the one program on the tracepoint.
    if !RAW_MODE.get(0).is_some_and(|mode| *mode == 1) {
        set_state(&ctx, skaddr, newstate);
        return 0;
    }
    let lookup = taken::lookup(skaddr, newstate as u32, !raw_running_here());
    if stands_in_for_raw(&lookup) {
        set_state(&ctx, skaddr, newstate);
    }
    taken::settle(lookup);
    0
}

#[inline(always)]
fn set_state(ctx: &TracePointContext, skaddr: u64, newstate: i32) {
    if let Err(miss) = try_set_state(ctx, skaddr, newstate) {
        report(ctx, miss);
    }
}

/// The struct offsets, read in place: a copy would take 76 bytes of the
/// 512-byte stack. Reading the pointer back through a volatile load keeps
/// the compiler from folding the fields to the zeros it was compiled with.
#[inline(always)]
fn offsets() -> &'static StructOffsets {
    // `Global<T>` is `repr(transparent)` over `T`: the same bytes.
    let global: *const StructOffsets = (&raw const OFFSETS).cast();
    // SAFETY: reads a local; the pointer it yields is `OFFSETS` itself, a
    // static that lives for the whole program and is never written (it is
    // set by userspace before load, in read-only data), and always holds an
    // initialized `StructOffsets` (`Global::new`). `Global::load` would copy
    // it instead, which is what this avoids.
    unsafe { &*core::ptr::read_volatile(&global) }
}

/// Reads a tracepoint field straight from the context. The offsets are
/// naturally aligned, which is what the verifier requires for context reads;
/// userspace has checked them against the running kernel's format file.
#[inline(always)]
fn field<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: `offset` is one of the tracepoint format's field offsets
    // (checked by userspace against the kernel's format file), inside the
    // context and naturally aligned; the verifier checks the access too.
    unsafe { core::ptr::read((ctx.as_ptr() as *const u8).add(offset) as *const T) }
}

/// An address field of the event (16 bytes, IPv4 already mapped), as the
/// four 32-bit words it is stored in.
#[inline(always)]
fn address(ctx: &TracePointContext, offset: usize) -> Address {
    [
        field(ctx, offset),
        field(ctx, offset + 4),
        field(ctx, offset + 8),
        field(ctx, offset + 12),
    ]
}

/// A 16-byte address (network byte order) as four native 32-bit words:
/// copied word by word, never byte by byte.
type Address = [u32; 4];

/// The fields of one transition but its addresses, however they were read.
/// The addresses go straight into the reserved record (see
/// [`emit_transition`]): kept here, they stayed live across the helper calls
/// and their spills took most of the raw program's 512-byte stack.
struct Fields {
    skaddr: u64,
    oldstate: i32,
    newstate: i32,
    family: u16,
    sport: u16,
    dport: u16,
    netns: u32,
}

/// Writes a transition's source and destination addresses (16 bytes each,
/// IPv4 mapped) into the record being filled.
trait Addresses {
    fn write(&self, saddr: *mut Address, daddr: *mut Address);
}

/// `skaddr` and `newstate`: the event's fields of those names, read by the
/// caller.
#[inline(always)]
fn try_set_state(ctx: &TracePointContext, skaddr: u64, newstate: i32) -> Result<(), Miss> {
    let protocol: u16 = field(ctx, off::PROTOCOL);
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let fields = Fields {
        skaddr,
        oldstate: field(ctx, off::OLDSTATE),
        newstate,
        family: field(ctx, off::FAMILY),
        sport: field(ctx, off::SPORT),
        dport: field(ctx, off::DPORT),
        netns: netns_of(skaddr),
    };
    emit_transition(ctx, &fields, &EventAddresses(ctx));
    Ok(())
}

/// The classic tracepoint's `saddr_v6` and `daddr_v6` fields.
struct EventAddresses<'a>(&'a TracePointContext);

impl Addresses for EventAddresses<'_> {
    #[inline(always)]
    fn write(&self, saddr: *mut Address, daddr: *mut Address) {
        // SAFETY: the caller passes pointers into a reserved record.
        unsafe {
            saddr.write(address(self.0, off::SADDR_V6));
            daddr.write(address(self.0, off::DADDR_V6));
        }
    }
}

/// With the raw program attached: whether the kernel skipped it for this
/// hit, so that this program answers for it (then counted as rescued).
#[inline(always)]
fn stands_in_for_raw(lookup: &taken::Lookup) -> bool {
    if lookup.taken() {
        // SAFETY: a whole aligned u32 of our own global, written through a
        // raw pointer (no reference to the `static mut` is made); other
        // CPUs only ever write the same value.
        unsafe { core::ptr::write_volatile(&raw mut RAW_RUNS_FIRST, 1) };
        return false;
    }
    if raw_never_skipped() {
        return false;
    }
    // SAFETY: a whole aligned u32 of our own global, read through a raw
    // pointer; a concurrent write of 1 makes it read 0 or 1, both valid.
    let raw_first = unsafe { core::ptr::read_volatile(&raw const RAW_RUNS_FIRST) } == 1;
    // Raw program first: it was skipped for this hit. Otherwise only the
    // flag tells, and only while its body runs.
    if !raw_first && !raw_flag_up() {
        return false;
    }
    // This program now answers for the hit the raw one missed, whatever
    // becomes of it: filtered out (not lost), written, or counted lost when
    // the ring buffer is full (counted once, there).
    count_rescued();
    true
}

/// Counts a hit a stand-in answers for because the kernel skipped the raw
/// program for it.
#[inline(always)]
fn count_rescued() {
    if let Some(rescued) = RESCUED.get_ptr_mut(0) {
        add_one(rescued);
    }
}

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn tcpstate_set_state_raw(ctx: RawTracePointContext) -> i32 {
    // A one-entry array always has its entry: `None` never happens. Were
    // it to, the stand-in would find the hit not taken and record it. An
    // early return (rather than a body run with and without the flag) keeps
    // the compiler from making two copies of the whole body, which took
    // twice its stack.
    let Some(active) = RAW_ACTIVE.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot of a per-CPU map, valid for the run; the
    // global is a whole aligned u32 of ours, written through a raw
    // pointer, and every CPU only ever writes 1 to it.
    unsafe {
        if core::ptr::read_volatile(active) == 1 {
            // The kernel ran this program inside its own run (before
            // Linux 6.2 it does not skip such hits).
            core::ptr::write_volatile(&raw mut RAW_NESTS, 1);
        }
        core::ptr::write_volatile(active, 1);
    }
    let mut fingerprint = 0;
    let body = try_set_state_raw(&ctx, &mut fingerprint);
    // Whatever the hit was (even one filtered out): the stand-in must not
    // record a hit this program took.
    taken::mark(ctx.arg(0), ctx.arg::<u64>(2) as u32, fingerprint);
    // SAFETY: as above. Cleared after `taken::mark`, so that the flag covers
    // as much of the run as this program can.
    unsafe { core::ptr::write_volatile(active, 0) };
    if let Err(miss) = body {
        report(&ctx, miss);
    }
    0
}

/// Whether this hit came while the raw program was running on this CPU, on
/// a kernel that then skips it: the raw program did not take it, whatever
/// `RAW_TAKEN` holds (a stale slot of the same connection and state).
#[inline(always)]
fn raw_running_here() -> bool {
    !raw_never_skipped() && raw_flag_up()
}

/// Whether the kernel has been seen running the raw program inside its own
/// run (`RAW_NESTS`): it never skips it, so a hit a stand-in finds not
/// taken was taken all the same, its slot lost in a window of the slot
/// bookkeeping (a softirq's stand-in freeing the slot of a hit whose raw
/// program it interrupted mid-`mark`). Recording it would record it twice.
#[inline(always)]
fn raw_never_skipped() -> bool {
    // SAFETY: a whole aligned u32 of our own global, read through a raw
    // pointer; a concurrent write of 1 makes it read 0 or 1, both valid.
    let nests = unsafe { core::ptr::read_volatile(&raw const RAW_NESTS) };
    nests == 1
}

/// Whether the raw program's `RAW_ACTIVE` flag is up on this CPU.
#[inline(always)]
fn raw_flag_up() -> bool {
    // SAFETY: a pointer to this CPU's slot of a per-CPU map, valid for the
    // whole program run; a u32 is read whole.
    RAW_ACTIVE
        .get_ptr(0)
        .is_some_and(|active| unsafe { core::ptr::read_volatile(active) } == 1)
}

/// The raw tracepoint gets `(struct sock *sk, int oldstate, int newstate)`:
/// read what the event's format would hold, the way the kernel fills it in
/// (`TP_STORE_ADDRS`: IPv4 as mapped IPv6).
///
/// Four probe reads: the protocol, the socket's first bytes (its
/// `sock_common`: addresses, ports, family, namespace) at once, the
/// `inet_sock` words holding the IPv4 source address and (on every kernel
/// we know) the source port, and the namespace's inode. A fifth reads the
/// port on its own where the kernel's layout puts it elsewhere.
///
/// Also sets `fingerprint` for `taken::mark` (0 when unreadable), from the
/// first bytes, read on their own for a socket that is not TCP.
#[inline(always)]
fn try_set_state_raw(ctx: &RawTracePointContext, fingerprint: &mut u64) -> Result<(), Miss> {
    let sk: u64 = ctx.arg(0);
    let oldstate: u64 = ctx.arg(1);
    let newstate: u64 = ctx.arg(2);
    let o = offsets();
    let unreadable = Miss::SocketUnreadable;
    let protocol: u16 = read_kernel(sk, o.sk_protocol).ok_or(unreadable)?;
    if protocol != IPPROTO_TCP {
        *fingerprint = taken::fingerprint_at(sk);
        return Ok(());
    }
    let mut head = core::mem::MaybeUninit::<Words<SOCK_HEAD_WORDS>>::uninit();
    let head = read_words_in(&mut head, sk).ok_or(unreadable)?;
    *fingerprint = taken::fingerprint(&[head[0], head[1], head[2], head[3]]);
    // `inet_sport` (and `inet_saddr`), not `skc_num` (and `skc_rcv_saddr`):
    // the tracepoint runs after a closing socket gave its port back, which
    // zeroes `skc_num` but leaves `inet_sport`, and reports the latter.
    let mut inet = core::mem::MaybeUninit::<Words<INET_WORDS>>::uninit();
    let inet = read_words_in(&mut inet, sk + u64::from(o.inet_saddr)).ok_or(unreadable)?;
    let saddr_v4 = inet[0];
    let sport = source_port(sk, inet, o).ok_or(unreadable)?;
    let net = u64::from(word_at(head, o.sock_common_net, 0))
        | u64::from(word_at(head, o.sock_common_net, 1)) << 32;
    let netns = if o.net_ns_inum == 0 {
        0
    } else {
        read_kernel::<u32>(net, o.net_ns_inum).unwrap_or(0)
    };
    let fields = Fields {
        skaddr: sk,
        oldstate: oldstate as i32,
        newstate: newstate as i32,
        family: u16_at(head, o.skc_family),
        sport: u16::from_be(sport),
        dport: u16::from_be(u16_at(head, o.skc_dport)),
        netns,
    };
    emit_transition(ctx, &fields, &SockAddresses { head, saddr_v4, o });
    Ok(())
}

/// A socket's addresses, from its first bytes and its IPv4 source address.
struct SockAddresses<'a> {
    head: &'a Words<SOCK_HEAD_WORDS>,
    saddr_v4: u32,
    o: &'a StructOffsets,
}

impl Addresses for SockAddresses<'_> {
    #[inline(always)]
    fn write(&self, saddr: *mut Address, daddr: *mut Address) {
        let (head, o) = (self.head, self.o);
        // SAFETY: the caller passes pointers into a reserved record. The
        // family is read again rather than passed: one word of the head.
        unsafe {
            if u16_at(head, o.skc_family) == tcpstate_common::AF_INET6 {
                saddr.write(address_at(head, o.skc_v6_rcv_saddr));
                daddr.write(address_at(head, o.skc_v6_daddr));
            } else {
                saddr.write(mapped(self.saddr_v4));
                daddr.write(mapped(word_at(head, o.skc_daddr, 0)));
            }
        }
    }
}

/// `inet_sport` (network order) from the words read at `inet_saddr`, or,
/// when the layout puts it outside them, read on its own into the same
/// words (a second buffer does not fit the stack). The offsets are
/// load-time constants, so the verifier keeps only one of the two paths.
#[inline(always)]
fn source_port(sk: u64, inet: &mut Words<INET_WORDS>, o: &StructOffsets) -> Option<u16> {
    if o.sport_in_saddr_span() {
        return Some(u16_at(inet, o.inet_sport.wrapping_sub(o.inet_saddr)));
    }
    let word = o.inet_sport & !3;
    read_words_into(inet, sk + u64::from(word))?;
    Some(u16_at(inet, o.inet_sport - word))
}

const SOCK_HEAD_WORDS: usize = SOCK_HEAD_BYTES / 4;
const INET_WORDS: usize = INET_SADDR_SPAN / 4;

/// Kernel memory as 32-bit words (a power-of-two count).
type Words<const N: usize> = [u32; N];

/// `N` words at `addr`, read into `slot` (returned by value, they would be
/// copied around on the 512-byte stack).
#[inline(always)]
fn read_words_in<const N: usize>(
    slot: &mut core::mem::MaybeUninit<Words<N>>,
    addr: u64,
) -> Option<&mut Words<N>> {
    // SAFETY: `slot` is N * 4 writable bytes; the helper writes exactly
    // that many (zeros on failure) and reads only kernel memory.
    let status = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            slot.as_mut_ptr().cast(),
            (N * 4) as u32,
            addr as *const aya_ebpf::cty::c_void,
        )
    };
    // SAFETY: the helper zero-fills on failure; either way every byte is
    // written, and any bit pattern is a valid u32.
    (status == 0).then(|| unsafe { slot.assume_init_mut() })
}

/// Like [`read_words_in`], into words the caller already has.
#[inline(always)]
fn read_words_into<const N: usize>(words: &mut Words<N>, addr: u64) -> Option<()> {
    // SAFETY: `MaybeUninit<T>` has the layout of `T`, and what the helper
    // writes (the words read, or zeros) is a valid `Words<N>` again.
    let slot = unsafe { &mut *(words as *mut Words<N>).cast::<core::mem::MaybeUninit<Words<N>>>() };
    read_words_in(slot, addr).map(|_| ())
}

/// Word `k` of the field at byte `offset` of `words`. Userspace checked
/// that each field lies inside and is aligned to its size (up to 4): word
/// reads and shifts, no byte-by-byte loads. The mask is how the verifier
/// sees the index stay inside.
#[inline(always)]
fn word_at<const N: usize>(words: &Words<N>, offset: u32, k: usize) -> u32 {
    words[(offset as usize / 4 + k) & (N - 1)]
}

#[inline(always)]
fn u16_at<const N: usize>(words: &Words<N>, offset: u32) -> u16 {
    (word_at(words, offset, 0) >> ((offset & 2) * 8)) as u16
}

#[inline(always)]
fn address_at<const N: usize>(words: &Words<N>, offset: u32) -> Address {
    [
        word_at(words, offset, 0),
        word_at(words, offset, 1),
        word_at(words, offset, 2),
        word_at(words, offset, 3),
    ]
}

/// An IPv4 address (network order, as stored) as IPv4-mapped IPv6
/// (`::ffff:a.b.c.d`), the way the tracepoint reports it.
#[inline(always)]
fn mapped(v4: u32) -> Address {
    [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff]), v4]
}

/// Filters, then writes one transition record (or counts it lost).
#[inline(always)]
fn emit_transition<C: EbpfContext>(ctx: &C, f: &Fields, addresses: &impl Addresses) {
    if !passes_filters(f.family, f.sport, f.dport) {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_lost(ctx, LOST_TRANSITIONS);
        // Tells a full ring (a larger --ring-size helps) from a lock that
        // was not taken (it does not): the bench and the summary show both.
        let used = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
        let size = EVENTS.query(BPF_RB_RING_SIZE as u64);
        if size.saturating_sub(used) > RING_BUSY_ROOM_RECORDS * RING_RECORD_BYTES {
            bump(LOST_TRANSITIONS_RING_BUSY);
        }
        return;
    };
    // SAFETY: a helper without arguments or preconditions.
    let ts = unsafe { bpf_ktime_get_boot_ns() };
    let with_task = TASK_ON_EVERY_TRANSITION.load() != 0
        || tcpstate_common::transition_names_owner(f.oldstate, f.newstate);
    let pid_tgid = if with_task {
        bpf_get_current_pid_tgid()
    } else {
        0
    };
    // Field by field into the reserved record: no copy of the whole event
    // through the stack.
    let e = entry.as_mut_ptr();
    // SAFETY: `e` points at the reserved record, an `Event` of ours until
    // it is submitted: every store is inside it (the 8-byte one covers
    // `newstate` and the padding that ends it, checked below at compile
    // time); `comm` is 16 writable bytes for the helper, at an 8-aligned
    // offset for the two 8-byte stores that clear it (also checked below);
    // the helpers called have no other preconditions.
    unsafe {
        (*e).ts_boot_ns = ts;
        (*e).skaddr = f.skaddr;
        (*e).cgroup_id = if with_task {
            bpf_get_current_cgroup_id()
        } else {
            0
        };
        // Both 4-aligned: `Event` is 8-aligned, the offsets are checked
        // below at compile time.
        addresses.write(
            (&raw mut (*e).saddr).cast::<Address>(),
            (&raw mut (*e).daddr).cast::<Address>(),
        );
        let comm = (*e).comm.as_mut_ptr();
        if !with_task || aya_ebpf::helpers::generated::bpf_get_current_comm(comm.cast(), 16) != 0 {
            comm.cast::<u64>().write(0);
            comm.cast::<u64>().add(1).write(0);
        }
        (*e).tgid = (pid_tgid >> 32) as u32;
        (*e).pid = pid_tgid as u32;
        (*e).cpu = bpf_get_smp_processor_id();
        (*e).netns = f.netns;
        (*e).sport = f.sport;
        (*e).dport = f.dport;
        (*e).family = f.family;
        (*e).kind = kind::TRANSITION;
        (*e).oldstate = f.oldstate as u8;
        // `newstate` and the padding after it as one 8-byte store (BPF is
        // little-endian here: the state is the low byte); storing the
        // padding array by itself compiles to a call to a BPF memset loop.
        e.cast::<u8>()
            .add(NEWSTATE_AND_PAD)
            .cast::<u64>()
            .write(u64::from(f.newstate as u8));
    }
    entry.submit(wakeup_flag(ts));
}

/// Network namespace inode of a socket (`sk->__sk_common.skc_net->ns.inum`),
/// 0 when the offsets are unknown or a read fails.
#[inline(always)]
fn netns_of(sk: u64) -> u32 {
    let offsets = offsets();
    if offsets.net_ns_inum == 0 {
        return 0;
    }
    let Some(net) = read_kernel::<u64>(sk, offsets.sock_common_net) else {
        return 0;
    };
    read_kernel::<u32>(net, offsets.net_ns_inum).unwrap_or(0)
}

#[inline(always)]
fn read_kernel<T: Copy>(base: u64, offset: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: the helper reads kernel memory without faulting (an error if
    // unmapped) and returns a copy; nothing is dereferenced here.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }.ok()
}

/// The `struct sock` behind file descriptor `fd` of the current task:
/// task->files->fdt->fd[fd]->private_data (a `struct socket`)->sk.
#[inline(always)]
fn sock_of_fd(fd: u64, offsets: &StructOffsets) -> Option<u64> {
    // SAFETY: a helper without arguments or preconditions; the pointer it
    // returns is only read through `bpf_probe_read_kernel`.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read_kernel(task, offsets.task_files)?;
    let fdt: u64 = read_kernel(files, offsets.files_fdt)?;
    let max_fds: u32 = read_kernel(fdt, offsets.fdtable_max_fds)?;
    if fd >= u64::from(max_fds) {
        return None;
    }
    let fd_array: u64 = read_kernel(fdt, offsets.fdtable_fd)?;
    let file: u64 = read_kernel(fd_array + fd * 8, 0)?;
    let socket: u64 = read_kernel(file, offsets.file_private_data)?;
    let sk: u64 = read_kernel(socket, offsets.socket_sk)?;
    (sk != 0).then_some(sk)
}

#[tracepoint]
pub fn tcpstate_accept4_exit(ctx: TracePointContext) -> u32 {
    if let Err(miss) = try_accept_exit(&ctx) {
        report(&ctx, miss);
    }
    0
}

#[tracepoint]
pub fn tcpstate_accept_exit(ctx: TracePointContext) -> u32 {
    if let Err(miss) = try_accept_exit(&ctx) {
        report(&ctx, miss);
    }
    0
}

/// accept() returned a new socket: its owner is the calling process.
#[inline(always)]
fn try_accept_exit(ctx: &TracePointContext) -> Result<(), Miss> {
    let ret: i64 = field(ctx, syscall_exit_offsets::RET);
    if ret < 0 {
        return Ok(());
    }
    let offsets = offsets();
    if offsets.task_files == 0 {
        return Ok(());
    }
    let sk = sock_of_fd(ret as u64, offsets).ok_or(Miss::AcceptedSocketUnreadable(ret))?;
    emit_owner(ctx, sk);
    Ok(())
}

/// `inet_csk_accept()` returned `sk` to the task now running: it owns it.
/// Where the kernel allows tracing programs this sees the accepts made
/// without the accept() system calls (io_uring) too. Two programs, because the function's
/// arguments changed in Linux 6.10 (four before, two since) and the return
/// value follows them. Userspace tries the four-argument one first: the
/// verifier refuses its read of index 4 where there are only two.
#[fexit(function = "inet_csk_accept")]
pub fn tcpstate_accept_fexit4(ctx: FExitContext) -> i32 {
    accept_returned(&ctx, ctx.arg(4));
    0
}

#[fexit(function = "inet_csk_accept")]
pub fn tcpstate_accept_fexit2(ctx: FExitContext) -> i32 {
    accept_returned(&ctx, ctx.arg(2));
    0
}

#[inline(always)]
fn accept_returned(ctx: &FExitContext, sk: u64) {
    if sk != 0 {
        emit_owner(ctx, sk);
    }
}

/// An owner record: the current task owns socket `sk`. Written field by
/// field into the reserved record, as [`emit_transition`] does.
#[inline(always)]
fn emit_owner<C: EbpfContext>(ctx: &C, sk: u64) {
    let netns = netns_of(sk);
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_lost(ctx, LOST_OWNERS);
        return;
    };
    // SAFETY: a helper without arguments or preconditions.
    let ts = unsafe { bpf_ktime_get_boot_ns() };
    let pid_tgid = bpf_get_current_pid_tgid();
    let e = entry.as_mut_ptr();
    // SAFETY: `e` points at the reserved record, an `Event` of ours until
    // it is submitted: every store is inside it. The addresses are 32
    // bytes from an 8-aligned offset, cleared with four 8-byte stores, and
    // the last 8-byte store covers `newstate` and the padding (offsets
    // checked below at compile time); `comm` is as in `emit_transition`.
    unsafe {
        (*e).ts_boot_ns = ts;
        (*e).skaddr = sk;
        (*e).cgroup_id = bpf_get_current_cgroup_id();
        let addresses = (&raw mut (*e).saddr).cast::<u64>();
        for i in 0..4 {
            addresses.add(i).write(0);
        }
        let comm = (*e).comm.as_mut_ptr();
        if aya_ebpf::helpers::generated::bpf_get_current_comm(comm.cast(), 16) != 0 {
            comm.cast::<u64>().write(0);
            comm.cast::<u64>().add(1).write(0);
        }
        (*e).tgid = (pid_tgid >> 32) as u32;
        (*e).pid = pid_tgid as u32;
        (*e).cpu = bpf_get_smp_processor_id();
        (*e).netns = netns;
        (*e).sport = 0;
        (*e).dport = 0;
        (*e).family = 0;
        (*e).kind = kind::OWNER_ACCEPT;
        (*e).oldstate = 0;
        e.cast::<u8>().add(NEWSTATE_AND_PAD).cast::<u64>().write(0);
    }
    entry.submit(wakeup_flag(ts));
}

#[tracepoint]
pub fn tcpstate_send_reset(ctx: TracePointContext) -> u32 {
    if let Err(miss) = try_send_reset(&ctx) {
        report(&ctx, miss);
    }
    0
}

/// A RST answering a segment: report that segment's addresses, read from
/// the skb's IP and TCP headers. A RST without a segment (an active reset
/// by a full socket) shows in that socket's own state transition.
#[inline(always)]
fn try_send_reset(ctx: &TracePointContext) -> Result<(), Miss> {
    let skb: u64 = field(ctx, reset_offsets::SKBADDR);
    let offsets = offsets();
    if skb == 0 || offsets.skb_head == 0 {
        return Ok(());
    }
    let (family, saddr, daddr, ports) =
        segment_of(skb, offsets).ok_or(Miss::ResetSegmentUnreadable)?;
    let sender: u64 = field(ctx, reset_offsets::SKADDR);
    let state: i32 = field(ctx, reset_offsets::STATE);
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_lost(ctx, LOST_RESETS);
        return Ok(());
    };
    // SAFETY: a helper without arguments or preconditions.
    let ts = unsafe { bpf_ktime_get_boot_ns() };
    let mut event = Event::zeroed();
    event.ts_boot_ns = ts;
    event.skaddr = sender;
    event.saddr = saddr;
    event.daddr = daddr;
    event.sport = u16::from_be(ports as u16);
    event.dport = u16::from_be((ports >> 16) as u16);
    event.family = family;
    event.oldstate = if sender == 0 { 0 } else { state as u8 };
    // SAFETY: a helper without arguments or preconditions.
    event.cpu = unsafe { bpf_get_smp_processor_id() };
    event.netns = if sender == 0 { 0 } else { netns_of(sender) };
    event.kind = kind::RESET_SENT;
    entry.write(event);
    entry.submit(wakeup_flag(ts));
    Ok(())
}

/// (family, source, destination, ports word) of the segment in `skb`;
/// addresses as IPv4-mapped IPv6 for IPv4, ports still in network order
/// (source in the low half on little-endian).
#[inline(always)]
fn segment_of(skb: u64, offsets: &StructOffsets) -> Option<(u16, [u8; 16], [u8; 16], u32)> {
    let head: u64 = read_kernel(skb, offsets.skb_head)?;
    let network: u16 = read_kernel(skb, offsets.skb_network_header)?;
    let transport: u16 = read_kernel(skb, offsets.skb_transport_header)?;
    let ip = head + u64::from(network);
    let version: u8 = read_kernel::<u8>(ip, 0)? >> 4;
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    let family = if version == 4 {
        let s: [u8; 4] = read_kernel(ip, 12)?;
        let d: [u8; 4] = read_kernel(ip, 16)?;
        saddr[10] = 0xff;
        saddr[11] = 0xff;
        daddr[10] = 0xff;
        daddr[11] = 0xff;
        saddr[12..].copy_from_slice(&s);
        daddr[12..].copy_from_slice(&d);
        tcpstate_common::AF_INET
    } else if version == 6 {
        saddr = read_kernel(ip, 8)?;
        daddr = read_kernel(ip, 24)?;
        tcpstate_common::AF_INET6
    } else {
        return None;
    };
    let ports: u32 = read_kernel(head + u64::from(transport), 0)?;
    Some((family, saddr, daddr, ports))
}

#[inline(always)]
fn passes_filters(family: u16, sport: u16, dport: u16) -> bool {
    let want_family = FILTER_FAMILY.load();
    if want_family != 0 && want_family != family {
        return false;
    }
    let any = FILTER_ANY_PORT.load();
    any == 0 || any == sport || any == dport
}

/// Where `newstate` and the padding that ends the event begin.
const NEWSTATE_AND_PAD: usize = core::mem::offset_of!(Event, newstate);
const _: () = assert!(NEWSTATE_AND_PAD % 8 == 0);
const _: () = assert!(core::mem::offset_of!(Event, saddr) % 4 == 0);
const _: () = assert!(core::mem::offset_of!(Event, daddr) % 4 == 0);
const _: () = assert!(core::mem::offset_of!(Event, saddr) % 8 == 0);
const _: () =
    assert!(core::mem::offset_of!(Event, daddr) == core::mem::offset_of!(Event, saddr) + 16);
const _: () =
    assert!(core::mem::offset_of!(Event, comm) == core::mem::offset_of!(Event, daddr) + 16);
const _: () = assert!(core::mem::offset_of!(Event, comm) % 8 == 0);
const _: () = assert!(core::mem::offset_of!(Event, _pad) == NEWSTATE_AND_PAD + 1);
const _: () = assert!(NEWSTATE_AND_PAD + 8 == core::mem::size_of::<Event>());

/// Batches wake-ups: wake the reader when this record takes the backlog over
/// the threshold, or when no wake-up happened for a while (so a lone event is
/// not held back). Past the threshold the reader is already awake, and every
/// further wake-up would only cost an interrupt (a VM exit on a guest). A few
/// records of slack cover CPUs reserving at the same moment; should both
/// still miss the crossing, the interval wake-up (and the reader's own timer)
/// catch it.
#[inline(always)]
fn wakeup_flag(now: u64) -> u64 {
    let pending = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let threshold = WAKEUP_BYTES.load();
    let crossed = pending >= threshold && pending < threshold + 4 * RING_RECORD_BYTES;
    // SAFETY: a whole aligned u64 of our own global, through raw pointers
    // (no reference to the `static mut`); BPF loads and stores of 8 bytes
    // are single instructions, so a race yields one CPU's value or
    // another's, both valid timestamps.
    let last = unsafe { core::ptr::read_volatile(&raw const LAST_WAKEUP_NS) };
    if crossed || now.wrapping_sub(last) >= WAKEUP_INTERVAL_NS.load() {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(&raw mut LAST_WAKEUP_NS, now) };
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Counts one lost event in `slot` and, the first time on this CPU, says so
/// in the log.
#[inline(always)]
fn count_lost<C: EbpfContext>(ctx: &C, slot: u32) {
    if bump(slot) == 1 {
        // Rare: once per CPU for the life of the program.
        warn!(
            ctx,
            "ring buffer reserve failed on this CPU: counting lost events"
        );
    }
}

/// Adds one to this CPU's `slot` of the LOST map; returns the count after
/// it (a nested add in between can make that one more: only the first-time
/// log line looks at it).
#[inline(always)]
fn bump(slot: u32) -> u64 {
    let Some(count) = LOST.get_ptr_mut(slot) else {
        return 0;
    };
    add_one(count);
    // SAFETY: as in `add_one`.
    unsafe { core::ptr::read_volatile(count) }
}

/// Adds one to a per-CPU counter with an atomic add, not a load and a
/// store: programs nest on one CPU (the raw program's stand-in inside the
/// raw program when a softirq interrupts it, and before Linux 6.2 either
/// one inside itself), and a nested count between the load and the store
/// of a plain increment is lost. (It was once taken for the cause of
/// delivered + lost = 2,001 of 2,002 in the `loss` test; that was the
/// workload's last transition coming after the test counted, 2026-12-07.)
/// The add's result is not used: the BPF instruction set has an atomic add
/// without fetch (XADD) on every kernel, and the fetching form needs a
/// newer CPU version than the object is built for (the intrinsic compiles
/// to `lock ... += 1`).
#[inline(always)]
fn add_one(count: *mut u64) {
    // SAFETY: callers pass this CPU's slot of a per-CPU map: valid,
    // 8-aligned and only ever accessed as a u64 for the run; atomics are
    // sound on it.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            count, 1,
        );
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

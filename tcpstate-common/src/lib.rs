//! Types and names shared by the BPF program and userspace.
//!
//! Everything that crosses the ring buffer is `#[repr(C)]`, made of fixed-width
//! integers and byte arrays, with explicit padding, so both sides agree on the
//! layout byte for byte. Userspace never transmutes these from raw bytes: it
//! checks the length and reads them with `read_unaligned`.
#![no_std]

/// Name of the BPF program attached to `sock:inet_sock_set_state`.
pub const PROGRAM_SET_STATE: &str = "tcpstate_set_state";
/// Tracepoint category and name the program attaches to.
pub const TRACEPOINT_CATEGORY: &str = "sock";
pub const TRACEPOINT_NAME: &str = "inet_sock_set_state";

/// The same tracepoint as a raw tracepoint: the kernel guards each raw
/// tracepoint program on its own, so this one runs even while another
/// tracing program is running on the CPU (where the classic program would
/// be skipped). The classic program then only stands in for the hits this
/// one misses (see the BPF program).
pub const PROGRAM_SET_STATE_RAW: &str = "tcpstate_set_state_raw";
/// One entry, set to 1 by userspace once the raw program is attached.
pub const MAP_RAW_MODE: &str = "RAW_MODE";
/// Per-CPU: 1 while the raw program runs (a hit now is one it will miss).
pub const MAP_RAW_ACTIVE: &str = "RAW_ACTIVE";
/// Per-CPU: the hits the raw program took lately, a [`RawTaken`].
pub const MAP_RAW_TAKEN: &str = "RAW_TAKEN";
/// Per-CPU count of hits a stand-in (the second raw program, or the classic
/// one) answered for because the kernel skipped the raw program for them.
pub const MAP_RESCUED: &str = "RESCUED";

/// Programs on `syscalls:sys_exit_accept4` / `sys_exit_accept`: they name
/// the process that accepted a socket (passive opens run in softirq, so the
/// set_state tracepoint cannot).
pub const PROGRAM_ACCEPT4_EXIT: &str = "tcpstate_accept4_exit";
/// fexit programs on `inet_csk_accept` (its four-argument form before Linux
/// 6.10, its two-argument form since): the owner of every accepted socket,
/// also without accept() (io_uring), where the kernel allows tracing
/// programs. Beside the syscall tracepoints, which see the accepts that
/// were already blocked when the program was attached.
pub const PROGRAM_ACCEPT_FEXIT4: &str = "tcpstate_accept_fexit4";
pub const PROGRAM_ACCEPT_FEXIT2: &str = "tcpstate_accept_fexit2";
pub const ACCEPT_FUNCTION: &str = "inet_csk_accept";
pub const PROGRAM_ACCEPT_EXIT: &str = "tcpstate_accept_exit";
/// Program on `tcp:tcp_send_reset`: RSTs the host sends in answer to a
/// segment (they can destroy a time-wait socket, which no state tracepoint
/// shows).
pub const PROGRAM_SEND_RESET: &str = "tcpstate_send_reset";
pub const TCP_CATEGORY: &str = "tcp";
pub const SEND_RESET: &str = "tcp_send_reset";
pub const SYSCALLS_CATEGORY: &str = "syscalls";
pub const ACCEPT4_EXIT: &str = "sys_exit_accept4";
pub const ACCEPT_EXIT: &str = "sys_exit_accept";

/// Ring buffer carrying [`Event`] records to userspace.
pub const MAP_EVENTS: &str = "EVENTS";
/// Per-CPU counts of records that could not be reserved in [`MAP_EVENTS`],
/// one slot per kind of record.
pub const MAP_LOST: &str = "LOST";
/// [`MAP_LOST`] slot of lost transitions.
pub const LOST_TRANSITIONS: u32 = 0;
/// [`MAP_LOST`] slot of lost accept() owner records.
pub const LOST_OWNERS: u32 = 1;
/// [`MAP_LOST`] slot of lost RST records.
pub const LOST_RESETS: u32 = 2;
/// [`MAP_LOST`] slot of the transitions of [`LOST_TRANSITIONS`] whose
/// reserve failed with room left in the ring (more than
/// [`RING_BUSY_ROOM_RECORDS`] records free): the ring's lock was not taken,
/// the ring was not full. Linux 6.16+ locks the ring with a spinlock that
/// gives up (on a deadlock it detects or a timeout) instead of spinning.
/// A part of [`LOST_TRANSITIONS`], not added to it.
pub const LOST_TRANSITIONS_RING_BUSY: u32 = 5;
/// Free records a failed reserve must still see to count as "ring busy":
/// well beyond what the reader can free between the failure and the check.
pub const RING_BUSY_ROOM_RECORDS: u64 = 64;

/// Load-time globals (set by userspace before the program is loaded).
pub const GLOBAL_FILTER_FAMILY: &str = "FILTER_FAMILY";
pub const GLOBAL_FILTER_ANY_PORT: &str = "FILTER_ANY_PORT";
pub const GLOBAL_WAKEUP_BYTES: &str = "WAKEUP_BYTES";
pub const GLOBAL_WAKEUP_INTERVAL_NS: &str = "WAKEUP_INTERVAL_NS";
pub const GLOBAL_OFFSETS: &str = "OFFSETS";
/// 1: every transition record carries the task on the CPU (`trace` shows
/// it, recordings keep it). 0: only the transitions that can name a
/// socket's owner ([`transition_names_owner`]) do, the others carry none:
/// the views that only count (`stat`, `serve`, ...) never look at it, and
/// reading it is a fifth of what the raw program costs per run.
pub const GLOBAL_TASK_ON_EVERY_TRANSITION: &str = "TASK_ON_EVERY_TRANSITION";

/// Kernel TCP states (`include/net/tcp_states.h`) the BPF program tests.
pub mod tcp_state {
    pub const SYN_SENT: i32 = 2;
    pub const CLOSE: i32 = 7;
    pub const LISTEN: i32 = 10;
}

/// Whether a transition runs in the system call of the process that owns
/// the socket, so that the task on the CPU is its owner: connect()
/// (CLOSE -> SYN_SENT) and listen() (CLOSE -> LISTEN). The connection
/// model takes owners from these transitions only; the BPF program reads
/// the task for these at least.
pub const fn transition_names_owner(oldstate: i32, newstate: i32) -> bool {
    oldstate == tcp_state::CLOSE
        && (newstate == tcp_state::SYN_SENT || newstate == tcp_state::LISTEN)
}

/// `struct trace_event_raw_inet_sock_set_state` offsets, as its `format` file
/// gives them since Linux 4.16. Userspace checks the running kernel's format
/// against these before loading.
pub mod tp_offsets {
    pub const SKADDR: usize = 8;
    pub const OLDSTATE: usize = 16;
    pub const NEWSTATE: usize = 20;
    pub const SPORT: usize = 24;
    pub const DPORT: usize = 26;
    pub const FAMILY: usize = 28;
    pub const PROTOCOL: usize = 30;
    pub const SADDR_V6: usize = 40;
    pub const DADDR_V6: usize = 56;

    /// (field name, offset, size) as they must appear in the format file.
    pub const EXPECTED: [(&str, usize, usize); 9] = [
        ("skaddr", SKADDR, 8),
        ("oldstate", OLDSTATE, 4),
        ("newstate", NEWSTATE, 4),
        ("sport", SPORT, 2),
        ("dport", DPORT, 2),
        ("family", FAMILY, 2),
        ("protocol", PROTOCOL, 2),
        ("saddr_v6", SADDR_V6, 16),
        ("daddr_v6", DADDR_V6, 16),
    ];
}

/// `tcp:tcp_send_reset` (Linux 6.10+ layout, with `skbaddr`).
pub mod reset_offsets {
    pub const SKBADDR: usize = 8;
    pub const SKADDR: usize = 16;
    pub const STATE: usize = 24;
    pub const EXPECTED: [(&str, usize, usize); 3] = [
        ("skbaddr", SKBADDR, 8),
        ("skaddr", SKADDR, 8),
        ("state", STATE, 4),
    ];
    /// The segment's source as a `sockaddr_in6`: the layout of the kernels
    /// whose event also fires for a RST sent without a socket (answering a
    /// segment no socket matches: those are the RSTs that end time-wait
    /// sockets). Older layouts (`saddr[4]`, 5.10 and 6.1) fire only for
    /// RSTs a socket sends.
    pub const SOCKADDR_SOURCE: (&str, usize, usize) = ("saddr", 32, 28);
}

/// `syscalls:sys_exit_*` tracepoints: the return value.
pub mod syscall_exit_offsets {
    pub const SYSCALL_NR: usize = 8;
    pub const RET: usize = 16;
    pub const EXPECTED: [(&str, usize, usize); 2] =
        [("__syscall_nr", SYSCALL_NR, 4), ("ret", RET, 8)];
}

/// Byte offsets of kernel struct members, read from the running kernel's BTF
/// at load time, so the program can go from (task, fd) to the `struct sock`
/// and from a `struct sock` to its network namespace. Zero means unknown:
/// the features that need them are then off.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StructOffsets {
    pub task_files: u32,
    /// `task_struct.stack`: where the saved registers are (see
    /// [`x86_64_pt_regs`]).
    pub task_stack: u32,
    pub files_fdt: u32,
    pub fdtable_fd: u32,
    pub fdtable_max_fds: u32,
    pub file_private_data: u32,
    pub socket_sk: u32,
    pub sock_common_net: u32,
    pub net_ns_inum: u32,
    pub skb_head: u32,
    pub skb_network_header: u32,
    pub skb_transport_header: u32,
    /// For the raw tracepoint, which gets the `struct sock *` itself: the
    /// fields the `inet_sock_set_state` event copies out of it. The
    /// `skc_*` ones lie in the first [`SOCK_HEAD_BYTES`] of the socket (its
    /// `sock_common`), which the program reads at once.
    pub skc_family: u32,
    pub sk_protocol: u32,
    pub skc_daddr: u32,
    pub skc_dport: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    /// `inet_sock` members: the IPv4 source address, and the source port
    /// within [`INET_SADDR_SPAN`] bytes after it (read together).
    pub inet_saddr: u32,
    pub inet_sport: u32,
}

/// Bytes at the start of a `struct sock` (its `sock_common`: addresses,
/// ports, family, namespace) the raw program reads in one probe read
/// instead of one per field. A power of two: the program masks field
/// offsets with it, which is how the verifier sees them stay inside.
pub const SOCK_HEAD_BYTES: usize = 128;

/// Bytes from `inet_saddr` the raw program reads at once. `inet_sport`
/// follows it within a few bytes, how many depends on the kernel (the
/// alignment of the pointer between them puts it 20 bytes on in 6.1): when
/// it lies inside, it comes from the same read, otherwise from one of its
/// own (see [`StructOffsets::sport_in_saddr_span`]). A power of two; a
/// larger span does not fit the raw program's 512-byte stack.
pub const INET_SADDR_SPAN: usize = 16;

const _: () = assert!(core::mem::size_of::<StructOffsets>() == 80);

impl StructOffsets {
    /// Whether `inet_sport` lies inside the [`INET_SADDR_SPAN`] bytes read
    /// from `inet_saddr` (after it, 2-byte aligned). Otherwise the raw
    /// program reads the port on its own. Both sides decide with this.
    pub const fn sport_in_saddr_span(&self) -> bool {
        match self.inet_sport.checked_sub(self.inet_saddr) {
            Some(rel) => rel as usize + 2 <= INET_SADDR_SPAN && rel % 2 == 0,
            None => false,
        }
    }

    pub const fn zeroed() -> Self {
        Self {
            task_files: 0,
            task_stack: 0,
            files_fdt: 0,
            fdtable_fd: 0,
            fdtable_max_fds: 0,
            file_private_data: 0,
            socket_sk: 0,
            sock_common_net: 0,
            net_ns_inum: 0,
            skb_head: 0,
            skb_network_header: 0,
            skb_transport_header: 0,
            skc_family: 0,
            sk_protocol: 0,
            skc_daddr: 0,
            skc_dport: 0,
            skc_v6_daddr: 0,
            skc_v6_rcv_saddr: 0,
            inet_saddr: 0,
            inet_sport: 0,
        }
    }
}

// SAFETY: `repr(C)`, fixed-width integers and arrays of them only, with
// explicit padding (the size is asserted above): any bit pattern is a value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for StructOffsets {}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;

/// `Event::kind` values.
pub mod kind {
    /// A TCP state transition from `sock:inet_sock_set_state`.
    pub const TRANSITION: u8 = 1;
    /// A process got this socket from accept(); only `skaddr`, the task
    /// fields, `cgroup_id` and `ts_boot_ns` are meaningful.
    pub const OWNER_ACCEPT: u8 = 2;
    /// The host sent a RST in answer to a segment from (`saddr`, `sport`)
    /// to (`daddr`, `dport`); `oldstate` is the sending socket's state (0:
    /// no socket), `skaddr` that socket.
    pub const RESET_SENT: u8 = 3;
}

/// One record in the ring buffer.
///
/// Addresses are in network byte order as the kernel stores them; for an
/// `AF_INET` socket they are IPv4-mapped IPv6 (`::ffff:a.b.c.d`), which is
/// what the tracepoint's `saddr_v6`/`daddr_v6` fields hold. Ports are in host
/// byte order (the tracepoint converts them).
///
/// `tgid`, `pid`, `comm` and `cgroup_id` describe the task that was on the
/// CPU when the event fired. For transitions driven by packets (softirq) this
/// is unrelated to the socket's owner.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_boot_ns()`: nanoseconds since boot, including suspend.
    pub ts_boot_ns: u64,
    /// Kernel address of the `struct sock` (identity while the socket lives).
    pub skaddr: u64,
    pub cgroup_id: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub comm: [u8; 16],
    pub tgid: u32,
    pub pid: u32,
    pub cpu: u32,
    /// Network namespace inode, 0 when unknown.
    pub netns: u32,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub kind: u8,
    pub oldstate: u8,
    pub newstate: u8,
    pub _pad: [u8; 7],
}

pub const EVENT_SIZE: usize = 104;
const _: () = assert!(core::mem::size_of::<Event>() == EVENT_SIZE);
const _: () = assert!(core::mem::align_of::<Event>() == 8);

impl Event {
    pub const fn zeroed() -> Self {
        Self {
            ts_boot_ns: 0,
            skaddr: 0,
            cgroup_id: 0,
            saddr: [0; 16],
            daddr: [0; 16],
            comm: [0; 16],
            tgid: 0,
            pid: 0,
            cpu: 0,
            netns: 0,
            sport: 0,
            dport: 0,
            family: 0,
            kind: 0,
            oldstate: 0,
            newstate: 0,
            _pad: [0; 7],
        }
    }
}

/// Default ring buffer size: room for a burst of about 150,000 records
/// (each takes `EVENT_SIZE` plus an 8-byte ring header).
pub const DEFAULT_RING_BYTES: u32 = 16 << 20;

/// Ring-buffer bytes one record takes: the kernel's 8-byte header + the event.
pub const RING_RECORD_BYTES: u64 = (EVENT_SIZE + 8) as u64;

/// Records waiting in the ring buffer before the program wakes the reader
/// (unless a quarter of the ring is less). Each wake-up is an interrupt and
/// a context switch, paid inside the BPF program's run: `cargo xtask bench`
/// at 10,000 connections/s measured `stat` at 1.74 µs of CPU per transition
/// waking every 64 records, 1.37 at 256, 1.08 at 1,024 and 0.99 at 4,096
/// (the raw program itself 810, 652, 518 and 486 ns per run). The `ports`
/// test's failures with it in CI (2026-12-05, 2026-12-06) were the test's
/// expectation, not tcpstate: a listener's RST ended a client time-wait
/// socket, the client's loop took the freed 4-tuple again, and tcpstate
/// showed what ss showed, one TIME_WAIT fewer than the client closed. A
/// lone event is not held back by it: the program also wakes the reader
/// when nobody was woken for the flush interval, and the reader drains the
/// ring every flush interval anyway.
pub const DEFAULT_WAKEUP_RECORDS: u64 = 4096;

// SAFETY: `repr(C)`, fixed-width integers and arrays of them only, with
// explicit padding (the size is asserted above): any bit pattern is a value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Event {}

// ---- Issue 11 (ports): failed connect() and bind() calls ----

/// Programs on `syscalls:sys_exit_connect` and `sys_exit_bind`: a call
/// that fails yields one record with the caller, the address it passed and
/// the errno. The call's arguments come from the registers the task saved
/// on entry (see [`x86_64_pt_regs`]).
pub const PROGRAM_CONNECT_EXIT: &str = "tcpstate_connect_exit";
pub const PROGRAM_BIND_EXIT: &str = "tcpstate_bind_exit";
pub const CONNECT_EXIT: &str = "sys_exit_connect";
pub const BIND_EXIT: &str = "sys_exit_bind";
/// [`MAP_LOST`] slots of failed connect() and bind() records that could not
/// be reserved, or whose call's arguments could not be read (then counted
/// whatever the socket was: an upper bound).
pub const LOST_CONNECT_FAILURES: u32 = 3;
pub const LOST_BIND_FAILURES: u32 = 4;
/// `Event::kind` of a failed connect(): `daddr`/`dport`/`family` are the
/// destination passed, `oldstate` holds the errno (positive), `skaddr` the
/// socket, the task fields the caller.
pub const KIND_CONNECT_FAILED: u8 = 4;
/// `Event::kind` of a failed bind(): as [`KIND_CONNECT_FAILED`], with the
/// address asked for in `saddr`/`sport`.
pub const KIND_BIND_FAILED: u8 = 5;

/// The registers an x86-64 task saves at the top of its kernel stack on a
/// system call (`struct pt_regs`, in the order of ptrace's
/// `user_regs_struct`: a user ABI, the same on every kernel). A syscall
/// exit program reads the call's arguments there, as `bpf_task_pt_regs`
/// would (Linux 5.15 and later, and only for BTF tracing programs): that
/// saves an entry program and a map write per call.
pub mod x86_64_pt_regs {
    /// `sizeof(struct pt_regs)`.
    pub const SIZE: u64 = 168;
    /// Where the program reads [`WORDS`] words at once: `ax` (the return
    /// value, by the exit), `cx`, `dx`, `si` (second argument), `di`
    /// (first) and `orig_ax` (the system call's number).
    pub const FROM_AX: u64 = 80;
    pub const WORDS: usize = 6;
    pub const AX: usize = 0;
    pub const SI: usize = 3;
    pub const DI: usize = 4;
    pub const ORIG_AX: usize = 5;
    /// Where `struct pt_regs` ends, below the top of the task's stack
    /// (`task_struct.stack`): the stack's size (`THREAD_SIZE`: 16 KiB, 32
    /// KiB with KASAN) less `TOP_OF_KERNEL_STACK_PADDING` (16 bytes with
    /// FRED support, Linux 6.9 and later, else 0). The program tries each
    /// and keeps the one whose `orig_ax` and `ax` are the call's number and
    /// return value.
    pub const STACK_TOPS: [u64; 4] = [16384, 16384 - 16, 32768, 32768 - 16];
}

// ---- issue 15 (cost): the second raw tracepoint program ----

/// A second raw tracepoint program on `inet_sock_set_state`, attached after
/// [`PROGRAM_SET_STATE_RAW`]: it records the hits the kernel skipped the
/// first one for (that program already running on the CPU), with a
/// recursion guard of its own. Where it is attached the classic program
/// ([`PROGRAM_SET_STATE`]) is not.
pub const PROGRAM_SET_STATE_RAW2: &str = "tcpstate_set_state_raw2";

/// Slots of [`RawTaken`].
pub const RAW_TAKEN_SLOTS: usize = 8;

/// The socket bytes a [`RawTaken`] fingerprint folds: the start of
/// `sock_common` (its address pair, hash and port pair on every kernel).
pub const RAW_TAKEN_FINGERPRINT_BYTES: usize = 16;

/// The one entry of [`MAP_RAW_TAKEN`] on a CPU: the last hits the raw
/// program took there, as (socket, new state, fingerprint), for its
/// stand-in to find (see the BPF program's `taken` module). Userspace
/// reads it only to tell how many slots are held.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawTaken {
    /// The socket's address; 0: the slot is free.
    pub sk: [u64; RAW_TAKEN_SLOTS],
    /// When a stand-in first found the slot held beside its own hit's
    /// (bpf_ktime_get_ns); 0 until then.
    pub seen_ns: [u64; RAW_TAKEN_SLOTS],
    /// The socket's first [`RAW_TAKEN_FINGERPRINT_BYTES`] bytes folded to
    /// one word when the raw program took the hit: they differ between two
    /// connections on one socket address.
    pub fingerprint: [u64; RAW_TAKEN_SLOTS],
    pub state: [u32; RAW_TAKEN_SLOTS],
    /// The value of `runs` when the slot was written.
    pub written: [u32; RAW_TAKEN_SLOTS],
    /// Raw program runs on this CPU.
    pub runs: u32,
    /// The slot the raw program wrote last.
    pub last: u32,
    /// Slots held, as the programs last counted them (a program nested
    /// between another's read and write of it can leave it off by one
    /// until a stand-in counts them again).
    pub held: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<RawTaken>() == 272);

impl RawTaken {
    /// Slots held now.
    pub fn held(&self) -> usize {
        self.sk.iter().filter(|&&sk| sk != 0).count()
    }
}

// SAFETY: `repr(C)`, fixed-width integers and arrays of them only, with
// explicit padding (the size is asserted above): any bit pattern is a value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for RawTaken {}

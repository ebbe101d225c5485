//! Failed connect() and bind() calls (issue 11): the caller, the address it
//! passed and the errno, one record per failure.
//!
//! Off the transition path: a program of its own on each call's syscall
//! exit tracepoint. A successful call costs a read of its return value.
//! Only when the call failed does the program find the call's arguments
//! (the fd and the user address), in the registers the task saved on
//! entry, read the address the caller passed (the kernel has just copied
//! it in, so its page is present), check that the fd is a TCP socket and
//! emit the record. An entry program keeping the arguments in a per-task
//! map until the exit cost 6-10 times more per call (2026-12-07, beside
//! 10,000 connections/s: ~630 ns per connect() and ~900 per bind(), entry
//! and exit, against ~110 and ~90 for the exit alone).
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_get_smp_processor_id, bpf_ktime_get_boot_ns, bpf_probe_read_user,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use tcpstate_common::{
    syscall_exit_offsets, x86_64_pt_regs as regs, Event, AF_INET, AF_INET6, IPPROTO_TCP,
    KIND_BIND_FAILED, KIND_CONNECT_FAILED, LOST_BIND_FAILURES, LOST_CONNECT_FAILURES,
};

use crate::{count_lost, field, netns_of, offsets, read_kernel, sock_of_fd, wakeup_flag, EVENTS};

const EINTR: i64 = 4;
const EALREADY: i64 = 114;
const EINPROGRESS: i64 = 115;
const EISCONN: i64 = 106;

#[tracepoint]
pub fn tcpstate_connect_exit(ctx: TracePointContext) -> u32 {
    finished(&ctx, KIND_CONNECT_FAILED, LOST_CONNECT_FAILURES);
    0
}

#[tracepoint]
pub fn tcpstate_bind_exit(ctx: TracePointContext) -> u32 {
    finished(&ctx, KIND_BIND_FAILED, LOST_BIND_FAILURES);
    0
}

/// Not failures of the connection: a non-blocking connect under way (its
/// outcome shows as SYN_SENT -> ESTABLISHED or CLOSE), an interrupted
/// one that goes on, or one already done.
#[inline(always)]
fn is_failure(ret: i64) -> bool {
    ret < 0 && !matches!(-ret, EINPROGRESS | EALREADY | EINTR | EISCONN)
}

/// The call's first two arguments, (fd, user address of the sockaddr),
/// from the registers the task saved when it entered the kernel, at the
/// top of its stack. Where exactly depends on the kernel's build (see
/// [`regs::STACK_TOPS`]): the place whose saved system call number and
/// return value are both this call's is the one (the other places are not
/// saved registers, and two words there matching both by chance is not a
/// real risk). None when no place matches or the stack cannot be read.
#[inline(always)]
fn call_arguments(ctx: &TracePointContext, ret: i64) -> Option<(u64, u64)> {
    let task_stack = offsets().task_stack;
    if task_stack == 0 {
        return None;
    }
    let nr: i32 = field(ctx, syscall_exit_offsets::SYSCALL_NR);
    // SAFETY: a helper without arguments or preconditions; the pointer it
    // returns is only read through `bpf_probe_read_kernel`.
    let task = unsafe { bpf_get_current_task() };
    let stack: u64 = read_kernel(task, task_stack)?;
    for top in regs::STACK_TOPS {
        let at = stack + top - regs::SIZE + regs::FROM_AX;
        let Some(saved) = read_kernel::<[u64; regs::WORDS]>(at, 0) else {
            continue;
        };
        if saved[regs::ORIG_AX] == nr as u64 && saved[regs::AX] as i64 == ret {
            return Some((saved[regs::DI], saved[regs::SI]));
        }
    }
    None
}

#[inline(always)]
fn finished(ctx: &TracePointContext, kind: u8, lost_slot: u32) {
    let ret: i64 = field(ctx, syscall_exit_offsets::RET);
    if !is_failure(ret) {
        return;
    }
    let Some((fd, addr)) = call_arguments(ctx, ret) else {
        // Not known to be a TCP socket's, counted all the same: the lost
        // count is an upper bound, never short.
        count_lost(ctx, lost_slot);
        return;
    };
    let offsets = offsets();
    let Some(sk) = sock_of_fd(fd, offsets) else {
        return;
    };
    let protocol: u16 = read_kernel(sk, offsets.sk_protocol).unwrap_or(0);
    if protocol != IPPROTO_TCP {
        return;
    }
    let Some((family, addr, port)) = sockaddr(addr) else {
        return;
    };
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_lost(ctx, lost_slot);
        return;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: a helper without arguments or preconditions.
    let ts = unsafe { bpf_ktime_get_boot_ns() };
    let mut event = Event::zeroed();
    event.ts_boot_ns = ts;
    event.skaddr = sk;
    if kind == KIND_BIND_FAILED {
        event.saddr = addr;
        event.sport = port;
    } else {
        event.daddr = addr;
        event.dport = port;
    }
    event.family = family;
    // Every errno fits a byte (the kernel's go up to 133).
    event.oldstate = (-ret) as u8;
    // SAFETY: helpers without arguments or preconditions.
    event.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    event.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    event.tgid = (pid_tgid >> 32) as u32;
    event.pid = pid_tgid as u32;
    // SAFETY: as above.
    event.cpu = unsafe { bpf_get_smp_processor_id() };
    event.netns = netns_of(sk);
    event.kind = kind;
    entry.write(event);
    entry.submit(wakeup_flag(ts));
}

/// The family, address (IPv4 mapped into IPv6) and port (host order) of
/// the `struct sockaddr` at user address `addr`; None for other families
/// or an unreadable one.
#[inline(always)]
fn sockaddr(addr: u64) -> Option<(u16, [u8; 16], u16)> {
    // A sockaddr_in6 is 28 bytes, a sockaddr_in 16: a sockaddr_in at the
    // very end of a mapping cannot be read as 28.
    // SAFETY: the helper reads user memory without faulting (an error if
    // unmapped) and returns a copy.
    let (bytes, whole): ([u8; 28], bool) = match unsafe {
        bpf_probe_read_user(addr as *const [u8; 28])
    } {
        Ok(b) => (b, true),
        Err(_) => {
            // SAFETY: as above.
            let short: [u8; 16] = unsafe { bpf_probe_read_user(addr as *const [u8; 16]) }.ok()?;
            let mut b = [0u8; 28];
            b[..16].copy_from_slice(&short);
            (b, false)
        }
    };
    let family = u16::from_ne_bytes([bytes[0], bytes[1]]);
    let port = u16::from_be_bytes([bytes[2], bytes[3]]);
    let mut out = [0u8; 16];
    match family {
        AF_INET => {
            out[10] = 0xff;
            out[11] = 0xff;
            out[12..].copy_from_slice(&bytes[4..8]);
        }
        AF_INET6 if whole => out.copy_from_slice(&bytes[8..24]),
        _ => return None,
    }
    Some((family, out, port))
}

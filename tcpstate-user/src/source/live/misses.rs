//! Events the kernel dropped before our program ran.
//!
//! A classic tracepoint does not run its BPF program when another tracing
//! program is already running on that CPU (for instance ours, interrupted by
//! a softirq that changes another socket's state). The kernel counts these
//! per program as `recursion_misses` (Linux 5.12+); they are lost events
//! just like a full ring buffer, and are reported with them.
use aya::programs::ProgramFd;
use aya_obj::generated::bpf_prog_info;
use std::os::fd::{AsFd, AsRawFd};

/// `BPF_OBJ_GET_INFO_BY_FD`'s attribute.
#[repr(C)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The program's recursion misses so far; `None` when the kernel does not
/// count them (before 5.12 its `bpf_prog_info` ends before the field) or
/// the call fails.
pub fn recursion_misses(program: &ProgramFd) -> Option<u64> {
    // SAFETY: bpf_prog_info is plain old data; zero is a valid value.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoByFd {
        bpf_fd: program.as_fd().as_raw_fd() as u32,
        info_len: std::mem::size_of::<bpf_prog_info>() as u32,
        info: &mut info as *mut bpf_prog_info as u64,
    };
    // SAFETY: `attr` points at a live, correctly sized buffer; the kernel
    // writes at most `info_len` bytes into it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoByFd,
            std::mem::size_of::<InfoByFd>(),
        )
    };
    // The kernel fills in at most its own size of the struct and says how
    // much in `info_len`.
    let end = std::mem::offset_of!(bpf_prog_info, recursion_misses) + 8;
    (rc == 0 && attr.info_len as usize >= end).then_some(info.recursion_misses)
}

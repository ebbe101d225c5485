//! The live source: the BPF program on `sock:inet_sock_set_state` and its
//! ring buffer.
mod btf;
mod loader;
mod misses;
mod preflight;
mod skips;
mod tracefs;

pub use loader::{
    ContextTask, HookStatus, LiveOptions, LiveSource, OwnerTracking, ProgramStatus, FLUSH_INTERVAL,
    IGNORE_BTF_ENV, MAX_BATCH,
};
/// A good initial capacity for batch vectors.
pub const MAX_BATCH_HINT: usize = MAX_BATCH;
pub use preflight::check_kernel_release;
pub use tracefs::check_format;

/// Why live tracing could not start. Each message names the cause and the fix.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(
        "this tcpstate binary was built without its BPF program: build it with `cargo xtask build`"
    )]
    NoBpfObject,
    #[error("kernel {release} is too old: tcpstate needs Linux 5.8 or newer (BPF ring buffer)")]
    KernelTooOld { release: String },
    #[error("permission denied: tcpstate loads a BPF program, so it needs root or CAP_BPF + CAP_PERFMON (run it with sudo){detail}")]
    NotPrivileged { detail: String },
    #[error("tracefs is not mounted and could not be mounted ({reason}): run `sudo mount -t tracefs nodev /sys/kernel/tracing`")]
    TracefsMissing { reason: String },
    #[error("the kernel has no tracepoint sock:inet_sock_set_state ({path} is missing): it needs Linux 4.16 or newer built with CONFIG_TRACEPOINTS")]
    TracepointMissing { path: String },
    #[error("the running kernel's format of sock:inet_sock_set_state does not match what tcpstate was built for ({detail}); please report it with the contents of {path}")]
    FormatMismatch { path: String, detail: String },
    #[error("bad --ring-size {bytes}: {reason}")]
    RingSize { bytes: u64, reason: String },
    #[error("could not load the BPF program")]
    Load(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the BPF object has no {0}: rebuild it with `cargo xtask build`")]
    NotInObject(String),
    #[error("could not attach to sock:inet_sock_set_state")]
    Attach(#[source] aya::programs::ProgramError),
    #[error("reading the ring buffer failed: {0}")]
    Read(#[from] std::io::Error),
}

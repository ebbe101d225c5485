//! The model's tunables: kernel timeouts it mirrors and its own memory bounds.

const NS_PER_SEC: u64 = 1_000_000_000;
const NS_PER_MS: u64 = 1_000_000;

/// Parameters of the [`Model`](super::Model). The defaults are the kernel's
/// defaults; a caller that can read `/proc/sys/net/ipv4/*` should copy the
/// real values in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    /// How long a socket stays in TIME_WAIT (`TCP_TIMEWAIT_LEN`, fixed at 60 s
    /// in the kernel).
    pub time_wait_secs: u64,
    /// `net.ipv4.tcp_fin_timeout`: how long an orphaned FIN_WAIT2 waits for
    /// the peer's FIN.
    pub fin_timeout_secs: u64,
    /// `net.ipv4.tcp_max_tw_buckets`. The kernel applies it per network
    /// namespace, and so does the model.
    pub max_tw_buckets: usize,
    /// A socket in CLOSE_WAIT for longer than this is reported as a leak:
    /// the peer closed and the program has not closed its end.
    pub close_wait_leak_secs: u64,
    /// How long a time-wait entry is kept past its predicted expiry. The
    /// kernel's timers for long timeouts are coarse and only ever fire late
    /// (by up to about 4 s for 60 s at HZ=1000), so the socket usually still
    /// exists then; `ss` keeps listing it and so do we.
    pub time_wait_grace_ms: u64,
    /// A SYN_SENT→CLOSE after at least this long is a timeout; sooner, the
    /// connection was refused (or abandoned by the program).
    pub syn_timeout_ms: u64,
    /// Live connections kept at most; also bounds the TIME_WAIT table's
    /// memory across all namespaces.
    pub max_connections: usize,
    /// Owner observations kept for sockets not seen yet.
    pub max_pending_owners: usize,
    /// `net.ipv4.tcp_rfc1337`: when set, a time-wait socket ignores a RST
    /// instead of being destroyed by it (RFC 1337 "TIME-WAIT
    /// assassination" protection). Off by default, as in the kernel.
    pub rfc1337: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            time_wait_secs: 60,
            fin_timeout_secs: 60,
            max_tw_buckets: 262_144,
            close_wait_leak_secs: 30,
            time_wait_grace_ms: 5_000,
            syn_timeout_ms: 1_000,
            max_connections: 1 << 20,
            max_pending_owners: 1 << 16,
            rfc1337: false,
        }
    }
}

impl ModelConfig {
    pub fn time_wait_ns(&self) -> u64 {
        self.time_wait_secs.saturating_mul(NS_PER_SEC)
    }

    pub fn fin_timeout_ns(&self) -> u64 {
        self.fin_timeout_secs.saturating_mul(NS_PER_SEC)
    }

    pub fn close_wait_leak_ns(&self) -> u64 {
        self.close_wait_leak_secs.saturating_mul(NS_PER_SEC)
    }

    pub fn time_wait_grace_ns(&self) -> u64 {
        self.time_wait_grace_ms.saturating_mul(1_000_000)
    }

    pub fn syn_timeout_ns(&self) -> u64 {
        self.syn_timeout_ms.saturating_mul(NS_PER_MS)
    }
}

//! Resets this host sent, and the time-wait sockets they destroy.
//!
//! A time-wait socket is freed without any state transition on the
//! tracepoint, so the only sign that a RST killed one is the RST itself:
//!
//! - a time-wait socket that answers a segment with a RST (the kernel's
//!   TCP_TW_RST verdict) is destroyed at once;
//! - a time-wait socket that receives a RST is destroyed too ("TIME-WAIT
//!   assassination", RFC 1337) unless `net.ipv4.tcp_rfc1337` is set. Under
//!   churn a listener can answer a late segment of a connection that already
//!   closed (the established lookup races with the socket's removal), and
//!   on loopback that RST reaches the peer's time-wait socket.
use crate::{addr::Endpoint, tcp::TcpState};

/// A RST this host sent in response to a segment from `segment_src` to
/// `segment_dst`. The RST itself travels from `segment_dst` to
/// `segment_src`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetSeen {
    /// Nanoseconds since boot (CLOCK_BOOTTIME).
    pub ts_boot_ns: u64,
    /// The network namespace of the sender; 0 when unknown.
    pub netns: u32,
    pub segment_src: Endpoint,
    pub segment_dst: Endpoint,
    /// The state of the socket that sent the RST (Listen, TimeWait, ...);
    /// None when no socket matched the segment.
    pub sender_state: Option<TcpState>,
}

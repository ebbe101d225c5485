//! `struct tcp_info` (`include/uapi/linux/tcp.h`), as sock_diag returns it
//! in the `INET_DIAG_INFO` attribute: the kernel's own view of a connection
//! (timers, unacknowledged data, retransmissions, time since the last
//! packet). Decoded by length: older kernels send a shorter struct, so each
//! field past the 104 bytes every supported kernel has is optional.
//! Copied out field by field with `from_ne_bytes`, never cast in place.

/// The fields tcpstate uses. Times are milliseconds before the dump.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpInfo {
    /// `tcpi_state`.
    pub state: u8,
    /// `tcpi_retransmits`: retransmission timeouts in a row without an
    /// acknowledgement (reset when the peer answers).
    pub retransmits: u8,
    /// `tcpi_probes`: zero-window or keepalive probes sent without answer.
    pub probes: u8,
    /// `tcpi_backoff`: exponential backoff of the retransmission timer.
    pub backoff: u8,
    /// `tcpi_rto` in microseconds.
    pub rto_us: u32,
    /// `tcpi_unacked`: segments sent and not acknowledged.
    pub unacked: u32,
    /// `tcpi_last_data_sent`.
    pub last_data_sent_ms: u32,
    /// `tcpi_last_data_recv`: since the peer last sent data.
    pub last_data_recv_ms: u32,
    /// `tcpi_last_ack_recv`: since the peer last sent anything we accepted
    /// (any segment acknowledging our data, a keepalive answer, its FIN).
    pub last_ack_recv_ms: u32,
    /// `tcpi_total_retrans`: segments retransmitted over the connection's
    /// life.
    pub total_retrans: u32,
    /// `tcpi_snd_wnd` (Linux 5.4+): the window the peer advertises.
    pub snd_wnd: Option<u32>,
}

/// `sizeof(struct tcp_info)` up to `tcpi_total_retrans` (Linux 2.6).
pub const TCP_INFO_MIN_LEN: usize = 104;
const SND_WND_AT: usize = 228;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl TcpInfo {
    /// None when `bytes` is shorter than the oldest layout.
    pub fn decode(bytes: &[u8]) -> Option<TcpInfo> {
        if bytes.len() < TCP_INFO_MIN_LEN {
            return None;
        }
        Some(TcpInfo {
            state: bytes[0],
            retransmits: bytes[2],
            probes: bytes[3],
            backoff: bytes[4],
            rto_us: u32_at(bytes, 8)?,
            unacked: u32_at(bytes, 24)?,
            last_data_sent_ms: u32_at(bytes, 44)?,
            last_data_recv_ms: u32_at(bytes, 52)?,
            last_ack_recv_ms: u32_at(bytes, 56)?,
            total_retrans: u32_at(bytes, 100)?,
            snd_wnd: u32_at(bytes, SND_WND_AT),
        })
    }

    /// The struct as a kernel of the given length would send it (tests).
    #[cfg(test)]
    pub fn encode(&self, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len.max(SND_WND_AT + 4)];
        b[0] = self.state;
        b[2] = self.retransmits;
        b[3] = self.probes;
        b[4] = self.backoff;
        for (at, v) in [
            (8, self.rto_us),
            (24, self.unacked),
            (44, self.last_data_sent_ms),
            (52, self.last_data_recv_ms),
            (56, self.last_ack_recv_ms),
            (100, self.total_retrans),
            (SND_WND_AT, self.snd_wnd.unwrap_or(0)),
        ] {
            b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        }
        b.truncate(len);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TcpInfo {
        TcpInfo {
            state: 1,
            retransmits: 3,
            probes: 0,
            backoff: 3,
            rto_us: 1_600_000,
            unacked: 2,
            last_data_sent_ms: 10,
            last_data_recv_ms: 9_000,
            last_ack_recv_ms: 8_000,
            total_retrans: 5,
            snd_wnd: Some(65_535),
        }
    }

    #[test]
    fn decodes_the_current_layout() {
        let info = sample();
        assert_eq!(TcpInfo::decode(&info.encode(248)), Some(info));
    }

    #[test]
    fn older_kernels_lack_the_window() {
        let info = sample();
        let old = TcpInfo::decode(&info.encode(TCP_INFO_MIN_LEN)).unwrap();
        assert_eq!(old.snd_wnd, None);
        assert_eq!(old.total_retrans, 5);
        assert_eq!(
            TcpInfo::decode(&info.encode(SND_WND_AT + 3))
                .unwrap()
                .snd_wnd,
            None
        );
    }

    #[test]
    fn short_or_garbage_input_never_panics() {
        for len in 0..TCP_INFO_MIN_LEN {
            assert_eq!(TcpInfo::decode(&vec![0xff; len]), None);
        }
        for len in TCP_INFO_MIN_LEN..300 {
            let info = TcpInfo::decode(&vec![0xff; len]).unwrap();
            assert_eq!(info.unacked, u32::MAX);
        }
    }
}

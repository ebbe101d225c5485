//! TCP states and socket families as the kernel numbers them.
use std::{fmt, str::FromStr};

/// A TCP state (`include/net/tcp_states.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TcpState {
    Established = 1,
    SynSent = 2,
    SynRecv = 3,
    FinWait1 = 4,
    FinWait2 = 5,
    TimeWait = 6,
    Close = 7,
    CloseWait = 8,
    LastAck = 9,
    Listen = 10,
    Closing = 11,
    NewSynRecv = 12,
}

impl TcpState {
    pub const ALL: [TcpState; 12] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
        TcpState::NewSynRecv,
    ];

    pub fn from_raw(raw: u8) -> Option<Self> {
        Self::ALL.get(usize::from(raw).checked_sub(1)?).copied()
    }

    /// The name `ss` and `netstat` use, without the `TCP_` prefix.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
            TcpState::NewSynRecv => "NEW_SYN_RECV",
        }
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown TCP state `{0}` (expected one of ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT1, FIN_WAIT2, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK, LISTEN, CLOSING, NEW_SYN_RECV)")]
pub struct UnknownState(pub String);

impl FromStr for TcpState {
    type Err = UnknownState;

    /// Accepts `ESTABLISHED`, `established`, `TCP_ESTABLISHED`, and the
    /// spellings with a dash (`fin-wait1`) that `ss` uses.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase().replace('-', "_");
        let bare = upper.strip_prefix("TCP_").unwrap_or(&upper);
        let bare = match bare {
            "FIN_WAIT_1" => "FIN_WAIT1",
            "FIN_WAIT_2" => "FIN_WAIT2",
            "CLOSED" => "CLOSE",
            other => other,
        };
        Self::ALL
            .into_iter()
            .find(|state| state.name() == bare)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

/// Address family of the socket (not of the addresses shown: an IPv6 socket
/// talking to an IPv4-mapped peer is `Ipv6`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn from_raw(raw: u16) -> Option<Self> {
        match raw {
            tcpstate_common::AF_INET => Some(Family::Ipv4),
            tcpstate_common::AF_INET6 => Some(Family::Ipv6),
            _ => None,
        }
    }

    pub fn raw(self) -> u16 {
        match self {
            Family::Ipv4 => tcpstate_common::AF_INET,
            Family::Ipv6 => tcpstate_common::AF_INET6,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_raw_and_names() {
        for state in TcpState::ALL {
            assert_eq!(TcpState::from_raw(state as u8), Some(state));
            assert_eq!(state.name().parse::<TcpState>(), Ok(state));
        }
        assert_eq!(TcpState::from_raw(0), None);
        assert_eq!(TcpState::from_raw(13), None);
        assert_eq!(TcpState::from_raw(255), None);
    }

    #[test]
    fn state_parsing_accepts_common_spellings() {
        assert_eq!("tcp_time_wait".parse(), Ok(TcpState::TimeWait));
        assert_eq!("close-wait".parse(), Ok(TcpState::CloseWait));
        assert_eq!("fin-wait-1".parse(), Ok(TcpState::FinWait1));
        assert_eq!("closed".parse(), Ok(TcpState::Close));
        assert!("TIME WAIT".parse::<TcpState>().is_err());
        assert!("".parse::<TcpState>().is_err());
    }
}

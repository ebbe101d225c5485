//! Which addresses the churn uses: listeners on several addresses, clients
//! bound to many source addresses, so that 4-tuples (and ports) never run
//! out even with tens of thousands of sockets in TIME_WAIT.
//!
//! - loopback: listeners on 127.0.0.2, 127.0.0.3, ...; sources 127.1.0.1, ...
//!   (all of 127.0.0.0/8 is local, nothing to configure).
//! - namespaces: listeners on 198.18.0.1, ...; sources 198.19.0.1, ...
//!   (RFC 2544 benchmarking range), configured on the veth pair by whoever
//!   made the namespaces (`cargo xtask bench --netns`).
use std::net::Ipv4Addr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Loopback,
    Netns,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Loopback => "loopback",
            Mode::Netns => "netns",
        }
    }
}

fn offset(base: Ipv4Addr, n: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + n as u32)
}

/// The address of listener `i` (0-based).
pub fn listener(mode: Mode, i: usize) -> Ipv4Addr {
    match mode {
        Mode::Loopback => offset(Ipv4Addr::new(127, 0, 0, 2), i),
        Mode::Netns => offset(Ipv4Addr::new(198, 18, 0, 1), i),
    }
}

/// The source address `j` (0-based) of the clients.
pub fn source(mode: Mode, j: usize) -> Ipv4Addr {
    match mode {
        Mode::Loopback => offset(Ipv4Addr::new(127, 1, 0, 1), j),
        Mode::Netns => offset(Ipv4Addr::new(198, 19, 0, 1), j),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_stay_in_their_ranges() {
        assert_eq!(listener(Mode::Loopback, 0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(
            source(Mode::Loopback, 59_999),
            Ipv4Addr::new(127, 1, 234, 96)
        );
        assert_eq!(listener(Mode::Netns, 249), Ipv4Addr::new(198, 18, 0, 250));
        assert_eq!(source(Mode::Netns, 300), Ipv4Addr::new(198, 19, 1, 45));
    }
}

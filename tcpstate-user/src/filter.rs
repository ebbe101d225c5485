//! Transition filters from the command line (`--port`, `--laddr`, ...).
//!
//! Port and family filters are also pushed into the kernel, so unwanted
//! transitions never cost a ring-buffer slot; the userspace check is the
//! reference and is applied to every source (live or recorded).
use crate::{
    tcp::{Family, TcpState},
    wire::Transition,
};
use std::{net::IpAddr, str::FromStr};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("bad address `{0}`: expected an IP (127.0.0.1, ::1), IP:port (127.0.0.1:80, [::1]:80) or a network (10.0.0.0/8, fd00::/8)")]
    Address(String),
    #[error("bad family `{0}`: expected ipv4 (4, inet) or ipv6 (6, inet6)")]
    Family(String),
    #[error("bad network namespace {0}: expected an inode number, a name from `ip netns list`, or a path like /proc/PID/ns/net")]
    Netns(String),
    #[error("bad cgroup {0}: expected a cgroup id or a path under /sys/fs/cgroup")]
    Cgroup(String),
}

/// An address filter: a network with an optional port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrFilter {
    pub network: IpAddr,
    pub prefix_len: u8,
    pub port: Option<u16>,
}

impl AddrFilter {
    pub fn matches(&self, ip: IpAddr, port: u16) -> bool {
        if self.port.is_some_and(|want| want != port) {
            return false;
        }
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix_len)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix_len)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let bits = usize::from(bits);
    let whole = bits / 8;
    if a[..whole] != b[..whole] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

impl FromStr for AddrFilter {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || FilterError::Address(s.to_string());
        let text = s.trim();
        if let Some((net, len)) = text.split_once('/') {
            let network: IpAddr = net.parse().map_err(|_| bad())?;
            let max = if network.is_ipv4() { 32 } else { 128 };
            let prefix_len: u8 = len.parse().map_err(|_| bad())?;
            if prefix_len > max {
                return Err(bad());
            }
            return Ok(AddrFilter {
                network: canonical(network),
                prefix_len,
                port: None,
            });
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(AddrFilter::host(ip, None));
        }
        let sock: std::net::SocketAddr = text.parse().map_err(|_| bad())?;
        Ok(AddrFilter::host(sock.ip(), Some(sock.port())))
    }
}

impl AddrFilter {
    fn host(ip: IpAddr, port: Option<u16>) -> Self {
        let ip = canonical(ip);
        AddrFilter {
            network: ip,
            prefix_len: if ip.is_ipv4() { 32 } else { 128 },
            port,
        }
    }
}

/// Filters compare against addresses as they are displayed, so an
/// IPv4-mapped IPv6 filter means the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

pub fn parse_family(s: &str) -> Result<Family, FilterError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "ipv4" | "4" | "inet" | "v4" => Ok(Family::Ipv4),
        "ipv6" | "6" | "inet6" | "v6" => Ok(Family::Ipv6),
        _ => Err(FilterError::Family(s.to_string())),
    }
}

/// All filters of one command; a transition passes when it passes each one
/// that is set. Several `--port` (or `--state`, ...) values are alternatives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Local or remote port.
    pub ports: Vec<u16>,
    pub laddrs: Vec<AddrFilter>,
    pub raddrs: Vec<AddrFilter>,
    /// Old or new state.
    pub states: Vec<TcpState>,
    pub family: Option<Family>,
    /// Network namespace inodes.
    pub netns: Vec<u32>,
    /// cgroup v2 ids of the owner.
    pub cgroups: Vec<u64>,
}

/// `--netns`: an inode number, a name under /run/netns (`ip netns`), or a
/// path to a namespace file (`/proc/PID/ns/net`).
pub fn parse_netns(s: &str) -> Result<u32, FilterError> {
    use std::os::unix::fs::MetadataExt;
    if let Ok(inode) = s.parse::<u32>() {
        return Ok(inode);
    }
    let path = if s.contains('/') {
        std::path::PathBuf::from(s)
    } else {
        std::path::Path::new("/run/netns").join(s)
    };
    std::fs::metadata(&path)
        .map(|m| m.ino() as u32)
        .map_err(|e| FilterError::Netns(format!("{s}: {e}")))
}

/// `--cgroup`: a cgroup v2 id, or a path under /sys/fs/cgroup (with or
/// without that prefix) whose directory's inode is the id.
pub fn parse_cgroup(s: &str) -> Result<u64, FilterError> {
    use std::os::unix::fs::MetadataExt;
    if let Ok(id) = s.parse::<u64>() {
        return Ok(id);
    }
    let relative = s
        .trim_start_matches("/sys/fs/cgroup")
        .trim_start_matches('/');
    let path = std::path::Path::new("/sys/fs/cgroup").join(relative);
    std::fs::metadata(&path)
        .map(|m| m.ino())
        .map_err(|e| FilterError::Cgroup(format!("{s}: {e}")))
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    pub fn matches(&self, t: &Transition) -> bool {
        (self.ports.is_empty()
            || self
                .ports
                .iter()
                .any(|&p| p == t.local.port || p == t.remote.port))
            && (self.laddrs.is_empty()
                || self
                    .laddrs
                    .iter()
                    .any(|f| f.matches(t.local.ip, t.local.port)))
            && (self.raddrs.is_empty()
                || self
                    .raddrs
                    .iter()
                    .any(|f| f.matches(t.remote.ip, t.remote.port)))
            && (self.states.is_empty() || self.states.iter().any(|&s| s == t.old || s == t.new))
            && self.family.is_none_or(|f| f == t.family)
            && (self.netns.is_empty() || self.netns.contains(&t.netns))
    }

    /// The owner filter (`--cgroup`): the transition's task is only the
    /// context, so this is checked against the owner the model knows.
    pub fn matches_owner(&self, owner: Option<&crate::model::Owner>) -> bool {
        self.cgroups.is_empty() || owner.is_some_and(|o| self.cgroups.contains(&o.cgroup_id))
    }

    /// The filters that apply to a whole connection (addresses, ports,
    /// namespace, owner's cgroup), for views of connections.
    pub fn matches_connection(&self, c: &crate::model::Connection) -> bool {
        self.matches_endpoints(&c.local, &c.remote)
            && (self.netns.is_empty() || self.netns.contains(&c.netns))
            && self.matches_owner(c.owner().as_ref())
    }

    /// The address and port filters alone.
    pub fn matches_endpoints(
        &self,
        local: &crate::addr::Endpoint,
        remote: &crate::addr::Endpoint,
    ) -> bool {
        (self.ports.is_empty()
            || self
                .ports
                .iter()
                .any(|&p| p == local.port || p == remote.port))
            && (self.laddrs.is_empty()
                || self.laddrs.iter().any(|f| f.matches(local.ip, local.port)))
            && (self.raddrs.is_empty()
                || self
                    .raddrs
                    .iter()
                    .any(|f| f.matches(remote.ip, remote.port)))
    }

    /// The filters that are properties of the socket itself (ports,
    /// addresses, family, namespace), which a transition carries. The
    /// pipeline applies them at its source, to traced and snapshot sockets
    /// alike, so every command means the same by them.
    pub fn matches_socket(
        &self,
        family: Family,
        local: &crate::addr::Endpoint,
        remote: &crate::addr::Endpoint,
        netns: u32,
    ) -> bool {
        self.matches_endpoints(local, remote)
            && self.family.is_none_or(|f| f == family)
            && (self.netns.is_empty() || self.netns.contains(&netns))
    }

    /// A socket of the start-up snapshot: the socket filters, and the
    /// owner's cgroup (its owner is known at once).
    pub fn matches_existing(&self, socket: &crate::model::ExistingSocket) -> bool {
        self.matches_socket(socket.family, &socket.local, &socket.remote, socket.netns)
            && self.matches_owner(socket.owner.as_ref())
    }

    /// The single port the kernel can filter on, when exactly one is given.
    pub fn kernel_port(&self) -> Option<u16> {
        match self.ports.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{self, ep};
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Socket 1 at time 0 between two endpoints, its family theirs.
    fn transition(local: &str, remote: &str, old: TcpState, new: TcpState) -> Transition {
        let local = ep(local);
        let family = if local.ip.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        };
        Transition {
            family,
            local,
            remote: ep(remote),
            ..testkit::transition(0, 1, old, new)
        }
    }

    #[test]
    fn parses_addresses_ports_and_networks() {
        let f: AddrFilter = "127.0.0.1".parse().unwrap();
        assert_eq!((f.prefix_len, f.port), (32, None));
        let f: AddrFilter = "[::1]:8080".parse().unwrap();
        assert_eq!(
            (f.network, f.prefix_len, f.port),
            (IpAddr::V6(Ipv6Addr::LOCALHOST), 128, Some(8080))
        );
        let f: AddrFilter = "10.1.0.0/16".parse().unwrap();
        assert!(f.matches(IpAddr::V4(Ipv4Addr::new(10, 1, 200, 3)), 1));
        assert!(!f.matches(IpAddr::V4(Ipv4Addr::new(10, 2, 0, 1)), 1));
        let f: AddrFilter = "10.0.0.0/9".parse().unwrap();
        assert!(f.matches(IpAddr::V4(Ipv4Addr::new(10, 127, 0, 1)), 1));
        assert!(!f.matches(IpAddr::V4(Ipv4Addr::new(10, 128, 0, 1)), 1));
        let f: AddrFilter = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(f.network, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    }

    #[test]
    fn rejects_bad_addresses() {
        for bad in [
            "",
            "localhost",
            "1.2.3.4/33",
            "::/129",
            "1.2.3.4:99999",
            "1.2.3/8",
            "1.2.3.4/x",
        ] {
            assert!(bad.parse::<AddrFilter>().is_err(), "{bad} was accepted");
        }
        let err = "nope".parse::<AddrFilter>().unwrap_err().to_string();
        assert!(err.contains("`nope`") && err.contains("IP:port"), "{err}");
    }

    #[test]
    fn parses_families() {
        assert_eq!(parse_family("IPv4"), Ok(Family::Ipv4));
        assert_eq!(parse_family("6"), Ok(Family::Ipv6));
        assert!(parse_family("ipx").is_err());
    }

    #[test]
    fn combines_filters() {
        let t = transition(
            "127.0.0.1:40000",
            "127.0.0.1:8080",
            TcpState::SynSent,
            TcpState::Established,
        );
        assert!(Filter::default().matches(&t));
        let by_port = Filter {
            ports: vec![8080],
            ..Filter::default()
        };
        assert!(by_port.matches(&t));
        assert_eq!(by_port.kernel_port(), Some(8080));
        let other_port = Filter {
            ports: vec![9],
            ..Filter::default()
        };
        assert!(!other_port.matches(&t));
        let by_state = Filter {
            states: vec![TcpState::SynSent],
            ..Filter::default()
        };
        assert!(by_state.matches(&t));
        let wrong_state = Filter {
            states: vec![TcpState::TimeWait],
            ..Filter::default()
        };
        assert!(!wrong_state.matches(&t));
        let v6 = Filter {
            family: Some(Family::Ipv6),
            ..Filter::default()
        };
        assert!(!v6.matches(&t));
        let raddr = Filter {
            raddrs: vec!["127.0.0.1:8080".parse().unwrap()],
            ..Filter::default()
        };
        assert!(raddr.matches(&t));
        let laddr_wrong_port = Filter {
            laddrs: vec!["127.0.0.1:8080".parse().unwrap()],
            ..Filter::default()
        };
        assert!(!laddr_wrong_port.matches(&t));
        let two_ports = Filter {
            ports: vec![1, 2],
            ..Filter::default()
        };
        assert_eq!(two_ports.kernel_port(), None);
    }
}

//! Socket addresses as the tracepoint reports them, and how we print them.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// Converts the tracepoint's 16-byte address into an `IpAddr`. IPv4-mapped
/// IPv6 addresses (`::ffff:a.b.c.d`, which the tracepoint uses for IPv4
/// sockets and which dual-stack IPv6 sockets use for IPv4 peers) become IPv4.
pub fn ip_from_wire(bytes: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// An address and port, printed `1.2.3.4:80` or `[::1]:80`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
}

impl Endpoint {
    pub fn new(ip: IpAddr, port: u16) -> Self {
        Self { ip, port }
    }

    /// Integers that sort as `Endpoint`s do (IPv4 first, then address
    /// bytes, then port): sorting tens of thousands of TIME_WAIT
    /// destinations for each report compares these much faster.
    pub fn sort_key(&self) -> (bool, u128, u16) {
        let (v6, bits) = match self.ip {
            IpAddr::V4(ip) => (false, u128::from(ip.to_bits())),
            IpAddr::V6(ip) => (true, ip.to_bits()),
        };
        (v6, bits, self.port)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Padding needs the whole text first; without it (`to_string`, one
        // per TIME_WAIT destination in `stat`), write it out directly.
        if f.width().is_none() && f.precision().is_none() {
            return match self.ip {
                // By hand: core's formatting took about 1,200 instructions
                // per IPv4 endpoint, most of a `stat` report's cost.
                IpAddr::V4(ip) => f.write_str(V4Text::new(ip, self.port).as_str()),
                IpAddr::V6(ip) => write!(f, "[{ip}]:{}", self.port),
            };
        }
        let text = match self.ip {
            IpAddr::V4(ip) => format!("{ip}:{}", self.port),
            IpAddr::V6(ip) => format!("[{ip}]:{}", self.port),
        };
        f.pad(&text)
    }
}

/// `a.b.c.d:port`, written into a fixed buffer.
struct V4Text {
    buf: [u8; 21],
    len: usize,
}

impl V4Text {
    fn new(ip: Ipv4Addr, port: u16) -> Self {
        let mut text = V4Text {
            buf: [0; 21],
            len: 0,
        };
        for (i, octet) in ip.octets().into_iter().enumerate() {
            if i > 0 {
                text.push(b'.');
            }
            text.push_decimal(u32::from(octet));
        }
        text.push(b':');
        text.push_decimal(u32::from(port));
        text
    }

    fn push(&mut self, byte: u8) {
        self.buf[self.len] = byte;
        self.len += 1;
    }

    fn push_decimal(&mut self, mut n: u32) {
        let mut digits = [0u8; 5];
        let mut count = 0;
        loop {
            digits[count] = b'0' + (n % 10) as u8;
            count += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for d in digits[..count].iter().rev() {
            self.push(*d);
        }
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits, dots and a colon were pushed.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn mapped_ipv4_is_shown_as_ipv4() {
        let mapped = Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped().octets();
        assert_eq!(ip_from_wire(mapped), IpAddr::V4(Ipv4Addr::LOCALHOST));
        let ep = Endpoint::new(ip_from_wire(mapped), 8080);
        assert_eq!(ep.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn ipv4_by_hand_is_as_core_prints_it() {
        let values = [0u8, 1, 9, 10, 99, 100, 127, 199, 200, 255];
        let ports = [0u16, 7, 10, 99, 100, 999, 1000, 9999, 10000, 65535];
        for (i, a) in values.iter().enumerate() {
            for b in values {
                let ip = Ipv4Addr::new(*a, b, values[(i + 3) % 10], 255 - b);
                for port in ports {
                    let ep = Endpoint::new(IpAddr::V4(ip), port);
                    assert_eq!(ep.to_string(), format!("{ip}:{port}"));
                }
            }
        }
    }

    #[test]
    fn sort_key_orders_as_endpoints_do() {
        let ips: [IpAddr; 6] = [
            Ipv4Addr::new(10, 0, 0, 1).into(),
            Ipv4Addr::new(9, 255, 255, 255).into(),
            Ipv4Addr::new(255, 0, 0, 0).into(),
            Ipv6Addr::LOCALHOST.into(),
            "2001:db8::1".parse::<Ipv6Addr>().unwrap().into(),
            "fe80::1".parse::<Ipv6Addr>().unwrap().into(),
        ];
        let all: Vec<Endpoint> = ips
            .iter()
            .flat_map(|ip| [0, 80, 443, 65535].map(|port| Endpoint::new(*ip, port)))
            .collect();
        for a in &all {
            for b in &all {
                assert_eq!(a.sort_key().cmp(&b.sort_key()), a.cmp(b), "{a} {b}");
            }
        }
    }

    #[test]
    fn width_pads_the_whole_endpoint() {
        let v4 = Endpoint::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 80);
        assert_eq!(
            format!("{v4:<15}|{v4:>14}|{v4}"),
            "127.0.0.1:80   |  127.0.0.1:80|127.0.0.1:80"
        );
        let v6 = Endpoint::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 1);
        assert_eq!(format!("{v6:>8}|{v6:.3}"), " [::1]:1|[::");
    }

    #[test]
    fn ipv6_is_bracketed_and_compressed() {
        let ep = Endpoint::new(ip_from_wire(Ipv6Addr::LOCALHOST.octets()), 443);
        assert_eq!(ep.to_string(), "[::1]:443");
        let doc: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            Endpoint::new(ip_from_wire(doc.octets()), 1).to_string(),
            "[2001:db8::1]:1"
        );
    }

    #[test]
    fn unspecified_and_ipv4_compatible_stay_ipv6() {
        // `::` (an unbound socket) and the deprecated `::a.b.c.d` form are not
        // mapped addresses and must not be rewritten.
        assert_eq!(ip_from_wire([0; 16]).to_string(), "::");
        let mut compat = [0u8; 16];
        compat[12..].copy_from_slice(&[10, 0, 0, 1]);
        assert!(ip_from_wire(compat).is_ipv6());
    }

    #[test]
    fn endpoint_honours_width() {
        let ep = Endpoint::new(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)), 5);
        assert_eq!(format!("{ep:<12}|"), "1.2.3.4:5   |");
    }
}

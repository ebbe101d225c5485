//! The host's TCP settings that decide how long TIME_WAIT lasts and how many
//! time-wait sockets the kernel keeps. Read once at start.
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSysctls {
    pub fin_timeout_secs: u64,
    pub max_tw_buckets: usize,
    pub tw_reuse: u32,
    pub local_port_range: (u16, u16),
    /// When set, a RST does not destroy a time-wait socket (RFC 1337).
    pub rfc1337: bool,
}

impl Default for TcpSysctls {
    /// The kernel's defaults.
    fn default() -> Self {
        Self {
            fin_timeout_secs: 60,
            max_tw_buckets: 262_144,
            tw_reuse: 2,
            local_port_range: (32768, 60999),
            rfc1337: false,
        }
    }
}

fn read(root: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(root.join(name)).ok()
}

impl TcpSysctls {
    /// Reads `/proc/sys/net/ipv4/*`; a value that cannot be read keeps the
    /// kernel default (and is logged).
    pub fn read() -> Self {
        Self::read_from(Path::new("/proc/sys/net/ipv4"))
    }

    pub fn read_from(root: &Path) -> Self {
        let mut out = Self::default();
        let number = |name: &str| -> Option<u64> {
            let value = read(root, name).and_then(|s| s.trim().parse().ok());
            if value.is_none() {
                log::warn!("cannot read net.ipv4.{name}: using the kernel default");
            }
            value
        };
        if let Some(v) = number("tcp_fin_timeout") {
            out.fin_timeout_secs = v;
        }
        if let Some(v) = number("tcp_max_tw_buckets") {
            out.max_tw_buckets = v as usize;
        }
        if let Some(v) = number("tcp_tw_reuse") {
            out.tw_reuse = v as u32;
        }
        if let Some(v) = number("tcp_rfc1337") {
            out.rfc1337 = v != 0;
        }
        if let Some(range) = read(root, "ip_local_port_range") {
            let mut parts = range
                .split_whitespace()
                .filter_map(|p| p.parse::<u16>().ok());
            if let (Some(low), Some(high)) = (parts.next(), parts.next()) {
                out.local_port_range = (low, high);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_values_and_keeps_defaults_for_missing_ones() {
        let dir = std::env::temp_dir().join(format!("tcpstate-sysctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tcp_fin_timeout"), "30\n").unwrap();
        std::fs::write(dir.join("ip_local_port_range"), "1024\t65000\n").unwrap();
        std::fs::write(dir.join("tcp_max_tw_buckets"), "garbage").unwrap();
        let got = TcpSysctls::read_from(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got.fin_timeout_secs, 30);
        assert_eq!(got.local_port_range, (1024, 65000));
        assert_eq!(got.max_tw_buckets, 262_144);
        assert_eq!(got.tw_reuse, 2);
    }
}

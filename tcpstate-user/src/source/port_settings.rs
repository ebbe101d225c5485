//! The settings that decide which local ports `connect()` may pick, per
//! network namespace: `net.ipv4.ip_local_port_range`,
//! `net.ipv4.ip_local_reserved_ports` and `net.ipv4.tcp_tw_reuse` (all three
//! are per namespace, and apply to IPv6 too).
//!
//! Read once at start, before privileges are dropped: each namespace in use
//! (any process's `/proc/PID/ns/net`, and the named ones under `/run/netns`)
//! is entered from a dedicated thread with `setns()`, since `/proc/sys/net`
//! shows the namespace of the task that reads it.
use std::path::Path;

use super::netns;

/// What `connect()` may use in one network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSettings {
    /// `ip_local_port_range`, inclusive, low first.
    pub range: (u16, u16),
    /// `ip_local_reserved_ports`: inclusive ranges, as the kernel lists them.
    pub reserved: Vec<(u16, u16)>,
    /// `tcp_tw_reuse`: 0 off, 1 on, 2 loopback only (the default).
    pub tw_reuse: u32,
}

impl Default for PortSettings {
    /// The kernel's defaults.
    fn default() -> Self {
        Self {
            range: (32768, 60999),
            reserved: Vec::new(),
            tw_reuse: 2,
        }
    }
}

/// The settings of one namespace, by its inode (the number transitions carry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetnsPorts {
    pub netns: u32,
    pub settings: PortSettings,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortSettingsError {
    #[error("bad ip_local_port_range {0:?}: expected two port numbers")]
    Range(String),
    #[error("bad ip_local_reserved_ports {0:?}: expected ports and ranges separated by commas")]
    Reserved(String),
}

/// Parses `ip_local_port_range` ("32768\t60999").
pub fn parse_range(text: &str) -> Result<(u16, u16), PortSettingsError> {
    let bad = || PortSettingsError::Range(text.trim().to_string());
    let mut parts = text.split_whitespace().map(|p| p.parse::<u16>());
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b)), None) => Ok((a.min(b), a.max(b))),
        _ => Err(bad()),
    }
}

/// Parses `ip_local_reserved_ports` ("8080,9000-9009", or empty).
pub fn parse_reserved(text: &str) -> Result<Vec<(u16, u16)>, PortSettingsError> {
    let bad = || PortSettingsError::Reserved(text.trim().to_string());
    let mut out = Vec::new();
    for item in text.trim().split(',').filter(|s| !s.trim().is_empty()) {
        let (low, high) = match item.trim().split_once('-') {
            Some((a, b)) => (a.trim().parse(), b.trim().parse()),
            None => (item.trim().parse(), item.trim().parse()),
        };
        match (low, high) {
            (Ok(low), Ok(high)) if low <= high => out.push((low, high)),
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

impl PortSettings {
    /// Reads the three files under `root` (normally `/proc/sys/net/ipv4`);
    /// what cannot be read or parsed keeps the kernel default, with a warning.
    pub fn read_from(root: &Path) -> Self {
        let mut out = Self::default();
        let read = |name: &str| std::fs::read_to_string(root.join(name));
        match read("ip_local_port_range").map(|t| parse_range(&t)) {
            Ok(Ok(range)) => out.range = range,
            Ok(Err(e)) => log::warn!("{e}: using the kernel default"),
            Err(e) => log::warn!("cannot read ip_local_port_range: {e}: using the kernel default"),
        }
        match read("ip_local_reserved_ports").map(|t| parse_reserved(&t)) {
            Ok(Ok(reserved)) => out.reserved = reserved,
            Ok(Err(e)) => log::warn!("{e}: taken as none"),
            Err(e) => log::warn!("cannot read ip_local_reserved_ports: {e}: taken as none"),
        }
        match read("tcp_tw_reuse").map(|t| t.trim().parse::<u32>()) {
            Ok(Ok(v)) => out.tw_reuse = v,
            _ => log::warn!("cannot read tcp_tw_reuse: using the kernel default"),
        }
        out
    }
}

/// The settings of every namespace in use now. Needs `CAP_SYS_ADMIN` to
/// enter the others; a namespace that cannot be entered is left out (its
/// sockets are then shown with the defaults, marked as assumed).
pub fn capture() -> Vec<NetnsPorts> {
    let own = crate::source::snapshot::current_netns();
    let read = || PortSettings::read_from(Path::new("/proc/sys/net/ipv4"));
    let mut out = vec![NetnsPorts {
        netns: own,
        settings: read(),
    }];
    for (netns, path) in netns::in_use().into_iter().filter(|(n, _)| *n != own) {
        match netns::run_in(netns, path, read) {
            Ok(settings) => out.push(NetnsPorts { netns, settings }),
            Err(e) => log::info!("port settings: {e}"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_in_either_order() {
        assert_eq!(parse_range("32768\t60999\n"), Ok((32768, 60999)));
        assert_eq!(parse_range("40099 40000"), Ok((40000, 40099)));
    }

    #[test]
    fn refuses_hostile_ranges() {
        for text in ["", "1", "1 2 3", "a b", "70000 1", "-1 5"] {
            assert!(parse_range(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn parses_reserved_ports() {
        assert_eq!(parse_reserved("\n"), Ok(vec![]));
        assert_eq!(
            parse_reserved("8080,40010-40019\n"),
            Ok(vec![(8080, 8080), (40010, 40019)])
        );
    }

    #[test]
    fn refuses_hostile_reserved_ports() {
        for text in ["x", "5-", "9-1", "1,,a", "65536", "1-2-3"] {
            assert!(parse_reserved(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn reads_files_and_keeps_defaults_for_missing_ones() {
        let dir = std::env::temp_dir().join(format!("tcpstate-ports-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ip_local_port_range"), "40000\t40099\n").unwrap();
        std::fs::write(dir.join("ip_local_reserved_ports"), "40000-40009\n").unwrap();
        let read = PortSettings::read_from(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            read,
            PortSettings {
                range: (40000, 40099),
                reserved: vec![(40000, 40009)],
                tw_reuse: 2,
            }
        );
    }
}

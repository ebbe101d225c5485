//! The sysctls the usual TCP advice is about (`doctor`), and the kernel
//! release that decides what they mean. Read from `/proc/sys`; a value that
//! cannot be read is `None` (shown as null), never a guess.
use serde::Serialize;
use std::path::Path;

/// The values, named as `sysctl` names them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DoctorSysctls {
    #[serde(rename = "net.ipv4.tcp_tw_reuse")]
    pub tw_reuse: Option<u32>,
    /// Milliseconds a time-wait socket must have lived before tcp_tw_reuse
    /// may take its port; the sysctl exists on recent kernels only (1 s,
    /// fixed, before it).
    #[serde(
        rename = "net.ipv4.tcp_tw_reuse_delay",
        skip_serializing_if = "Option::is_none"
    )]
    pub tw_reuse_delay_ms: Option<u64>,
    #[serde(rename = "net.ipv4.tcp_timestamps")]
    pub timestamps: Option<u32>,
    #[serde(rename = "net.ipv4.tcp_max_tw_buckets")]
    pub max_tw_buckets: Option<u64>,
    #[serde(rename = "net.ipv4.ip_local_port_range")]
    pub local_port_range: Option<(u16, u16)>,
    #[serde(rename = "net.ipv4.tcp_fin_timeout")]
    pub fin_timeout: Option<u64>,
    #[serde(rename = "net.ipv4.tcp_keepalive_time")]
    pub keepalive_time: Option<u64>,
    #[serde(rename = "net.ipv4.tcp_keepalive_intvl")]
    pub keepalive_intvl: Option<u64>,
    #[serde(rename = "net.ipv4.tcp_keepalive_probes")]
    pub keepalive_probes: Option<u64>,
    #[serde(rename = "net.ipv4.tcp_syncookies")]
    pub syncookies: Option<u32>,
    #[serde(rename = "net.core.somaxconn")]
    pub somaxconn: Option<u64>,
    #[serde(rename = "net.ipv4.tcp_max_syn_backlog")]
    pub max_syn_backlog: Option<u64>,
    #[serde(rename = "net.ipv4.tcp_rfc1337")]
    pub rfc1337: Option<u32>,
    /// Only kernels older than 4.12 have it.
    #[serde(
        rename = "net.ipv4.tcp_tw_recycle",
        skip_serializing_if = "Option::is_none"
    )]
    pub tw_recycle: Option<u32>,
}

fn number<T: std::str::FromStr>(root: &Path, name: &str) -> Option<T> {
    std::fs::read_to_string(root.join(name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl DoctorSysctls {
    pub fn read() -> Self {
        Self::read_from(Path::new("/proc/sys"))
    }

    /// `root` is `/proc/sys` or a copy of its layout.
    pub fn read_from(root: &Path) -> Self {
        let v4 = |name: &str| format!("net/ipv4/{name}");
        let range = std::fs::read_to_string(root.join(v4("ip_local_port_range")))
            .ok()
            .and_then(|text| {
                let mut parts = text.split_whitespace().map(|p| p.parse::<u16>().ok());
                Some((parts.next()??, parts.next()??))
            });
        DoctorSysctls {
            tw_reuse: number(root, &v4("tcp_tw_reuse")),
            tw_reuse_delay_ms: number(root, &v4("tcp_tw_reuse_delay")),
            timestamps: number(root, &v4("tcp_timestamps")),
            max_tw_buckets: number(root, &v4("tcp_max_tw_buckets")),
            local_port_range: range,
            fin_timeout: number(root, &v4("tcp_fin_timeout")),
            keepalive_time: number(root, &v4("tcp_keepalive_time")),
            keepalive_intvl: number(root, &v4("tcp_keepalive_intvl")),
            keepalive_probes: number(root, &v4("tcp_keepalive_probes")),
            syncookies: number(root, &v4("tcp_syncookies")),
            somaxconn: number(root, "net/core/somaxconn"),
            max_syn_backlog: number(root, &v4("tcp_max_syn_backlog")),
            rfc1337: number(root, &v4("tcp_rfc1337")),
            tw_recycle: number(root, &v4("tcp_tw_recycle")),
        }
    }

    /// The ephemeral port range, inclusive, ordered; the kernel default
    /// when unreadable.
    pub fn port_range(&self) -> (u16, u16) {
        let (a, b) = self.local_port_range.unwrap_or((32768, 60999));
        (a.min(b), a.max(b))
    }

    /// Ports in the ephemeral range.
    pub fn port_range_size(&self) -> u32 {
        let (low, high) = self.port_range();
        u32::from(high - low) + 1
    }

    /// How long a time-wait socket must have lived before tcp_tw_reuse may
    /// take its port, in seconds.
    pub fn tw_reuse_delay_secs(&self) -> f64 {
        self.tw_reuse_delay_ms.map_or(1.0, |ms| ms as f64 / 1000.0)
    }
}

/// The running kernel's release (`uname -r`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Kernel {
    pub release: String,
    /// None when the release does not start with `MAJOR.MINOR`.
    pub major: Option<u32>,
    pub minor: Option<u32>,
}

impl Kernel {
    pub fn read() -> Self {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Self::parse(&release)
    }

    pub fn parse(release: &str) -> Self {
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major = parts.next().and_then(|p| p.parse().ok());
        let minor = major.and(parts.next().and_then(|p| p.parse().ok()));
        Kernel {
            release: release.to_string(),
            major,
            minor: minor.filter(|_| major.is_some()),
        }
    }

    /// Whether the kernel is at least `major.minor`; None when unknown.
    pub fn at_least(&self, major: u32, minor: u32) -> Option<bool> {
        Some((self.major?, self.minor?) >= (major, minor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctls_are_read_and_missing_ones_are_unknown() {
        let root =
            std::env::temp_dir().join(format!("tcpstate-doctor-sysctl-{}", std::process::id()));
        let v4 = root.join("net/ipv4");
        std::fs::create_dir_all(&v4).unwrap();
        std::fs::create_dir_all(root.join("net/core")).unwrap();
        std::fs::write(v4.join("tcp_tw_reuse"), "1\n").unwrap();
        std::fs::write(v4.join("ip_local_port_range"), "1024\t65000\n").unwrap();
        std::fs::write(v4.join("tcp_keepalive_time"), "600\n").unwrap();
        std::fs::write(v4.join("tcp_max_tw_buckets"), "lots\n").unwrap();
        std::fs::write(root.join("net/core/somaxconn"), "128\n").unwrap();
        let s = DoctorSysctls::read_from(&root);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(s.tw_reuse, Some(1));
        assert_eq!(s.local_port_range, Some((1024, 65000)));
        assert_eq!(s.port_range_size(), 63_977);
        assert_eq!(s.keepalive_time, Some(600));
        assert_eq!(s.somaxconn, Some(128));
        assert_eq!(s.max_tw_buckets, None);
        assert_eq!(s.tw_recycle, None);
        assert_eq!(s.tw_reuse_delay_secs(), 1.0);
        // Unknown range: the kernel default.
        assert_eq!(DoctorSysctls::default().port_range_size(), 28_232);
    }

    #[test]
    fn kernel_releases() {
        let k = Kernel::parse("6.18.44-fc-v657");
        assert_eq!((k.major, k.minor), (Some(6), Some(18)));
        assert_eq!(k.at_least(4, 12), Some(true));
        assert_eq!(Kernel::parse("4.9.0-13-amd64").at_least(4, 12), Some(false));
        assert_eq!(Kernel::parse("4.12").at_least(4, 12), Some(true));
        assert_eq!(Kernel::parse("").at_least(4, 12), None);
        assert_eq!(Kernel::parse("weird").at_least(4, 12), None);
    }
}

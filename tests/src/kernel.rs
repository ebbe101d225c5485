//! What the running kernel is and what it counted, for tests whose
//! expectations differ by kernel (documented degraded behaviour, checked
//! rather than skipped).
use tcpstate::source::sysctl_advice::Kernel;

/// Whether the running kernel is at least `major.minor`.
pub fn at_least(major: u32, minor: u32) -> bool {
    let kernel = Kernel::read();
    kernel
        .at_least(major, minor)
        .unwrap_or_else(|| panic!("unparsed kernel release {}", kernel.release))
}

/// Whether `tcp:tcp_send_reset` reports RSTs sent without a socket (its
/// 6.10 format), so that tcpstate sees the RST that ends a time-wait socket.
/// Before that, such a RST destroys the socket with nothing to trace, and
/// tests bound the difference by [`out_rsts`] instead.
pub fn reports_resets_without_socket() -> bool {
    at_least(6, 10)
}

/// RSTs this network namespace has sent so far (`Tcp: OutRsts` of
/// /proc/net/snmp).
pub fn out_rsts() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").expect("read /proc/net/snmp");
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (
        tcp.next().expect("Tcp header"),
        tcp.next().expect("Tcp values"),
    );
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "OutRsts")
        .and_then(|(_, v)| v.parse().ok())
        .expect("Tcp OutRsts")
}

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

/// Every TCP counter of network namespace `ns` (a name from `ip netns`),
/// named as `nstat` names them (`TcpOutRsts`, `TcpExtTWKilled`, ...): from
/// /proc/net/snmp and /proc/net/netstat read by a process inside it (a
/// thread's setns() would not do: /proc/net follows the process's first
/// thread).
pub fn tcp_counters_in(ns: &str) -> std::collections::BTreeMap<String, u64> {
    parse_counters(&crate::netns::netns_output(
        ns,
        &["cat", "/proc/net/snmp", "/proc/net/netstat"],
    ))
}

/// The TCP counters of /proc/net/snmp and /proc/net/netstat text: each
/// group is a line of names and a line of values with the same prefix.
pub fn parse_counters(text: &str) -> std::collections::BTreeMap<String, u64> {
    let mut counters = std::collections::BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (Some((group, names)), Some((same, values))) =
            (names.split_once(": "), values.split_once(": "))
        else {
            continue;
        };
        if group != same || !(group == "Tcp" || group == "TcpExt") {
            continue;
        }
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            // Tcp: MaxConn is -1; nothing here needs it.
            if let Ok(value) = value.parse() {
                counters.insert(format!("{group}{name}"), value);
            }
        }
    }
    counters
}

/// The counters of `after` that differ from `before`, as `NAME +N` (what a
/// workload made the kernel count).
pub fn counters_moved(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> String {
    after
        .iter()
        .filter_map(|(name, &now)| {
            let was = before.get(name).copied().unwrap_or(0);
            (now != was).then(|| format!("{name} +{}", now.wrapping_sub(was)))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_by_group_and_name() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Tcp: RtoAlgorithm MaxConn OutRsts\nTcp: 1 -1 7\n\
                    TcpExt: SyncookiesSent TWKilled\nTcpExt: 0 3\n\
                    IpExt: InNoRoutes\nIpExt: 2\n";
        let counters = parse_counters(text);
        assert_eq!(
            counters,
            [
                ("TcpRtoAlgorithm".to_string(), 1),
                ("TcpOutRsts".to_string(), 7),
                ("TcpExtSyncookiesSent".to_string(), 0),
                ("TcpExtTWKilled".to_string(), 3),
            ]
            .into()
        );
        let mut later = counters.clone();
        *later.get_mut("TcpOutRsts").unwrap() += 2;
        later.insert("TcpExtTW".to_string(), 5);
        assert_eq!(
            counters_moved(&counters, &later),
            "TcpExtTW +5, TcpOutRsts +2"
        );
    }
}

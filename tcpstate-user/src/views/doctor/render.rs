//! The text report.
use super::{counters::CountersView, value_text, DoctorReport, DoctorSysctls};
use std::fmt::Write as _;

pub fn text(report: &DoctorReport) -> String {
    let mut out = String::new();
    let w = &report.watch;
    let _ = writeln!(
        out,
        "tcpstate doctor: host {}, kernel {}; watched {:.1} s: {} transitions, {} lost in the kernel",
        report.host, report.kernel.release, w.seconds, w.transitions, w.lost_events
    );
    let _ = writeln!(out, "sysctls: {}", sysctls_line(&report.sysctls));
    let _ = writeln!(
        out,
        "counters over the watch: {}",
        counters_line(&report.counters)
    );
    let _ = writeln!(out, "tracer on this host:");
    for part in &report.tracer {
        let why = part
            .why
            .as_deref()
            .map_or(String::new(), |w| format!(": {w}"));
        let _ = writeln!(
            out,
            "  {:<24} {:<9} {} ({}){why}",
            part.part, part.status, part.purpose, part.hook
        );
    }
    out.push('\n');
    if report.findings.is_empty() {
        let _ = writeln!(
            out,
            "No findings: nothing seen during the watch points at a problem.\n"
        );
    }
    for f in &report.findings {
        let _ = writeln!(
            out,
            "[{}] {}: {}",
            f.severity.name().to_ascii_uppercase(),
            f.id,
            f.title
        );
        for d in &f.details {
            let _ = writeln!(out, "    {d}");
        }
        let _ = writeln!(out, "  advice:");
        for a in &f.advice {
            let _ = writeln!(out, "  - {a}");
        }
        out.push('\n');
    }
    let _ = writeln!(out, "notes:");
    for n in &report.notes {
        let _ = writeln!(out, "  - {}", n.text);
    }
    out
}

fn sysctls_line(s: &DoctorSysctls) -> String {
    let range = s
        .local_port_range
        .map_or("unknown".to_string(), |(a, b)| format!("{a} {b}"));
    format!(
        "tcp_tw_reuse {}, tcp_timestamps {}, ip_local_port_range {range}, tcp_max_tw_buckets {}, tcp_fin_timeout {}, tcp_keepalive_time/intvl/probes {}/{}/{}, tcp_syncookies {}, somaxconn {}, tcp_max_syn_backlog {}, tcp_rfc1337 {}",
        value_text(s.tw_reuse),
        value_text(s.timestamps),
        value_text(s.max_tw_buckets),
        value_text(s.fin_timeout),
        value_text(s.keepalive_time),
        value_text(s.keepalive_intvl),
        value_text(s.keepalive_probes),
        value_text(s.syncookies),
        value_text(s.somaxconn),
        value_text(s.max_syn_backlog),
        value_text(s.rfc1337),
    )
}

/// The TcpExt counters that moved, and the main Tcp ones.
fn counters_line(c: &CountersView) -> String {
    if c.delta.is_empty() {
        return "unavailable".to_string();
    }
    let moved: Vec<String> = c
        .delta
        .iter()
        .filter(|(name, n)| **n != 0 && !name.ends_with("CurrEstab"))
        .map(|(name, n)| {
            let short = name.split_once('.').map_or(*name, |(_, s)| s);
            format!("{short} {n:+}")
        })
        .collect();
    if moved.is_empty() {
        "none moved".to_string()
    } else {
        moved.join(", ")
    }
}

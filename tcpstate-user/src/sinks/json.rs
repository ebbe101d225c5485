//! JSON Lines: one object per line, field names stable across versions.
//!
//! Every line has `"type"`: `"transition"` for a transition, `"lost"` when
//! the kernel's count of undeliverable records grows, `"call_failure"` for
//! a failed connect() or bind() (recordings and commands that follow them),
//! `"kill"` for a socket `tcpstate kill` acted on while recording.
use super::{json_line::TransitionLines, Annotation, TraceSink};
use crate::{
    clock::{rfc3339_utc, BootClock},
    views::trace::TraceRow,
};
use serde::Serialize;
use std::io::{self, Write};

#[derive(Serialize)]
struct LostLine {
    #[serde(rename = "type")]
    kind: &'static str,
    time: String,
    ts_boot_ns: u64,
    lost_total: u64,
}

#[derive(Serialize)]
struct CallFailureLine {
    #[serde(rename = "type")]
    kind: &'static str,
    time: String,
    ts_boot_ns: u64,
    call: &'static str,
    errno: u8,
    errno_name: &'static str,
    /// The destination (connect) or the address asked for (bind).
    address: String,
    pid: u32,
    tgid: u32,
    comm: String,
    netns: u32,
}

/// `tcpstate kill` acted on a socket (issue 12).
#[derive(Serialize)]
pub struct KillLine {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    pub ts_boot_ns: u64,
    /// "destroyed", "already_gone" or "refused".
    pub outcome: &'static str,
    /// With "refused": the kernel's errno and its name.
    pub errno: Option<u16>,
    pub errno_name: Option<String>,
    pub state: &'static str,
    /// The socket, named as in transition lines.
    pub netns: u32,
    pub family: &'static str,
    pub laddr: String,
    pub lport: u16,
    pub raddr: String,
    pub rport: u16,
    pub cookie: u64,
    /// The process that held the socket, when one was seen.
    pub owner_tgid: Option<u32>,
    pub owner_comm: Option<String>,
    /// The `tcpstate kill` process.
    pub killer_pid: u32,
}

impl KillLine {
    pub fn new(k: &crate::kill_log::KillRecord, clock: &BootClock) -> KillLine {
        KillLine {
            kind: "kill",
            time: rfc3339_utc(clock.wall_ns(k.ts_boot_ns)),
            ts_boot_ns: k.ts_boot_ns,
            outcome: k.outcome.name(),
            errno: k.outcome.errno(),
            errno_name: k
                .outcome
                .errno()
                .map(|e| std::io::Error::from_raw_os_error(i32::from(e)).to_string()),
            state: k.state.name(),
            netns: k.netns,
            family: k.family.name(),
            laddr: k.local.ip.to_string(),
            lport: k.local.port,
            raddr: k.remote.ip.to_string(),
            rport: k.remote.port,
            cookie: k.cookie,
            owner_tgid: k.owner.map(|o| o.tgid),
            owner_comm: k.owner.map(|o| o.comm.as_string()),
            killer_pid: k.killer_pid,
        }
    }
}

pub struct JsonSink<W: Write> {
    out: W,
    clock: BootClock,
    /// One line at a time, reused: no allocation per transition.
    lines: TransitionLines,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W, clock: BootClock) -> Self {
        Self {
            out,
            clock,
            lines: TransitionLines::default(),
        }
    }

    fn line(&mut self, value: &impl Serialize) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")
    }
}

impl<W: Write> TraceSink for JsonSink<W> {
    fn transition(&mut self, row: &TraceRow, annotation: &Annotation) -> io::Result<()> {
        let line = self.lines.line(row, &self.clock, annotation);
        self.out.write_all(line)
    }

    fn lost(&mut self, total: u64, ts_boot_ns: u64) -> io::Result<()> {
        self.line(&LostLine {
            kind: "lost",
            time: rfc3339_utc(self.clock.wall_ns(ts_boot_ns)),
            ts_boot_ns,
            lost_total: total,
        })
    }

    fn call_failed(&mut self, f: &crate::wire::CallFailure) -> io::Result<()> {
        self.line(&CallFailureLine {
            kind: "call_failure",
            time: rfc3339_utc(self.clock.wall_ns(f.ts_boot_ns)),
            ts_boot_ns: f.ts_boot_ns,
            call: f.call.name(),
            errno: f.errno,
            errno_name: crate::wire::errno_name(f.errno),
            address: f.addr.to_string(),
            pid: f.task.pid,
            tgid: f.task.tgid,
            comm: f.task.comm.as_string(),
            netns: f.netns,
        })
    }

    fn kill(&mut self, k: &crate::kill_log::KillRecord) -> io::Result<()> {
        self.line(&KillLine::new(k, &self.clock))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        addr::Endpoint,
        tcp::{Family, TcpState},
        wire::{Comm, Task, Transition},
    };
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn field_names_are_stable() {
        let clock = BootClock {
            boot_ns: 0,
            wall_ns: 0,
        };
        let mut out = Vec::new();
        let mut sink = JsonSink::new(&mut out, clock);
        let row = TraceRow {
            transition: Transition {
                ts_boot_ns: 1_500_000_000,
                skaddr: 0xff00,
                family: Family::Ipv6,
                local: Endpoint::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 8080),
                remote: Endpoint::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 5555),
                old: TcpState::Established,
                new: TcpState::CloseWait,
                task: Task {
                    tgid: 0,
                    pid: 0,
                    comm: Comm::from_str_lossy("swapper/\"0"),
                },
                cgroup_id: 0,
                netns: 0,
                cpu: 1,
            },
            in_old_state_ns: Some(2_500_000),
        };
        let owner = crate::model::Owner {
            tgid: 42,
            pid: 43,
            comm: Comm::from_str_lossy("nginx"),
            how: crate::model::OwnerHow::Accept,
            cgroup_id: 9,
        };
        let annotation = Annotation {
            connection_id: Some(7),
            owner: Some(owner),
        };
        sink.transition(&row, &annotation).unwrap();
        sink.lost(3, 2_000_000_000).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines[0],
            serde_json::json!({
                "type": "transition", "time": "1970-01-01T00:00:01.500000000Z",
                "ts_boot_ns": 1_500_000_000u64, "connection_id": 7, "skaddr": "0xff00",
                "netns": 0, "family": "ipv6",
                "laddr": "::1", "lport": 8080, "raddr": "10.0.0.1", "rport": 5555,
                "old": "ESTABLISHED", "new": "CLOSE_WAIT", "old_state_ms": 2.5,
                "owner_tgid": 42, "owner_pid": 43, "owner_comm": "nginx", "owner_how": "accept",
                "owner_cgroup_id": 9,
                "ctx_pid": 0, "ctx_tgid": 0, "ctx_comm": "swapper/\"0", "cpu": 1
            })
        );
        assert_eq!(
            lines[1],
            serde_json::json!({"type": "lost", "time": "1970-01-01T00:00:02.000000000Z",
                "ts_boot_ns": 2_000_000_000u64, "lost_total": 3})
        );
    }

    #[test]
    fn failed_calls_are_lines_of_their_own() {
        let clock = BootClock {
            boot_ns: 0,
            wall_ns: 0,
        };
        let mut out = Vec::new();
        let mut sink = JsonSink::new(&mut out, clock);
        let failure = crate::wire::CallFailure {
            ts_boot_ns: 2_000_000_000,
            call: crate::wire::FailedCall::Connect,
            errno: 99,
            task: Task {
                tgid: 42,
                pid: 43,
                comm: Comm::from_str_lossy("client"),
            },
            cgroup_id: 0,
            netns: 7,
            skaddr: 0,
            family: Family::Ipv4,
            addr: Endpoint::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 80),
        };
        sink.call_failed(&failure).unwrap();
        let line: serde_json::Value =
            serde_json::from_slice(out.strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!(
            line,
            serde_json::json!({
                "type": "call_failure",
                "time": "1970-01-01T00:00:02.000000000Z",
                "ts_boot_ns": 2_000_000_000u64,
                "call": "connect",
                "errno": 99,
                "errno_name": "EADDRNOTAVAIL",
                "address": "10.0.0.2:80",
                "pid": 43,
                "tgid": 42,
                "comm": "client",
                "netns": 7,
            })
        );
    }

    #[test]
    fn kills_are_lines_of_their_own() {
        let clock = BootClock {
            boot_ns: 0,
            wall_ns: 0,
        };
        let mut out = Vec::new();
        let mut sink = JsonSink::new(&mut out, clock);
        let kill = crate::kill_log::KillRecord {
            ts_boot_ns: 3_000_000_000,
            killer_pid: 99,
            netns: 7,
            cookie: 12,
            family: Family::Ipv6,
            local: Endpoint::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 8080),
            remote: Endpoint::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 40000),
            state: TcpState::CloseWait,
            owner: Some(crate::kill_log::KillOwner {
                tgid: 42,
                comm: Comm::from_str_lossy("leaky"),
            }),
            outcome: crate::kill_log::KillOutcome::Refused(1),
        };
        sink.kill(&kill).unwrap();
        sink.kill(&crate::kill_log::KillRecord {
            owner: None,
            outcome: crate::kill_log::KillOutcome::Destroyed,
            ..kill
        })
        .unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines[0],
            serde_json::json!({
                "type": "kill", "time": "1970-01-01T00:00:03.000000000Z",
                "ts_boot_ns": 3_000_000_000u64, "outcome": "refused", "errno": 1,
                "errno_name": std::io::Error::from_raw_os_error(1).to_string(),
                "state": "CLOSE_WAIT", "netns": 7, "family": "ipv6",
                "laddr": "::1", "lport": 8080, "raddr": "::1", "rport": 40000,
                "cookie": 12, "owner_tgid": 42, "owner_comm": "leaky", "killer_pid": 99
            })
        );
        assert_eq!(lines[1]["outcome"], "destroyed");
        assert_eq!(lines[1]["errno"], serde_json::Value::Null);
        assert_eq!(lines[1]["owner_tgid"], serde_json::Value::Null);
    }
}

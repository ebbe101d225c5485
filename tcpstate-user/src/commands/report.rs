//! `tcpstate report FILE...`: one readable incident summary of recordings.
use crate::pipeline::{self, Pipeline};
use crate::views::{Progress, View};
use crate::{
    cli::{InputArgs, ReportArgs},
    clock::rfc3339_utc,
    model::{ClosedFirst, Connection, Model, TimeWaitFate},
    recording::RecordingReader,
    source::Item,
    tcp::TcpState,
    views::{leaks::LeaksView, stat::StatView},
};
use serde::Serialize;
use std::{collections::BTreeMap, fmt::Write as _, io};

/// States shown in the counts over time.
const STATES: [TcpState; 6] = [
    TcpState::Established,
    TcpState::SynSent,
    TcpState::TimeWait,
    TcpState::CloseWait,
    TcpState::FinWait2,
    TcpState::Listen,
];

#[derive(Serialize, Default)]
struct Metadata {
    files: Vec<String>,
    host_name: String,
    kernel_release: String,
    boot_id: Option<String>,
    tcpstate_version: String,
    command_line: Vec<String>,
    start: String,
    end: String,
    duration_s: f64,
    ip_local_port_range: (u16, u16),
    tcp_fin_timeout: u64,
    tcp_tw_reuse: u32,
    tcp_max_tw_buckets: usize,
    tcp_rfc1337: bool,
}

#[derive(Serialize, Clone, PartialEq)]
struct Sample {
    time: String,
    counts: BTreeMap<&'static str, usize>,
}

#[derive(Serialize, Default)]
struct Producer {
    time_wait: u64,
    we_closed_first: u64,
    simultaneous: u64,
}

#[derive(Serialize, Default)]
struct Summary {
    #[serde(rename = "type")]
    kind: &'static str,
    metadata: Metadata,
    transitions: u64,
    connections_finished: u64,
    lost_events: u64,
    uncertain_connections: u64,
    over_time: Vec<Sample>,
    /// TIME_WAIT sockets entered during the capture, per owning process.
    time_wait_by_process: BTreeMap<String, Producer>,
    /// ... and per destination (remote address:port).
    time_wait_by_destination: BTreeMap<String, Producer>,
    time_wait_overflow: u64,
    close_wait_leaks: Option<LeaksView>,
    /// Sockets per state, process, port and peer at the last event.
    at_the_end: Option<StatView>,
    /// Failed connect()/bind() calls and handshakes, most first (issue 11).
    failures: Vec<crate::views::ports::FailureRow>,
    /// Sockets `tcpstate kill` acted on while recording (issue 12).
    kill_count: u64,
    kills: Vec<crate::sinks::json::KillLine>,
}

/// At most this many rows of counts over time (evenly spaced).
const MAX_SAMPLES: usize = 30;

struct ReportView {
    summary: Summary,
    /// Sampling period of the counts over time, in boot ns.
    every_ns: u64,
    next_sample_ns: Option<u64>,
    first_ts: Option<u64>,
    failures: crate::views::ports::CallFailures,
    kills: Vec<crate::kill_log::KillRecord>,
}

fn counts(model: &Model) -> BTreeMap<&'static str, usize> {
    let stat = model.stat_by_process();
    STATES.iter().map(|s| (s.name(), stat.count(*s))).collect()
}

impl ReportView {
    fn account(&mut self, c: &Connection) {
        self.summary.connections_finished += 1;
        if c.uncertain {
            self.summary.uncertain_connections += 1;
        }
        if c.time_wait != TimeWaitFate::Entered {
            return;
        }
        let process = c.owner().map_or("(owner unknown)".to_string(), |o| {
            format!("{}/{}", o.tgid, o.comm)
        });
        let producer = self
            .summary
            .time_wait_by_process
            .entry(process)
            .or_default();
        bump(producer, c.closed_first);
        let dest = self
            .summary
            .time_wait_by_destination
            .entry(c.remote.to_string())
            .or_default();
        bump(dest, c.closed_first);
    }
}

fn bump(producer: &mut Producer, closed_first: ClosedFirst) {
    producer.time_wait += 1;
    match closed_first {
        ClosedFirst::Both => producer.simultaneous += 1,
        _ => producer.we_closed_first += 1,
    }
}

impl View for ReportView {
    fn settled(&mut self, ended: &[Connection], _: &Model, _: bool) -> io::Result<()> {
        for c in ended {
            self.account(c);
            self.failures.ended(c);
        }
        Ok(())
    }

    fn item(
        &mut self,
        item: &Item,
        ended: &[Connection],
        model: &Model,
        shown: bool,
    ) -> io::Result<()> {
        let ts = item.ts_boot_ns();
        self.first_ts.get_or_insert(ts);
        if let Item::Transition(_) = item {
            self.summary.transitions += 1;
        }
        if let Item::CallFailed(f) = item {
            self.failures.call(f);
        }
        if let Item::Kill(k) = item {
            self.summary.kill_count += 1;
            // Times are printed at the end, with the clock.
            self.kills.push(*k);
        }
        self.settled(ended, model, shown)?;
        let next = *self.next_sample_ns.get_or_insert(ts);
        if ts >= next {
            self.summary.over_time.push(Sample {
                time: ts.to_string(),
                counts: counts(model),
            });
            self.next_sample_ns = Some(next + self.every_ns);
        }
        Ok(())
    }

    fn refresh(&mut self, progress: &Progress, last: bool) -> io::Result<()> {
        if !last {
            return Ok(());
        }
        let clock = progress.clock;
        for sample in &mut self.summary.over_time {
            let ts: u64 = sample.time.parse().unwrap_or(0);
            sample.time = rfc3339_utc(clock.wall_ns(ts));
        }
        let end = progress.now_ns();
        self.summary.over_time.push(Sample {
            time: rfc3339_utc(clock.wall_ns(end)),
            counts: counts(progress.model),
        });
        let samples = std::mem::take(&mut self.summary.over_time);
        let step = samples.len().div_ceil(MAX_SAMPLES).max(1);
        let last = samples.len() - 1;
        self.summary.over_time = samples
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % step == 0 || *i == last)
            .map(|(_, s)| s)
            .collect();
        self.summary.at_the_end = Some(StatView::new(
            progress.model,
            progress.sysctls.local_port_range,
            progress.stats().lost,
            |id| crate::source::cgroup::CgroupView {
                cgroup_id: id,
                ..Default::default()
            },
        ));
        let start = self.first_ts.unwrap_or(clock.boot_ns).min(clock.boot_ns);
        let meta = &mut self.summary.metadata;
        meta.start = rfc3339_utc(clock.wall_ns(start));
        meta.end = rfc3339_utc(clock.wall_ns(end));
        meta.duration_s = end.saturating_sub(start) as f64 / 1e9;
        self.summary.lost_events = progress.stats().lost;
        self.summary.time_wait_overflow = progress.model.time_wait().counters().skipped_overflow;
        self.summary.failures = self.failures.rows();
        self.summary.kills = self
            .kills
            .iter()
            .map(|k| crate::sinks::json::KillLine::new(k, &clock))
            .collect();
        self.summary.close_wait_leaks = Some(LeaksView::new(
            &progress.model.leaks(end),
            self.summary.lost_events,
            |_| None,
            |id| crate::source::cgroup::CgroupView {
                cgroup_id: id,
                ..Default::default()
            },
        ));
        Ok(())
    }

    fn shown(&self) -> u64 {
        1
    }
}

pub async fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let input = InputArgs {
        input: args.files.clone(),
        ..InputArgs::default()
    };
    let header = RecordingReader::open(&args.files[0])?.header().clone();
    let mut pipeline = Pipeline::replay(
        &input,
        &crate::cli::FilterArgs::default(),
        args.leak.threshold_secs,
    )?;
    let mut view = ReportView {
        summary: Summary {
            kind: "report",
            metadata: Metadata {
                files: args.files.iter().map(|f| f.display().to_string()).collect(),
                host_name: header.host_name.clone(),
                kernel_release: header.kernel_release.clone(),
                boot_id: header.boot_id.clone(),
                tcpstate_version: header.tcpstate_version.clone(),
                command_line: header.command_line.clone(),
                ip_local_port_range: header.sysctls.local_port_range,
                tcp_fin_timeout: header.sysctls.fin_timeout_secs,
                tcp_tw_reuse: header.sysctls.tw_reuse,
                tcp_max_tw_buckets: header.sysctls.max_tw_buckets,
                tcp_rfc1337: header.sysctls.rfc1337,
                ..Metadata::default()
            },
            ..Summary::default()
        },
        every_ns: 1_000_000_000,
        next_sample_ns: None,
        first_ts: None,
        failures: Default::default(),
        kills: Vec::new(),
    };
    let result = pipeline::drive(&mut pipeline, &mut view, None).await;
    let summary = &view.summary;
    if args.json {
        println!("{}", serde_json::to_string(summary)?);
    } else {
        print!("{}", text(summary));
    }
    result
}

fn top(map: &BTreeMap<String, Producer>, n: usize) -> Vec<(&String, &Producer)> {
    let mut rows: Vec<_> = map.iter().collect();
    rows.sort_by(|a, b| b.1.time_wait.cmp(&a.1.time_wait).then(a.0.cmp(b.0)));
    rows.truncate(n);
    rows
}

/// `1.2.3.4:80` or `[::1]:80`.
fn endpoint(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn text(s: &Summary) -> String {
    let m = &s.metadata;
    let mut out = String::new();
    let _ = writeln!(out, "tcpstate report: {}", m.files.join(", "));
    let _ = writeln!(
        out,
        "host {} (kernel {}), recorded by tcpstate {}: {}",
        m.host_name,
        m.kernel_release,
        m.tcpstate_version,
        m.command_line.join(" ")
    );
    let _ = writeln!(
        out,
        "from {} (start) to {} (last event): {:.1} s",
        m.start, m.end, m.duration_s
    );
    let _ = writeln!(
        out,
        "sysctls: ip_local_port_range {} {}, tcp_fin_timeout {}, tcp_tw_reuse {}, tcp_max_tw_buckets {}, tcp_rfc1337 {}",
        m.ip_local_port_range.0,
        m.ip_local_port_range.1,
        m.tcp_fin_timeout,
        m.tcp_tw_reuse,
        m.tcp_max_tw_buckets,
        u8::from(m.tcp_rfc1337)
    );
    let _ = writeln!(
        out,
        "{} transitions, {} connections finished, {} lost in the kernel, {} connections uncertain, {} closes without TIME_WAIT (tcp_max_tw_buckets full)",
        s.transitions, s.connections_finished, s.lost_events, s.uncertain_connections, s.time_wait_overflow
    );
    let _ = writeln!(out, "\nsockets over time:");
    let _ = write!(out, "  {:<31}", "TIME");
    for state in STATES {
        let _ = write!(out, " {:>11}", state.name());
    }
    out.push('\n');
    for sample in &s.over_time {
        let _ = write!(out, "  {:<31}", sample.time);
        for state in STATES {
            let _ = write!(
                out,
                " {:>11}",
                sample.counts.get(state.name()).unwrap_or(&0)
            );
        }
        out.push('\n');
    }
    for (title, map) in [
        ("TIME_WAIT entered, by process", &s.time_wait_by_process),
        (
            "TIME_WAIT entered, by destination",
            &s.time_wait_by_destination,
        ),
    ] {
        let _ = writeln!(out, "\n{title} (top 10):");
        for (key, p) in top(map, 10) {
            let _ = writeln!(
                out,
                "  {key:<36} {:>8}  (we closed first: {}, simultaneous: {})",
                p.time_wait, p.we_closed_first, p.simultaneous
            );
        }
    }
    if !s.failures.is_empty() {
        let _ = writeln!(
            out,
            "\nfailed connect()/bind() calls and handshakes (top 10):"
        );
        for f in s.failures.iter().take(10) {
            let _ = writeln!(
                out,
                "  {:<9} {:<36} {:<14} {:>8}  by {}/{}",
                f.call,
                f.address,
                f.errno_name,
                f.count,
                f.tgid.map_or("?".to_string(), |t| t.to_string()),
                f.comm.as_deref().unwrap_or("?")
            );
        }
    }
    if s.kill_count > 0 {
        let _ = writeln!(
            out,
            "\n{} socket(s) acted on by `tcpstate kill`:",
            s.kill_count
        );
        for k in &s.kills {
            let _ = writeln!(
                out,
                "  {:<31} {:<12} {} -> {}  held by {}  {}{}",
                k.time,
                k.state,
                endpoint(&k.laddr, k.lport),
                endpoint(&k.raddr, k.rport),
                match (k.owner_tgid, &k.owner_comm) {
                    (Some(tgid), Some(comm)) => format!("{tgid}/{comm}"),
                    _ => "-".to_string(),
                },
                k.outcome,
                k.errno_name
                    .as_deref()
                    .map_or(String::new(), |e| format!(" ({e})")),
            );
        }
    }
    if let Some(stat) = &s.at_the_end {
        let _ = writeln!(out, "\nat the last event:");
        out.push_str(&stat.table());
    }
    if let Some(leaks) = &s.close_wait_leaks {
        out.push('\n');
        out.push_str(&leaks.table());
    }
    out
}

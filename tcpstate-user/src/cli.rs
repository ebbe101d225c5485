//! Command-line interface.
use crate::{
    filter::{parse_family, AddrFilter, Filter},
    tcp::{Family, TcpState},
};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tcpstate",
    version,
    about = "Trace TCP state transitions from the kernel, as they happen"
)]
pub struct Cli {
    /// Show diagnostics, including the BPF program's own (aya-log)
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream every TCP state transition (Ctrl-C to stop)
    Trace(TraceArgs),
    /// One line per finished connection: real owner, open kind, time in each state, who closed first
    Life(LifeArgs),
    /// Sockets per state now, per process, local port and remote address; TIME_WAIT by who closed first
    Stat(StatArgs),
    /// CLOSE_WAIT leak suspects per process, and never-accepted ones per listener
    Leaks(LeaksArgs),
    /// Full-screen live view per process (like top): sockets by state, TIME_WAIT caused, CLOSE_WAIT suspects, open/close rates
    Top(TopArgs),
    /// Record every transition (and the sockets that exist at start) to a file, for later analysis
    Record(RecordArgs),
    /// One readable incident summary of recordings
    Report(ReportArgs),
    /// Recordings as one row per transition, for DuckDB, pandas, Spark...
    Export(ExportArgs),
    /// Reads the TCP sysctls and counters, watches traffic for a while, then prints findings with advice
    Doctor(DoctorArgs),
    /// Prometheus metrics over HTTP (GET /metrics), computed from the live model at each scrape
    Serve(ServeArgs),
    /// End selected sockets through the kernel (SOCK_DESTROY, as `ss -K`): shows them first, acts with --yes
    Kill(KillArgs),
    /// ESTABLISHED connections whose peer looks gone, per process, with the kernel's evidence
    Stale(StaleArgs),
    /// Local port headroom per destination: ports in use by state, share of the usable range, rates, time to exhaustion
    Ports(PortsArgs),
}

/// Analyse recordings instead of the live kernel.
#[derive(Clone, Debug, Args, Default)]
pub struct InputArgs {
    /// Read these recordings (in order: a rotated capture's files one after the other)
    #[arg(long = "input", value_name = "FILE", num_args = 1..)]
    pub input: Vec<std::path::PathBuf>,
    /// Show only from this time: RFC 3339 (2026-11-22T11:23:45Z) or +DURATION from the start (+90s)
    #[arg(long, value_name = "TIME", requires = "input")]
    pub from: Option<String>,
    /// Stop at this time (same forms as --from)
    #[arg(long, value_name = "TIME", requires = "input")]
    pub to: Option<String>,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The recording to create (mode 0600; an existing file is never replaced)
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: std::path::PathBuf,
    /// Go on in FILE.1, FILE.2, ... once a file reaches this size (e.g. 100M)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub rotate: Option<u64>,
    /// Stop after this long (e.g. 10m, 1h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    #[command(flatten)]
    pub filters: FilterArgs,
    #[command(flatten)]
    pub live: LiveArgs,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Recordings, in order
    #[arg(value_name = "FILE", required = true, num_args = 1..)]
    pub files: Vec<std::path::PathBuf>,
    /// JSON instead of text
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub leak: LeakThresholdArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
    Parquet,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Recordings, in order
    #[arg(value_name = "FILE", required = true, num_args = 1..)]
    pub files: Vec<std::path::PathBuf>,
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: ExportFormat,
    /// Write here instead of standard output (required for parquet)
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub filters: FilterArgs,
}

#[derive(Debug, Args)]
pub struct LifeArgs {
    /// JSON Lines output
    #[arg(long)]
    pub json: bool,
    /// Also show listening sockets when they close
    #[arg(long)]
    pub listeners: bool,
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub filters: FilterArgs,
    #[command(flatten)]
    pub live: LiveArgs,
}

#[derive(Debug, Args)]
pub struct StatArgs {
    /// One JSON object per refresh
    #[arg(long)]
    pub json: bool,
    /// Refresh at most this often when something changed (e.g. 1s, 500ms)
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub every: std::time::Duration,
    /// With --input: the counts at this moment only (same forms as --from)
    #[arg(long, value_name = "TIME", requires = "input", conflicts_with = "to")]
    pub at: Option<String>,
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub filters: FilterArgs,
    #[command(flatten)]
    pub live: LiveArgs,
}

#[derive(Debug, Args)]
pub struct LeaksArgs {
    /// One JSON object per refresh
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub leak: LeakThresholdArgs,
    /// Hand the suspects (CLOSE_WAIT longer than --threshold) to `tcpstate kill` instead of watching
    #[arg(long)]
    pub kill: bool,
    #[command(flatten)]
    pub owner: OwnerArgs,
    #[command(flatten)]
    pub act: KillActArgs,
    /// Refresh at most this often when something changed
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub every: std::time::Duration,
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub filters: FilterArgs,
    #[command(flatten)]
    pub live: LiveArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Serve metrics on this address (GET /metrics); loopback unless told otherwise
    #[arg(
        long = "metrics",
        value_name = "ADDR",
        default_value = "127.0.0.1:9464"
    )]
    pub metrics: std::net::SocketAddr,
    /// Per-process series for the N processes with the most sockets; the rest summed under pid="other"
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top_processes: usize,
    /// TIME_WAIT series for the N destinations with the most; the rest summed under remote="other"
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top_destinations: usize,
    #[command(flatten)]
    pub leak: LeakThresholdArgs,
    #[command(flatten)]
    pub live: LiveArgs,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub leak: LeakThresholdArgs,
    #[command(flatten)]
    pub filters: FilterArgs,
    #[command(flatten)]
    pub live: LiveArgs,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Watch the live traffic this long before reporting (e.g. 30s, 5m)
    #[arg(long = "for", value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub watch: std::time::Duration,
    /// One JSON object instead of text
    #[arg(long)]
    pub json: bool,
    /// Report ESTABLISHED connections older than this (e.g. 2h, 30m)
    #[arg(long, value_name = "DURATION", default_value = "2h", value_parser = parse_duration)]
    pub established_age: std::time::Duration,
    #[command(flatten)]
    pub live: LiveArgs,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// JSON Lines output (one object per line, stable field names)
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub filters: FilterArgs,
    #[command(flatten)]
    pub live: LiveArgs,
}

#[derive(Debug, Args, Default)]
pub struct FilterArgs {
    /// Only sockets with this local or remote port (repeatable)
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,
    /// Only this local address: IP, IP:PORT, [IPv6]:PORT or a network (repeatable)
    #[arg(long = "laddr", value_name = "ADDR", value_parser = parse_addr)]
    pub laddrs: Vec<AddrFilter>,
    /// Only this remote address: IP, IP:PORT, [IPv6]:PORT or a network (repeatable)
    #[arg(long = "raddr", value_name = "ADDR", value_parser = parse_addr)]
    pub raddrs: Vec<AddrFilter>,
    /// Only transitions into or out of this state, e.g. CLOSE_WAIT (repeatable, or comma-separated)
    #[arg(long = "state", value_name = "STATE", value_delimiter = ',', value_parser = parse_state)]
    pub states: Vec<TcpState>,
    /// Only sockets of this family: ipv4 or ipv6 (an IPv6 socket talking to an IPv4-mapped peer is ipv6)
    #[arg(long, value_name = "FAMILY", value_parser = parse_family_arg)]
    pub family: Option<Family>,
    /// Only sockets in this network namespace: inode, name from `ip netns`, or /proc/PID/ns/net (repeatable)
    #[arg(long = "netns", value_name = "NETNS", value_parser = parse_netns_arg)]
    pub netns: Vec<u32>,
    /// Only sockets whose owner is in this cgroup: id or path under /sys/fs/cgroup (repeatable)
    #[arg(long = "cgroup", value_name = "CGROUP", value_parser = parse_cgroup_arg)]
    pub cgroups: Vec<u64>,
}

/// Filters that some commands cannot apply: `--state` (a transition's,
/// not a socket's) and `--cgroup` (an owner's, learnt after the socket's
/// first transitions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsupported {
    State,
    Cgroup,
}

impl FilterArgs {
    /// Err (the message) when a filter the command does not apply is set:
    /// refused rather than silently ignored.
    pub fn refuse(&self, command: &str, unsupported: &[Unsupported]) -> Result<(), String> {
        for flag in unsupported {
            let (set, name, instead) = match flag {
                Unsupported::State => (
                    !self.states.is_empty(),
                    "--state",
                    "`tcpstate trace --state` shows the transitions into or out of a state",
                ),
                Unsupported::Cgroup => (
                    !self.cgroups.is_empty(),
                    "--cgroup",
                    "`tcpstate trace --cgroup` and `tcpstate life --cgroup` filter by the owner's cgroup",
                ),
            };
            if set {
                return Err(format!(
                    "`tcpstate {command}` does not take {name}: {instead}"
                ));
            }
        }
        Ok(())
    }

    pub fn to_filter(&self) -> Filter {
        Filter {
            ports: self.ports.clone(),
            laddrs: self.laddrs.clone(),
            raddrs: self.raddrs.clone(),
            states: self.states.clone(),
            family: self.family,
            netns: self.netns.clone(),
            cgroups: self.cgroups.clone(),
        }
    }
}

/// `--threshold`, for the commands that look for CLOSE_WAIT leaks.
#[derive(Clone, Copy, Debug, Args)]
pub struct LeakThresholdArgs {
    /// A socket in CLOSE_WAIT longer than this is a leak suspect (e.g. 30s, 2m)
    #[arg(long = "threshold", default_value = "30s", value_parser = parse_secs)]
    pub threshold_secs: u64,
}

#[derive(Debug, Args)]
pub struct LiveArgs {
    /// Ring buffer size: a power of two, e.g. 4M, 16M, 64M (the default holds a burst of ~150,000 transitions)
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = parse_size)]
    pub ring_size: u64,
    /// Wake up after this many bytes are queued (default: 4,096 records, or a quarter of the ring)
    #[arg(long, value_name = "SIZE", value_parser = parse_size, hide = true)]
    pub wakeup_size: Option<u64>,
    /// Also record what is traced to FILE (see `tcpstate record`)
    #[arg(long, value_name = "FILE")]
    pub record: Option<std::path::PathBuf>,
}

/// Owner filters of `kill` and `stale` (issue 12).
#[derive(Clone, Debug, Args, Default)]
pub struct OwnerArgs {
    /// Only sockets held by this process (repeatable); without --netns, looked for in its network namespace
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Only sockets held by a process of this name, as in /proc/PID/comm (repeatable)
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,
}

/// Whether and how `kill` acts (issue 12).
#[derive(Clone, Copy, Debug, Args)]
pub struct KillActArgs {
    /// Only show what would be killed
    #[arg(long)]
    pub dry_run: bool,
    /// Kill without asking (otherwise a terminal is asked for confirmation)
    #[arg(long)]
    pub yes: bool,
    /// Stop, killing nothing, when more than N sockets are selected
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub max: usize,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    #[command(flatten)]
    pub filters: FilterArgs,
    #[command(flatten)]
    pub owner: OwnerArgs,
    /// Only sockets whose peer has been silent this long (tcp_info last_ack_recv), e.g. 10m
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub older_than: Option<std::time::Duration>,
    #[command(flatten)]
    pub act: KillActArgs,
}

#[derive(Debug, Args)]
pub struct StaleArgs {
    /// Look at ESTABLISHED connections whose peer has sent nothing for this long (e.g. 5m, 30s)
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub silent_for: std::time::Duration,
    /// One JSON object instead of text
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub filters: FilterArgs,
    #[command(flatten)]
    pub owner: OwnerArgs,
}

fn parse_addr(s: &str) -> Result<AddrFilter, String> {
    s.parse()
        .map_err(|e: crate::filter::FilterError| e.to_string())
}

fn parse_state(s: &str) -> Result<TcpState, String> {
    s.parse()
        .map_err(|e: crate::tcp::UnknownState| e.to_string())
}

fn parse_netns_arg(s: &str) -> Result<u32, String> {
    crate::filter::parse_netns(s).map_err(|e| e.to_string())
}

fn parse_cgroup_arg(s: &str) -> Result<u64, String> {
    crate::filter::parse_cgroup(s).map_err(|e| e.to_string())
}

fn parse_family_arg(s: &str) -> Result<Family, String> {
    parse_family(s).map_err(|e| e.to_string())
}

/// `30s`, `500ms`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let text = s.trim();
    let bad = || format!("bad duration `{s}`: expected e.g. 500ms, 30s, 2m, 1h");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => Some(value),
        "" | "s" => value.checked_mul(1_000),
        "m" => value.checked_mul(60_000),
        "h" => value.checked_mul(3_600_000),
        _ => return Err(bad()),
    };
    ms.map(std::time::Duration::from_millis).ok_or_else(bad)
}

pub fn parse_secs(s: &str) -> Result<u64, String> {
    parse_duration(s).map(|d| d.as_secs())
}

/// `4096`, `64K`, `16M`, `1G` (binary multiples; a trailing `B`/`iB` is fine).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let text = s.trim().to_ascii_uppercase();
    let text = text
        .strip_suffix("IB")
        .or_else(|| text.strip_suffix('B'))
        .unwrap_or(&text);
    let (digits, shift) = match text.chars().last() {
        Some('K') => (&text[..text.len() - 1], 10),
        Some('M') => (&text[..text.len() - 1], 20),
        Some('G') => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    let value: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("bad size `{s}`: expected bytes like 4096, 64K, 16M or 1G"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("size `{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5 days").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("16m"), Ok(16 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2MB"), Ok(2 << 20));
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("-1K").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn trace_flags_parse_into_a_filter() {
        let cli = Cli::try_parse_from([
            "tcpstate",
            "trace",
            "--port",
            "80",
            "--port",
            "443",
            "--state",
            "time_wait,CLOSE_WAIT",
            "--laddr",
            "10.0.0.0/8",
            "--raddr",
            "[::1]:5432",
            "--family",
            "ipv6",
            "--json",
        ])
        .unwrap();
        let Command::Trace(args) = cli.command else {
            panic!("not trace");
        };
        assert!(args.json);
        let filter = args.filters.to_filter();
        assert_eq!(filter.ports, vec![80, 443]);
        assert_eq!(filter.states, vec![TcpState::TimeWait, TcpState::CloseWait]);
        assert_eq!(filter.laddrs.len(), 1);
        assert_eq!(filter.raddrs[0].port, Some(5432));
        assert_eq!(filter.family, Some(Family::Ipv6));
        assert_eq!(args.live.ring_size, 16 << 20);
    }

    #[test]
    fn bad_flags_are_refused_with_the_reason() {
        let err = Cli::try_parse_from(["tcpstate", "trace", "--state", "WAITING"]).unwrap_err();
        assert!(
            err.to_string().contains("unknown TCP state `WAITING`"),
            "{err}"
        );
        let err = Cli::try_parse_from(["tcpstate", "trace", "--laddr", "host"]).unwrap_err();
        assert!(err.to_string().contains("bad address `host`"), "{err}");
        assert!(Cli::try_parse_from(["tcpstate", "trace", "--port", "70000"]).is_err());
        assert!(Cli::try_parse_from(["tcpstate", "trace", "--family", "ipx"]).is_err());
    }
}

/// `tcpstate ports` (issue 11).
#[derive(Debug, Args)]
pub struct PortsArgs {
    /// One JSON object per refresh
    #[arg(long)]
    pub json: bool,
    /// Refresh at most this often when something changed
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub every: std::time::Duration,
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub filters: FilterArgs,
    #[command(flatten)]
    pub live: LiveArgs,
}

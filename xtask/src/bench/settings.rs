//! `cargo xtask bench` options, and the settings they resolve to.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use clap::Args;
use serde::Serialize;

use super::churn::Workload;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// A few seconds, tiny counts, no bpftrace, debug build: checks that
    /// every figure is produced (CI), not how fast anything is
    #[arg(long)]
    pub smoke: bool,
    /// Rounds: each configuration runs once per round, alternating
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Length of each saturating run, in seconds
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Offered load of the rate-limited runs, connections/s
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// Length of each rate-limited run, in seconds
    #[arg(long, default_value_t = 4.0)]
    pub rate_seconds: f64,
    /// Client threads of the churn
    #[arg(long, default_value_t = 2)]
    pub clients: usize,
    /// Listening addresses (one server thread each)
    #[arg(long, default_value_t = 4)]
    pub listeners: usize,
    /// Client source addresses
    #[arg(long, default_value_t = 64)]
    pub sources: usize,
    /// Who closes first
    #[arg(long, default_value = "client", value_parser = ["client", "server"])]
    pub close: String,
    /// Run the churn between two network namespaces joined by a veth pair
    /// (made and removed by the bench) instead of over loopback
    #[arg(long)]
    pub netns: bool,
    /// Leave bpftrace out of the comparison
    #[arg(long)]
    pub no_bpftrace: bool,
    /// Transitions in the recording whose replay is timed
    #[arg(long, default_value_t = 10_000_000)]
    pub replay_transitions: u64,
    /// Open connections fed to the model to measure its memory
    #[arg(long, default_value_t = 1_000_000)]
    pub model_connections: u64,
    /// Only these configurations (comma-separated: trace, stat, record,
    /// serve, bpftrace, bpftrace-count; the untraced baseline always runs)
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub configs: Vec<String>,
    /// Only these phases (comma-separated: saturating, fixed, time-wait)
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub phases: Vec<String>,
    /// The time-wait phase's cap on TIME_WAIT sockets in its client
    /// namespace (net.ipv4.tcp_max_tw_buckets there): high enough that
    /// every connection of the phase leaves a real time-wait socket
    #[arg(long, default_value_t = 4_194_304)]
    pub tw_buckets: u64,
    /// Measure this tcpstate binary instead of building one (the churn
    /// generator and probe of an earlier bench's build are reused)
    #[arg(long, value_name = "FILE")]
    pub tcpstate: Option<PathBuf>,
    /// Write the JSON results here (default: target/bench/bench.json)
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the Markdown report here (default: BENCHMARKS.md at the root;
    /// with --smoke, target/bench/smoke/BENCHMARKS.md)
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
}

/// The ids `--configs` and `--phases` accept.
pub const CONFIGS: [&str; 6] = [
    "trace",
    "stat",
    "record",
    "serve",
    "bpftrace",
    "bpftrace-count",
];
pub const PHASES: [&str; 3] = ["saturating", "fixed", "time-wait"];

impl Settings {
    pub fn runs_config(&self, id: &str) -> bool {
        self.configs.iter().any(|c| c == id)
    }

    pub fn runs_phase(&self, id: &str) -> bool {
        self.phases.iter().any(|p| p == id)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub smoke: bool,
    pub release: bool,
    pub rounds: usize,
    pub saturating: Workload,
    pub rate_limited: Workload,
    /// Saturating churn between two fresh namespaces (real addresses on a
    /// veth pair, the client closes first) that keeps a time-wait socket
    /// for every connection (issue 15).
    pub time_wait: Workload,
    pub tw_buckets: u64,
    /// The configurations and phases to run (ids).
    pub configs: Vec<String>,
    pub phases: Vec<String>,
    pub bpftrace: bool,
    /// Churn between two network namespaces instead of over loopback.
    pub netns: bool,
    pub replay_transitions: u64,
    pub model_connections: u64,
    pub latency_events: usize,
    pub warmup_s: f64,
    pub json: PathBuf,
    pub markdown: PathBuf,
}

impl Settings {
    pub fn resolve(
        a: &BenchArgs,
        root: &std::path::Path,
        target: &std::path::Path,
    ) -> Result<Self> {
        ensure!((1..=20).contains(&a.rounds), "--rounds must be 1 to 20");
        for (name, s) in [("--seconds", a.seconds), ("--rate-seconds", a.rate_seconds)] {
            ensure!(
                s.is_finite() && (0.2..=120.0).contains(&s),
                "{name} must be 0.2 to 120"
            );
        }
        ensure!(
            a.rate.is_finite() && a.rate > 0.0 && a.rate <= 1e6,
            "--rate must be 1 to 1000000"
        );
        ensure!((1..=64).contains(&a.clients), "--clients must be 1 to 64");
        ensure!(
            (1..=250).contains(&a.listeners),
            "--listeners must be 1 to 250"
        );
        ensure!(a.sources <= 60_000, "--sources must be at most 60000");
        ensure!(
            (1_000..=100_000_000).contains(&a.replay_transitions),
            "--replay-transitions must be 1000 to 100000000"
        );
        ensure!(
            (1_000..=10_000_000).contains(&a.model_connections),
            "--model-connections must be 1000 to 10000000"
        );
        for c in &a.configs {
            ensure!(
                CONFIGS.contains(&c.as_str()),
                "--configs: unknown configuration `{c}`; choose from {}",
                CONFIGS.join(", ")
            );
        }
        for p in &a.phases {
            ensure!(
                PHASES.contains(&p.as_str()),
                "--phases: unknown phase `{p}`; choose from {}",
                PHASES.join(", ")
            );
        }
        ensure!(
            (1_000..=16_777_216).contains(&a.tw_buckets),
            "--tw-buckets must be 1000 to 16777216"
        );
        let or_all = |chosen: &[String], all: &[&str]| {
            if chosen.is_empty() {
                all.iter().map(|s| s.to_string()).collect()
            } else {
                chosen.to_vec()
            }
        };
        let smoke = a.smoke;
        let out = target.join("bench");
        let dir = if smoke { out.join("smoke") } else { out };
        let workload = |rate: Option<f64>, seconds: f64| Workload {
            rate,
            seconds,
            max_connections: 50_000_000,
            clients: a.clients,
            listeners: a.listeners,
            sources: a.sources,
            close: a.close.clone(),
            netns: None,
        };
        Ok(Settings {
            smoke,
            release: !smoke,
            rounds: if smoke { 1 } else { a.rounds },
            saturating: workload(None, if smoke { 0.5 } else { a.seconds }),
            rate_limited: if smoke {
                workload(Some(1_000.0), 0.5)
            } else {
                workload(Some(a.rate), a.rate_seconds)
            },
            time_wait: Workload {
                close: "client".to_string(),
                ..workload(None, if smoke { 0.5 } else { a.seconds })
            },
            tw_buckets: a.tw_buckets,
            configs: or_all(&a.configs, &CONFIGS),
            phases: or_all(&a.phases, &PHASES),
            bpftrace: !smoke && !a.no_bpftrace,
            netns: a.netns,
            replay_transitions: if smoke { 50_000 } else { a.replay_transitions },
            model_connections: if smoke { 10_000 } else { a.model_connections },
            latency_events: if smoke { 2 } else { 5 },
            warmup_s: if smoke { 0.3 } else { 2.0 },
            json: a.json.clone().unwrap_or_else(|| dir.join("bench.json")),
            markdown: a.markdown.clone().unwrap_or_else(|| {
                if smoke {
                    dir.join("BENCHMARKS.md")
                } else {
                    root.join("BENCHMARKS.md")
                }
            }),
        })
    }
}

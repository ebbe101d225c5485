//! `tcpstate doctor`: the host's TCP sysctls and counters, a watch of the
//! live traffic through the connection model, and findings with the numbers
//! behind them and advice that is right for the running kernel.
//!
//! - the facts read from `/proc` come from [`crate::source::sysctl_advice`]
//!   and [`crate::source::net_counters`]; [`counters`] picks what is shown;
//! - [`facts`]: the pipeline view of the watch and what the model says at
//!   its end;
//! - [`findings`], [`notes`]: pure functions of a [`DoctorInput`];
//! - [`render`]: the text report.
pub mod counters;
pub mod facts;
pub mod findings;
pub mod notes;
pub mod render;

#[cfg(test)]
mod tests;

pub use crate::source::sysctl_advice::{DoctorSysctls, Kernel};
use counters::{CounterDelta, CountersView};
use facts::ModelFacts;
use serde::Serialize;

/// How long a socket stays in TIME_WAIT: `TCP_TIMEWAIT_LEN`, compiled into
/// the kernel; no sysctl changes it.
pub const TIME_WAIT_SECS: f64 = 60.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One thing the data shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// Stable: `time-wait`, `time-wait-overflow`, `close-wait-leak`,
    /// `listen-overflow`, `old-established`, `aborts`, `dead-peer`.
    pub id: &'static str,
    pub severity: Severity,
    pub title: String,
    /// The numbers behind it, structured.
    pub evidence: serde_json::Value,
    /// The same numbers, in sentences.
    pub details: Vec<String>,
    pub advice: Vec<String>,
}

/// A correction of common advice, always listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Note {
    pub id: &'static str,
    pub text: String,
}

/// Everything the findings are computed from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DoctorInput {
    pub kernel: Kernel,
    pub sysctls: DoctorSysctls,
    pub counters: CounterDelta,
    /// How long the traffic was watched.
    pub watch_secs: f64,
    pub facts: ModelFacts,
    /// tcpstate's own programs on this host, and what works without them.
    pub tracer: Vec<TracerPart>,
    /// ESTABLISHED connections whose peer looks gone, from a dump with
    /// tcp_info at the end (issue 12).
    pub dead_peers: crate::views::stale::StaleReport,
}

/// One part of the tracer (a BPF program, or the kernel's count of the hits
/// it skipped) and whether it works on this host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TracerPart {
    /// A program name, or what the part is.
    pub part: String,
    /// Where it attaches, or what provides it.
    pub hook: String,
    /// What it gives.
    pub purpose: String,
    /// `attached` (`counted`), `off` (not needed by this command) or
    /// `unavailable`.
    pub status: &'static str,
    /// Why not, when unavailable.
    pub why: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WatchSummary {
    pub seconds: f64,
    pub transitions: u64,
    pub lost_events: u64,
    pub uncertain_connections: usize,
}

/// The whole answer: `--json` prints it as one object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DoctorReport {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub host: String,
    pub kernel: Kernel,
    pub watch: WatchSummary,
    pub sysctls: DoctorSysctls,
    pub counters: CountersView,
    pub tracer: Vec<TracerPart>,
    pub findings: Vec<Finding>,
    pub notes: Vec<Note>,
}

impl DoctorReport {
    pub fn new(host: String, input: &DoctorInput) -> Self {
        DoctorReport {
            kind: "doctor",
            host,
            kernel: input.kernel.clone(),
            watch: WatchSummary {
                seconds: input.watch_secs,
                transitions: input.facts.transitions,
                lost_events: input.facts.lost_events,
                uncertain_connections: input.facts.uncertain_connections,
            },
            sysctls: input.sysctls.clone(),
            counters: input.counters.view(),
            tracer: input.tracer.clone(),
            findings: findings::findings(input),
            notes: notes::notes(input),
        }
    }
}

/// `12 s`, `4.5 min`, `2.0 h`.
pub fn duration_text(secs: f64) -> String {
    if secs < 120.0 {
        format!("{secs:.0} s")
    } else if secs < 7200.0 {
        format!("{:.1} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

/// A sysctl's value, or `unknown`.
pub fn value_text<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "unknown".to_string(), |v| v.to_string())
}

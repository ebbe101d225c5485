//! The results: one structure, written as JSON, printed as a table and
//! rendered as BENCHMARKS.md (see [`super::markdown`]).

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::extras::{ModelMemory, Replay};
use super::fmt::{dec, mib, opt_int};
use super::latency::Latency;
use super::machine::Machine;
use super::phase::Phase;
use super::settings::Settings;
use super::targets::Target;

pub const SCHEMA: u32 = 1;

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub schema: u32,
    pub command: String,
    pub machine: Machine,
    pub settings: Settings,
    pub saturating: Phase,
    pub rate_limited: Phase,
    /// Saturating churn that leaves a real time-wait socket per connection.
    pub time_wait: Phase,
    pub latency: Latency,
    pub replay: Replay,
    pub model_memory: ModelMemory,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
    pub not_measured: Vec<String>,
    pub duration_s: f64,
}

pub const HEADERS: [&str; 9] = [
    "configuration",
    "connections/s",
    "vs baseline",
    "tracer CPU s / M transitions",
    "machine CPU added µs / transition",
    "lost (kernel skips)",
    "peak RSS",
    "transitions / wake-up",
    "BPF ns / transition",
];

/// The cells of a phase's table, one row per configuration.
pub fn rows(phase: &Phase) -> Vec<Vec<String>> {
    phase
        .summary
        .iter()
        .map(|c| {
            let mut lost = match (c.lost_total, c.kernel_skipped_total) {
                (Some(l), Some(s)) => format!("{l} ({s})"),
                (Some(l), None) => l.to_string(),
                _ => "-".into(),
            };
            if let Some(k) = c
                .lost_causes_total
                .filter(|_| c.lost_total.unwrap_or(0) > 0)
            {
                lost.push_str(&format!(
                    " = {} full + {} busy + {} skipped",
                    k.ring_full, k.ring_busy, k.skipped
                ));
            }
            vec![
                c.label.to_string(),
                opt_int(c.connections_per_sec),
                dec(c.ratio_to_baseline, 3),
                dec(c.tracer_cpu_s_per_m, 2),
                dec(c.machine_added_us_per_transition, 2),
                lost,
                mib(c.peak_rss_bytes),
                dec(c.transitions_per_wakeup, 0),
                dec(c.bpf_ns_per_transition, 0),
            ]
        })
        .collect()
}

/// Plain text, columns aligned (numbers to the right).
pub fn text_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// Numbers (every column but the first) aligned right when `numeric`.
pub fn markdown_table(headers: &[&str], rows: &[Vec<String>], numeric: bool) -> String {
    let mut out = format!("| {} |\n", headers.join(" | "));
    out.push_str(&format!(
        "|{}\n",
        headers
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 || !numeric { "---|" } else { "---:|" })
            .collect::<String>()
    ));
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ").replace('\n', " ")));
    }
    out
}

pub fn met_word(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "NOT MET",
        None => "not measured",
    }
}

/// What the command prints at the end.
pub fn print(r: &BenchReport) {
    println!();
    for phase in [&r.saturating, &r.rate_limited, &r.time_wait] {
        if phase.runs.is_empty() {
            continue;
        }
        println!("{}", super::markdown::phase_title(phase));
        println!("{}", text_table(&HEADERS, &rows(phase)));
    }
    println!(
        "isolated event: median {:.1} ms, worst {:.1} ms over {} events",
        r.latency.median_ms, r.latency.max_ms, r.latency.events
    );
    println!(
        "replay: decoder {}, tcpstate stat --input {} ({} transitions)",
        super::fmt::per_sec_m(r.replay.decode_per_sec),
        super::fmt::per_sec_m(r.replay.pipeline_per_sec),
        super::fmt::int(r.replay.transitions as f64)
    );
    println!(
        "model: {:.0} bytes per live connection ({} connections)",
        r.model_memory.bytes_per_connection,
        super::fmt::int(r.model_memory.connections as f64)
    );
    println!();
    println!("targets:");
    for t in &r.targets {
        println!("  [{}] {}: {}", met_word(t.met), t.target, t.figure);
        if let Some(why) = &t.limited_by {
            println!("        limited by: {why}");
        }
    }
    for n in &r.not_measured {
        println!("not measured: {n}");
    }
}

pub fn write_json(r: &BenchReport, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(r)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables() {
        let rows = vec![vec!["a".to_string(), "1,000".to_string()]];
        assert_eq!(
            text_table(&["name", "n"], &rows),
            "name      n\na     1,000\n"
        );
        assert_eq!(
            markdown_table(&["name", "n"], &rows, true),
            "| name | n |\n|---|---:|\n| a | 1,000 |\n"
        );
    }
}

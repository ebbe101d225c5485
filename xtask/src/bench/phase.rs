//! A phase of the comparison: every configuration once per round, in an
//! order that rotates from round to round, then medians.

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::churn::Workload;
use super::measure::{self, Context, RunResult};
use super::settings::Settings;
use super::summary::{self, ConfigSummary};
use super::tracer::Kind;
use crate::cmd::phase;

#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    pub name: &'static str,
    pub workload: Workload,
    pub rounds: usize,
    pub runs: Vec<RunResult>,
    pub summary: Vec<ConfigSummary>,
}

impl Phase {
    /// A phase left out of this run (`--phases`): no runs.
    pub fn skipped(name: &'static str, workload: &Workload) -> Phase {
        Phase {
            name,
            workload: workload.clone(),
            rounds: 0,
            runs: Vec::new(),
            summary: Vec::new(),
        }
    }

    pub fn config(&self, kind: Kind) -> Option<&ConfigSummary> {
        self.summary.iter().find(|s| s.config == kind.id())
    }
}

/// Runs the phase `name` if `--phases` chose it, else an empty one.
pub fn run_if(
    settings: &Settings,
    cx: &mut Context<'_>,
    name: &'static str,
    kinds: &[Kind],
    workload: &Workload,
) -> Result<Phase> {
    if settings.runs_phase(name) {
        run(cx, name, kinds, settings.rounds, workload)
    } else {
        Ok(Phase::skipped(name, workload))
    }
}

pub fn run(
    cx: &mut Context<'_>,
    name: &'static str,
    kinds: &[Kind],
    rounds: usize,
    workload: &Workload,
) -> Result<Phase> {
    let mut runs = Vec::new();
    for round in 0..rounds {
        let n = kinds.len();
        for i in 0..n {
            let kind = kinds[(i + round) % n];
            let r = measure::run_once(cx, kind, round, workload)
                .with_context(|| format!("{name}, round {}: {}", round + 1, kind.label()))?;
            let lost = r.tracer.as_ref().map_or(String::new(), |t| {
                format!(
                    ", {} lost (started in {:.1} s, stopped in {:.1} s)",
                    t.lost(kind.is_tcpstate())
                        .map_or("?".to_string(), |l| l.to_string()),
                    t.start_s,
                    t.stop_s
                )
            });
            phase(format!(
                "bench: {name} {}/{rounds}: {:<34} {:>9.0} connections/s{lost}",
                round + 1,
                kind.label(),
                r.churn.connections_per_sec,
            ));
            runs.push(r);
        }
    }
    let summary = kinds
        .iter()
        .map(|&k| summary::summarize(k, &runs))
        .collect();
    Ok(Phase {
        name,
        workload: workload.clone(),
        rounds,
        runs,
        summary,
    })
}

//! `cargo xtask ab A B`: two tcpstate binaries, one command, measured in
//! interleaved rounds at a fixed offered load (issue 15).
//!
//! On a shared machine one bench run cannot resolve a change of 5-10%: its
//! speed drifts by more than that between runs. Here each round runs both
//! binaries back to back, in alternating order, and the figure that decides
//! is the median of the per-round differences, B - A.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;

use super::measure::{self, Context, RunResult, TracerRun};
use super::settings::{BenchArgs, Settings};
use super::summary::{self, median};
use super::tracer::{Kind, Poker, Tools};
use super::{bpfstats, build, child, TempDir};
use crate::cmd::phase as say;
use crate::workspace::Workspace;

#[derive(Args, Debug, Clone)]
pub struct AbArgs {
    /// The first tcpstate binary (e.g. a release build of main)
    pub a: PathBuf,
    /// The second tcpstate binary (the change)
    pub b: PathBuf,
    /// The command both run
    #[arg(long, default_value = "stat", value_parser = ["trace", "stat", "record", "serve"])]
    pub command: String,
    /// Rounds: each runs A and B once, in alternating order
    #[arg(long, default_value_t = 6)]
    pub rounds: usize,
    /// Offered load, connections/s (over loopback)
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// Length of each run, in seconds
    #[arg(long, default_value_t = 4.0)]
    pub seconds: f64,
}

/// What one run cost, per transition the tracepoint saw, in ns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunCost {
    /// The tracer's user + system time and all its BPF programs.
    pub total: f64,
    /// Its programs on the set_state tracepoint.
    pub set_state: f64,
    pub user_sys: f64,
}

impl RunCost {
    pub fn of(t: &TracerRun) -> Option<RunCost> {
        let n = t.transitions() as f64;
        (n > 0.0).then(|| {
            let user_sys = (t.user_s + t.sys_s) * 1e9 / n;
            RunCost {
                total: user_sys + t.bpf_run_time_ns as f64 / n,
                set_state: t.tracepoint_run_time_ns as f64 / n,
                user_sys,
            }
        })
    }
}

/// Medians of B - A over the rounds where both runs have a cost, and how
/// many rounds B came out lower.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Paired {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub b_lower: usize,
    pub rounds: usize,
}

pub fn paired(a: &[Option<f64>], b: &[Option<f64>]) -> Option<Paired> {
    let diffs: Vec<f64> = a
        .iter()
        .zip(b)
        .filter_map(|(a, b)| Some(b.as_ref()? - a.as_ref()?))
        .collect();
    Some(Paired {
        median: median(diffs.clone())?,
        min: diffs.iter().copied().fold(f64::INFINITY, f64::min),
        max: diffs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        b_lower: diffs.iter().filter(|d| **d < 0.0).count(),
        rounds: diffs.len(),
    })
}

pub fn run(ws: &Workspace, args: &AbArgs) -> Result<i32> {
    super::require_root()?;
    let kind = [Kind::Trace, Kind::Stat, Kind::Record, Kind::Serve]
        .into_iter()
        .find(|k| k.id() == args.command)
        .context("unknown --command")?;
    let built = build::prebuilt(ws, &args.a)?;
    anyhow::ensure!(args.b.is_file(), "{}: no such file", args.b.display());
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    let _lock = crate::test::kernel_tests_lock()?;
    child::catch_interrupts();
    let tmp = TempDir::new()?;
    let _stats = bpfstats::StatsEnabled::enable()?;
    let poker = Poker::new()?;
    // The bench's fixed-rate phase, with its defaults for everything else.
    let (rate, seconds) = (args.rate.to_string(), args.seconds.to_string());
    let bench = BenchArgs::parse_given(&["--rate", &rate, "--rate-seconds", &seconds]);
    let workload = Settings::resolve(&bench, &ws.root, &ws.target_dir)?.rate_limited;
    let mut tools = Tools {
        tcpstate: built.tcpstate,
        churn: built.churn,
        probe: built.probe,
        bpftrace: None,
    };
    let binaries = [args.a.clone(), args.b.clone()];
    let mut runs: [Vec<RunResult>; 2] = [Vec::new(), Vec::new()];
    let mut seq = 0;
    for round in 0..args.rounds {
        for i in 0..2 {
            let side = (i + round) % 2;
            tools.tcpstate = binaries[side].clone();
            let mut cx = Context {
                tools: &tools,
                dir: &tmp.0,
                poker: &poker,
                seq,
            };
            let r = measure::run_once(&mut cx, kind, round, &workload)
                .with_context(|| format!("round {}: {}", round + 1, binaries[side].display()))?;
            seq = cx.seq;
            let cost = r.tracer.as_ref().and_then(RunCost::of);
            say(format!(
                "ab: round {}/{}: {} {}: {}",
                round + 1,
                args.rounds,
                ["A", "B"][side],
                kind.id(),
                cost.map_or("no transitions seen".to_string(), |c| format!(
                    "{:.0} ns per transition (set_state {:.0}, user+sys {:.0})",
                    c.total, c.set_state, c.user_sys
                ))
            ));
            runs[side].push(r);
        }
    }
    report(kind, &binaries, &runs);
    Ok(0)
}

fn report(kind: Kind, binaries: &[PathBuf; 2], runs: &[Vec<RunResult>; 2]) {
    for (side, name) in ["A", "B"].iter().enumerate() {
        let s = summary::summarize(kind, &runs[side]);
        say(format!(
            "ab: {name} = {}: {} per transition (medians): {} ns",
            binaries[side].display(),
            kind.id(),
            super::markdown::cpu_parts_line(&s.cpu_parts)
        ));
    }
    let costs = |side: usize, f: fn(&RunCost) -> f64| -> Vec<Option<f64>> {
        runs[side]
            .iter()
            .map(|r| r.tracer.as_ref().and_then(RunCost::of).map(|c| f(&c)))
            .collect()
    };
    for (what, f) in [
        (
            "tracer CPU (user + sys + all BPF)",
            (|c: &RunCost| c.total) as fn(&RunCost) -> f64,
        ),
        ("set_state programs", |c| c.set_state),
        ("user + sys", |c| c.user_sys),
    ] {
        match paired(&costs(0, f), &costs(1, f)) {
            Some(p) => say(format!(
                "ab: B - A, {what}: median {:+.0} ns per transition (rounds: {:+.0} to {:+.0}; \
                 B lower in {} of {})",
                p.median, p.min, p.max, p.b_lower, p.rounds
            )),
            None => say(format!("ab: B - A, {what}: no round with both figures")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_differences_skip_rounds_missing_a_side() {
        let a = [Some(100.0), Some(110.0), None, Some(90.0)];
        let b = [Some(80.0), Some(115.0), Some(1.0), Some(70.0)];
        let p = paired(&a, &b).expect("three rounds");
        assert_eq!(
            p,
            Paired {
                median: -20.0,
                min: -20.0,
                max: 5.0,
                b_lower: 2,
                rounds: 3,
            }
        );
        assert_eq!(paired(&[None], &[Some(1.0)]), None);
    }
}

//! One measured run: a tracer (or none) while the churn runs, with what it
//! cost sampled just before and just after the churn.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use super::bpfstats::{self, ProgSample};
use super::churn::{self, ChurnResult, Workload};
use super::tracer::{Kind, Poker, Running, Tools};
use super::{child, output, procfs};

/// A loopback (or local veth) connection makes 5 transitions on each side,
/// both traced. Only used to put the baseline's machine CPU per transition;
/// the tracers' figures use the transitions their programs saw.
pub const TRANSITIONS_PER_CONNECTION: u64 = 10;

/// Time left for the tracer to drain after the churn ends, inside the window.
const SETTLE: Duration = Duration::from_millis(300);

#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub config: &'static str,
    pub round: usize,
    pub churn: ChurnResult,
    /// The measurement window (churn plus settle), and the whole machine's
    /// busy CPU time in it.
    pub window_s: f64,
    pub machine_busy_s: f64,
    /// The part of it the hypervisor gave to others (steal).
    pub machine_steal_s: f64,
    /// Time-wait sockets where the churn's clients run, just before and
    /// just after the churn (shows whether it made real ones).
    pub time_wait_before: Option<u64>,
    pub time_wait_after: Option<u64>,
    pub tracer: Option<TracerRun>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TracerRun {
    pub pid: u32,
    pub exit: String,
    /// From starting the tracer to its programs running; and how long it
    /// took to stop.
    pub start_s: f64,
    pub stop_s: f64,
    /// The tracer process, in the window.
    pub user_s: f64,
    pub sys_s: f64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    /// Its BPF programs, in the window.
    pub programs: Vec<ProgSample>,
    pub bpf_run_time_ns: u64,
    /// The tracer's programs on sock:inet_sock_set_state (tcpstate: its
    /// raw tracepoint programs, or raw and classic, the second standing in for the first
    /// one's misses; bpftrace: the one that ran most): the names, the hits
    /// (every program there sees each transition: runs + recursion misses),
    /// (ids), their run time together, and the times the kernel skipped any of
    /// them (recursion_misses, summed).
    pub tracepoint_programs: Vec<u32>,
    pub tracepoint_hits: u64,
    pub tracepoint_run_time_ns: u64,
    pub tracepoint_misses: u64,
    /// What the tracer reported over its life: transitions it delivered
    /// and lost (tcpstate's summary; bpftrace's lines and "Lost N events").
    pub reported_seen: Option<u64>,
    pub reported_lost: Option<u64>,
    /// tcpstate's causes of `reported_lost`, when it prints them.
    pub reported_lost_causes: Option<output::LostCauses>,
    /// tcpstate -v's wake-up count, when it prints one.
    pub reported_wakeups: Option<u64>,
    pub reported_transitions_per_wakeup: Option<f64>,
    pub peak_rss_bytes: Option<u64>,
    /// serve: scrapes answered with metrics during its life.
    pub scrapes: Option<u64>,
}

impl TracerRun {
    /// Transitions the tracepoint saw in the window (program runs and skips).
    pub fn transitions(&self) -> u64 {
        self.tracepoint_hits
    }

    /// Lost over the tracer's life: tcpstate's count already includes the
    /// transitions the kernel skipped all its programs for; bpftrace does
    /// not know about its skips, so they are added.
    pub fn lost(&self, kind_is_tcpstate: bool) -> Option<u64> {
        let reported = self.reported_lost?;
        Some(if kind_is_tcpstate {
            reported
        } else {
            reported + self.tracepoint_misses
        })
    }
}

pub struct Context<'a> {
    pub tools: &'a Tools,
    pub dir: &'a Path,
    pub poker: &'a Poker,
    pub seq: usize,
}

pub fn run_once(
    cx: &mut Context<'_>,
    kind: Kind,
    round: usize,
    workload: &Workload,
) -> Result<RunResult> {
    cx.seq += 1;
    let started = Instant::now();
    let mut tracer = match kind {
        Kind::Baseline => None,
        _ => {
            let mut t = Running::start(kind, cx.tools, cx.dir, cx.seq)?;
            t.wait_ready(cx.poker, Duration::from_secs(90))?;
            Some(t)
        }
    };
    let start_s = started.elapsed().as_secs_f64();
    let time_wait = || match &workload.netns {
        Some((_, client)) => super::netns::NetnsPair::time_wait_sockets(client),
        None => procfs::time_wait_sockets(),
    };
    let time_wait_before = time_wait();
    let before = tracer.as_ref().map(sample);
    let m0 = procfs::machine();
    let churn = churn::run(&cx.tools.churn, workload)?;
    child::sleep(SETTLE)?;
    let m1 = procfs::machine();
    let time_wait_after = time_wait();
    let after = tracer.as_ref().map(sample);
    let peak = tracer
        .as_ref()
        .and_then(|t| procfs::peak_rss_bytes(t.pid()));
    let tracer_run = match (tracer.take(), before, after) {
        (Some(t), Some(before), Some(after)) => Some(finish(t, before, after, peak, start_s)?),
        _ => None,
    };
    Ok(RunResult {
        config: kind.id(),
        round,
        churn,
        window_s: (m1.at - m0.at).as_secs_f64(),
        machine_busy_s: m1.busy_s - m0.busy_s,
        machine_steal_s: m1.steal_s - m0.steal_s,
        time_wait_before,
        time_wait_after,
        tracer: tracer_run,
    })
}

struct Sample {
    proc: procfs::ProcSample,
    progs: Vec<ProgSample>,
}

fn sample(t: &Running) -> Sample {
    Sample {
        proc: procfs::sample(t.pid()).unwrap_or_default(),
        progs: bpfstats::sample(&t.prog_ids),
    }
}

fn finish(
    t: Running,
    before: Sample,
    after: Sample,
    peak: Option<u64>,
    start_s: f64,
) -> Result<TracerRun> {
    let kind = t.kind;
    let pid = t.pid();
    let cpu = after.proc.since(&before.proc);
    let programs = bpfstats::delta(&before.progs, &after.progs);
    let on_tracepoint = tracepoint_programs(&programs);
    let stopping = Instant::now();
    let exit = t.stop()?;
    let stop_s = stopping.elapsed().as_secs_f64();
    let (reported_seen, reported_lost, reported_lost_causes) = if kind.is_tcpstate() {
        let summary = output::tcpstate_summary(&exit.stderr);
        (
            summary.map(|s| s.seen),
            summary.map(|s| s.lost),
            summary.and_then(|s| s.causes),
        )
    } else {
        let scan = exit.stdout.unwrap_or_default();
        let lost_on_stderr = output::scan(exit.stderr.as_bytes()).lost;
        let seen = (kind == Kind::BpftraceStream).then_some(scan.lines);
        (seen, Some(scan.lost + lost_on_stderr), None)
    };
    let wakeups = output::tcpstate_wakeups(&exit.stderr);
    if exit.scrapes == Some(0) {
        anyhow::bail!(
            "{} answered no scrape: {}",
            kind.label(),
            output::tail(&exit.stderr, 3)
        );
    }
    Ok(TracerRun {
        pid,
        exit: exit.how,
        start_s,
        stop_s,
        user_s: cpu.user_s,
        sys_s: cpu.sys_s,
        voluntary_switches: cpu.voluntary_switches,
        involuntary_switches: cpu.involuntary_switches,
        bpf_run_time_ns: programs.iter().map(|p| p.run_time_ns).sum(),
        tracepoint_programs: on_tracepoint.iter().map(|p| p.id).collect(),
        tracepoint_hits: on_tracepoint
            .iter()
            .map(|p| p.run_count + p.recursion_misses)
            .max()
            .unwrap_or(0),
        tracepoint_run_time_ns: on_tracepoint.iter().map(|p| p.run_time_ns).sum(),
        tracepoint_misses: on_tracepoint.iter().map(|p| p.recursion_misses).sum(),
        programs,
        reported_seen,
        reported_lost,
        reported_lost_causes,
        reported_wakeups: wakeups.map(|w| w.0),
        reported_transitions_per_wakeup: wakeups.and_then(|w| w.1),
        peak_rss_bytes: peak,
        scrapes: exit.scrapes,
    })
}

/// Name prefix of tcpstate's programs on sock:inet_sock_set_state (the
/// kernel keeps the first 15 bytes of a program's name).
pub const TCPSTATE_SET_STATE: &str = "tcpstate_set_st";

/// The programs on the set_state tracepoint: tcpstate's by name, else the
/// one that ran most.
fn tracepoint_programs(programs: &[ProgSample]) -> Vec<ProgSample> {
    let ours: Vec<ProgSample> = programs
        .iter()
        .filter(|p| p.name.starts_with(TCPSTATE_SET_STATE))
        .cloned()
        .collect();
    if !ours.is_empty() {
        return ours;
    }
    programs
        .iter()
        .max_by_key(|p| p.run_count + p.recursion_misses)
        .cloned()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prog(name: &str, runs: u64, misses: u64) -> ProgSample {
        ProgSample {
            id: 0,
            name: name.into(),
            prog_type: "TRACEPOINT".into(),
            run_time_ns: runs * 100,
            run_count: runs,
            recursion_misses: misses,
        }
    }

    #[test]
    fn tracepoint_programs_by_name_or_most_runs() {
        let tcpstate = [
            prog("tcpstate_set_st", 990, 10),
            prog("tcpstate_set_st", 998, 2),
            prog("tcpstate_accept", 100, 0),
        ];
        assert_eq!(tracepoint_programs(&tcpstate).len(), 2);
        let bpftrace = [prog("BEGIN", 1, 0), prog("tracepoint_sock", 1000, 3)];
        let found = tracepoint_programs(&bpftrace);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "tracepoint_sock");
    }
}

//! Medians over the rounds, per configuration.

use serde::Serialize;

use super::bpfstats::ProgSample;
use super::measure::{RunResult, TRANSITIONS_PER_CONNECTION};
use super::tracer::Kind;

pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// How the wake-up figure was obtained.
pub const WAKEUPS_REPORTED: &str = "reported by tcpstate -v";
pub const WAKEUPS_PROXY: &str = "voluntary context switches of the tracer (an upper bound)";

#[derive(Clone, Debug, Serialize)]
pub struct ProgramCost {
    pub name: String,
    pub prog_type: String,
    /// Which of the programs with this name and type, in attach order (0:
    /// the first raw program, 1: the second, its stand-in).
    pub nth: usize,
    pub ns_per_run: Option<f64>,
}

impl ProgramCost {
    /// The type, and which one when a run has several of that name.
    pub fn label(&self) -> String {
        match self.nth {
            0 => self.prog_type.clone(),
            n => format!("{} #{}", self.prog_type, n + 1),
        }
    }
}

/// Median ns per run of each program on the tracepoint, told apart by name,
/// type and attach order: the kernel keeps 15 bytes of a name, so
/// tcpstate's two raw programs both read "tcpstate_set_st".
fn program_costs(runs: &[&RunResult]) -> Vec<ProgramCost> {
    costs_of(
        runs.iter()
            .filter_map(|r| r.tracer.as_ref())
            .map(|t| (&t.programs[..], &t.tracepoint_programs[..])),
    )
}

/// [`program_costs`] of each run's programs and the ids of those on the
/// tracepoint.
fn costs_of<'a>(runs: impl Iterator<Item = (&'a [ProgSample], &'a [u32])>) -> Vec<ProgramCost> {
    let mut keys: Vec<(String, String, usize)> = Vec::new();
    let mut values: Vec<Vec<f64>> = Vec::new();
    for (programs, on_tracepoint) in runs {
        let mut ours: Vec<_> = programs
            .iter()
            .filter(|p| on_tracepoint.contains(&p.id))
            .collect();
        // Program ids grow in load order, which is the attach order.
        ours.sort_by_key(|p| p.id);
        let mut seen: Vec<(String, String)> = Vec::new();
        for p in ours {
            let named = (p.name.clone(), p.prog_type.clone());
            let nth = seen.iter().filter(|k| **k == named).count();
            seen.push(named);
            let key = (p.name.clone(), p.prog_type.clone(), nth);
            let i = keys.iter().position(|k| *k == key).unwrap_or_else(|| {
                keys.push(key);
                values.push(Vec::new());
                keys.len() - 1
            });
            if p.run_count > 0 {
                values[i].push(p.run_time_ns as f64 / p.run_count as f64);
            }
        }
    }
    keys.into_iter()
        .zip(values)
        .map(|((name, prog_type, nth), v)| ProgramCost {
            name,
            prog_type,
            nth,
            ns_per_run: median(v),
        })
        .collect()
}

#[derive(Clone, Debug, Serialize)]
pub struct ConfigSummary {
    pub config: &'static str,
    pub label: &'static str,
    pub runs: usize,
    pub connections_per_sec: Option<f64>,
    /// Median over rounds of this run's rate / the same round's baseline.
    pub ratio_to_baseline: Option<f64>,
    /// Tracer CPU (its process's user + sys, plus its BPF programs' run
    /// time) per million transitions, in seconds; also = µs per transition.
    pub tracer_cpu_s_per_m: Option<f64>,
    pub tracer_user_s_per_m: Option<f64>,
    pub tracer_sys_s_per_m: Option<f64>,
    pub bpf_s_per_m: Option<f64>,
    /// Whole-machine busy CPU per transition, minus the same round's
    /// baseline, in µs.
    pub machine_added_us_per_transition: Option<f64>,
    /// Lost over all runs, and the worst run; and the times the kernel
    /// skipped one of the tracer's tracepoint programs (recursion_misses).
    pub lost_total: Option<u64>,
    pub lost_max_run: Option<u64>,
    pub kernel_skipped_total: Option<u64>,
    /// tcpstate's own account of its losses over all runs, by cause (ring
    /// full, ring lock busy, skipped by the kernel), when every run gave it.
    pub lost_causes_total: Option<super::output::LostCauses>,
    /// The runs in which records found the ring full: (records lost that
    /// way, CPU seconds the hypervisor stole from the machine in the run).
    pub ring_full_runs: Vec<(u64, f64)>,
    pub peak_rss_bytes: Option<u64>,
    pub transitions_per_wakeup: Option<f64>,
    pub wakeups_from: Option<&'static str>,
    /// Run time of the tracer's programs on the set_state tracepoint per
    /// transition (one program per transition for bpftrace; tcpstate's raw
    /// program plus its stand-in, raw or classic).
    pub bpf_ns_per_transition: Option<f64>,
    /// Each of those programs: median ns per run.
    pub bpf_programs: Vec<ProgramCost>,
    /// Transitions the tracepoint saw per churn connection.
    pub transitions_per_connection: Option<f64>,
    pub transitions_in_window: Option<f64>,
    /// Time-wait sockets where the clients run, after the churn (median).
    pub time_wait_after: Option<f64>,
}

fn machine_us_per_transition(r: &RunResult) -> f64 {
    let transitions = (r.churn.connections * TRANSITIONS_PER_CONNECTION) as f64;
    r.machine_busy_s / transitions.max(1.0) * 1e6
}

pub fn summarize(kind: Kind, runs: &[RunResult]) -> ConfigSummary {
    let mine: Vec<&RunResult> = runs.iter().filter(|r| r.config == kind.id()).collect();
    let baseline = |round: usize| {
        runs.iter()
            .find(|r| r.config == Kind::Baseline.id() && r.round == round)
    };
    let per_run =
        |f: &dyn Fn(&RunResult) -> Option<f64>| median(mine.iter().filter_map(|r| f(r)).collect());
    let tracer_per_m = |f: &dyn Fn(&super::measure::TracerRun) -> f64| {
        per_run(&|r| {
            let t = r.tracer.as_ref()?;
            let n = t.transitions();
            (n > 0).then(|| f(t) / n as f64 * 1e6)
        })
    };
    let tracers: Vec<_> = mine.iter().filter_map(|r| r.tracer.as_ref()).collect();
    let lost: Vec<u64> = tracers
        .iter()
        .filter_map(|t| t.lost(kind.is_tcpstate()))
        .collect();
    let reported_wakeups = tracers
        .iter()
        .any(|t| t.reported_transitions_per_wakeup.is_some());
    let (transitions_per_wakeup, wakeups_from) = if tracers.is_empty() {
        (None, None)
    } else if reported_wakeups {
        (
            median(
                tracers
                    .iter()
                    .filter_map(|t| t.reported_transitions_per_wakeup)
                    .collect(),
            ),
            Some(WAKEUPS_REPORTED),
        )
    } else {
        (
            median(
                tracers
                    .iter()
                    .map(|t| t.transitions() as f64 / t.voluntary_switches.max(1) as f64)
                    .collect(),
            ),
            Some(WAKEUPS_PROXY),
        )
    };
    ConfigSummary {
        config: kind.id(),
        label: kind.label(),
        runs: mine.len(),
        connections_per_sec: per_run(&|r| Some(r.churn.connections_per_sec)),
        ratio_to_baseline: per_run(&|r| {
            let b = baseline(r.round)?;
            Some(r.churn.connections_per_sec / b.churn.connections_per_sec)
        }),
        tracer_cpu_s_per_m: tracer_per_m(&|t| t.user_s + t.sys_s + t.bpf_run_time_ns as f64 / 1e9),
        tracer_user_s_per_m: tracer_per_m(&|t| t.user_s),
        tracer_sys_s_per_m: tracer_per_m(&|t| t.sys_s),
        bpf_s_per_m: tracer_per_m(&|t| t.bpf_run_time_ns as f64 / 1e9),
        machine_added_us_per_transition: if kind == Kind::Baseline {
            None
        } else {
            per_run(&|r| {
                let b = baseline(r.round)?;
                Some(machine_us_per_transition(r) - machine_us_per_transition(b))
            })
        },
        lost_total: (!lost.is_empty()).then(|| lost.iter().sum()),
        lost_max_run: lost.iter().copied().max(),
        kernel_skipped_total: (!tracers.is_empty())
            .then(|| tracers.iter().map(|t| t.tracepoint_misses).sum()),
        lost_causes_total: tracers
            .iter()
            .map(|t| t.reported_lost_causes)
            .try_fold(super::output::LostCauses::default(), |sum, c| {
                Some(sum + c?)
            })
            .filter(|_| !tracers.is_empty()),
        ring_full_runs: mine
            .iter()
            .filter_map(|r| {
                let full = r.tracer.as_ref()?.reported_lost_causes?.ring_full;
                (full > 0).then_some((full, r.machine_steal_s))
            })
            .collect(),
        peak_rss_bytes: tracers.iter().filter_map(|t| t.peak_rss_bytes).max(),
        transitions_per_wakeup,
        wakeups_from,
        bpf_ns_per_transition: per_run(&|r| {
            let t = r.tracer.as_ref()?;
            (t.tracepoint_hits > 0)
                .then(|| t.tracepoint_run_time_ns as f64 / t.tracepoint_hits as f64)
        }),
        bpf_programs: program_costs(&mine),
        transitions_per_connection: per_run(&|r| {
            let t = r.tracer.as_ref()?;
            (r.churn.connections > 0).then(|| t.transitions() as f64 / r.churn.connections as f64)
        }),
        transitions_in_window: per_run(&|r| Some(r.tracer.as_ref()?.transitions() as f64)),
        time_wait_after: per_run(&|r| r.time_wait_after.map(|n| n as f64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![f64::NAN, 1.0]), Some(1.0));
    }

    #[test]
    fn programs_of_one_name_are_told_apart_by_attach_order() {
        let prog = |id: u32, ns: u64| ProgSample {
            id,
            name: "tcpstate_set_st".into(),
            prog_type: "RAW_TRACEPOINT".into(),
            run_time_ns: ns * 1000,
            run_count: 1000,
            recursion_misses: 0,
        };
        // Two runs; the second lists its programs in another order.
        let first = [prog(10, 600), prog(11, 50)];
        let second = [prog(21, 60), prog(20, 700)];
        let costs =
            costs_of([(&first[..], &[10, 11][..]), (&second[..], &[20, 21][..])].into_iter());
        let got: Vec<(String, Option<f64>)> =
            costs.iter().map(|c| (c.label(), c.ns_per_run)).collect();
        assert_eq!(
            got,
            [
                ("RAW_TRACEPOINT".to_string(), Some(650.0)),
                ("RAW_TRACEPOINT #2".to_string(), Some(55.0)),
            ]
        );
    }
}

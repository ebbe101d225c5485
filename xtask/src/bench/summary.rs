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

/// One part of a tracer's CPU per transition: its process's user or system
/// time, or the run time of its BPF programs of one name (all of them:
/// tcpstate's two on the tracepoint, the enter and exit ones of a system
/// call), median over the runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CpuPart {
    pub part: String,
    pub ns_per_transition: f64,
    /// BPF programs: their runs per churn connection (median).
    pub runs_per_connection: Option<f64>,
}

/// What a BPF program of the tracer is for, from the 15 bytes of its name
/// the kernel keeps (its enter and exit programs share one).
fn program_part(kernel_name: &str) -> String {
    let known = [
        (super::measure::TCPSTATE_SET_STATE, "set_state"),
        ("tcpstate_accept", "accept"),
        ("tcpstate_connec", "connect"),
        ("tcpstate_bind_e", "bind"),
        ("tcpstate_send_r", "send_reset"),
    ];
    known
        .iter()
        .find(|(name, _)| *name == kernel_name)
        .map_or_else(|| kernel_name.to_string(), |(_, part)| part.to_string())
}

/// [`CpuPart`]s of one configuration's runs: user, system, then each BPF
/// program name in the order the first run lists them. A part missing from
/// a run counts as 0 there.
fn cpu_parts(runs: &[&RunResult]) -> Vec<CpuPart> {
    let with_tracer: Vec<(&super::measure::TracerRun, u64)> = runs
        .iter()
        .filter_map(|r| Some((r.tracer.as_ref()?, r.churn.connections)))
        .filter(|(t, _)| t.transitions() > 0)
        .collect();
    if with_tracer.is_empty() {
        return Vec::new();
    }
    let mut names: Vec<String> = Vec::new();
    for (t, _) in &with_tracer {
        let mut ours: Vec<&ProgSample> = t.programs.iter().collect();
        ours.sort_by_key(|p| p.id);
        for p in ours {
            if !names.contains(&p.name) {
                names.push(p.name.clone());
            }
        }
    }
    let per_transition = |f: &dyn Fn(&super::measure::TracerRun) -> f64| {
        median(
            with_tracer
                .iter()
                .map(|(t, _)| f(t) / t.transitions() as f64)
                .collect(),
        )
        .unwrap_or(0.0)
    };
    let mut parts = vec![
        CpuPart {
            part: "user".into(),
            ns_per_transition: per_transition(&|t| t.user_s * 1e9),
            runs_per_connection: None,
        },
        CpuPart {
            part: "sys".into(),
            ns_per_transition: per_transition(&|t| t.sys_s * 1e9),
            runs_per_connection: None,
        },
    ];
    for name in names {
        let of_name = |t: &super::measure::TracerRun| -> (u64, u64) {
            t.programs
                .iter()
                .filter(|p| p.name == name)
                .fold((0, 0), |(ns, n), p| (ns + p.run_time_ns, n + p.run_count))
        };
        parts.push(CpuPart {
            part: program_part(&name),
            ns_per_transition: per_transition(&|t| of_name(t).0 as f64),
            runs_per_connection: median(
                with_tracer
                    .iter()
                    .filter(|(_, connections)| *connections > 0)
                    .map(|(t, connections)| of_name(t).1 as f64 / *connections as f64)
                    .collect(),
            ),
        });
    }
    parts
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
    /// The tracer's CPU per transition, part by part (empty without a
    /// tracer).
    pub cpu_parts: Vec<CpuPart>,
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
        cpu_parts: cpu_parts(&mine),
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

    fn run_with(connections: u64, user_s: f64, programs: Vec<ProgSample>) -> RunResult {
        let hits = programs
            .iter()
            .filter(|p| p.name == "tcpstate_set_st")
            .map(|p| p.run_count)
            .max()
            .unwrap_or(0);
        RunResult {
            config: "stat",
            round: 0,
            churn: super::super::churn::ChurnResult {
                connections,
                errors: 0,
                first_error: None,
                seconds: 1.0,
                connections_per_sec: connections as f64,
                cpu_user_s: 0.0,
                cpu_sys_s: 0.0,
            },
            window_s: 1.0,
            machine_busy_s: 0.0,
            machine_steal_s: 0.0,
            time_wait_before: None,
            time_wait_after: None,
            tracer: Some(super::super::measure::TracerRun {
                pid: 1,
                exit: "exit 0".into(),
                start_s: 0.0,
                stop_s: 0.0,
                user_s,
                sys_s: 0.0,
                voluntary_switches: 0,
                involuntary_switches: 0,
                bpf_run_time_ns: programs.iter().map(|p| p.run_time_ns).sum(),
                programs,
                tracepoint_programs: Vec::new(),
                tracepoint_hits: hits,
                tracepoint_run_time_ns: 0,
                tracepoint_misses: 0,
                reported_seen: None,
                reported_lost: None,
                reported_lost_causes: None,
                reported_wakeups: None,
                reported_transitions_per_wakeup: None,
                peak_rss_bytes: None,
                scrapes: None,
            }),
        }
    }

    fn sample(id: u32, name: &str, runs: u64, ns_per_run: u64) -> ProgSample {
        ProgSample {
            id,
            name: name.into(),
            prog_type: "X".into(),
            run_time_ns: runs * ns_per_run,
            run_count: runs,
            recursion_misses: 0,
        }
    }

    #[test]
    fn cpu_parts_add_programs_of_one_name_and_divide_by_transitions() {
        // 100 connections, 1,000 transitions: two set_state programs, a
        // connect enter and exit, 0.1 ms of user time.
        let run = run_with(
            100,
            1e-4,
            vec![
                sample(5, "tcpstate_set_st", 1000, 300),
                sample(6, "tcpstate_set_st", 1000, 50),
                sample(7, "tcpstate_connec", 100, 400),
                sample(8, "tcpstate_connec", 100, 200),
                sample(9, "someone_else", 10, 1000),
            ],
        );
        let parts = cpu_parts(&[&run]);
        let got: Vec<(&str, f64, Option<f64>)> = parts
            .iter()
            .map(|p| (p.part.as_str(), p.ns_per_transition, p.runs_per_connection))
            .collect();
        assert_eq!(
            got,
            [
                ("user", 100.0, None),
                ("sys", 0.0, None),
                ("set_state", 350.0, Some(20.0)),
                ("connect", 60.0, Some(2.0)),
                ("someone_else", 10.0, Some(0.1)),
            ]
        );
        let untraced = RunResult {
            tracer: None,
            ..run_with(100, 0.0, Vec::new())
        };
        assert_eq!(cpu_parts(&[&untraced]), []);
        assert_eq!(
            super::super::markdown::cpu_parts_line(&parts[..3]),
            "user 100 + sys 0 + set_state 350 (20.0/conn) = 450"
        );
    }

    #[test]
    fn programs_of_one_name_are_told_apart_by_attach_order() {
        let prog = |id: u32, ns: u64| ProgSample {
            prog_type: "RAW_TRACEPOINT".into(),
            ..sample(id, "tcpstate_set_st", 1000, ns)
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

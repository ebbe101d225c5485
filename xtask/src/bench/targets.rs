//! The issue's targets, judged on this run's figures. The thresholds are
//! the targets themselves; every figure compared with them is measured.

use serde::Serialize;

use super::extras::{ModelMemory, Replay};
use super::fmt::dec;
use super::latency::Latency;
use super::phase::Phase;
use super::tracer::Kind;

const OURS: [Kind; 4] = [Kind::Trace, Kind::Stat, Kind::Record, Kind::Serve];
/// The issue's measurement of bpftrace (s per million transitions), used
/// only when bpftrace could not be measured in this run (and then said so).
const ISSUE_BPFTRACE_S_PER_M: f64 = 8.5;

#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub id: &'static str,
    pub target: String,
    pub figure: String,
    /// None: could not be measured in this run.
    pub met: Option<bool>,
    /// Where missed: what limits it.
    pub limited_by: Option<String>,
}

pub struct Inputs<'a> {
    pub sat: &'a Phase,
    pub rate: &'a Phase,
    pub time_wait: &'a Phase,
    pub latency: &'a Latency,
    pub replay: &'a Replay,
    pub model: &'a ModelMemory,
    pub cpus: usize,
}

/// Per tcpstate command: (id, value) for the values present.
fn ours(
    phase: &Phase,
    f: impl Fn(&super::summary::ConfigSummary) -> Option<f64>,
) -> Vec<(&'static str, Option<f64>)> {
    OURS.iter()
        .map(|k| (k.id(), phase.config(*k).and_then(&f)))
        .collect()
}

fn list(values: &[(&str, Option<f64>)], decimals: usize, unit: &str) -> String {
    let show = |v: Option<f64>| {
        if decimals == 0 {
            super::fmt::opt_int(v)
        } else {
            dec(v, decimals)
        }
    };
    values
        .iter()
        .map(|(id, v)| format!("{id} {}{unit}", show(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Met when every value is present and passes.
fn all(values: &[(&str, Option<f64>)], pass: impl Fn(f64) -> bool) -> Option<bool> {
    if values.iter().any(|(_, v)| v.is_none()) {
        return None;
    }
    Some(values.iter().all(|(_, v)| pass(v.unwrap_or(f64::NAN))))
}

fn target(
    id: &'static str,
    text: &str,
    figure: String,
    met: Option<bool>,
    limit: impl FnOnce() -> String,
) -> Target {
    Target {
        id,
        target: text.to_string(),
        figure,
        met,
        limited_by: (met == Some(false)).then(limit),
    }
}

pub fn evaluate(i: &Inputs<'_>) -> Vec<Target> {
    let sat = i.sat;
    let cpu_split = |phase: &Phase| {
        OURS.iter()
            .filter_map(|k| phase.config(*k))
            .map(|c| {
                format!(
                    "{}: user {} + sys {} + BPF {} s per million",
                    c.config,
                    dec(c.tracer_user_s_per_m, 2),
                    dec(c.tracer_sys_s_per_m, 2),
                    dec(c.bpf_s_per_m, 2)
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let floor = sat
        .config(Kind::BpftraceCount)
        .and_then(|c| c.ratio_to_baseline)
        .map_or("not measured in this run".to_string(), |r| {
            format!("{r:.2}")
        });
    let mut out = Vec::new();

    // Zero loss at saturation.
    let lost = ours(sat, |c| c.lost_total.map(|l| l as f64));
    let skipped = ours(sat, |c| c.kernel_skipped_total.map(|l| l as f64));
    out.push(target(
        "zero-loss",
        "zero lost events at saturation, default settings",
        format!(
            "lost over {} runs each: {} (times the kernel skipped one of tcpstate's two \
             programs on the tracepoint: {})",
            sat.rounds,
            list(&lost, 0, ""),
            list(&skipped, 0, "")
        ),
        all(&lost, |l| l == 0.0),
        || {
            OURS.iter()
                .filter_map(|k| sat.config(*k))
                .filter(|c| c.lost_total.unwrap_or(0) > 0)
                .map(|c| loss_cause(c, i.rate))
                .collect::<Vec<_>>()
                .join("; ")
        },
    ));

    // Slowdown.
    for (id, kinds, min) in [
        (
            "slowdown-stat-record",
            &[Kind::Stat, Kind::Record][..],
            0.90,
        ),
        ("slowdown-trace", &[Kind::Trace][..], 0.85),
    ] {
        let values: Vec<_> = kinds
            .iter()
            .map(|k| (k.id(), sat.config(*k).and_then(|c| c.ratio_to_baseline)))
            .collect();
        out.push(target(
            id,
            &format!(
                "workload kept at {min:.2} of the untraced rate or better ({})",
                kinds.iter().map(|k| k.id()).collect::<Vec<_>>().join(", ")
            ),
            format!("{} of the untraced rate", list(&values, 3, "")),
            all(&values, |r| r >= min),
            || {
                format!(
                    "the churn saturates all {} CPUs, so every cycle the tracer and its BPF \
                     program take is a cycle the workload loses; the tracepoint with any program \
                     on it (bpftrace count-only, the floor) keeps {floor}; the tracers' CPU: {}",
                    i.cpus,
                    cpu_split(sat)
                )
            },
        ));
    }

    // CPU against bpftrace.
    let bt = sat.config(Kind::BpftraceStream);
    let (reference, source) = match bt.and_then(|c| c.tracer_cpu_s_per_m) {
        Some(v) => (
            v,
            format!(
                "bpftrace measured here: {v:.2} s, while losing {} of about {} transitions \
                 per run",
                super::fmt::opt_int(bt.and_then(|c| c.lost_max_run).map(|l| l as f64)),
                super::fmt::opt_int(bt.and_then(|c| c.transitions_in_window))
            ),
        ),
        None => (
            ISSUE_BPFTRACE_S_PER_M,
            format!(
                "bpftrace NOT measured in this run; the issue's figure {ISSUE_BPFTRACE_S_PER_M} s"
            ),
        ),
    };
    let cpu = ours(sat, |c| c.tracer_cpu_s_per_m);
    out.push(target(
        "cpu-vs-bpftrace",
        "tracer CPU (kernel + user) per million transitions at most 1/8 of bpftrace's",
        format!(
            "{} per million ({source}, so at most {:.2} s)",
            list(&cpu, 2, " s"),
            reference / 8.0
        ),
        all(&cpu, |c| c <= reference / 8.0),
        || cpu_split(sat),
    ));

    // CPU per transition at a fixed offered load.
    let rate = i.rate;
    let per_tr = ours(rate, |c| c.tracer_cpu_s_per_m);
    let machine = ours(rate, |c| c.machine_added_us_per_transition);
    out.push(target(
        "cpu-at-fixed-load",
        &format!(
            "at {} connections/s offered: CPU added per transition (kernel + user) at most 1 µs",
            super::fmt::int(rate.workload.rate.unwrap_or(0.0))
        ),
        format!(
            "tracer process + its BPF programs: {} per transition; whole machine, minus the \
             baseline: {}",
            list(&per_tr, 2, " µs"),
            list(&machine, 2, " µs")
        ),
        all(&per_tr, |c| c <= 1.0),
        || cpu_split(rate),
    ));

    // Wake-ups.
    let per_wakeup = ours(sat, |c| c.transitions_per_wakeup);
    let from = OURS
        .iter()
        .find_map(|k| sat.config(*k).and_then(|c| c.wakeups_from))
        .unwrap_or("not measured");
    out.push(target(
        "wakeups",
        "at most one wake-up per 64 transitions under load",
        format!(
            "{} transitions per wake-up at saturation ({from})",
            list(&per_wakeup, 0, "")
        ),
        all(&per_wakeup, |w| w >= 64.0),
        || {
            "with the wake-up count taken from context switches, every block of the reader \
             counts: also the 50 ms ticks and the output's own waits"
                .to_string()
        },
    ));
    let lat = i.latency;
    out.push(target(
        "isolated-event",
        "an isolated event still arrives within 100 ms",
        format!(
            "{} isolated transitions: median {:.1} ms, worst {:.1} ms (kernel timestamp to the JSON line read)",
            lat.events, lat.median_ms, lat.max_ms
        ),
        lat.max_ms.is_finite().then_some(lat.max_ms <= 100.0),
        || "the reader's 50 ms timer or the scheduler".to_string(),
    ));

    // BPF program cost.
    let ns = ours(sat, |c| c.bpf_ns_per_transition);
    let bt_ns = sat
        .config(Kind::BpftraceCount)
        .and_then(|c| c.bpf_ns_per_transition)
        .map_or("not measured".to_string(), |v| format!("{v:.0} ns"));
    let breakdown = OURS
        .iter()
        .filter_map(|k| sat.config(*k))
        .map(|c| {
            let parts: Vec<String> = c
                .bpf_programs
                .iter()
                .map(|p| format!("{} {} ns/run", p.label(), dec(p.ns_per_run, 0)))
                .collect();
            format!("{}: {}", c.config, parts.join(" + "))
        })
        .collect::<Vec<_>>()
        .join("; ");
    out.push(target(
        "bpf-ns",
        "BPF program at most 200 ns per run",
        format!(
            "{} per transition at saturation, all of tcpstate's programs on the tracepoint \
             together ({breakdown}); bpftrace count-only: {bt_ns}",
            list(&ns, 0, " ns")
        ),
        all(&ns, |v| v <= 200.0),
        || {
            let at_rate = ours(i.rate, |c| c.bpf_ns_per_transition);
            format!(
                "at the fixed load the same programs take {} per transition: the raw \
                 tracepoint program makes four probe reads (the protocol, the socket's first \
                 128 bytes, the 16 bytes with its IPv4 source address and port, its \
                 namespace's inode), reads the task's ids, name and cgroup and \
                 the clock, and reserves and submits a 112-byte ring-buffer record (the \
                 count-only bpftrace program only updates a map); at saturation the two CPUs \
                 also share the ring buffer's lock and positions. run_time_ns also includes \
                 the kernel's bpf_stats bookkeeping (a clock read before and after every run, \
                 for each of tcpstate's programs there) and any interrupt taken during a run, \
                 among them the wake-ups of the reader the program asks for (one per 4,096 \
                 records under load, each an interrupt and a context switch)",
                list(&at_rate, 0, " ns")
            )
        },
    ));

    out.extend(issue_15(i, &cpu_split));

    // Replay and model.
    let r = i.replay;
    out.push(target(
        "replay-decode",
        "replay at least 5 million transitions/s (decoder)",
        format!(
            "{} transitions decoded at {} (one core)",
            super::fmt::int(r.decode["transitions"].as_f64().unwrap_or(f64::NAN)),
            super::fmt::per_sec_m(r.decode_per_sec)
        ),
        Some(r.decode_per_sec >= 5e6),
        || "decoding itself".to_string(),
    ));
    out.push(target(
        "replay-pipeline",
        "replay at least 5 million transitions/s (tcpstate stat --input, the whole pipeline)",
        format!(
            "{} transitions in {:.2} s of wall time ({:.2} s of CPU: decoding on a thread of its own) = {}",
            super::fmt::int(r.transitions as f64),
            r.pipeline_wall_s,
            r.pipeline_cpu_s,
            super::fmt::per_sec_m(r.pipeline_per_sec)
        ),
        Some(r.pipeline_per_sec >= 5e6),
        || {
            let decode_ns = 1e9 / r.decode_per_sec;
            let total_ns = 1e9 / r.pipeline_per_sec;
            format!(
                "the recording is read and decoded on a thread of its own ({decode_ns:.0} ns \
                 per transition), the connection model and the stat view take the rest on \
                 another: {total_ns:.0} ns per transition of wall time, limited by the model \
                 (every transition, accept and RST applied to its tables)"
            )
        },
    ));
    let m = i.model;
    let memory = format!(
        "{:.1} bytes per connection ({} open connections)",
        m.bytes_per_connection,
        super::fmt::int(m.connections as f64)
    );
    let memory_limits = || {
        let n = |k: &str| {
            m.probe[k]
                .as_u64()
                .map_or("?".to_string(), |v| v.to_string())
        };
        format!(
            "each live connection is a Connection of {} bytes in a {}-byte slot of the \
             model's storage (its eviction stamp inside it; owners and listeners shared, up \
             to {} state visits inline), and an entry in each of two hash tables (by socket \
             address, by 4-tuple) holding a 4-byte slot number and a control byte; hash \
             tables keep spare capacity up to the next power of two",
            n("connection_struct_bytes"),
            n("live_slot_bytes"),
            n("inline_state_visits")
        )
    };
    out.push(target(
        "model-memory",
        "at most 200 bytes per live connection in the model",
        memory.clone(),
        Some(m.bytes_per_connection <= 200.0),
        memory_limits,
    ));
    out.push(target(
        "model-memory-15",
        "memory per live connection stays at most 181 bytes (issue 15: no regression)",
        memory,
        Some(m.bytes_per_connection <= 181.0),
        memory_limits,
    ));
    out
}

/// Why a tcpstate command lost events: the ring buffer filled (its reader
/// fell behind), or the kernel skipped both its programs.
fn loss_cause(c: &super::summary::ConfigSummary, rate: &Phase) -> String {
    let lost = c.lost_total.unwrap_or(0);
    let skips = c.kernel_skipped_total.unwrap_or(0);
    if let Some(causes) = c.lost_causes_total.filter(|k| k.ring_full == 0) {
        // tcpstate's own account: no record found the ring full.
        return format!(
            "{}: {} lost: {} reserves failed with room left in the ring (its lock was not \
             taken: Linux 6.16+ gives up on a lock it finds deadlocked or held too long), {} \
             transitions for which the kernel ran neither of its programs (each was already \
             running on that CPU when a softirq hit the tracepoint; the kernel skipped one of \
             them {} times)",
            c.config,
            super::fmt::int(lost as f64),
            super::fmt::int(causes.ring_busy as f64),
            super::fmt::int(causes.skipped as f64),
            super::fmt::int(skips as f64)
        );
    }
    if lost > skips || c.lost_causes_total.is_some_and(|k| k.ring_full > 0) {
        let full = match c.lost_causes_total {
            Some(k) => format!(
                "{} of them records that found the ring buffer (default size) full",
                super::fmt::int(k.ring_full as f64)
            ),
            None => format!(
                "more than the kernel's {} skips: records found the ring buffer (default \
                 size) full",
                super::fmt::int(skips as f64)
            ),
        };
        let mut why = format!(
            "{}: {} lost, {full}, its reader having fallen behind (the churn's threads keep \
             both CPUs busy and the reader gets a share of them; its own CPU: {} s per million \
             transitions)",
            c.config,
            super::fmt::int(lost as f64),
            dec(
                c.tracer_user_s_per_m
                    .zip(c.tracer_sys_s_per_m)
                    .map(|(u, s)| u + s),
                2
            )
        );
        if !c.ring_full_runs.is_empty() {
            let runs: Vec<String> = c
                .ring_full_runs
                .iter()
                .map(|(full, steal)| {
                    format!(
                        "{} lost with {steal:.2} s stolen",
                        super::fmt::int(*full as f64)
                    )
                })
                .collect();
            why.push_str(&format!(
                "; the runs that found the ring full, with the CPU time the hypervisor gave \
                 to others during each (steal; a starved reader lets the other CPU fill the \
                 ring): {}",
                runs.join(", ")
            ));
        }
        let at_rate = |k: Kind| rate.config(k).and_then(|c| c.tracer_user_s_per_m);
        if let (Kind::Stat, Some(stat), Some(trace)) =
            (kind_of(c.config), at_rate(Kind::Stat), at_rate(Kind::Trace))
        {
            if stat > 2.0 * trace {
                why.push_str(&format!(
                    "; at the fixed load stat's userspace takes {stat:.2} µs per transition, \
                     {:.1} times trace's: it recomputes its whole report (every connection and \
                     TIME_WAIT entry) after every batch, also when it shows it only once a \
                     second",
                    stat / trace
                ));
            }
        }
        why
    } else {
        format!(
            "{}: {} lost: transitions for which the kernel ran neither of its programs \
             (each was already running on that CPU when a softirq hit the tracepoint; the \
             kernel skipped one of them {} times)",
            c.config,
            super::fmt::int(lost as f64),
            super::fmt::int(skips as f64)
        )
    }
}

fn kind_of(id: &str) -> Kind {
    OURS.into_iter()
        .find(|k| k.id() == id)
        .unwrap_or(Kind::Baseline)
}

/// Where the CPU per transition of `kinds` and of the floor goes, part by
/// part, in ns (None when the phase has no parts for them).
fn parts_of(phase: &Phase, kinds: &[Kind]) -> Option<String> {
    let lines: Vec<String> = kinds
        .iter()
        .chain([&Kind::BpftraceCount])
        .filter_map(|k| phase.config(*k))
        .filter(|c| !c.cpu_parts.is_empty())
        .map(|c| {
            format!(
                "{}: {} ns",
                c.config,
                super::markdown::cpu_parts_line(&c.cpu_parts)
            )
        })
        .collect();
    (!lines.is_empty()).then(|| {
        format!(
            "CPU per transition, part by part (BPF programs by what they follow, with their \
             runs per churn connection): {}",
            lines.join("; ")
        )
    })
}

/// Issue 15's targets: ratios to the count-only bpftrace floor measured in
/// the same phase of the same run (None where the floor was not measured).
fn issue_15(i: &Inputs<'_>, cpu_split: &dyn Fn(&Phase) -> String) -> Vec<Target> {
    let mut out = Vec::new();
    let rate = i.rate;
    let floor_cpu = rate
        .config(Kind::BpftraceCount)
        .and_then(|c| c.tracer_cpu_s_per_m);
    let floor_text = |v: Option<f64>| {
        v.map_or("the floor NOT measured in this run".to_string(), |f| {
            format!("the count-only floor {f:.2} µs")
        })
    };
    for (id, kinds, times) in [
        ("cost-stat-serve", &[Kind::Stat, Kind::Serve][..], 2.0),
        ("cost-record-trace", &[Kind::Record, Kind::Trace][..], 4.0),
    ] {
        let values: Vec<_> = kinds
            .iter()
            .map(|k| {
                let ratio = rate
                    .config(*k)
                    .and_then(|c| c.tracer_cpu_s_per_m)
                    .zip(floor_cpu)
                    .map(|(v, f)| v / f);
                (k.id(), ratio)
            })
            .collect();
        let absolute: Vec<_> = kinds
            .iter()
            .map(|k| (k.id(), rate.config(*k).and_then(|c| c.tracer_cpu_s_per_m)))
            .collect();
        out.push(target(
            id,
            &format!(
                "at {} connections/s offered: CPU per transition (kernel + user + BPF) of {} at \
                 most {times:.0}x the count-only bpftrace floor of the same run",
                super::fmt::int(rate.workload.rate.unwrap_or(0.0)),
                kinds
                    .iter()
                    .map(|k| k.id())
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
            format!(
                "{} times the floor ({} per transition; {})",
                list(&values, 2, ""),
                list(&absolute, 2, " µs"),
                floor_text(floor_cpu)
            ),
            all(&values, |r| r <= times),
            || parts_of(rate, kinds).unwrap_or_else(|| cpu_split(rate)),
        ));
    }

    // Saturation, against the floor, in the time-wait churn (and the
    // loopback one, shown beside it).
    let tw = i.time_wait;
    let kept = |phase: &Phase| {
        let floor = phase
            .config(Kind::BpftraceCount)
            .and_then(|c| c.ratio_to_baseline);
        let values: Vec<_> = OURS
            .iter()
            .map(|k| {
                let r = phase
                    .config(*k)
                    .and_then(|c| c.ratio_to_baseline)
                    .zip(floor)
                    .map(|(r, f)| r / f);
                (k.id(), r)
            })
            .collect();
        (values, floor)
    };
    let (tw_values, tw_floor) = kept(tw);
    let (lo_values, lo_floor) = kept(i.sat);
    out.push(target(
        "saturation-vs-floor",
        "at saturation, with a churn that leaves real time-wait sockets: workload kept at \
         least 0.97 of what the count-only floor keeps, for every command",
        format!(
            "time-wait churn: {} of the floor's rate (the floor keeps {} of the untraced rate); \
             loopback churn: {} (the floor keeps {})",
            list(&tw_values, 3, ""),
            dec(tw_floor, 3),
            list(&lo_values, 3, ""),
            dec(lo_floor, 3)
        ),
        all(&tw_values, |r| r >= 0.97),
        || cpu_split(tw),
    ));

    let lost = ours(tw, |c| c.lost_total.map(|l| l as f64));
    let skipped = ours(tw, |c| c.kernel_skipped_total.map(|l| l as f64));
    out.push(target(
        "zero-loss-time-wait",
        "0 lost over the runs at saturation with the time-wait churn (trace, stat, record, \
         serve)",
        format!(
            "lost over {} runs each: {} (times the kernel skipped one of tcpstate's programs on \
             the tracepoint: {})",
            tw.rounds,
            list(&lost, 0, ""),
            list(&skipped, 0, "")
        ),
        all(&lost, |l| l == 0.0),
        || {
            OURS.iter()
                .filter_map(|k| tw.config(*k))
                .filter(|c| c.lost_total.unwrap_or(0) > 0)
                .map(|c| loss_cause(c, i.rate))
                .collect::<Vec<_>>()
                .join("; ")
        },
    ));
    out
}

//! `tcpstate doctor`: reads the TCP sysctls and counters, watches the live
//! traffic for `--for` (the start-up snapshot included), then prints
//! findings with the numbers behind them and advice for this kernel.
use crate::pipeline;
use crate::source::live::{HookStatus, LiveSource};
use crate::{
    cli::{DoctorArgs, FilterArgs, InputArgs},
    clock::boot_now_ns,
    source::{procfs::cmdline, snapshot},
    views::doctor::{
        counters::{CounterDelta, NetCounters},
        facts::{CollectArgs, ModelFacts, Watch},
        render, DoctorInput, DoctorReport, DoctorSysctls, Kernel, TracerPart,
    },
};
use std::io::Write;

/// CLOSE_WAIT older than this counts as a leak: half the watch, between 1 s
/// and 30 s (a CLOSE_WAIT normally lasts milliseconds).
pub fn leak_threshold_secs(watch: std::time::Duration) -> u64 {
    (watch.as_secs() / 2).clamp(1, 30)
}

pub async fn run(args: &DoctorArgs, verbose: bool) -> anyhow::Result<()> {
    let kernel = Kernel::read();
    let sysctls = DoctorSysctls::read();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let mut pipeline = pipeline::open(
        &InputArgs::default(),
        &args.live,
        &FilterArgs::default(),
        verbose,
        leak_threshold_secs(args.watch),
        crate::source::live::ContextTask::OwnerTransitionsOnly,
    )?;
    let start = NetCounters::read();
    let started_ns = boot_now_ns();
    crate::status!(
        "doctor: watching TCP for {} s, then reporting",
        args.watch.as_secs_f64()
    );
    let mut watch = Watch::new(sysctls.port_range());
    pipeline::drive(&mut pipeline, &mut watch, Some(args.watch)).await?;
    let end = NetCounters::read();
    let now_ns = pipeline.now_ns();
    let dump = match snapshot::take(snapshot::current_netns()) {
        Ok(dump) => Some(dump),
        Err(e) => {
            log::warn!(
                "no socket dump at the end ({e}): keepalive timers and accept queues are unknown"
            );
            None
        }
    };
    let stats = pipeline.stats();
    let facts = ModelFacts::collect(
        &pipeline.model,
        &watch,
        &CollectArgs {
            now_ns,
            port_range: sysctls.port_range(),
            established_threshold_s: args.established_age.as_secs(),
            dump: dump.as_ref(),
            transitions: stats.delivered,
            lost_events: stats.lost,
            cmdline: &cmdline,
        },
    );
    let tracer = pipeline.live_source().map(tracer_parts).unwrap_or_default();
    let input = DoctorInput {
        kernel,
        sysctls,
        counters: CounterDelta { start, end },
        watch_secs: now_ns.saturating_sub(started_ns) as f64 / 1e9,
        facts,
        tracer,
        dead_peers: dead_peers(),
    };
    let report = DoctorReport::new(host, &input);
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        out.write_all(b"\n")?;
    } else {
        out.write_all(render::text(&report).as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// The programs of the live source, and the kernel's count of skipped hits,
/// as the report lists them.
fn tracer_parts(source: &LiveSource) -> Vec<TracerPart> {
    let part = |name: &str, hook: &str, purpose: &str, status: &HookStatus, works| {
        let (status, why) = match status {
            HookStatus::Attached => (works, None),
            HookStatus::Off => ("off", None),
            HookStatus::Unavailable(why) => ("unavailable", Some(why.clone())),
        };
        TracerPart {
            part: name.to_string(),
            hook: hook.to_string(),
            purpose: purpose.to_string(),
            status,
            why,
        }
    };
    let mut parts: Vec<TracerPart> = source
        .programs()
        .iter()
        .map(|p| part(p.program, p.hook, p.purpose, &p.status, "attached"))
        .collect();
    parts.push(part(
        "skipped-hit count",
        "bpf_prog_info.recursion_misses",
        "transitions the kernel skipped, in the lost count",
        source.skip_counting(),
        "counted",
    ));
    parts
}

/// How long a peer must have been silent for `doctor` to judge a
/// connection (as `tcpstate stale` does by default).
const DEAD_PEER_SILENCE_MS: u64 = 5 * 60 * 1000;

/// The `dead-peer` finding's input: this namespace's sockets with tcp_info.
fn dead_peers() -> crate::views::stale::StaleReport {
    let netns = snapshot::current_netns();
    match snapshot::inspect::inspect(&[netns]) {
        Ok(found) => crate::views::stale::StaleReport::new(&found.sockets, DEAD_PEER_SILENCE_MS),
        Err(e) => {
            log::warn!("no socket dump with tcp_info ({e}): dead peers are not looked for");
            Default::default()
        }
    }
}

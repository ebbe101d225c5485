//! `cargo xtask bench`: what tcpstate costs a host under connection churn,
//! next to no tracer and to bpftrace, measured side by side (issue 5).
//! Prints a table, writes JSON and regenerates BENCHMARKS.md.
//!
//! `--smoke` runs the same code with tiny counts in a few seconds;
//! `cargo xtask test` runs it (as root) and checks the JSON.

pub mod ab;
mod bpfstats;
mod bpftrace;
mod build;
mod child;
mod churn;
mod extras;
mod fmt;
mod latency;
mod machine;
mod markdown;
mod measure;
mod netns;
mod notes;
mod output;
mod phase;
mod procfs;
mod report;
mod scrape;
mod settings;
mod summary;
mod targets;
mod tracer;
mod validate;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use crate::cmd::{self, phase as say};
use crate::workspace::Workspace;
pub use settings::BenchArgs;
use settings::Settings;
use tracer::{Kind, Poker, Tools};

/// `cargo xtask bench [--smoke] ...`
pub fn run(ws: &Workspace, args: &BenchArgs) -> Result<i32> {
    require_root()?;
    let settings = Settings::resolve(args, &ws.root, &ws.target_dir)?;
    let built = match &args.tcpstate {
        Some(path) => build::prebuilt(ws, path)?,
        None => build::all(ws, settings.release, settings.netns)?,
    };
    // The bench attaches tracers to the host's tracepoint: a kernel test run
    // at the same time would see them (two tracers make the kernel skip each
    // other's programs) and the bench's figures would include the tests.
    let _lock = crate::test::kernel_tests_lock()?;
    let report = execute(&settings, built, &command_line())?;
    finish(&report, &settings)?;
    Ok(0)
}

/// The smoke run of `cargo xtask test` (as root), with the BPF object and
/// debug builds it already made; fails unless every figure is there.
pub fn smoke(ws: &Workspace, bpf_object: &Path, tcpstate: &Path) -> Result<()> {
    let args = BenchArgs::parse_smoke();
    let settings = Settings::resolve(&args, &ws.root, &ws.target_dir)?;
    let (churn, probe) = build::helpers(ws, bpf_object, false)?;
    let built = build::Built {
        tcpstate: tcpstate.to_path_buf(),
        churn,
        probe,
    };
    let report = execute(&settings, built, "cargo xtask bench --smoke")?;
    finish(&report, &settings)?;
    validate::check_file(&settings.json)?;
    say(format!(
        "bench smoke passed: every figure produced, {} well formed",
        settings.json.display()
    ));
    Ok(())
}

impl BenchArgs {
    fn parse_smoke() -> BenchArgs {
        BenchArgs::parse_given(&["--smoke"])
    }

    /// The arguments as `cargo xtask bench ARGS` would take them, defaults
    /// included.
    fn parse_given(args: &[&str]) -> BenchArgs {
        use clap::{Args as _, FromArgMatches};
        let cmd = BenchArgs::augment_args(clap::Command::new("bench"));
        let matches = cmd.get_matches_from(std::iter::once("bench").chain(args.iter().copied()));
        BenchArgs::from_arg_matches(&matches).expect("the given bench arguments parse")
    }
}

fn require_root() -> Result<()> {
    if !cmd::is_root() {
        bail!(
            "cargo xtask bench loads BPF programs, sets kernel.bpf_stats_enabled and may create \
             network namespaces: run it as root (sudo -E cargo xtask bench)"
        );
    }
    Ok(())
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}

fn finish(report: &report::BenchReport, settings: &Settings) -> Result<()> {
    report::print(report);
    report::write_json(report, &settings.json)?;
    markdown::write(report, &settings.markdown)?;
    say(format!(
        "bench: results in {} and {}",
        settings.json.display(),
        settings.markdown.display()
    ));
    Ok(())
}

/// A private temporary directory, removed with everything in it on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let path = std::env::temp_dir().join(format!("tcpstate-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn execute(settings: &Settings, built: build::Built, command: &str) -> Result<report::BenchReport> {
    let started = Instant::now();
    child::catch_interrupts();
    let tmp = TempDir::new()?;
    let _stats = bpfstats::StatsEnabled::enable()?;
    let poker = Poker::new()?;
    let mut machine = machine::describe(&built.tcpstate);
    let mut not_measured = Vec::new();

    let mut tools = Tools {
        tcpstate: built.tcpstate,
        churn: built.churn,
        probe: built.probe,
        bpftrace: None,
    };
    if settings.bpftrace {
        match bpftrace::locate(true) {
            Ok((path, version)) => {
                tools.bpftrace = Some(path);
                match check_bpftrace(&tools, &tmp.0, &poker) {
                    Ok(()) => machine.bpftrace = Some(version),
                    Err(e) => {
                        tools.bpftrace = None;
                        not_measured.push(format!("bpftrace ({version}) cannot trace here: {e:#}"));
                    }
                }
            }
            Err(why) => not_measured.push(format!("bpftrace: {why}")),
        }
    } else {
        not_measured.push(if settings.smoke {
            "bpftrace (left out of the smoke run)".to_string()
        } else {
            "bpftrace (--no-bpftrace)".to_string()
        });
    }

    let pair = if settings.netns {
        Some(netns::NetnsPair::create(
            settings.saturating.listeners,
            settings.saturating.sources,
        )?)
    } else {
        None
    };
    let with_ns = |w: &churn::Workload| {
        let mut w = w.clone();
        w.netns = pair.as_ref().map(|p| (p.server.clone(), p.client.clone()));
        w
    };
    let (sat_load, rate_load) = (
        with_ns(&settings.saturating),
        with_ns(&settings.rate_limited),
    );

    let mut kinds = vec![
        Kind::Baseline,
        Kind::Trace,
        Kind::Stat,
        Kind::Record,
        Kind::Serve,
    ];
    if tools.bpftrace.is_some() {
        kinds.extend([Kind::BpftraceStream, Kind::BpftraceCount]);
    }
    kinds.retain(|k| *k == Kind::Baseline || settings.runs_config(k.id()));
    let mut cx = measure::Context {
        tools: &tools,
        dir: &tmp.0,
        poker: &poker,
        seq: 0,
    };
    let (sat, rate) = if settings.runs_phase("saturating") || settings.runs_phase("fixed") {
        say(format!(
            "bench: warm-up churn ({} s, not measured: fills the TIME_WAIT table)",
            settings.warmup_s
        ));
        let mut warm = sat_load.clone();
        warm.seconds = settings.warmup_s;
        churn::run(&tools.churn, &warm).context("warm-up churn")?;
        (
            phase::run_if(settings, &mut cx, "saturating", &kinds, &sat_load)?,
            phase::run_if(settings, &mut cx, "fixed", &kinds, &rate_load)?,
        )
    } else {
        (
            phase::Phase::skipped("saturating", &sat_load),
            phase::Phase::skipped("fixed", &rate_load),
        )
    };
    drop(pair);
    let time_wait = if settings.runs_phase("time-wait") {
        let tw_pair = netns::NetnsPair::create_tagged(
            "tw",
            settings.time_wait.listeners,
            settings.time_wait.sources,
        )?;
        tw_pair.set_max_tw_buckets(settings.tw_buckets)?;
        let mut load = settings.time_wait.clone();
        load.netns = Some((tw_pair.server.clone(), tw_pair.client.clone()));
        say(format!(
            "bench: time-wait warm-up churn ({} s, not measured)",
            settings.warmup_s
        ));
        let mut warm = load.clone();
        warm.seconds = settings.warmup_s;
        churn::run(&tools.churn, &warm).context("time-wait warm-up churn")?;
        phase::run_if(settings, &mut cx, "time-wait", &kinds, &load)?
    } else {
        phase::Phase::skipped("time-wait", &settings.time_wait)
    };

    say("bench: isolated-event latency");
    let latency = latency::measure(&tools.tcpstate, &tmp.0, settings.latency_events)?;
    say(format!(
        "bench: replay of {} transitions",
        fmt::int(settings.replay_transitions as f64)
    ));
    let replay = extras::replay(&tools, &tmp.0, settings.replay_transitions)?;
    say(format!(
        "bench: model memory with {} connections",
        fmt::int(settings.model_connections as f64)
    ));
    let model = extras::model_memory(&tools, &tmp.0, settings.model_connections)?;

    let targets = targets::evaluate(&targets::Inputs {
        sat: &sat,
        rate: &rate,
        time_wait: &time_wait,
        latency: &latency,
        replay: &replay,
        model: &model,
        cpus: machine.cpus,
    });
    let notes = notes::notes(settings, &sat);
    Ok(report::BenchReport {
        schema: report::SCHEMA,
        command: command.to_string(),
        machine,
        settings: settings.clone(),
        saturating: sat,
        rate_limited: rate,
        time_wait,
        latency,
        replay,
        model_memory: model,
        targets,
        notes,
        not_measured,
        duration_s: started.elapsed().as_secs_f64(),
    })
}

/// Starts the count-only script and waits until it traces: proves that
/// this bpftrace works with this kernel before it is compared.
fn check_bpftrace(tools: &Tools, dir: &Path, poker: &Poker) -> Result<()> {
    say("bench: checking that bpftrace can trace here");
    let mut t = tracer::Running::start(Kind::BpftraceCount, tools, dir, 0)?;
    t.wait_ready(poker, std::time::Duration::from_secs(90))?;
    t.stop()?;
    Ok(())
}

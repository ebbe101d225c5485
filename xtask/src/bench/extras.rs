//! Offline figures: replay speed of a recording (the decoder alone, and
//! the whole `tcpstate stat --input` pipeline) and the model's memory per
//! live connection. Each runs in its own process, built in release.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::output;

#[derive(Clone, Debug, Serialize)]
pub struct Replay {
    /// `recording::bench::bench_decode`: the decoder alone, one core.
    pub decode: serde_json::Value,
    pub decode_per_sec: f64,
    /// The synthetic recording `stat --input` read.
    pub file: serde_json::Value,
    pub transitions: u64,
    pub pipeline_wall_s: f64,
    pub pipeline_cpu_s: f64,
    pub pipeline_per_sec: f64,
    pub pipeline_summary: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelMemory {
    pub probe: serde_json::Value,
    pub connections: u64,
    pub bytes_per_connection: f64,
}

/// Runs a probe subcommand; its one JSON line.
fn probe(probe: &Path, args: &[&str], tmpdir: &Path) -> Result<serde_json::Value> {
    let out = Command::new(probe)
        .args(args)
        .env("TMPDIR", tmpdir)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} {}", probe.display(), args.join(" ")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{} {} failed: {}",
            probe.display(),
            args.join(" "),
            output::tail(&String::from_utf8_lossy(&out.stderr), 3)
        );
    }
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("bad probe output: {line}"))
}

fn children_cpu_s() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(u.ru_utime) + s(u.ru_stime)
}

pub fn replay(tools: &super::tracer::Tools, dir: &Path, transitions: u64) -> Result<Replay> {
    let n = transitions.to_string();
    let decode = probe(&tools.probe, &["decode", &n], dir)?;
    let decode_per_sec = decode["from_file_per_sec"]
        .as_f64()
        .or_else(|| decode["from_memory_per_sec"].as_f64())
        .context("no decoding speed in the probe's output")?;

    let path = dir.join("replay.tcpsrec");
    let _ = std::fs::remove_file(&path);
    let file = probe(
        &tools.probe,
        &["make-recording", &n, &path.to_string_lossy()],
        dir,
    )?;
    let result = time_stat(&tools.tcpstate, &path);
    let _ = std::fs::remove_file(&path);
    let (wall, cpu, stderr) = result?;
    let summary = output::tcpstate_summary(&stderr).with_context(|| {
        format!(
            "no summary from tcpstate stat --input: {}",
            output::tail(&stderr, 3)
        )
    })?;
    Ok(Replay {
        decode,
        decode_per_sec,
        file,
        transitions: summary.seen,
        pipeline_wall_s: wall,
        pipeline_cpu_s: cpu,
        pipeline_per_sec: summary.seen as f64 / wall,
        pipeline_summary: output::tail(&stderr, 1),
    })
}

/// `tcpstate stat --input FILE > /dev/null`: wall time, CPU time, stderr.
fn time_stat(tcpstate: &Path, file: &Path) -> Result<(f64, f64, String)> {
    let cpu0 = children_cpu_s();
    let start = Instant::now();
    let out = Command::new(tcpstate)
        .args(["stat", "--input"])
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running tcpstate stat --input")?;
    let wall = start.elapsed().as_secs_f64();
    let cpu = children_cpu_s() - cpu0;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("tcpstate stat --input failed: {}", output::tail(&stderr, 3));
    }
    Ok((wall, cpu, stderr))
}

pub fn model_memory(
    tools: &super::tracer::Tools,
    dir: &Path,
    connections: u64,
) -> Result<ModelMemory> {
    let v = probe(
        &tools.probe,
        &["model-memory", &connections.to_string()],
        dir,
    )?;
    let bytes_per_connection = v["bytes_per_connection"]
        .as_f64()
        .context("no bytes_per_connection in the probe's output")?;
    Ok(ModelMemory {
        probe: v,
        connections,
        bytes_per_connection,
    })
}

//! Runs the churn generator (`tcpstate-churn`, in the tests crate) and
//! reads its result line.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::child::Guarded;
use super::output;

/// What load to generate.
#[derive(Clone, Debug, Serialize)]
pub struct Workload {
    /// Offered connections/s; None saturates.
    pub rate: Option<f64>,
    pub seconds: f64,
    pub max_connections: u64,
    pub clients: usize,
    pub listeners: usize,
    pub sources: usize,
    /// Who closes first: "client" or "server".
    pub close: String,
    /// (server, client) network namespaces; None: loopback.
    pub netns: Option<(String, String)>,
}

/// The generator's result line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChurnResult {
    pub connections: u64,
    pub errors: u64,
    #[serde(default)]
    pub first_error: Option<String>,
    pub seconds: f64,
    pub connections_per_sec: f64,
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
}

pub fn command(churn: &Path, w: &Workload) -> Command {
    let mut c = Command::new(churn);
    c.args(["--clients", &w.clients.to_string()])
        .args(["--listeners", &w.listeners.to_string()])
        .args(["--sources", &w.sources.to_string()])
        .args(["--close", &w.close])
        .args(["--rate", &w.rate.unwrap_or(0.0).to_string()])
        .args(["--duration", &w.seconds.to_string()])
        .args(["--count", &w.max_connections.to_string()]);
    if let Some((server, client)) = &w.netns {
        c.args(["--netns", &format!("{server},{client}")]);
    }
    c
}

/// Runs the workload to its end (killed if it overruns by 30 s).
pub fn run(churn: &Path, w: &Workload) -> Result<ChurnResult> {
    let mut cmd = command(churn, w);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", churn.display()))?;
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let mut process = Guarded::new(child, Duration::from_secs(2));
    let limit = w.seconds + 30.0;
    let ended = process.wait_or_stop(Duration::from_secs_f64(limit))?;
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    if ended.killed {
        bail!("the churn generator did not finish within {limit} s");
    }
    match ended.status {
        Some(status) if status.success() => parse_result(&out),
        status => bail!(
            "the churn generator failed ({}): {} {}",
            status.map_or("unknown status".to_string(), |s| s.to_string()),
            output::tail(&err, 3),
            output::tail(&out, 1)
        ),
    }
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut s);
        }
        s
    })
}

pub fn parse_result(stdout: &str) -> Result<ChurnResult> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| {
            format!(
                "no result line from the churn generator: {}",
                output::tail(stdout, 3)
            )
        })?;
    serde_json::from_str(line).with_context(|| format!("bad churn result line: {line}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line() {
        let r = parse_result(
            "{\"tool\":\"tcpstate-churn\",\"connections\":10,\"errors\":0,\"first_error\":null,\"seconds\":0.5,\"connections_per_sec\":20.0,\"cpu_user_s\":0.1,\"cpu_sys_s\":0.2}\n",
        )
        .unwrap();
        assert_eq!(r.connections, 10);
        assert_eq!(r.connections_per_sec, 20.0);
        assert!(parse_result("oops").is_err());
    }
}

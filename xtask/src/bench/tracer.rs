//! The tracers compared: starting one, knowing when it traces, stopping it
//! and reading what it said.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::child::{self, Guarded};
use super::scrape::Scraper;
use super::{bpfstats, bpftrace, output, procfs};

/// One configuration of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Baseline,
    Trace,
    Stat,
    Record,
    /// `serve`, scraped once a second (issue 15).
    Serve,
    BpftraceStream,
    BpftraceCount,
}

impl Kind {
    pub fn id(self) -> &'static str {
        match self {
            Kind::Baseline => "baseline",
            Kind::Trace => "trace",
            Kind::Stat => "stat",
            Kind::Record => "record",
            Kind::Serve => "serve",
            Kind::BpftraceStream => "bpftrace",
            Kind::BpftraceCount => "bpftrace-count",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Baseline => "no tracer",
            Kind::Trace => "tcpstate trace --json > /dev/null",
            Kind::Stat => "tcpstate stat > /dev/null",
            Kind::Record => "tcpstate record -o FILE",
            Kind::Serve => "tcpstate serve, scraped every 1 s",
            Kind::BpftraceStream => "bpftrace, printf per transition",
            Kind::BpftraceCount => "bpftrace, count() only",
        }
    }

    pub fn is_tcpstate(self) -> bool {
        matches!(self, Kind::Trace | Kind::Stat | Kind::Record | Kind::Serve)
    }
}

/// The programs the bench runs.
pub struct Tools {
    pub tcpstate: PathBuf,
    pub churn: PathBuf,
    pub probe: PathBuf,
    pub bpftrace: Option<PathBuf>,
}

/// Makes a loopback connection now and then so that a starting tracer's
/// program runs, which tells that it is attached.
pub struct Poker {
    listener: TcpListener,
}

impl Poker {
    pub fn new() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the poke listener")?;
        listener.set_nonblocking(true)?;
        Ok(Self { listener })
    }

    pub fn poke(&self) {
        if let Ok(addr) = self.listener.local_addr() {
            drop(TcpStream::connect_timeout(&addr, Duration::from_secs(1)));
        }
        while let Ok((conn, _)) = self.listener.accept() {
            drop(conn);
        }
    }
}

/// A tracer that runs.
pub struct Running {
    pub kind: Kind,
    process: Guarded,
    stderr_path: PathBuf,
    stdout_path: Option<PathBuf>,
    record_path: Option<PathBuf>,
    scraper: Option<Scraper>,
    pub prog_ids: Vec<u32>,
}

/// What a stopped tracer said.
pub struct Exit {
    pub stderr: String,
    pub stdout: Option<output::Scan>,
    pub how: String,
    /// serve: scrapes answered with metrics.
    pub scrapes: Option<u64>,
}

const READY_LINE: &str = "tracing TCP state transitions";

impl Running {
    pub fn start(kind: Kind, tools: &Tools, dir: &Path, seq: usize) -> Result<Running> {
        let stem = format!("{}-{seq}", kind.id());
        let stderr_path = dir.join(format!("{stem}.stderr"));
        let mut stdout_path = None;
        let mut record_path = None;
        let mut cmd = match kind {
            Kind::Baseline => bail!("the baseline has no tracer"),
            Kind::Trace | Kind::Stat | Kind::Record | Kind::Serve => {
                let mut c = Command::new(&tools.tcpstate);
                c.arg("-v");
                match kind {
                    Kind::Trace => c.args(["trace", "--json"]),
                    Kind::Stat => c.arg("stat"),
                    // Any free port: runs never wait for one another's.
                    Kind::Serve => c.args(["serve", "--metrics", "127.0.0.1:0"]),
                    _ => {
                        let path = dir.join(format!("{stem}.tcpsrec"));
                        c.arg("record").arg("-o").arg(&path);
                        record_path = Some(path);
                        &mut c
                    }
                };
                c.stdout(Stdio::null());
                c
            }
            Kind::BpftraceStream | Kind::BpftraceCount => {
                let bin = tools
                    .bpftrace
                    .as_ref()
                    .context("bpftrace is not available")?;
                let script = if kind == Kind::BpftraceStream {
                    bpftrace::STREAM_SCRIPT
                } else {
                    bpftrace::COUNT_SCRIPT
                };
                let out = dir.join(format!("{stem}.out"));
                let mut c = Command::new(bin);
                c.arg("-e").arg(script);
                // "Lost N events" goes to the output too: keep it to read.
                c.stdout(File::create(&out)?);
                stdout_path = Some(out);
                c
            }
        };
        cmd.stdin(Stdio::null()).stderr(File::create(&stderr_path)?);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", kind.label()))?;
        let scraper = (kind == Kind::Serve).then(|| Scraper::start(stderr_path.clone()));
        Ok(Running {
            kind,
            process: Guarded::new(child, Duration::from_secs(15)),
            stderr_path,
            stdout_path,
            record_path,
            scraper,
            prog_ids: Vec::new(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits until the tracer's programs run: tcpstate says it traces, the
    /// process holds BPF programs, and a poke connection makes them run.
    pub fn wait_ready(&mut self, poker: &Poker, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        let mut first_runs: Option<u64> = None;
        loop {
            child::check()?;
            if let Some(status) = self.process.try_wait() {
                bail!(
                    "{} exited before it traced ({status}): {}",
                    self.kind.label(),
                    output::tail(&self.stderr(), 5)
                );
            }
            if Instant::now() > end {
                bail!(
                    "{} did not start tracing within {timeout:?}: {}",
                    self.kind.label(),
                    output::tail(&self.stderr(), 5)
                );
            }
            let said_ready = !self.kind.is_tcpstate() || self.stderr().contains(READY_LINE);
            let ids = procfs::bpf_prog_ids(self.pid());
            if said_ready && !ids.is_empty() {
                let runs: u64 = bpfstats::sample(&ids).iter().map(|p| p.run_count).sum();
                match first_runs {
                    Some(first) if runs > first => {
                        self.prog_ids = ids;
                        return Ok(());
                    }
                    Some(_) => {}
                    None => first_runs = Some(runs),
                }
                poker.poke();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGINT (SIGKILL after 15 s); returns what it printed. Its output and
    /// recording files are removed.
    pub fn stop(mut self) -> Result<Exit> {
        let scrapes = self.scraper.take().map(Scraper::finish);
        let ended = self.process.stop();
        let how = match (ended.killed, ended.status) {
            (true, _) => "killed with SIGKILL after SIGINT did not stop it".to_string(),
            (false, Some(status)) if status.success() => "exit 0".to_string(),
            (false, Some(status)) => format!("{status}"),
            (false, None) => "unknown".to_string(),
        };
        let stdout = match &self.stdout_path {
            Some(path) => Some(output::scan_file(path)?),
            None => None,
        };
        Ok(Exit {
            stderr: self.stderr(),
            stdout,
            how,
            scrapes,
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.process.stop();
        for path in [
            &self.stdout_path,
            &self.record_path,
            &Some(self.stderr_path.clone()),
        ]
        .into_iter()
        .flatten()
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

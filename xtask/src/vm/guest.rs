//! One VM run: a script that runs the kernel test binaries inside the guest
//! and writes each one's output and exit status into a folder the host reads
//! back (the guest's console does not carry the script's output).

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::kernels::Kernel;
use super::virtme::Accel;
use crate::cmd::phase;

/// A kernel test binary (one file of `tests/tests/`).
#[derive(Clone, Debug)]
pub struct TestBinary {
    pub name: String,
    pub path: PathBuf,
}

/// What the guest reported for one binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinaryResult {
    pub name: String,
    pub status: i32,
    pub seconds: u64,
}

/// What came back from one VM.
#[derive(Debug)]
pub struct GuestReport {
    /// `uname -r` inside the guest.
    pub release: String,
    pub results: Vec<BinaryResult>,
    /// The guest reached the end of the script.
    pub completed: bool,
    pub out_dir: PathBuf,
}

impl GuestReport {
    pub fn passed(&self) -> bool {
        self.completed && self.results.iter().all(|r| r.status == 0)
    }
}

/// Everything one VM run needs.
pub struct GuestRun<'a> {
    pub vng: &'a Path,
    pub kernel: &'a Kernel,
    pub accel: Accel,
    pub tcpstate: &'a Path,
    pub binaries: &'a [TestBinary],
    pub test_args: &'a [OsString],
    /// Where the guest writes (made empty first).
    pub out_dir: PathBuf,
    /// Longest the whole VM may take.
    pub limit: Duration,
}

/// Shell-quotes one word for the guest script.
fn sh(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The script the guest runs: the same tests as on the host, one binary
/// after another, one test at a time.
pub fn script(run: &GuestRun) -> String {
    let out = run.out_dir.to_string_lossy();
    let mut s =
        String::from("#!/bin/sh\n# Written by `cargo xtask test --kernel`; runs inside the VM.\n");
    s.push_str(&format!("OUT={}\n", sh(&out)));
    s.push_str("export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n");
    s.push_str(&format!(
        "export TCPSTATE_BIN={}\nexport {}={}\nexport RUST_BACKTRACE=0\n",
        sh(&run.tcpstate.to_string_lossy()),
        "TCPSTATE_TEST_SLOWDOWN",
        run.accel.slowdown()
    ));
    // These guests run without kernel lockdown: tracing programs (fexit)
    // load there, and the tests expect them to.
    s.push_str("export TCPSTATE_TEST_FENTRY=allowed\n");
    s.push_str("uname -r > \"$OUT/release\"\n");
    // The guest's memory (2 GiB) makes the kernel size the time-wait table
    // at 8,192, below what the 20,000-connection test holds; the host's
    // default is larger. Raised here, as it is on the hosts that need it.
    s.push_str("sysctl -qw net.ipv4.tcp_max_tw_buckets=262144\n");
    s.push_str("ip link set lo up\ncd /tmp\n");
    let args: Vec<String> = run
        .test_args
        .iter()
        .map(|a| sh(&a.to_string_lossy()))
        .collect();
    for b in run.binaries {
        s.push_str(&format!(
            "start=$(date +%s)\n{} --test-threads=1 {} > \"$OUT/{}.log\" 2>&1\nrc=$?\n\
             echo \"{} $rc $(( $(date +%s) - start ))\" >> \"$OUT/results\"\n",
            sh(&b.path.to_string_lossy()),
            args.join(" "),
            b.name,
            b.name
        ));
    }
    s.push_str("echo end >> \"$OUT/results\"\n");
    s
}

/// Parses the `results` file: `NAME STATUS SECONDS` lines, then `end`.
pub fn parse_results(text: &str) -> (Vec<BinaryResult>, bool) {
    let mut results = Vec::new();
    let mut completed = false;
    for line in text.lines() {
        if line.trim() == "end" {
            completed = true;
            continue;
        }
        let mut words = line.split_whitespace();
        if let (Some(name), Some(status), Some(seconds)) =
            (words.next(), words.next(), words.next())
        {
            results.push(BinaryResult {
                name: name.to_string(),
                status: status.parse().unwrap_or(-1),
                seconds: seconds.parse().unwrap_or(0),
            });
        }
    }
    (results, completed)
}

/// Boots the kernel, runs the script, and reads back what it wrote.
pub fn run(run: &GuestRun) -> Result<GuestReport> {
    if run.out_dir.exists() {
        fs::remove_dir_all(&run.out_dir)
            .with_context(|| format!("emptying {}", run.out_dir.display()))?;
    }
    fs::create_dir_all(&run.out_dir)?;
    let script_path = run.out_dir.join("run.sh");
    fs::write(&script_path, script(run))?;
    fs::set_permissions(&script_path, fs::Permissions::from_mode(0o755))?;
    let console = run.out_dir.join("console.log");
    let mut vng = Command::new(run.vng);
    vng.arg("--run").arg(&run.kernel.vmlinuz).args([
        "--force-9p",
        "--cpus",
        "2",
        "--memory",
        "2G",
        "--verbose",
    ]);
    if run.accel == Accel::Tcg {
        vng.arg("--disable-kvm");
    }
    vng.arg("--rwdir")
        .arg(&run.out_dir)
        .arg("--exec")
        .arg(&script_path);
    // vng runs `virtme-run` from its own venv.
    let venv_bin = run.vng.parent().unwrap_or(Path::new("."));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![venv_bin.to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    vng.env("PATH", std::env::join_paths(paths)?)
        .stdin(std::process::Stdio::null())
        .stdout(fs::File::create(&console)?)
        .stderr(fs::File::create(run.out_dir.join("vng.stderr"))?);
    phase(format!(
        "kernel {} ({}): booting {} with {} binaries, {}, output in {}",
        run.kernel.series.name,
        run.kernel.series.distribution,
        run.kernel.release,
        run.binaries.len(),
        run.accel.name(),
        run.out_dir.display()
    ));
    let started = Instant::now();
    let mut child = vng.spawn().context("starting vng")?;
    let timed_out = loop {
        if child.try_wait()?.is_some() {
            break false;
        }
        if started.elapsed() > run.limit {
            let _ = child.kill();
            let _ = child.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let (results, completed) =
        parse_results(&fs::read_to_string(run.out_dir.join("results")).unwrap_or_default());
    let release = fs::read_to_string(run.out_dir.join("release"))
        .unwrap_or_default()
        .trim()
        .to_string();
    if timed_out {
        phase(format!(
            "kernel {}: the VM was stopped after {} min",
            run.kernel.series.name,
            run.limit.as_secs() / 60
        ));
    }
    Ok(GuestReport {
        release,
        results,
        completed,
        out_dir: run.out_dir.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_need_the_end_marker() {
        let (r, done) = parse_results("scenarios 0 135\nloss 101 33\nend\n");
        assert!(done);
        assert_eq!(
            r,
            vec![
                BinaryResult {
                    name: "scenarios".into(),
                    status: 0,
                    seconds: 135
                },
                BinaryResult {
                    name: "loss".into(),
                    status: 101,
                    seconds: 33
                }
            ]
        );
        let (r, done) = parse_results("scenarios 0 135\nvolume 0");
        assert!(!done, "a guest that died mid-way did not complete");
        assert_eq!(r.len(), 1);
        assert_eq!(parse_results("").0.len(), 0);
    }

    #[test]
    fn words_are_quoted_for_the_guest_shell() {
        assert_eq!(sh("a b"), "'a b'");
        assert_eq!(sh("it's"), r"'it'\''s'");
    }
}

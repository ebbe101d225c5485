//! Running the `tcpstate` binary (and the test peer) as child processes,
//! with their output lines arriving on channels.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
};

fn lines(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// A running `tcpstate`; killed if dropped without [`Running::interrupt`].
pub struct Running {
    child: Child,
    pub stdout: mpsc::Receiver<String>,
    pub stderr: mpsc::Receiver<String>,
}

impl Running {
    /// Starts `tcpstate ARGS` and waits until it says it is tracing.
    pub fn start(args: &[&str]) -> Running {
        Running::start_with(args, &[]).0
    }

    /// Like [`Running::start`], with extra environment variables; also
    /// returns what it printed on stderr before it said it was tracing.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> (Running, Vec<String>) {
        let mut child = Command::new(crate::tcpstate_bin())
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpstate");
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        // Built first, so that a failure below kills the child (Drop): a
        // tracer left running would disturb the tests after this one.
        let running = Running {
            child,
            stdout,
            stderr,
        };
        let mut before = Vec::new();
        loop {
            let line = running
                .stderr
                .recv_timeout(crate::secs(20))
                .unwrap_or_else(|_| panic!("tcpstate {args:?} did not start: {before:#?}"));
            if line.contains(crate::STARTED) {
                break;
            }
            assert!(!line.contains("error:"), "tcpstate {args:?}: {line}");
            before.push(line);
        }
        (running, before)
    }

    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// Ctrl-C, then everything printed after it and the exit status.
    pub fn interrupt(mut self) -> (Vec<String>, Vec<String>, ExitStatus) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), libc::SIGINT) };
        let status = self.child.wait().expect("wait");
        std::thread::sleep(crate::millis(50));
        (
            self.stdout.try_iter().collect(),
            self.stderr.try_iter().collect(),
            status,
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `tcpstate-test-peer` process; killed (with its workers) when dropped.
pub struct Peer {
    child: Child,
    pub port: u16,
    pub pid: u32,
    /// Worker pids, for `prefork`.
    pub workers: Vec<u32>,
    stdout: mpsc::Receiver<String>,
}

impl Peer {
    pub fn start(peer_bin: &str, args: &[&str]) -> Peer {
        let mut child = Command::new(peer_bin)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the test peer");
        let stdout = lines(child.stdout.take().unwrap());
        let ready = stdout
            .recv_timeout(crate::secs(10))
            .expect("peer not ready");
        let fields: Vec<u32> = ready
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("peer said {ready}"))
            .split_whitespace()
            .map(|f| f.parse().expect("number"))
            .collect();
        Peer {
            child,
            port: fields[0] as u16,
            pid: fields[1],
            workers: fields[2..].to_vec(),
            stdout,
        }
    }

    /// The next line the peer prints.
    pub fn next_line(&self) -> String {
        self.stdout
            .recv_timeout(crate::secs(30))
            .expect("the peer said nothing")
    }

    /// Waits for the peer to say it handled every connection.
    pub fn wait_done(&self) {
        let line = self
            .stdout
            .recv_timeout(crate::secs(20))
            .expect("peer did not finish");
        assert_eq!(line, "done");
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

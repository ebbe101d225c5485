//! `tcpstate top` in a real terminal: a detached tmux session of fixed size
//! runs it against real traffic (a peer process that leaks CLOSE_WAIT); the
//! test reads the screen with `capture-pane`, types with `send-keys`, and
//! checks that `q` exits 0 with the terminal restored.
use std::{
    net::TcpStream,
    process::{Command, Output},
    time::{Duration, Instant},
};
use tcpstate_tests::{require_root, running::Peer, tcpstate_bin};

const PEER: &str = env!("CARGO_BIN_EXE_tcpstate-test-peer");
const WIDTH: u16 = 160;
const HEIGHT: u16 = 40;

/// Columns of a process row, as `top` lays them out.
const PID: usize = 0;
const COMM: usize = 1;
const TOTAL: usize = 2;
const CLOSE_WAIT: usize = 9;
const LISTEN: usize = 11;
const CW_LEAK: usize = 12;
const OPEN_RATE: usize = 13;
/// Rows start below the 3 header lines and the table's title line.
const FIRST_ROW: usize = 4;

/// A tmux server of our own (`-S`), with one detached session; killed,
/// with everything it runs, when dropped.
struct Tmux {
    socket: std::path::PathBuf,
    session: String,
}

impl Tmux {
    fn start(shell_command: &str) -> Tmux {
        let unique = format!(
            "tcpstate-top-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let tmux = Tmux {
            socket: std::env::temp_dir().join(format!("{unique}.tmux")),
            session: unique,
        };
        let (w, h) = (WIDTH.to_string(), HEIGHT.to_string());
        let out = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            &tmux.session,
            "-x",
            &w,
            "-y",
            &h,
            shell_command,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    /// `tmux -S SOCKET ARGS`, bounded in time.
    fn run(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .args(["10", "tmux", "-S"])
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .output()
            .unwrap_or_else(|e| panic!("running tmux (is it installed? cargo xtask prereqs): {e}"))
    }

    fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", &self.session]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Keys by tmux name (`s`, `Enter`, `Escape`, `/`).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend_from_slice(keys);
        let out = self.run(&args);
        assert!(out.status.success(), "tmux send-keys {keys:?}");
    }

    /// Text typed literally.
    fn type_text(&self, text: &str) {
        let out = self.run(&["send-keys", "-t", &self.session, "-l", text]);
        assert!(out.status.success(), "tmux send-keys -l {text:?}");
    }

    /// `#{...}` formats of the pane.
    fn pane(&self, format: &str) -> String {
        let out = self.run(&["display-message", "-p", "-t", &self.session, format]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Polls the screen until `done` accepts it; panics with the last
    /// screen after `timeout`.
    fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&str) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if let Some(found) = done(&screen) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; screen:\n{screen}"
            );
            std::thread::sleep(tcpstate_tests::millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn lines(screen: &str) -> Vec<&str> {
    screen.lines().collect()
}

/// The fields of the process rows, top to bottom.
fn rows(screen: &str) -> Vec<Vec<&str>> {
    let lines = lines(screen);
    // The last line is the footer.
    let table = lines
        .get(FIRST_ROW..lines.len().saturating_sub(1))
        .unwrap_or(&[]);
    table
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| {
            fields.len() == 15
                && (fields[PID] == "?" || fields[PID].chars().all(|c| c.is_ascii_digit()))
        })
        .collect()
}

fn row_of(screen: &str, pid: u32) -> Option<Vec<&str>> {
    let pid = pid.to_string();
    rows(screen).into_iter().find(|r| r[PID] == pid)
}

/// A count cell: `-` is zero.
fn number(cell: &str) -> f64 {
    if cell == "-" {
        0.0
    } else {
        cell.parse()
            .unwrap_or_else(|_| panic!("not a number: {cell:?}"))
    }
}

#[test]
fn top_shows_a_leaking_process_sorts_filters_and_quits_cleanly() {
    require_root();
    const LEAKED: usize = 7;
    let bin = tcpstate_bin();
    let tmux = Tmux::start(&format!(
        "'{}' top --threshold 1s; echo EXITED $?; \
         if stty -a | grep -q -e -icanon; then echo TTY-RAW; else echo TTY-COOKED; fi; \
         sleep 600",
        bin.display()
    ));
    tmux.wait_for("top's first frame", tcpstate_tests::secs(30), |s| {
        let first = lines(s).first().copied().unwrap_or("");
        assert!(!s.contains("EXITED"), "top exited:\n{s}");
        first.starts_with("tcpstate top").then_some(())
    });
    assert_eq!(tmux.pane("#{alternate_on} #{cursor_flag}"), "1 0");

    // The peer accepts LEAKED connections and never closes them; we close
    // ours, one every 150 ms, so that its opens are visible as a rate for
    // a while; they leave it in CLOSE_WAIT.
    let leaky = Peer::start(PEER, &["serve", "leak", &LEAKED.to_string()]);
    let mut opened = Vec::new();
    let mut saw_open_rate = false;
    for _ in 0..LEAKED {
        opened.push(TcpStream::connect(("127.0.0.1", leaky.port)).expect("connect"));
        std::thread::sleep(tcpstate_tests::millis(150));
        let screen = tmux.screen();
        saw_open_rate |= row_of(&screen, leaky.pid).is_some_and(|r| number(r[OPEN_RATE]) > 0.0);
    }
    leaky.wait_done();
    drop(opened);

    // Its row: CLOSE_WAIT, then, past the 1 s threshold, as many suspects.
    let row = tmux.wait_for(
        "the peer's CLOSE_WAIT sockets, all suspects",
        tcpstate_tests::secs(20),
        |s| {
            let row = row_of(s, leaky.pid)?;
            saw_open_rate |= number(row[OPEN_RATE]) > 0.0;
            let want = LEAKED.to_string();
            (row[CLOSE_WAIT] == want && row[CW_LEAK] == want)
                .then(|| row.iter().map(|f| f.to_string()).collect::<Vec<_>>())
        },
    );
    assert_eq!(row[COMM], "tcpstate-test-p", "{row:?}");
    assert_eq!(row[LISTEN], "1", "{row:?}");
    assert_eq!(row[TOTAL], (LEAKED + 1).to_string(), "{row:?}");
    assert!(saw_open_rate, "the peer's OPEN/s never showed its accepts");
    let screen = tmux.screen();
    let header = lines(&screen)[0];
    let close_wait_total: usize = header
        .split("CLOSE_WAIT ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no CLOSE_WAIT total in the header: {header}"));
    assert!(close_wait_total >= LEAKED, "{header}");
    assert!(lines(&screen)[1].contains("lost events "), "{screen}");
    assert!(
        lines(&screen)[2].contains("sort: TOTAL descending"),
        "{screen}"
    );

    // Sort: `s` moves the sort column right, seven times from TOTAL to
    // CLOSE_WAIT; `r` reverses.
    for _ in 0..7 {
        tmux.keys(&["s"]);
    }
    let by_close_wait = |s: &str, descending: bool| {
        let direction = if descending {
            "descending"
        } else {
            "ascending"
        };
        if !lines(s)
            .get(2)?
            .contains(&format!("sort: CLOSE_WAIT {direction}"))
        {
            return None;
        }
        let counts: Vec<f64> = rows(s).iter().map(|r| number(r[CLOSE_WAIT])).collect();
        let sorted = counts.windows(2).all(|w| {
            if descending {
                w[0] >= w[1]
            } else {
                w[0] <= w[1]
            }
        });
        (sorted && !counts.is_empty()).then_some(counts)
    };
    let counts = tmux.wait_for("sorting by CLOSE_WAIT", tcpstate_tests::secs(10), |s| {
        by_close_wait(s, true)
    });
    assert!(counts[0] >= LEAKED as f64, "{counts:?}");
    tmux.keys(&["r"]);
    tmux.wait_for("reversed sort", tcpstate_tests::secs(10), |s| {
        by_close_wait(s, false)
    });

    // Filter by pid: typed after `/`, applied with Enter.
    tmux.keys(&["/"]);
    tmux.type_text(&leaky.pid.to_string());
    tmux.wait_for("the filter being typed", tcpstate_tests::secs(10), |s| {
        let last = lines(s).last().copied().unwrap_or("");
        last.starts_with(&format!("filter: {}_", leaky.pid))
            .then_some(())
    });
    tmux.keys(&["Enter"]);
    tmux.wait_for("the filter applied", tcpstate_tests::secs(10), |s| {
        let rows = rows(s);
        let header = *lines(s).get(2)?;
        (header.contains(&format!("filter: {}", leaky.pid))
            && !rows.is_empty()
            && rows.iter().any(|r| r[PID] == leaky.pid.to_string())
            && rows.iter().all(|r| {
                let pid = leaky.pid.to_string();
                r[PID].contains(&pid) || r[COMM].contains(&pid)
            }))
        .then_some(())
    });
    // By name, then cleared with Esc.
    tmux.keys(&["/"]);
    for _ in 0..leaky.pid.to_string().len() {
        tmux.keys(&["BSpace"]);
    }
    tmux.type_text("TEST-P");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the name filter", tcpstate_tests::secs(10), |s| {
        let rows = rows(s);
        (lines(s).get(2)?.contains("filter: TEST-P")
            && rows.iter().any(|r| r[PID] == leaky.pid.to_string())
            && rows
                .iter()
                .all(|r| r[COMM].to_lowercase().contains("test-p")))
        .then_some(())
    });
    tmux.keys(&["Escape"]);
    tmux.wait_for("the filter cleared", tcpstate_tests::secs(10), |s| {
        lines(s).get(2)?.contains("filter: none").then_some(())
    });

    // `q`: exit status 0, the primary screen back, cursor shown, raw mode
    // off.
    tmux.keys(&["q"]);
    let screen = tmux.wait_for("top to exit", tcpstate_tests::secs(20), |s| {
        (s.contains("EXITED") && s.contains("TTY-")).then(|| s.to_string())
    });
    assert!(screen.lines().any(|l| l == "EXITED 0"), "{screen}");
    assert!(screen.lines().any(|l| l == "TTY-COOKED"), "{screen}");
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with("tcpstate: ") && l.contains("transitions seen")),
        "the summary is printed once the screen is left:\n{screen}"
    );
    assert!(
        !screen.contains("sort: "),
        "still the full screen:\n{screen}"
    );
    assert_eq!(tmux.pane("#{alternate_on} #{cursor_flag}"), "0 1");
}

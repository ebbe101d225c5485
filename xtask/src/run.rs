//! `cargo xtask run`: runs the built binary, as root (via `sudo -E` if needed).

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::cmd::{self, phase};

/// Runs `bin args...` and returns the exit code to propagate.
pub fn run(bin: &Path, args: &[OsString]) -> Result<i32> {
    let mut child = if cmd::is_root() {
        Command::new(bin)
    } else {
        let mut c = Command::new("sudo");
        c.arg("-E").arg(bin);
        c
    };
    child.args(args);
    phase(format!("running {}", cmd::show(&child)));

    // Ctrl-C reaches the child (and sudo) through the terminal's process
    // group; xtask ignores it so it can report how the child ended. The child
    // gets the default dispositions back before exec (an ignored signal would
    // otherwise stay ignored across exec).
    let _guard = IgnoreInterrupts::new();
    // SAFETY: only async-signal-safe calls (signal) between fork and exec.
    unsafe {
        child.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
            Ok(())
        });
    }
    let status = child
        .status()
        .with_context(|| format!("failed to start `{}`", cmd::show(&child)))?;

    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => {
            if code != 0 {
                phase(format!("tcpstate exited with status {code}"));
            }
            code
        }
        (None, Some(sig)) => {
            phase(format!("tcpstate was killed by signal {sig}"));
            128 + sig
        }
        (None, None) => 1,
    })
}

/// Ignores SIGINT and SIGQUIT in this process until dropped.
struct IgnoreInterrupts {
    old_int: libc::sighandler_t,
    old_quit: libc::sighandler_t,
}

impl IgnoreInterrupts {
    fn new() -> Self {
        // SAFETY: installing SIG_IGN has no preconditions.
        unsafe {
            Self {
                old_int: libc::signal(libc::SIGINT, libc::SIG_IGN),
                old_quit: libc::signal(libc::SIGQUIT, libc::SIG_IGN),
            }
        }
    }
}

impl Drop for IgnoreInterrupts {
    fn drop(&mut self) {
        // SAFETY: restores the dispositions returned by signal() above.
        unsafe {
            libc::signal(libc::SIGINT, self.old_int);
            libc::signal(libc::SIGQUIT, self.old_quit);
        }
    }
}

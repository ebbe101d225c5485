//! Child processes the bench starts: stopped with SIGINT, then SIGKILL
//! after a grace period, also when the bench fails (Drop); and Ctrl-C
//! handling, so that a bench interrupted by the user still cleans up.

use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From now on SIGINT and SIGTERM only set a flag that [`check`] reports,
/// so that the bench unwinds through its guards (children, namespaces,
/// sysctl) instead of dying with them in place.
pub fn catch_interrupts() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// Fails once the user asked to stop.
pub fn check() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps, waking early (with an error) when interrupted.
pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

/// A child that is always reaped: [`Guarded::stop`] or Drop sends SIGINT,
/// waits up to the grace period, then SIGKILLs.
pub struct Guarded {
    child: Option<Child>,
    pub pid: u32,
    grace: Duration,
}

/// How a guarded child ended.
#[derive(Clone, Copy, Debug)]
pub struct Ended {
    pub status: Option<ExitStatus>,
    /// It had to be killed with SIGKILL.
    pub killed: bool,
}

impl Guarded {
    pub fn new(child: Child, grace: Duration) -> Self {
        Self {
            pid: child.id(),
            child: Some(child),
            grace,
        }
    }

    /// The exit status if it has already ended (and then reaps it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Waits for it to end by itself, up to `timeout`; then stops it.
    pub fn wait_or_stop(&mut self, timeout: Duration) -> Result<Ended> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return Ok(Ended {
                    status: Some(status),
                    killed: false,
                });
            }
            if let Err(e) = check() {
                self.stop();
                return Err(e);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(self.stop())
    }

    /// SIGINT, then SIGKILL after the grace period.
    pub fn stop(&mut self) -> Ended {
        let Some(mut child) = self.child.take() else {
            return Ended {
                status: None,
                killed: false,
            };
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Ended {
                status: Some(status),
                killed: false,
            };
        }
        // SAFETY: signalling our own child, which is not reaped yet.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGINT) };
        let end = Instant::now() + self.grace;
        while Instant::now() < end {
            if let Ok(Some(status)) = child.try_wait() {
                return Ended {
                    status: Some(status),
                    killed: false,
                };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        Ended {
            status: child.wait().ok(),
            killed: true,
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.stop();
    }
}

//! Kills in the running recording (issue 12): `tcpstate kill` tells every
//! running recorder (`record`, `serve --record`) what it did, one datagram
//! per socket, and the recorder writes each as a record of its file, so a
//! replay shows the kills beside the transitions they caused.
//!
//! - [`KillRecord`]: one socket outcome. Its bytes are the same in the
//!   datagram and in the recording (extension kind 2, see
//!   `recording/codec/kill.rs`), so one decoder checks both.
//! - [`inbox`]: the recorder's side, a Unix datagram socket
//!   `DIR/kill-PID.sock` (one per recorder, so two recorders at once both
//!   get every kill) in `DIR` = `/run/tcpstate` (mode 0700, root), or
//!   `$TCPSTATE_KILL_SOCKET_DIR`.
//! - [`notify`]: the killer's side, one datagram to every such socket
//!   present; none present is not an error.
use crate::{addr::Endpoint, tcp::Family, tcp::TcpState, wire::Comm};
use std::path::{Path, PathBuf};

pub mod inbox;
pub mod notify;

/// Where recorders listen unless `TCPSTATE_KILL_SOCKET_DIR` names another
/// directory (tests, or a system without `/run`).
pub const DEFAULT_SOCKET_DIR: &str = "/run/tcpstate";
pub const SOCKET_DIR_ENV: &str = "TCPSTATE_KILL_SOCKET_DIR";
const SOCKET_PREFIX: &str = "kill-";
const SOCKET_SUFFIX: &str = ".sock";

/// The directory of the recorders' sockets.
pub fn socket_dir() -> PathBuf {
    std::env::var_os(SOCKET_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_SOCKET_DIR), PathBuf::from)
}

/// The socket of the recorder with process id `pid`.
pub fn socket_path(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("{SOCKET_PREFIX}{pid}{SOCKET_SUFFIX}"))
}

/// Whether a file name is that of a recorder's socket.
pub fn is_socket_name(name: &str) -> bool {
    name.strip_prefix(SOCKET_PREFIX)
        .and_then(|rest| rest.strip_suffix(SOCKET_SUFFIX))
        .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// What the kernel did with one destroy request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillOutcome {
    Destroyed,
    /// The socket had gone (closed, or its 4-tuple taken by another).
    AlreadyGone,
    /// Refused with this errno (EOPNOTSUPP: the kernel has no SOCK_DESTROY).
    Refused(u16),
}

impl KillOutcome {
    pub fn name(self) -> &'static str {
        match self {
            KillOutcome::Destroyed => "destroyed",
            KillOutcome::AlreadyGone => "already_gone",
            KillOutcome::Refused(_) => "refused",
        }
    }

    pub fn errno(self) -> Option<u16> {
        match self {
            KillOutcome::Refused(errno) => Some(errno),
            _ => None,
        }
    }
}

impl From<crate::source::snapshot::destroy::DestroyOutcome> for KillOutcome {
    fn from(o: crate::source::snapshot::destroy::DestroyOutcome) -> Self {
        use crate::source::snapshot::destroy::DestroyOutcome as D;
        match o {
            D::Destroyed => KillOutcome::Destroyed,
            D::AlreadyGone => KillOutcome::AlreadyGone,
            D::Unsupported => KillOutcome::Refused(libc::EOPNOTSUPP as u16),
            D::Refused(errno) => KillOutcome::Refused(u16::try_from(errno).unwrap_or(u16::MAX)),
        }
    }
}

/// The process that held the socket when it was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KillOwner {
    pub tgid: u32,
    pub comm: Comm,
}

/// One socket `tcpstate kill` acted on, and what came of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KillRecord {
    /// When the kernel had answered, CLOCK_BOOTTIME (the clock of the
    /// transitions, so the kill sorts right after the close it caused);
    /// read once after all of a run's requests, so its kills share it.
    pub ts_boot_ns: u64,
    /// The `tcpstate kill` process.
    pub killer_pid: u32,
    pub netns: u32,
    /// The kernel's socket cookie (unique per socket for the boot).
    pub cookie: u64,
    pub family: Family,
    pub local: Endpoint,
    pub remote: Endpoint,
    /// The state it was chosen in.
    pub state: TcpState,
    pub owner: Option<KillOwner>,
    pub outcome: KillOutcome,
}

impl KillRecord {
    /// From a socket `kill` chose and what the kernel answered.
    pub fn new(
        s: &crate::source::snapshot::inspect::Inspected,
        outcome: crate::source::snapshot::destroy::DestroyOutcome,
        ts_boot_ns: u64,
    ) -> KillRecord {
        KillRecord {
            ts_boot_ns,
            killer_pid: std::process::id(),
            netns: s.netns,
            cookie: s.sock.cookie,
            family: s.sock.family,
            local: s.sock.local,
            remote: s.sock.remote,
            state: s.state,
            owner: s.owner.map(|o| KillOwner {
                tgid: o.tgid,
                comm: o.comm,
            }),
            outcome: outcome.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_names_are_recognised_and_nothing_else() {
        let path = socket_path(Path::new("/run/tcpstate"), 4242);
        assert_eq!(path, Path::new("/run/tcpstate/kill-4242.sock"));
        assert!(is_socket_name("kill-4242.sock"));
        for other in [
            "kill-.sock",
            "kill-12a.sock",
            "kill-1.sock.tmp",
            "x-1.sock",
            "",
        ] {
            assert!(!is_socket_name(other), "{other} accepted");
        }
    }
}

//! An on-demand look at the TCP sockets of some network namespaces, with
//! the kernel's `tcp_info` and the owning process of each: what `kill` and
//! `stale` decide on. Taken once per command run, never polled.
use super::{
    destroy::{DestroyOutcome, Destroyer},
    diag::{self, DiagSocket, DumpStats},
    owners::{self, Holding, ScanStats},
    SnapshotError,
};
use crate::{source::netns, tcp::TcpState};
use std::{collections::HashSet, path::Path};

/// One socket as found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inspected {
    /// Inode of the network namespace it lives in.
    pub netns: u32,
    pub state: TcpState,
    pub sock: DiagSocket,
    /// The process holding it (the oldest, if several), None for sockets
    /// no visible process holds (TIME_WAIT, orphans, unreadable /proc).
    pub owner: Option<Holding>,
    /// cgroup v2 id of the owner, 0 if unknown.
    pub cgroup_id: u64,
}

/// What was found, and what could not be seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inspection {
    pub sockets: Vec<Inspected>,
    pub dump: DumpStats,
    pub scan: ScanStats,
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Dump(#[from] SnapshotError),
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error("sending a SOCK_DESTROY request or reading its answer failed: {0}")]
    Destroy(std::io::Error),
}

/// Runs `work` in network namespace `inode` (directly when it is the
/// caller's own).
fn in_namespace<R: Send + 'static>(
    inode: u32,
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, netns::NetnsError> {
    if inode == super::current_netns() {
        return Ok(work());
    }
    netns::run_in(inode, netns::find(inode)?, work)
}

/// Dumps every TCP socket of each namespace in `namespaces` with its
/// `tcp_info`, then finds the owners in one pass over /proc.
pub fn inspect(namespaces: &[u32]) -> Result<Inspection, InspectError> {
    let mut found = Inspection::default();
    for &ns in namespaces {
        let (raw, stats) = in_namespace(ns, || {
            let mut raw = Vec::new();
            let mut stats = DumpStats::default();
            for family in [crate::tcp::Family::Ipv4, crate::tcp::Family::Ipv6] {
                diag::dump_with_info(family, &mut raw, &mut stats)?;
            }
            Ok::<_, SnapshotError>((raw, stats))
        })??;
        found.dump.skipped_messages += stats.skipped_messages;
        found.dump.interrupted |= stats.interrupted;
        found.sockets.extend(raw.into_iter().filter_map(|sock| {
            Some(Inspected {
                netns: ns,
                state: TcpState::from_raw(sock.state)?,
                sock,
                owner: None,
                cgroup_id: 0,
            })
        }));
    }
    let wanted: HashSet<u32> = found
        .sockets
        .iter()
        .map(|s| s.sock.inode)
        .filter(|&i| i != 0)
        .collect();
    if !wanted.is_empty() {
        let holders = owners::scan(Path::new("/proc"), &wanted, &mut found.scan)?;
        for s in &mut found.sockets {
            s.owner = holders.get(&s.sock.inode).copied();
            s.cgroup_id = s
                .owner
                .and_then(|o| crate::source::cgroup::id_of_process(o.tgid))
                .unwrap_or(0);
        }
    }
    Ok(found)
}

/// Sends a destroy request for each socket, in its namespace; the outcomes
/// in the same order. Stops asking once the kernel says it cannot (every
/// later socket gets the same answer without a request).
pub fn destroy_all(targets: &[Inspected]) -> Result<Vec<DestroyOutcome>, InspectError> {
    let mut outcomes = Vec::with_capacity(targets.len());
    let namespaces: HashSet<u32> = targets.iter().map(|t| t.netns).collect();
    let mut by_socket = std::collections::HashMap::new();
    for ns in namespaces {
        let here: Vec<DiagSocket> = targets
            .iter()
            .filter(|t| t.netns == ns)
            .map(|t| t.sock)
            .collect();
        let answers = in_namespace(ns, move || {
            let destroyer = Destroyer::open()?;
            let mut answers = Vec::new();
            let mut unsupported = false;
            for sock in here {
                let outcome = if unsupported {
                    DestroyOutcome::Unsupported
                } else {
                    destroyer.destroy(&sock).map_err(InspectError::Destroy)?
                };
                unsupported |= outcome == DestroyOutcome::Unsupported;
                answers.push((sock.cookie, outcome));
            }
            Ok::<_, InspectError>(answers)
        })??;
        for (cookie, outcome) in answers {
            by_socket.insert((ns, cookie), outcome);
        }
    }
    for t in targets {
        outcomes.push(
            by_socket
                .get(&(t.netns, t.sock.cookie))
                .copied()
                .unwrap_or(DestroyOutcome::AlreadyGone),
        );
    }
    Ok(outcomes)
}

/// Namespace inode of process `pid`, None if there is no such process.
pub fn netns_of_process(pid: u32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino() as u32)
}

//! Doing work inside another network namespace: sock_diag dumps and
//! destroy requests act on the namespace of the netlink socket, which is
//! that of the thread creating it. `setns` changes only the calling
//! thread, so the work runs on a dedicated thread that enters the
//! namespace and ends with it; the rest of the process stays where it was.
use std::{
    collections::BTreeMap,
    fs::File,
    io,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {0} not found: no file under /run/netns and no process in /proc refers to it (`ip netns list`, `lsns -t net`)")]
    NotFound(u32),
    #[error(
        "entering network namespace {inode} ({path}): {error} (needs CAP_SYS_ADMIN; run as root)"
    )]
    Enter {
        inode: u32,
        path: String,
        error: io::Error,
    },
    #[error("the thread working in network namespace {0} panicked; please report it")]
    Panicked(u32),
}

/// A file referring to network namespace `inode`: a name bound under
/// /run/netns (`ip netns add`) or any process's /proc/PID/ns/net.
pub fn find(inode: u32) -> Result<PathBuf, NetnsError> {
    in_use_under(Path::new("/run/netns"), Path::new("/proc"))
        .remove(&inode)
        .ok_or(NetnsError::NotFound(inode))
}

/// Every network namespace in use (named under /run/netns, or some
/// process's), by inode, with one file to enter it by.
pub fn in_use() -> BTreeMap<u32, PathBuf> {
    in_use_under(Path::new("/run/netns"), Path::new("/proc"))
}

fn in_use_under(run_netns: &Path, proc: &Path) -> BTreeMap<u32, PathBuf> {
    let named = std::fs::read_dir(run_netns)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path());
    let processes = std::fs::read_dir(proc)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .map(|e| e.path().join("ns/net"));
    let mut out = BTreeMap::new();
    for path in named.chain(processes) {
        if let Ok(meta) = std::fs::metadata(&path) {
            // Namespace inodes are 32-bit (`ns_common.inum`); a name under
            // /run/netns comes first and is kept.
            out.entry(meta.ino() as u32).or_insert(path);
        }
    }
    out
}

/// Runs `work` on a new thread inside the namespace `path` refers to
/// (`inode` only names it in messages).
pub fn run_in<R: Send + 'static>(
    inode: u32,
    path: PathBuf,
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, NetnsError> {
    std::thread::spawn(move || {
        let enter = |path: &Path| -> io::Result<()> {
            let file = File::open(path)?;
            // SAFETY: a valid descriptor of a namespace file; setns changes
            // only this thread, which ends after `work`.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        enter(&path).map_err(|error| NetnsError::Enter {
            inode,
            path: path.display().to_string(),
            error,
        })?;
        Ok(work())
    })
    .join()
    .map_err(|_| NetnsError::Panicked(inode))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_own_namespace_through_proc() {
        let me = crate::source::snapshot::current_netns();
        let empty = std::env::temp_dir().join("tcpstate-no-such-run-netns");
        let path = in_use_under(&empty, Path::new("/proc"))
            .remove(&me)
            .unwrap();
        assert!(path.ends_with("ns/net"), "{}", path.display());
        assert!(in_use_under(&empty, &empty).is_empty());
    }

    /// The calling thread's namespace (`/proc/self` is the process's).
    fn thread_netns() -> u32 {
        std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino() as u32
    }

    #[test]
    fn work_runs_in_the_namespace_entered() {
        let me = crate::source::snapshot::current_netns();
        let path = find(me).unwrap();
        // Entering one's own namespace still needs CAP_SYS_ADMIN.
        match run_in(me, path, thread_netns) {
            Ok(seen) => assert_eq!(seen, me),
            Err(NetnsError::Enter { error, .. }) => {
                assert_eq!(error.raw_os_error(), Some(libc::EPERM))
            }
            Err(e) => panic!("{e}"),
        }
    }
}

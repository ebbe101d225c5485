//! Doing work inside another network namespace: sock_diag dumps and
//! destroy requests act on the namespace of the netlink socket, which is
//! that of the thread creating it. `setns` changes only the calling
//! thread, so the work runs on a dedicated thread that enters the
//! namespace and ends with it; the rest of the process stays where it was.
use std::{
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
    find_under(Path::new("/run/netns"), Path::new("/proc"), inode)
}

fn find_under(run_netns: &Path, proc: &Path, inode: u32) -> Result<PathBuf, NetnsError> {
    let is = |path: &Path| std::fs::metadata(path).is_ok_and(|m| m.ino() as u32 == inode);
    let named = std::fs::read_dir(run_netns).into_iter().flatten().flatten();
    if let Some(path) = named.map(|e| e.path()).find(|p| is(p)) {
        return Ok(path);
    }
    let processes = std::fs::read_dir(proc).into_iter().flatten().flatten();
    processes
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .map(|e| e.path().join("ns/net"))
        .find(|p| is(p))
        .ok_or(NetnsError::NotFound(inode))
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
        let path = find_under(&empty, Path::new("/proc"), me).unwrap();
        assert!(path.ends_with("ns/net"), "{}", path.display());
        assert!(matches!(
            find_under(&empty, &empty, me),
            Err(NetnsError::NotFound(n)) if n == me
        ));
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

//! Who holds each socket: one pass over `/proc/[0-9]*/fd/*`.
//!
//! A process's descriptor for a socket is a symlink to `socket:[INODE]`,
//! the inode sock_diag reports. Only the thread-group directories that
//! `/proc` lists are read (threads share their process's descriptor table),
//! and `/proc/PID/comm` and `/proc/PID/stat` are read only for processes
//! that hold a socket of interest.
//!
//! Processes come and go during the scan: a process or descriptor that
//! vanishes (ENOENT, ESRCH) is passed over, and directories we may not read
//! (EACCES, EPERM: other users' processes without root) are counted.
use super::SnapshotError;
use crate::wire::Comm;
use std::{
    collections::{hash_map::Entry, HashMap, HashSet},
    fs, io,
    os::unix::ffi::OsStrExt,
    path::Path,
};

/// The process chosen as a socket's owner, and how many hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holding {
    pub tgid: u32,
    pub comm: Comm,
    /// Processes holding the socket (fork() and descriptor passing share
    /// it); at least 1.
    pub holders: u32,
}

/// What the scan could not read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Processes looked at.
    pub processes: u32,
    /// Processes whose descriptors we were not allowed to read.
    pub permission_denied: u32,
    /// Processes that exited during the scan.
    pub vanished: u32,
    /// Other failures reading a process's entries.
    pub other_errors: u32,
}

impl ScanStats {
    fn note(&mut self, error: &io::Error) {
        match error.raw_os_error() {
            Some(libc::ENOENT | libc::ESRCH) => self.vanished += 1,
            Some(libc::EACCES | libc::EPERM) => self.permission_denied += 1,
            _ => self.other_errors += 1,
        }
    }
}

/// The inode of a descriptor's link target if it is a socket
/// (`socket:[12345]`); None for files, pipes (`pipe:[…]`), anon inodes.
pub fn parse_socket_link(target: &[u8]) -> Option<u32> {
    let digits = target.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    parse_decimal(digits)
}

/// A non-empty run of ASCII digits that fits in a u32.
fn parse_decimal(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// `/proc/PID/comm`: the name and a newline; at most 15 bytes are kept, as
/// in the kernel's `comm`.
pub fn parse_comm(contents: &[u8]) -> Comm {
    let name = contents.strip_suffix(b"\n").unwrap_or(contents);
    let mut comm = [0u8; 16];
    let len = name.len().min(15);
    comm[..len].copy_from_slice(&name[..len]);
    Comm(comm)
}

/// Start time (field 22 of `/proc/PID/stat`, clock ticks after boot). The
/// comm in field 2 may hold spaces and parentheses, so fields are counted
/// from the last `)`.
pub fn parse_start_time(stat: &[u8]) -> Option<u64> {
    crate::source::procfs::stat_field(stat, 22)
}

/// Finds the holders of the sockets in `wanted` among the processes under
/// `proc_root` (normally `/proc`).
///
/// When several processes hold a socket, the owner is the one that started
/// first (then the lowest tgid): sharing comes from fork() or descriptor
/// passing, so the oldest holder is normally the one that made or accepted
/// the socket, and a child that inherited it by accident (fork+exec without
/// CLOEXEC) is not blamed for what its parent does. For listeners, where
/// prefork workers or a socket-activated service are the ones that accept,
/// the model replaces this owner with the one a later accept() shows.
pub(super) fn scan(
    proc_root: &Path,
    wanted: &HashSet<u32>,
    stats: &mut ScanStats,
) -> Result<HashMap<u32, Holding>, SnapshotError> {
    let entries = fs::read_dir(proc_root).map_err(|error| SnapshotError::Proc {
        path: proc_root.to_path_buf(),
        error,
    })?;
    let mut owners: HashMap<u32, Holding> = HashMap::new();
    let mut start_times: HashMap<u32, Option<u64>> = HashMap::new();
    let mut start_time = |tgid: u32| {
        *start_times.entry(tgid).or_insert_with(|| {
            let stat = fs::read(proc_root.join(tgid.to_string()).join("stat")).ok()?;
            parse_start_time(&stat)
        })
    };
    let mut held = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                stats.note(&error);
                continue;
            }
        };
        let Some(tgid) = parse_decimal(entry.file_name().as_bytes()) else {
            continue;
        };
        stats.processes += 1;
        let dir = entry.path();
        held.clear();
        if let Err(error) = sockets_held(&dir, wanted, &mut held) {
            stats.note(&error);
            continue;
        }
        if held.is_empty() {
            continue;
        }
        // The same socket on several descriptors (dup()) is held once.
        held.sort_unstable();
        held.dedup();
        let comm = match fs::read(dir.join("comm")) {
            Ok(contents) => parse_comm(&contents),
            Err(error) => {
                // Gone: its descriptors are closed by now.
                stats.note(&error);
                continue;
            }
        };
        for &inode in &held {
            match owners.entry(inode) {
                Entry::Vacant(slot) => {
                    slot.insert(Holding {
                        tgid,
                        comm,
                        holders: 1,
                    });
                }
                Entry::Occupied(mut slot) => {
                    let current = slot.get_mut();
                    current.holders += 1;
                    let mut age = |tgid| (start_time(tgid).unwrap_or(u64::MAX), tgid);
                    if age(tgid) < age(current.tgid) {
                        current.tgid = tgid;
                        current.comm = comm;
                    }
                }
            }
        }
    }
    Ok(owners)
}

/// Appends to `held` the wanted socket inodes of the process at `dir`.
/// Descriptors closed while we read are passed over.
fn sockets_held(dir: &Path, wanted: &HashSet<u32>, held: &mut Vec<u32>) -> io::Result<()> {
    for fd in fs::read_dir(dir.join("fd"))? {
        let fd = fd?;
        match fs::read_link(fd.path()) {
            Ok(target) => {
                if let Some(inode) = parse_socket_link(target.as_os_str().as_bytes()) {
                    if wanted.contains(&inode) {
                        held.push(inode);
                    }
                }
            }
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{os::unix::fs::symlink, path::PathBuf};

    #[test]
    fn socket_links() {
        assert_eq!(parse_socket_link(b"socket:[123]"), Some(123));
        assert_eq!(parse_socket_link(b"socket:[4294967295]"), Some(u32::MAX));
        assert_eq!(parse_socket_link(b"socket:[4294967296]"), None);
        for other in [
            &b"pipe:[123]"[..],
            b"/dev/null",
            b"anon_inode:[eventpoll]",
            b"socket:[]",
            b"socket:[12",
            b"socket:[+12]",
            b"socket:[1 2]",
            b"socket:[12]x",
            b"",
        ] {
            assert_eq!(parse_socket_link(other), None, "{other:?}");
        }
    }

    #[test]
    fn comm_and_start_time() {
        assert_eq!(parse_comm(b"nginx\n").as_string(), "nginx");
        assert_eq!(parse_comm(b"").as_string(), "");
        let long = parse_comm(b"a-very-long-process-name\n");
        assert_eq!(long.as_string(), "a-very-long-pro");
        assert_eq!(long.0[15], 0);
        let stat = b"42 (we) ird) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_start_time(stat), Some(98765));
        assert_eq!(parse_start_time(b"42 (x) S 1 2"), None);
        assert_eq!(parse_start_time(b"no parenthesis"), None);
    }

    struct FakeProc(PathBuf);

    impl FakeProc {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("tcpstate-snapshot-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            FakeProc(dir)
        }

        fn process(&self, tgid: u32, comm: Option<&str>, start: u64, links: &[&str]) {
            let dir = self.0.join(tgid.to_string());
            fs::create_dir_all(dir.join("fd")).unwrap();
            if let Some(comm) = comm {
                fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
                let stat =
                    format!("{tgid} ({comm}) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0");
                fs::write(dir.join("stat"), stat).unwrap();
            }
            for (fd, link) in links.iter().enumerate() {
                symlink(link, dir.join("fd").join(fd.to_string())).unwrap();
            }
        }
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn scan_of_a_fake_proc() {
        let proc = FakeProc::new("scan");
        let wanted: HashSet<u32> = [42, 43, 45, 46].into();
        // 42 is shared: the older process (200) owns it despite its tgid.
        proc.process(
            100,
            Some("worker"),
            500,
            &["socket:[42]", "/dev/null", "socket:[45]"],
        );
        proc.process(
            200,
            Some("master"),
            300,
            &["socket:[42]", "socket:[42]", "socket:[44]"],
        );
        // 46 is shared by processes started at the same tick: lowest tgid.
        proc.process(310, Some("b"), 700, &["socket:[46]"]);
        proc.process(300, Some("a"), 700, &["socket:[46]"]);
        // Exited between listing its descriptors and reading its name.
        proc.process(400, None, 0, &["socket:[43]"]);
        // Exited before its descriptors were listed.
        fs::create_dir_all(proc.0.join("500")).unwrap();
        // Not processes.
        fs::create_dir_all(proc.0.join("sys/fd")).unwrap();
        symlink("100", proc.0.join("self")).unwrap();

        let mut stats = ScanStats::default();
        let owners = scan(&proc.0, &wanted, &mut stats).unwrap();
        let got = |inode| {
            owners
                .get(&inode)
                .map(|h| (h.tgid, h.comm.as_string(), h.holders))
        };
        assert_eq!(got(42), Some((200, "master".into(), 2)));
        assert_eq!(got(45), Some((100, "worker".into(), 1)));
        assert_eq!(got(46), Some((300, "a".into(), 2)));
        assert_eq!(got(43), None);
        assert_eq!(got(44), None, "not wanted");
        assert_eq!(owners.len(), 3);
        assert_eq!(
            stats,
            ScanStats {
                processes: 6,
                vanished: 2,
                ..ScanStats::default()
            }
        );
    }

    #[test]
    fn missing_proc_is_an_error() {
        let mut stats = ScanStats::default();
        let e = scan(
            Path::new("/nonexistent/tcpstate-proc"),
            &HashSet::new(),
            &mut stats,
        )
        .unwrap_err();
        assert!(e.to_string().contains("procfs"), "{e}");
    }

    #[test]
    fn live_scan_finds_our_own_socket() {
        use std::os::unix::fs::MetadataExt;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let link = fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        let inode = parse_socket_link(link.as_os_str().as_bytes()).unwrap();
        let meta = fs::metadata(format!("/proc/self/fd/{fd}")).unwrap();
        assert_eq!(u64::from(inode), meta.ino());
        let mut stats = ScanStats::default();
        let owners = scan(Path::new("/proc"), &[inode].into(), &mut stats).unwrap();
        let holding = owners.get(&inode).unwrap();
        assert_eq!(holding.tgid, std::process::id());
        assert_eq!(holding.holders, 1);
        assert!(stats.processes >= 1);
    }
}

//! The recorder's end: a Unix datagram socket that takes kill notices
//! from root and nobody else.
//!
//! Datagrams carry no connection, so `SO_PEERCRED` (the credentials of a
//! connected peer) says nothing about who sent each one; the socket sets
//! `SO_PASSCRED` instead, and the kernel attaches the sender's real
//! credentials to every datagram (`SCM_CREDENTIALS`; a sender can claim
//! other ones only with CAP_SETUID, i.e. when it is root anyway). A
//! datagram whose sender is not uid 0, or that does not decode, is
//! counted and dropped. The directory is created with mode 0700 and must
//! be the recorder's own with no access for others; the socket is 0600.
use super::{socket_path, KillRecord};
use crate::{recording, source::Item};
use std::{
    fs, io,
    os::{
        fd::AsRawFd,
        unix::{
            fs::{DirBuilderExt, MetadataExt, PermissionsExt},
            net::UnixDatagram,
        },
    },
    path::{Path, PathBuf},
};

/// What the inbox took and what it dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InboxStats {
    pub accepted: u64,
    /// Sent by a user other than root (or without credentials).
    pub not_root: u64,
    /// Not a kill record: truncated, oversized or garbage.
    pub malformed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("{}: cannot create the directory for kill notices: {source}; kills are not recorded (set {} to another directory)", path.display(), super::SOCKET_DIR_ENV)]
    Dir { path: PathBuf, source: io::Error },
    #[error("{}: not a directory of user {euid} closed to others (found owner {uid}, mode {mode:o}); kills are not recorded: remove it or make it `chmod 700`", path.display())]
    UnsafeDir {
        path: PathBuf,
        euid: u32,
        uid: u32,
        mode: u32,
    },
    #[error("{}: cannot listen for kill notices: {source}; kills are not recorded", path.display())]
    Bind { path: PathBuf, source: io::Error },
}

/// Most datagrams taken per call, so that a flood cannot hold up the
/// ring buffer; the rest wait in the socket for the next call.
const MAX_PER_DRAIN: usize = 1024;

pub struct KillInbox {
    sock: UnixDatagram,
    path: PathBuf,
    stats: InboxStats,
}

fn bind_error(path: &Path) -> impl FnOnce(io::Error) -> InboxError + '_ {
    move |source| InboxError::Bind {
        path: path.to_path_buf(),
        source,
    }
}

impl KillInbox {
    /// Listens at `DIR/kill-PID.sock` (see [`super::socket_dir`]).
    pub fn open() -> Result<KillInbox, InboxError> {
        Self::open_in(&super::socket_dir())
    }

    pub fn open_in(dir: &Path) -> Result<KillInbox, InboxError> {
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(InboxError::Dir {
                    path: dir.to_path_buf(),
                    source: e,
                })
            }
            _ => {}
        }
        let meta = fs::symlink_metadata(dir).map_err(|source| InboxError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if !meta.is_dir() || meta.uid() != euid || meta.mode() & 0o077 != 0 {
            return Err(InboxError::UnsafeDir {
                path: dir.to_path_buf(),
                euid,
                uid: meta.uid(),
                mode: meta.mode() & 0o7777,
            });
        }
        let path = socket_path(dir, std::process::id());
        // Left by an earlier process with this pid (a crash): ours now.
        let _ = fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).map_err(bind_error(&path))?;
        let inbox = KillInbox {
            sock,
            path,
            stats: InboxStats::default(),
        };
        fs::set_permissions(&inbox.path, fs::Permissions::from_mode(0o600))
            .map_err(bind_error(&inbox.path))?;
        inbox
            .sock
            .set_nonblocking(true)
            .map_err(bind_error(&inbox.path))?;
        let on: libc::c_int = 1;
        // SAFETY: the fd is a socket this struct owns; the option value is
        // a c_int that lives across the call, and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                inbox.sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PASSCRED,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(bind_error(&inbox.path)(io::Error::last_os_error()));
        }
        Ok(inbox)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> InboxStats {
        self.stats
    }

    /// Appends the kills waiting in the socket to `out` as items.
    pub fn drain(&mut self, out: &mut Vec<Item>) {
        for _ in 0..MAX_PER_DRAIN {
            match self.receive() {
                Ok(Some(Received::Kill(kill))) => {
                    self.stats.accepted += 1;
                    out.push(Item::Kill(kill));
                }
                Ok(Some(Received::NotRoot)) => self.stats.not_root += 1,
                Ok(Some(Received::Malformed)) => self.stats.malformed += 1,
                Ok(None) => return,
                Err(e) => {
                    log::warn!("{}: reading a kill notice: {e}", self.path.display());
                    return;
                }
            }
        }
    }

    /// One datagram, None when none is waiting.
    fn receive(&mut self) -> io::Result<Option<Received>> {
        // One byte more than the longest record: a longer datagram is
        // seen as such (MSG_TRUNC) rather than read as its prefix.
        let mut data = [0u8; recording::KILL_MAX_LEN + 1];
        // u64s: the control buffer must be aligned for cmsghdr.
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: msghdr is plain old data; all-zero is a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: msg points at the iovec and the control buffer above,
        // which outlive the call, with their true lengths.
        let n = unsafe { libc::recvmsg(self.sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(None),
                io::ErrorKind::Interrupted => Ok(Some(Received::Malformed)),
                _ => Err(e),
            };
        }
        let uid = sender_uid(&msg);
        if uid != Some(0) {
            return Ok(Some(Received::NotRoot));
        }
        if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
            return Ok(Some(Received::Malformed));
        }
        let len = usize::try_from(n).unwrap_or(0).min(data.len());
        Ok(Some(match recording::decode_kill(&data[..len]) {
            Ok(Some(kill)) => Received::Kill(kill),
            _ => Received::Malformed,
        }))
    }
}

enum Received {
    Kill(KillRecord),
    NotRoot,
    Malformed,
}

/// The uid in the `SCM_CREDENTIALS` message the kernel attached.
fn sender_uid(msg: &libc::msghdr) -> Option<u32> {
    // SAFETY: msg was filled by recvmsg; CMSG_FIRSTHDR/CMSG_NXTHDR stay
    // within msg_control/msg_controllen and return null at the end.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: cmsg is non-null and points into the control buffer.
        let hdr = unsafe { &*cmsg };
        let want = std::mem::size_of::<libc::ucred>();
        // SAFETY: CMSG_LEN only computes a length.
        let full = unsafe { libc::CMSG_LEN(want as u32) } as usize;
        if hdr.cmsg_level == libc::SOL_SOCKET
            && hdr.cmsg_type == libc::SCM_CREDENTIALS
            && hdr.cmsg_len as usize >= full
        {
            // SAFETY: the header says its data holds a whole ucred (length
            // checked above); read_unaligned makes no alignment assumption.
            let cred: libc::ucred =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
            return Some(cred.uid);
        }
        // SAFETY: as for CMSG_FIRSTHDR.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
    None
}

impl Drop for KillInbox {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        let s = self.stats;
        if s.not_root + s.malformed > 0 {
            log::warn!(
                "{}: {} kill notice(s) dropped: {} not from root, {} not a kill record (a tcpstate of another version?)",
                self.path.display(),
                s.not_root + s.malformed,
                s.not_root,
                s.malformed
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tcpstate-kill-inbox-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn garbage_is_counted_and_dropped_and_the_socket_goes_at_the_end() {
        let dir = temp_dir("garbage");
        let mut inbox = KillInbox::open_in(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700, "directory mode {mode:o}");
        let sock_mode = fs::metadata(inbox.path()).unwrap().mode() & 0o777;
        assert_eq!(sock_mode, 0o600, "socket mode {sock_mode:o}");
        let sender = UnixDatagram::unbound().unwrap();
        let path = inbox.path().to_path_buf();
        let oversized = vec![crate::recording::encode_kill(&sample())[0]; 64 * 1024];
        for garbage in [&b""[..], b"\x02", b"hello", &oversized] {
            sender.send_to(garbage, &path).unwrap();
        }
        sender
            .send_to(&crate::recording::encode_kill(&sample()), &path)
            .unwrap();
        let mut items = Vec::new();
        inbox.drain(&mut items);
        // SAFETY: getuid has no preconditions and cannot fail.
        let root = unsafe { libc::getuid() } == 0;
        let s = inbox.stats();
        if root {
            assert_eq!(items, vec![Item::Kill(sample())]);
            assert_eq!((s.accepted, s.malformed, s.not_root), (1, 4, 0));
        } else {
            assert!(items.is_empty(), "a kill from a non-root sender was taken");
            assert_eq!((s.accepted, s.not_root), (0, 5));
        }
        drop(inbox);
        assert!(!path.exists(), "the socket was left behind");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_open_to_others_is_refused() {
        let dir = temp_dir("open");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let err = KillInbox::open_in(&dir)
            .err()
            .expect("accepted a 0755 directory");
        assert!(err.to_string().contains("chmod 700"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    fn sample() -> KillRecord {
        use crate::{
            addr::Endpoint,
            kill_log::KillOutcome,
            tcp::{Family, TcpState},
        };
        KillRecord {
            ts_boot_ns: 1,
            killer_pid: 2,
            netns: 3,
            cookie: 4,
            family: Family::Ipv4,
            local: Endpoint::new("127.0.0.1".parse().unwrap(), 5),
            remote: Endpoint::new("127.0.0.1".parse().unwrap(), 6),
            state: TcpState::CloseWait,
            owner: None,
            outcome: KillOutcome::AlreadyGone,
        }
    }
}

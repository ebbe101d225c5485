//! The killer's end: one datagram per socket outcome to every running
//! recorder. Never an error for `kill`: no recorder means nothing to do,
//! and a recorder that cannot be reached is one warning line.
use super::{is_socket_name, KillRecord};
use crate::recording;
use std::{io, os::unix::net::UnixDatagram, path::Path};

/// Sends `kills` to every recorder socket in the socket directory;
/// returns how many recorders took them all.
pub fn send_all(kills: &[KillRecord]) -> usize {
    send_all_in(&super::socket_dir(), kills)
}

pub fn send_all_in(dir: &Path, kills: &[KillRecord]) -> usize {
    if kills.is_empty() {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        // No directory: no recorder has ever run here.
        return 0;
    };
    let Ok(sender) = UnixDatagram::unbound() else {
        log::warn!(
            "cannot open a socket to tell the recorders of the kills; they are not recorded"
        );
        return 0;
    };
    // A recorder whose queue is full is not waited for.
    let _ = sender.set_nonblocking(true);
    let datagrams: Vec<Vec<u8>> = kills.iter().map(recording::encode_kill).collect();
    let mut reached = 0;
    for entry in entries.flatten() {
        if !entry.file_name().to_str().is_some_and(is_socket_name) {
            continue;
        }
        let path = entry.path();
        let mut sent = 0;
        let mut failure = None;
        for datagram in &datagrams {
            match sender.send_to(datagram, &path) {
                Ok(_) => sent += 1,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        match failure {
            None => reached += 1,
            // A socket left by a recorder that crashed: nobody listens.
            Some(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                log::info!(
                    "{}: no recorder listens (left by a crashed one?)",
                    path.display()
                )
            }
            Some(e) => log::warn!(
                "{}: {} of {} kill(s) not recorded by that recorder: {e}",
                path.display(),
                datagrams.len() - sent,
                datagrams.len()
            ),
        }
    }
    reached
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kill_log::inbox::KillInbox;

    #[test]
    fn no_directory_or_no_recorder_is_nothing_and_every_recorder_gets_every_kill() {
        let dir = std::env::temp_dir().join(format!("tcpstate-kill-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let kill = crate::kill_log::KillRecord {
            ts_boot_ns: 10,
            killer_pid: 11,
            netns: 12,
            cookie: 13,
            family: crate::tcp::Family::Ipv6,
            local: crate::addr::Endpoint::new("::1".parse().unwrap(), 80),
            remote: crate::addr::Endpoint::new("::1".parse().unwrap(), 40000),
            state: crate::tcp::TcpState::CloseWait,
            owner: None,
            outcome: crate::kill_log::KillOutcome::Destroyed,
        };
        assert_eq!(send_all_in(&dir, &[kill]), 0);
        let mut inbox = KillInbox::open_in(&dir).unwrap();
        // A stale socket and an unrelated file beside the live one.
        let stale = crate::kill_log::socket_path(&dir, u32::MAX);
        drop(UnixDatagram::bind(&stale).unwrap());
        std::fs::write(dir.join("notes.txt"), "x").unwrap();
        assert_eq!(send_all_in(&dir, &[]), 0);
        assert_eq!(send_all_in(&dir, &[kill, kill]), 1);
        let mut items = Vec::new();
        inbox.drain(&mut items);
        // SAFETY: getuid has no preconditions and cannot fail.
        if unsafe { libc::getuid() } == 0 {
            assert_eq!(items, vec![crate::source::Item::Kill(kill); 2]);
        } else {
            assert_eq!(inbox.stats().not_root, 2);
        }
        drop(inbox);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

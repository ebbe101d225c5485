//! Two network namespaces joined by a veth pair, made by the test and removed
//! when it ends (also when it fails: the guard's Drop runs while unwinding).
//! Addresses are from the documentation ranges (192.0.2.0/24, 2001:db8::/64)
//! and exist only inside these namespaces.
use std::{
    fs::File,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

const PREFIX: &str = "tcpst-";

pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// A pair of namespaces, `server` and `client`, joined by one veth link.
pub struct NetnsPair {
    pub server: String,
    pub client: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running `ip {}`: {e} (install iproute2)", args.join(" ")));
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Removes namespaces left by test runs whose process no longer exists
/// (a run killed with SIGKILL cannot clean up after itself).
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}

impl NetnsPair {
    /// Creates the pair (named after this process, so stale ones can be
    /// told apart).
    pub fn create() -> NetnsPair {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        remove_stale();
        let id = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let pair = NetnsPair {
            server: format!("{id}-s"),
            client: format!("{id}-c"),
        };
        // Created before any further step, so Drop cleans up whatever exists.
        ip(&["netns", "add", &pair.server]);
        ip(&["netns", "add", &pair.client]);
        ip(&[
            "link",
            "add",
            "name",
            "veth0",
            "netns",
            &pair.server,
            "type",
            "veth",
            "peer",
            "name",
            "veth0",
            "netns",
            &pair.client,
        ]);
        for (ns, v4, v6) in [
            (&pair.server, SERVER_V4, SERVER_V6),
            (&pair.client, CLIENT_V4, CLIENT_V6),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", "veth0"]);
            // nodad: usable at once, without waiting for duplicate detection.
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                "veth0",
                "nodad",
            ]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", "veth0", "up"]);
        }
        pair
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.server, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The standard output of `cmd` (program and arguments) run inside
/// namespace `ns` by `ip netns exec`; panics naming the command and its
/// standard error when it cannot run or fails.
pub fn netns_output(ns: &str, cmd: &[&str]) -> String {
    let shown = format!("ip netns exec {ns} {}", cmd.join(" "));
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .output()
        .unwrap_or_else(|e| panic!("running {shown} (install iproute2): {e}"));
    assert!(
        out.status.success(),
        "{shown}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `f` on a thread that has entered network namespace `ns` (or stays in
/// the current one for `None`). Sockets created there belong to that
/// namespace for their whole life, whichever thread uses them later.
pub fn in_netns<R: Send + 'static>(ns: Option<&str>, f: impl FnOnce() -> R + Send + 'static) -> R {
    let Some(ns) = ns else {
        return f();
    };
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        // SAFETY: a valid namespace fd; setns only affects this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("netns thread panicked")
}

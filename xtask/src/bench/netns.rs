//! Two network namespaces joined by a veth pair, for `--netns`: the churn's
//! server in one, its clients in the other, so that traffic crosses a
//! (virtual) link instead of loopback. Made at the start, always removed
//! (Drop; and stale ones of a killed bench at the next start).

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::cmd::phase;

const PREFIX: &str = "tcpstb-";

pub struct NetnsPair {
    pub server: String,
    pub client: String,
}

/// `ip [-n NS] -batch -` with `commands`, one per line.
fn ip_batch(netns: Option<&str>, commands: &str) -> Result<()> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running `ip -batch -` (install iproute2)")?;
    child
        .stdin
        .take()
        .context("ip stdin")?
        .write_all(commands.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`ip -batch` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Namespaces left by benches whose process is gone (killed with SIGKILL).
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('-').next()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}

/// The commands that make the pair, per namespace (None: the current
/// one): `listeners` addresses from 198.18.0.1 on the server side,
/// `sources` from 198.19.0.1 on the client side, all in 198.18.0.0/15
/// (RFC 2544's benchmarking range), on-link.
pub fn setup_commands(
    pair: &NetnsPair,
    listeners: usize,
    sources: usize,
) -> Vec<(Option<String>, String)> {
    let (s, c) = (&pair.server, &pair.client);
    let offset = |base: Ipv4Addr, n: usize| Ipv4Addr::from(u32::from(base) + n as u32);
    let side = |count: usize, base: Ipv4Addr| {
        let mut cmds = "link set lo up\n".to_string();
        for i in 0..count.max(1) {
            cmds.push_str(&format!("addr add {}/15 dev veth0\n", offset(base, i)));
        }
        cmds.push_str("link set veth0 up\n");
        cmds
    };
    vec![
        (
            None,
            format!("link add name veth0 netns {s} type veth peer name veth0 netns {c}\n"),
        ),
        (
            Some(s.clone()),
            side(listeners, Ipv4Addr::new(198, 18, 0, 1)),
        ),
        (Some(c.clone()), side(sources, Ipv4Addr::new(198, 19, 0, 1))),
    ]
}

impl NetnsPair {
    pub fn create(listeners: usize, sources: usize) -> Result<NetnsPair> {
        Self::create_tagged("", listeners, sources)
    }

    /// A pair whose names also carry `tag` (two pairs of one bench differ).
    pub fn create_tagged(tag: &str, listeners: usize, sources: usize) -> Result<NetnsPair> {
        remove_stale();
        let id = format!("{PREFIX}{}", std::process::id());
        let pair = NetnsPair {
            server: format!("{id}-{tag}s"),
            client: format!("{id}-{tag}c"),
        };
        for ns in [&pair.server, &pair.client] {
            let ok = Command::new("ip")
                .args(["netns", "add", ns])
                .status()
                .context("running `ip netns add` (install iproute2)")?
                .success();
            if !ok {
                bail!("`ip netns add {ns}` failed");
            }
        }
        // `pair` is dropped (namespaces removed) if this fails.
        for (ns, commands) in setup_commands(&pair, listeners, sources) {
            ip_batch(ns.as_deref(), &commands)?;
        }
        phase(format!(
            "network namespaces {} (server) and {} (clients), joined by a veth pair",
            pair.server, pair.client
        ));
        Ok(pair)
    }
}

impl NetnsPair {
    /// net.ipv4.tcp_max_tw_buckets in both namespaces (each has its own).
    pub fn set_max_tw_buckets(&self, buckets: u64) -> Result<()> {
        for ns in [&self.server, &self.client] {
            let ok = Command::new("ip")
                .args(["netns", "exec", ns, "sysctl", "-qw"])
                .arg(format!("net.ipv4.tcp_max_tw_buckets={buckets}"))
                .status()
                .context("running `ip netns exec ... sysctl`")?
                .success();
            if !ok {
                bail!("setting net.ipv4.tcp_max_tw_buckets={buckets} in {ns} failed");
            }
        }
        Ok(())
    }

    /// Time-wait sockets in the client namespace now (/proc/net/sockstat).
    pub fn time_wait_sockets(client: &str) -> Option<u64> {
        let out = Command::new("ip")
            .args(["netns", "exec", client, "cat", "/proc/net/sockstat"])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        super::procfs::sockstat_tw(&String::from_utf8_lossy(&out.stdout))
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.server, &self.client] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        let pair = NetnsPair {
            server: "a".into(),
            client: "b".into(),
        };
        let cmds = setup_commands(&pair, 2, 300);
        assert_eq!(cmds.len(), 3);
        assert!(cmds[0]
            .1
            .contains("netns a type veth peer name veth0 netns b"));
        assert_eq!(cmds[1].0.as_deref(), Some("a"));
        assert!(cmds[1].1.contains("addr add 198.18.0.2/15 dev veth0\n"));
        assert!(!cmds[1].1.contains("198.18.0.3/"));
        assert!(cmds[2].1.contains("addr add 198.19.1.44/15 dev veth0\n"));
        std::mem::forget(pair); // nothing to delete
    }
}

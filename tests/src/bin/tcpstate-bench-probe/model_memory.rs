//! Memory per live connection of the model: resident memory before and
//! after a million (or N) synthetic connections are opened in it.
//!
//! Each connection is opened by connect() the way the kernel reports it:
//! CLOSE -> SYN_SENT (local port still 0), then SYN_SENT -> ESTABLISHED
//! with the full 4-tuple; 100 owning processes, unique socket addresses and
//! 4-tuples, all in one namespace. None is closed.
use std::net::{IpAddr, Ipv4Addr};
use tcpstate::{
    addr::Endpoint,
    model::{Connection, Model, ModelConfig, INLINE_VISITS, LIVE_SLOT_BYTES},
    tcp::{Family, TcpState},
    wire::{Comm, Task, Transition},
};

/// VmRSS of this process, in bytes.
fn rss_bytes() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| "no VmRSS in /proc/self/status".to_string())
}

fn transition(i: u64, old: TcpState, new: TcpState, ts: u64) -> Transition {
    let client = Ipv4Addr::from(0x0a00_0000 + (i / 28_000) as u32);
    let server = Ipv4Addr::new(10, 200, (i % 200) as u8, 1);
    let port = if old == TcpState::Close {
        0
    } else {
        32_768 + (i % 28_000) as u16
    };
    let pid = 1_000 + (i % 100) as u32;
    Transition {
        ts_boot_ns: ts,
        skaddr: 0xffff_8881_0000_0000 + i * 0x980,
        family: Family::Ipv4,
        local: Endpoint::new(IpAddr::V4(client), port),
        remote: Endpoint::new(IpAddr::V4(server), 443),
        old,
        new,
        task: Task {
            tgid: pid,
            pid,
            comm: Comm::from_str_lossy("client"),
        },
        cgroup_id: 0,
        netns: 4_026_531_840,
        cpu: (i % 8) as u32,
    }
}

pub fn run(connections: u64) -> Result<serde_json::Value, String> {
    let config = ModelConfig {
        max_connections: (connections as usize).max(ModelConfig::default().max_connections),
        ..ModelConfig::default()
    };
    let before = rss_bytes()?;
    let mut model = Model::new(config);
    let mut ts = 3_600_000_000_000u64;
    for i in 0..connections {
        ts += 1_000;
        let opened = model.apply_transition(&transition(i, TcpState::Close, TcpState::SynSent, ts));
        let established = model.apply_transition(&transition(
            i,
            TcpState::SynSent,
            TcpState::Established,
            ts + 50,
        ));
        debug_assert!(opened.is_empty() && established.is_empty());
    }
    let after = rss_bytes()?;
    let live = model.len() as u64;
    if live != connections {
        return Err(format!(
            "the model holds {live} connections, not {connections}"
        ));
    }
    let line = serde_json::json!({
        "connections": connections,
        "live_in_model": live,
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "bytes_per_connection": after.saturating_sub(before) as f64 / connections as f64,
        // What each one is made of: a Connection in a slot of the model's
        // storage (with its eviction clock), and an entry in each of two
        // hash tables (by socket address, by 4-tuple) that hold 4-byte slot
        // numbers; owners are shared, and a few state visits are inline.
        "connection_struct_bytes": std::mem::size_of::<Connection>(),
        "live_slot_bytes": LIVE_SLOT_BYTES,
        "inline_state_visits": INLINE_VISITS,
    });
    std::hint::black_box(&model);
    Ok(line)
}

//! The `ports` view: local port headroom per destination.
//!
//! An outgoing connection's local port must be unique per (network
//! namespace, local address, remote address, remote port): that is the
//! pool `connect()` draws from, and it runs dry when the sockets towards one
//! destination (TIME_WAIT included) hold every usable port. The pool is
//! `ip_local_port_range` minus `ip_local_reserved_ports` minus the ports
//! listeners hold, per namespace.
//!
//! Pure: holders and settings in, rows out. [`PortRates`] keeps the take and
//! free events it is shown, by their own timestamps, so that a replay gives
//! the same figures as the live run.
use crate::{
    addr::Endpoint,
    model::{Connection, Model, OpenKind},
    source::port_settings::{NetnsPorts, PortSettings},
    tcp::TcpState,
    wire::{errno_name, CallFailure, Transition},
};
use serde::Serialize;
use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    fmt::Write as _,
    net::IpAddr,
};

/// The pool a local port comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DestinationKey {
    pub netns: u32,
    pub local_ip: IpAddr,
    pub remote: Endpoint,
}

/// A socket holding a local port towards a destination.
#[derive(Clone, Debug, PartialEq)]
pub struct PortHolder {
    pub key: DestinationKey,
    /// 0 while a connect() has not picked one yet (SYN_SENT is entered
    /// before the port is chosen).
    pub local_port: u16,
    pub state: TcpState,
    pub owner: Option<(u32, String)>,
    /// A TIME_WAIT socket whose hand-over was inferred, not seen.
    pub inferred: bool,
}

const HOLDING: [TcpState; 7] = [
    TcpState::SynSent,
    TcpState::Established,
    TcpState::FinWait1,
    TcpState::FinWait2,
    TcpState::CloseWait,
    TcpState::LastAck,
    TcpState::Closing,
];

fn in_range(settings: &PortSettings, port: u16) -> bool {
    (settings.range.0..=settings.range.1).contains(&port)
}

fn is_reserved(settings: &PortSettings, port: u16) -> bool {
    settings
        .reserved
        .iter()
        .any(|(low, high)| (*low..=*high).contains(&port))
}

/// A port connect() may pick on its own: in the range, not reserved.
fn is_usable(settings: &PortSettings, port: u16) -> bool {
    in_range(settings, port) && !is_reserved(settings, port)
}

/// The settings of each namespace, and what stands in for those not read.
pub struct NamespaceSettings {
    known: BTreeMap<u32, PortSettings>,
    fallback: PortSettings,
}

impl NamespaceSettings {
    /// A namespace not read at start (created later, or not enterable)
    /// takes the tracer's own namespace's settings, marked as assumed.
    pub fn new(read: &[NetnsPorts]) -> Self {
        Self {
            fallback: read.first().map(|n| n.settings.clone()).unwrap_or_default(),
            known: read.iter().map(|n| (n.netns, n.settings.clone())).collect(),
        }
    }

    /// For recordings made before namespaces' settings were kept: every
    /// namespace takes `fallback` (the recorder's own sysctls), marked as
    /// assumed.
    pub fn only_fallback(fallback: PortSettings) -> Self {
        Self {
            known: BTreeMap::new(),
            fallback,
        }
    }

    /// The settings, and whether they were read for this namespace.
    pub fn get(&self, netns: u32) -> (&PortSettings, bool) {
        match self.known.get(&netns) {
            Some(s) => (s, true),
            None => (&self.fallback, false),
        }
    }
}

fn is_complete(remote: &Endpoint) -> bool {
    remote.port != 0 && !remote.ip.is_unspecified()
}

/// Whether a live connection draws its local port from the pool: it was
/// connected, or (snapshot and mid-life sockets, whose opening was not
/// seen) its local port lies in the range, as only ephemeral ports do.
fn holds_pool_port(c: &Connection, settings: &PortSettings) -> bool {
    HOLDING.contains(&c.state)
        && is_complete(&c.remote)
        && match c.open {
            OpenKind::Active => true,
            OpenKind::Preexisting | OpenKind::Unknown => in_range(settings, c.local.port),
            OpenKind::Passive | OpenKind::Listener => false,
        }
}

/// The port holders and, per namespace, the ports listeners hold in the
/// range (connect() skips them for every destination).
pub fn holders(
    model: &Model,
    settings: &NamespaceSettings,
) -> (Vec<PortHolder>, BTreeMap<u32, BTreeSet<u16>>) {
    let mut out = Vec::new();
    let mut listening: BTreeMap<u32, BTreeSet<u16>> = BTreeMap::new();
    for c in model.connections() {
        let (s, _) = settings.get(c.netns);
        if c.state == TcpState::Listen {
            if in_range(s, c.local.port) {
                listening.entry(c.netns).or_default().insert(c.local.port);
            }
            continue;
        }
        if holds_pool_port(c, s) {
            out.push(PortHolder {
                key: DestinationKey {
                    netns: c.netns,
                    local_ip: c.local.ip,
                    remote: c.remote,
                },
                local_port: c.local.port,
                state: c.state,
                owner: c.owner().map(|o| (o.tgid, o.comm.as_string())),
                inferred: false,
            });
        }
    }
    // The table keeps no opening kind: a server's time-wait socket holds
    // its listening port, outside the range, and is left out by it.
    for e in model.time_wait().iter() {
        let (s, _) = settings.get(e.flow.netns);
        if in_range(s, e.flow.local.port) && is_complete(&e.flow.remote) {
            out.push(PortHolder {
                key: DestinationKey {
                    netns: e.flow.netns,
                    local_ip: e.flow.local.ip,
                    remote: e.flow.remote,
                },
                local_port: e.flow.local.port,
                state: TcpState::TimeWait,
                owner: e.owner.map(|o| (o.tgid, o.comm.as_string())),
                inferred: e.inferred,
            });
        }
    }
    (out, listening)
}

/// Whether `tcp_tw_reuse` lets connect() take over a time-wait socket's
/// port towards this destination: 1 everywhere, 2 (the default) when
/// either address is loopback. The kernel also needs TCP timestamps on the
/// old connection and a second since its last segment: "reusable" is an
/// upper bound.
pub fn tw_reusable(tw_reuse: u32, key: &DestinationKey) -> bool {
    let loopback = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    };
    match tw_reuse {
        1 => true,
        2 => loopback(&key.local_ip) || loopback(&key.remote.ip),
        _ => false,
    }
}

/// Take and free events per destination, by event time, over a sliding
/// window.
#[derive(Debug, Default)]
pub struct PortRates {
    takes: BTreeMap<DestinationKey, VecDeque<u64>>,
    frees: BTreeMap<DestinationKey, Vec<u64>>,
    latest_ns: u64,
    /// The first event's time: a run shorter than the window divides by
    /// what it saw, not by the whole window.
    first_ns: Option<u64>,
}

/// Rates are over the last minute of event time.
pub const RATE_WINDOW_NS: u64 = 60_000_000_000;

impl PortRates {
    /// A transition: leaving SYN_SENT with a local port is a connect() that
    /// took one. Not CLOSE→SYN_SENT: the kernel enters SYN_SENT before it
    /// picks the port, and a connect() that finds none (EADDRNOTAVAIL)
    /// goes back to CLOSE without one.
    pub fn transition(&mut self, t: &Transition) {
        self.seen(t.ts_boot_ns);
        if t.old == TcpState::SynSent && t.local.port != 0 && is_complete(&t.remote) {
            let key = DestinationKey {
                netns: t.netns,
                local_ip: t.local.ip,
                remote: t.remote,
            };
            let since = self.latest_ns.saturating_sub(RATE_WINDOW_NS);
            let takes = self.takes.entry(key).or_default();
            takes.push_back(t.ts_boot_ns);
            // This destination's old ones now; the others' at the next
            // report (a pass over every destination per transition would
            // cost a busy client with many destinations too much).
            while takes.front().is_some_and(|t| *t < since) {
                takes.pop_front();
            }
        }
    }

    /// Another item's time.
    pub fn seen(&mut self, ts_ns: u64) {
        self.latest_ns = self.latest_ns.max(ts_ns);
        let first = self.first_ns.get_or_insert(ts_ns);
        *first = (*first).min(ts_ns);
    }

    /// A connected socket ended: its port is free at `free_ns` (its end, or
    /// the predicted end of the TIME_WAIT it left).
    pub fn ended(&mut self, key: DestinationKey, free_ns: u64) {
        self.frees.entry(key).or_default().push(free_ns);
    }

    fn prune(&mut self) {
        let since = self.latest_ns.saturating_sub(RATE_WINDOW_NS);
        self.takes.retain(|_, ts| {
            while ts.front().is_some_and(|t| *t < since) {
                ts.pop_front();
            }
            !ts.is_empty()
        });
    }

    /// (takes, frees) per second for `key` over the window ending at the
    /// latest event. Frees predicted after that moment are not counted yet.
    pub fn rates(&self, key: &DestinationKey) -> (f64, f64) {
        let until = self.latest_ns;
        let since = until.saturating_sub(RATE_WINDOW_NS);
        // At least a second: a burst at the very start is not a rate of
        // thousands per second.
        let seen_ns = until.saturating_sub(self.first_ns.unwrap_or(until));
        let window_s = seen_ns.clamp(1_000_000_000, RATE_WINDOW_NS) as f64 / 1e9;
        let takes = self.takes.get(key).map_or(0, |ts| {
            ts.iter().filter(|t| (since..=until).contains(t)).count()
        });
        let frees = self.frees.get(key).map_or(0, |ts| {
            ts.iter().filter(|t| (since..=until).contains(t)).count()
        });
        (takes as f64 / window_s, frees as f64 / window_s)
    }

    /// Forgets takes and frees too old to count again (called at each
    /// report).
    pub fn forget_old_frees(&mut self) {
        self.prune();
        let since = self.latest_ns.saturating_sub(RATE_WINDOW_NS);
        self.frees.retain(|_, ts| {
            ts.retain(|t| *t >= since);
            !ts.is_empty()
        });
    }
}

/// What failed, where, why and for whom.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct FailureKey {
    netns: u32,
    /// "connect" or "bind" (the call returned the errno), or "handshake"
    /// (a connect() under way failed later: SYN_SENT -> CLOSE).
    call: &'static str,
    address: Endpoint,
    errno: u8,
    tgid: Option<u32>,
    comm: Option<String>,
}

/// Failed calls and handshakes, counted by [`FailureKey`].
#[derive(Debug, Default)]
pub struct CallFailures {
    counts: BTreeMap<FailureKey, u64>,
}

const ECONNREFUSED: u8 = 111;
const ETIMEDOUT: u8 = 110;

impl CallFailures {
    pub fn call(&mut self, f: &CallFailure) {
        let key = FailureKey {
            netns: f.netns,
            call: f.call.name(),
            address: f.addr,
            errno: f.errno,
            tgid: Some(f.task.tgid),
            comm: Some(f.task.comm.as_string()),
        };
        *self.counts.entry(key).or_insert(0) += 1;
    }

    /// An ended connection: SYN_SENT -> CLOSE after its SYN went out (a
    /// port was chosen) is a handshake that failed, refused or timed out,
    /// as the model tells by the time it took. A blocking connect() that
    /// fails so is also counted as a failed call; a non-blocking one
    /// (EINPROGRESS) only here. Without a port, no SYN was sent: the call
    /// itself failed (EADDRNOTAVAIL), and is counted as such.
    pub fn ended(&mut self, c: &Connection) {
        let errno = match c.end {
            Some(crate::model::EndKind::Refused) => ECONNREFUSED,
            Some(crate::model::EndKind::Timeout) => ETIMEDOUT,
            _ => return,
        };
        if c.local.port == 0 || !is_complete(&c.remote) {
            return;
        }
        let owner = c.owner();
        let key = FailureKey {
            netns: c.netns,
            call: "handshake",
            address: c.remote,
            errno,
            tgid: owner.map(|o| o.tgid),
            comm: owner.map(|o| o.comm.as_string()),
        };
        *self.counts.entry(key).or_insert(0) += 1;
    }

    /// The most first.
    pub fn rows(&self) -> Vec<FailureRow> {
        let mut rows: Vec<FailureRow> = self
            .counts
            .iter()
            .map(|(k, count)| FailureRow {
                netns: k.netns,
                call: k.call,
                address: k.address.to_string(),
                errno: k.errno,
                errno_name: errno_name(k.errno),
                tgid: k.tgid,
                comm: k.comm.clone(),
                count: *count,
            })
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.count));
        rows
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FailureRow {
    pub netns: u32,
    /// connect, bind (the call failed) or handshake (SYN_SENT -> CLOSE).
    pub call: &'static str,
    /// The destination (connect, handshake) or the address asked for (bind).
    pub address: String,
    pub errno: u8,
    pub errno_name: &'static str,
    pub tgid: Option<u32>,
    pub comm: Option<String>,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PortOwner {
    pub tgid: Option<u32>,
    pub comm: Option<String>,
    pub ports: usize,
}

/// One destination's figures.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DestinationPortsRow {
    pub netns: u32,
    pub local_ip: String,
    pub remote: String,
    /// False: the namespace's settings were not read at start (created
    /// later, or not enterable); the tracer's own namespace's are assumed.
    pub settings_read: bool,
    pub port_range: [u16; 2],
    /// Ports of the range that `ip_local_reserved_ports` takes out.
    pub reserved_in_range: usize,
    /// Ports of the range held by listeners of the namespace.
    pub listening_in_range: usize,
    /// What connect() may pick from for this destination.
    pub usable: usize,
    /// Usable ports held towards this destination, TIME_WAIT included.
    pub in_use: usize,
    /// `in_use` by state (TIME_WAIT as the model infers it).
    pub by_state: BTreeMap<&'static str, usize>,
    pub time_wait: usize,
    /// Of `time_wait`, entries whose hand-over was inferred, not seen.
    pub time_wait_inferred: usize,
    /// `tcp_tw_reuse` lets connect() take these time-wait ports over
    /// (when the old connection used TCP timestamps).
    pub time_wait_reusable: bool,
    /// `in_use` over `usable`.
    pub share_in_use: f64,
    /// Usable ports neither in use nor reusable time-wait ones... left.
    pub free: usize,
    /// Sockets towards it bound to a port outside the usable set (explicit
    /// bind(), or a reserved port): they do not draw from the pool.
    pub bound_outside_pool: usize,
    /// Connecting sockets that have no port yet.
    pub port_pending: usize,
    pub take_per_s: f64,
    pub free_per_s: f64,
    /// Seconds until no port is left at the current rates; None when the
    /// pool is not shrinking.
    pub exhaustion_s: Option<f64>,
    pub owners: Vec<PortOwner>,
    /// Failed connect() calls and handshakes towards it (any local address).
    pub failures: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PortsReport {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub destinations: Vec<DestinationPortsRow>,
    /// Failed calls and handshakes, the most first.
    pub failures: Vec<FailureRow>,
    pub lost_events: u64,
    /// Failed-call records the kernel could not deliver.
    pub lost_failures: u64,
}

/// Reserved ports inside the range: the reserved ranges clipped to it and
/// merged (they may overlap), by arithmetic rather than port by port.
fn reserved_in_range(settings: &PortSettings) -> usize {
    let (low, high) = settings.range;
    let mut clipped: Vec<(u16, u16)> = settings
        .reserved
        .iter()
        .filter(|(a, b)| *a <= high && *b >= low)
        .map(|(a, b)| ((*a).max(low), (*b).min(high)))
        .collect();
    clipped.sort_unstable();
    let mut count = 0usize;
    let mut covered_to: Option<u16> = None;
    for (a, b) in clipped {
        let start = match covered_to {
            Some(end) if end >= b => continue,
            Some(end) if end >= a => end + 1,
            _ => a,
        };
        count += usize::from(b - start) + 1;
        covered_to = Some(b);
    }
    count
}

/// Range size minus reserved and listening ports in it.
fn pool_size(settings: &PortSettings, listening: Option<&BTreeSet<u16>>) -> (usize, usize, usize) {
    let (low, high) = settings.range;
    let size = usize::from(high) - usize::from(low) + 1;
    let reserved = reserved_in_range(settings);
    let listening = listening.map_or(0, |ports| {
        ports.iter().filter(|p| is_usable(settings, **p)).count()
    });
    (size, reserved, listening)
}

/// The rows, busiest first (share in use, then ports in use).
pub fn destinations(
    holders: &[PortHolder],
    listening: &BTreeMap<u32, BTreeSet<u16>>,
    settings: &NamespaceSettings,
    rates: &PortRates,
) -> Vec<DestinationPortsRow> {
    let mut by_key: BTreeMap<DestinationKey, Vec<&PortHolder>> = BTreeMap::new();
    for h in holders {
        by_key.entry(h.key).or_default().push(h);
    }
    let mut rows: Vec<DestinationPortsRow> = by_key
        .into_iter()
        .map(|(key, held)| row(key, &held, listening, settings, rates))
        .collect();
    rows.sort_by(|a, b| {
        b.share_in_use
            .total_cmp(&a.share_in_use)
            .then(b.in_use.cmp(&a.in_use))
            .then_with(|| (a.netns, &a.local_ip, &a.remote).cmp(&(b.netns, &b.local_ip, &b.remote)))
    });
    rows
}

fn row(
    key: DestinationKey,
    held: &[&PortHolder],
    listening: &BTreeMap<u32, BTreeSet<u16>>,
    settings: &NamespaceSettings,
    rates: &PortRates,
) -> DestinationPortsRow {
    let (s, settings_read) = settings.get(key.netns);
    let (size, reserved, listening) = pool_size(s, listening.get(&key.netns));
    let usable = size - reserved - listening;
    let mut by_state = BTreeMap::new();
    let mut ports = BTreeSet::new();
    let (mut time_wait, mut inferred, mut outside, mut pending) = (0, 0, 0, 0);
    let mut owners: BTreeMap<(Option<u32>, Option<String>), usize> = BTreeMap::new();
    for h in held {
        if h.local_port == 0 {
            pending += 1;
            continue;
        }
        if !is_usable(s, h.local_port) {
            outside += 1;
            continue;
        }
        // One port, one socket: a duplicate (a stale entry) counts once.
        if !ports.insert(h.local_port) {
            continue;
        }
        *by_state.entry(h.state.name()).or_insert(0) += 1;
        if h.state == TcpState::TimeWait {
            time_wait += 1;
            inferred += usize::from(h.inferred);
        }
        let owner = h
            .owner
            .clone()
            .map_or((None, None), |(t, c)| (Some(t), Some(c)));
        *owners.entry(owner).or_insert(0) += 1;
    }
    let in_use = ports.len();
    let reusable = tw_reusable(s.tw_reuse, &key);
    let unavailable = in_use - if reusable { time_wait } else { 0 };
    let free = usable.saturating_sub(unavailable);
    let (take_per_s, free_per_s) = rates.rates(&key);
    let shrink = take_per_s - free_per_s;
    let mut owners: Vec<PortOwner> = owners
        .into_iter()
        .map(|((tgid, comm), ports)| PortOwner { tgid, comm, ports })
        .collect();
    owners.sort_by(|a, b| b.ports.cmp(&a.ports).then(a.tgid.cmp(&b.tgid)));
    DestinationPortsRow {
        netns: key.netns,
        local_ip: key.local_ip.to_string(),
        remote: key.remote.to_string(),
        settings_read,
        port_range: [s.range.0, s.range.1],
        reserved_in_range: reserved,
        listening_in_range: listening,
        usable,
        in_use,
        by_state,
        time_wait,
        time_wait_inferred: inferred,
        time_wait_reusable: reusable,
        share_in_use: if usable == 0 {
            1.0
        } else {
            in_use as f64 / usable as f64
        },
        free,
        bound_outside_pool: outside,
        port_pending: pending,
        take_per_s,
        free_per_s,
        exhaustion_s: (shrink > 0.0).then(|| free as f64 / shrink),
        owners,
        failures: 0,
    }
}

impl PortsReport {
    pub fn new(
        model: &Model,
        settings: &NamespaceSettings,
        rates: &PortRates,
        failures: &CallFailures,
        lost: (u64, u64),
    ) -> Self {
        let (held, listening) = holders(model, settings);
        let mut destinations = destinations(&held, &listening, settings, rates);
        let failures = failures.rows();
        for d in &mut destinations {
            d.failures = failures
                .iter()
                .filter(|f| f.call != "bind" && f.netns == d.netns && f.address == d.remote)
                .map(|f| f.count)
                .sum();
        }
        PortsReport {
            kind: "ports",
            destinations,
            failures,
            lost_events: lost.0,
            lost_failures: lost.1,
        }
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Local ports per destination, busiest first ({} lost events)",
            self.lost_events
        );
        self.failures_table(&mut out);
        if self.destinations.is_empty() {
            out.push_str("no outgoing connection holds a local port\n");
            return out;
        }
        let _ = writeln!(
            out,
            "{:>10} {:<16} {:<24} {:>11} {:>6} {:>6} {:>9} {:>8} {:>8} {:>8}  OWNERS / STATES",
            "NETNS",
            "LOCAL",
            "REMOTE",
            "IN_USE",
            "SHARE",
            "FREE",
            "TIME_WAIT",
            "TAKE/S",
            "FREE/S",
            "EXHAUST"
        );
        for d in &self.destinations {
            let owners = d
                .owners
                .iter()
                .map(|o| {
                    format!(
                        "{}/{}:{}",
                        o.tgid.map_or("?".into(), |t| t.to_string()),
                        o.comm.as_deref().unwrap_or("?"),
                        o.ports
                    )
                })
                .collect::<Vec<_>>();
            let states = d
                .by_state
                .iter()
                .map(|(s, n)| format!("{s}={n}"))
                .collect::<Vec<_>>()
                .join(",");
            let _ = writeln!(
                out,
                "{:>10} {:<16} {:<24} {:>5}/{:<5} {:>5.0}% {:>6} {:>9} {:>8.2} {:>8.2} {:>8}  {} {}{}{}",
                d.netns,
                d.local_ip,
                d.remote,
                d.in_use,
                d.usable,
                d.share_in_use * 100.0,
                d.free,
                format!(
                    "{}{}",
                    d.time_wait,
                    if d.time_wait_reusable { "(reusable)" } else { "" }
                ),
                d.take_per_s,
                d.free_per_s,
                d.exhaustion_s.map_or("-".into(), |s| format!("{s:.0}s")),
                super::leaks::abbreviate(&owners),
                states,
                if d.settings_read { "" } else { " [range assumed: not read for this namespace]" },
                if d.bound_outside_pool > 0 {
                    format!(" [{} bound outside the pool]", d.bound_outside_pool)
                } else {
                    String::new()
                },
            );
        }
        out
    }
}

impl PortsReport {
    fn failures_table(&self, out: &mut String) {
        if self.failures.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "Failures ({} failed-call records lost):",
            self.lost_failures
        );
        let _ = writeln!(
            out,
            "{:>10} {:<9} {:<28} {:<14} {:>8} {:<16} {:>6}",
            "NETNS", "CALL", "ADDRESS", "ERRNO", "PID", "COMM", "COUNT"
        );
        for f in &self.failures {
            let _ = writeln!(
                out,
                "{:>10} {:<9} {:<28} {:<14} {:>8} {:<16} {:>6}",
                f.netns,
                f.call,
                f.address,
                f.errno_name,
                f.tgid.map_or("?".into(), |t| t.to_string()),
                f.comm.as_deref().unwrap_or("?"),
                f.count
            );
        }
    }
}

impl crate::views::Report for PortsReport {
    fn table(&self) -> String {
        PortsReport::table(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn key(netns: u32, local: &str, remote: &str, port: u16) -> DestinationKey {
        DestinationKey {
            netns,
            local_ip: local.parse().unwrap(),
            remote: Endpoint::new(remote.parse().unwrap(), port),
        }
    }

    fn holder(key: DestinationKey, port: u16, state: TcpState) -> PortHolder {
        PortHolder {
            key,
            local_port: port,
            state,
            owner: Some((42, "client".into())),
            inferred: false,
        }
    }

    fn settings(
        netns: u32,
        range: (u16, u16),
        reserved: Vec<(u16, u16)>,
        tw_reuse: u32,
    ) -> NetnsPorts {
        NetnsPorts {
            netns,
            settings: PortSettings {
                range,
                reserved,
                tw_reuse,
            },
        }
    }

    fn one_row(holders: &[PortHolder], ns: &[NetnsPorts]) -> DestinationPortsRow {
        let rows = destinations(
            holders,
            &BTreeMap::new(),
            &NamespaceSettings::new(ns),
            &PortRates::default(),
        );
        assert_eq!(rows.len(), 1, "{rows:?}");
        rows.into_iter().next().unwrap()
    }

    #[test]
    fn a_full_range_is_all_in_use_split_by_state() {
        let k = key(7, "10.0.0.1", "10.0.0.2", 80);
        let held: Vec<PortHolder> = (40000..40100)
            .map(|p| {
                holder(
                    k,
                    p,
                    if p < 40060 {
                        TcpState::Established
                    } else {
                        TcpState::TimeWait
                    },
                )
            })
            .collect();
        let row = one_row(&held, &[settings(7, (40000, 40099), vec![], 0)]);
        assert_eq!((row.usable, row.in_use, row.free), (100, 100, 0));
        assert_eq!(row.by_state["ESTABLISHED"], 60);
        assert_eq!(row.by_state["TIME_WAIT"], 40);
        assert_eq!(row.share_in_use, 1.0);
        assert!(!row.time_wait_reusable);
        assert_eq!(
            row.owners,
            vec![PortOwner {
                tgid: Some(42),
                comm: Some("client".into()),
                ports: 100
            }]
        );
    }

    #[test]
    fn reserved_ports_shrink_the_pool_and_bound_ones_stay_outside_it() {
        let k = key(7, "10.0.0.1", "10.0.0.2", 80);
        let ns = [settings(
            7,
            (40000, 40099),
            vec![(40000, 40009), (50000, 50010)],
            0,
        )];
        // A reserved port in use was bound explicitly, as is one outside the range.
        let held = vec![
            holder(k, 40005, TcpState::Established),
            holder(k, 40050, TcpState::Established),
            holder(k, 1234, TcpState::Established),
        ];
        let row = one_row(&held, &ns);
        assert_eq!(row.reserved_in_range, 10);
        assert_eq!(row.usable, 90);
        assert_eq!(row.in_use, 1);
        assert_eq!(row.bound_outside_pool, 2);
        assert_eq!(row.free, 89);
    }

    #[test]
    fn tw_reuse_makes_time_wait_ports_reusable_only_where_it_applies() {
        let remote = key(1, "10.0.0.1", "10.0.0.2", 80);
        let loopback = key(1, "127.0.0.1", "127.0.0.1", 80);
        let held = |k| {
            vec![
                holder(k, 40000, TcpState::TimeWait),
                holder(k, 40001, TcpState::Established),
            ]
        };
        for (tw_reuse, k, reusable) in [
            (0, loopback, false),
            (1, remote, true),
            (2, remote, false),
            (2, loopback, true),
        ] {
            let row = one_row(&held(k), &[settings(1, (40000, 40009), vec![], tw_reuse)]);
            assert_eq!(
                row.time_wait_reusable, reusable,
                "tw_reuse={tw_reuse} {k:?}"
            );
            assert_eq!(row.in_use, 2);
            assert_eq!(
                row.free,
                if reusable { 9 } else { 8 },
                "tw_reuse={tw_reuse} {k:?}"
            );
        }
    }

    #[test]
    fn ipv6_destinations_are_pools_of_their_own() {
        let v4 = key(1, "10.0.0.1", "10.0.0.2", 443);
        let v6 = key(1, "fd00::1", "fd00::2", 443);
        let held = vec![
            holder(v4, 40000, TcpState::Established),
            holder(v6, 40000, TcpState::Established),
            holder(v6, 40001, TcpState::SynSent),
        ];
        let rows = destinations(
            &held,
            &BTreeMap::new(),
            &NamespaceSettings::new(&[settings(1, (40000, 40003), vec![], 2)]),
            &PortRates::default(),
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].remote, "[fd00::2]:443");
        assert_eq!((rows[0].in_use, rows[0].free), (2, 2));
        assert_eq!((rows[1].in_use, rows[1].free), (1, 3));
        assert!(tw_reusable(
            2,
            &DestinationKey {
                netns: 1,
                local_ip: IpAddr::V6(Ipv6Addr::LOCALHOST),
                remote: Endpoint::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 1)
            }
        ));
        assert!(tw_reusable(
            2,
            &DestinationKey {
                netns: 1,
                local_ip: IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
                remote: Endpoint::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 1)
            }
        ));
    }

    #[test]
    fn each_namespace_has_its_own_settings_and_unknown_ones_are_marked() {
        let a = key(1, "10.0.0.1", "10.0.0.2", 80);
        let b = key(2, "10.0.0.1", "10.0.0.2", 80);
        let c = key(3, "10.0.0.1", "10.0.0.2", 80);
        let held = vec![
            holder(a, 40000, TcpState::Established),
            holder(b, 40000, TcpState::Established),
            holder(c, 40000, TcpState::Established),
        ];
        let ns = [
            settings(1, (40000, 40099), vec![], 2),
            settings(2, (40000, 40001), vec![], 2),
        ];
        let rows = destinations(
            &held,
            &BTreeMap::new(),
            &NamespaceSettings::new(&ns),
            &PortRates::default(),
        );
        let by_ns: BTreeMap<u32, &DestinationPortsRow> =
            rows.iter().map(|r| (r.netns, r)).collect();
        assert_eq!(by_ns[&1].usable, 100);
        assert_eq!(by_ns[&2].usable, 2);
        assert_eq!(rows[0].netns, 2, "the fullest first");
        assert!(by_ns[&1].settings_read && by_ns[&2].settings_read);
        assert!(!by_ns[&3].settings_read);
        assert_eq!(
            by_ns[&3].usable, 100,
            "the first namespace's settings assumed"
        );
    }

    #[test]
    fn listeners_in_the_range_take_ports_from_every_destination() {
        let k = key(1, "10.0.0.1", "10.0.0.2", 80);
        let listening = BTreeMap::from([(1, BTreeSet::from([40003, 50000]))]);
        let rows = destinations(
            &[holder(k, 40000, TcpState::Established)],
            &listening,
            &NamespaceSettings::new(&[settings(1, (40000, 40009), vec![], 0)]),
            &PortRates::default(),
        );
        assert_eq!(
            (rows[0].listening_in_range, rows[0].usable, rows[0].free),
            (1, 9, 8)
        );
    }

    #[test]
    fn pending_connects_and_duplicates_are_not_counted_as_ports() {
        let k = key(1, "10.0.0.1", "10.0.0.2", 80);
        let held = vec![
            holder(k, 0, TcpState::SynSent),
            holder(k, 40001, TcpState::Established),
            holder(k, 40001, TcpState::TimeWait),
        ];
        let row = one_row(&held, &[settings(1, (40000, 40009), vec![], 0)]);
        assert_eq!((row.in_use, row.port_pending), (1, 1));
    }

    #[test]
    fn rates_give_time_to_exhaustion_and_none_when_not_shrinking() {
        let k = key(1, "10.0.0.1", "10.0.0.2", 80);
        let mut rates = PortRates::default();
        let mut t = crate::testkit::transition(0, 1, TcpState::SynSent, TcpState::Established);
        t.netns = 1;
        t.local = Endpoint::new(k.local_ip, 40000);
        t.remote = k.remote;
        // Traced for longer than the window.
        rates.seen(10_000_000_000);
        // 120 takes in the last minute, 60 frees: one port a second.
        for i in 0..120u64 {
            t.ts_boot_ns = 100_000_000_000 + i * 500_000_000;
            rates.transition(&t);
        }
        for i in 0..60u64 {
            rates.ended(k, 100_000_000_000 + i * 1_000_000_000);
        }
        // A free predicted after the latest event does not count yet.
        rates.ended(k, 500_000_000_000);
        let (take, free) = rates.rates(&k);
        assert_eq!((take, free), (2.0, 1.0));
        let row = destinations(
            &[holder(k, 40000, TcpState::Established)],
            &BTreeMap::new(),
            &NamespaceSettings::new(&[settings(1, (40000, 40009), vec![], 0)]),
            &rates,
        )
        .remove(0);
        assert_eq!(row.exhaustion_s, Some(9.0));
        let quiet = one_row(
            &[holder(k, 40000, TcpState::Established)],
            &[settings(1, (40000, 40009), vec![], 0)],
        );
        assert_eq!(quiet.exhaustion_s, None);
    }

    #[test]
    fn failures_are_counted_per_caller_and_errno_and_summed_per_destination() {
        use crate::wire::{Comm, FailedCall, Task};
        let mut failures = CallFailures::default();
        let f = CallFailure {
            ts_boot_ns: 1,
            call: FailedCall::Connect,
            errno: 99,
            task: Task {
                tgid: 42,
                pid: 43,
                comm: Comm::from_str_lossy("client"),
            },
            cgroup_id: 0,
            netns: 7,
            skaddr: 0,
            family: crate::tcp::Family::Ipv4,
            addr: Endpoint::new("10.0.0.2".parse().unwrap(), 80),
        };
        for _ in 0..3 {
            failures.call(&f);
        }
        failures.call(&CallFailure { errno: 111, ..f });
        failures.call(&CallFailure {
            call: FailedCall::Bind,
            errno: 98,
            ..f
        });
        let rows = failures.rows();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            (
                rows[0].call,
                rows[0].errno_name,
                rows[0].tgid,
                rows[0].count
            ),
            ("connect", "EADDRNOTAVAIL", Some(42), 3)
        );
        let k = key(7, "10.0.0.1", "10.0.0.2", 80);
        let mut report = PortsReport {
            kind: "ports",
            destinations: vec![one_row(
                &[holder(k, 40000, TcpState::Established)],
                &[settings(7, (40000, 40099), vec![], 0)],
            )],
            failures: rows,
            lost_events: 0,
            lost_failures: 0,
        };
        for d in &mut report.destinations {
            d.failures = report
                .failures
                .iter()
                .filter(|f| f.call != "bind" && f.netns == d.netns && f.address == d.remote)
                .map(|f| f.count)
                .sum();
        }
        assert_eq!(
            report.destinations[0].failures, 4,
            "bind failures are not the destination's"
        );
        assert!(report.table().contains("EADDRNOTAVAIL"));
    }

    #[test]
    fn reserved_ports_are_counted_once_and_only_inside_the_range() {
        let count = |reserved: Vec<(u16, u16)>| {
            let settings = PortSettings {
                range: (40000, 40099),
                reserved,
                tw_reuse: 0,
            };
            let by_port = (40000..=40099u16)
                .filter(|p| is_reserved(&settings, *p))
                .count();
            let by_ranges = reserved_in_range(&settings);
            assert_eq!(by_ranges, by_port, "{:?}", settings.reserved);
            by_ranges
        };
        assert_eq!(count(vec![]), 0);
        assert_eq!(count(vec![(39990, 40004)]), 5);
        assert_eq!(count(vec![(40095, 65535), (1, 2)]), 5);
        assert_eq!(
            count(vec![(40010, 40019), (40015, 40029), (40012, 40013)]),
            20
        );
        assert_eq!(
            count(vec![(40050, 40050), (40050, 40050), (40051, 40060)]),
            11
        );
        assert_eq!(count(vec![(0, 65535)]), 100);
    }

    #[test]
    fn a_run_shorter_than_the_window_divides_by_what_it_saw() {
        let k = key(1, "10.0.0.1", "10.0.0.2", 80);
        let mut rates = PortRates::default();
        let mut t = crate::testkit::transition(0, 1, TcpState::SynSent, TcpState::Established);
        t.netns = 1;
        t.local = Endpoint::new(k.local_ip, 40000);
        t.remote = k.remote;
        // 10 takes over 5 s of tracing: 2 a second, not 10 a minute.
        for i in 0..=10u64 {
            t.ts_boot_ns = 50_000_000_000 + i * 500_000_000;
            rates.transition(&t);
        }
        assert_eq!(rates.rates(&k).0, 11.0 / 5.0);
        // A lone burst: at least a second.
        let mut burst = PortRates::default();
        t.ts_boot_ns = 7;
        burst.transition(&t);
        assert_eq!(burst.rates(&k).0, 1.0);
    }
}

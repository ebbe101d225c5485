//! What the connection model (and one socket dump at the end) says, reduced
//! to the numbers the findings need. [`Watch`] is the pipeline view that
//! counts what happens during the watch; [`ModelFacts::collect`] reads the
//! model at the end.
use crate::{
    addr::Endpoint,
    model::{Connection, Model, Owner, TimeWaitFate},
    source::{
        snapshot::{Snapshot, TimerKind},
        Item,
    },
    tcp::TcpState,
    views::{Progress, View},
    wire::Comm,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// A process, as the findings name it.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Process {
    /// None: owner unknown.
    pub tgid: Option<u32>,
    pub comm: Option<String>,
}

impl Process {
    pub fn of(owner: Option<&Owner>) -> Self {
        Process {
            tgid: owner.map(|o| o.tgid),
            comm: owner.map(|o| o.comm.as_string()),
        }
    }

    fn from_parts(tgid: Option<u32>, comm: Option<Comm>) -> Self {
        Process {
            tgid,
            comm: comm.map(|c| c.as_string()),
        }
    }

    /// `1234/nginx`, or `an unknown process`.
    pub fn text(&self) -> String {
        match (self.tgid, &self.comm) {
            (Some(tgid), Some(comm)) => format!("{tgid}/{comm}"),
            (Some(tgid), None) => tgid.to_string(),
            _ => "an unknown process".to_string(),
        }
    }
}

/// TIME_WAIT caused by one process: now, and created during the watch.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TimeWaitOwner {
    #[serde(flatten)]
    pub process: Process,
    /// Entries in the table at the end.
    pub now: usize,
    /// Entries created during the watch.
    pub created: u64,
    /// Of those, on connections it accepted (the server closed first).
    pub created_passive: u64,
}

/// TIME_WAIT towards one remote endpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TimeWaitDestination {
    pub remote: String,
    /// Loopback destination (tcp_tw_reuse=2 applies).
    pub loopback: bool,
    /// Entries in the table at the end.
    pub now: usize,
    /// Of those, with a local port inside ip_local_port_range: ephemeral
    /// ports connect() cannot use towards this destination.
    pub in_range: usize,
    /// Live connections to it holding a port of the range at the end.
    pub live_in_range: usize,
    /// Entries created during the watch.
    pub created: u64,
    /// Of those, with a local port inside the range.
    pub created_in_range: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TimeWaitFacts {
    /// Entries in the table at the end.
    pub now: usize,
    /// Entries created during the watch.
    pub created: u64,
    /// Closes during the watch that got no TIME_WAIT because the namespace
    /// held tcp_max_tw_buckets already (the model's mirror of
    /// TCPTimeWaitOverflow).
    pub overflow_closes: u64,
    /// Entries at the end by who closed first.
    pub closed_first_local: usize,
    pub closed_first_both: usize,
    /// Most first.
    pub by_owner: Vec<TimeWaitOwner>,
    /// Most pressed first (ephemeral ports held, then created).
    pub by_destination: Vec<TimeWaitDestination>,
}

/// CLOSE_WAIT sockets of one process older than the threshold.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CloseWaitLeak {
    #[serde(flatten)]
    pub process: Process,
    pub cmdline: Option<String>,
    pub count: usize,
    pub oldest_age_s: f64,
    /// Some were in CLOSE_WAIT already at the start: their age is at least
    /// the time since the start.
    pub age_is_lower_bound: bool,
    pub local_ports: Vec<u16>,
    pub remote_peers: usize,
}

/// CLOSE_WAIT sockets never accepted, per listener.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AcceptBacklog {
    pub listener: Option<String>,
    pub listener_owner: Process,
    pub count: usize,
    pub oldest_age_s: f64,
}

/// A listening socket's accept queue, from the socket dump at the end.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ListenQueue {
    pub local: String,
    pub owner: Process,
    /// Connections waiting for accept().
    pub queued: u32,
    /// The effective backlog: min(listen() backlog, net.core.somaxconn).
    pub backlog: u32,
}

/// Keepalive timers of long-lived ESTABLISHED connections, from the socket
/// dump at the end (the timer `ss -o` shows).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KeepaliveTimers {
    /// A keepalive timer was pending: SO_KEEPALIVE is set.
    pub keepalive: usize,
    /// No timer at all: SO_KEEPALIVE is normally not set.
    pub no_timer: usize,
    /// A retransmit or window probe timer hid it, or the socket was not in
    /// the dump (another network namespace, closed meanwhile).
    pub unknown: usize,
}

/// ESTABLISHED connections of one process older than the threshold.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OldEstablished {
    #[serde(flatten)]
    pub process: Process,
    pub count: usize,
    pub oldest_age_s: f64,
    /// Some already existed at the start: their age is only known to be at
    /// least the time since the start.
    pub age_is_lower_bound: bool,
    pub keepalive: KeepaliveTimers,
    /// A few remote endpoints.
    pub remote_examples: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EstablishedFacts {
    pub threshold_s: f64,
    pub total: usize,
    /// Connections that already existed at the start (age unknown).
    pub predating_start: usize,
    /// Most first.
    pub old_by_owner: Vec<OldEstablished>,
}

/// Everything the findings take from the model and the socket dump.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ModelFacts {
    pub time_wait: TimeWaitFacts,
    pub close_wait_threshold_s: f64,
    pub close_wait: Vec<CloseWaitLeak>,
    pub accept_backlog: Vec<AcceptBacklog>,
    pub established: EstablishedFacts,
    /// Listeners with connections waiting, fullest first; empty without a
    /// socket dump.
    pub listen_queues: Vec<ListenQueue>,
    pub transitions: u64,
    pub lost_events: u64,
    pub uncertain_connections: usize,
    /// Failed connect()/bind() calls and handshakes seen during the watch,
    /// most first (issue 11).
    pub call_failures: Vec<crate::views::ports::FailureRow>,
}

#[derive(Default)]
struct Created {
    comm: Option<Comm>,
    count: u64,
    passive: u64,
}

/// The pipeline view of the watch: counts the TIME_WAIT entries created,
/// by owner and by destination, and closes that overflowed.
pub struct Watch {
    range: (u16, u16),
    by_owner: BTreeMap<Option<u32>, Created>,
    /// (all, in range) per destination.
    by_destination: BTreeMap<Endpoint, (u64, u64)>,
    created: u64,
    overflow: u64,
    /// Issue 11: failed calls and handshakes.
    failures: crate::views::ports::CallFailures,
}

impl Watch {
    pub fn new(port_range: (u16, u16)) -> Self {
        Watch {
            range: port_range,
            by_owner: BTreeMap::new(),
            by_destination: BTreeMap::new(),
            created: 0,
            overflow: 0,
            failures: Default::default(),
        }
    }

    /// Takes a connection the model just finished.
    pub fn ended(&mut self, conn: &Connection) {
        match conn.time_wait {
            TimeWaitFate::Entered => {}
            TimeWaitFate::Overflow => {
                self.overflow += 1;
                return;
            }
            TimeWaitFate::None | TimeWaitFate::Untracked => return,
        }
        self.created += 1;
        let owner = conn.attributed_owner();
        let created = self.by_owner.entry(owner.map(|o| o.tgid)).or_default();
        if created.comm.is_none() {
            created.comm = owner.map(|o| o.comm);
        }
        created.count += 1;
        if conn.open == crate::model::OpenKind::Passive {
            created.passive += 1;
        }
        let in_range = (self.range.0..=self.range.1).contains(&conn.local.port);
        let dest = self.by_destination.entry(conn.remote).or_default();
        dest.0 += 1;
        dest.1 += u64::from(in_range);
    }
}

impl View for Watch {
    fn item(
        &mut self,
        item: &Item,
        ended: &[Connection],
        model: &Model,
        shown: bool,
    ) -> std::io::Result<()> {
        if let Item::CallFailed(f) = item {
            self.failures.call(f);
        }
        self.settled(ended, model, shown)
    }

    fn settled(&mut self, ended: &[Connection], _: &Model, _: bool) -> std::io::Result<()> {
        for conn in ended {
            self.ended(conn);
            self.failures.ended(conn);
        }
        Ok(())
    }

    fn refresh(&mut self, _: &Progress, _: bool) -> std::io::Result<()> {
        Ok(())
    }

    fn shown(&self) -> u64 {
        0
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn is_loopback(ep: &Endpoint) -> bool {
    ep.ip.is_loopback()
}

/// What the end-of-watch dump says about sockets, by 4-tuple.
struct Dump<'a> {
    by_flow: HashMap<(Endpoint, Endpoint), &'a crate::source::snapshot::SnapshotSocket>,
    netns: u32,
}

impl<'a> Dump<'a> {
    fn new(snapshot: Option<&'a Snapshot>) -> Option<Self> {
        let snapshot = snapshot?;
        Some(Dump {
            by_flow: snapshot
                .sockets
                .iter()
                .map(|s| ((s.existing.local, s.existing.remote), s))
                .collect(),
            netns: snapshot.netns,
        })
    }

    fn timer(&self, conn: &Connection) -> Option<Option<TimerKind>> {
        if conn.netns != self.netns && conn.netns != 0 {
            return None;
        }
        let sock = self.by_flow.get(&(conn.local, conn.remote))?;
        (sock.existing.state == TcpState::Established).then_some(sock.timer.map(|t| t.kind))
    }
}

/// Inputs of [`ModelFacts::collect`] besides the model.
pub struct CollectArgs<'a> {
    pub now_ns: u64,
    pub port_range: (u16, u16),
    pub established_threshold_s: u64,
    /// The socket dump taken at the end, if it worked.
    pub dump: Option<&'a Snapshot>,
    pub transitions: u64,
    pub lost_events: u64,
    /// The command line of a live process.
    pub cmdline: &'a dyn Fn(u32) -> Option<String>,
}

impl ModelFacts {
    pub fn collect(model: &Model, watch: &Watch, args: &CollectArgs) -> ModelFacts {
        let dump = Dump::new(args.dump);
        ModelFacts {
            time_wait: time_wait_facts(model, watch, args),
            close_wait_threshold_s: model.config().close_wait_leak_secs as f64,
            close_wait: close_wait(model, args),
            accept_backlog: model
                .leaks(args.now_ns)
                .accept_backlog
                .iter()
                .map(|b| AcceptBacklog {
                    listener: b.listener_local.map(|l| l.to_string()),
                    listener_owner: Process::of(b.listener_owner.as_ref()),
                    count: b.count,
                    oldest_age_s: secs(b.oldest_age_ns),
                })
                .collect(),
            established: established(model, args, dump.as_ref()),
            listen_queues: listen_queues(args.dump),
            transitions: args.transitions,
            lost_events: args.lost_events,
            uncertain_connections: model.connections().filter(|c| c.uncertain).count(),
            call_failures: watch.failures.rows(),
        }
    }
}

fn time_wait_facts(model: &Model, watch: &Watch, args: &CollectArgs) -> TimeWaitFacts {
    let table = model.time_wait();
    let (low, high) = args.port_range;
    let in_range = |port: u16| (low..=high).contains(&port);
    let mut owners: BTreeMap<Option<u32>, TimeWaitOwner> = BTreeMap::new();
    for p in table.by_process() {
        let owner = owners.entry(p.tgid).or_default();
        owner.process = Process::from_parts(p.tgid, p.comm);
        owner.now = p.count;
    }
    for (tgid, created) in &watch.by_owner {
        let owner = owners.entry(*tgid).or_default();
        if owner.process.tgid.is_none() {
            owner.process = Process::from_parts(*tgid, created.comm);
        }
        owner.created = created.count;
        owner.created_passive = created.passive;
    }
    let mut by_owner: Vec<TimeWaitOwner> = owners.into_values().collect();
    by_owner.sort_by(|a, b| {
        (b.created, b.now)
            .cmp(&(a.created, a.now))
            .then(a.process.cmp(&b.process))
    });

    let mut dests: BTreeMap<Endpoint, TimeWaitDestination> = BTreeMap::new();
    for d in table.destinations(args.port_range) {
        let dest = dests.entry(d.remote).or_default();
        dest.now = d.local_ports;
        dest.in_range = d.in_range;
    }
    for (remote, (all, ranged)) in &watch.by_destination {
        let dest = dests.entry(*remote).or_default();
        dest.created = *all;
        dest.created_in_range = *ranged;
    }
    for conn in model.connections() {
        if conn.state == TcpState::Listen || !in_range(conn.local.port) {
            continue;
        }
        if let Some(dest) = dests.get_mut(&conn.remote) {
            dest.live_in_range += 1;
        }
    }
    let mut by_destination: Vec<TimeWaitDestination> = dests
        .into_iter()
        .map(|(remote, mut d)| {
            d.remote = remote.to_string();
            d.loopback = is_loopback(&remote);
            d
        })
        .collect();
    by_destination.sort_by(|a, b| {
        (b.in_range, b.created_in_range, b.now, b.created)
            .cmp(&(a.in_range, a.created_in_range, a.now, a.created))
            .then(a.remote.cmp(&b.remote))
    });
    let stat = model.stat_by_process();
    let closed =
        |c: crate::model::ClosedFirst| stat.time_wait_by_closed_first.get(&c).copied().unwrap_or(0);
    TimeWaitFacts {
        now: table.len(),
        created: watch.created,
        overflow_closes: watch.overflow,
        closed_first_local: closed(crate::model::ClosedFirst::Local),
        closed_first_both: closed(crate::model::ClosedFirst::Both),
        by_owner,
        by_destination,
    }
}

fn close_wait(model: &Model, args: &CollectArgs) -> Vec<CloseWaitLeak> {
    model
        .leaks(args.now_ns)
        .by_owner
        .iter()
        .map(|l| CloseWaitLeak {
            process: Process::from_parts(l.tgid, l.comm),
            cmdline: l.tgid.and_then(|t| (args.cmdline)(t)),
            count: l.count,
            oldest_age_s: secs(l.oldest_age_ns),
            age_is_lower_bound: l.age_is_lower_bound,
            local_ports: l.local_ports.clone(),
            remote_peers: l.remote_peers.len(),
        })
        .collect()
}

fn established(model: &Model, args: &CollectArgs, dump: Option<&Dump>) -> EstablishedFacts {
    let threshold_ns = args.established_threshold_s.saturating_mul(1_000_000_000);
    let mut facts = EstablishedFacts {
        threshold_s: args.established_threshold_s as f64,
        ..EstablishedFacts::default()
    };
    let mut owners: BTreeMap<Option<u32>, OldEstablished> = BTreeMap::new();
    for conn in model.connections() {
        if conn.state != TcpState::Established {
            continue;
        }
        facts.total += 1;
        // Known when the move to ESTABLISHED was seen; otherwise it was
        // there at the start (the snapshot): at least that long.
        let (since, lower_bound) = match conn.state_entered_ns() {
            Some(entered) => (entered, false),
            None => (conn.started_ns, true),
        };
        if lower_bound {
            facts.predating_start += 1;
        }
        let age = args.now_ns.saturating_sub(since);
        if age < threshold_ns {
            continue;
        }
        let owner = conn.attributed_owner();
        let entry = owners
            .entry(owner.map(|o| o.tgid))
            .or_insert_with(|| OldEstablished {
                process: Process::of(owner.as_ref()),
                ..OldEstablished::default()
            });
        entry.count += 1;
        entry.oldest_age_s = entry.oldest_age_s.max(secs(age));
        entry.age_is_lower_bound |= lower_bound;
        match dump.and_then(|d| d.timer(conn)) {
            Some(Some(TimerKind::KeepAlive)) => entry.keepalive.keepalive += 1,
            Some(None) => entry.keepalive.no_timer += 1,
            _ => entry.keepalive.unknown += 1,
        }
        if entry.remote_examples.len() < 3 {
            entry.remote_examples.push(conn.remote.to_string());
        }
    }
    facts.old_by_owner = owners.into_values().collect();
    facts
        .old_by_owner
        .sort_by(|a, b| b.count.cmp(&a.count).then(a.process.cmp(&b.process)));
    facts
}

fn listen_queues(dump: Option<&Snapshot>) -> Vec<ListenQueue> {
    let Some(dump) = dump else {
        return Vec::new();
    };
    let mut queues: Vec<ListenQueue> = dump
        .sockets
        .iter()
        .filter(|s| s.existing.state == TcpState::Listen && s.rqueue > 0)
        .map(|s| ListenQueue {
            local: s.existing.local.to_string(),
            owner: Process::of(s.existing.owner.as_ref()),
            queued: s.rqueue,
            backlog: s.wqueue,
        })
        .collect();
    let fill = |q: &ListenQueue| q.queued as f64 / f64::from(q.backlog.max(1));
    queues.sort_by(|a, b| fill(b).total_cmp(&fill(a)).then(a.local.cmp(&b.local)));
    queues
}

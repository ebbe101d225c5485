//! The `serve` view: Prometheus metrics, in the text exposition format
//! 0.0.4, computed from the connection model and from counters kept as the
//! items pass.
//!
//! [`render`] is pure: the model, the [`Counters`], the source's counters
//! and the tracer's own process figures in, text out. Label sets that grow
//! with the host (processes, destinations) are bounded: the top N get their
//! own series and the rest are summed under `"other"`.
use crate::{
    model::{Connection, EndKind, Model, OpenKind, StateCounts},
    source::{procfs::SelfStats, Item, SourceStats},
    tcp::TcpState,
};
#[cfg(test)]
use exposition::escape_help;
pub use exposition::escape_label;
use exposition::{Exposition, Kind};
use std::collections::BTreeMap;

mod exposition;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The label value of the series that sums everything past the top N.
pub const OTHER: &str = "other";
/// The label value for sockets whose owner (or listener) is not known.
pub const UNKNOWN: &str = "unknown";

/// States a socket can be seen in, always exported (0 when none), so that
/// each series exists from the first scrape on. CLOSE is left out: a closed
/// socket is forgotten.
fn exported_states() -> impl Iterator<Item = TcpState> {
    TcpState::ALL.into_iter().filter(|s| *s != TcpState::Close)
}

const OPEN_KINDS: [OpenKind; 2] = [OpenKind::Active, OpenKind::Passive];
const END_KINDS: [EndKind; 5] = [
    EndKind::Normal,
    EndKind::Reset,
    EndKind::Refused,
    EndKind::Timeout,
    EndKind::Unknown,
];

/// What is counted as the items pass (the model keeps no history).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub transitions: TransitionCounts,
    /// Connections opened, by `OpenKind` name: `active` (CLOSE→SYN_SENT,
    /// connect()) and `passive` (LISTEN→SYN_RECV, a listener's child).
    pub opened: BTreeMap<&'static str, u64>,
    /// Connections the model finished (listeners left out), by `EndKind`
    /// name.
    pub closed: BTreeMap<&'static str, u64>,
    /// Failed connect()/bind() calls and failed handshakes (issue 11), by
    /// call and errno name: a bounded set of labels (see `errno_name`).
    pub call_failures: BTreeMap<(&'static str, &'static str), u64>,
}

impl Counters {
    /// Counts one item, and the connections it finished.
    pub fn count(&mut self, item: &Item, ended: &[Connection]) {
        if let Item::Transition(t) = item {
            self.transitions.add(t.old, t.new);
            let open = match (t.old, t.new) {
                (TcpState::Close, TcpState::SynSent) => Some(OpenKind::Active),
                (TcpState::Listen, TcpState::SynRecv) => Some(OpenKind::Passive),
                _ => None,
            };
            if let Some(open) = open {
                *self.opened.entry(open.name()).or_insert(0) += 1;
            }
        }
        if let Item::CallFailed(f) = item {
            let key = (f.call.name(), crate::wire::errno_name(f.errno));
            *self.call_failures.entry(key).or_insert(0) += 1;
        }
        self.count_ended(ended);
    }

    /// Connections that finished: how, and the handshakes that failed.
    pub fn count_ended(&mut self, ended: &[Connection]) {
        for conn in ended.iter().filter(|c| c.open != OpenKind::Listener) {
            let end = conn.end.unwrap_or(EndKind::Unknown);
            *self.closed.entry(end.name()).or_insert(0) += 1;
        }
        self.count_failed_handshakes(ended);
    }

    /// Issue 11: what failed, as `ports` counts it (a handshake is
    /// SYN_SENT -> CLOSE after the SYN went out: refused or timed out).
    fn count_failed_handshakes(&mut self, ended: &[Connection]) {
        for conn in ended {
            let errno = match conn.end {
                Some(EndKind::Refused) => "ECONNREFUSED",
                Some(EndKind::Timeout) => "ETIMEDOUT",
                _ => continue,
            };
            if conn.local.port != 0 {
                *self.call_failures.entry(("handshake", errno)).or_insert(0) += 1;
            }
        }
    }
}

/// Transitions seen per old and new state: a flat table indexed by the
/// states' numbers (an ordered map's lookup, once per transition, was
/// most of what `serve` spent per item besides the model).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransitionCounts([[u64; STATE_SLOTS]; STATE_SLOTS]);

/// States are numbered from 1 (`TcpState as usize`).
const STATE_SLOTS: usize = TcpState::ALL.len() + 1;

impl Default for TransitionCounts {
    fn default() -> Self {
        TransitionCounts([[0; STATE_SLOTS]; STATE_SLOTS])
    }
}

impl TransitionCounts {
    pub fn add(&mut self, old: TcpState, new: TcpState) {
        self.0[old as usize][new as usize] += 1;
    }

    /// None when never seen.
    pub fn get(&self, old: TcpState, new: TcpState) -> Option<u64> {
        let n = self.0[old as usize][new as usize];
        (n > 0).then_some(n)
    }

    /// The pairs seen, in (old, new) state order.
    pub fn iter(&self) -> impl Iterator<Item = ((TcpState, TcpState), u64)> + '_ {
        TcpState::ALL.into_iter().flat_map(move |old| {
            TcpState::ALL
                .into_iter()
                .filter_map(move |new| self.get(old, new).map(|n| ((old, new), n)))
        })
    }
}

/// How many label values the unbounded families may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Processes with their own `tcpstate_process_sockets` and
    /// `tcpstate_close_wait_suspects` series.
    pub top_processes: usize,
    /// Destinations with their own `tcpstate_time_wait_destination_sockets`
    /// series (also listeners of `tcpstate_close_wait_accept_queue_suspects`).
    pub top_destinations: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            top_processes: 20,
            top_destinations: 20,
        }
    }
}

/// Everything a scrape is computed from.
pub struct Inputs<'a> {
    pub model: &'a Model,
    pub counters: &'a Counters,
    pub source: SourceStats,
    /// Boot-time ns, for the age of CLOSE_WAIT sockets.
    pub now_ns: u64,
    pub limits: Limits,
    pub process: SelfStats,
    /// The Kubernetes pod of an owner's cgroup id, when the host shows one:
    /// its series get `namespace` and `pod` labels.
    pub pod_of: PodOf<'a>,
}

/// A cgroup's Kubernetes pod, as labels.
pub use crate::source::kubernetes::Pod;

/// `base` with `namespace` and `pod` inserted after the first `at` labels
/// when the pod is known.
fn with_pod<'l>(
    base: &[(&'l str, &'l str)],
    at: usize,
    pod: Option<&'l Pod>,
) -> Vec<(&'l str, &'l str)> {
    let mut labels = base.to_vec();
    if let Some(pod) = pod {
        labels.splice(
            at..at,
            [
                ("namespace", pod.namespace.as_str()),
                ("pod", pod.name.as_str()),
            ],
        );
    }
    labels
}

/// The exposition, in the text format 0.0.4.
pub fn render(inputs: &Inputs) -> String {
    let model = inputs.model;
    let counts = model.stat_by_process();
    let mut out = Exposition::default();
    write_sockets(&mut out, &counts, inputs.limits, inputs.pod_of);
    write_time_wait(&mut out, model, &counts, inputs.limits);
    write_close_wait(&mut out, model, inputs.now_ns, inputs.limits, inputs.pod_of);
    write_events(&mut out, inputs);
    write_call_failures(&mut out, inputs);
    write_process(&mut out, &inputs.process);
    out.text
}

/// Sockets per state, and per owning process and state.
/// The pod of an owner's cgroup id, when known.
type PodOf<'a> = &'a dyn Fn(u64) -> Option<Pod>;

fn write_sockets(out: &mut Exposition, counts: &StateCounts, limits: Limits, pod_of: PodOf) {
    let mut f = out.family(
        "tcpstate_sockets",
        Kind::Gauge,
        "TCP sockets now, per state; TIME_WAIT as inferred by the model.",
    );
    for state in exported_states() {
        f.sample(&[("state", state.name())], counts.count(state));
    }
    for (state, n) in counts
        .by_state
        .iter()
        .filter(|(s, _)| **s == TcpState::Close)
    {
        f.sample(&[("state", state.name())], *n);
    }

    let mut f = out.family(
        "tcpstate_process_sockets",
        Kind::Gauge,
        "TCP sockets per owning process and state (TIME_WAIT: the process whose connection left it); the top processes by socket count, the rest summed under pid=\"other\".",
    );
    let mut known: Vec<_> = counts
        .by_process
        .iter()
        .filter(|p| p.tgid.is_some())
        .collect();
    let total = |states: &BTreeMap<TcpState, usize>| states.values().sum::<usize>();
    known.sort_by(|a, b| {
        total(&b.states)
            .cmp(&total(&a.states))
            .then(a.tgid.cmp(&b.tgid))
    });
    let keep = known.len().min(limits.top_processes);
    for p in &known[..keep] {
        let pid = p.tgid.map(|t| t.to_string()).unwrap_or_default();
        let comm = p.comm.map(|c| c.as_string()).unwrap_or_default();
        let pod = pod_of(p.cgroup_id);
        for (state, n) in &p.states {
            let base = [
                ("pid", pid.as_str()),
                ("comm", comm.as_str()),
                ("state", state.name()),
            ];
            f.sample(&with_pod(&base, 2, pod.as_ref()), *n);
        }
    }
    let mut rest: BTreeMap<TcpState, usize> = BTreeMap::new();
    for p in &known[keep..] {
        for (state, n) in &p.states {
            *rest.entry(*state).or_insert(0) += n;
        }
    }
    for (state, n) in &rest {
        f.sample(
            &[("pid", OTHER), ("comm", OTHER), ("state", state.name())],
            *n,
        );
    }
    for p in counts.by_process.iter().filter(|p| p.tgid.is_none()) {
        for (state, n) in &p.states {
            f.sample(
                &[("pid", UNKNOWN), ("comm", UNKNOWN), ("state", state.name())],
                *n,
            );
        }
    }
}

/// TIME_WAIT sockets by who closed first and by destination.
fn write_time_wait(out: &mut Exposition, model: &Model, counts: &StateCounts, limits: Limits) {
    let mut f = out.family(
        "tcpstate_time_wait_sockets",
        Kind::Gauge,
        "TIME_WAIT sockets by who closed first: local (this host sent the first FIN) or both (simultaneous close).",
    );
    for closed_first in [
        crate::model::ClosedFirst::Local,
        crate::model::ClosedFirst::Both,
    ] {
        let n = counts
            .time_wait_by_closed_first
            .get(&closed_first)
            .copied()
            .unwrap_or(0);
        f.sample(&[("closed_first", closed_first.name())], n);
    }
    for (closed_first, n) in &counts.time_wait_by_closed_first {
        if !matches!(
            closed_first,
            crate::model::ClosedFirst::Local | crate::model::ClosedFirst::Both
        ) {
            f.sample(&[("closed_first", closed_first.name())], *n);
        }
    }

    let mut f = out.family(
        "tcpstate_time_wait_destination_sockets",
        Kind::Gauge,
        "TIME_WAIT sockets per remote endpoint; the top destinations, the rest summed under remote=\"other\".",
    );
    let destinations = model.time_wait().by_remote();
    let keep = destinations.len().min(limits.top_destinations);
    for (remote, n) in &destinations[..keep] {
        f.sample(&[("remote", &remote.to_string())], *n);
    }
    if destinations.len() > keep {
        let rest: usize = destinations[keep..].iter().map(|(_, n)| n).sum();
        f.sample(&[("remote", OTHER)], rest);
    }
}

/// CLOSE_WAIT leak suspects per process and per listener's backlog.
fn write_close_wait(
    out: &mut Exposition,
    model: &Model,
    now_ns: u64,
    limits: Limits,
    pod_of: PodOf,
) {
    let leaks = model.leaks(now_ns);
    let mut f = out.family(
        "tcpstate_close_wait_suspects",
        Kind::Gauge,
        "Sockets in CLOSE_WAIT for longer than tcpstate_close_wait_threshold_seconds, per owning process: the peer closed and the program has not; the top processes, the rest under pid=\"other\".",
    );
    let mut owned: Vec<_> = leaks.by_owner.iter().filter(|l| l.tgid.is_some()).collect();
    owned.sort_by(|a, b| b.count.cmp(&a.count).then(a.tgid.cmp(&b.tgid)));
    let keep = owned.len().min(limits.top_processes);
    for leak in &owned[..keep] {
        let pid = leak.tgid.map(|t| t.to_string()).unwrap_or_default();
        let comm = leak.comm.map(|c| c.as_string()).unwrap_or_default();
        let pod = pod_of(leak.cgroup_id);
        let base = [("pid", pid.as_str()), ("comm", comm.as_str())];
        f.sample(&with_pod(&base, 2, pod.as_ref()), leak.count);
    }
    if owned.len() > keep {
        let rest: usize = owned[keep..].iter().map(|l| l.count).sum();
        f.sample(&[("pid", OTHER), ("comm", OTHER)], rest);
    }
    let unknown: usize = leaks
        .by_owner
        .iter()
        .filter(|l| l.tgid.is_none())
        .map(|l| l.count)
        .sum();
    if unknown > 0 {
        f.sample(&[("pid", UNKNOWN), ("comm", UNKNOWN)], unknown);
    }

    let mut f = out.family(
        "tcpstate_close_wait_accept_queue_suspects",
        Kind::Gauge,
        "Sockets in CLOSE_WAIT for longer than the threshold that no process accepted yet, per listener (local endpoint): its backlog.",
    );
    let mut backlogs: BTreeMap<String, usize> = BTreeMap::new();
    for backlog in &leaks.accept_backlog {
        let listener = backlog
            .listener_local
            .map_or_else(|| UNKNOWN.to_string(), |l| l.to_string());
        *backlogs.entry(listener).or_insert(0) += backlog.count;
    }
    let mut backlogs: Vec<(String, usize)> = backlogs.into_iter().collect();
    backlogs.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let keep = backlogs.len().min(limits.top_destinations);
    for (listener, n) in &backlogs[..keep] {
        f.sample(&[("listener", listener)], *n);
    }
    if backlogs.len() > keep {
        let rest: usize = backlogs[keep..].iter().map(|(_, n)| n).sum();
        f.sample(&[("listener", OTHER)], rest);
    }

    out.family(
        "tcpstate_close_wait_threshold_seconds",
        Kind::Gauge,
        "Age past which a CLOSE_WAIT socket is a leak suspect (--threshold).",
    )
    .sample(&[], model.config().close_wait_leak_secs);

    out.family(
        "tcpstate_uncertain_connections",
        Kind::Gauge,
        "Live connections that may have missed a transition (lost events): their state may be wrong.",
    )
    .sample(&[], model.uncertain_connections());
}

/// Counters of what happened: transitions, opens, closes, losses.
/// Issue 11: failed connect()/bind() calls and handshakes.
fn write_call_failures(out: &mut Exposition, inputs: &Inputs) {
    let mut f = out.family(
        "tcpstate_connect_failures_total",
        Kind::Counter,
        "Failed connect() and bind() calls on TCP sockets (call=connect|bind: the call returned the errno) and failed handshakes (call=handshake: SYN_SENT->CLOSE after the SYN went out, refused or timed out), by errno.",
    );
    for ((call, errno), n) in &inputs.counters.call_failures {
        f.sample(&[("call", call), ("errno", errno)], *n);
    }
    out.family(
        "tcpstate_connect_failures_lost_total",
        Kind::Counter,
        "Failed-call records the kernel could not deliver (ring buffer full, or the program skipped).",
    )
    .sample(&[], inputs.source.lost_call_failures);
}

fn write_events(out: &mut Exposition, inputs: &Inputs) {
    let model = inputs.model;
    let mut f = out.family(
        "tcpstate_transitions_total",
        Kind::Counter,
        "TCP state transitions seen, per old and new state.",
    );
    for ((old, new), n) in inputs.counters.transitions.iter() {
        f.sample(&[("old", old.name()), ("new", new.name())], n);
    }

    let mut f = out.family(
        "tcpstate_connections_opened_total",
        Kind::Counter,
        "Connections opened: active (connect(), CLOSE->SYN_SENT) or passive (a listener's child, LISTEN->SYN_RECV).",
    );
    for open in OPEN_KINDS {
        let n = inputs.counters.opened.get(open.name()).copied();
        f.sample(&[("open", open.name())], n.unwrap_or(0));
    }

    let mut f = out.family(
        "tcpstate_connections_closed_total",
        Kind::Counter,
        "Connections closed (listeners left out), by how they ended: normal, reset, refused, timeout (connect()), unknown.",
    );
    for end in END_KINDS {
        let n = inputs.counters.closed.get(end.name()).copied();
        f.sample(&[("end", end.name())], n.unwrap_or(0));
    }

    out.family(
        "tcpstate_time_wait_overflow_total",
        Kind::Counter,
        "Active closes that got no TIME_WAIT socket because tcp_max_tw_buckets was reached (the kernel's TCPTimeWaitOverflow).",
    )
    .sample(&[], model.time_wait().counters().skipped_overflow);

    let mut f = out.family(
        "tcpstate_lost_events_total",
        Kind::Counter,
        "Events the kernel could not deliver: transitions (ring buffer full, or the BPF program skipped), accept() owners, RSTs.",
    );
    let source = inputs.source;
    f.sample(&[("event", "transition")], source.lost);
    f.sample(&[("event", "accept")], source.lost_owners);
    f.sample(&[("event", "reset")], source.lost_resets);
    // Only where the source can tell (live): a recording keeps the total.
    if let Some(causes) = source.lost_causes {
        let mut f = out.family(
            "tcpstate_lost_transitions_total",
            Kind::Counter,
            "Transitions lost, by cause: ring_full (a larger --ring-size helps), ring_busy (the ring buffer's lock gave up, Linux 6.16+), skipped (the kernel ran no program for it).",
        );
        f.sample(&[("cause", "ring_full")], causes.ring_full);
        f.sample(&[("cause", "ring_busy")], causes.ring_busy);
        f.sample(&[("cause", "skipped")], causes.skipped);
    }

    let mut f = out.family(
        "tcpstate_events_total",
        Kind::Counter,
        "Events delivered by the kernel: transitions, accept() owners, RSTs.",
    );
    f.sample(&[("event", "transition")], source.delivered);
    f.sample(&[("event", "accept")], source.owners);
    f.sample(&[("event", "reset")], source.resets);

    out.family(
        "tcpstate_connections_evicted_total",
        Kind::Counter,
        "Live connections dropped from the model's full table (its memory bound).",
    )
    .sample(&[], model.stats().evicted);

    out.family(
        "tcpstate_build_info",
        Kind::Gauge,
        "The tracer's version (always 1).",
    )
    .sample(&[("version", env!("CARGO_PKG_VERSION"))], 1u64);
}

/// The standard `process_*` metrics of the tracer itself, as client
/// libraries name them; a value that could not be read is left out.
fn write_process(out: &mut Exposition, process: &SelfStats) {
    // Sizes and counts as f64: exact below 2^53, far above any of them.
    let as_f64 = |v: Option<u64>| v.map(|v| v as f64);
    let families = [
        (
            "process_cpu_seconds_total",
            Kind::Counter,
            "Total user and system CPU time spent in seconds.",
            process.cpu_seconds,
        ),
        (
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size in bytes.",
            as_f64(process.resident_bytes),
        ),
        (
            "process_virtual_memory_bytes",
            Kind::Gauge,
            "Virtual memory size in bytes.",
            as_f64(process.virtual_bytes),
        ),
        (
            "process_start_time_seconds",
            Kind::Gauge,
            "Start time of the process since unix epoch in seconds.",
            process.start_time_seconds,
        ),
        (
            "process_open_fds",
            Kind::Gauge,
            "Number of open file descriptors.",
            as_f64(process.open_fds),
        ),
    ];
    for (name, kind, help, value) in families {
        if let Some(value) = value {
            out.family(name, kind, help).sample(&[], value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::ModelConfig,
        testkit::{self, ep, task, INIT_NETNS},
        wire::{Task, Transition},
    };
    use std::collections::{BTreeSet, HashMap};

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    fn transition(
        ts: u64,
        skaddr: u64,
        local: &str,
        remote: &str,
        old: TcpState,
        new: TcpState,
        task: Task,
    ) -> Transition {
        Transition {
            local: ep(local),
            remote: ep(remote),
            task,
            netns: INIT_NETNS,
            ..testkit::transition(ts, skaddr, old, new)
        }
    }

    /// A model and counters fed with `transitions`, as the pipeline does.
    fn feed(transitions: &[Transition]) -> (Model, Counters) {
        let mut model = Model::new(ModelConfig::default());
        let mut counters = Counters::default();
        for t in transitions {
            let ended = model.apply(&Item::Transition(*t));
            counters.count(&Item::Transition(*t), &ended);
        }
        (model, counters)
    }

    fn rendered(model: &Model, counters: &Counters, now_ns: u64, limits: Limits) -> String {
        render(&Inputs {
            model,
            counters,
            source: SourceStats {
                delivered: 7,
                lost: 3,
                lost_causes: Some(crate::source::LostCauses {
                    ring_full: 1,
                    ring_busy: 0,
                    skipped: 2,
                }),
                lost_owners: 2,
                lost_resets: 1,
                ..SourceStats::default()
            },
            now_ns,
            limits,
            pod_of: &|_| None,
            process: SelfStats {
                cpu_seconds: Some(1.25),
                resident_bytes: Some(4096),
                virtual_bytes: None,
                start_time_seconds: Some(1_700_000_000.5),
                open_fds: Some(9),
            },
        })
    }

    /// A client of `tgid` connects from `port` to 10.0.0.1:80 and closes
    /// first: the connection leaves a TIME_WAIT socket.
    fn client_closes(ts: u64, tgid: u32, comm: &str, port: u16, sk: u64) -> Vec<Transition> {
        use TcpState::*;
        let local = format!("10.0.0.2:{port}");
        let owner = task(tgid, comm);
        let irq = task(0, "swapper/0");
        vec![
            transition(ts, sk, "10.0.0.2:0", "10.0.0.1:80", Close, SynSent, owner),
            transition(ts + 1, sk, &local, "10.0.0.1:80", SynSent, Established, irq),
            transition(
                ts + 2,
                sk,
                &local,
                "10.0.0.1:80",
                Established,
                FinWait1,
                owner,
            ),
            transition(ts + 3, sk, &local, "10.0.0.1:80", FinWait1, FinWait2, irq),
            transition(ts + 4, sk, &local, "10.0.0.1:80", FinWait2, Close, irq),
        ]
    }

    /// A client of `tgid` that connects to `remote` and stays ESTABLISHED.
    fn established(
        ts: u64,
        tgid: u32,
        comm: &str,
        port: u16,
        sk: u64,
        remote: &str,
    ) -> [Transition; 2] {
        use TcpState::*;
        let local = format!("10.0.0.2:{port}");
        let owner = task(tgid, comm);
        [
            transition(ts, sk, "10.0.0.2:0", remote, Close, SynSent, owner),
            transition(ts + 1, sk, &local, remote, SynSent, Established, owner),
        ]
    }

    /// Samples by name and label set (labels as written).
    fn samples(text: &str) -> HashMap<(String, String), String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("sample");
                let (name, labels) = match series.split_once('{') {
                    Some((name, labels)) => (name, labels.trim_end_matches('}')),
                    None => (series, ""),
                };
                ((name.to_string(), labels.to_string()), value.to_string())
            })
            .collect()
    }

    fn value(text: &str, name: &str, labels: &str) -> String {
        samples(text)
            .get(&(name.to_string(), labels.to_string()))
            .cloned()
            .unwrap_or_else(|| panic!("no {name}{{{labels}}} in\n{text}"))
    }

    /// Checks the shape of the text: every family's HELP then TYPE once,
    /// before its samples, which are contiguous; names and label names
    /// valid; counters end in `_total`; values parse.
    fn check_format(text: &str) -> BTreeSet<String> {
        let valid_name = |n: &str| {
            !n.is_empty()
                && !n.starts_with(|c: char| c.is_ascii_digit())
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        };
        let mut declared = BTreeSet::new();
        let mut current: Option<String> = None;
        let mut lines = text.lines().peekable();
        assert!(text.ends_with('\n'), "ends with a line feed");
        while let Some(line) = lines.next() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(valid_name(&name), "{name}");
                assert!(declared.insert(name.clone()), "{name} declared twice");
                let ty = lines.next().expect("TYPE after HELP");
                let kind = ty
                    .strip_prefix(&format!("# TYPE {name} "))
                    .unwrap_or_else(|| panic!("TYPE of {name} right after its HELP: {ty}"));
                assert!(kind == "counter" || kind == "gauge", "{ty}");
                assert_eq!(
                    kind == "counter",
                    name.ends_with("_total"),
                    "{name} is a {kind}"
                );
                current = Some(name);
                continue;
            }
            assert!(!line.starts_with('#'), "stray comment: {line}");
            let (series, value) = line.rsplit_once(' ').expect("name and value");
            assert!(
                value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value),
                "{line}"
            );
            let name = series.split('{').next().unwrap();
            assert_eq!(Some(name), current.as_deref(), "{line} outside its family");
            if let Some(labels) = series.strip_prefix(name).and_then(|l| l.strip_prefix('{')) {
                let labels = labels.strip_suffix('}').expect("closing brace");
                for label in split_labels(labels) {
                    let (lname, lvalue) = label.split_once('=').expect("name=value");
                    assert!(valid_name(lname) && !lname.starts_with("__"), "{line}");
                    assert!(lvalue.starts_with('"') && lvalue.ends_with('"'), "{line}");
                }
            }
        }
        declared
    }

    /// Splits `a="x",b="y, \"z\""` at the commas between labels.
    fn split_labels(labels: &str) -> Vec<String> {
        let mut out = vec![String::new()];
        let (mut quoted, mut escaped) = (false, false);
        for c in labels.chars() {
            if !escaped && !quoted && c == ',' {
                out.push(String::new());
                continue;
            }
            if escaped {
                assert!(matches!(c, '\\' | '"' | 'n'), "bad escape \\{c}");
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = !quoted;
            }
            out.last_mut().unwrap().push(c);
        }
        assert!(!quoted && !escaped);
        out
    }

    #[test]
    fn families_are_declared_once_with_valid_names() {
        let mut transitions = client_closes(S, 100, "curl", 40000, 0x100);
        transitions.extend(established(
            2 * S,
            200,
            "app",
            40001,
            0x200,
            "10.0.0.9:5432",
        ));
        let (model, counters) = feed(&transitions);
        let text = rendered(&model, &counters, 3 * S, Limits::default());
        let declared = check_format(&text);
        for family in [
            "tcpstate_sockets",
            "tcpstate_process_sockets",
            "tcpstate_transitions_total",
            "tcpstate_time_wait_sockets",
            "tcpstate_time_wait_destination_sockets",
            "tcpstate_close_wait_suspects",
            "tcpstate_close_wait_accept_queue_suspects",
            "tcpstate_connections_opened_total",
            "tcpstate_connections_closed_total",
            "tcpstate_lost_events_total",
            "tcpstate_time_wait_overflow_total",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
            "process_open_fds",
        ] {
            assert!(declared.contains(family), "{family} missing:\n{text}");
        }
        // Not readable: left out rather than made up.
        assert!(!declared.contains("process_virtual_memory_bytes"));
    }

    #[test]
    fn values_come_from_the_model_and_the_counters() {
        let mut transitions = client_closes(S, 100, "curl", 40000, 0x100);
        transitions.extend(client_closes(S + MS, 100, "curl", 40002, 0x300));
        transitions.extend(established(
            2 * S,
            200,
            "app",
            40001,
            0x200,
            "10.0.0.9:5432",
        ));
        let (model, counters) = feed(&transitions);
        let text = rendered(&model, &counters, 3 * S, Limits::default());
        assert_eq!(
            value(&text, "tcpstate_sockets", r#"state="TIME_WAIT""#),
            "2"
        );
        assert_eq!(
            value(&text, "tcpstate_sockets", r#"state="ESTABLISHED""#),
            "1"
        );
        assert_eq!(
            value(&text, "tcpstate_sockets", r#"state="CLOSE_WAIT""#),
            "0"
        );
        assert_eq!(
            value(
                &text,
                "tcpstate_process_sockets",
                r#"pid="100",comm="curl",state="TIME_WAIT""#
            ),
            "2"
        );
        assert_eq!(
            value(
                &text,
                "tcpstate_process_sockets",
                r#"pid="200",comm="app",state="ESTABLISHED""#
            ),
            "1"
        );
        assert_eq!(
            value(
                &text,
                "tcpstate_transitions_total",
                r#"old="ESTABLISHED",new="FIN_WAIT1""#
            ),
            "2"
        );
        assert_eq!(
            value(
                &text,
                "tcpstate_time_wait_sockets",
                r#"closed_first="local""#
            ),
            "2"
        );
        assert_eq!(
            value(
                &text,
                "tcpstate_time_wait_sockets",
                r#"closed_first="both""#
            ),
            "0"
        );
        assert_eq!(
            value(
                &text,
                "tcpstate_time_wait_destination_sockets",
                r#"remote="10.0.0.1:80""#
            ),
            "2"
        );
        assert_eq!(
            value(
                &text,
                "tcpstate_connections_opened_total",
                r#"open="active""#
            ),
            "3"
        );
        assert_eq!(
            value(
                &text,
                "tcpstate_connections_opened_total",
                r#"open="passive""#
            ),
            "0"
        );
        assert_eq!(
            value(
                &text,
                "tcpstate_connections_closed_total",
                r#"end="normal""#
            ),
            "2"
        );
        assert_eq!(
            value(&text, "tcpstate_lost_events_total", r#"event="transition""#),
            "3"
        );
        assert_eq!(
            value(&text, "tcpstate_lost_events_total", r#"event="accept""#),
            "2"
        );
        for (cause, n) in [("ring_full", "1"), ("ring_busy", "0"), ("skipped", "2")] {
            assert_eq!(
                value(
                    &text,
                    "tcpstate_lost_transitions_total",
                    &format!(r#"cause="{cause}""#)
                ),
                n
            );
        }
        assert_eq!(value(&text, "tcpstate_time_wait_overflow_total", ""), "0");
        assert_eq!(value(&text, "process_cpu_seconds_total", ""), "1.25");
        assert_eq!(value(&text, "process_resident_memory_bytes", ""), "4096");
        assert_eq!(
            value(&text, "process_start_time_seconds", ""),
            "1700000000.5"
        );
        assert_eq!(
            value(&text, "tcpstate_close_wait_threshold_seconds", ""),
            "30"
        );
    }

    #[test]
    fn processes_and_destinations_are_bounded_and_the_rest_summed() {
        let mut transitions = Vec::new();
        // Process 1000 + i holds i + 1 sockets, each to its own destination.
        let mut sk = 0x1000;
        let mut port = 30000;
        for i in 0..30u32 {
            for _ in 0..=i {
                let remote = format!("10.1.0.{}:443", i + 1);
                let ts = u64::from(port) * MS;
                transitions.extend(established(ts, 1000 + i, "worker", port, sk, &remote));
                sk += 1;
                port += 1;
            }
        }
        // 25 destinations in TIME_WAIT, destination i with i + 1 sockets.
        for i in 0..25u16 {
            for j in 0..=i {
                let local = format!("10.0.0.2:{}", 50000 + i * 30 + j);
                let remote = format!("10.2.0.{}:80", i + 1);
                let owner = task(7, "closer");
                let ts = 10 * S + u64::from(i * 30 + j) * MS;
                use TcpState::*;
                transitions.extend([
                    transition(ts, sk, "10.0.0.2:0", &remote, Close, SynSent, owner),
                    transition(ts + 1, sk, &local, &remote, SynSent, Established, owner),
                    transition(ts + 2, sk, &local, &remote, Established, FinWait1, owner),
                    transition(ts + 3, sk, &local, &remote, FinWait1, FinWait2, owner),
                    transition(ts + 4, sk, &local, &remote, FinWait2, Close, owner),
                ]);
                sk += 1;
            }
        }
        let (model, counters) = feed(&transitions);
        let limits = Limits {
            top_processes: 5,
            top_destinations: 3,
        };
        let text = rendered(&model, &counters, 20 * S, limits);
        check_format(&text);
        let all = samples(&text);
        let process_series: Vec<_> = all
            .keys()
            .filter(|(name, _)| name == "tcpstate_process_sockets")
            .collect();
        // The 5 largest workers and the closer (325 TIME_WAIT), one state
        // each; then "other".
        assert_eq!(process_series.len(), 5 + 1, "{process_series:#?}");
        assert_eq!(
            value(
                &text,
                "tcpstate_process_sockets",
                r#"pid="7",comm="closer",state="TIME_WAIT""#
            ),
            "325"
        );
        for tgid in 1026..1030 {
            let labels = format!(r#"pid="{tgid}",comm="worker",state="ESTABLISHED""#);
            let n = (tgid - 1000 + 1).to_string();
            assert_eq!(value(&text, "tcpstate_process_sockets", &labels), n);
        }
        // 1 + 2 + ... + 26 sockets of the 26 smaller workers.
        assert_eq!(
            value(
                &text,
                "tcpstate_process_sockets",
                r#"pid="other",comm="other",state="ESTABLISHED""#
            ),
            (26 * 27 / 2).to_string()
        );
        let destinations: Vec<_> = all
            .iter()
            .filter(|((name, _), _)| name == "tcpstate_time_wait_destination_sockets")
            .collect();
        assert_eq!(destinations.len(), 3 + 1, "{destinations:#?}");
        assert_eq!(
            value(
                &text,
                "tcpstate_time_wait_destination_sockets",
                r#"remote="10.2.0.25:80""#
            ),
            "25"
        );
        assert_eq!(
            value(
                &text,
                "tcpstate_time_wait_destination_sockets",
                r#"remote="other""#
            ),
            (22 * 23 / 2).to_string()
        );
    }

    #[test]
    fn failed_calls_and_handshakes_are_counted_by_call_and_errno() {
        use crate::wire::{CallFailure, FailedCall};
        let mut transitions = client_closes(S, 100, "curl", 40000, 0x100);
        // A connect() refused after its SYN went out (port chosen).
        transitions.push(Transition {
            local: ep("10.0.0.1:40005"),
            remote: ep("10.0.0.9:80"),
            ..testkit::transition(2 * S, 0x500, TcpState::Close, TcpState::SynSent)
        });
        transitions.push(Transition {
            local: ep("10.0.0.1:40005"),
            remote: ep("10.0.0.9:80"),
            ..testkit::transition(2 * S + MS, 0x500, TcpState::SynSent, TcpState::Close)
        });
        let (model, mut counters) = feed(&transitions);
        let failure = CallFailure {
            ts_boot_ns: 3 * S,
            call: FailedCall::Connect,
            errno: 99,
            task: testkit::task(7, "client"),
            cgroup_id: 0,
            netns: INIT_NETNS,
            skaddr: 0x600,
            family: crate::tcp::Family::Ipv4,
            addr: ep("10.0.0.9:80"),
        };
        for errno in [99, 99, 200] {
            counters.count(&Item::CallFailed(CallFailure { errno, ..failure }), &[]);
        }
        let text = rendered(&model, &counters, 4 * S, Limits::default());
        check_format(&text);
        for line in [
            "tcpstate_connect_failures_total{call=\"connect\",errno=\"EADDRNOTAVAIL\"} 2",
            "tcpstate_connect_failures_total{call=\"connect\",errno=\"other\"} 1",
            "tcpstate_connect_failures_total{call=\"handshake\",errno=\"ECONNREFUSED\"} 1",
            "tcpstate_connect_failures_lost_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("line\nfeed"), r"line\nfeed");
        assert_eq!(escape_help("a\\b\nc"), r"a\\b\nc");
        let comm = "we\"ird\\\nname";
        let (model, counters) = feed(&established(S, 42, comm, 40000, 0x42, "10.0.0.1:80"));
        let text = rendered(&model, &counters, 2 * S, Limits::default());
        check_format(&text);
        assert_eq!(
            value(
                &text,
                "tcpstate_process_sockets",
                r#"pid="42",comm="we\"ird\\\nname",state="ESTABLISHED""#
            ),
            "1"
        );
        assert!(text.lines().all(|l| !l.contains("ird\\\"")));
    }

    #[test]
    fn close_wait_suspects_past_the_threshold() {
        use TcpState::*;
        let owner = task(300, "leaky");
        let irq = task(0, "swapper/0");
        let (l, r) = ("10.0.0.2:40000", "10.0.0.1:80");
        let (model, counters) = feed(&[
            transition(S, 0x500, "10.0.0.2:0", r, Close, SynSent, owner),
            transition(S + 1, 0x500, l, r, SynSent, Established, irq),
            transition(S + 2, 0x500, l, r, Established, CloseWait, irq),
        ]);
        let young = rendered(&model, &counters, 10 * S, Limits::default());
        assert!(!young.contains("tcpstate_close_wait_suspects{"), "{young}");
        let old = rendered(&model, &counters, 40 * S, Limits::default());
        assert_eq!(
            value(
                &old,
                "tcpstate_close_wait_suspects",
                r#"pid="300",comm="leaky""#
            ),
            "1"
        );
    }

    #[test]
    fn owners_in_a_kubernetes_pod_get_namespace_and_pod_labels() {
        use TcpState::*;
        let irq = task(0, "swapper/0");
        let (l, r) = ("10.0.0.2:40000", "10.0.0.1:80");
        let mut in_pod = transition(
            S,
            0x500,
            "10.0.0.2:0",
            r,
            Close,
            SynSent,
            task(300, "leaky"),
        );
        in_pod.cgroup_id = 77;
        let mut elsewhere =
            transition(S, 0x600, "10.0.0.2:0", r, Close, SynSent, task(400, "host"));
        elsewhere.cgroup_id = 78;
        let (model, counters) = feed(&[
            in_pod,
            transition(S + 1, 0x500, l, r, SynSent, Established, irq),
            transition(S + 2, 0x500, l, r, Established, CloseWait, irq),
            elsewhere,
        ]);
        let pod_of = |cgroup: u64| {
            (cgroup == 77).then(|| Pod {
                namespace: "payments".into(),
                name: "api-0".into(),
            })
        };
        let text = render(&Inputs {
            model: &model,
            counters: &counters,
            source: SourceStats::default(),
            now_ns: 40 * S,
            limits: Limits::default(),
            process: SelfStats::default(),
            pod_of: &pod_of,
        });
        assert_eq!(
            value(
                &text,
                "tcpstate_process_sockets",
                r#"pid="300",comm="leaky",namespace="payments",pod="api-0",state="CLOSE_WAIT""#
            ),
            "1"
        );
        assert_eq!(
            value(
                &text,
                "tcpstate_close_wait_suspects",
                r#"pid="300",comm="leaky",namespace="payments",pod="api-0""#
            ),
            "1"
        );
        // Not in a pod: no such labels.
        assert_eq!(
            value(
                &text,
                "tcpstate_process_sockets",
                r#"pid="400",comm="host",state="SYN_SENT""#
            ),
            "1"
        );
    }

    #[test]
    fn counters_count_opens_closes_and_pairs() {
        use TcpState::*;
        let irq = task(0, "swapper/0");
        let mut transitions = client_closes(S, 100, "curl", 40000, 0x100);
        // A listener's child, reset.
        transitions.extend([
            transition(
                2 * S,
                0x900,
                "10.0.0.2:80",
                "0.0.0.0:0",
                Close,
                Listen,
                task(5, "srv"),
            ),
            transition(
                2 * S + 1,
                0x901,
                "10.0.0.2:80",
                "10.0.0.7:5555",
                Listen,
                SynRecv,
                irq,
            ),
            transition(
                2 * S + 2,
                0x901,
                "10.0.0.2:80",
                "10.0.0.7:5555",
                SynRecv,
                Established,
                irq,
            ),
            transition(
                2 * S + 3,
                0x901,
                "10.0.0.2:80",
                "10.0.0.7:5555",
                Established,
                Close,
                irq,
            ),
            transition(
                2 * S + 4,
                0x900,
                "10.0.0.2:80",
                "0.0.0.0:0",
                Listen,
                Close,
                task(5, "srv"),
            ),
        ]);
        let (_, counters) = feed(&transitions);
        assert_eq!(counters.opened.get("active"), Some(&1));
        assert_eq!(counters.opened.get("passive"), Some(&1));
        assert_eq!(counters.closed.get("normal"), Some(&1));
        assert_eq!(counters.closed.get("reset"), Some(&1));
        assert_eq!(
            counters.closed.values().sum::<u64>(),
            2,
            "listener left out"
        );
        assert_eq!(counters.transitions.get(Established, Close), Some(1));
        assert_eq!(counters.transitions.iter().map(|(_, n)| n).sum::<u64>(), 10);
    }
}

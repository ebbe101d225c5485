//! The `stat` view: sockets per state now, and per process, local port,
//! remote address; TIME_WAIT by who closed first and per destination.
use crate::addr::Endpoint;
use crate::model::{ClosedFirst, Model, StateRow};
use crate::tcp::TcpState;
use serde::{ser::SerializeMap, Serialize, Serializer};
use std::{collections::BTreeMap, fmt::Write as _, sync::LazyLock};

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ProcessRow {
    pub tgid: Option<u32>,
    pub comm: Option<String>,
    #[serde(flatten)]
    pub cgroup: crate::source::cgroup::CgroupView,
    pub states: BTreeMap<&'static str, usize>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DestinationRow {
    /// Shown as text (`1.2.3.4:80`, `[::1]:80`); kept as the endpoint, not
    /// a string allocated for each of tens of thousands of rows per report
    /// (equal endpoints print equal, and only they do).
    #[serde(serialize_with = "as_text")]
    pub remote: Endpoint,
    pub time_wait: usize,
    /// Share of the local port range (ip_local_port_range) these hold.
    pub port_range_share: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StatView {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub by_state: BTreeMap<&'static str, usize>,
    pub time_wait_by_closed_first: BTreeMap<&'static str, usize>,
    /// Closes that got no TIME_WAIT because tcp_max_tw_buckets was reached.
    pub time_wait_overflow: u64,
    pub by_process: Vec<ProcessRow>,
    /// The model's rows, moved in (not copied for each of thousands of
    /// ports), shown by state name.
    #[serde(serialize_with = "by_state_name")]
    pub by_local_port: BTreeMap<u16, StateRow>,
    pub by_remote_ip: BTreeMap<String, StateNames>,
    pub time_wait_destinations: Vec<DestinationRow>,
    pub lost_events: u64,
    pub uncertain_connections: usize,
    /// Failed connect()/bind() calls and handshakes since the start, most
    /// first (issue 11); filled by the commands that follow them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub call_failures: Vec<crate::views::ports::FailureRow>,
}

/// Sockets per state, shown as a map from state name to count (in name
/// order, states with none left out), as the other counts of the report;
/// kept as the model's flat row, not as a map per port.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StateNames(pub StateRow);

/// The states in name order.
static BY_NAME: LazyLock<Vec<TcpState>> = LazyLock::new(|| {
    let mut states = TcpState::ALL.to_vec();
    states.sort_by_key(|s| s.name());
    states
});

impl StateNames {
    /// `(name, count)` of the states with sockets, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, usize)> + '_ {
        BY_NAME
            .iter()
            .filter_map(|s| self.0.get(*s).map(|n| (s.name(), n)))
    }
}

impl Serialize for StateNames {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.iter().count()))?;
        for (name, n) in self.iter() {
            map.serialize_entry(name, &n)?;
        }
        map.end()
    }
}

fn by_state_name<S: Serializer>(
    rows: &BTreeMap<u16, StateRow>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(rows.iter().map(|(port, row)| (port, StateNames(*row))))
}

fn as_text<S: Serializer>(remote: &Endpoint, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(remote)
}

fn names(tally: &BTreeMap<TcpState, usize>) -> BTreeMap<&'static str, usize> {
    tally.iter().map(|(s, n)| (s.name(), *n)).collect()
}

impl crate::views::Report for StatView {
    fn table(&self) -> String {
        StatView::table(self)
    }
}

impl StatView {
    /// `cgroup` gives the view of an owner's cgroup id (see
    /// [`CgroupNames::view`](crate::source::cgroup::CgroupNames::view)).
    pub fn new(
        model: &Model,
        port_range: (u16, u16),
        lost_events: u64,
        mut cgroup: impl FnMut(u64) -> crate::source::cgroup::CgroupView,
    ) -> Self {
        let counts = model.stat();
        StatView {
            kind: "stat",
            by_state: names(&counts.by_state),
            time_wait_by_closed_first: counts
                .time_wait_by_closed_first
                .iter()
                .map(|(c, n)| (c.name(), *n))
                .collect(),
            time_wait_overflow: model.time_wait().counters().skipped_overflow,
            by_process: counts
                .by_process
                .iter()
                .map(|p| ProcessRow {
                    tgid: p.tgid,
                    comm: p.comm.map(|c| c.as_string()),
                    cgroup: cgroup(p.cgroup_id),
                    states: names(&p.states),
                })
                .collect(),
            by_local_port: counts.by_local_port,
            by_remote_ip: counts
                .by_remote_ip
                .iter()
                .map(|(ip, row)| (ip.to_string(), StateNames(*row)))
                .collect(),
            time_wait_destinations: model
                .time_wait()
                .destinations(port_range)
                .into_iter()
                .map(|d| DestinationRow {
                    remote: d.remote,
                    time_wait: d.local_ports,
                    port_range_share: d.share,
                })
                .collect(),
            lost_events,
            uncertain_connections: model.uncertain_connections(),
            call_failures: Vec::new(),
        }
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let total: usize = self.by_state.values().sum();
        let _ = writeln!(
            out,
            "{total} TCP sockets ({} lost events, {} connections uncertain)",
            self.lost_events, self.uncertain_connections
        );
        if !self.call_failures.is_empty() {
            let total: u64 = self.call_failures.iter().map(|f| f.count).sum();
            let top = &self.call_failures[0];
            let _ = writeln!(
                out,
                "  {total} failed connect()/bind() calls and handshakes; most: {} × {} {} {} (see `tcpstate ports`)",
                top.count, top.call, top.address, top.errno_name
            );
        }
        for (state, n) in &self.by_state {
            let _ = write!(out, "  {state:<12} {n:>8}");
            if *state == "TIME_WAIT" {
                let local = self
                    .time_wait_by_closed_first
                    .get(ClosedFirst::Local.name())
                    .unwrap_or(&0);
                let both = self
                    .time_wait_by_closed_first
                    .get(ClosedFirst::Both.name())
                    .unwrap_or(&0);
                let _ = write!(out, "   (we closed first: {local}, simultaneous: {both})");
            }
            out.push('\n');
        }
        if self.time_wait_overflow > 0 {
            let _ = writeln!(
                out,
                "  {} closes skipped TIME_WAIT: tcp_max_tw_buckets reached",
                self.time_wait_overflow
            );
        }
        let _ = writeln!(out, "\nper process:");
        for p in &self.by_process {
            let states: Vec<String> = p.states.iter().map(|(s, n)| format!("{s}={n}")).collect();
            let _ = writeln!(
                out,
                "  {:>8} {:<16} {}",
                p.tgid.map_or("?".into(), |t| t.to_string()),
                p.comm.as_deref().unwrap_or("(owner unknown)"),
                states.join(" ")
            );
        }
        if !self.time_wait_destinations.is_empty() {
            let _ = writeln!(out, "\nTIME_WAIT per destination:");
            for d in self.time_wait_destinations.iter().take(10) {
                let _ = writeln!(
                    out,
                    "  {:<28} {:>8}  {:.1}% of the local port range",
                    d.remote,
                    d.time_wait,
                    d.port_range_share * 100.0
                );
            }
        }
        out
    }
}

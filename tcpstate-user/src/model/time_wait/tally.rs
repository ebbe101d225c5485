//! Running counts of the TIME_WAIT table, kept as entries come and go, so
//! that the views' once-a-second reports (`stat`, `serve`) need not walk
//! hundreds of thousands of entries (issue 15: that walk was most of what
//! `stat` cost per transition under churn).
//!
//! Every count here can be recomputed from the entries; [`TimeWaitTally::of`]
//! does exactly that and the table's invariant check compares the two.
use super::table::TimeWaitEntry;
use crate::{addr::Endpoint, model::connection::ClosedFirst, wire::Comm};
use foldhash::HashMap;
use std::net::IpAddr;

/// The ephemeral port range the per-destination in-range counts are kept
/// for: Linux's default `net.ipv4.ip_local_port_range`. Another range is
/// answered by counting the destination's ports (exact, slower).
pub const DEFAULT_PORT_RANGE: (u16, u16) = (32768, 60999);

/// How a process's entries name it: its comm and cgroup (as the first
/// entry of the process in expiry order does in a full walk).
pub type OwnerName = (Option<Comm>, u64);

/// The entries of one process, per way they name it (one, unless the
/// process changed its comm or cgroup).
#[derive(Clone, Debug, Default, Eq)]
pub struct ProcessTally {
    pub count: usize,
    /// In no particular order.
    pub names: Vec<(OwnerName, usize)>,
}

/// Equal when the same names have the same counts, in any order.
impl PartialEq for ProcessTally {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count
            && self.names.len() == other.names.len()
            && self.names.iter().all(|n| other.names.contains(n))
    }
}

/// The local ports held towards one remote endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteTally {
    /// Entries towards it (several local addresses or namespaces may hold
    /// the same local port).
    pub entries: usize,
    /// Entries per local port.
    pub ports: HashMap<u16, usize>,
    /// Distinct local ports inside [`DEFAULT_PORT_RANGE`].
    pub in_default_range: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimeWaitTally {
    pub total: usize,
    pub by_closed_first: HashMap<ClosedFirst, usize>,
    /// By owner tgid (None: owner unknown).
    pub by_process: HashMap<Option<u32>, ProcessTally>,
    pub by_local_port: HashMap<u16, usize>,
    pub by_remote_ip: HashMap<IpAddr, usize>,
    pub by_remote: HashMap<Endpoint, RemoteTally>,
}

fn in_default_range(port: u16) -> bool {
    (DEFAULT_PORT_RANGE.0..=DEFAULT_PORT_RANGE.1).contains(&port)
}

/// Adds `delta` (+1 or -1) to a count, dropping it at zero so that the
/// maps hold only what is in the table.
fn bump<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K, add: bool) {
    if add {
        *map.entry(key).or_insert(0) += 1;
    } else if let Some(n) = map.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            map.remove(&key);
        }
    }
}

impl TimeWaitTally {
    /// The counts of `entries`, from scratch.
    pub fn of<'a>(entries: impl Iterator<Item = &'a TimeWaitEntry>) -> Self {
        let mut tally = TimeWaitTally::default();
        for e in entries {
            tally.add(e);
        }
        tally
    }

    pub fn add(&mut self, e: &TimeWaitEntry) {
        self.change(e, true);
    }

    /// Takes out an entry added before (and only such).
    pub fn remove(&mut self, e: &TimeWaitEntry) {
        self.change(e, false);
    }

    fn change(&mut self, e: &TimeWaitEntry, add: bool) {
        if add {
            self.total += 1;
        } else {
            self.total -= 1;
        }
        bump(&mut self.by_closed_first, e.closed_first, add);
        bump(&mut self.by_local_port, e.flow.local.port, add);
        bump(&mut self.by_remote_ip, e.flow.remote.ip, add);

        let tgid = e.owner.map(|o| o.tgid);
        let name: OwnerName = (e.owner.map(|o| o.comm), e.owner.map_or(0, |o| o.cgroup_id));
        let process = self.by_process.entry(tgid).or_default();
        let at = process.names.iter().position(|(n, _)| *n == name);
        if add {
            process.count += 1;
            match at {
                Some(i) => process.names[i].1 += 1,
                None => process.names.push((name, 1)),
            }
        } else {
            process.count -= 1;
            if let Some(i) = at {
                process.names[i].1 -= 1;
                if process.names[i].1 == 0 {
                    process.names.swap_remove(i);
                }
            }
            if process.count == 0 {
                self.by_process.remove(&tgid);
            }
        }

        let remote = self.by_remote.entry(e.flow.remote).or_default();
        let port = e.flow.local.port;
        let before = remote.ports.contains_key(&port);
        if add {
            remote.entries += 1;
        } else {
            remote.entries -= 1;
        }
        bump(&mut remote.ports, port, add);
        let after = remote.ports.contains_key(&port);
        if before != after && in_default_range(port) {
            if after {
                remote.in_default_range += 1;
            } else {
                remote.in_default_range -= 1;
            }
        }
        if remote.entries == 0 {
            self.by_remote.remove(&e.flow.remote);
        }
    }
}

impl RemoteTally {
    /// Distinct local ports inside `(low, high)` (inclusive).
    pub fn in_range(&self, low: u16, high: u16) -> usize {
        if (low, high) == DEFAULT_PORT_RANGE {
            return self.in_default_range;
        }
        self.ports
            .keys()
            .filter(|p| (low..=high).contains(*p))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        connection::FlowKey,
        owner::{Owner, OwnerHow},
        time_wait::ExpiryBasis,
    };
    use crate::tcp::Family;
    use std::net::Ipv4Addr;

    fn entry(local: (u8, u16), remote_port: u16, owner: Option<(u32, &str)>) -> TimeWaitEntry {
        let ip = |last| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
        TimeWaitEntry {
            flow: FlowKey {
                netns: 1,
                local: Endpoint::new(ip(local.0), local.1),
                remote: Endpoint::new(ip(9), remote_port),
            },
            family: Family::Ipv4,
            owner: owner.map(|(tgid, comm)| Owner {
                tgid,
                pid: tgid,
                comm: Comm::from_str_lossy(comm),
                how: OwnerHow::Connect,
                cgroup_id: 7,
            }),
            closed_first: ClosedFirst::Local,
            started_ns: Some(0),
            expires_ns: 1,
            basis: ExpiryBasis::TimeWaitLen,
            connection_id: None,
            inferred: false,
        }
    }

    #[test]
    fn adding_then_removing_everything_leaves_nothing() {
        let entries = [
            entry((1, 40_000), 80, Some((10, "curl"))),
            entry((2, 40_000), 80, Some((10, "curl2"))),
            entry((1, 40_001), 80, None),
            entry((1, 1_000), 443, Some((11, "nginx"))),
        ];
        let mut t = TimeWaitTally::default();
        for e in &entries {
            t.add(e);
        }
        assert_eq!(t, TimeWaitTally::of(entries.iter()));
        assert_eq!(t.total, 4);
        let to_80 = &t.by_remote[&entries[0].flow.remote];
        // Two local addresses hold port 40000: two entries, one port.
        assert_eq!((to_80.entries, to_80.ports.len()), (3, 2));
        assert_eq!(to_80.in_default_range, 2);
        assert_eq!(to_80.in_range(40_001, 40_001), 1);
        assert_eq!(t.by_process[&Some(10)].names.len(), 2);
        // Out of order: after each removal, the counts of what is left.
        let order = [2, 0, 3, 1];
        for (k, i) in order.iter().enumerate() {
            t.remove(&entries[*i]);
            let left: Vec<TimeWaitEntry> = (0..entries.len())
                .filter(|j| !order[..=k].contains(j))
                .map(|j| entries[j])
                .collect();
            assert_eq!(t, TimeWaitTally::of(left.iter()));
        }
        assert_eq!(t, TimeWaitTally::default());
        assert!(t.by_local_port.is_empty() && t.by_remote.is_empty());
        assert!(t.by_process.is_empty() && t.by_closed_first.is_empty());
    }
}

//! How owners are shown: always with how they were determined.
use crate::model::Owner;
use serde::Serialize;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct OwnerView {
    pub tgid: u32,
    pub pid: u32,
    pub comm: String,
    /// connect, listen, accept, socket-io, listener (inherited), snapshot.
    pub how: &'static str,
    /// cgroup v2 id; 0 when unknown.
    pub cgroup_id: u64,
    /// The cgroup's path and the container id it shows, when known (live).
    pub cgroup: Option<String>,
    pub container_id: Option<String>,
}

impl OwnerView {
    /// Fills in the cgroup path and container id from the host.
    pub fn resolve(&mut self, names: &mut crate::source::cgroup::CgroupNames) {
        if let Some(path) = names.path(self.cgroup_id) {
            self.container_id = crate::source::cgroup::container_id(path).map(str::to_string);
            self.cgroup = Some(path.to_string());
        }
    }
}

impl From<&Owner> for OwnerView {
    fn from(owner: &Owner) -> Self {
        OwnerView {
            tgid: owner.tgid,
            pid: owner.pid,
            comm: owner.comm.as_string(),
            how: owner.how.name(),
            cgroup_id: owner.cgroup_id,
            cgroup: None,
            container_id: None,
        }
    }
}

/// `1234/nginx (accept)`, or `?` when unknown.
pub fn owner_text(owner: Option<&Owner>) -> String {
    match owner {
        Some(o) => format!("{}/{} ({})", o.tgid, o.comm, o.how.name()),
        None => "?".to_string(),
    }
}

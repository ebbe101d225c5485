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
}

impl From<&Owner> for OwnerView {
    fn from(owner: &Owner) -> Self {
        OwnerView {
            tgid: owner.tgid,
            pid: owner.pid,
            comm: owner.comm.as_string(),
            how: owner.how.name(),
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

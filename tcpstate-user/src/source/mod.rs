//! Sources of transitions: the live kernel (ring buffer), later recordings.
//!
//! Everything after the source (model, views, sinks) sees only [`Item`]s, so
//! live tracing and offline analysis share the rest of the pipeline.
pub mod cgroup;
pub mod kubernetes;
pub mod live;
pub mod replay;
pub mod snapshot;
pub mod sysctl;

use crate::wire::{OwnerSeen, ResetSent, Transition};

/// One thing a source delivers, in the order it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    Transition(Transition),
    /// A process got a socket from accept().
    Accepted(OwnerSeen),
    /// The host sent a RST in answer to a segment.
    ResetSent(ResetSent),
    /// The kernel's count of transitions it could not deliver grew to
    /// `total`; `ts_boot_ns` is when the new total was read.
    Lost {
        total: u64,
        ts_boot_ns: u64,
    },
}

/// Counters every source keeps, shown in every output's summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Records delivered and decoded.
    pub delivered: u64,
    /// Records that were delivered but could not be decoded.
    pub malformed: u64,
    /// Transitions the kernel could not deliver (ring buffer full).
    pub lost: u64,
    /// accept() owner records the kernel could not deliver.
    pub lost_owners: u64,
    /// accept() owner records delivered.
    pub owners: u64,
    /// RST records delivered, and lost.
    pub resets: u64,
    pub lost_resets: u64,
    /// Times the reader was woken up to drain records.
    pub wakeups: u64,
}

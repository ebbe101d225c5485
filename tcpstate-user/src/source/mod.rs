//! Sources: the live kernel (ring buffer), replayed recordings, the
//! start-up snapshot, and every read of the host (`/proc`, `/proc/sys`).
//!
//! Everything after the source (model, views, sinks) sees only [`Item`]s
//! and the facts read here, so live tracing and offline analysis share the
//! rest of the pipeline, and views never read the host themselves.
pub mod cgroup;
pub mod kubernetes;
pub mod live;
pub mod lost;
pub mod net_counters;
pub mod netns;
pub mod port_settings;
pub mod procfs;
pub mod replay;
pub mod snapshot;
pub mod sysctl;
pub mod sysctl_advice;

pub use crate::wire::Item;
pub use lost::LostCauses;

/// Counters every source keeps, shown in every output's summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Records delivered and decoded.
    pub delivered: u64,
    /// Records that were delivered but could not be decoded.
    pub malformed: u64,
    /// Transitions the kernel could not deliver.
    pub lost: u64,
    /// Why they were lost, where the source can tell (a live source; a
    /// recording keeps only the total).
    pub lost_causes: Option<LostCauses>,
    /// accept() owner records the kernel could not deliver.
    pub lost_owners: u64,
    /// accept() owner records delivered.
    pub owners: u64,
    /// RST records delivered, and lost.
    pub resets: u64,
    pub lost_resets: u64,
    /// Failed connect()/bind() records delivered, and lost (issue 11).
    pub call_failures: u64,
    pub lost_call_failures: u64,
    /// Times the reader was woken up to drain records.
    pub wakeups: u64,
}

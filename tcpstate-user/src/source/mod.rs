//! Sources: the live kernel (ring buffer), replayed recordings, the
//! start-up snapshot, and every read of the host (`/proc`, `/proc/sys`).
//!
//! Everything after the source (model, views, sinks) sees only [`Item`]s
//! and the facts read here, so live tracing and offline analysis share the
//! rest of the pipeline, and views never read the host themselves.
pub mod cgroup;
pub mod kubernetes;
pub mod live;
pub mod net_counters;
pub mod netns;
pub mod port_settings;
pub mod procfs;
pub mod replay;
pub mod snapshot;
pub mod sysctl;
pub mod sysctl_advice;

pub use crate::wire::Item;

/// Why transitions were lost in the kernel: each cause has its own remedy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LostCauses {
    /// The ring buffer had no room: the reader fell behind (a larger
    /// --ring-size or narrower filters help).
    pub ring_full: u64,
    /// The reserve failed with room left: the ring's lock was not taken
    /// (Linux 6.16+ gives up on a lock it finds deadlocked or held too long).
    pub ring_busy: u64,
    /// The kernel ran none of the programs for the transition: another
    /// tracing program was already running on that CPU.
    pub skipped: u64,
}

impl LostCauses {
    /// "3 ring full, 1 skipped by the kernel": the causes that happened.
    pub fn describe(&self) -> String {
        [
            (self.ring_full, "ring full"),
            (self.ring_busy, "ring lock busy"),
            (self.skipped, "skipped by the kernel"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect::<Vec<_>>()
        .join(", ")
    }

    /// What to do about them, for the warning shown while tracing.
    pub fn advice(&self) -> &'static str {
        if self.ring_full > 0 {
            "raise --ring-size, or narrow the filters"
        } else if self.ring_busy > 0 {
            "the ring buffer's lock gave up under contention; a larger ring does not help"
        } else {
            "another tracing program was running on that CPU when the tracepoint fired"
        }
    }
}

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

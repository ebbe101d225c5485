//! Dropping capabilities once the tracer is set up.
//!
//! Loading and attaching BPF programs needs CAP_SYS_ADMIN (or CAP_BPF with
//! CAP_PERFMON), and the start-up snapshot reads other processes' file
//! descriptors. After that, the run only reads from maps and programs it
//! already holds file descriptors for: a map lookup or
//! `BPF_OBJ_GET_INFO_BY_FD` on such an fd needs no capability on recent
//! kernels (6.18 here: tried with none), but older ones refused every
//! `bpf()` call without CAP_BPF (or CAP_SYS_ADMIN) when
//! `kernel.unprivileged_bpf_disabled` is set, as Debian and others do. So CAP_BPF is kept (it grants no other access),
//! and everything else goes: no CAP_SYS_ADMIN while serving HTTP or parsing
//! anything from outside.
//!
//! Capabilities belong to threads. The tracer runs on one thread (tokio's
//! current-thread runtime), and this is called before any other thread
//! exists, so every later thread inherits the reduced sets.
use caps::{CapSet, Capability, CapsHashSet};

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("dropping capabilities ({set}): {reason}; run tcpstate as root or with CAP_BPF and CAP_PERFMON (and CAP_SETPCAP)")]
    Drop { set: &'static str, reason: String },
}

/// What the rest of a run needs besides reading its own maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterStart {
    /// Nothing else.
    MapsOnly,
    /// Taking more snapshots and creating files later (`record --rotate`):
    /// reading other users' `/proc/PID/fd`, and creating files where root
    /// may write but does not own the folder.
    Snapshots,
}

impl AfterStart {
    /// The capabilities kept for the rest of the run.
    pub fn keeps(self) -> CapsHashSet {
        let mut keep = CapsHashSet::from([Capability::CAP_BPF]);
        if self == AfterStart::Snapshots {
            keep.extend([
                Capability::CAP_SYS_PTRACE,
                Capability::CAP_DAC_READ_SEARCH,
                Capability::CAP_DAC_OVERRIDE,
            ]);
        }
        keep
    }
}

/// The set to keep: what is wanted and held now (a capability the process
/// does not hold cannot be kept, and is not asked for).
pub fn to_keep(held: &CapsHashSet, wanted: &CapsHashSet) -> CapsHashSet {
    held.intersection(wanted).copied().collect()
}

/// Drops every capability but those `after` needs, from the effective,
/// permitted and inheritable sets, the ambient set, and (when the process
/// may) the bounding set, so that nothing it executes regains them either.
/// Returns the set kept.
pub fn drop_after_start(after: AfterStart) -> Result<CapsHashSet, PrivilegeError> {
    let fail = |set: &'static str| {
        move |e: caps::errors::CapsError| PrivilegeError::Drop {
            set,
            reason: e.to_string(),
        }
    };
    let held = caps::read(None, CapSet::Permitted).map_err(fail("reading the permitted set"))?;
    let keep = to_keep(&held, &after.keeps());
    caps::clear(None, CapSet::Ambient).map_err(fail("ambient"))?;
    caps::clear(None, CapSet::Inheritable).map_err(fail("inheritable"))?;
    // The bounding set first: dropping from it needs CAP_SETPCAP, which
    // goes with the rest below. Without it (a non-root user with file
    // capabilities) the bounding set stays; the permitted set, which is
    // what can be used, is reduced all the same.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        for cap in caps::read(None, CapSet::Bounding).map_err(fail("reading the bounding set"))? {
            if !keep.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap).map_err(fail("bounding"))?;
            }
        }
    }
    caps::set(None, CapSet::Effective, &keep).map_err(fail("effective"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(fail("permitted"))?;
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_what_the_run_needs_and_holds() {
        let root = caps::all();
        assert_eq!(
            to_keep(&root, &AfterStart::MapsOnly.keeps()),
            CapsHashSet::from([Capability::CAP_BPF])
        );
        let rotating = to_keep(&root, &AfterStart::Snapshots.keeps());
        assert!(rotating.contains(&Capability::CAP_SYS_PTRACE));
        for never in [
            Capability::CAP_SYS_ADMIN,
            Capability::CAP_PERFMON,
            Capability::CAP_NET_ADMIN,
        ] {
            assert!(!rotating.contains(&never), "{never} kept");
        }
        // File capabilities CAP_BPF + CAP_PERFMON: CAP_BPF stays.
        let file_caps = CapsHashSet::from([Capability::CAP_BPF, Capability::CAP_PERFMON]);
        assert_eq!(
            to_keep(&file_caps, &AfterStart::Snapshots.keeps()),
            CapsHashSet::from([Capability::CAP_BPF])
        );
        // Nothing held: nothing kept, nothing asked for.
        assert!(to_keep(&CapsHashSet::new(), &AfterStart::MapsOnly.keeps()).is_empty());
    }
}

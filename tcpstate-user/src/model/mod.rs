//! The connection model: what the stream of transitions means.
//!
//! A [`Model`] turns transitions (and owner observations) into
//! [`Connection`]s, one per socket lifetime, and infers what the tracepoint
//! cannot show:
//!
//! - TIME_WAIT: the full socket goes FIN_WAIT2→CLOSE or CLOSING→CLOSE and a
//!   mini socket, invisible to the tracepoint, holds TIME_WAIT. The
//!   [`TimeWaitTable`] keeps one entry per such hand-over, with a predicted
//!   expiry and the `max_tw_buckets` limit the kernel applies.
//! - owners: most transitions run in softirq, so the task on the CPU is not
//!   the owner. Owners come only from CLOSE→SYN_SENT (connect()),
//!   CLOSE→LISTEN (listen()), accept() ([`Item::Accepted`](crate::wire::Item)),
//!   and the snapshot of [`ExistingSocket`]s.
//! - leaks: sockets left in CLOSE_WAIT ([`LeakReport`]).
//! - missed transitions: the kernel sometimes skips the BPF program (a
//!   tracing program already running on the CPU when a softirq hits the
//!   tracepoint); only a count of lost events tells. A connection stuck in
//!   FIN_WAIT1/FIN_WAIT2/CLOSING is finished by inference when its local
//!   peer's LAST_ACK→CLOSE proves it got the FIN, or given a TIME_WAIT
//!   entry when its address is reused after lost events. Such entries are
//!   marked [`TimeWaitEntry::inferred`], their connections uncertain.
//! - resets: a time-wait socket that sends a RST, or receives one (unless
//!   `rfc1337`), is destroyed without a transition; `ResetSent` items
//!   remove it from the table.
//!
//! Everything here is pure: no I/O, no clock. Time comes from event
//! timestamps and explicit `now_ns` arguments, all CLOCK_BOOTTIME.
//!
//! Feed it the source's [`Item`](crate::wire::Item)s: with
//! [`Model::apply_batch`] (sorted by timestamp first) or one at a time; call
//! [`Model::expire`] now and then; query [`Model::stat`],
//! [`Model::time_wait`], [`Model::leaks`]. Finished connections are
//! returned once and forgotten.
mod config;
mod connection;
mod intern;
mod leaks;
mod live;
mod owner;
mod recency;
mod recent;
mod slab;
mod snapshot;
mod stats;
mod time_wait;
mod tracker;
mod visits;

#[cfg(test)]
mod tests;

pub use config::ModelConfig;
pub use connection::{
    ClosedFirst, Connection, EndKind, FlowKey, ListenerRef, OpenKind, TimeWaitFate,
};
pub use intern::Interner;
pub use leaks::{BacklogLeak, LeakReport, OwnerLeak};
pub use live::SLOT_BYTES as LIVE_SLOT_BYTES;
pub use owner::{Owner, OwnerHow};
pub use snapshot::{ExistingSocket, ExistingSocketError};
pub use stats::{ModelStats, ProcessStates, StateCounts, StateRow, StateTally};
pub use time_wait::{
    DestinationPorts, ExpiryBasis, ProcessCount, TimeWaitCounters, TimeWaitEntry, TimeWaitRemoval,
    TimeWaitTable,
};
pub use tracker::Model;
pub use visits::{Iter as StateVisits, StateVisit, INLINE as INLINE_VISITS, MAX_VISITS};

//! TIME_WAIT, inferred, in one place.
//!
//! TIME_WAIT never appears on the tracepoint: the full socket goes to CLOSE
//! and a mini socket, invisible to it, takes over. tcpstate records one
//! entry per such hand-over and predicts when the kernel will free it.
//!
//! - [`rules`]: when a socket enters TIME_WAIT (seen, inferred, from the
//!   snapshot) and when it leaves (expired, reused, reset);
//! - [`table`]: the entries, indexed by 4-tuple, with the kernel's
//!   `max_tw_buckets` limit per namespace;
//! - `expiry`: the order in which entries expire;
//! - [`deferred`]: closes proven by the local peer, waiting for their own
//!   transition;
//! - [`tally`]: the entries' counts, kept as they come and go.
pub(crate) mod deferred;
mod expiry;
pub mod rules;
pub mod table;
pub mod tally;

pub use rules::enters_time_wait;
pub use table::{
    DestinationPorts, ExpiryBasis, Inserted, ProcessCount, TimeWaitCounters, TimeWaitEntry,
    TimeWaitRemoval, TimeWaitTable,
};

//! Views: what each command computes from the stream of items and the
//! model. They take facts (read by `source`) and return output; they do no
//! I/O of the host. [`contract`] holds what the pipeline and views agree on.
pub mod contract;
pub mod doctor;
pub mod kill;
pub mod leaks;
pub mod life;
pub mod metrics;
pub mod owner;
pub mod ports;
pub mod stale;
pub mod stat;
pub mod top;
pub mod trace;

pub use contract::{Progress, Report, View};

//! Views: what each command computes from the stream of transitions.
pub mod contract;
pub mod doctor;
pub mod leaks;
pub mod life;
pub mod metrics;
pub mod owner;
pub mod stat;
pub mod top;
pub mod trace;

pub use contract::{Progress, Report, View};

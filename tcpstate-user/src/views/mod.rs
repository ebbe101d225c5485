//! Views: what each command computes from the stream of transitions.
pub mod leaks;
pub mod life;
pub mod owner;
pub mod stat;
pub mod trace;

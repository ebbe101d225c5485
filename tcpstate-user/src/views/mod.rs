//! Views: what each command computes from the stream of transitions.
pub mod trace;

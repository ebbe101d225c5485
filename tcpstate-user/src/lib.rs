//! tcpstate: TCP state transitions from the kernel, and what they mean.
//!
//! The pipeline, one folder per stage: [`source`] (live ring buffer, later
//! recordings) → views ([`views`]) → [`sinks`] (terminal, JSON Lines).
pub mod addr;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod docs;
pub mod filter;
pub mod model;
pub mod recording;
pub mod sinks;
pub mod source;
pub mod tcp;
pub mod views;
pub mod wire;

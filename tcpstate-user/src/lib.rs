//! tcpstate: TCP state transitions from the kernel, and what they mean.
//!
//! The pipeline, one folder per stage: [`source`] (live ring buffer, later
//! recordings) → views ([`views`]) → [`sinks`] (terminal, JSON Lines).
pub mod addr;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod filter;
pub mod messages;
pub mod model;
pub mod pipeline;
pub mod recording;
pub mod sinks;
pub mod source;
pub mod tcp;
#[cfg(test)]
mod testkit;
pub mod views;
pub mod wire;

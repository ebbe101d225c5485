//! tcpstate: TCP state transitions from the kernel, and what they mean.
//!
//! A pipeline, one folder per stage; each uses only those listed before it:
//!
//! - [`wire`]: the ring buffer's record decoded into a [`wire::Item`], the
//!   one type that flows from the source to the model (and into
//!   recordings).
//! - [`model`]: pure; turns items into connections, TIME_WAIT entries
//!   ([`model::time_wait`]), owners and leaks. No I/O, no clock.
//! - [`source`] and [`recording`]: where items and host facts come from:
//!   the live kernel (BPF program, ring buffer), the start-up snapshot of
//!   existing sockets (sock_diag, /proc), every other read of the host
//!   (/proc, /proc/sys), and recordings (file format, writer, reader; the
//!   replay source reads them, and they hold the source's snapshot).
//! - [`views`]: what each command computes from the model and the items,
//!   and the contracts views meet ([`views::View`], [`views::Progress`],
//!   [`views::Report`]). Views take facts and never read the host.
//! - [`sinks`]: where a view's output goes: table, JSON Lines, CSV,
//!   Parquet, HTTP.
//! - [`pipeline`]: wires a source, the model and a command's view, and
//!   records alongside when asked.
//! - [`commands`]: one module per subcommand.
//!
//! Beside them: [`messages`] (the one channel for warnings and status
//! lines), [`cli`], [`filter`], [`clock`], [`addr`], [`tcp`].
pub mod addr;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod docs;
pub mod filter;
pub mod kill_log;
pub mod messages;
pub mod model;
pub mod pipeline;
pub mod privileges;
pub mod recording;
pub mod sinks;
pub mod source;
pub mod tcp;
#[cfg(test)]
mod testkit;
pub mod views;
pub mod wire;

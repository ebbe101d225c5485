//! One module per subcommand: each wires a source to a view and a sink.
pub mod doctor;
pub mod export;
pub mod leaks;
pub mod life;
pub mod record;
pub mod report;
pub mod serve;
pub mod stat;
pub mod top;
pub mod trace;

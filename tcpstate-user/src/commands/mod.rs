//! One module per subcommand: each opens a [`crate::pipeline`], hands it its
//! view and sink, and reads what the view needs from `source`.
pub mod doctor;
pub mod export;
pub mod kill;
pub mod leaks;
pub mod life;
pub mod ports;
pub mod record;
pub mod report;
pub mod serve;
pub mod stale;
pub mod stat;
pub mod top;
pub mod trace;

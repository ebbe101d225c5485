//! One module per subcommand: each wires a source to a view and a sink.
pub mod doctor;
pub mod export;
pub mod leaks;
pub mod life;
pub mod pipeline;
pub mod record;
pub mod refreshed;
pub mod report;
pub mod serve;
pub mod stat;
pub mod top;
pub mod trace;

use crate::{
    cli::{FilterArgs, LiveArgs},
    source::live::LiveOptions,
};

/// Live-source options from the command line: the filters the kernel can
/// apply are pushed down to it.
pub fn live_options(live: &LiveArgs, filters: &FilterArgs, verbose: bool) -> LiveOptions {
    LiveOptions {
        ring_bytes: live.ring_size,
        wakeup_bytes: live.wakeup_size,
        family: filters.family,
        any_port: filters.to_filter().kernel_port(),
        diagnostics: verbose,
        lifetime_hooks: false,
    }
}

//! What a view is to the pipeline: the [`View`] a command hands to the
//! pipeline, the [`Progress`] the pipeline shows it, and the [`Report`] a
//! refreshed view produces. Views depend on these, never on the pipeline
//! or the commands that use them.
use crate::{
    clock::BootClock,
    model::{Connection, Model},
    source::{sysctl::TcpSysctls, Item, SourceStats},
};
use serde::Serialize;

/// What a command does with the pipeline's output.
pub trait View {
    /// Every item, after the model took it; `shown` when inside the window.
    fn item(
        &mut self,
        item: &Item,
        ended: &[Connection],
        model: &Model,
        shown: bool,
    ) -> std::io::Result<()>;
    /// Connections the model finished at the end of the input, with no item
    /// of their own (closes it was still waiting to confirm:
    /// [`Model::settle`]); before the last refresh. `shown` as for items.
    fn settled(&mut self, ended: &[Connection], model: &Model, shown: bool) -> std::io::Result<()>;
    /// After each batch, and once more with `last` at the end.
    fn refresh(&mut self, progress: &Progress, last: bool) -> std::io::Result<()>;
    /// How many rows or reports it wrote (for the summary).
    fn shown(&self) -> u64;
    /// Whether the view asks to stop (`top`'s quit key): checked after each
    /// refresh; the pipeline then ends as on Ctrl-C. Never, by default.
    fn done(&self) -> bool {
        false
    }
}

/// Where the pipeline is, as a view sees it at a refresh: the model, and
/// the facts about the source it needs to put the model in context.
#[derive(Clone, Copy)]
pub struct Progress<'a> {
    pub model: &'a Model,
    pub clock: BootClock,
    pub sysctls: &'a TcpSysctls,
    now_ns: u64,
    stats: SourceStats,
    live: bool,
}

impl<'a> Progress<'a> {
    pub fn new(
        model: &'a Model,
        clock: BootClock,
        sysctls: &'a TcpSysctls,
        now_ns: u64,
        stats: SourceStats,
        live: bool,
    ) -> Progress<'a> {
        Progress {
            model,
            clock,
            sysctls,
            now_ns,
            stats,
            live,
        }
    }

    /// Now, in boot-time ns: the clock when live, the latest item when
    /// replaying (so that ages and expiries are those of the recording).
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// The source's counters (delivered, lost, ...).
    pub fn stats(&self) -> SourceStats {
        self.stats
    }

    /// Live tracing, as opposed to a replay.
    pub fn is_live(&self) -> bool {
        self.live
    }
}

/// A report that can be shown as a table (or serialised as JSON).
pub trait Report: Serialize + PartialEq {
    fn table(&self) -> String;
}

//! `tcpstate trace`: every transition, live or from recordings.
use crate::pipeline;
use crate::views::{Progress, View};
use crate::{
    cli::TraceArgs,
    clock::BootClock,
    filter::Filter,
    model::{Connection, Model},
    sinks::{json::JsonSink, table::TableSink, Annotation, TraceSink},
    source::Item,
    views::trace::StateClock,
};
use std::io::{self, BufWriter, Write};

/// Transitions through a filter to a sink, annotated with the connection
/// and owner the model knows at that moment.
pub struct TraceView<'a> {
    pub sink: Box<dyn TraceSink + 'a>,
    pub filter: Filter,
    states: StateClock,
    shown: u64,
}

impl<'a> TraceView<'a> {
    pub fn new(sink: Box<dyn TraceSink + 'a>, filter: Filter) -> Self {
        Self {
            sink,
            filter,
            states: StateClock::default(),
            shown: 0,
        }
    }
}

impl View for TraceView<'_> {
    /// A trace shows transitions: an inferred close has none.
    fn settled(&mut self, _: &[Connection], _: &Model, _: bool) -> io::Result<()> {
        Ok(())
    }

    fn item(
        &mut self,
        item: &Item,
        ended: &[Connection],
        model: &Model,
        shown: bool,
    ) -> io::Result<()> {
        match item {
            Item::Transition(t) => {
                // Every transition updates the clock, shown or not, so the
                // durations stay right whatever the filter.
                let row = self.states.observe(t);
                if shown && self.filter.matches(t) {
                    let conn = ended
                        .iter()
                        .find(|c| c.skaddr() == Some(t.skaddr))
                        .or_else(|| model.connection(t.skaddr));
                    let annotation = Annotation {
                        connection_id: conn.map(|c| c.id),
                        owner: conn.and_then(|c| c.owner()),
                    };
                    if !self.filter.matches_owner(annotation.owner.as_ref()) {
                        return Ok(());
                    }
                    self.shown += 1;
                    self.sink.transition(&row, &annotation)?;
                }
            }
            Item::Lost { total, ts_boot_ns } if shown => self.sink.lost(*total, *ts_boot_ns)?,
            Item::CallFailed(f) if shown => self.sink.call_failed(f)?,
            Item::Kill(k) if shown => self.sink.kill(k)?,
            _ => {}
        }
        Ok(())
    }

    fn refresh(&mut self, _: &Progress, last: bool) -> io::Result<()> {
        if last {
            self.sink.finish()
        } else {
            self.sink.flush()
        }
    }

    fn shown(&self) -> u64 {
        self.shown
    }
}

/// A sink for JSON Lines or the table on `out`.
pub fn sink<'a>(json: bool, out: impl Write + 'a, clock: BootClock) -> Box<dyn TraceSink + 'a> {
    if json {
        Box::new(JsonSink::new(out, clock))
    } else {
        Box::new(TableSink::new(out, clock))
    }
}

pub async fn run(args: &TraceArgs, verbose: bool) -> anyhow::Result<()> {
    let mut pipeline = pipeline::open(
        &args.input,
        &args.live,
        &args.filters,
        verbose,
        30,
        crate::source::live::ContextTask::EveryTransition,
    )?;
    let stdout = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let mut view = TraceView::new(
        sink(args.json, stdout, pipeline.clock),
        args.filters.to_filter(),
    );
    pipeline::drive(&mut pipeline, &mut view, None).await
}

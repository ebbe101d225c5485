//! `tcpstate trace`: stream every transition.
use crate::{
    cli::TraceArgs,
    clock::{boot_now_ns, BootClock},
    sinks::{json::JsonSink, table::TableSink, TraceSink},
    source::{live::LiveSource, Item},
    views::trace::StateClock,
};
use anyhow::Context;
use std::io::{self, BufWriter, Write};
use tokio::signal::unix::{signal, SignalKind};

pub async fn run(args: &TraceArgs, verbose: bool) -> anyhow::Result<()> {
    let filter = args.filters.to_filter();
    let options = super::live_options(&args.live, &args.filters, verbose);
    let clock = BootClock::now();
    let mut source = LiveSource::open(&options)?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;

    let stdout = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let mut sink: Box<dyn TraceSink> = if args.json {
        Box::new(JsonSink::new(stdout, clock))
    } else {
        Box::new(TableSink::new(stdout, clock))
    };
    eprintln!("tcpstate: tracing TCP state transitions (Ctrl-C to stop)");

    let mut states = StateClock::default();
    let mut shown = 0u64;
    let mut batch = Vec::with_capacity(crate::source::live::MAX_BATCH_HINT);
    let mut output_closed = false;
    loop {
        tokio::select! {
            biased;
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            next = source.next_batch(&mut batch) => next?,
        }
        match emit(&mut batch, &mut states, &filter, sink.as_mut(), &mut shown) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                output_closed = true;
                break;
            }
            Err(e) => return Err(e).context("writing the output"),
        }
    }
    source.finish(&mut batch);
    if !output_closed {
        match emit(&mut batch, &mut states, &filter, sink.as_mut(), &mut shown) {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                return Err(e).context("writing the output")
            }
            _ => {}
        }
    }
    let stats = source.stats();
    let mut err = io::stderr().lock();
    let _ = writeln!(
        err,
        "tcpstate: {} transitions seen, {} shown, {} lost in the kernel{}",
        stats.delivered,
        shown,
        stats.lost,
        if stats.malformed > 0 {
            format!(", {} malformed records skipped", stats.malformed)
        } else {
            String::new()
        }
    );
    if verbose {
        let _ = writeln!(
            err,
            "tcpstate: {} wake-ups ({:.1} transitions per wake-up)",
            stats.wakeups,
            stats.delivered as f64 / stats.wakeups.max(1) as f64
        );
    }
    Ok(())
}

fn emit(
    batch: &mut Vec<Item>,
    states: &mut StateClock,
    filter: &crate::filter::Filter,
    sink: &mut dyn TraceSink,
    shown: &mut u64,
) -> io::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    for item in batch.drain(..) {
        match item {
            Item::Transition(t) => {
                // Every transition updates the clock, shown or not, so the
                // durations stay right whatever the filter.
                let row = states.observe(&t);
                if filter.matches(&t) {
                    *shown += 1;
                    sink.transition(&row)?;
                }
            }
            // Owners are for the lifetime views; trace shows the context.
            Item::Accepted(_) | Item::ResetSent(_) => {}
            Item::Lost { total } => {
                eprintln!(
                    "tcpstate: warning: {total} transitions lost in the kernel so far (ring buffer full: raise --ring-size or narrow the filters)"
                );
                sink.lost(total, boot_now_ns())?;
            }
        }
    }
    sink.flush()
}

//! The loop that runs a pipeline to its end and feeds a view.
use super::{Pipeline, Source};
use crate::views::View;
use anyhow::Context;

/// Runs the pipeline to its end: Ctrl-C, SIGTERM or `duration` when live,
/// the end of the recordings (or of the window) when replaying. Prints the
/// summary on stderr. Err when output failed or a recording was damaged
/// (after everything readable was analysed).
pub async fn drive(
    pipeline: &mut Pipeline,
    view: &mut dyn View,
    duration: Option<std::time::Duration>,
) -> anyhow::Result<()> {
    drive_until(pipeline, view, duration, std::future::pending::<()>).await
}

/// [`drive`], also refreshing the view (without new items) whenever a
/// future made by `wake` resolves: keyboard input, a timer. The futures
/// are dropped whenever items come first, so they must be cancel-safe.
pub async fn drive_until<F: std::future::Future<Output = ()>>(
    pipeline: &mut Pipeline,
    view: &mut dyn View,
    duration: Option<std::time::Duration>,
    mut wake: impl FnMut() -> F,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let deadline = tokio::time::sleep(duration.unwrap_or(std::time::Duration::MAX / 4));
    tokio::pin!(deadline);
    if pipeline.is_live() {
        crate::status!("tracing TCP state transitions (Ctrl-C to stop)");
    }
    let mut lost_seen = 0;
    let mut output_closed = false;
    while !pipeline.finished() {
        let stepped = tokio::select! {
            biased;
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = &mut deadline => break,
            () = wake() => Ok(()),
            stepped = pipeline.step(|item, ended, model, shown| view.item(item, ended, model, shown)) => stepped,
        };
        let refreshed = stepped.and_then(|()| Ok(view.refresh(&pipeline.progress(), false)?));
        if let Err(e) = refreshed {
            if is_broken_pipe(&e) {
                output_closed = true;
                break;
            }
            return Err(e);
        }
        if view.done() {
            break;
        }
        let stats = pipeline.stats();
        if pipeline.is_live() && stats.lost > lost_seen {
            lost_seen = stats.lost;
            let why = stats.lost_causes.map_or_else(
                || "raise --ring-size, or narrow the filters".to_string(),
                |c| format!("{}: {}", c.describe(), c.advice()),
            );
            log::warn!(
                "{} transitions lost in the kernel so far ({why}); affected connections are marked uncertain",
                stats.lost
            );
        }
    }
    if !output_closed {
        let last = pipeline
            .finish(|item, ended, model, shown| view.item(item, ended, model, shown))
            .and_then(|()| {
                Ok(pipeline.settle(|ended, model, shown| view.settled(ended, model, shown))?)
            })
            .and_then(|()| Ok(view.refresh(&pipeline.progress(), true)?));
        match last {
            Err(e) if !is_broken_pipe(&e) => return Err(e),
            _ => {}
        }
    }
    let stats = pipeline.stats();
    let model = pipeline.model.stats();
    // Said only when it happened: a close the model inferred is what makes
    // a connection uncertain without any loss counted.
    let inferred = model.inferred_closes + model.inferred_superseded;
    let inferred = if inferred > 0 {
        format!("; {inferred} connections' way into TIME_WAIT inferred (marked uncertain)")
    } else {
        String::new()
    };
    let causes = match stats.lost_causes {
        Some(c) if stats.lost > 0 => format!(" ({})", c.describe()),
        _ => String::new(),
    };
    crate::status!(
        "{} transitions seen, {} shown, {} lost in the kernel{causes}; {} accept() owners ({} lost), {} RSTs ({} lost); {} connections evicted from a full table{inferred}",
        stats.delivered,
        view.shown(),
        stats.lost,
        stats.owners,
        stats.lost_owners,
        stats.resets,
        stats.lost_resets,
        model.evicted
    );
    if let Source::Replay(replay) = &pipeline.source {
        if replay.damaged() > 0 {
            anyhow::bail!(
                "{} damaged part(s) in the recordings (reported above); everything readable was analysed",
                replay.damaged()
            );
        }
    }
    Ok(())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

//! `tcpstate leaks`: CLOSE_WAIT suspects per process, refreshed as events
//! arrive (and as sockets cross the age threshold).
use super::lifetimes::{run_until_signal, LiveModel};
use crate::{cli::LeaksArgs, clock::boot_now_ns, views::leaks::LeaksView};
use std::io::Write;

/// The command line of a process, for telling apart workers of one program.
pub fn cmdline(tgid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{tgid}/cmdline")).ok()?;
    let text: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect();
    (!text.is_empty()).then(|| text.join(" "))
}

pub async fn run(args: &LeaksArgs, verbose: bool) -> anyhow::Result<()> {
    let mut pipeline = LiveModel::open(&args.live, &args.filters, verbose, args.threshold_secs)?;
    let mut last: Option<LeaksView> = None;
    let mut last_shown = std::time::Instant::now();
    run_until_signal(&mut pipeline, |p, _, final_step| {
        let view = LeaksView::new(
            &p.model.leaks(boot_now_ns()),
            p.source.stats().lost,
            cmdline,
        );
        // Refresh when the answer changed, at most once per `--every`.
        let changed = last.as_ref() != Some(&view);
        if final_step || (changed && last_shown.elapsed() >= args.every) {
            let mut out = std::io::stdout().lock();
            if args.json {
                serde_json::to_writer(&mut out, &view)?;
                out.write_all(b"\n")?;
            } else {
                writeln!(out, "{}", view.table())?;
            }
            out.flush()?;
            last = Some(view);
            last_shown = std::time::Instant::now();
        }
        Ok(())
    })
    .await
}

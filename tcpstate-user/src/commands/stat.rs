//! `tcpstate stat`: sockets per state now, the live replacement of
//! `netstat -n | awk '/^tcp/ {++S[$NF]} ...'`; refreshed on events.
use super::lifetimes::{run_until_signal, LiveModel};
use crate::{cli::StatArgs, views::stat::StatView};
use std::io::Write;

pub async fn run(args: &StatArgs, verbose: bool) -> anyhow::Result<()> {
    let mut pipeline = LiveModel::open(&args.live, &args.filters, verbose, 30)?;
    let mut last: Option<StatView> = None;
    let mut last_shown = std::time::Instant::now();
    run_until_signal(&mut pipeline, |p, _, final_step| {
        let view = StatView::new(&p.model, p.sysctls.local_port_range, p.source.stats().lost);
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

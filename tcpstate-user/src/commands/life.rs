//! `tcpstate life`: one line per finished connection, with its real owner.
use super::lifetimes::{run_until_signal, LiveModel};
use crate::{cli::LifeArgs, views::life};
use std::io::{BufWriter, Write};

pub async fn run(args: &LifeArgs, verbose: bool) -> anyhow::Result<()> {
    let filter = args.filters.to_filter();
    let mut pipeline = LiveModel::open(&args.live, &args.filters, verbose, 30)?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut header = !args.json;
    run_until_signal(&mut pipeline, |_, ended, _| {
        for c in ended
            .iter()
            .filter(|c| c.open != crate::model::OpenKind::Listener || args.listeners)
        {
            if !filter.matches_endpoints(&c.local, &c.remote) {
                continue;
            }
            if args.json {
                serde_json::to_writer(&mut out, &life::LifeRecord::from(c))?;
                out.write_all(b"\n")?;
            } else {
                if header {
                    writeln!(out, "{}", life::TABLE_HEADER)?;
                    header = false;
                }
                writeln!(out, "{}", life::table_row(c))?;
            }
        }
        out.flush()
    })
    .await
}

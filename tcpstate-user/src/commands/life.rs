//! `tcpstate life`: one line per finished connection, with its real owner.
use crate::pipeline;
use crate::views::{Progress, View};
use crate::{
    cli::{LifeArgs, Unsupported},
    filter::Filter,
    model::{Connection, Model, OpenKind},
    source::Item,
    views::life,
};
use std::io::{self, BufWriter, StdoutLock, Write};

struct LifeView {
    out: BufWriter<StdoutLock<'static>>,
    json: bool,
    listeners: bool,
    filter: Filter,
    header_done: bool,
    shown: u64,
}

impl View for LifeView {
    fn item(
        &mut self,
        _: &Item,
        ended: &[Connection],
        model: &Model,
        shown: bool,
    ) -> io::Result<()> {
        self.settled(ended, model, shown)
    }

    fn settled(&mut self, ended: &[Connection], _: &Model, shown: bool) -> io::Result<()> {
        if !shown {
            return Ok(());
        }
        for c in ended {
            if (c.open == OpenKind::Listener && !self.listeners)
                || !self.filter.matches_connection(c)
            {
                continue;
            }
            self.shown += 1;
            if self.json {
                serde_json::to_writer(&mut self.out, &life::LifeRecord::from(c))?;
                self.out.write_all(b"\n")?;
            } else {
                if !self.header_done {
                    writeln!(self.out, "{}", life::TABLE_HEADER)?;
                    self.header_done = true;
                }
                writeln!(self.out, "{}", life::table_row(c))?;
            }
        }
        Ok(())
    }

    fn refresh(&mut self, _: &Progress, _: bool) -> io::Result<()> {
        self.out.flush()
    }

    fn shown(&self) -> u64 {
        self.shown
    }
}

pub async fn run(args: &LifeArgs, verbose: bool) -> anyhow::Result<()> {
    args.filters
        .refuse("life", &[Unsupported::State])
        .map_err(anyhow::Error::msg)?;
    let mut pipeline = pipeline::open(
        &args.input,
        &args.live,
        &args.filters,
        verbose,
        30,
        crate::source::live::ContextTask::OwnerTransitionsOnly,
    )?;
    let mut view = LifeView {
        out: BufWriter::new(io::stdout().lock()),
        json: args.json,
        listeners: args.listeners,
        filter: args.filters.to_filter(),
        header_done: false,
        shown: 0,
    };
    pipeline::drive(&mut pipeline, &mut view, None).await
}

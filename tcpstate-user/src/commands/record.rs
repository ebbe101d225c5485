//! `tcpstate record -o FILE`: every transition, the kernel's lost counts and
//! the start-up snapshot, to a crash-safe file (see docs/recording-format.md).
use crate::pipeline::{self, Pipeline, RecordTo};
use crate::views::{Progress, View};
use crate::{
    cli::RecordArgs,
    cli::Unsupported,
    model::{Connection, Model},
    source::Item,
};
use std::io;

/// Recording needs no view and no model: the pipeline writes the file.
struct Counting(u64);

impl View for Counting {
    fn settled(&mut self, _: &[Connection], _: &Model, _: bool) -> io::Result<()> {
        Ok(())
    }

    fn item(&mut self, item: &Item, _: &[Connection], _: &Model, _: bool) -> io::Result<()> {
        if matches!(item, Item::Transition(_)) {
            self.0 += 1;
        }
        Ok(())
    }

    fn refresh(&mut self, _: &Progress, _: bool) -> io::Result<()> {
        Ok(())
    }

    fn shown(&self) -> u64 {
        self.0
    }
}

pub async fn run(args: &RecordArgs, verbose: bool) -> anyhow::Result<()> {
    args.filters
        .refuse("record", &[Unsupported::State, Unsupported::Cgroup])
        .map_err(anyhow::Error::msg)?;
    let record = RecordTo {
        path: &args.output,
        rotate_bytes: args.rotate,
    };
    let mut pipeline = Pipeline::live(
        &args.live,
        &args.filters,
        verbose,
        30,
        Some(record),
        crate::source::live::ContextTask::EveryTransition,
    )?
    .without_model();
    crate::status!("recording to {}", args.output.display());
    pipeline::drive(&mut pipeline, &mut Counting(0), args.duration).await
}

//! A report recomputed from the model and shown when it changes, at most
//! once per `every` (live), or once at the end (replay): `stat`, `leaks`.
use crate::{
    model::{Connection, Model},
    source::Item,
    views::{Progress, Report, View},
};
use std::{
    io::{self, Write},
    time::{Duration, Instant},
};

pub struct Refreshed<R, F> {
    make: F,
    json: bool,
    every: Duration,
    last: Option<R>,
    last_shown: Instant,
    shown: u64,
}

impl<R: Report, F: FnMut(&Progress) -> R> Refreshed<R, F> {
    pub fn new(make: F, json: bool, every: Duration) -> Self {
        Self {
            make,
            json,
            every,
            last: None,
            last_shown: Instant::now(),
            shown: 0,
        }
    }
}

impl<R: Report, F: FnMut(&Progress) -> R> View for Refreshed<R, F> {
    fn item(&mut self, _: &Item, _: &[Connection], _: &Model, _: bool) -> io::Result<()> {
        Ok(())
    }

    fn settled(&mut self, _: &[Connection], _: &Model, _: bool) -> io::Result<()> {
        Ok(())
    }

    fn refresh(&mut self, progress: &Progress, last: bool) -> io::Result<()> {
        // Replays answer once, at the end: the state the recording reached
        // (or the state at `--to`/`--at`).
        if !last && !progress.is_live() {
            return Ok(());
        }
        // A report walks every connection: build it only when it may be
        // shown (the benchmark found stat spending most of its time
        // rebuilding reports after every batch).
        if !last && self.last_shown.elapsed() < self.every && self.last.is_some() {
            return Ok(());
        }
        let report = (self.make)(progress);
        let changed = self.last.as_ref() != Some(&report);
        if !(last || changed) {
            self.last_shown = Instant::now();
            return Ok(());
        }
        let mut out = io::stdout().lock();
        if self.json {
            serde_json::to_writer(&mut out, &report)?;
            out.write_all(b"\n")?;
        } else {
            writeln!(out, "{}", report.table())?;
        }
        out.flush()?;
        self.shown += 1;
        self.last = Some(report);
        self.last_shown = Instant::now();
        Ok(())
    }

    fn shown(&self) -> u64 {
        self.shown
    }
}

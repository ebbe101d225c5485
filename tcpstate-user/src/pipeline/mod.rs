//! The pipeline every command runs: a source (the live kernel, or
//! recordings) → the connection model → the command's view. Live and
//! replayed analysis share everything after the source: the same items in
//! the same order give the same output.
//!
//! It sits above the layers it wires (source, model, views) and below the
//! commands; views see it only as [`Progress`].
mod drive;
mod recorder;

pub use drive::{drive, drive_until};
pub use recorder::{rotated_path, RecordTo};

use crate::{
    cli::{FilterArgs, InputArgs, LiveArgs},
    clock::{boot_now_ns, BootClock},
    filter::Filter,
    model::{Connection, Model, ModelConfig},
    privileges::{self, AfterStart},
    recording::{RecordingHeader, RecordingReader},
    source::{
        live::{ContextTask, LiveOptions, LiveSource, OwnerTracking},
        replay::Replay,
        snapshot::Snapshot,
        sysctl::TcpSysctls,
        Item, SourceStats,
    },
    views::Progress,
};
use anyhow::Context;
use recorder::{take_snapshot, Recorder};
use std::time::Instant;

/// Where items come from.
pub enum Source {
    Live(Box<LiveSource>),
    Replay(Box<Replay>),
}

/// A time window of the analysis, in boot-time nanoseconds: the model sees
/// everything up to `to`; views show only what is at or after `from`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub from: Option<u64>,
    pub to: Option<u64>,
}

impl Window {
    pub fn shows(&self, ts: u64) -> bool {
        self.from.is_none_or(|from| ts >= from) && self.to.is_none_or(|to| ts <= to)
    }

    fn ended_by(&self, ts: u64) -> bool {
        self.to.is_some_and(|to| ts > to)
    }
}
pub struct Pipeline {
    pub source: Source,
    pub model: Model,
    pub clock: BootClock,
    pub sysctls: TcpSysctls,
    /// Local port settings per network namespace, read at start (issue 11).
    pub netns_ports: Vec<crate::source::port_settings::NetnsPorts>,
    pub window: Window,
    recorder: Option<Recorder>,
    items: Vec<Item>,
    /// The connections the current item finished (reused: most items finish
    /// none, and allocating per item showed in replay profiles).
    ended: Vec<Connection>,
    /// Boot time of the latest item (replay's notion of now).
    latest_ts: u64,
    finished: bool,
    /// Off when nothing reads the model (`record`): items then go straight
    /// from the source to the recording.
    model_used: bool,
    /// The command's filters; their socket part is applied to what comes
    /// from the source (traced and snapshot sockets alike).
    filter: Filter,
}

/// The model's settings from the host's sysctls.
pub fn model_config(sysctls: &TcpSysctls, close_wait_leak_secs: u64) -> ModelConfig {
    ModelConfig {
        fin_timeout_secs: sysctls.fin_timeout_secs,
        max_tw_buckets: sysctls.max_tw_buckets,
        rfc1337: sysctls.rfc1337,
        close_wait_leak_secs,
        ..ModelConfig::default()
    }
}
impl Pipeline {
    /// For views that never look at the model (`record`): it then takes no
    /// CPU, which at full churn is most of what the tracer spends.
    pub fn without_model(mut self) -> Pipeline {
        self.model_used = false;
        self
    }

    /// Live: loads the BPF program (with the hooks the model needs), takes
    /// the start-up snapshot, and optionally starts a recording. `shown`
    /// says which transitions the command shows the task on the CPU for;
    /// a recording keeps it for every one, whatever the command.
    pub fn live(
        live: &LiveArgs,
        filters: &FilterArgs,
        verbose: bool,
        close_wait_leak_secs: u64,
        record: Option<RecordTo>,
        shown: ContextTask,
    ) -> anyhow::Result<Pipeline> {
        let mut options = live_options(live, filters, verbose);
        options.lifetime_hooks = true;
        options.context_task = if record.is_some() {
            ContextTask::EveryTransition
        } else {
            shown
        };
        let source = LiveSource::open(&options)?;
        if let OwnerTracking::Unavailable(reason) = source.owner_tracking() {
            log::warn!(
                "owners of accepted sockets are unavailable ({reason}); they show as unknown"
            );
        }
        // The source itself warns when RSTs are not followed.
        let header = RecordingHeader::capture(std::env::args().collect());
        let mut model = Model::new(model_config(&header.sysctls, close_wait_leak_secs));
        let filter = filters.to_filter();
        // Taken once, after the program is attached, so that no socket falls
        // between the two: what changes meanwhile is in the ring buffer.
        let snapshot = take_snapshot(&filter);
        if let Some(snapshot) = &snapshot {
            load_snapshot(&mut model, snapshot, boot_now_ns());
        }
        let after_start = match &record {
            Some(RecordTo {
                rotate_bytes: Some(_),
                ..
            }) => AfterStart::Snapshots,
            _ => AfterStart::MapsOnly,
        };
        let recorder = match record {
            Some(to) => Some(Recorder::start(
                to,
                &header,
                snapshot.as_ref(),
                filter.clone(),
            )?),
            None => None,
        };
        // Loaded, attached, snapshot taken, files open: from here on the
        // run reads its own maps (and parses whatever comes from outside).
        let kept = privileges::drop_after_start(after_start)?;
        log::info!("capabilities kept for the run: {kept:?}");
        Ok(Pipeline {
            source: Source::Live(Box::new(source)),
            model,
            clock: header.clock,
            sysctls: header.sysctls,
            netns_ports: header.netns_ports,
            window: Window::default(),
            recorder,
            items: Vec::new(),
            ended: Vec::new(),
            latest_ts: boot_now_ns(),
            finished: false,
            model_used: true,
            filter,
        })
    }

    /// Replay of recordings, in the order given. The first file's header
    /// sets the clock and the sysctls; its snapshot starts the model.
    pub fn replay(
        input: &InputArgs,
        filters: &FilterArgs,
        close_wait_leak_secs: u64,
    ) -> anyhow::Result<Pipeline> {
        let filter = filters.to_filter();
        let first = input
            .input
            .first()
            .context("no recording given (--input FILE)")?;
        let reader = RecordingReader::open(first)?;
        let header = reader.header().clone();
        let mut model = Model::new(model_config(&header.sysctls, close_wait_leak_secs));
        let window = Window {
            from: input
                .from
                .as_deref()
                .map(|t| parse_time(t, &header))
                .transpose()?,
            to: input
                .to
                .as_deref()
                .map(|t| parse_time(t, &header))
                .transpose()?,
        };
        if let Some(snapshot) = reader.snapshot() {
            let mut snapshot = snapshot.clone();
            snapshot
                .sockets
                .retain(|s| filter.matches_existing(&s.existing));
            load_snapshot(&mut model, &snapshot, header.clock.boot_ns);
        }
        Ok(Pipeline {
            source: Source::Replay(Box::new(Replay::start(reader, input.input.clone()))),
            model,
            clock: header.clock,
            sysctls: header.sysctls,
            netns_ports: header.netns_ports,
            window,
            recorder: None,
            items: Vec::new(),
            ended: Vec::new(),
            latest_ts: header.clock.boot_ns,
            finished: false,
            model_used: true,
            filter,
        })
    }

    /// The live source, to ask about its hooks and the kernel's misses.
    pub fn live_source(&self) -> Option<&LiveSource> {
        match &self.source {
            Source::Live(live) => Some(live),
            Source::Replay(_) => None,
        }
    }

    pub fn is_live(&self) -> bool {
        matches!(self.source, Source::Live(_))
    }

    /// Whether a replay has reached its end (or the end of the window).
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Now, in boot-time ns: the clock when live, the latest item when
    /// replaying (so that ages and expiries are those of the recording).
    pub fn now_ns(&self) -> u64 {
        match self.source {
            Source::Live(_) => boot_now_ns(),
            Source::Replay(_) => self.latest_ts,
        }
    }

    /// What views see of the pipeline at a refresh.
    pub fn progress(&self) -> Progress<'_> {
        Progress::new(
            &self.model,
            self.clock,
            &self.sysctls,
            self.now_ns(),
            self.stats(),
            self.is_live(),
        )
    }

    pub fn stats(&self) -> SourceStats {
        match &self.source {
            Source::Live(live) => live.stats(),
            Source::Replay(replay) => replay.stats(),
        }
    }

    /// Takes the next batch and applies it item by item; `each` sees every
    /// item after the model has taken it, with the connections it finished
    /// and whether it is inside the window.
    pub async fn step(
        &mut self,
        each: impl FnMut(&Item, &[Connection], &Model, bool) -> std::io::Result<()>,
    ) -> anyhow::Result<()> {
        match &mut self.source {
            Source::Live(live) => {
                live.next_batch(&mut self.items).await?;
                if let Some(recorder) = &mut self.recorder {
                    recorder.take_kills(&mut self.items);
                }
                // Records from different CPUs arrive nearly in order; sort
                // once here, so that recordings hold the order analysed.
                self.items.sort_by_key(Item::ts_boot_ns);
            }
            Source::Replay(replay) => {
                if !replay.next(&mut self.items) {
                    self.finished = true;
                }
            }
        }
        self.keep_filtered();
        self.consume(each)
    }

    /// Drains what is left of a live source (at exit) and closes the
    /// recording.
    pub fn finish(
        &mut self,
        each: impl FnMut(&Item, &[Connection], &Model, bool) -> std::io::Result<()>,
    ) -> anyhow::Result<()> {
        if let Source::Live(live) = &mut self.source {
            live.finish(&mut self.items);
            if let Some(recorder) = &mut self.recorder {
                recorder.take_kills(&mut self.items);
            }
            self.items.sort_by_key(Item::ts_boot_ns);
        }
        self.keep_filtered();
        self.consume(each)?;
        if let Some(recorder) = self.recorder.take() {
            let summary = recorder.writer.finish()?;
            crate::status!(
                "recorded {} items in {} bytes to {}",
                summary.items,
                summary.bytes,
                recorder.path.display()
            );
        }
        Ok(())
    }

    /// The end of the input, after [`Pipeline::finish`]: the model infers the
    /// closes it was still waiting to confirm; `each` sees each connection
    /// so finished, and whether it ended inside the window.
    pub fn settle(
        &mut self,
        mut each: impl FnMut(&[Connection], &Model, bool) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        if !self.model_used {
            return Ok(());
        }
        self.ended.clear();
        self.model.settle(&mut self.ended);
        for conn in &self.ended {
            let shown = self.window.shows(conn.ended_ns().unwrap_or(self.latest_ts));
            each(std::slice::from_ref(conn), &self.model, shown)?;
        }
        self.ended.clear();
        Ok(())
    }

    /// Drops the transitions of sockets the filters leave out, as the
    /// kernel already does for one port and a family.
    fn keep_filtered(&mut self) {
        if self.filter.is_empty() {
            return;
        }
        let filter = &self.filter;
        self.items.retain(|item| match item {
            Item::Transition(t) => filter.matches_socket(t.family, &t.local, &t.remote, t.netns),
            // The other end of a failed call is unknown: an address filter
            // on it leaves the failure out.
            Item::CallFailed(f) => {
                let unknown = crate::addr::Endpoint::new(
                    std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                    0,
                );
                match f.call {
                    crate::wire::FailedCall::Connect => {
                        filter.matches_socket(f.family, &unknown, &f.addr, f.netns)
                    }
                    crate::wire::FailedCall::Bind => {
                        filter.matches_socket(f.family, &f.addr, &unknown, f.netns)
                    }
                }
            }
            Item::Kill(k) => filter.matches_socket(k.family, &k.local, &k.remote, k.netns),
            _ => true,
        });
    }

    fn consume(
        &mut self,
        each: impl FnMut(&Item, &[Connection], &Model, bool) -> std::io::Result<()>,
    ) -> anyhow::Result<()> {
        if let Some(recorder) = &mut self.recorder {
            for item in &self.items {
                recorder.writer.write_item(item)?;
            }
            recorder.maybe_rotate()?;
            recorder.writer.maybe_flush(Instant::now())?;
        }
        // Taken out and put back: the items are read in place (not moved
        // out one by one) while the model changes, and the buffer is kept.
        let items = std::mem::take(&mut self.items);
        let applied = self.apply_items(&items, each);
        self.items = items;
        self.items.clear();
        applied?;
        if self.model_used {
            let now = match self.source {
                Source::Live(_) => boot_now_ns(),
                Source::Replay(_) => self.latest_ts,
            };
            self.model.expire(now);
        }
        Ok(())
    }

    /// Applies `items` in order, up to the end of the window.
    fn apply_items(
        &mut self,
        items: &[Item],
        mut each: impl FnMut(&Item, &[Connection], &Model, bool) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        for item in items {
            let ts = item.ts_boot_ns();
            if self.window.ended_by(ts) {
                self.finished = true;
                break;
            }
            self.latest_ts = self.latest_ts.max(ts);
            self.ended.clear();
            if !self.model_used {
                each(item, &[], &self.model, self.window.shows(ts))?;
                continue;
            }
            self.model.apply_into(item, &mut self.ended);
            each(item, &self.ended, &self.model, self.window.shows(ts))?;
        }
        Ok(())
    }
}
/// Sockets that existed before tracing, so leaks and TIME_WAIT sockets
/// older than the tracer are known.
fn load_snapshot(model: &mut Model, snapshot: &Snapshot, now: u64) {
    let mut refused = 0;
    for socket in &snapshot.sockets {
        let left = socket
            .time_wait_expires_in_ms
            .map(|ms| u64::from(ms) * 1_000_000);
        if model
            .insert_existing_expiring(socket.existing, now, left)
            .is_err()
        {
            refused += 1;
        }
    }
    log::info!(
        "start-up snapshot: {} sockets ({refused} not tracked), {:?}",
        snapshot.sockets.len(),
        snapshot.errors
    );
}

/// A moment of a recording: RFC 3339 (`2026-11-22T11:23:45Z`, with an
/// optional fraction and offset), or `+DURATION` from the recording's start
/// (`+90s`, `+5m`).
pub fn parse_time(text: &str, header: &RecordingHeader) -> anyhow::Result<u64> {
    let clock = header.clock;
    if let Some(offset) = text.strip_prefix('+') {
        let d = crate::cli::parse_duration(offset).map_err(anyhow::Error::msg)?;
        return Ok(clock.boot_ns.saturating_add(d.as_nanos() as u64));
    }
    let wall = crate::clock::parse_rfc3339(text).ok_or_else(|| {
        anyhow::anyhow!("bad time `{text}`: expected RFC 3339 like 2026-11-22T11:23:45Z, or +DURATION from the start like +90s")
    })?;
    Ok(clock.boot_of_wall(wall))
}
/// Opens the pipeline a command asked for: recordings with `--input`, else
/// the live kernel (recording to `--record` if given; `shown` as in
/// [`Pipeline::live`]).
pub fn open(
    input: &InputArgs,
    live: &LiveArgs,
    filters: &FilterArgs,
    verbose: bool,
    close_wait_leak_secs: u64,
    shown: ContextTask,
) -> anyhow::Result<Pipeline> {
    if !input.input.is_empty() {
        if live.record.is_some() {
            anyhow::bail!("--record records the live kernel; it cannot be used with --input");
        }
        return Pipeline::replay(input, filters, close_wait_leak_secs);
    }
    let record = live.record.as_deref().map(|path| RecordTo {
        path,
        rotate_bytes: None,
    });
    Pipeline::live(live, filters, verbose, close_wait_leak_secs, record, shown)
}

/// Live-source options from the command line: the filters the kernel can
/// apply are pushed down to it.
pub fn live_options(live: &LiveArgs, filters: &FilterArgs, verbose: bool) -> LiveOptions {
    LiveOptions {
        ring_bytes: live.ring_size,
        wakeup_bytes: live.wakeup_size,
        family: filters.family,
        any_port: filters.to_filter().kernel_port(),
        diagnostics: verbose,
        lifetime_hooks: false,
        context_task: ContextTask::default(),
    }
}

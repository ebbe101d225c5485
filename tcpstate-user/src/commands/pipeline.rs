//! The pipeline every command runs: a source (the live kernel, or
//! recordings) → the connection model → the command's view. Live and
//! replayed analysis share everything after the source: the same items in
//! the same order give the same output.
use crate::{
    cli::{FilterArgs, InputArgs, LiveArgs},
    clock::{boot_now_ns, BootClock},
    filter::Filter,
    model::{Connection, Input, Model, ModelConfig, ObservedHow, OwnerObservation, ResetSeen},
    privileges::{self, AfterStart},
    recording::{item_ts, RecordingHeader, RecordingReader, RecordingWriter, WriterOptions},
    source::{
        live::{LiveSource, OwnerTracking},
        replay::Replay,
        snapshot::{self, Snapshot},
        sysctl::TcpSysctls,
        Item, SourceStats,
    },
};
use anyhow::Context;
use std::{
    path::{Path, PathBuf},
    time::Instant,
};

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

/// An open recording being written alongside live analysis.
pub struct Recorder {
    writer: RecordingWriter,
    path: PathBuf,
    /// Start a new file once this many bytes are written (`--rotate`).
    rotate_bytes: Option<u64>,
    rotations: u32,
    command_line: Vec<String>,
    /// Applied to the snapshot of each new file, like the first one's.
    filter: Filter,
}

pub struct Pipeline {
    pub source: Source,
    pub model: Model,
    pub clock: BootClock,
    pub sysctls: TcpSysctls,
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

/// What to record while analysing live.
pub struct RecordTo<'a> {
    pub path: &'a Path,
    pub rotate_bytes: Option<u64>,
}

impl Pipeline {
    /// For views that never look at the model (`record`): it then takes no
    /// CPU, which at full churn is most of what the tracer spends.
    pub fn without_model(mut self) -> Pipeline {
        self.model_used = false;
        self
    }

    /// Live: loads the BPF program (with the hooks the model needs), takes
    /// the start-up snapshot, and optionally starts a recording.
    pub fn live(
        live: &LiveArgs,
        filters: &FilterArgs,
        verbose: bool,
        close_wait_leak_secs: u64,
        record: Option<RecordTo>,
    ) -> anyhow::Result<Pipeline> {
        let mut options = super::live_options(live, filters, verbose);
        options.lifetime_hooks = true;
        let source = LiveSource::open(&options)?;
        if let OwnerTracking::Unavailable(reason) = source.owner_tracking() {
            eprintln!(
                "tcpstate: warning: owners of accepted sockets are unavailable ({reason}); they show as unknown"
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
                // Records from different CPUs arrive nearly in order; sort
                // once here, so that recordings hold the order analysed.
                self.items.sort_by_key(|item| item_ts(item).unwrap_or(0));
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
            self.items.sort_by_key(|item| item_ts(item).unwrap_or(0));
        }
        self.keep_filtered();
        self.consume(each)?;
        if let Some(recorder) = self.recorder.take() {
            let summary = recorder.writer.finish()?;
            eprintln!(
                "tcpstate: recorded {} items in {} bytes to {}",
                summary.items,
                summary.bytes,
                recorder.path.display()
            );
        }
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
            let ts = item_ts(item).unwrap_or(self.latest_ts);
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
            match item {
                // Most items: applied without building an Input (a copy).
                Item::Transition(t) => self.model.apply_transition_into(t, &mut self.ended),
                _ => self.model.apply_into(&to_input(*item), &mut self.ended),
            }
            each(item, &self.ended, &self.model, self.window.shows(ts))?;
        }
        Ok(())
    }
}

impl Recorder {
    fn start(
        to: RecordTo,
        header: &RecordingHeader,
        snapshot: Option<&Snapshot>,
        filter: Filter,
    ) -> anyhow::Result<Recorder> {
        let mut writer = RecordingWriter::create_with(to.path, header, WriterOptions::default())?;
        if let Some(snapshot) = snapshot {
            writer.write_snapshot(snapshot)?;
        }
        Ok(Recorder {
            writer,
            path: to.path.to_path_buf(),
            rotate_bytes: to.rotate_bytes,
            rotations: 0,
            command_line: header.command_line.clone(),
            filter,
        })
    }

    /// Past `--rotate`, goes on in `FILE.1`, `FILE.2`, ...; each file starts
    /// with a fresh header and snapshot, so it can be analysed alone.
    fn maybe_rotate(&mut self) -> anyhow::Result<()> {
        let Some(limit) = self.rotate_bytes else {
            return Ok(());
        };
        if self.writer.bytes_written() + (self.writer.bytes_buffered() as u64) < limit {
            return Ok(());
        }
        self.rotations += 1;
        let next = rotated_path(&self.path, self.rotations);
        let header = RecordingHeader::capture(self.command_line.clone());
        let summary = self.writer.rotate(&next, &header)?;
        if let Some(snapshot) = take_snapshot(&self.filter) {
            self.writer.write_snapshot(&snapshot)?;
        }
        eprintln!(
            "tcpstate: {} full ({} bytes); recording goes on in {}",
            summary.path.display(),
            summary.bytes,
            next.display()
        );
        Ok(())
    }
}

/// `FILE.N`.
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The sockets that exist now, those the filters leave out already left out.
fn take_snapshot(filter: &Filter) -> Option<Snapshot> {
    match snapshot::take(snapshot::current_netns()) {
        Ok(mut snapshot) => {
            snapshot
                .sockets
                .retain(|s| filter.matches_existing(&s.existing));
            Some(snapshot)
        }
        Err(e) => {
            eprintln!("tcpstate: warning: sockets that existed before the start are unknown: {e}");
            None
        }
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

pub fn to_input(item: Item) -> Input {
    match item {
        Item::Transition(t) => Input::Transition(t),
        Item::Accepted(seen) => Input::Owner(OwnerObservation {
            ts_boot_ns: seen.ts_boot_ns,
            skaddr: seen.skaddr,
            tgid: seen.task.tgid,
            pid: seen.task.pid,
            comm: seen.task.comm,
            how: ObservedHow::Accept,
            cgroup_id: seen.cgroup_id,
        }),
        Item::ResetSent(reset) => Input::Reset(ResetSeen {
            ts_boot_ns: reset.ts_boot_ns,
            netns: reset.netns,
            segment_src: reset.segment_src,
            segment_dst: reset.segment_dst,
            sender_state: reset.sender_state,
        }),
        Item::Lost { total, .. } => Input::Lost { total },
    }
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

/// What a command does with the pipeline's output.
pub trait View {
    /// Every item, after the model took it; `shown` when inside the window.
    fn item(
        &mut self,
        item: &Item,
        ended: &[Connection],
        model: &Model,
        shown: bool,
    ) -> std::io::Result<()>;
    /// After each batch, and once more with `last` at the end.
    fn refresh(&mut self, pipeline: &Pipeline, last: bool) -> std::io::Result<()>;
    /// How many rows or reports it wrote (for the summary).
    fn shown(&self) -> u64;
    /// Whether the view asks to stop (`top`'s quit key): checked after each
    /// refresh; `drive` then ends as on Ctrl-C. Never, by default.
    fn done(&self) -> bool {
        false
    }
}

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
        eprintln!("tcpstate: tracing TCP state transitions (Ctrl-C to stop)");
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
        let refreshed = stepped.and_then(|()| Ok(view.refresh(pipeline, false)?));
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
        let lost = pipeline.stats().lost;
        if pipeline.is_live() && lost > lost_seen {
            lost_seen = lost;
            eprintln!(
                "tcpstate: warning: {lost} transitions lost in the kernel so far (raise --ring-size, or narrow the filters); affected connections are marked uncertain"
            );
        }
    }
    if !output_closed {
        let last = pipeline
            .finish(|item, ended, model, shown| view.item(item, ended, model, shown))
            .and_then(|()| Ok(view.refresh(pipeline, true)?));
        match last {
            Err(e) if !is_broken_pipe(&e) => return Err(e),
            _ => {}
        }
    }
    let stats = pipeline.stats();
    let model = pipeline.model.stats();
    eprintln!(
        "tcpstate: {} transitions seen, {} shown, {} lost in the kernel; {} accept() owners ({} lost), {} RSTs ({} lost); {} connections evicted from a full table",
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

/// Opens the pipeline a command asked for: recordings with `--input`, else
/// the live kernel (recording to `--record` if given).
pub fn open(
    input: &InputArgs,
    live: &LiveArgs,
    filters: &FilterArgs,
    verbose: bool,
    close_wait_leak_secs: u64,
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
    Pipeline::live(live, filters, verbose, close_wait_leak_secs, record)
}

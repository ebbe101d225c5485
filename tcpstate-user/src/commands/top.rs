//! `tcpstate top`: a full-screen live view per process, in the spirit of
//! htop/bpftop. The pipeline's `drive` loop runs it: [`TopView`] counts
//! opens, closes and transitions as items pass and draws the model's
//! state when events came (at most every 500 ms) and at least once a
//! second; a thread reads the keyboard and wakes the loop.
//!
//! The terminal is restored (raw mode off, alternate screen left, cursor
//! shown) on every way out: `q`/Ctrl-C, SIGINT/SIGTERM, errors and panics.
//! What tcpstate tells meanwhile (warnings, the summary) would scribble
//! over the screen: `top` takes over the message channel
//! ([`crate::messages`]), shows the latest line in the footer, and prints
//! all of it once the screen is left.
use crate::pipeline;
use crate::views::{Progress, View};
use crate::{
    cli::Unsupported,
    cli::{InputArgs, TopArgs},
    messages,
    model::{Connection, Model, OpenKind, Owner},
    source::{live::OwnerTracking, Item},
    tcp::TcpState,
    views::top::{build_rows, handle_key, page_size, render, Action, Rates, TopState, Ui},
};
use crossterm::{
    cursor,
    event::{self, Event},
    execute,
    terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
};
use ratatui::{backend::CrosstermBackend, Terminal};
use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    io::{self, IsTerminal, Stdout},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

/// Redraw when events came, but not more often than this.
const MIN_REDRAW: Duration = Duration::from_millis(500);
/// Redraw at least this often (leaks age, TIME_WAIT expires, rates decay).
const MAX_REDRAW: Duration = Duration::from_secs(1);
/// How often the loop wakes up without items or keys.
const TICK: Duration = Duration::from_millis(100);

pub async fn run(args: &TopArgs, verbose: bool) -> anyhow::Result<()> {
    args.filters
        .refuse("top", &[Unsupported::State, Unsupported::Cgroup])
        .map_err(anyhow::Error::msg)?;
    if !io::stdout().is_terminal() {
        anyhow::bail!(
            "`tcpstate top` is a full-screen view and needs a terminal; for output to a pipe or file use `tcpstate stat` or `tcpstate leaks`"
        );
    }
    // Opened before the screen is taken, so that errors and warnings read
    // as they do for every other command.
    let mut pipeline = pipeline::open(
        &InputArgs::default(),
        &args.live,
        &args.filters,
        verbose,
        args.leak.threshold_secs,
        crate::source::live::ContextTask::OwnerTransitionsOnly,
    )?;
    let accept_tracking = matches!(
        pipeline.live_source().map(|s| s.owner_tracking()),
        Some(OwnerTracking::Accept)
    );
    // Dropped in reverse order: the screen is restored first, then the
    // message channel, which prints what was captured.
    let last_message = Arc::new(Mutex::new(None));
    let captured = MessageCapture::start(last_message.clone());
    let screen = Screen::enter()?;
    let (input, keys) = Input::start();
    let mut view = TopView::new(
        screen.terminal()?,
        keys,
        args.leak.threshold_secs,
        accept_tracking,
        last_message,
    );
    let notify = input.notify.clone();
    let result = pipeline::drive_until(&mut pipeline, &mut view, None, move || {
        let notify = notify.clone();
        async move {
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    })
    .await;
    drop(view);
    drop(input);
    drop(screen);
    drop(captured);
    result
}

/// Counts of one owner in the current interval.
#[derive(Default)]
struct OwnerCounts {
    comm: Option<String>,
    opens: u64,
    closes: u64,
}

struct TopView {
    terminal: Terminal<CrosstermBackend<Stdout>>,
    keys: mpsc::Receiver<Event>,
    ui: Ui,
    threshold_s: u64,
    /// Whether accept() reports owners: then a passive connection's open is
    /// counted for the process that accepts it, when it does.
    accept_tracking: bool,
    /// Passive connections whose open was counted (the rest are counted
    /// when they end).
    counted_opens: HashSet<u64>,
    /// Since `sampled_at`.
    transitions: u64,
    per_owner: HashMap<Option<u32>, OwnerCounts>,
    sampled_at: Instant,
    /// Rates from the last full interval.
    rates: BTreeMap<Option<u32>, Rates>,
    transitions_per_s: f64,
    /// Items came since the last sample.
    dirty: bool,
    /// Visible rows of the last frame, and how many fit (for scrolling).
    rows: usize,
    page: usize,
    message: Arc<Mutex<Option<String>>>,
    frames: u64,
    done: bool,
    /// Cgroup paths, for the Kubernetes pod of an owner (a cache, filled
    /// while a frame is built).
    cgroups: std::cell::RefCell<crate::source::cgroup::CgroupNames>,
}

impl TopView {
    fn new(
        terminal: Terminal<CrosstermBackend<Stdout>>,
        keys: mpsc::Receiver<Event>,
        threshold_s: u64,
        accept_tracking: bool,
        message: Arc<Mutex<Option<String>>>,
    ) -> Self {
        TopView {
            terminal,
            keys,
            ui: Ui::default(),
            threshold_s,
            accept_tracking,
            counted_opens: HashSet::new(),
            transitions: 0,
            per_owner: HashMap::new(),
            sampled_at: Instant::now(),
            rates: BTreeMap::new(),
            transitions_per_s: 0.0,
            dirty: true,
            rows: 0,
            page: 1,
            message,
            frames: 0,
            done: false,
            cgroups: Default::default(),
        }
    }

    fn counts(&mut self, owner: Option<Owner>) -> &mut OwnerCounts {
        let counts = self.per_owner.entry(owner.map(|o| o.tgid)).or_default();
        if let Some(owner) = owner {
            counts.comm.get_or_insert_with(|| owner.comm.as_string());
        }
        counts
    }

    fn opened(&mut self, conn: &Connection) {
        self.counts(conn.attributed_owner()).opens += 1;
    }

    /// Turns the interval's counts into rates.
    fn sample(&mut self, model: &Model) {
        let secs = self.sampled_at.elapsed().as_secs_f64().max(1e-3);
        self.sampled_at = Instant::now();
        self.transitions_per_s = self.transitions as f64 / secs;
        self.transitions = 0;
        self.rates = self
            .per_owner
            .drain()
            .map(|(tgid, c)| {
                let rates = Rates {
                    comm: c.comm,
                    open_per_s: c.opens as f64 / secs,
                    close_per_s: c.closes as f64 / secs,
                };
                (tgid, rates)
            })
            .collect();
        // Connections evicted from a full model never end: forget them.
        if self.counted_opens.len() > 2 * model.len() + 1024 {
            let live: HashSet<u64> = model.connections().map(|c| c.id).collect();
            self.counted_opens.retain(|id| live.contains(id));
        }
    }

    fn state(&self, progress: &Progress) -> TopState {
        let model = progress.model;
        let counts = model.stat_by_process();
        let leaks = model.leaks(progress.now_ns());
        let mut cgroups = self.cgroups.borrow_mut();
        let mut pod_of = |id: u64| {
            let view = cgroups.view(id, true);
            Some(crate::source::kubernetes::Pod {
                namespace: view.namespace?,
                name: view.pod?,
            })
        };
        TopState {
            rows: build_rows(&counts, &leaks, &self.rates, &mut pod_of),
            totals: counts.by_state.clone(),
            transitions_per_s: self.transitions_per_s,
            // Folded from 0.0: an empty f64 sum is -0.0.
            opens_per_s: self.rates.values().fold(0.0, |sum, r| sum + r.open_per_s),
            closes_per_s: self.rates.values().fold(0.0, |sum, r| sum + r.close_per_s),
            lost: progress.stats().lost,
            suspects: leaks.by_owner.iter().map(|l| l.count).sum(),
            backlog_suspects: leaks.accept_backlog.iter().map(|l| l.count).sum(),
            threshold_s: self.threshold_s,
            message: self.message.lock().ok().and_then(|m| m.clone()),
            ui: self.ui.clone(),
        }
    }

    fn draw(&mut self, progress: &Progress) -> io::Result<()> {
        let state = self.state(progress);
        self.rows = state.visible_rows().len();
        let frame = self
            .terminal
            .draw(|frame| render(&state, frame.area(), frame.buffer_mut()))?;
        self.page = page_size(&state, frame.area).max(1);
        self.frames += 1;
        Ok(())
    }

    /// Applies the keys typed since the last call; true when the screen
    /// must be redrawn at once.
    fn keys(&mut self) -> bool {
        let mut redraw = false;
        loop {
            match self.keys.try_recv() {
                Ok(Event::Key(key)) => match handle_key(&mut self.ui, key, self.rows, self.page) {
                    Action::Quit => {
                        self.done = true;
                        return false;
                    }
                    Action::Redraw => redraw = true,
                    Action::Nothing => {}
                },
                Ok(Event::Resize(..)) => redraw = true,
                Ok(_) => {}
                Err(mpsc::TryRecvError::Empty) => return redraw,
                // The keyboard is gone: nothing could make us quit.
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.done = true;
                    return false;
                }
            }
        }
    }
}

impl View for TopView {
    fn item(
        &mut self,
        item: &Item,
        ended: &[Connection],
        model: &Model,
        shown: bool,
    ) -> io::Result<()> {
        self.dirty = true;
        match item {
            Item::Transition(t) => {
                self.transitions += 1;
                let born = match (t.old, t.new) {
                    (TcpState::Close, TcpState::SynSent) => true,
                    // With accept() followed, counted for the process
                    // that accepts it (below), else for the listener's.
                    (TcpState::Listen, TcpState::SynRecv) => !self.accept_tracking,
                    _ => false,
                };
                if let Some(conn) = model.connection(t.skaddr).filter(|_| born) {
                    if conn.open == OpenKind::Passive {
                        self.counted_opens.insert(conn.id);
                    }
                    self.opened(conn);
                }
            }
            Item::Accepted(seen) => {
                if let Some(conn) = model.connection(seen.skaddr) {
                    if conn.open == OpenKind::Passive
                        && conn.birth_seen()
                        && conn.owner().is_some()
                        && self.counted_opens.insert(conn.id)
                    {
                        self.opened(conn);
                    }
                }
            }
            Item::ResetSent(_) | Item::Lost { .. } | Item::CallFailed(_) | Item::Kill(_) => {}
        }
        self.settled(ended, model, shown)
    }

    fn settled(&mut self, ended: &[Connection], _: &Model, _: bool) -> io::Result<()> {
        self.dirty |= !ended.is_empty();
        for conn in ended {
            if conn.open == OpenKind::Listener {
                continue;
            }
            // A passive connection whose open was not counted (never
            // accepted, or its accept came before its transitions).
            if conn.open == OpenKind::Passive
                && conn.birth_seen()
                && !self.counted_opens.remove(&conn.id)
            {
                self.opened(conn);
            }
            self.counts(conn.attributed_owner()).closes += 1;
        }
        Ok(())
    }

    fn refresh(&mut self, progress: &Progress, last: bool) -> io::Result<()> {
        if last {
            // The screen is about to be left.
            return Ok(());
        }
        let redraw = self.keys();
        if self.done {
            return Ok(());
        }
        let since = self.sampled_at.elapsed();
        let due = since >= MAX_REDRAW || (self.dirty && since >= MIN_REDRAW);
        if due {
            self.sample(progress.model);
            self.dirty = false;
        }
        // The first frame at once, without rates yet.
        if due || redraw || self.frames == 0 {
            self.draw(progress)?;
        }
        Ok(())
    }

    fn shown(&self) -> u64 {
        self.frames
    }

    fn done(&self) -> bool {
        self.done
    }
}

/// Set while the terminal is in raw mode on the alternate screen.
static SCREEN_TAKEN: AtomicBool = AtomicBool::new(false);

/// Raw mode, alternate screen, hidden cursor; restored when dropped, and
/// by a panic hook.
struct Screen;

impl Screen {
    fn enter() -> io::Result<Screen> {
        install_panic_hook();
        terminal::enable_raw_mode()?;
        SCREEN_TAKEN.store(true, Ordering::SeqCst);
        // From here on the guard restores whatever was done.
        let screen = Screen;
        execute!(io::stdout(), EnterAlternateScreen, cursor::Hide)?;
        Ok(screen)
    }

    fn terminal(&self) -> io::Result<Terminal<CrosstermBackend<Stdout>>> {
        let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
        terminal.clear()?;
        Ok(terminal)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore_screen();
    }
}

fn restore_screen() {
    if SCREEN_TAKEN.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
    }
}

fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_screen();
            messages::release();
            previous(info);
        }));
    });
}

/// Keyboard events, read by a thread (crossterm's blocking reader) and
/// handed to the view; `notify` wakes the drive loop at once.
struct Input {
    notify: Arc<tokio::sync::Notify>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Input {
    fn start() -> (Input, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel();
        let notify = Arc::new(tokio::sync::Notify::new());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (notify, stop) = (notify.clone(), stop.clone());
            std::thread::Builder::new()
                .name("top-input".into())
                .spawn(move || {
                    // Polled, so that the thread sees `stop` and ends.
                    while !stop.load(Ordering::SeqCst) {
                        let event = match event::poll(Duration::from_millis(100)) {
                            Ok(false) => continue,
                            Ok(true) => event::read(),
                            Err(e) => Err(e),
                        };
                        let event = match event {
                            Ok(event) => event,
                            Err(e) => {
                                // Shown once the screen is left.
                                log::error!("reading the keyboard: {e}");
                                break;
                            }
                        };
                        if tx.send(event).is_err() {
                            break;
                        }
                        notify.notify_one();
                    }
                    // Dropping `tx` tells the view the keyboard is gone.
                    drop(tx);
                    notify.notify_one();
                })
                .ok()
        };
        let input = Input {
            notify,
            stop,
            thread,
        };
        (input, rx)
    }
}

impl Drop for Input {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The message channel taken over while the screen is taken: the latest
/// lines kept (at most `KEEP` bytes), the last one shown in the footer;
/// dropping gives the channel back to stderr and prints what was kept.
struct MessageCapture {
    kept: Arc<Mutex<VecDeque<String>>>,
    _capture: messages::Capture,
}

const KEEP: usize = 64 * 1024;

impl MessageCapture {
    fn start(last_line: Arc<Mutex<Option<String>>>) -> MessageCapture {
        let kept = Arc::new(Mutex::new(VecDeque::new()));
        let capture = {
            let kept = kept.clone();
            let mut kept_bytes = 0;
            messages::capture(Box::new(move |line: &str| {
                if let Ok(mut kept) = kept.lock() {
                    kept.push_back(line.to_string());
                    kept_bytes += line.len() + 1;
                    while kept_bytes > KEEP {
                        let Some(oldest) = kept.pop_front() else {
                            break;
                        };
                        kept_bytes -= oldest.len() + 1;
                    }
                }
                if !line.trim().is_empty() && !line.contains("tracing TCP state transitions") {
                    if let Ok(mut last) = last_line.lock() {
                        *last = Some(line.trim().to_string());
                    }
                }
            }))
        };
        MessageCapture {
            kept,
            _capture: capture,
        }
    }
}

impl Drop for MessageCapture {
    fn drop(&mut self) {
        messages::release();
        if let Ok(kept) = self.kept.lock() {
            for line in kept.iter() {
                messages::write_lines(line);
            }
        }
    }
}

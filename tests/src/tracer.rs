//! Runs the live source in a background thread and collects what it delivers.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};
use tcpstate::{
    source::{
        live::{HookStatus, LiveOptions, LiveSource, ProgramStatus},
        Item, SourceStats,
    },
    wire::{CallFailure, OwnerSeen, ResetSent, Transition},
};

#[derive(Default)]
struct Shared {
    transitions: Vec<Transition>,
    accepted: Vec<OwnerSeen>,
    resets: Vec<ResetSent>,
    failures: Vec<CallFailure>,
    lost: u64,
}

/// A loaded, attached BPF program whose transitions are being collected.
pub struct Tracer {
    /// Each BPF program and whether it is attached, as the source said.
    pub programs: Vec<ProgramStatus>,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<SourceStats>>,
}

/// Everything a tracer delivered, once stopped.
#[derive(Debug)]
pub struct Collected {
    pub transitions: Vec<Transition>,
    pub accepted: Vec<OwnerSeen>,
    pub resets: Vec<ResetSent>,
    /// Failed connect()/bind() calls (issue 11).
    pub failures: Vec<CallFailure>,
    pub lost: u64,
    pub stats: SourceStats,
}

impl Tracer {
    /// Loads and attaches the program; returns once it is attached, so every
    /// transition after this call is seen.
    pub fn start(options: LiveOptions) -> Tracer {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let shared = shared.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                crate::runtime().block_on(collect(options, shared, stop, ready_tx))
            })
        };
        let programs = match ready_rx.recv() {
            Ok(Ok(programs)) => programs,
            Ok(Err(e)) => panic!("could not start tracing: {e}"),
            Err(_) => panic!("tracer thread died before attaching"),
        };
        Tracer {
            programs,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    /// Traces only sockets with this local or remote port (in the kernel).
    pub fn on_port(port: u16) -> Tracer {
        Tracer::start(LiveOptions {
            any_port: Some(port),
            ring_bytes: 1 << 20,
            ..LiveOptions::default()
        })
    }

    /// Waits until `done` holds for the transitions so far, or `timeout`.
    /// Returns whether it held.
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(&[Transition]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.shared.lock().unwrap().transitions) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(crate::millis(10));
        }
    }

    /// The state of one program (by its name in tcpstate-common).
    pub fn program(&self, name: &str) -> &HookStatus {
        &self
            .programs
            .iter()
            .find(|p| p.program == name)
            .unwrap_or_else(|| panic!("no program {name} in {:?}", self.programs))
            .status
    }

    pub fn count(&self) -> usize {
        self.shared.lock().unwrap().transitions.len()
    }

    /// Detaches, drains what is left and returns everything collected.
    pub fn stop(mut self) -> Collected {
        self.stop.store(true, Ordering::SeqCst);
        let stats = self
            .thread
            .take()
            .expect("stopped once")
            .join()
            .expect("tracer thread panicked");
        let mut shared = self.shared.lock().unwrap();
        Collected {
            transitions: std::mem::take(&mut shared.transitions),
            accepted: std::mem::take(&mut shared.accepted),
            resets: std::mem::take(&mut shared.resets),
            failures: std::mem::take(&mut shared.failures),
            lost: shared.lost,
            stats,
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn collect(
    options: LiveOptions,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<Result<Vec<ProgramStatus>, String>>,
) -> SourceStats {
    let mut source = match LiveSource::open(&options) {
        Ok(source) => {
            let _ = ready.send(Ok(source.programs()));
            source
        }
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return SourceStats::default();
        }
    };
    let mut batch = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        source
            .next_batch(&mut batch)
            .await
            .expect("reading the ring buffer");
        absorb(&shared, &mut batch);
    }
    source.finish(&mut batch);
    absorb(&shared, &mut batch);
    source.stats()
}

fn absorb(shared: &Mutex<Shared>, batch: &mut Vec<Item>) {
    let mut shared = shared.lock().unwrap();
    for item in batch.drain(..) {
        match item {
            Item::Transition(t) => shared.transitions.push(t),
            Item::Lost { total, .. } => shared.lost = total,
            Item::Accepted(seen) => shared.accepted.push(seen),
            Item::ResetSent(reset) => shared.resets.push(reset),
            Item::CallFailed(failure) => shared.failures.push(failure),
            // Only from recordings; the tracer reads the kernel.
            Item::Kill(_) => {}
        }
    }
}

//! Draining the ring buffer, on a thread of its own.
//!
//! The ring is the only buffer the kernel has: once it is full, every
//! transition is lost (counted, but lost). Drained from the thread that also
//! runs the model and writes the output, the ring stops draining whenever
//! that thread does (a large table growing, a write throttled by writeback),
//! and at saturation a 16 MiB ring holds well under a second of records.
//! Here a thread does nothing but drain and decode into a bounded queue of
//! batches: a pause of the consumer now fills the queue first, then the
//! ring, and the kernel still counts whatever it drops after that.
//!
//! The thread starts at the first read, not at load: capabilities belong to
//! threads, and the pipeline drops its own between the two (see
//! `privileges`), which only threads started later inherit.
use super::{misses::recursion_misses, LiveError};
use crate::{
    source::{Item, LostCauses, SourceStats},
    wire::decode,
};
use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::ProgramFd,
};
use std::{
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc as std_mpsc, Arc, Condvar, Mutex, PoisonError,
    },
    thread,
    time::{Duration, Instant},
};
use tcpstate_common as common;
use tokio::sync::mpsc;

/// Records drained per batch at most: batches stay a bounded size, and the
/// consumer sees the lost count between them.
pub const MAX_BATCH: usize = 8192;

/// Even without a wake-up from the kernel, look at the ring this often: the
/// kernel batches wake-ups under load, and a record that arrives just after a
/// batch would otherwise wait for the next one. Also the period at which the
/// lost counter is read, and at which the consumer hears from the reader
/// when nothing happens (views refresh on it).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// Items decoded ahead of the consumer at most (counted in items, not
/// batches: a reader woken often sends many small ones): 32 full batches,
/// about 0.6 s of a saturating churn's 450,000 transitions a second
/// ([`queue_bytes`] says how much memory), on top of what the ring itself
/// holds; the memory is taken only while the consumer is behind.
const QUEUED_ITEMS: usize = 32 * MAX_BATCH;

/// Emptied batch vectors kept for reuse: fresh 8,192-item vectors would
/// be page-faulted in again for each batch.
const SPARE_BATCHES: usize = 4;

/// The most memory the queue can hold, in bytes.
const fn queue_bytes() -> usize {
    QUEUED_ITEMS * std::mem::size_of::<Item>()
}

/// What waits in the queue, shared by both ends: the reader waits for room
/// on it, the consumer makes room.
#[derive(Default)]
struct Backlog {
    /// Items and batches queued.
    queued: Mutex<(usize, usize)>,
    room: Condvar,
}

impl Backlog {
    fn queued(&self) -> (usize, usize) {
        *self.queued.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, items: usize) {
        let mut queued = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
        queued.0 += items;
        queued.1 += 1;
    }

    fn take(&self, items: usize) {
        let mut queued = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
        queued.0 = queued.0.saturating_sub(items);
        queued.1 = queued.1.saturating_sub(1);
        self.room.notify_one();
    }

    /// Waits while the queue is full, or until `stop` is raised.
    fn wait_for_room(&self, stop: &AtomicBool) {
        let mut queued = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
        while queued.0 >= QUEUED_ITEMS && !stop.load(Ordering::Relaxed) {
            queued = self
                .room
                .wait_timeout(queued, FLUSH_INTERVAL)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// A batch of items, with the counters as they stood after it.
struct Batch {
    items: Vec<Item>,
    stats: SourceStats,
}

/// The kernel's counts of what it could not deliver.
pub struct KernelCounters {
    pub lost_map: PerCpuArray<MapData, u64>,
    pub rescued_map: Option<PerCpuArray<MapData, u64>>,
    /// Whether the raw program is attached (it changes what a skip means).
    pub raw_attached: bool,
    /// The programs whose skips count, by name (copies of their fds: the
    /// programs themselves stay with the loaded object).
    pub programs: Vec<(&'static str, ProgramFd)>,
}

impl KernelCounters {
    /// Sum of the kernel's per-CPU lost counters of one kind of record.
    fn lost(&self, slot: u32) -> u64 {
        match self.lost_map.get(&slot, 0) {
            Ok(per_cpu) => per_cpu.iter().sum(),
            Err(e) => {
                // Said once: an unreadable counter must not pass for "none
                // lost" (capabilities dropped too far would do this).
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    log::warn!(
                        "the kernel's lost-event counters cannot be read ({e}); losses are not counted"
                    );
                });
                0
            }
        }
    }

    /// Times the kernel skipped these programs (see [`super::misses`]).
    fn misses(&self, names: &[&str]) -> u64 {
        self.programs
            .iter()
            .filter(|(name, _)| names.contains(name))
            .filter_map(|(_, fd)| recursion_misses(fd))
            .sum()
    }

    /// Transitions no program recorded because the kernel skipped it. With
    /// the raw program, a hit is lost only when the kernel skipped the raw
    /// program and its stand-in did not answer for it; alone, the classic
    /// program's skips are the loss.
    fn skipped_transitions(&self) -> u64 {
        if !self.raw_attached {
            return self.misses(&[common::PROGRAM_SET_STATE]);
        }
        let rescued: u64 = self
            .rescued_map
            .as_ref()
            .and_then(|map| map.get(&0, 0).ok())
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0);
        self.misses(&[common::PROGRAM_SET_STATE_RAW])
            .saturating_sub(rescued)
    }

    /// Brings the lost counts of `stats` up to date; the new total of lost
    /// transitions when it changed.
    fn update(&self, stats: &mut SourceStats) -> Option<u64> {
        stats.lost_resets =
            self.lost(common::LOST_RESETS) + self.misses(&[common::PROGRAM_SEND_RESET]);
        stats.lost_owners = self.lost(common::LOST_OWNERS)
            + self.misses(&[
                common::PROGRAM_ACCEPT4_EXIT,
                common::PROGRAM_ACCEPT_EXIT,
                common::PROGRAM_ACCEPT_FEXIT4,
                common::PROGRAM_ACCEPT_FEXIT2,
            ]);
        stats.lost_call_failures = self.lost(common::LOST_CONNECT_FAILURES)
            + self.lost(common::LOST_BIND_FAILURES)
            + self.misses(&[
                common::PROGRAM_CONNECT_ENTER,
                common::PROGRAM_CONNECT_EXIT,
                common::PROGRAM_BIND_ENTER,
                common::PROGRAM_BIND_EXIT,
            ]);
        let in_ring = self.lost(common::LOST_TRANSITIONS);
        // Read after the total it is part of: never more than it.
        let busy = self.lost(common::LOST_TRANSITIONS_RING_BUSY).min(in_ring);
        let skipped = self.skipped_transitions();
        stats.lost_causes = Some(LostCauses {
            ring_full: in_ring - busy,
            ring_busy: busy,
            skipped,
        });
        let total = in_ring + skipped;
        (total != stats.lost).then(|| {
            stats.lost = total;
            total
        })
    }
}

/// The ring buffer and what counts alongside it: everything the reading
/// thread owns.
pub struct RingReader {
    ring: RingBuf<MapData>,
    counters: KernelCounters,
    stats: SourceStats,
    /// When the kernel's lost counters were last read.
    lost_checked: Instant,
}

impl RingReader {
    pub fn new(ring: RingBuf<MapData>, counters: KernelCounters) -> RingReader {
        RingReader {
            ring,
            counters,
            // A live source can tell why it loses transitions: none yet.
            stats: SourceStats {
                lost_causes: Some(LostCauses::default()),
                ..SourceStats::default()
            },
            lost_checked: Instant::now(),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> SourceStats {
        self.stats
    }

    /// Copies up to [`MAX_BATCH`] records out of the ring; true when it is
    /// empty. Each record is released as soon as it is decoded.
    fn drain(&mut self, out: &mut Vec<Item>) -> bool {
        let stats = &mut self.stats;
        for _ in 0..MAX_BATCH {
            let Some(record) = self.ring.next() else {
                return true;
            };
            match decode(&record) {
                Ok(item) => {
                    match item {
                        Item::Transition(_) => stats.delivered += 1,
                        Item::Accepted(_) => stats.owners += 1,
                        Item::ResetSent(_) => stats.resets += 1,
                        Item::CallFailed(_) => stats.call_failures += 1,
                        // Not record kinds: decode never returns them.
                        Item::Lost { .. } | Item::Kill(_) => {}
                    }
                    out.push(item);
                }
                Err(e) => {
                    stats.malformed += 1;
                    log::warn!("skipping a malformed record from the kernel: {e}");
                }
            }
        }
        false
    }

    /// Reads the kernel's lost counters; a new total goes into `out`, after
    /// the records drained before it.
    fn push_lost(&mut self, out: &mut Vec<Item>) {
        self.lost_checked = Instant::now();
        if let Some(total) = self.counters.update(&mut self.stats) {
            out.push(Item::Lost {
                total,
                ts_boot_ns: crate::clock::boot_now_ns(),
            });
        }
    }

    /// One batch: what is in the ring now (up to [`MAX_BATCH`]), and the
    /// lost count once the ring is empty, at most once per flush interval
    /// (it takes a system call per counter and per program, which at
    /// thousands of batches a second would cost more than the records).
    fn batch(&mut self, out: &mut Vec<Item>) {
        if self.drain(out) && self.lost_checked.elapsed() >= FLUSH_INTERVAL {
            self.push_lost(out);
        }
    }

    /// Everything left, and the final lost count.
    pub fn finish(&mut self, out: &mut Vec<Item>) {
        while !self.drain(out) {}
        self.push_lost(out);
    }

    /// Waits until the kernel says records are waiting, or `timeout`
    /// passes; true when woken by the kernel.
    fn wait(&mut self, timeout: Duration) -> Result<bool, LiveError> {
        let mut poll = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, for the duration of the call; the ring
        // owns the descriptor and outlives the call.
        let ready = unsafe { libc::poll(&mut poll, 1, millis) };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                std::io::ErrorKind::Interrupted => Ok(false),
                _ => Err(LiveError::Read(e)),
            };
        }
        Ok(ready > 0)
    }
}

/// The reading thread, seen from the consumer.
pub struct ReaderThread {
    batches: mpsc::UnboundedReceiver<Batch>,
    backlog: Arc<Backlog>,
    /// Emptied vectors go back to the reader, which refills them.
    spent: std_mpsc::SyncSender<Vec<Item>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<Result<(), LiveError>>>,
}

impl ReaderThread {
    pub fn start(reader: RingReader) -> Result<ReaderThread, LiveError> {
        let (batch_tx, batches) = mpsc::unbounded_channel();
        let (spent, spent_rx) = std_mpsc::sync_channel(SPARE_BATCHES);
        let stop = Arc::new(AtomicBool::new(false));
        let backlog = Arc::new(Backlog::default());
        let ends = Ends {
            batches: batch_tx,
            backlog: Arc::clone(&backlog),
            spent: spent_rx,
            stop: Arc::clone(&stop),
        };
        let thread = thread::Builder::new()
            .name("ring reader".into())
            .spawn(move || run(reader, &ends))
            .map_err(LiveError::Read)?;
        log::info!(
            "the ring buffer is read on a thread of its own; up to {} MiB of decoded records wait for the model when it falls behind",
            queue_bytes() >> 20
        );
        Ok(ReaderThread {
            batches,
            backlog,
            spent,
            stop,
            thread: Some(thread),
        })
    }

    /// Waits for the next batch, appends its items to `out` and returns
    /// the counters as they stood after it. Cancel-safe.
    pub async fn next(&mut self, out: &mut Vec<Item>) -> Result<SourceStats, LiveError> {
        match self.batches.recv().await {
            Some(batch) => Ok(self.take(batch, out)),
            None => Err(self.ended()),
        }
    }

    /// Stops the thread after its last drain, and takes every batch it
    /// sent; the counters at the end.
    pub fn finish(&mut self, out: &mut Vec<Item>) -> Result<SourceStats, LiveError> {
        self.stop.store(true, Ordering::Relaxed);
        let mut stats = None;
        loop {
            match self.batches.try_recv() {
                Ok(batch) => stats = Some(self.take(batch, out)),
                Err(mpsc::error::TryRecvError::Empty) => {
                    // It sees the flag within one flush interval.
                    thread::sleep(Duration::from_millis(1));
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        }
        // The last batch is sent after the final drain.
        match (stats, self.join()) {
            (_, Err(e)) => Err(e),
            (Some(stats), Ok(())) => Ok(stats),
            (None, Ok(())) => Err(stopped()),
        }
    }

    fn take(&mut self, mut batch: Batch, out: &mut Vec<Item>) -> SourceStats {
        self.backlog.take(batch.items.len());
        if out.is_empty() {
            std::mem::swap(out, &mut batch.items);
        } else {
            out.append(&mut batch.items);
        }
        // Full (enough spares) or the reader gone: this one is dropped.
        let _ = self.spent.try_send(batch.items);
        batch.stats
    }

    /// Why the thread ended before it was asked to.
    fn ended(&mut self) -> LiveError {
        self.join().err().unwrap_or_else(stopped)
    }

    fn join(&mut self) -> Result<(), LiveError> {
        match self.thread.take().map(thread::JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(LiveError::Read(std::io::Error::other(
                "the ring buffer's reader failed",
            ))),
        }
    }
}

fn stopped() -> LiveError {
    LiveError::Read(std::io::Error::other("the ring buffer's reader stopped"))
}

impl Drop for ReaderThread {
    fn drop(&mut self) {
        // Without a receiver its next send fails, and it ends.
        self.stop.store(true, Ordering::Relaxed);
        self.batches.close();
        while self.batches.try_recv().is_ok() {}
        let _ = self.join();
    }
}

/// The reading thread's ends of what it shares with the consumer.
struct Ends {
    batches: mpsc::UnboundedSender<Batch>,
    backlog: Arc<Backlog>,
    spent: std_mpsc::Receiver<Vec<Item>>,
    stop: Arc<AtomicBool>,
}

impl Ends {
    /// False when the consumer is gone.
    fn send(&self, items: Vec<Item>, stats: SourceStats) -> bool {
        let count = items.len();
        // Counted first: the consumer may take it at once.
        self.backlog.add(count);
        if self.batches.send(Batch { items, stats }).is_err() {
            self.backlog.take(count);
            return false;
        }
        true
    }
}

/// The thread's loop: wait, drain, send; at the stop flag, the final drain.
fn run(mut reader: RingReader, ends: &Ends) -> Result<(), LiveError> {
    let mut flush_due = Instant::now() + FLUSH_INTERVAL;
    let mut items = Vec::new();
    loop {
        if ends.batches.is_closed() {
            // The consumer is gone: nobody wants the rest.
            return Ok(());
        }
        if items.capacity() == 0 {
            items = ends
                .spent
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(MAX_BATCH));
        }
        // A full queue leaves the records in the ring, which the kernel
        // then counts lost once it is full too.
        ends.backlog.wait_for_room(&ends.stop);
        if ends.stop.load(Ordering::Relaxed) {
            reader.finish(&mut items);
            ends.send(items, reader.stats);
            return Ok(());
        }
        let now = Instant::now();
        if now < flush_due && reader.wait(flush_due - now)? {
            reader.stats.wakeups += 1;
        }
        reader.batch(&mut items);
        let flush = Instant::now() >= flush_due;
        if flush {
            flush_due = Instant::now() + FLUSH_INTERVAL;
        }
        // Nothing new, and the consumer needs no news that time passed (not
        // yet, or it has batches waiting that will wake it).
        if items.is_empty() && (!flush || ends.backlog.queued().1 > 0) {
            continue;
        }
        if !ends.send(std::mem::take(&mut items), reader.stats) {
            return Ok(());
        }
    }
}

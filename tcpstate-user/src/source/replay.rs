//! Recordings read one after the other (a capture rotated into several
//! files is given in order), on a thread of their own: reading and decoding
//! the next blocks overlaps with the model taking the current one, which on
//! a multi-core machine is most of the replay's speed-up. The items and
//! their order are those of the files; only the time they take changes.
use crate::{
    recording::RecordingReader,
    source::{Item, SourceStats},
};
use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, SyncSender},
        Arc,
    },
    thread,
};

/// Blocks decoded ahead of the model: enough to keep both threads busy,
/// few enough to bound memory (a block holds up to a few tens of thousands
/// of items).
const BLOCKS_AHEAD: usize = 4;

/// A block of items, with what the reading thread counted in it (so that
/// the model's thread does not walk the items once more).
struct Batch {
    items: Vec<Item>,
    transitions: u64,
    owners: u64,
    resets: u64,
    failures: u64,
    /// The last lost count in the block, if any.
    lost: Option<u64>,
}

impl Batch {
    fn counted(items: Vec<Item>) -> Batch {
        let mut batch = Batch {
            items,
            transitions: 0,
            owners: 0,
            resets: 0,
            failures: 0,
            lost: None,
        };
        for item in &batch.items {
            match item {
                Item::Transition(_) => batch.transitions += 1,
                Item::Accepted(_) => batch.owners += 1,
                Item::ResetSent(_) => batch.resets += 1,
                Item::Lost { total, .. } => batch.lost = Some(*total),
                Item::CallFailed(_) => batch.failures += 1,
                Item::Kill(_) => {}
            }
        }
        batch
    }
}

pub struct Replay {
    batches: Receiver<Batch>,
    /// Emptied batches go back to the reader, which refills them.
    spent: SyncSender<Vec<Item>>,
    stats: SourceStats,
    damaged: Arc<AtomicU64>,
}

impl Replay {
    /// Reads `reader` (already opened: its header set up the analysis),
    /// then the files after it in `files`.
    pub fn start(reader: RecordingReader, files: Vec<PathBuf>) -> Replay {
        let (batch_tx, batches) = mpsc::sync_channel(BLOCKS_AHEAD);
        let (spent, spent_rx) = mpsc::sync_channel(BLOCKS_AHEAD + 2);
        let damaged = Arc::new(AtomicU64::new(0));
        let reading = ReadAhead {
            reader: Some(reader),
            files,
            next_file: 1,
            damaged: Arc::clone(&damaged),
        };
        // Should the thread fail to start, `next` reports the end at once
        // (its sender is gone), and the summary shows nothing was read.
        let _ = thread::Builder::new()
            .name("tcpstate-replay".into())
            .spawn(move || reading.run(&batch_tx, &spent_rx));
        Replay {
            batches,
            spent,
            stats: SourceStats::default(),
            damaged,
        }
    }

    /// Replaces `items` (emptied first) with the next block of items; false
    /// when all files are read.
    pub fn next(&mut self, items: &mut Vec<Item>) -> bool {
        let Ok(batch) = self.batches.recv() else {
            return false;
        };
        items.clear();
        let spent = std::mem::replace(items, batch.items);
        // The reader may have stopped (at the end); then it is dropped.
        let _ = self.spent.try_send(spent);
        self.stats.delivered += batch.transitions;
        self.stats.owners += batch.owners;
        self.stats.resets += batch.resets;
        self.stats.call_failures += batch.failures;
        if let Some(total) = batch.lost {
            self.stats.lost = total;
        }
        true
    }

    pub fn stats(&self) -> SourceStats {
        self.stats
    }

    /// Damaged parts met so far, each already reported on stderr. Final
    /// once [`Self::next`] returned false.
    pub fn damaged(&self) -> u64 {
        self.damaged.load(Ordering::Relaxed)
    }
}

/// The reading side, on its own thread.
struct ReadAhead {
    reader: Option<RecordingReader>,
    files: Vec<PathBuf>,
    next_file: usize,
    damaged: Arc<AtomicU64>,
}

impl ReadAhead {
    /// Sends every block of every file, in order. Damage is reported and
    /// passed over: what is readable is analysed. Ends early when the
    /// analysis stops listening (the end of its time window).
    fn run(mut self, batches: &SyncSender<Batch>, spent: &Receiver<Vec<Item>>) {
        while let Some(reader) = &mut self.reader {
            let mut batch = spent.try_recv().unwrap_or_default();
            match reader.next_batch(&mut batch) {
                Ok(true) => {
                    if batches.send(Batch::counted(batch)).is_err() {
                        return;
                    }
                }
                // The reader logs its warnings (an incomplete last block).
                Ok(false) => self.reader = self.open_next(),
                Err(e) => self.report(&e),
            }
        }
    }

    fn open_next(&mut self) -> Option<RecordingReader> {
        while let Some(path) = self.files.get(self.next_file) {
            self.next_file += 1;
            match RecordingReader::open(path) {
                Ok(reader) => return Some(reader),
                Err(e) => self.report(&e),
            }
        }
        None
    }

    fn report(&self, e: &dyn std::fmt::Display) {
        // Counted first: once `next` has seen the end, the count is final.
        self.damaged.fetch_add(1, Ordering::Relaxed);
        log::error!("{e}");
    }
}

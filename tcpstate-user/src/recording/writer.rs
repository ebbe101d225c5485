//! Writing recordings: append-only, one block at a time, each block
//! written and flushed to disk (`sync_data`) before the next one starts.
use super::{
    block::{self, kind, MAX_BLOCK_PAYLOAD},
    codec::{encode_snapshot, ItemEncoder},
    header, RecordingError, RecordingHeader,
};
use crate::source::{snapshot::Snapshot, Item};
use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// How a [`RecordingWriter`] cuts and flushes blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterOptions {
    /// A block is written as soon as its payload reaches this many bytes
    /// (clamped to 64 bytes .. 15 MiB). Default 256 KiB.
    pub block_bytes: usize,
    /// [`RecordingWriter::maybe_flush`] writes a block once its first item
    /// is this old. Default 1 s.
    pub max_block_age: Duration,
    /// `sync_data` after every block (default). Off only for benchmarks and
    /// tests: a crash can then lose more than the last block.
    pub sync: bool,
    /// Replace an existing file (removed, then created anew with mode
    /// 0600). Default false: an existing file is an error.
    pub overwrite: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            block_bytes: 256 << 10,
            max_block_age: Duration::from_secs(1),
            sync: true,
            overwrite: false,
        }
    }
}

impl WriterOptions {
    pub(crate) fn block_limit(&self) -> usize {
        self.block_bytes
            .clamp(64, MAX_BLOCK_PAYLOAD as usize - (1 << 20))
    }
}

/// What a finished file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingSummary {
    pub path: PathBuf,
    /// Bytes in the file.
    pub bytes: u64,
    /// Items written (not counting the snapshot).
    pub items: u64,
    /// Items blocks written.
    pub blocks: u64,
}

/// Appends items to a recording file.
///
/// Items are buffered into the current block, which is written and
/// flushed when it reaches [`WriterOptions::block_bytes`], when it is older
/// than [`WriterOptions::max_block_age`] at a [`maybe_flush`] call, on
/// [`flush_block`], [`finish`] and drop. A crash loses at most the block
/// being filled. If a write fails, the file is cut back to its last
/// complete block and the unwritten blocks are kept and retried by the
/// next flush.
///
/// [`maybe_flush`]: RecordingWriter::maybe_flush
/// [`flush_block`]: RecordingWriter::flush_block
/// [`finish`]: RecordingWriter::finish
pub struct RecordingWriter {
    path: PathBuf,
    file: File,
    options: WriterOptions,
    encoder: ItemEncoder,
    /// When the first item of the current block was written.
    block_started: Option<Instant>,
    /// Framed blocks not yet written to the file.
    pending: Vec<u8>,
    /// Bytes in the file, all of them complete blocks.
    written: u64,
    items: u64,
    blocks: u64,
    snapshot_allowed: bool,
}

impl RecordingWriter {
    /// Creates `path` (mode 0600, `O_APPEND`) and writes the header. Fails
    /// with [`RecordingError::Exists`] if the file exists.
    pub fn create(
        path: impl AsRef<Path>,
        header: &RecordingHeader,
    ) -> Result<Self, RecordingError> {
        Self::create_with(path, header, WriterOptions::default())
    }

    pub fn create_with(
        path: impl AsRef<Path>,
        header: &RecordingHeader,
        options: WriterOptions,
    ) -> Result<Self, RecordingError> {
        let path = path.as_ref().to_path_buf();
        let payload = header::encode(header);
        if payload.len() > MAX_BLOCK_PAYLOAD as usize {
            return Err(RecordingError::HeaderTooLarge {
                path,
                len: payload.len(),
            });
        }
        if options.overwrite {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(create_error(path, e)),
                _ => {}
            }
        }
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| create_error(path.clone(), e))?;
        let mut pending = Vec::with_capacity(block::PREAMBLE_LEN + payload.len() + 64);
        pending.extend_from_slice(&block::preamble(block::FORMAT_VERSION));
        block::frame(&mut pending, kind::HEADER, 0, 0, &payload);
        let mut writer = Self {
            path,
            file,
            options,
            encoder: ItemEncoder::default(),
            block_started: None,
            pending,
            written: 0,
            items: 0,
            blocks: 0,
            snapshot_allowed: true,
        };
        if let Err(e) = writer.write_pending() {
            // Nothing usable was written: leave no half-made file behind.
            let _ = std::fs::remove_file(&writer.path);
            writer.pending.clear();
            return Err(e);
        }
        // Make the new directory entry durable too (best effort).
        if let Some(dir) = writer.path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(dir) = File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(writer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the start-up snapshot. Only once, and before any item;
    /// written and flushed at once.
    pub fn write_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), RecordingError> {
        if !self.snapshot_allowed {
            return Err(RecordingError::SnapshotOrder {
                path: self.path.clone(),
            });
        }
        self.snapshot_allowed = false;
        for (payload, count) in encode_snapshot(snapshot, self.options.block_limit()) {
            block::frame(&mut self.pending, kind::SNAPSHOT, count, 0, &payload);
        }
        self.write_pending()
    }

    /// Adds an item to the current block; writes the block if it is full.
    pub fn write_item(&mut self, item: &Item) -> Result<(), RecordingError> {
        if self.encoder.is_empty() {
            self.block_started = Some(Instant::now());
        }
        self.encoder.push(item);
        self.items += 1;
        self.snapshot_allowed = false;
        if self.encoder.buf.len() >= self.options.block_limit() {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Writes the current block (if any item is waiting) and flushes it to
    /// disk.
    pub fn flush_block(&mut self) -> Result<(), RecordingError> {
        if !self.encoder.is_empty() {
            block::frame(
                &mut self.pending,
                kind::ITEMS,
                self.encoder.records,
                self.encoder.first_ts.unwrap_or(0),
                &self.encoder.buf,
            );
            self.encoder.reset();
            self.block_started = None;
            self.blocks += 1;
        }
        self.write_pending()
    }

    /// Writes the current block if its first item is older than
    /// [`WriterOptions::max_block_age`] at `now`, or if an earlier write
    /// failed and is to be retried. True if something was written.
    pub fn maybe_flush(&mut self, now: Instant) -> Result<bool, RecordingError> {
        let old = self.block_started.is_some_and(|started| {
            now.saturating_duration_since(started) >= self.options.max_block_age
        });
        if old || !self.pending.is_empty() {
            self.flush_block()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Bytes in the file so far (complete blocks only).
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Bytes waiting: the block being filled and any unwritten blocks.
    pub fn bytes_buffered(&self) -> usize {
        self.pending.len() + self.encoder.buf.len()
    }

    /// Items written so far (buffered ones included).
    pub fn items(&self) -> u64 {
        self.items
    }

    /// Writes what is left and closes the file.
    pub fn finish(mut self) -> Result<RecordingSummary, RecordingError> {
        self.flush_block()?;
        Ok(self.summary())
    }

    /// Starts a new file: finishes this one, then continues in `path`
    /// (same options). If the new file cannot be created, writing goes on
    /// in the current one. Returns the summary of the finished file.
    pub fn rotate(
        &mut self,
        path: impl AsRef<Path>,
        header: &RecordingHeader,
    ) -> Result<RecordingSummary, RecordingError> {
        self.flush_block()?;
        let next = Self::create_with(path, header, self.options.clone())?;
        let done = std::mem::replace(self, next);
        done.finish()
    }

    fn summary(&self) -> RecordingSummary {
        RecordingSummary {
            path: self.path.clone(),
            bytes: self.written,
            items: self.items,
            blocks: self.blocks,
        }
    }

    fn write_pending(&mut self) -> Result<(), RecordingError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = self.file.write_all(&self.pending).and_then(|()| {
            if self.options.sync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        match result {
            Ok(()) => {
                self.written += self.pending.len() as u64;
                self.pending.clear();
                Ok(())
            }
            Err(source) => {
                // Cut off a partly written block so that the file stays a
                // sequence of complete blocks; the blocks are retried.
                let _ = self.file.set_len(self.written);
                Err(RecordingError::Write {
                    path: self.path.clone(),
                    offset: self.written,
                    source,
                })
            }
        }
    }
}

impl Drop for RecordingWriter {
    fn drop(&mut self) {
        if !self.encoder.is_empty() || !self.pending.is_empty() {
            if let Err(e) = self.flush_block() {
                log::warn!("{e}");
            }
        }
    }
}

fn create_error(path: PathBuf, source: io::Error) -> RecordingError {
    match source.kind() {
        io::ErrorKind::AlreadyExists => RecordingError::Exists { path },
        _ => RecordingError::Create { path, source },
    }
}

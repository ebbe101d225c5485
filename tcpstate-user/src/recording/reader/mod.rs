//! Reading recordings block by block. Memory is bounded by one block (plus
//! the snapshot), whatever the file size; every length read from the file
//! is bounded by [`MAX_BLOCK_PAYLOAD`](super::MAX_BLOCK_PAYLOAD) and by the bytes left in the file
//! before anything is allocated for it.
use super::{
    block::{self, kind, BlockHeader, BLOCK_HEADER_LEN, FILE_MAGIC, FORMAT_VERSION},
    codec::{decode_snapshot, ItemDecoder},
    header, RecordingError, RecordingHeader, RecordingWarning,
};
use crate::source::{snapshot::Snapshot, Item};
use source::Source;
use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
};

mod blocks;
mod source;

/// Counts of what a reader went through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Items blocks delivered.
    pub blocks: u64,
    pub items: u64,
    /// Valid blocks of kinds this build does not know (or out of place),
    /// passed over.
    pub skipped_blocks: u64,
    /// Bytes passed over because they were damaged or incomplete.
    pub damaged_bytes: u64,
}

/// Reads a recording: the header at [`open`](RecordingReader::open), the
/// snapshot if it follows the header, then the items block by block with
/// [`next_batch`](RecordingReader::next_batch) or as an iterator.
///
/// Damage does not end the reading: a damaged block gives one
/// [`RecordingError::Corrupt`] (the items before it were delivered) and
/// the next call goes on with the next valid block. An incomplete block at
/// the end (the recorder crashed, or is still writing) is not an error: it
/// ends the reading with a [`RecordingWarning::Truncated`], also logged.
pub struct RecordingReader {
    path: PathBuf,
    source: Source,
    len: u64,
    pos: u64,
    version: u16,
    header: RecordingHeader,
    snapshot: Option<Snapshot>,
    snapshot_total: u32,
    snapshot_checked: bool,
    seen_items: bool,
    decoder: ItemDecoder,
    payload: Vec<u8>,
    warnings: Vec<RecordingWarning>,
    truncation_warned_at: Option<u64>,
    pending_error: Option<RecordingError>,
    failed: bool,
    stats: ReaderStats,
    batch: Vec<Item>,
    batch_pos: usize,
}

pub(super) fn open_error(path: &Path, source: io::Error) -> RecordingError {
    let path = path.to_path_buf();
    match source.kind() {
        io::ErrorKind::NotFound => RecordingError::NotFound { path },
        io::ErrorKind::PermissionDenied => RecordingError::PermissionDenied { path },
        io::ErrorKind::IsADirectory => RecordingError::IsDirectory { path },
        _ => RecordingError::Open { path, source },
    }
}

impl RecordingReader {
    /// Opens a recording and reads its header (and the snapshot that
    /// follows it).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, RecordingError> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| open_error(path, e))?;
        if meta.is_dir() {
            return Err(RecordingError::IsDirectory {
                path: path.to_path_buf(),
            });
        }
        if !meta.is_file() {
            return Err(RecordingError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let file = File::open(path).map_err(|e| open_error(path, e))?;
        Self::from_source(path.to_path_buf(), Source::File(file))
    }

    /// Reads a recording held in memory (tests, fuzzing); errors name the
    /// path `<memory>`.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, RecordingError> {
        Self::from_source(PathBuf::from("<memory>"), Source::Memory(bytes))
    }

    fn from_source(path: PathBuf, source: Source) -> Result<Self, RecordingError> {
        let read_error = |path: &Path, offset, source| RecordingError::Read {
            path: path.to_path_buf(),
            offset,
            source,
        };
        let len = source.len().map_err(|e| read_error(&path, 0, e))?;
        if len == 0 {
            return Err(RecordingError::Empty { path });
        }
        let mut pre = [0u8; block::PREAMBLE_LEN];
        let have = len.min(block::PREAMBLE_LEN as u64) as usize;
        source
            .read_at(0, &mut pre[..have])
            .map_err(|e| read_error(&path, 0, e))?;
        let magic = &pre[..have.min(FILE_MAGIC.len())];
        if magic != &FILE_MAGIC[..magic.len()] {
            return Err(RecordingError::NotARecording {
                path,
                found: magic.escape_ascii().to_string(),
            });
        }
        let bad_header = |path: PathBuf, offset: u64, what: String| RecordingError::BadHeader {
            path,
            offset,
            what,
        };
        if have < 10 {
            return Err(bad_header(
                path,
                0,
                format!("the file ends after {len} bytes, inside the preamble"),
            ));
        }
        let version = u16::from_le_bytes([pre[8], pre[9]]);
        if version > FORMAT_VERSION {
            return Err(RecordingError::NewerVersion {
                path,
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if have < block::PREAMBLE_LEN {
            return Err(bad_header(
                path,
                0,
                format!("the file ends after {len} bytes, inside the preamble"),
            ));
        }
        if crc32fast::hash(&pre[..12]) != u32::from_le_bytes(pre[12..16].try_into().unwrap()) {
            return Err(bad_header(path, 0, "preamble CRC mismatch".into()));
        }
        if version == 0 {
            return Err(bad_header(path, 8, "format version 0".into()));
        }
        // The header block.
        let at = block::PREAMBLE_LEN as u64;
        if len < at + BLOCK_HEADER_LEN as u64 {
            return Err(bad_header(
                path,
                at,
                "the file ends inside the header block".into(),
            ));
        }
        let mut hb = [0u8; BLOCK_HEADER_LEN];
        source
            .read_at(at, &mut hb)
            .map_err(|e| read_error(&path, at, e))?;
        let bh =
            BlockHeader::parse(&hb).map_err(|what| bad_header(path.clone(), at, what.into()))?;
        if let Some(what) = bh.payload_problem() {
            return Err(bad_header(path, at, what.into()));
        }
        if bh.kind != kind::HEADER {
            return Err(bad_header(
                path,
                at,
                format!("the first block is of kind {}, not a header", bh.kind),
            ));
        }
        let end = at + BLOCK_HEADER_LEN as u64 + u64::from(bh.stored_len);
        if end > len {
            return Err(bad_header(
                path,
                at,
                "the file ends inside the header block".into(),
            ));
        }
        let mut payload = vec![0u8; bh.stored_len as usize];
        source
            .read_at(at + BLOCK_HEADER_LEN as u64, &mut payload)
            .map_err(|e| read_error(&path, at, e))?;
        if crc32fast::hash(&payload) != bh.payload_crc {
            return Err(bad_header(path, at, "header block CRC mismatch".into()));
        }
        let header =
            header::decode(&payload).map_err(|e| bad_header(path.clone(), at, e.to_string()))?;
        let mut reader = Self {
            path,
            source,
            len,
            pos: end,
            version,
            header,
            snapshot: None,
            snapshot_total: 0,
            snapshot_checked: false,
            seen_items: false,
            decoder: ItemDecoder::default(),
            payload,
            warnings: Vec::new(),
            truncation_warned_at: None,
            pending_error: None,
            failed: false,
            stats: ReaderStats::default(),
            batch: Vec::new(),
            batch_pos: 0,
        };
        reader.read_leading_snapshot();
        Ok(reader)
    }

    /// Reads the snapshot blocks that directly follow the header. Damage
    /// is reported by the first `next_batch`.
    fn read_leading_snapshot(&mut self) {
        loop {
            if self.pos + BLOCK_HEADER_LEN as u64 > self.len {
                return;
            }
            let mut hb = [0u8; BLOCK_HEADER_LEN];
            if self.source.read_at(self.pos, &mut hb).is_err() {
                return;
            }
            if !matches!(BlockHeader::parse(&hb), Ok(h) if h.kind == kind::SNAPSHOT && h.flags == 0)
            {
                return;
            }
            let result = match self.next_block() {
                Ok(Some((at, h))) if h.kind == kind::SNAPSHOT => self.absorb_snapshot(at, h),
                Ok(Some(_)) => {
                    // Not reachable: the block just peeked at is read.
                    self.stats.skipped_blocks += 1;
                    Ok(())
                }
                Ok(None) => return,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                self.pending_error = Some(e);
                return;
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &RecordingHeader {
        &self.header
    }

    /// The format version of the file.
    pub fn format_version(&self) -> u16 {
        self.version
    }

    /// The start-up snapshot, if the recording has one. Complete unless a
    /// [`RecordingWarning::SnapshotIncomplete`] says otherwise.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// Warnings so far (each one is also logged when it happens).
    pub fn warnings(&self) -> &[RecordingWarning] {
        &self.warnings
    }

    pub fn stats(&self) -> ReaderStats {
        self.stats
    }

    /// Where the next block is read from.
    pub fn offset(&self) -> u64 {
        self.pos
    }

    /// Replaces the contents of `items` with the items of the next block.
    /// Ok(false) at the end of the recording (as far as it is written: if
    /// the file grows, a later call reads on). Err for a damaged block:
    /// the items before it have been delivered, and the next call goes on
    /// after it.
    pub fn next_batch(&mut self, items: &mut Vec<Item>) -> Result<bool, RecordingError> {
        items.clear();
        if let Some(e) = self.pending_error.take() {
            return Err(e);
        }
        if self.failed {
            return Ok(false);
        }
        loop {
            let Some((at, header)) = self.next_block()? else {
                self.check_snapshot();
                return Ok(false);
            };
            match header.kind {
                // Flags are reserved: a block with any set is of a later
                // revision, and passed over like an unknown kind.
                _ if header.flags != 0 => self.stats.skipped_blocks += 1,
                kind::ITEMS => {
                    if !self.seen_items {
                        self.seen_items = true;
                        self.check_snapshot();
                    }
                    if let Err(e) =
                        self.decoder
                            .decode(&self.payload, header.records, header.first_ts, items)
                    {
                        items.clear();
                        return Err(self.undecodable(at, e.to_string()));
                    }
                    if items.is_empty() {
                        continue;
                    }
                    self.stats.blocks += 1;
                    self.stats.items += items.len() as u64;
                    return Ok(true);
                }
                kind::SNAPSHOT if !self.seen_items => self.absorb_snapshot(at, header)?,
                _ => self.stats.skipped_blocks += 1,
            }
        }
    }

    /// A block whose CRC is right but whose payload cannot be decoded.
    fn undecodable(&mut self, at: u64, what: String) -> RecordingError {
        let skipped = self.pos - at;
        self.stats.damaged_bytes += skipped;
        RecordingError::Corrupt {
            path: self.path.clone(),
            offset: at,
            skipped,
            resume_at: self.pos,
            what,
        }
    }

    fn absorb_snapshot(&mut self, at: u64, header: BlockHeader) -> Result<(), RecordingError> {
        let mut sockets = Vec::new();
        let prefix = match decode_snapshot(&self.payload, header.records, &mut sockets) {
            Ok(prefix) => prefix,
            Err(e) => return Err(self.undecodable(at, e.to_string())),
        };
        let snapshot = self.snapshot.get_or_insert_with(|| Snapshot {
            sockets: Vec::new(),
            errors: prefix.errors,
            netns: prefix.netns,
        });
        if self.snapshot_total == 0 {
            self.snapshot_total = prefix.total;
        }
        // Never more sockets than the first part announced.
        let room = (self.snapshot_total as usize).saturating_sub(snapshot.sockets.len());
        sockets.truncate(room);
        snapshot.sockets.append(&mut sockets);
        Ok(())
    }

    fn check_snapshot(&mut self) {
        if self.snapshot_checked {
            return;
        }
        self.snapshot_checked = true;
        if let Some(snapshot) = &self.snapshot {
            let got = snapshot.sockets.len() as u64;
            if got < u64::from(self.snapshot_total) {
                self.warn(RecordingWarning::SnapshotIncomplete {
                    path: self.path.clone(),
                    expected: u64::from(self.snapshot_total),
                    got,
                });
            }
        }
    }

    fn warn(&mut self, warning: RecordingWarning) {
        log::warn!("{warning}");
        self.warnings.push(warning);
    }
}

impl Iterator for RecordingReader {
    type Item = Result<Item, RecordingError>;

    /// Items one by one; a damaged block gives one `Err`, after which the
    /// items go on.
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.batch.get(self.batch_pos) {
                self.batch_pos += 1;
                return Some(Ok(*item));
            }
            let mut batch = std::mem::take(&mut self.batch);
            let result = self.next_batch(&mut batch);
            self.batch = batch;
            self.batch_pos = 0;
            match result {
                Ok(true) => continue,
                Ok(false) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

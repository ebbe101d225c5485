//! Finding blocks: reading at an offset, the next block whose CRCs are
//! right, and the way past damaged or incomplete bytes to the next valid
//! block.
use super::{source::Source, RecordingReader};
use crate::recording::{
    block::{BlockHeader, BLOCK_HEADER_LEN, BLOCK_MAGIC},
    RecordingError, RecordingWarning,
};
use std::io;

impl RecordingReader {
    pub(super) fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<bool, RecordingError> {
        match self.source.read_at(offset, buf) {
            Ok(()) => Ok(true),
            // The file shrank under us: what is left ends here.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(source) => {
                self.failed = true;
                Err(RecordingError::Read {
                    path: self.path.clone(),
                    offset,
                    source,
                })
            }
        }
    }

    /// Bytes left after `pos`; looks at the file's size again at the end
    /// (it may still be being written).
    pub(super) fn remaining(&mut self, need: u64) -> Result<u64, RecordingError> {
        if self.len.saturating_sub(self.pos) < need {
            if let Source::File(_) = self.source {
                self.len = self.source.len().map_err(|source| {
                    self.failed = true;
                    RecordingError::Read {
                        path: self.path.clone(),
                        offset: self.pos,
                        source,
                    }
                })?;
            }
        }
        Ok(self.len.saturating_sub(self.pos))
    }

    /// The next block whose header and payload CRCs are right, its payload
    /// in `self.payload`; None at the end.
    pub(super) fn next_block(&mut self) -> Result<Option<(u64, BlockHeader)>, RecordingError> {
        loop {
            let at = self.pos;
            let remaining = self.remaining(BLOCK_HEADER_LEN as u64)?;
            if remaining == 0 {
                return Ok(None);
            }
            if remaining < BLOCK_HEADER_LEN as u64 {
                self.incomplete(at, "the file ends inside a block header");
                return Ok(None);
            }
            let mut hb = [0u8; BLOCK_HEADER_LEN];
            if !self.read_at(at, &mut hb)? {
                self.incomplete(at, "the file ends inside a block header");
                return Ok(None);
            }
            let header = match BlockHeader::parse(&hb) {
                Ok(header) => header,
                Err(what) => {
                    self.damaged(at, what, at + 1)?;
                    continue;
                }
            };
            let total = BLOCK_HEADER_LEN as u64 + u64::from(header.stored_len);
            let end = at + total;
            if self.remaining(total)? < total {
                self.incomplete(at, "the file ends inside the block");
                return Ok(None);
            }
            // Bounded: stored_len <= MAX_BLOCK_PAYLOAD and within the file.
            self.payload.resize(header.stored_len as usize, 0);
            let mut payload = std::mem::take(&mut self.payload);
            let complete = self.read_at(at + BLOCK_HEADER_LEN as u64, &mut payload);
            self.payload = payload;
            if !complete? {
                self.incomplete(at, "the file ends inside the block");
                return Ok(None);
            }
            if crc32fast::hash(&self.payload) != header.payload_crc {
                self.damaged(at, "payload CRC mismatch", end)?;
                continue;
            }
            if let Some(what) = header.payload_problem() {
                self.damaged(at, what, end)?;
                continue;
            }
            self.pos = end;
            return Ok(Some((at, header)));
        }
    }

    /// The file ends inside the block at `at`: the recorder stopped while
    /// writing it, or is still writing. Stays at `at`, so that a later call
    /// reads the block if it has been completed meanwhile.
    pub(super) fn incomplete(&mut self, at: u64, what: &str) {
        if self.truncation_warned_at == Some(at) {
            return;
        }
        self.truncation_warned_at = Some(at);
        let skipped = self.len.saturating_sub(at);
        self.stats.damaged_bytes += skipped;
        self.warn(RecordingWarning::Truncated {
            path: self.path.clone(),
            offset: at,
            skipped,
            what: what.to_string(),
        });
    }

    /// A damaged block at `at`: looks for the next valid block from
    /// `scan_from` on. Err (Corrupt) if there is one, reading going on
    /// there; else the damage is the end of the file: a warning, and the
    /// reader moves to the end.
    pub(super) fn damaged(
        &mut self,
        at: u64,
        what: &str,
        scan_from: u64,
    ) -> Result<(), RecordingError> {
        match self.find_block(scan_from)? {
            Some(next) => {
                let skipped = next - at;
                self.stats.damaged_bytes += skipped;
                self.pos = next;
                Err(RecordingError::Corrupt {
                    path: self.path.clone(),
                    offset: at,
                    skipped,
                    resume_at: next,
                    what: what.to_string(),
                })
            }
            None => {
                let skipped = self.len.saturating_sub(at);
                self.stats.damaged_bytes += skipped;
                self.warn(RecordingWarning::Truncated {
                    path: self.path.clone(),
                    offset: at,
                    skipped,
                    what: what.to_string(),
                });
                self.truncation_warned_at = Some(at);
                self.pos = self.len;
                Ok(())
            }
        }
    }

    /// The offset of the next valid block (magic, header CRC, payload
    /// within the file and its CRC) at or after `from`.
    pub(super) fn find_block(&mut self, from: u64) -> Result<Option<u64>, RecordingError> {
        const CHUNK: usize = 64 << 10;
        let mut chunk = vec![0u8; CHUNK];
        let mut base = from;
        while base.saturating_add(BLOCK_HEADER_LEN as u64) <= self.len {
            let n = (self.len - base).min(CHUNK as u64) as usize;
            if !self.read_at(base, &mut chunk[..n])? {
                return Ok(None);
            }
            for i in 0..=n - BLOCK_MAGIC.len() {
                if chunk[i] == BLOCK_MAGIC[0]
                    && chunk[i..i + BLOCK_MAGIC.len()] == BLOCK_MAGIC
                    && self.valid_block_at(base + i as u64)?
                {
                    return Ok(Some(base + i as u64));
                }
            }
            // Overlap so that a magic across the chunk boundary is seen.
            base += (n - (BLOCK_MAGIC.len() - 1)) as u64;
        }
        Ok(None)
    }

    pub(super) fn valid_block_at(&mut self, at: u64) -> Result<bool, RecordingError> {
        if at + BLOCK_HEADER_LEN as u64 > self.len {
            return Ok(false);
        }
        let mut hb = [0u8; BLOCK_HEADER_LEN];
        if !self.read_at(at, &mut hb)? {
            return Ok(false);
        }
        let Ok(header) = BlockHeader::parse(&hb) else {
            return Ok(false);
        };
        let start = at + BLOCK_HEADER_LEN as u64;
        if start + u64::from(header.stored_len) > self.len {
            return Ok(false);
        }
        let mut payload = std::mem::take(&mut self.payload);
        payload.resize(header.stored_len as usize, 0);
        let complete = self.read_at(start, &mut payload);
        let valid = matches!(complete, Ok(true)) && crc32fast::hash(&payload) == header.payload_crc;
        self.payload = payload;
        complete?;
        Ok(valid)
    }
}

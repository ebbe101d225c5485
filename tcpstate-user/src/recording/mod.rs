//! Recordings: what a live trace saw, kept in a file to be analysed later,
//! elsewhere.
//!
//! A recording holds a header (host, kernel, boot id, boot/wall clock
//! pairing, TCP sysctls, tcpstate version, command line), the start-up
//! snapshot of existing sockets, then every [`Item`] in order. The format
//! is specified in `docs/recording-format.md`: a preamble, then
//! self-delimiting blocks, each with a CRC32, written and flushed one at a
//! time, so that a file cut anywhere (crash, power cut, copy in progress)
//! reads back every complete block.
//!
//! - [`RecordingWriter`]: create (mode 0600, never over an existing file
//!   unless asked), write the snapshot and items, flush at least every
//!   second ([`RecordingWriter::maybe_flush`]), rotate.
//! - [`RecordingReader`]: open, header, snapshot, then items block by
//!   block ([`RecordingReader::next_batch`]) or one by one (iterator).
//! - [`fuzz_read`]: a never-panicking entry point for fuzzers.
//! - [`bench::bench_decode`]: decoding speed on synthetic data.
pub mod bench;
mod block;
mod codec;
mod header;
mod reader;
pub mod synth;
mod writer;

#[cfg(test)]
mod tests;

pub use block::{FILE_MAGIC, FORMAT_VERSION, MAX_BLOCK_PAYLOAD};
/// Kills (issue 12): the record body, also the datagram `kill` sends.
pub use codec::{decode_kill, encode_kill, KILL_MAX_LEN};
pub use header::RecordingHeader;
pub use reader::{ReaderStats, RecordingReader};
pub use writer::{RecordingSummary, RecordingWriter, WriterOptions};

use crate::source::{snapshot::Snapshot, Item};
use std::{io, path::PathBuf};

/// Why a recording could not be written or read. Every message is one line
/// naming the file, the byte offset where it applies, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("{}: file exists; a recording never replaces a file unless asked: choose another path, remove the file, or ask to overwrite it", path.display())]
    Exists { path: PathBuf },
    #[error("{}: cannot create the recording: {source}; check that the directory exists and is writable", path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("{}: write failed at byte {offset}: {source}; the file still ends with a complete block, and the unwritten blocks are retried at the next flush (free disk space, or stop recording)", path.display())]
    Write {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },
    #[error("{}: the snapshot must be written once, before any item (write it right after creating the file)", path.display())]
    SnapshotOrder { path: PathBuf },
    #[error("{}: the header is {len} bytes, over the 16 MiB block limit; shorten the command line", path.display())]
    HeaderTooLarge { path: PathBuf, len: usize },
    #[error("{}: no such file; check the path", path.display())]
    NotFound { path: PathBuf },
    #[error("{}: is a directory, not a recording; name a recording file inside it", path.display())]
    IsDirectory { path: PathBuf },
    #[error("{}: not a regular file (a pipe or a device?); copy the recording to a file and read that", path.display())]
    NotAFile { path: PathBuf },
    #[error("{}: permission denied; recordings are created with mode 0600: read it as the user who recorded it, or as root", path.display())]
    PermissionDenied { path: PathBuf },
    #[error("{}: cannot open: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("{}: empty file (0 bytes): the recorder stopped before writing its header, or has only just started; nothing to read", path.display())]
    Empty { path: PathBuf },
    #[error("{}: not a tcpstate recording (byte 0: expected \"TCPSREC\\n\", found \"{found}\"); check the path", path.display())]
    NotARecording { path: PathBuf, found: String },
    #[error("{}: recording format version {found} is newer than this build of tcpstate reads (format version {supported}); read it with a newer tcpstate", path.display())]
    NewerVersion {
        path: PathBuf,
        found: u16,
        supported: u16,
    },
    #[error("{}: unreadable header at byte {offset}: {what}; nothing can be read from this file (was it copied completely?)", path.display())]
    BadHeader {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("{}: damaged block at byte {offset} ({what}): {skipped} bytes skipped up to the next valid block at byte {resume_at}; everything before byte {offset} was delivered; read on to continue after the damage, or stop here", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        skipped: u64,
        resume_at: u64,
        what: String,
    },
    #[error("{}: read error at byte {offset}: {source}; check the disk, or copy the file elsewhere and read the copy", path.display())]
    Read {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },
}

/// Something a reader passed over without failing; each is logged with
/// `log::warn!` when it happens and kept in
/// [`RecordingReader::warnings`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordingWarning {
    /// The end of the file is not a complete, valid block.
    #[error("{}: incomplete last block at byte {offset} ({what}): {skipped} bytes ignored; the recorder was stopped or crashed while writing it, or is still writing; everything before byte {offset} was read", path.display())]
    Truncated {
        path: PathBuf,
        offset: u64,
        skipped: u64,
        what: String,
    },
    /// Part of the snapshot was in a damaged block.
    #[error("{}: the snapshot is incomplete: {got} of {expected} sockets could be read (a snapshot block is damaged); analysis starts partly blind", path.display())]
    SnapshotIncomplete {
        path: PathBuf,
        expected: u64,
        got: u64,
    },
}

/// Encodes a whole recording in memory (tests, fuzz corpora, tools):
/// the same bytes a [`RecordingWriter`] with `block_bytes` would write,
/// with every items block cut at that size.
pub fn encode_to_vec(
    header: &RecordingHeader,
    snapshot: Option<&Snapshot>,
    items: &[Item],
    block_bytes: usize,
) -> Vec<u8> {
    encode_stream(header, snapshot, items.iter().copied(), block_bytes, None)
}

/// Like [`encode_to_vec`], from an iterator; with `max_block_span_ns`, a
/// block is also cut when an item is that much later than the block's
/// first one (what [`RecordingWriter::maybe_flush`] does in real time).
pub fn encode_stream(
    header: &RecordingHeader,
    snapshot: Option<&Snapshot>,
    items: impl IntoIterator<Item = Item>,
    block_bytes: usize,
    max_block_span_ns: Option<u64>,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&block::preamble(FORMAT_VERSION));
    block::frame(&mut out, block::kind::HEADER, 0, 0, &header::encode(header));
    let limit = WriterOptions {
        block_bytes,
        ..WriterOptions::default()
    }
    .block_limit();
    if let Some(snapshot) = snapshot {
        for (payload, count) in codec::encode_snapshot(snapshot, limit) {
            block::frame(&mut out, block::kind::SNAPSHOT, count, 0, &payload);
        }
    }
    let mut encoder = codec::ItemEncoder::default();
    let flush = |encoder: &mut codec::ItemEncoder, out: &mut Vec<u8>| {
        if !encoder.is_empty() {
            block::frame(
                out,
                block::kind::ITEMS,
                encoder.records,
                encoder.first_ts.unwrap_or(0),
                &encoder.buf,
            );
            encoder.reset();
        }
    };
    for item in items {
        if let (Some(span), Some(first)) = (max_block_span_ns, encoder.first_ts) {
            if item.ts_boot_ns().saturating_sub(first) >= span {
                flush(&mut encoder, &mut out);
            }
        }
        encoder.push(&item);
        if encoder.buf.len() >= limit {
            flush(&mut encoder, &mut out);
        }
    }
    flush(&mut encoder, &mut out);
    out
}

/// Parses arbitrary bytes as a recording, reading on after every error
/// until the end. Never panics, never loops forever, allocates at most
/// about one block (16 MiB) plus the snapshot whatever the input says.
/// For fuzzers: `fuzz_target!(|data: &[u8]| tcpstate::recording::fuzz_read(data));`
pub fn fuzz_read(bytes: &[u8]) {
    let Ok(mut reader) = RecordingReader::from_bytes(bytes.to_vec()) else {
        return;
    };
    let _ = (reader.header(), reader.snapshot());
    let mut items = Vec::new();
    // Each call delivers a block, reports damage it moved past, or ends:
    // at most one call per byte, plus the end.
    for _ in 0..bytes.len() + 2 {
        match reader.next_batch(&mut items) {
            Ok(true) | Err(_) => {}
            Ok(false) => return,
        }
    }
    unreachable!("the reader made no progress");
}

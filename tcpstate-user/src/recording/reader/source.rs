//! The bytes a reader reads: a file (which may still be written) or a
//! buffer in memory.
use std::{fs::File, io, os::unix::fs::FileExt};

/// Where the bytes are: a file (which may still grow) or memory.
pub(super) enum Source {
    File(File),
    Memory(Vec<u8>),
}

impl Source {
    pub(super) fn len(&self) -> io::Result<u64> {
        match self {
            Source::File(file) => Ok(file.metadata()?.len()),
            Source::Memory(bytes) => Ok(bytes.len() as u64),
        }
    }

    pub(super) fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Source::File(file) => file.read_exact_at(buf, offset),
            Source::Memory(bytes) => {
                let slice = usize::try_from(offset)
                    .ok()
                    .and_then(|start| bytes.get(start..)?.get(..buf.len()))
                    .ok_or(io::ErrorKind::UnexpectedEof)?;
                buf.copy_from_slice(slice);
                Ok(())
            }
        }
    }
}

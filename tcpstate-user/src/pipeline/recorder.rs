//! Recording alongside live analysis: the open file, its rotation, and the
//! snapshot each file starts with.
use crate::{
    filter::Filter,
    recording::{RecordingHeader, RecordingWriter, WriterOptions},
    source::snapshot::{self, Snapshot},
};
use crate::{kill_log::inbox::KillInbox, source::Item};
use std::path::{Path, PathBuf};

/// What to record while analysing live.
pub struct RecordTo<'a> {
    pub path: &'a Path,
    pub rotate_bytes: Option<u64>,
}

/// An open recording being written alongside live analysis.
pub struct Recorder {
    pub(super) writer: RecordingWriter,
    pub(super) path: PathBuf,
    /// Start a new file once this many bytes are written (`--rotate`).
    rotate_bytes: Option<u64>,
    rotations: u32,
    command_line: Vec<String>,
    /// Applied to the snapshot of each new file, like the first one's.
    filter: Filter,
    /// Where `tcpstate kill` tells of its kills (issue 12); None if the
    /// socket could not be set up (said once at start).
    kills: Option<KillInbox>,
}

impl Recorder {
    pub(super) fn start(
        to: RecordTo,
        header: &RecordingHeader,
        snapshot: Option<&Snapshot>,
        filter: Filter,
    ) -> anyhow::Result<Recorder> {
        let mut writer = RecordingWriter::create_with(to.path, header, WriterOptions::default())?;
        if let Some(snapshot) = snapshot {
            writer.write_snapshot(snapshot)?;
        }
        // Before capabilities are dropped: the directory may be root's.
        let kills = match KillInbox::open() {
            Ok(inbox) => {
                log::info!(
                    "kills by `tcpstate kill` are recorded (listening at {})",
                    inbox.path().display()
                );
                Some(inbox)
            }
            Err(e) => {
                log::warn!("{e}");
                None
            }
        };
        Ok(Recorder {
            kills,
            writer,
            path: to.path.to_path_buf(),
            rotate_bytes: to.rotate_bytes,
            rotations: 0,
            command_line: header.command_line.clone(),
            filter,
        })
    }

    /// Appends the kills `tcpstate kill` told of since the last call.
    pub(super) fn take_kills(&mut self, out: &mut Vec<Item>) {
        if let Some(inbox) = &mut self.kills {
            inbox.drain(out);
        }
    }

    /// Past `--rotate`, goes on in `FILE.1`, `FILE.2`, ...; each file starts
    /// with a fresh header and snapshot, so it can be analysed alone.
    pub(super) fn maybe_rotate(&mut self) -> anyhow::Result<()> {
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
        crate::status!(
            "{} full ({} bytes); recording goes on in {}",
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
pub(super) fn take_snapshot(filter: &Filter) -> Option<Snapshot> {
    match snapshot::take(snapshot::current_netns()) {
        Ok(mut snapshot) => {
            snapshot
                .sockets
                .retain(|s| filter.matches_existing(&s.existing));
            Some(snapshot)
        }
        Err(e) => {
            log::warn!("sockets that existed before the start are unknown: {e}");
            None
        }
    }
}

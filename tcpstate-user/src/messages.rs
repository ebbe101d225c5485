//! The one channel for what tcpstate tells its user besides its output:
//! warnings and notes (through the `log` macros) and status lines (the
//! [`status!`](crate::status) macro), all spelled `tcpstate: LEVEL: ...`
//! or `tcpstate: ...`, all written to one sink.
//!
//! The sink is stderr, unless a command takes it over: `top` owns the
//! terminal while it runs, so it [`capture`]s the messages, shows the
//! latest in its footer, and prints them all once the screen is left.
use std::{
    fmt,
    io::{self, Write},
    sync::{Mutex, MutexGuard},
};

/// Where messages go while captured: each whole line (no trailing newline).
pub type Sink = Box<dyn FnMut(&str) + Send>;

/// `None`: stderr.
static SINK: Mutex<Option<Sink>> = Mutex::new(None);

fn sink() -> MutexGuard<'static, Option<Sink>> {
    // A panic while a message was written leaves the sink as it was.
    SINK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes `text` (one or more lines) to the current sink.
pub fn write_lines(text: &str) {
    let mut sink = sink();
    match sink.as_mut() {
        Some(captured) => text.lines().for_each(captured),
        None => {
            let mut err = io::stderr().lock();
            // Nothing to do when stderr itself is gone.
            let _ = err.write_all(text.as_bytes());
            if !text.ends_with('\n') {
                let _ = err.write_all(b"\n");
            }
            let _ = err.flush();
        }
    }
}

/// A status line: `tcpstate: ...`.
pub fn status(args: fmt::Arguments) {
    write_lines(&format!("tcpstate: {args}"));
}

/// An error that ends the run: `tcpstate: error: ...`.
pub fn error(args: fmt::Arguments) {
    write_lines(&format!("tcpstate: error: {args}"));
}

/// `tcpstate: ...` on the message channel (see [`messages`](crate::messages)).
#[macro_export]
macro_rules! status {
    ($($arg:tt)*) => { $crate::messages::status(format_args!($($arg)*)) };
}

/// How a `log` level is spelled in a message.
pub fn level_word(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "error",
        log::Level::Warn => "warning",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    }
}

/// Routes `log` to the message channel: warnings always, info with
/// `--verbose`; `RUST_LOG` overrides as usual.
pub fn init(verbose: bool) {
    let level = if verbose { "info" } else { "warn" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format(|buf, record| {
            writeln!(
                buf,
                "tcpstate: {}: {}",
                level_word(record.level()),
                record.args()
            )
        })
        .target(env_logger::Target::Pipe(Box::new(ChannelWriter)))
        .init();
}

/// env_logger's output: each formatted record, handed to the sink.
struct ChannelWriter;

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write_lines(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// While alive, messages go to the given sink instead of stderr; dropping
/// it puts stderr back.
pub struct Capture {
    _private: (),
}

/// Sends messages to `to` until the returned guard is dropped.
pub fn capture(to: Sink) -> Capture {
    *sink() = Some(to);
    Capture { _private: () }
}

/// Messages go to stderr again (also called from panic hooks).
pub fn release() {
    *sink() = None;
}

impl Drop for Capture {
    fn drop(&mut self) {
        release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_capture_takes_each_line_until_dropped() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let guard = {
            let seen = seen.clone();
            capture(Box::new(move |line| {
                seen.lock().unwrap().push(line.to_string())
            }))
        };
        status(format_args!("one"));
        write_lines("tcpstate: warning: two\ntcpstate: warning: three\n");
        drop(guard);
        // Back on stderr: not captured.
        status(format_args!("four"));
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "tcpstate: one",
                "tcpstate: warning: two",
                "tcpstate: warning: three"
            ]
        );
    }

    #[test]
    fn warnings_are_spelled_warning() {
        assert_eq!(level_word(log::Level::Warn), "warning");
        assert_eq!(level_word(log::Level::Error), "error");
    }
}

//! Size and speed of the recording format on synthetic churn
//! ([`super::synth`]).
//!
//! In a release build:
//! `cargo test --release -p tcpstate-user --lib recording::bench -- --ignored --nocapture`
use super::{encode_stream, synth::Churn, RecordingHeader, RecordingReader};
use crate::{clock::BootClock, source::sysctl::TcpSysctls, source::Item};
use std::time::{Duration, Instant};

/// A header with fixed contents, for measurements and tests.
pub fn sample_header() -> RecordingHeader {
    RecordingHeader {
        host_name: "web-7.example.net".into(),
        kernel_release: "6.8.0-45-generic".into(),
        boot_id: Some("3f1c2a9e-5b7d-4e21-9c0a-6d8e4f2b1a77".into()),
        clock: BootClock {
            boot_ns: 3_600_000_000_000,
            wall_ns: 1_795_000_000_000_000_000,
        },
        sysctls: TcpSysctls::default(),
        tcpstate_version: env!("CARGO_PKG_VERSION").into(),
        command_line: vec!["tcpstate".into(), "record".into(), "-o".into(), "x".into()],
        netns_ports: Vec::new(),
    }
}

/// How big a recording of synthetic churn is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SizeReport {
    pub items: u64,
    pub transitions: u64,
    /// The whole file: preamble, header, block framing, payloads.
    pub bytes: u64,
    pub blocks: u64,
}

impl SizeReport {
    /// File bytes per transition (the other items' bytes included).
    pub fn bytes_per_transition(&self) -> f64 {
        self.bytes as f64 / self.transitions.max(1) as f64
    }
}

/// Encodes `items` synthetic items made with `churn`, cutting blocks at
/// `block_bytes` or after 1 s of event time (as the writer does when
/// flushed every second), and reads them back to check them.
pub fn measure_size(churn: Churn, items: usize, block_bytes: usize) -> SizeReport {
    let mut transitions = 0u64;
    let stream = churn.take(items).inspect(|item| {
        if matches!(item, Item::Transition(_)) {
            transitions += 1;
        }
    });
    let bytes = encode_stream(
        &sample_header(),
        None,
        stream,
        block_bytes,
        Some(1_000_000_000),
    );
    let len = bytes.len() as u64;
    let mut reader = RecordingReader::from_bytes(bytes).expect("own recording");
    let mut batch = Vec::new();
    let mut read = 0u64;
    while reader.next_batch(&mut batch).expect("own recording") {
        read += batch.len() as u64;
    }
    assert_eq!(read, items as u64);
    SizeReport {
        items: items as u64,
        transitions,
        bytes: len,
        blocks: reader.stats().blocks,
    }
}

/// How fast a recording decodes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecodeReport {
    pub items: u64,
    pub transitions: u64,
    pub bytes: u64,
    pub from_memory: Duration,
    /// From a file in the page cache (read with `pread`, block by block).
    pub from_file: Option<Duration>,
}

impl DecodeReport {
    pub fn transitions_per_sec(&self, took: Duration) -> f64 {
        self.transitions as f64 / took.as_secs_f64()
    }
}

/// A recording of synthetic churn (seed 7, blocks of 256 KiB, at most 1 s
/// of events each) holding `transitions` transitions; also the number of
/// items in it.
pub fn synthetic_recording(transitions: u64) -> (Vec<u8>, u64) {
    let mut churn = Churn::new(7);
    let mut seen = 0u64;
    let mut items = 0u64;
    let stream = std::iter::from_fn(|| {
        if seen >= transitions {
            return None;
        }
        let item = churn.next_item();
        if matches!(item, Item::Transition(_)) {
            seen += 1;
        }
        items += 1;
        Some(item)
    });
    let bytes = encode_stream(
        &sample_header(),
        None,
        stream,
        256 << 10,
        Some(1_000_000_000),
    );
    (bytes, items)
}

/// Encodes synthetic churn until it holds `transitions` transitions, then
/// times decoding it, on one core, from memory and (if a temporary file
/// can be written) from a file. Every item is looked at, so that nothing
/// is optimised away.
pub fn bench_decode(transitions: u64) -> DecodeReport {
    let (bytes, items) = synthetic_recording(transitions);
    let len = bytes.len() as u64;

    let path = std::env::temp_dir().join(format!("tcpstate-bench-{}.tcpsrec", std::process::id()));
    let file_ok = std::fs::write(&path, &bytes).is_ok();

    let start = Instant::now();
    let counted = decode_all(RecordingReader::from_bytes(bytes).expect("own recording"));
    let from_memory = start.elapsed();
    assert_eq!(counted, (items, transitions));

    let from_file = file_ok.then(|| {
        let reader = RecordingReader::open(&path).expect("own recording");
        let start = Instant::now();
        let counted = decode_all(reader);
        let took = start.elapsed();
        assert_eq!(counted, (items, transitions));
        took
    });
    let _ = std::fs::remove_file(&path);
    DecodeReport {
        items,
        transitions,
        bytes: len,
        from_memory,
        from_file,
    }
}

/// Times encoding `items` synthetic items (made beforehand) into blocks
/// of 256 KiB, as the writer does, without the file I/O. Returns the time
/// and the bytes.
pub fn bench_encode(items: usize) -> (Duration, usize) {
    let items = Churn::new(7).take_items(items);
    let start = Instant::now();
    let bytes = super::encode_to_vec(&sample_header(), None, &items, 256 << 10);
    (start.elapsed(), std::hint::black_box(bytes).len())
}

/// (items, transitions) read.
fn decode_all(mut reader: RecordingReader) -> (u64, u64) {
    let mut batch = Vec::new();
    let (mut items, mut transitions, mut check) = (0u64, 0u64, 0u64);
    while reader.next_batch(&mut batch).expect("own recording") {
        items += batch.len() as u64;
        for item in &batch {
            if let Item::Transition(t) = item {
                transitions += 1;
                check = check.wrapping_add(t.ts_boot_ns ^ t.skaddr ^ u64::from(t.local.port));
            }
        }
    }
    std::hint::black_box(check);
    (items, transitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The release-build measurements; too slow for the default run.
    #[test]
    #[ignore]
    fn decode_10m() {
        let report = bench_decode(10_000_000);
        println!(
            "{} items ({} transitions), {} bytes = {:.2} bytes/transition",
            report.items,
            report.transitions,
            report.bytes,
            report.bytes as f64 / report.transitions as f64
        );
        println!(
            "decode from memory: {:.3} s = {:.1} M transitions/s",
            report.from_memory.as_secs_f64(),
            report.transitions_per_sec(report.from_memory) / 1e6
        );
        if let Some(took) = report.from_file {
            println!(
                "decode from file:   {:.3} s = {:.1} M transitions/s",
                took.as_secs_f64(),
                report.transitions_per_sec(took) / 1e6
            );
        }
    }

    #[test]
    #[ignore]
    fn encode_1m() {
        let (took, bytes) = bench_encode(1_000_000);
        println!(
            "encode: 1000000 items in {:.3} s = {:.1} M items/s ({bytes} bytes)",
            took.as_secs_f64(),
            1.0 / took.as_secs_f64()
        );
    }

    #[test]
    #[ignore]
    fn sizes() {
        for (name, churn) in [
            ("busy (8 µs between items)", Churn::new(3)),
            ("moderate (80 µs)", Churn::with_arrivals(3, 600_000)),
            ("quiet (8 ms)", Churn::with_arrivals(3, 60_000_000)),
        ] {
            let r = measure_size(churn, 1_000_000, 256 << 10);
            println!(
                "{name}: {} items, {} transitions, {} blocks, {} bytes = {:.2} bytes/transition",
                r.items,
                r.transitions,
                r.blocks,
                r.bytes,
                r.bytes_per_transition()
            );
        }
    }
}

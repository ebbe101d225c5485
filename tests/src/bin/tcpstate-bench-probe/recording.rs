//! Replay speed: decoding a synthetic recording, and writing one for the
//! full pipeline (`tcpstate stat --input`).
use std::{io::Write, path::Path, time::Instant};
use tcpstate::recording::bench;

pub fn decode(transitions: u64) -> serde_json::Value {
    let r = bench::bench_decode(transitions);
    serde_json::json!({
        "items": r.items,
        "transitions": r.transitions,
        "bytes": r.bytes,
        "from_memory_s": r.from_memory.as_secs_f64(),
        "from_memory_per_sec": r.transitions_per_sec(r.from_memory),
        "from_file_s": r.from_file.map(|d| d.as_secs_f64()),
        "from_file_per_sec": r.from_file.map(|d| r.transitions_per_sec(d)),
    })
}

/// The same synthetic churn as `bench_decode`, written to `path`.
pub fn make(transitions: u64, path: &Path) -> Result<serde_json::Value, String> {
    let start = Instant::now();
    let (bytes, items) = bench::synthetic_recording(transitions);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(&bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(serde_json::json!({
        "items": items,
        "transitions": transitions,
        "bytes": bytes.len(),
        "seconds": start.elapsed().as_secs_f64(),
    }))
}

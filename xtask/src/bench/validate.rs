//! The smoke check: the JSON is well formed and holds every figure (not
//! how fast anything is).

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

/// Per configuration, the figures every tcpstate configuration must have.
const TRACER_FIGURES: &[&str] = &[
    "connections_per_sec",
    "ratio_to_baseline",
    "tracer_cpu_s_per_m",
    "machine_added_us_per_transition",
    "lost_total",
    "kernel_skipped_total",
    "peak_rss_bytes",
    "transitions_per_wakeup",
    "bpf_ns_per_transition",
];
const TOP: &[&str] = &[
    "/machine/kernel",
    "/machine/cpu_model",
    "/machine/date_utc",
    "/command",
];
const NUMBERS: &[&str] = &[
    "/latency/max_ms",
    "/latency/median_ms",
    "/replay/decode_per_sec",
    "/replay/pipeline_per_sec",
    "/model_memory/bytes_per_connection",
    "/duration_s",
];

pub fn check_file(path: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not well-formed JSON", path.display()))?;
    check(&v).with_context(|| format!("{}", path.display()))
}

pub fn check(v: &Value) -> Result<()> {
    ensure!(
        v["schema"] == super::report::SCHEMA,
        "schema is {}, expected {}",
        v["schema"],
        super::report::SCHEMA
    );
    for p in TOP {
        ensure!(v.pointer(p).is_some_and(Value::is_string), "{p}: missing");
    }
    for p in NUMBERS {
        let n = v.pointer(p).and_then(Value::as_f64);
        ensure!(
            n.is_some_and(|n| n.is_finite() && n >= 0.0),
            "{p}: not a number"
        );
    }
    for phase in ["saturating", "rate_limited", "time_wait"] {
        let summary = v[phase]["summary"]
            .as_array()
            .with_context(|| format!("/{phase}/summary: missing"))?;
        let config = |id: &str| summary.iter().find(|c| c["config"] == id);
        let base = config("baseline").with_context(|| format!("{phase}: no baseline"))?;
        ensure!(
            base["connections_per_sec"]
                .as_f64()
                .is_some_and(|c| c > 0.0),
            "{phase}: the baseline made no connections"
        );
        for id in ["trace", "stat", "record", "serve"] {
            let c = config(id).with_context(|| format!("{phase}: no {id}"))?;
            for f in TRACER_FIGURES {
                if !c[f].is_number() {
                    bail!("{phase}/{id}/{f}: not measured ({})", c[f]);
                }
            }
        }
    }
    let targets = v["targets"].as_array().context("/targets: missing")?;
    ensure!(!targets.is_empty(), "/targets: empty");
    for t in targets {
        ensure!(
            t["figure"].is_string() && (t["met"].is_boolean() || t["met"].is_null()),
            "a target without figure or verdict: {t}"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        let tracer = |id: &str| {
            let mut c = json!({"config": id});
            for f in TRACER_FIGURES {
                c[*f] = json!(1.0);
            }
            c
        };
        let phase = json!({"summary": [
            {"config": "baseline", "connections_per_sec": 100.0},
            tracer("trace"), tracer("stat"), tracer("record"), tracer("serve"),
        ]});
        json!({
            "schema": super::super::report::SCHEMA,
            "command": "cargo xtask bench --smoke",
            "machine": {"kernel": "6.1", "cpu_model": "x", "date_utc": "now"},
            "saturating": phase.clone(),
            "rate_limited": phase.clone(),
            "time_wait": phase,
            "latency": {"max_ms": 1.0, "median_ms": 0.5},
            "replay": {"decode_per_sec": 1e6, "pipeline_per_sec": 1e5},
            "model_memory": {"bytes_per_connection": 300.0},
            "duration_s": 3.0,
            "targets": [{"figure": "x", "met": false}],
        })
    }

    #[test]
    fn accepts_a_complete_report() {
        check(&sample()).unwrap();
    }

    #[test]
    fn refuses_missing_figures() {
        let mut v = sample();
        v["saturating"]["summary"][1]["bpf_ns_per_transition"] = Value::Null;
        let e = check(&v).unwrap_err().to_string();
        assert!(e.contains("trace/bpf_ns_per_transition"), "{e}");
        let mut v = sample();
        v["replay"] = json!({});
        assert!(check(&v).is_err());
        let mut v = sample();
        v["targets"] = json!([]);
        assert!(check(&v).is_err());
    }
}

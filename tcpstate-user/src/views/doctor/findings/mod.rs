//! The findings: pure functions of a [`DoctorInput`], one module each. A
//! finding appears only when the data supports it.
mod aborts;
mod close_wait;
mod dead_peer;
mod established;
mod listen;
mod overflow;
mod port_exhaustion;
pub mod time_wait;

use super::{DoctorInput, Finding};

/// Every finding the data supports, most severe first (ties in a fixed
/// order: TIME_WAIT, its overflow, CLOSE_WAIT, listen queues, old
/// connections, aborts).
pub fn findings(input: &DoctorInput) -> Vec<Finding> {
    let mut out: Vec<Finding> = [
        time_wait::finding(input),
        overflow::finding(input),
        close_wait::finding(input),
        listen::finding(input),
        established::finding(input),
        aborts::finding(input),
        dead_peer::finding(input),
        port_exhaustion::finding(input),
    ]
    .into_iter()
    .flatten()
    .collect();
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    out
}

/// Evidence as JSON (plain structs: serialising cannot fail).
fn evidence<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

//! Number formatting for the table and the report.

/// With thousands separators, no decimals: 1234567 -> "1,234,567".
pub fn int(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let n = x.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// `decimals` places, or "-" when missing.
pub fn dec(x: Option<f64>, decimals: usize) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "-".into(),
    }
}

pub fn opt_int(x: Option<f64>) -> String {
    x.map_or("-".into(), int)
}

pub fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("-".into(), |b| {
        format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
    })
}

/// Millions per second: 19.3 M/s.
pub fn per_sec_m(x: f64) -> String {
    format!("{:.2} M/s", x / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(int(1_234_567.4), "1,234,567");
        assert_eq!(int(999.0), "999");
        assert_eq!(int(-1000.0), "-1,000");
        assert_eq!(dec(Some(0.8765), 2), "0.88");
        assert_eq!(dec(None, 2), "-");
        assert_eq!(mib(Some(3 * 1024 * 1024)), "3.0 MiB");
        assert_eq!(per_sec_m(19_300_000.0), "19.30 M/s");
    }
}

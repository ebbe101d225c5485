//! Reading what the tracers print: tcpstate's exit summary and wake-up
//! count, bpftrace's "Lost N events".

use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, Result};

/// The whole number just before `suffix` in `text` (first occurrence).
pub fn number_before(text: &str, suffix: &str) -> Option<u64> {
    let at = text.find(suffix)?;
    let digits: String = text[..at]
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().ok()
}

/// The decimal number just before `suffix` (e.g. 85.3 in "(85.3 transitions").
fn decimal_before(text: &str, suffix: &str) -> Option<f64> {
    let at = text.find(suffix)?;
    let start = text[..at]
        .rfind(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or(0, |i| i + 1);
    text[start..at].parse().ok()
}

/// tcpstate's exit summary: "N transitions seen, ... L lost in the kernel
/// (F ring full, B ring lock busy, S skipped by the kernel); ...".
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub seen: u64,
    pub lost: u64,
    /// The causes of `lost`, when this tcpstate prints them (it leaves out
    /// the ones that did not happen, and all of them when nothing was lost).
    pub causes: Option<LostCauses>,
}

/// Why tcpstate lost transitions, as its summary says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LostCauses {
    pub ring_full: u64,
    pub ring_busy: u64,
    pub skipped: u64,
}

impl std::ops::Add for LostCauses {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            ring_full: self.ring_full + other.ring_full,
            ring_busy: self.ring_busy + other.ring_busy,
            skipped: self.skipped + other.skipped,
        }
    }
}

pub fn tcpstate_summary(stderr: &str) -> Option<Summary> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains(" transitions seen"))?;
    let lost = number_before(line, " lost in the kernel")?;
    let after = &line[line.find(" lost in the kernel")?..];
    let listed = after
        .strip_prefix(" lost in the kernel (")
        .and_then(|rest| rest.split(')').next());
    let causes = match listed {
        Some(list) => {
            let part = |name: &str| number_before(list, name).unwrap_or(0);
            Some(LostCauses {
                ring_full: part(" ring full"),
                ring_busy: part(" ring lock busy"),
                skipped: part(" skipped by the kernel"),
            })
        }
        None if lost == 0 => Some(LostCauses::default()),
        None => None,
    };
    Some(Summary {
        seen: number_before(line, " transitions seen")?,
        lost,
        causes,
    })
}

/// "N wake-ups (X transitions per wake-up)", if this tcpstate prints it.
pub fn tcpstate_wakeups(stderr: &str) -> Option<(u64, Option<f64>)> {
    let line = stderr.lines().rev().find(|l| l.contains(" wake-ups"))?;
    let n = number_before(line, " wake-ups")?;
    Some((n, decimal_before(line, " transitions per wake-up")))
}

/// bpftrace's output file: its lines and the events it said it lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    pub lines: u64,
    pub lost: u64,
}

pub fn scan(reader: impl BufRead) -> Scan {
    let mut s = Scan::default();
    for line in reader.split(b'\n').map_while(Result::ok) {
        let line = String::from_utf8_lossy(&line);
        match line
            .strip_prefix("Lost ")
            .and_then(|rest| rest.strip_suffix(" events"))
            .and_then(|n| n.trim().parse::<u64>().ok())
        {
            Some(n) => s.lost += n,
            None => s.lines += 1,
        }
    }
    s
}

pub fn scan_file(path: &Path) -> Result<Scan> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(scan(BufReader::with_capacity(1 << 20, file)))
}

/// The last `n` non-empty lines, joined with " | ".
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    if lines.is_empty() {
        "(no output)".to_string()
    } else {
        lines[start..].join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary() {
        let text = "tcpstate: tracing TCP state transitions (Ctrl-C to stop)\n\
            tcpstate: 1234567 transitions seen, 12 shown, 89 lost in the kernel; 5 accept() owners (0 lost), 0 RSTs (0 lost); 0 connections evicted from a full table\n";
        assert_eq!(
            tcpstate_summary(text),
            Some(Summary {
                seen: 1_234_567,
                lost: 89,
                causes: None
            })
        );
        assert_eq!(tcpstate_summary("nothing"), None);
        let with_causes =
            "tcpstate: 10 transitions seen, 10 shown, 7 lost in the kernel (4 ring full, \
            3 skipped by the kernel); 0 accept() owners (0 lost), 0 RSTs (0 lost); 0 connections \
            evicted from a full table\n";
        assert_eq!(
            tcpstate_summary(with_causes).and_then(|s| s.causes),
            Some(LostCauses {
                ring_full: 4,
                ring_busy: 0,
                skipped: 3
            })
        );
        let none_lost =
            "tcpstate: 10 transitions seen, 10 shown, 0 lost in the kernel; 0 RSTs (0 lost)\n";
        assert_eq!(
            tcpstate_summary(none_lost).and_then(|s| s.causes),
            Some(LostCauses::default())
        );
    }

    #[test]
    fn wakeups() {
        let text = "tcpstate: 5120 wake-ups (85.3 transitions per wake-up)\n";
        assert_eq!(tcpstate_wakeups(text), Some((5120, Some(85.3))));
        assert_eq!(tcpstate_wakeups("tcpstate: 7 wake-ups\n"), Some((7, None)));
        assert_eq!(tcpstate_wakeups("no"), None);
    }

    #[test]
    fn bpftrace_lost() {
        let out = "Attaching 1 probe...\n1 2 x\nLost 120 events\n3 4 y\nLost 5 events\n";
        assert_eq!(
            scan(out.as_bytes()),
            Scan {
                lines: 3,
                lost: 125
            }
        );
    }

    #[test]
    fn tails() {
        assert_eq!(tail("a\n\nb\nc\n", 2), "b | c");
        assert_eq!(tail("", 2), "(no output)");
    }
}

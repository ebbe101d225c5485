//! The kernel's TCP counters (`/proc/net/netstat` TcpExt, `/proc/net/snmp`
//! Tcp). They are those of the reader's network namespace.
use serde::Serialize;
use std::collections::BTreeMap;

/// Counters by `Section.Name`, e.g. `TcpExt.ListenOverflows`, `Tcp.OutRsts`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct NetCounters(pub BTreeMap<String, i64>);

/// The sections kept.
const SECTIONS: [&str; 2] = ["TcpExt", "Tcp"];

impl NetCounters {
    /// Reads both files of the reader's namespace; an unreadable file
    /// leaves its counters out.
    pub fn read() -> Self {
        let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
        let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
        Self::parse(&[&netstat, &snmp])
    }

    /// Files made of line pairs, `Section: Name1 Name2 ...` then
    /// `Section: v1 v2 ...`. Lines that do not pair up are passed over.
    pub fn parse(files: &[&str]) -> Self {
        let mut out = BTreeMap::new();
        for text in files {
            let lines: Vec<&str> = text.lines().collect();
            for pair in lines.windows(2) {
                let (Some((section, names)), Some((again, values))) =
                    (pair[0].split_once(':'), pair[1].split_once(':'))
                else {
                    continue;
                };
                if section != again || !SECTIONS.contains(&section) {
                    continue;
                }
                // The names line is the one that does not parse as numbers.
                let values: Option<Vec<i64>> =
                    values.split_whitespace().map(|v| v.parse().ok()).collect();
                let Some(values) = values else { continue };
                let names: Vec<&str> = names.split_whitespace().collect();
                if names.len() != values.len() || names.iter().any(|n| n.parse::<i64>().is_ok()) {
                    continue;
                }
                for (name, value) in names.into_iter().zip(values) {
                    out.insert(format!("{section}.{name}"), value);
                }
            }
        }
        NetCounters(out)
    }

    pub fn get(&self, name: &str) -> Option<i64> {
        self.0.get(name).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

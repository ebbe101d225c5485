//! The `life` view: one record per finished connection, with its real owner.
use super::owner::{owner_text, OwnerView};
use crate::model::Connection;
use serde::Serialize;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StateTime {
    pub state: &'static str,
    /// None when the entry or exit of the state was not seen.
    pub ms: Option<f64>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LifeRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: u64,
    pub start_boot_ns: u64,
    pub end_boot_ns: Option<u64>,
    pub duration_ms: Option<f64>,
    pub family: &'static str,
    pub laddr: String,
    pub lport: u16,
    pub raddr: String,
    pub rport: u16,
    pub netns: u32,
    /// active, passive, listener, preexisting, unknown.
    pub open: &'static str,
    pub owner: Option<OwnerView>,
    pub closed_first: &'static str,
    pub end: Option<&'static str>,
    pub time_wait: &'static str,
    /// Transitions may have been missed (lost events): treat with care.
    pub uncertain: bool,
    pub states: Vec<StateTime>,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

impl From<&Connection> for LifeRecord {
    fn from(c: &Connection) -> Self {
        LifeRecord {
            kind: "connection",
            id: c.id,
            start_boot_ns: c.started_ns,
            end_boot_ns: c.ended_ns(),
            duration_ms: c.lifetime_ns().map(ms),
            family: c.family.name(),
            laddr: c.local.ip.to_string(),
            lport: c.local.port,
            raddr: c.remote.ip.to_string(),
            rport: c.remote.port,
            netns: c.netns,
            open: c.open.name(),
            owner: c.owner().as_ref().map(OwnerView::from),
            closed_first: c.closed_first.name(),
            end: c.end.map(|e| e.name()),
            time_wait: match c.time_wait {
                crate::model::TimeWaitFate::None => "none",
                crate::model::TimeWaitFate::Entered => "entered",
                crate::model::TimeWaitFate::Overflow => "overflow",
                crate::model::TimeWaitFate::Untracked => "untracked",
            },
            uncertain: c.uncertain,
            states: c
                .states()
                .filter(|v| v.state != crate::tcp::TcpState::Close)
                .map(|v| StateTime {
                    state: v.state.name(),
                    ms: v.duration_ns().map(ms),
                })
                .collect(),
        }
    }
}

pub const TABLE_HEADER: &str = "OWNER                      LOCAL                    REMOTE                   OPEN     CLOSED_FIRST END      TIME_WAIT        MS  STATES";

/// One table row for a finished connection.
pub fn table_row(c: &Connection) -> String {
    let states: Vec<String> = LifeRecord::from(c)
        .states
        .iter()
        .map(|s| match s.ms {
            Some(ms) => format!("{} {:.3}", s.state, ms),
            None => format!("{} -", s.state),
        })
        .collect();
    format!(
        "{:<26} {:<24} {:<24} {:<8} {:<12} {:<8} {:<9} {:>10}  {}{}",
        owner_text(c.owner().as_ref()),
        c.local.to_string(),
        c.remote.to_string(),
        c.open.name(),
        c.closed_first.name(),
        c.end.map_or("-", |e| e.name()),
        LifeRecord::from(c).time_wait,
        c.lifetime_ns()
            .map_or("-".to_string(), |ns| format!("{:.3}", ms(ns))),
        states.join(" > "),
        if c.uncertain {
            "  (uncertain: events were lost)"
        } else {
            ""
        }
    )
}

//! Checks of contrib/: the Prometheus alert rules (`promtool check rules`,
//! and `promtool test rules` on the synthetic series beside them) and the
//! Grafana dashboard (well-formed, every panel with a query).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::cmd::{self, phase};
use crate::prereqs;
use crate::workspace::Workspace;

pub const RULES: &str = "contrib/prometheus/tcpstate-rules.yml";
pub const RULES_TEST: &str = "contrib/prometheus/tcpstate-rules.test.yml";
pub const DASHBOARD: &str = "contrib/grafana/tcpstate.json";

pub fn check(ws: &Workspace) -> Result<()> {
    let promtool = prereqs::ensure_program(
        "promtool",
        "prometheus",
        "checks and unit-tests the alert rules",
    )?;
    cmd::run(
        Command::new(&promtool)
            .args(["check", "rules"])
            .arg(ws.root.join(RULES)),
    )?;
    let test = ws.root.join(RULES_TEST);
    // promtool resolves rule_files relative to the test file's directory.
    cmd::run(
        Command::new(&promtool)
            .args(["test", "rules"])
            .arg(test.file_name().expect("a file name"))
            .current_dir(test.parent().expect("a directory")),
    )?;
    let panels = dashboard_queries(&ws.root.join(DASHBOARD))?;
    phase(format!(
        "alert rules checked and unit-tested (promtool); dashboard: {panels} panels, each with a query"
    ));
    Ok(())
}

/// Parses the dashboard and returns its number of panels; fails unless every
/// panel (rows aside) has at least one Prometheus query.
fn dashboard_queries(path: &Path) -> Result<usize> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let dashboard: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let panels = dashboard["panels"]
        .as_array()
        .with_context(|| format!("{} has no panels", path.display()))?;
    let mut count = 0;
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        let exprs = panel["targets"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter(|t| t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()))
                    .count()
            })
            .unwrap_or(0);
        anyhow::ensure!(exprs > 0, "dashboard panel {title:?} has no PromQL query");
        count += 1;
    }
    anyhow::ensure!(count > 0, "{} has no panels", path.display());
    Ok(count)
}

//! The fleet material in contrib/ against the real thing: the alert rules
//! loaded by a real Prometheus that scrapes a real `tcpstate serve` during a
//! real CLOSE_WAIT leak, and every Grafana panel's query answered by that
//! Prometheus under connection churn.
use serde_json::Value;
use std::{
    path::{Path, PathBuf},
    time::Instant,
};
use tcpstate_tests::{
    millis,
    prometheus::Prometheus,
    require_root,
    running::{Peer, Running},
    secs,
    workload::{self, connect_and_close, Scratch},
};

const PEER: &str = env!("CARGO_BIN_EXE_tcpstate-test-peer");

fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../contrib")
        .join(path)
}

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    format!("127.0.0.1:{port}")
}

/// The shipped rules with every `for:` shortened to `for_`, so a test sees
/// an alert go pending and then fire within seconds; everything else as
/// shipped.
fn rules_with_short_for(scratch: &Scratch, for_: &str) -> PathBuf {
    let text = std::fs::read_to_string(contrib("prometheus/tcpstate-rules.yml"))
        .expect("contrib/prometheus/tcpstate-rules.yml");
    let mut replaced = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let body = line.trim_start();
            if body.starts_with("for:") {
                replaced += 1;
                format!("{}for: {for_}", &line[..line.len() - body.len()])
            } else {
                line.to_string()
            }
        })
        .collect();
    assert!(replaced >= 2, "no `for:` to shorten in the rules: {text}");
    let path = scratch.path("tcpstate-rules.yml");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write the test rules");
    path
}

#[test]
fn the_close_wait_leak_alert_goes_pending_then_fires_on_a_real_leak() {
    require_root();
    const LEAKED: usize = 3;
    let scratch = Scratch::new("fleet-alert");
    let target = free_addr();
    let serve = Running::start(&["serve", "--metrics", &target, "--threshold", "1s"]);
    let prometheus = Prometheus::start(&target, &[rules_with_short_for(&scratch, "4s")]);
    let leaky = Peer::start(PEER, &["serve", "leak", &LEAKED.to_string()]);
    connect_and_close(leaky.port, LEAKED);
    leaky.wait_done();

    let deadline = Instant::now() + secs(60);
    let ours = |alert: &&Value| {
        alert["labels"]["alertname"] == "TcpstateCloseWaitLeak"
            && alert["labels"]["pid"] == leaky.pid.to_string().as_str()
    };
    let mut seen_pending = false;
    let firing = loop {
        if let Some(alerts) = prometheus.alerts() {
            if let Some(alert) = alerts.iter().find(ours) {
                match alert["state"].as_str() {
                    Some("pending") => seen_pending = true,
                    Some("firing") => break alert.clone(),
                    other => panic!("alert state {other:?}: {alert}"),
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "TcpstateCloseWaitLeak for pid {} did not fire within 60 s; alerts: {:?}\nPrometheus log:\n{}",
            leaky.pid,
            prometheus.alerts(),
            prometheus.log()
        );
        std::thread::sleep(millis(200));
    };
    // Evaluated every second with `for: 4s`: at least one evaluation saw it
    // pending before it fired.
    assert!(seen_pending, "never seen pending before firing: {firing}");
    assert_eq!(firing["labels"]["comm"], "tcpstate-test-p", "{firing}");
    assert_eq!(firing["labels"]["severity"], "warning", "{firing}");
    assert_eq!(
        firing["value"].as_str().and_then(|v| v.parse::<f64>().ok()),
        Some(LEAKED as f64),
        "{firing}"
    );
    let summary = firing["annotations"]["summary"]
        .as_str()
        .expect("a summary");
    assert!(
        summary.contains(&format!("pid {}", leaky.pid)) && summary.contains("3 CLOSE_WAIT"),
        "{summary}"
    );
    assert!(
        firing["annotations"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("tcpstate leaks")),
        "{firing}"
    );
    // Every shipped rule loaded; none of the others fires on this host's
    // normal state (no overflow, nothing lost, no connect() out of ports).
    let mut rules = prometheus.alerting_rules().expect("rules");
    rules.sort();
    assert_eq!(
        rules,
        [
            "TcpstateAcceptBacklog",
            "TcpstateCloseWaitLeak",
            "TcpstateLostEvents",
            "TcpstatePortExhaustion",
            "TcpstateTimeWaitOverflow"
        ]
    );
    drop(leaky);
    drop(prometheus);
    let (_, _, status) = serve.interrupt();
    assert!(status.success());
}

/// Every `expr` of every panel, with Grafana's variables given values.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(contrib("grafana/tcpstate.json"))
        .expect("contrib/grafana/tcpstate.json");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().expect("a panel title").to_string();
        let targets = panel["targets"].as_array().expect("panel targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("a PromQL expr");
            let expr = expr
                .replace("$__rate_interval", "30s")
                .replace("$instance", ".*");
            assert!(!expr.contains('$'), "a variable left in {title}: {expr}");
            queries.push((title.clone(), expr));
        }
    }
    queries
}

#[test]
fn every_dashboard_panel_returns_data_under_churn() {
    require_root();
    let queries = dashboard_queries();
    assert!(queries.len() >= 10, "{queries:?}");
    let target = free_addr();
    let serve = Running::start(&["serve", "--metrics", &target, "--threshold", "1s"]);
    let prometheus = Prometheus::start(&target, &[]);
    // What the panels show: a CLOSE_WAIT leak, a listener that never
    // accepts, and rounds of connections that leave TIME_WAIT.
    let leaky = Peer::start(PEER, &["serve", "leak", "2"]);
    connect_and_close(leaky.port, 2);
    leaky.wait_done();
    let stalled = Peer::start(PEER, &["stall"]);
    connect_and_close(stalled.port, 2);

    let deadline = Instant::now() + secs(60);
    let mut missing: Vec<&(String, String)> = queries.iter().collect();
    while !missing.is_empty() {
        assert!(
            Instant::now() < deadline,
            "panels without data after 60 s of churn:\n{}\nPrometheus log:\n{}",
            missing
                .iter()
                .map(|(title, expr)| format!("  {title}: {expr}"))
                .collect::<Vec<_>>()
                .join("\n"),
            prometheus.log()
        );
        let (socket, _) = workload::bound_listener();
        workload::client_closes_first(socket, 20);
        std::thread::sleep(millis(500));
        missing.retain(|(_, expr)| {
            prometheus
                .query(expr)
                .is_none_or(|result| result.is_empty())
        });
    }
    drop((leaky, stalled, prometheus));
    let (_, _, status) = serve.interrupt();
    assert!(status.success());
}

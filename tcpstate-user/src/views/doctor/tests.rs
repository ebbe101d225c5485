//! The findings on synthetic inputs, one group per finding, and the readers
//! of /proc on sample text.
use super::{
    counters::{CounterDelta, NetCounters},
    facts::*,
    findings::{findings, time_wait::pressure},
    notes::notes,
    DoctorInput, DoctorReport, DoctorSysctls, Finding, Kernel, Severity,
};

fn sysctls() -> DoctorSysctls {
    DoctorSysctls {
        tw_reuse: Some(2),
        tw_reuse_delay_ms: None,
        timestamps: Some(1),
        max_tw_buckets: Some(131_072),
        local_port_range: Some((32768, 60999)),
        fin_timeout: Some(60),
        keepalive_time: Some(7200),
        keepalive_intvl: Some(75),
        keepalive_probes: Some(9),
        syncookies: Some(1),
        somaxconn: Some(4096),
        max_syn_backlog: Some(512),
        rfc1337: Some(0),
        tw_recycle: None,
    }
}

/// Counters with `moved` grown by the given amounts over the watch.
fn counters(moved: &[(&str, i64)]) -> CounterDelta {
    let mut start = NetCounters::default();
    let mut end = NetCounters::default();
    for name in super::counters::SHOWN {
        start.0.insert(name.to_string(), 100);
        end.0.insert(name.to_string(), 100);
    }
    for (name, n) in moved {
        end.0.insert(name.to_string(), 100 + n);
    }
    CounterDelta { start, end }
}

/// A quiet host: nothing happened during a 30 s watch.
fn quiet() -> DoctorInput {
    DoctorInput {
        kernel: Kernel::parse("6.18.44-fc-v657"),
        sysctls: sysctls(),
        counters: counters(&[]),
        watch_secs: 30.0,
        facts: ModelFacts {
            close_wait_threshold_s: 15.0,
            established: EstablishedFacts {
                threshold_s: 7200.0,
                ..EstablishedFacts::default()
            },
            ..ModelFacts::default()
        },
        tracer: Vec::new(),
        dead_peers: Default::default(),
    }
}

fn process(tgid: u32, comm: &str) -> Process {
    Process {
        tgid: Some(tgid),
        comm: Some(comm.to_string()),
    }
}

fn only(findings: &[Finding], id: &str) -> Finding {
    let found: Vec<&Finding> = findings.iter().filter(|f| f.id == id).collect();
    assert_eq!(found.len(), 1, "{id} in {findings:#?}");
    found[0].clone()
}

fn mentions(lines: &[String], text: &str) -> bool {
    lines.iter().any(|l| l.contains(text))
}

// --- zero traffic ----------------------------------------------------------

#[test]
fn zero_traffic_gives_no_finding_but_the_notes() {
    let input = quiet();
    assert_eq!(findings(&input), vec![]);
    let notes = notes(&input);
    let ids: Vec<&str> = notes.iter().map(|n| n.id).collect();
    for id in [
        "tcp_tw_recycle",
        "tcp_fin_timeout",
        "tcp_max_tw_buckets",
        "tcp_tw_reuse",
    ] {
        assert!(ids.contains(&id), "{ids:?}");
    }
    let recycle = &notes[0].text;
    assert!(
        recycle.contains("does not exist") && recycle.contains("4.12"),
        "{recycle}"
    );
    assert!(recycle.contains("NAT"), "{recycle}");
    let fin = &notes[1].text;
    assert!(fin.contains("does not shorten TIME_WAIT") && fin.contains("FIN_WAIT2"));
    assert!(fin.contains("60 s") && fin.contains("TCP_TIMEWAIT_LEN"));
    let report = DoctorReport::new("h".into(), &input);
    assert!(report.findings.is_empty());
    assert!(super::render::text(&report).contains("No findings"));
}

#[test]
fn an_old_kernel_with_tcp_tw_recycle_is_called_old() {
    let mut input = quiet();
    input.kernel = Kernel::parse("4.9.0-13-amd64");
    input.sysctls.tw_recycle = Some(0);
    let notes = notes(&input);
    let recycle = &notes[0].text;
    assert!(recycle.contains("older than Linux 4.12"), "{recycle}");
    assert!(recycle.contains("4.9.0-13-amd64"), "{recycle}");
    let reuse = notes.iter().find(|n| n.id == "tcp_tw_reuse").unwrap();
    assert!(reuse.text.contains("no loopback-only 2"), "{}", reuse.text);
}

#[test]
fn lost_events_add_a_caveat() {
    let mut input = quiet();
    input.facts.lost_events = 3;
    assert!(notes(&input).iter().any(|n| n.id == "lost-events"));
}

// --- port exhaustion math --------------------------------------------------

fn destination(in_range: usize, live: usize, created_in_range: u64) -> TimeWaitDestination {
    TimeWaitDestination {
        remote: "10.0.0.9:5432".into(),
        loopback: false,
        now: in_range,
        in_range,
        live_in_range: live,
        created: created_in_range,
        created_in_range,
    }
}

#[test]
fn a_rate_whose_steady_state_exceeds_the_range_exhausts_it() {
    // 1000 ports; 200 created in 10 s: 20/s, 1200 held after 60 s.
    let p = pressure(&destination(200, 0, 200), 1000, 10.0, false, 1.0);
    assert!((p.created_per_s - 20.0).abs() < 1e-9);
    assert!((p.steady_state - 1200.0).abs() < 1e-9);
    assert!(p.exhausted_at_this_rate && !p.exhausted_now);
    // Earliest: the 800 free ports at 20/s; latest: all 1000 if the
    // 200 held now expired at once.
    assert_eq!(p.seconds_to_exhaustion, Some((40.0, 50.0)));
    assert_eq!(p.severity(), Severity::Critical);
    assert!((p.time_wait_share - 0.2).abs() < 1e-9);
}

#[test]
fn open_connections_hold_ports_too() {
    let p = pressure(&destination(200, 100, 200), 1000, 10.0, false, 1.0);
    assert_eq!(p.seconds_to_exhaustion, Some((35.0, 45.0)));
}

#[test]
fn a_rate_below_the_range_does_not_exhaust_it() {
    // 5/s: 300 after 60 s, of 1000.
    let p = pressure(&destination(50, 0, 50), 1000, 10.0, false, 1.0);
    assert!(!p.exhausted_at_this_rate);
    assert_eq!(p.seconds_to_exhaustion, None);
    assert_eq!(p.severity(), Severity::Info);
    // 10/s: 600 of 1000, more than half.
    let p = pressure(&destination(100, 0, 100), 1000, 10.0, false, 1.0);
    assert_eq!(p.severity(), Severity::Warning);
}

#[test]
fn a_range_already_used_up_is_exhausted_now() {
    let p = pressure(&destination(1000, 0, 0), 1000, 10.0, false, 1.0);
    assert!(p.exhausted_now);
    assert_eq!(p.seconds_to_exhaustion, Some((0.0, 0.0)));
    assert_eq!(p.severity(), Severity::Critical);
}

#[test]
fn tw_reuse_shortens_what_blocks_a_port_to_its_delay() {
    // 20/s with reuse after 1 s: 20 ports blocked, not 1200.
    let p = pressure(&destination(200, 0, 200), 1000, 10.0, true, 1.0);
    assert!(!p.exhausted_at_this_rate);
    assert_eq!(p.seconds_to_exhaustion, None);
    // Relying on tcp_tw_reuse: still worth a warning.
    assert_eq!(p.severity(), Severity::Warning);
    // Even reuse cannot keep up with 2000/s over 1000 ports.
    let p = pressure(&destination(20_000, 0, 20_000), 1000, 10.0, true, 1.0);
    assert!(p.exhausted_now || p.exhausted_at_this_rate);
    assert_eq!(p.severity(), Severity::Critical);
}

#[test]
fn no_watch_means_no_rate() {
    let p = pressure(&destination(10, 0, 10), 1000, 0.0, false, 1.0);
    assert_eq!(p.created_per_s, 0.0);
    assert!(!p.exhausted_at_this_rate);
}

// --- TIME_WAIT -------------------------------------------------------------

fn client_churn(input: &mut DoctorInput, created: u64, loopback: bool) {
    input.facts.time_wait = TimeWaitFacts {
        now: created as usize,
        created,
        closed_first_local: created as usize,
        by_owner: vec![TimeWaitOwner {
            process: process(4242, "fetcher"),
            now: created as usize,
            created,
            created_passive: 0,
        }],
        by_destination: vec![TimeWaitDestination {
            remote: if loopback {
                "127.0.0.1:8080".into()
            } else {
                "10.0.0.9:5432".into()
            },
            loopback,
            now: created as usize,
            in_range: created as usize,
            created,
            created_in_range: created,
            ..TimeWaitDestination::default()
        }],
        ..TimeWaitFacts::default()
    };
}

#[test]
fn client_churn_names_the_process_and_the_destination_and_the_time_left() {
    let mut input = quiet();
    // 600/s for 30 s towards one remote destination: 36,000 after 60 s,
    // over the 28,232 ports.
    client_churn(&mut input, 18_000, false);
    let all = findings(&input);
    let f = only(&all, "time-wait");
    assert_eq!(f.severity, Severity::Critical);
    assert!(f.title.contains("10.0.0.9:5432"), "{}", f.title);
    assert!(f.title.contains("runs out"), "{}", f.title);
    assert_eq!(f.evidence["by_owner"][0]["tgid"], 4242);
    assert_eq!(f.evidence["by_owner"][0]["comm"], "fetcher");
    let dest = &f.evidence["by_destination"][0];
    assert_eq!(dest["remote"], "10.0.0.9:5432");
    assert_eq!(dest["range_size"], 28232);
    assert_eq!(dest["exhausted_at_this_rate"], true);
    let (early, late) = (
        dest["seconds_to_exhaustion"][0].as_f64().unwrap(),
        dest["seconds_to_exhaustion"][1].as_f64().unwrap(),
    );
    // (28232 - 18000) / 600 and 28232 / 600.
    assert!((early - 17.05).abs() < 0.01 && (late - 47.05).abs() < 0.01);
    assert!(mentions(&f.details, "4242/fetcher"));
    assert!(mentions(
        &f.advice,
        "closes first: here mostly 4242/fetcher"
    ));
    assert!(mentions(&f.advice, "keep-alive"));
    assert!(mentions(&f.advice, "only helps outgoing connections"));
    assert!(mentions(&f.advice, "timestamps"));
    assert!(mentions(
        &f.advice,
        "2 = loopback only (the default since Linux 4.18)"
    ));
    // The pressed destination is remote: the default 2 does not help.
    assert!(mentions(&f.advice, "does not apply to them; 1 would"));
    assert!(mentions(
        &f.advice,
        "ip_local_port_range (now 32768 60999: 28232 ports)"
    ));
    assert!(mentions(&f.advice, "more destination addresses"));
}

#[test]
fn loopback_churn_is_covered_by_the_default_tw_reuse() {
    let mut input = quiet();
    client_churn(&mut input, 18_000, true);
    let f = only(&findings(&input), "time-wait");
    // Reuse after 1 s: 600 ports blocked, not 36,000; but without it the
    // range would run out: a warning.
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.evidence["by_destination"][0]["tw_reuse_applies"], true);
    assert!(!mentions(&f.advice, "1 would"));
    assert!(mentions(
        &f.advice,
        "It already applies to the destinations under pressure"
    ));
    // With timestamps off, reuse does not apply.
    input.sysctls.timestamps = Some(0);
    let f = only(&findings(&input), "time-wait");
    assert_eq!(f.severity, Severity::Critical);
    assert!(mentions(&f.advice, "cannot work"));
}

#[test]
fn an_old_kernel_gets_tw_reuse_advice_without_the_value_2() {
    let mut input = quiet();
    input.kernel = Kernel::parse("4.14.0");
    input.sysctls.tw_reuse = Some(0);
    client_churn(&mut input, 18_000, false);
    let f = only(&findings(&input), "time-wait");
    assert!(
        mentions(&f.advice, "knows 0 (off) and 1 (on)"),
        "{:#?}",
        f.advice
    );
}

#[test]
fn a_server_closing_first_gets_server_advice_and_no_port_advice() {
    let mut input = quiet();
    input.facts.time_wait = TimeWaitFacts {
        now: 20,
        created: 20,
        by_owner: vec![TimeWaitOwner {
            process: process(77, "server"),
            now: 20,
            created: 20,
            created_passive: 20,
        }],
        // Towards each client's ephemeral port; the server's local port is
        // its listening port, outside the range.
        by_destination: (0..20)
            .map(|i| TimeWaitDestination {
                remote: format!("10.0.0.{i}:40000"),
                now: 1,
                created: 1,
                ..TimeWaitDestination::default()
            })
            .collect(),
        ..TimeWaitFacts::default()
    };
    let f = only(&findings(&input), "time-wait");
    assert_eq!(f.severity, Severity::Info);
    assert!(f.title.contains("most caused by 77/server"), "{}", f.title);
    assert!(mentions(&f.details, "20 on connections it accepted"));
    assert!(mentions(&f.advice, "holds no ephemeral port"));
    assert!(!mentions(&f.advice, "ip_local_port_range"));
    assert_eq!(f.evidence["by_destination"], serde_json::json!([]));
}

#[test]
fn a_few_outgoing_time_wait_get_no_port_advice() {
    let mut input = quiet();
    // 30 in 30 s towards one destination: 60 held at most, of 28,232.
    client_churn(&mut input, 30, false);
    let f = only(&findings(&input), "time-wait");
    assert_eq!(f.severity, Severity::Info);
    assert!(mentions(&f.advice, "not short of ports"), "{:#?}", f.advice);
    assert!(!mentions(&f.advice, "tcp_tw_reuse"));
    assert!(!mentions(&f.advice, "Widen"));
}

#[test]
fn a_rate_beyond_tcp_max_tw_buckets_is_projected() {
    let mut input = quiet();
    input.sysctls.max_tw_buckets = Some(1000);
    // A server closing 30/s: 1800 after 60 s, over 1000 buckets.
    input.facts.time_wait = TimeWaitFacts {
        now: 900,
        created: 900,
        by_owner: vec![TimeWaitOwner {
            process: process(77, "server"),
            now: 900,
            created: 900,
            created_passive: 900,
        }],
        ..TimeWaitFacts::default()
    };
    let f = only(&findings(&input), "time-wait");
    assert_eq!(f.severity, Severity::Warning);
    assert!(
        mentions(
            &f.details,
            "would hold 1800 TIME_WAIT sockets, more than net.ipv4.tcp_max_tw_buckets (1000"
        ),
        "{:#?}",
        f.details
    );
}

#[test]
fn time_wait_older_than_the_watch_has_no_owner_to_name() {
    let mut input = quiet();
    input.facts.time_wait = TimeWaitFacts {
        now: 500,
        by_owner: vec![TimeWaitOwner {
            now: 500,
            ..TimeWaitOwner::default()
        }],
        ..TimeWaitFacts::default()
    };
    let f = only(&findings(&input), "time-wait");
    assert_eq!(f.severity, Severity::Info);
    assert!(!f.title.contains("most caused by"), "{}", f.title);
    assert!(
        mentions(&f.advice, "watch longer (--for)"),
        "{:#?}",
        f.advice
    );
}

#[test]
fn tw_recycled_shows_tw_reuse_at_work() {
    let mut input = quiet();
    client_churn(&mut input, 100, true);
    input.counters = counters(&[("TcpExt.TWRecycled", 37)]);
    let f = only(&findings(&input), "time-wait");
    assert_eq!(f.evidence["tw_recycled"], 37);
    assert!(mentions(&f.details, "gave 37 TIME_WAIT ports"));
}

// --- TIME_WAIT overflow ----------------------------------------------------

#[test]
fn time_wait_overflow_from_the_kernel_counter() {
    let mut input = quiet();
    input.counters = counters(&[("TcpExt.TCPTimeWaitOverflow", 12)]);
    let f = only(&findings(&input), "time-wait-overflow");
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.evidence["tcp_time_wait_overflow"], 12);
    assert!(f
        .title
        .starts_with("12 connections closed without TIME_WAIT"));
    assert!(mentions(
        &f.advice,
        "Raising net.ipv4.tcp_max_tw_buckets (now 131072)"
    ));
    assert!(mentions(&f.advice, "a few hundred bytes"));
    // 131072 * 256 bytes = 32 MiB.
    assert!(mentions(&f.advice, "about 32 MiB"));
    assert!(mentions(&f.advice, "Lowering it is no fix"));
    assert!(mentions(&f.advice, "RFC 1337"));
}

#[test]
fn time_wait_overflow_seen_by_the_model_alone() {
    let mut input = quiet();
    input.facts.time_wait.overflow_closes = 4;
    let f = only(&findings(&input), "time-wait-overflow");
    assert_eq!(f.evidence["overflowed_closes_seen"], 4);
    // A counter that went down (a reset namespace) is not an overflow.
    let mut input = quiet();
    input.counters = counters(&[("TcpExt.TCPTimeWaitOverflow", -5)]);
    assert!(findings(&input).is_empty());
}

// --- CLOSE_WAIT ------------------------------------------------------------

fn leak(tgid: u32, count: usize) -> CloseWaitLeak {
    CloseWaitLeak {
        process: process(tgid, "leaky"),
        cmdline: Some("/usr/bin/leaky --serve".into()),
        count,
        oldest_age_s: 95.0,
        age_is_lower_bound: true,
        local_ports: vec![9100],
        remote_peers: count,
    }
}

#[test]
fn close_wait_leak_names_the_process_and_says_no_sysctl_fixes_it() {
    let mut input = quiet();
    input.facts.close_wait = vec![leak(31, 37)];
    let f = only(&findings(&input), "close-wait-leak");
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.evidence["processes"][0]["tgid"], 31);
    assert_eq!(f.evidence["processes"][0]["count"], 37);
    assert_eq!(f.evidence["total"], 37);
    assert!(
        f.title.contains("37 sockets held by 31/leaky"),
        "{}",
        f.title
    );
    assert!(mentions(&f.details, "the oldest at least 95 s"));
    assert!(mentions(&f.details, "/usr/bin/leaky --serve"));
    assert!(mentions(&f.advice, "only the program can fix it"));
    assert!(mentions(&f.advice, "No sysctl fixes a CLOSE_WAIT leak"));
}

#[test]
fn a_thousand_leaked_sockets_are_critical() {
    let mut input = quiet();
    input.facts.close_wait = vec![leak(31, 900), leak(32, 100)];
    let f = only(&findings(&input), "close-wait-leak");
    assert_eq!(f.severity, Severity::Critical);
    assert!(
        f.title.contains("1000 sockets in 2 processes"),
        "{}",
        f.title
    );
}

// --- listen queues ---------------------------------------------------------

#[test]
fn listen_overflows_are_critical_with_somaxconn_advice() {
    let mut input = quiet();
    input.counters = counters(&[("TcpExt.ListenOverflows", 40), ("TcpExt.ListenDrops", 42)]);
    input.facts.listen_queues = vec![ListenQueue {
        local: "0.0.0.0:8080".into(),
        owner: process(9, "api"),
        queued: 129,
        backlog: 128,
    }];
    let f = only(&findings(&input), "listen-overflow");
    assert_eq!(f.severity, Severity::Critical);
    assert_eq!(f.evidence["listen_overflows"], 40);
    assert_eq!(f.evidence["listen_drops"], 42);
    assert!(mentions(
        &f.details,
        "0.0.0.0:8080 (9/api): 129 connections waiting for accept(), backlog 128 — full"
    ));
    assert!(mentions(&f.advice, "net.core.somaxconn = 4096"));
    assert!(mentions(&f.advice, "accept() fast enough"));
    assert!(mentions(&f.advice, "tcp_max_syn_backlog (now 512)"));
    assert!(mentions(&f.advice, "SYN cookies"));
}

#[test]
fn never_accepted_close_wait_is_a_listen_finding() {
    let mut input = quiet();
    input.facts.accept_backlog = vec![AcceptBacklog {
        listener: Some("127.0.0.1:7000".into()),
        listener_owner: process(5, "stalled"),
        count: 4,
        oldest_age_s: 3.0,
    }];
    let f = only(&findings(&input), "listen-overflow");
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.evidence["accept_backlog"][0]["listener_owner"]["tgid"], 5);
    assert!(mentions(
        &f.details,
        "4 connections in CLOSE_WAIT never accepted"
    ));
    assert!(mentions(&f.advice, "not accepting at all"));
}

#[test]
fn a_queue_with_room_is_no_finding() {
    let mut input = quiet();
    input.facts.listen_queues = vec![ListenQueue {
        local: "0.0.0.0:8080".into(),
        owner: process(9, "api"),
        queued: 3,
        backlog: 4096,
    }];
    assert!(findings(&input).is_empty());
}

#[test]
fn somaxconn_default_follows_the_kernel() {
    let mut input = quiet();
    input.kernel = Kernel::parse("4.19.0");
    input.counters = counters(&[("TcpExt.ListenDrops", 1)]);
    let f = only(&findings(&input), "listen-overflow");
    assert!(mentions(&f.advice, "128 on this kernel"));
}

// --- old ESTABLISHED -------------------------------------------------------

#[test]
fn old_established_without_keepalive_timer_is_a_warning() {
    let mut input = quiet();
    input.facts.established = EstablishedFacts {
        threshold_s: 7200.0,
        total: 12,
        predating_start: 3,
        old_by_owner: vec![OldEstablished {
            process: process(600, "dbclient"),
            count: 3,
            oldest_age_s: 9000.0,
            age_is_lower_bound: true,
            keepalive: KeepaliveTimers {
                keepalive: 1,
                no_timer: 2,
                unknown: 0,
            },
            remote_examples: vec!["10.1.1.1:5432".into()],
        }],
    };
    let f = only(&findings(&input), "old-established");
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.evidence["by_owner"][0]["tgid"], 600);
    assert_eq!(f.evidence["by_owner"][0]["keepalive"]["no_timer"], 2);
    assert!(mentions(&f.details, "at least since the start"));
    assert!(mentions(
        &f.advice,
        "applies only to sockets with SO_KEEPALIVE"
    ));
    assert!(mentions(&f.advice, "default is 7200"));
    assert!(mentions(&f.advice, "cannot be seen from the tracepoints"));
    // 7200 + 75 * 9 s.
    assert!(mentions(&f.advice, "after 2.2 h at the earliest"));
    // With keepalive everywhere, it is only information.
    input.facts.established.old_by_owner[0].keepalive = KeepaliveTimers {
        keepalive: 3,
        ..KeepaliveTimers::default()
    };
    assert_eq!(
        only(&findings(&input), "old-established").severity,
        Severity::Info
    );
}

// --- aborts, ordering, JSON --------------------------------------------------

#[test]
fn aborts_explain_each_counter() {
    let mut input = quiet();
    input.counters = counters(&[
        ("TcpExt.TCPAbortOnClose", 3),
        ("TcpExt.TCPAbortOnTimeout", 1),
    ]);
    let f = only(&findings(&input), "aborts");
    assert_eq!(f.severity, Severity::Info);
    assert_eq!(f.evidence["TcpExt.TCPAbortOnClose"], 3);
    assert!(mentions(
        &f.details,
        "TcpExt.TCPAbortOnClose +3: closed with data still unread"
    ));
    input.counters = counters(&[("TcpExt.TCPAbortOnMemory", 1)]);
    assert_eq!(
        only(&findings(&input), "aborts").severity,
        Severity::Warning
    );
}

#[test]
fn findings_come_most_severe_first_and_the_json_has_every_part() {
    let mut input = quiet();
    input.facts.close_wait = vec![leak(31, 5)];
    client_churn(&mut input, 18_000, false);
    input.counters = counters(&[("TcpExt.TCPAbortOnClose", 1), ("TcpExt.TW", 9)]);
    let report = DoctorReport::new("vm".into(), &input);
    let ids: Vec<&str> = report.findings.iter().map(|f| f.id).collect();
    assert_eq!(ids, ["time-wait", "close-wait-leak", "aborts"]);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["host"], "vm");
    assert_eq!(json["kernel"]["release"], "6.18.44-fc-v657");
    assert_eq!(json["kernel"]["major"], 6);
    assert_eq!(json["sysctls"]["net.ipv4.tcp_tw_reuse"], 2);
    assert_eq!(json["sysctls"]["net.core.somaxconn"], 4096);
    assert_eq!(
        json["sysctls"]["net.ipv4.ip_local_port_range"],
        serde_json::json!([32768, 60999])
    );
    assert!(json["sysctls"].get("net.ipv4.tcp_tw_recycle").is_none());
    assert_eq!(json["counters"]["start"]["TcpExt.TW"], 100);
    assert_eq!(json["counters"]["end"]["TcpExt.TW"], 109);
    assert_eq!(json["counters"]["delta"]["TcpExt.TW"], 9);
    assert_eq!(json["findings"][0]["severity"], "critical");
    assert!(json["notes"].as_array().unwrap().len() >= 4);
    let text = super::render::text(&report);
    assert!(text.contains("[CRITICAL] time-wait:"), "{text}");
    assert!(text.contains("TW +9"), "{text}");
}

// --- readers ---------------------------------------------------------------

#[test]
fn counters_parse_the_proc_layout() {
    let netstat = "TcpExt: SyncookiesSent TW TWRecycled ListenOverflows\n\
                   TcpExt: 0 612623 19186 5\n\
                   IpExt: InNoRoutes InOctets\n\
                   IpExt: 0 123\n";
    let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                Tcp: RtoAlgorithm MaxConn ActiveOpens CurrEstab\n\
                Tcp: 1 -1 800817 4\n";
    let c = NetCounters::parse(&[netstat, snmp]);
    assert_eq!(c.get("TcpExt.TW"), Some(612_623));
    assert_eq!(c.get("TcpExt.ListenOverflows"), Some(5));
    assert_eq!(c.get("Tcp.MaxConn"), Some(-1));
    assert_eq!(c.get("Tcp.ActiveOpens"), Some(800_817));
    assert_eq!(c.get("IpExt.InOctets"), None);
    assert_eq!(c.get("Ip.DefaultTTL"), None);
    let garbled = NetCounters::parse(&["TcpExt: A B\nTcpExt: 1\n"]);
    assert!(garbled.is_empty());
    let delta = CounterDelta {
        start: c.clone(),
        end: NetCounters::parse(&[&netstat.replace("19186", "19200"), snmp]),
    };
    assert_eq!(delta.delta("TcpExt.TWRecycled"), Some(14));
    assert_eq!(delta.delta("TcpExt.Nope"), None);
    assert_eq!(delta.view().delta["TcpExt.TWRecycled"], 14);
}

// --- the model's side --------------------------------------------------------

mod from_the_model {
    use super::super::facts::{CollectArgs, ModelFacts, Watch};
    use crate::{
        addr::Endpoint,
        model::{Model, ModelConfig},
        tcp::{TcpState, TcpState::*},
        testkit::{ep10 as ep, task, transition},
        wire::Transition,
    };

    const S: u64 = 1_000_000_000;

    #[allow(clippy::too_many_arguments)]
    fn t(
        ts: u64,
        skaddr: u64,
        local: Endpoint,
        remote: Endpoint,
        old: TcpState,
        new: TcpState,
        tgid: u32,
        comm: &str,
    ) -> Transition {
        Transition {
            local,
            remote,
            task: task(tgid, comm),
            netns: 1,
            ..transition(ts, skaddr, old, new)
        }
    }

    #[test]
    fn watch_and_collect_attribute_time_wait_and_find_old_connections() {
        let mut model = Model::new(ModelConfig {
            close_wait_leak_secs: 1,
            ..ModelConfig::default()
        });
        let mut watch = Watch::new((32768, 60999));
        let db = ep(9, 5432);
        let mut apply = |tr: Transition, watch: &mut Watch| {
            for ended in model.apply_transition(&tr) {
                watch.ended(&ended);
            }
        };
        // Three short connections that 100/fetcher closes first.
        for i in 0..3u64 {
            let (sk, local, ts) = (0x1000 + i, ep(1, 40_000 + i as u16), 10 * S + i * S);
            let unbound = ep(1, 0);
            apply(
                t(ts, sk, unbound, db, Close, SynSent, 100, "fetcher"),
                &mut watch,
            );
            apply(
                t(ts + 1, sk, local, db, SynSent, Established, 0, "swapper/0"),
                &mut watch,
            );
            apply(
                t(ts + 2, sk, local, db, Established, FinWait1, 100, "fetcher"),
                &mut watch,
            );
            apply(
                t(ts + 3, sk, local, db, FinWait1, FinWait2, 0, "swapper/0"),
                &mut watch,
            );
            apply(
                t(ts + 4, sk, local, db, FinWait2, Close, 0, "swapper/0"),
                &mut watch,
            );
        }
        // One long-lived connection of 200/poller, and one its peer closed.
        let (old, stuck) = (ep(1, 50_000), ep(1, 50_001));
        apply(
            t(S, 0x2000, ep(1, 0), db, Close, SynSent, 200, "poller"),
            &mut watch,
        );
        apply(
            t(S + 1, 0x2000, old, db, SynSent, Established, 0, "swapper/0"),
            &mut watch,
        );
        apply(
            t(S, 0x3000, ep(1, 0), db, Close, SynSent, 200, "poller"),
            &mut watch,
        );
        apply(
            t(
                S + 1,
                0x3000,
                stuck,
                db,
                SynSent,
                Established,
                0,
                "swapper/0",
            ),
            &mut watch,
        );
        apply(
            t(
                2 * S,
                0x3000,
                stuck,
                db,
                Established,
                CloseWait,
                0,
                "swapper/0",
            ),
            &mut watch,
        );
        let now = 20 * S;
        let facts = ModelFacts::collect(
            &model,
            &watch,
            &CollectArgs {
                now_ns: now,
                port_range: (32768, 60999),
                established_threshold_s: 15,
                dump: None,
                transitions: 17,
                lost_events: 0,
                cmdline: &|_| None,
            },
        );
        let tw = &facts.time_wait;
        assert_eq!((tw.now, tw.created), (3, 3));
        assert_eq!(tw.by_owner[0].process.tgid, Some(100));
        assert_eq!(tw.by_owner[0].process.comm.as_deref(), Some("fetcher"));
        assert_eq!((tw.by_owner[0].now, tw.by_owner[0].created), (3, 3));
        let dest = &tw.by_destination[0];
        assert_eq!(dest.remote, "10.0.0.9:5432");
        assert_eq!((dest.in_range, dest.created_in_range), (3, 3));
        // The two poller connections hold ports towards it too.
        assert_eq!(dest.live_in_range, 2);
        assert_eq!(facts.close_wait.len(), 1);
        assert_eq!(facts.close_wait[0].process.tgid, Some(200));
        assert_eq!(facts.close_wait[0].count, 1);
        let est = &facts.established;
        assert_eq!(est.total, 1);
        assert_eq!(est.old_by_owner.len(), 1);
        assert_eq!(est.old_by_owner[0].process.tgid, Some(200));
        assert!(!est.old_by_owner[0].age_is_lower_bound);
        assert_eq!(est.old_by_owner[0].keepalive.unknown, 1);
        assert!((est.old_by_owner[0].oldest_age_s - 19.0).abs() < 0.01);
    }
}

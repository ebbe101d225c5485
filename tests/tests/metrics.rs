//! `tcpstate serve`: Prometheus metrics from the live model, scraped with a
//! raw HTTP client and by a real Prometheus server (Debian's `prometheus`,
//! installed by `cargo xtask test`).
use serde_json::Value;
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    time::{Instant, SystemTime, UNIX_EPOCH},
};
use tcpstate::{recording::RecordingReader, source::Item, tcp::TcpState};
use tcpstate_tests::{
    kernel,
    prometheus::Prometheus,
    require_root,
    running::Running,
    workload::{self, Scratch, LISTENER_TRANSITIONS, TRANSITIONS_PER_CONNECTION},
};

/// How many time-wait sockets the kernel holds towards `remote` (`ss`).
fn kernel_time_wait_towards(remote: &SocketAddr) -> usize {
    let out = std::process::Command::new("ss")
        .args(["-Htan", "state", "time-wait", "dst", &remote.to_string()])
        .output()
        .expect("run ss (iproute2)");
    assert!(out.status.success(), "ss failed");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A listener (bound, not listening yet) on a loopback address of its own,
/// 127.X.Y.1, so that no TIME_WAIT socket left by earlier tests points at it.
fn own_loopback_listener() -> (socket2::Socket, SocketAddr) {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let ip = Ipv4Addr::new(
        127,
        100 + (nanos % 100) as u8,
        (nanos / 100 % 250) as u8 + 1,
        1,
    );
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any = SocketAddr::from((ip, 0));
    socket.bind(&any.into()).expect("bind");
    let addr = socket
        .local_addr()
        .expect("local_addr")
        .as_socket()
        .expect("inet");
    (socket, addr)
}

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// GET over a raw TCP connection: the body by Content-Length (then this
/// side closes first), chunked, or up to the server's close.
fn http_get(addr: &str, target: &str) -> HttpResponse {
    try_http_get(addr, target).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
}

/// [`http_get`], or the error connecting.
fn try_http_get(addr: &str, target: &str) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr)?;
    stream
        .set_read_timeout(Some(tcpstate_tests::secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: tcpstate-tests\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status = line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("status line from {addr}{target}: {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header line");
        let field = line.trim_end();
        if field.is_empty() {
            break;
        }
        let (name, value) = field.split_once(':').expect("header field");
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let mut response = HttpResponse {
        status,
        headers,
        body: String::new(),
    };
    let mut body = Vec::new();
    if let Some(length) = response.header("content-length") {
        body.resize(length.parse().expect("Content-Length"), 0);
        reader.read_exact(&mut body).expect("body");
    } else if response
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        loop {
            line.clear();
            reader.read_line(&mut line).expect("chunk size");
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap(), 16)
                .expect("chunk size");
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).expect("chunk");
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        reader.read_to_end(&mut body).expect("body");
    }
    response.body = String::from_utf8(body).expect("UTF-8 body");
    Ok(response)
}

/// Samples of an exposition, by `name{labels}` as written.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("series and value");
            (series.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

fn scrape(addr: &str) -> (String, BTreeMap<String, f64>) {
    let response = http_get(addr, "/metrics");
    assert_eq!(response.status, 200, "{}", response.body);
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert_eq!(response.header("connection"), Some("close"));
    let map = samples(&response.body);
    (response.body, map)
}

fn get(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

const FAMILIES: [(&str, &str); 17] = [
    ("tcpstate_sockets", "gauge"),
    ("tcpstate_process_sockets", "gauge"),
    ("tcpstate_time_wait_sockets", "gauge"),
    ("tcpstate_time_wait_destination_sockets", "gauge"),
    ("tcpstate_close_wait_suspects", "gauge"),
    ("tcpstate_close_wait_accept_queue_suspects", "gauge"),
    ("tcpstate_transitions_total", "counter"),
    ("tcpstate_connections_opened_total", "counter"),
    ("tcpstate_connections_closed_total", "counter"),
    ("tcpstate_time_wait_overflow_total", "counter"),
    ("tcpstate_lost_events_total", "counter"),
    ("tcpstate_lost_transitions_total", "counter"),
    ("process_cpu_seconds_total", "counter"),
    ("process_resident_memory_bytes", "gauge"),
    ("process_virtual_memory_bytes", "gauge"),
    ("process_start_time_seconds", "gauge"),
    ("process_open_fds", "gauge"),
];

#[test]
fn serve_exposes_the_live_model_while_recording() {
    require_root();
    let scratch = Scratch::new("serve");
    let recording = scratch.path("serve.rec");
    let addr = format!("127.0.0.1:{}", free_port());
    // Every process and destination its own series: earlier tests may have
    // left thousands of TIME_WAIT sockets (the bound is unit-tested).
    let running = Running::start(&[
        "serve",
        "--metrics",
        &addr,
        "--top-processes",
        "1000000",
        "--top-destinations",
        "1000000",
        "--record",
        recording.to_str().unwrap(),
    ]);

    let (text, before) = scrape(&addr);
    for (family, kind) in FAMILIES {
        let help = format!("# HELP {family} ");
        let ty = format!("# TYPE {family} {kind}\n");
        assert_eq!(text.matches(&help).count(), 1, "{family}: {text}");
        assert_eq!(text.matches(&ty).count(), 1, "{family}: {text}");
    }
    for state in [
        "ESTABLISHED",
        "LISTEN",
        "TIME_WAIT",
        "CLOSE_WAIT",
        "SYN_SENT",
    ] {
        assert!(
            before.contains_key(&format!("tcpstate_sockets{{state=\"{state}\"}}")),
            "{text}"
        );
    }
    // Our own listener, found by the start-up snapshot with its owner.
    let own_listener = format!(
        "tcpstate_process_sockets{{pid=\"{}\",comm=\"tcpstate\",state=\"LISTEN\"}}",
        running.pid()
    );
    assert!(get(&before, &own_listener) >= 1.0, "{text}");
    assert!(
        get(&before, "process_resident_memory_bytes") > 1e6,
        "{text}"
    );
    let started = get(&before, "process_start_time_seconds");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started > now - 120.0 && started <= now + 1.0,
        "{started} vs {now}"
    );

    // The scrape's own connection closes (this side first) after it was
    // rendered: let its transitions arrive before the workload.
    std::thread::sleep(tcpstate_tests::millis(300));
    const CONNECTIONS: usize = 25;
    let (socket, listen_addr) = own_loopback_listener();
    let rsts_before = kernel::out_rsts();
    workload::client_closes_first(socket, CONNECTIONS);
    std::thread::sleep(tcpstate_tests::millis(300));
    let (text, after) = scrape(&addr);
    // Exact counts need every transition: none lost (another tracer
    // running at the same time makes the kernel skip programs).
    for series in [
        "tcpstate_lost_events_total{event=\"transition\"}",
        "tcpstate_time_wait_overflow_total",
    ] {
        assert_eq!(get(&after, series), 0.0, "{series}: {text}");
    }

    let pair = "tcpstate_transitions_total{old=\"ESTABLISHED\",new=\"FIN_WAIT1\"}";
    // Every workload connection's client, and the first scrape's client.
    assert_eq!(
        get(&after, pair) - get(&before, pair),
        (CONNECTIONS + 1) as f64,
        "{text}"
    );
    let delta = |series: &str| get(&after, series) - get(&before, series);
    let opened = delta("tcpstate_connections_opened_total{open=\"active\"}");
    assert!(opened >= (CONNECTIONS + 1) as f64, "{opened}: {text}");
    let passive = delta("tcpstate_connections_opened_total{open=\"passive\"}");
    assert!(passive >= (CONNECTIONS + 1) as f64, "{passive}: {text}");
    let closed = delta("tcpstate_connections_closed_total{end=\"normal\"}");
    assert!(closed >= (2 * CONNECTIONS) as f64, "{closed}: {text}");
    // The workload's clients closed first: one TIME_WAIT each, towards the
    // listener, owned by this test process, exactly as many as the kernel
    // holds. Under churn the listener can answer a closed connection's last
    // segment with a RST (an ehash lookup race) that destroys that client's
    // time-wait socket: tcpstate follows it where the kernel reports RSTs
    // sent without a socket (6.10+), so each one missing must have come with
    // a RST it saw. Before 6.10 nothing reports that RST: each time-wait
    // socket tcpstate still holds beyond the kernel's must be one of the RSTs
    // the kernel counted as sent (Tcp OutRsts) during the workload.
    let destination = format!("tcpstate_time_wait_destination_sockets{{remote=\"{listen_addr}\"}}");
    let kernel = kernel_time_wait_towards(&listen_addr) as f64;
    let tcpstate = get(&after, &destination);
    let resets = if kernel::reports_resets_without_socket() {
        assert_eq!(tcpstate, kernel, "{text}");
        delta("tcpstate_events_total{event=\"reset\"}")
    } else {
        let sent = (kernel::out_rsts() - rsts_before) as f64;
        assert!(
            tcpstate >= kernel && tcpstate <= kernel + sent,
            "tcpstate {tcpstate} time-wait sockets, the kernel {kernel}, RSTs sent {sent}: {text}"
        );
        sent
    };
    assert!(
        kernel <= CONNECTIONS as f64 && kernel + resets >= CONNECTIONS as f64,
        "{kernel} time-wait sockets, {resets} RSTs: {text}"
    );
    let ours = format!(
        "tcpstate_process_sockets{{pid=\"{}\",comm=",
        std::process::id()
    );
    let our_time_wait: f64 = after
        .iter()
        .filter(|(series, _)| series.starts_with(&ours) && series.contains("TIME_WAIT"))
        .map(|(_, n)| n)
        .sum();
    assert!(our_time_wait >= kernel, "{text}");
    assert!(get(&after, "tcpstate_time_wait_sockets{closed_first=\"local\"}") >= kernel);

    // The index page, and nothing else.
    let index = http_get(&addr, "/");
    assert_eq!(index.status, 200);
    assert!(index.body.contains("/metrics"), "{}", index.body);
    assert_eq!(http_get(&addr, "/metrics/x").status, 404);

    let (_, stderr, status) = running.interrupt();
    assert!(status.success(), "{status:?} {stderr:#?}");
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("recorded") && l.contains("serve.rec")),
        "{stderr:#?}"
    );
    // The recording holds the same workload, every transition of it.
    let mut reader = RecordingReader::open(&recording).expect("the recording");
    let mut items = Vec::new();
    let mut on_port = 0;
    let mut pairs = 0;
    while reader.next_batch(&mut items).expect("readable") {
        for item in &items {
            if let Item::Transition(t) = item {
                let at = |ep: tcpstate::addr::Endpoint| SocketAddr::new(ep.ip, ep.port);
                if at(t.local) == listen_addr || at(t.remote) == listen_addr {
                    on_port += 1;
                    if (t.old, t.new) == (TcpState::Established, TcpState::FinWait1) {
                        pairs += 1;
                    }
                }
            }
        }
    }
    assert_eq!(
        on_port,
        CONNECTIONS * TRANSITIONS_PER_CONNECTION + LISTENER_TRANSITIONS
    );
    assert_eq!(pairs, CONNECTIONS);
}

#[test]
fn a_real_prometheus_scrapes_and_queries_the_metrics() {
    require_root();
    let deadline = Instant::now() + tcpstate_tests::secs(25);
    let target = format!("127.0.0.1:{}", free_port());
    let running = Running::start(&["serve", "--metrics", &target]);
    let prometheus = Prometheus::start(&target, &[]);
    // Something to count: TIME_WAIT and transitions.
    let (socket, _) = workload::bound_listener();
    workload::client_closes_first(socket, 10);

    // Until a scrape after the workload is in.
    let value = |sample: &Value| -> f64 {
        sample["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("a value: {sample}"))
    };
    let sockets = loop {
        let transitions = prometheus
            .query("sum(tcpstate_transitions_total)")
            .unwrap_or_default();
        if transitions.first().is_some_and(|t| value(t) >= 100.0) {
            if let Some(result) = prometheus.query("tcpstate_sockets") {
                break result;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no tcpstate metrics in Prometheus after 25 s; its log:\n{}",
            prometheus.log()
        );
        std::thread::sleep(tcpstate_tests::millis(250));
    };
    assert!(!sockets.is_empty());
    let mut by_state = BTreeMap::new();
    for sample in &sockets {
        let metric = &sample["metric"];
        assert_eq!(metric["__name__"], "tcpstate_sockets", "{sample}");
        assert_eq!(metric["job"], "tcpstate", "{sample}");
        assert_eq!(metric["instance"], target.as_str(), "{sample}");
        let state = metric["state"].as_str().expect("a state label").to_string();
        let n = value(sample);
        assert!(n >= 0.0 && n.fract() == 0.0, "{sample}");
        by_state.insert(state, n);
    }
    for state in ["ESTABLISHED", "LISTEN", "TIME_WAIT", "CLOSE_WAIT"] {
        assert!(by_state.contains_key(state), "{by_state:?}");
    }
    // tcpstate's own listener at least.
    assert!(by_state["LISTEN"] >= 1.0, "{by_state:?}");

    // The whole scrape was accepted: one bad line would fail it (up 0).
    let up = prometheus.query("up").expect("up");
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0]["value"][1], "1", "{up:?}\n{}", prometheus.log());
    let samples = prometheus
        .query("scrape_samples_scraped")
        .expect("scrape_samples_scraped");
    assert!(value(&samples[0]) > 40.0, "{samples:?}");
    let pairs = prometheus
        .query("tcpstate_transitions_total{old=\"ESTABLISHED\",new=\"FIN_WAIT1\"}")
        .expect("transitions");
    assert!(value(&pairs[0]) >= 10.0, "{pairs:?}");

    drop(prometheus);
    let (_, _, status) = running.interrupt();
    assert!(status.success());
}

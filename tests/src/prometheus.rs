//! A real Prometheus server (Debian's `prometheus`, installed by `cargo
//! xtask test`) scraping one target every second, optionally with rule files
//! evaluated every second, and a small client of its HTTP API.
use serde_json::Value;
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use crate::workload::Scratch;

/// A Prometheus server, killed (its directory removed) when dropped.
pub struct Prometheus {
    child: Child,
    addr: String,
    scratch: Scratch,
}

impl Prometheus {
    /// Scrapes `target` (host:port, job "tcpstate") every second and loads
    /// `rule_files`.
    pub fn start(target: &str, rule_files: &[PathBuf]) -> Prometheus {
        let binary = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .expect(
                "prometheus is not installed: `cargo xtask test` installs it (Debian package \
                 prometheus), or: apt-get install --no-install-recommends prometheus",
            );
        let scratch = Scratch::new("prometheus");
        let config = scratch.path("prometheus.yml");
        let rules: String = rule_files
            .iter()
            .map(|f| format!("  - '{}'\n", f.display()))
            .collect();
        let rules = if rules.is_empty() {
            String::new()
        } else {
            format!("rule_files:\n{rules}")
        };
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 {rules}scrape_configs:\n  - job_name: tcpstate\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write the config");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(scratch.path("prometheus.log")).expect("log file");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                scratch.path("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            addr,
            scratch,
        }
    }

    /// `/api/v1/query`'s result vector; None while Prometheus is not
    /// answering yet. Panics on a query Prometheus rejects.
    pub fn query(&self, query: &str) -> Option<Vec<Value>> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(query)))?;
        assert_eq!(data["resultType"], "vector", "{query}: {data}");
        data["result"].as_array().cloned()
    }

    /// The alerts of `/api/v1/alerts` (pending and firing).
    pub fn alerts(&self) -> Option<Vec<Value>> {
        self.api("/api/v1/alerts")?["alerts"].as_array().cloned()
    }

    /// The alerting rules Prometheus loaded (`/api/v1/rules`), by name.
    pub fn alerting_rules(&self) -> Option<Vec<String>> {
        let data = self.api("/api/v1/rules?type=alert")?;
        let groups = data["groups"].as_array()?;
        Some(
            groups
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .filter_map(|r| r["name"].as_str().map(str::to_string))
                .collect(),
        )
    }

    fn api(&self, target: &str) -> Option<Value> {
        let (status, body) = get(&self.addr, target).ok()?;
        if status == 503 {
            return None; // starting up
        }
        let value: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{target}: not JSON ({e}): {body}"));
        assert_eq!(value["status"], "success", "{target}: {value}");
        Some(value["data"].clone())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.scratch.path("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET over a fresh connection: the status and the body (Content-Length,
/// chunked, or up to the close).
fn get(addr: &str, target: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(crate::secs(10)))?;
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("status line from {addr}{target}: {line:?}"));
    let mut length = None;
    let mut chunked = false;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let field = line.trim_end();
        if field.is_empty() {
            break;
        }
        let (name, value) = field.split_once(':').expect("a header field");
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.trim().parse::<usize>().expect("Content-Length"));
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.trim().eq_ignore_ascii_case("chunked");
        }
    }
    let mut body = Vec::new();
    if let Some(length) = length {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    } else if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap(), 16)
                .expect("chunk size");
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok((status, String::from_utf8(body).expect("UTF-8 body")))
}

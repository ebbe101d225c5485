//! A minimal HTTP/1.1 server for scrapes: one request per connection
//! (`Connection: close`), GET and HEAD only, no request bodies, bounded
//! request heads, timeouts, and a bound on concurrent connections.
use std::{future::Future, io, sync::Arc, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

/// Largest request head (request line and headers) accepted.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most header fields accepted.
pub const MAX_HEADERS: usize = 64;

/// Timeouts and the bound on concurrent connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time a client has to send its whole request head.
    pub read_timeout: Duration,
    /// Time a client has to take the response.
    pub write_timeout: Duration,
    /// How long to wait for the client to close first after the response.
    pub linger: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            linger: Duration::from_secs(1),
            max_connections: 16,
        }
    }
}

/// A parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    pub query: Option<String>,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: String,
    /// Names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response; the server adds `Content-Length`, `Date` and
/// `Connection: close`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Arc<str>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Arc<str>>) -> Self {
        Self {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A short plain-text error.
    pub fn error(status: u16, message: &str) -> Self {
        Self::new(
            status,
            "text/plain; charset=utf-8",
            format!("{status} {}: {message}\n", reason(status)),
        )
    }

    /// The bytes on the wire; without the body for HEAD.
    pub fn to_bytes(&self, head_only: bool, date: &str) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nDate: {date}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if !head_only {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Why a request head was refused: the status to answer with, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub message: &'static str,
}

fn refuse(status: u16, message: &'static str) -> Refused {
    Refused { status, message }
}

/// Parses a request head (up to and without the empty line).
pub fn parse_head(head: &[u8]) -> Result<Request, Refused> {
    let text = std::str::from_utf8(head).map_err(|_| refuse(400, "request head is not UTF-8"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refuse(400, "malformed request line"));
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(refuse(400, "malformed method"));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(if version.starts_with("HTTP/") {
            refuse(505, "only HTTP/1.0 and HTTP/1.1")
        } else {
            refuse(400, "malformed HTTP version")
        });
    }
    // Absolute form (http://host/path): servers must accept it.
    let origin = match target.split_once("://") {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            rest.find('/').map_or("/", |i| &rest[i..])
        }
        _ => target,
    };
    if !origin.starts_with('/') || origin.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(refuse(400, "malformed request target"));
    }
    let (path, query) = match origin.split_once('?') {
        Some((path, query)) => (path, Some(query.to_string())),
        None => (origin, None),
    };
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            return Err(refuse(400, "obsolete header line folding"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| refuse(400, "malformed header field"))?;
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(refuse(400, "malformed header field name"));
        }
        if headers.len() == MAX_HEADERS {
            return Err(refuse(431, "too many header fields"));
        }
        headers.push((
            name.to_ascii_lowercase(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }
    let request = Request {
        method: method.to_string(),
        path: path.to_string(),
        query,
        version: version.to_string(),
        headers,
    };
    if request.version == "HTTP/1.1" && request.header("host").is_none() {
        return Err(refuse(400, "HTTP/1.1 request without a Host header"));
    }
    if request.header("transfer-encoding").is_some() {
        return Err(refuse(501, "request bodies are not accepted"));
    }
    if request
        .header("content-length")
        .is_some_and(|n| n.trim() != "0")
    {
        return Err(refuse(400, "request bodies are not accepted"));
    }
    Ok(request)
}

/// tchar of RFC 9110.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Where the head ends: the index just past its empty line.
fn head_end(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if buf[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

/// Reads a request head. Ok(None): the client closed before sending one.
async fn read_head(stream: &mut TcpStream) -> io::Result<Result<Option<Vec<u8>>, Refused>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Ok(None));
        }
        // Look again only where a new terminator can be.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf[from..]) {
            let end = from + end;
            if end > MAX_HEAD_BYTES {
                return Ok(Err(refuse(431, "request head too large")));
            }
            buf.truncate(end);
            return Ok(Ok(Some(buf)));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Ok(Err(refuse(431, "request head too large")));
        }
    }
}

/// Serves `listener` forever, answering each request with `handler`.
pub async fn serve<H, F>(listener: TcpListener, limits: ServerLimits, handler: H)
where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: wait a little.
                log::warn!("metrics server: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = connection(stream, limits, handler).await {
                log::info!("metrics server: {peer}: {e}");
            }
        });
    }
}

/// One connection: one request, one response, then close.
async fn connection<H, F>(mut stream: TcpStream, limits: ServerLimits, handler: H) -> io::Result<()>
where
    H: Fn(Request) -> F,
    F: Future<Output = Response>,
{
    let _ = stream.set_nodelay(true);
    let (response, head_only) =
        match tokio::time::timeout(limits.read_timeout, read_head(&mut stream)).await {
            Err(_) => (
                Response::error(408, "request head not received in time"),
                false,
            ),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Ok(None))) => return Ok(()),
            Ok(Ok(Err(refused))) => (Response::error(refused.status, refused.message), false),
            Ok(Ok(Ok(Some(head)))) => match parse_head(&head) {
                Err(refused) => (Response::error(refused.status, refused.message), false),
                Ok(request) if request.method == "GET" || request.method == "HEAD" => {
                    let head_only = request.method == "HEAD";
                    (handler(request).await, head_only)
                }
                Ok(_) => {
                    let mut response = Response::error(405, "only GET and HEAD");
                    response.headers.push(("Allow", "GET, HEAD".to_string()));
                    (response, false)
                }
            },
        };
    let bytes = response.to_bytes(head_only, &http_date(std::time::SystemTime::now()));
    let written = tokio::time::timeout(limits.write_timeout, stream.write_all(&bytes)).await;
    match written {
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "response not taken in time",
            ))
        }
        Ok(result) => result?,
    }
    // The client closes first when it can (it has the whole response, by
    // Content-Length): the TIME_WAIT socket then stays on its side instead
    // of one per scrape on ours. Meanwhile take what it still sends:
    // closing with unread input would send a RST that can destroy the
    // response before the client reads it.
    let _ = tokio::time::timeout(limits.linger, async {
        let mut sink = [0u8; 1024];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
    let _ = stream.shutdown().await;
    Ok(())
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), for the `Date` header.
pub fn http_date(time: std::time::SystemTime) -> String {
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let of_day = secs % 86_400;
    let (year, month, day) = crate::clock::civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn head(text: &str) -> Result<Request, Refused> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn parses_a_scrape() {
        let req = head("GET /metrics?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9464\r\nAccept-Encoding:  gzip \r\nUser-Agent: Prometheus/2.42.0\r\n\r\n").unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/metrics");
        assert_eq!(req.query.as_deref(), Some("x=1"));
        assert_eq!(req.header("accept-encoding"), Some("gzip"));
        assert_eq!(req.header("HOST"), Some("127.0.0.1:9464"));
        let old = head("GET / HTTP/1.0\n\n").unwrap();
        assert_eq!(old.path, "/");
        let absolute = head("GET http://h:1/metrics HTTP/1.1\r\nHost: h:1\r\n\r\n").unwrap();
        assert_eq!(absolute.path, "/metrics");
    }

    #[test]
    fn refuses_malformed_heads() {
        let status = |text: &str| head(text).unwrap_err().status;
        assert_eq!(status("GET /metrics\r\n\r\n"), 400);
        assert_eq!(status("GET  /metrics HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
        assert_eq!(status("GET metrics HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
        assert_eq!(status("GET /metrics HTTP/2.0\r\nHost: h\r\n\r\n"), 505);
        assert_eq!(status("GET /metrics SPDY\r\nHost: h\r\n\r\n"), 400);
        assert_eq!(status("GET /metrics HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            status("GET /metrics HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n"),
            400
        );
        assert_eq!(status("GET /metrics HTTP/1.1\r\nHost : h\r\n\r\n"), 400);
        assert_eq!(
            status("GET /metrics HTTP/1.1\r\nHost: h\r\nno colon\r\n\r\n"),
            400
        );
        assert_eq!(
            status("POST /metrics HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"),
            501
        );
        assert_eq!(status("G\u{e9}T / HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status(&format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n")),
            431
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nHost: \xff\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn responses_carry_length_and_close() {
        let response = Response::new(200, "text/plain", "hello\n");
        let bytes = response.to_bytes(false, "Thu, 01 Jan 1970 00:00:00 GMT");
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("\r\nContent-Length: 6\r\n"), "{text}");
        assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nhello\n"), "{text}");
        let head = String::from_utf8(response.to_bytes(true, "x")).unwrap();
        assert!(
            head.ends_with("Content-Length: 6\r\nDate: x\r\nConnection: close\r\n\r\n"),
            "{head}"
        );
    }

    #[test]
    fn dates_are_imf_fixdate() {
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(http_date(leap), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        // Half-closed: the server sees the client's FIN and closes at once.
        stream.shutdown().await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_over_tcp() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(
            listener,
            ServerLimits::default(),
            |req: Request| async move {
                if req.path == "/metrics" {
                    Response::new(200, "text/plain", "up 1\n")
                } else {
                    Response::error(404, "no such page")
                }
            },
        ));
        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("\r\n\r\nup 1\n"),
            "{ok}"
        );
        let head = exchange(addr, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        let missing = exchange(addr, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{missing}"
        );
        let post = exchange(addr, b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            post.starts_with("HTTP/1.1 405 ") && post.contains("\r\nAllow: GET, HEAD\r\n"),
            "{post}"
        );
        let huge = format!(
            "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        let refused = exchange(addr, huge.as_bytes()).await;
        assert!(refused.starts_with("HTTP/1.1 431 "), "{refused}");
        // A client that sends nothing and closes gets nothing.
        drop(TcpStream::connect(addr).await.unwrap());
        let again = exchange(addr, b"GET /metrics HTTP/1.0\r\n\r\n").await;
        assert!(again.starts_with("HTTP/1.1 200 OK\r\n"), "{again}");
    }

    #[tokio::test]
    async fn slow_clients_time_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ServerLimits {
            read_timeout: Duration::from_millis(200),
            linger: Duration::from_millis(100),
            ..ServerLimits::default()
        };
        tokio::spawn(serve(listener, limits, |_: Request| async {
            Response::new(200, "text/plain", "")
        }));
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
    }
}

//! The HTTP server for scrapes, on hyper's HTTP/1 connection driver: it
//! parses requests, answers malformed ones (400) and oversized heads (431),
//! and adds `Date` and `Content-Length`. This module only sets the limits a
//! listener inside a root process needs, and routes GET and HEAD to the
//! handler:
//! - a client has [`ServerLimits::header_timeout`] to send its request head,
//!   and [`ServerLimits::connection_timeout`] for the whole exchange (a
//!   client that never takes the response is dropped too);
//! - request heads are bounded ([`MAX_HEAD_BYTES`], [`MAX_HEADERS`]);
//! - at most [`ServerLimits::max_connections`] connections are served at
//!   once; past that, new connections are closed at once instead of waiting
//!   in the listen backlog, so clients that hold connections open cannot
//!   make a scrape queue behind them.
//!
//! One request per connection (`Connection: close`), as before.
use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header::{HeaderValue, ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
    Method, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

/// Largest request head (request line and headers) accepted.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most header fields accepted.
pub const MAX_HEADERS: usize = 64;
/// hyper's read buffer: its smallest allowed size, enough for a full head.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// Timeouts and the bound on concurrent connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time a client has to send its whole request head.
    pub header_timeout: Duration,
    /// Time a connection may last in all: head, render, and the response
    /// taken by the client.
    pub connection_timeout: Duration,
    /// How long to wait for the client to close first after the response.
    pub linger: Duration,
    /// Connections served at once; more are closed as they come.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(30),
            linger: Duration::from_secs(1),
            // Well under the usual 1024 open files, with room for the
            // tracer's own; a scraper needs one or two.
            max_connections: 512,
        }
    }
}

/// What the handler is asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `GET` or `HEAD` (others are answered 405 before the handler).
    pub method: Method,
    /// The path, without the query.
    pub path: String,
}

/// A response; hyper adds `Content-Length`, `Date` and `Connection: close`,
/// and leaves the body out for HEAD.
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
        let reason = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        Self::new(
            status,
            "text/plain; charset=utf-8",
            format!("{status} {reason}: {message}\n"),
        )
    }

    fn into_hyper(self) -> hyper::Response<Full<Bytes>> {
        let mut response =
            hyper::Response::new(Full::new(Bytes::copy_from_slice(self.body.as_bytes())));
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.append(name, value);
            }
        }
        response
    }
}

/// Serves `listener` forever, answering each GET or HEAD with `handler`.
pub async fn serve<H, F>(listener: TcpListener, limits: ServerLimits, handler: H)
where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .max_buf_size(READ_BUFFER_BYTES)
        .keep_alive(false)
        // A client may shut its side down after the request and still
        // wait for the response.
        .half_close(true);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: wait a little.
                log::warn!("metrics server: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            log::info!(
                "metrics server: {peer}: closed, already serving {} connections (the bound)",
                limits.max_connections
            );
            drop(stream);
            continue;
        };
        let http = http.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let exchange = connection(&http, stream, limits.linger, handler);
            match tokio::time::timeout(limits.connection_timeout, exchange).await {
                Err(_) => log::info!("metrics server: {peer}: connection timed out"),
                Ok(Err(e)) => log::info!("metrics server: {peer}: {e}"),
                Ok(Ok(())) => {}
            }
        });
    }
}

/// One connection: one request, one response; then the client closes.
async fn connection<H, F>(
    http: &http1::Builder,
    mut stream: TcpStream,
    linger: Duration,
    handler: H,
) -> hyper::Result<()>
where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(answer(&request, handler).await.into_hyper()) }
    });
    // Lent, not given: after an error answer (400, 431) the stream is
    // still ours to linger on, like after a normal one.
    let served = http
        .serve_connection(TokioIo::new(&mut stream), service)
        .without_shutdown()
        .await
        .map(drop);
    // The client closes first when it can (it has the whole response, by
    // Content-Length): the TIME_WAIT socket then stays on its side instead
    // of one per scrape on ours. Meanwhile take what it still sends:
    // closing with unread input would send a RST that can destroy the
    // response before the client reads it.
    let _ = tokio::time::timeout(linger, async {
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
    served
}

async fn answer<H, F>(request: &hyper::Request<Incoming>, handler: H) -> Response
where
    H: Fn(Request) -> F,
    F: Future<Output = Response>,
{
    let method = request.method();
    if method != Method::GET && method != Method::HEAD {
        let mut response = Response::error(405, "only GET and HEAD");
        response
            .headers
            .push((ALLOW.as_str(), "GET, HEAD".to_string()));
        return response;
    }
    handler(Request {
        method: method.clone(),
        path: request.uri().path().to_string(),
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    /// Sends `request`, half-closes, and reads until the server closes;
    /// a generous deadline only proves "answered, not starved".
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut out))
            .await
            .unwrap_or_else(|_| panic!("no answer to {:?}", String::from_utf8_lossy(request)))
            .unwrap();
        out
    }

    async fn start(limits: ServerLimits) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, limits, |req: Request| async move {
            if req.path == "/metrics" {
                Response::new(200, "text/plain", "up 1\n")
            } else {
                Response::error(404, "no such page")
            }
        }));
        addr
    }

    #[tokio::test]
    async fn serves_over_tcp() {
        let addr = start(ServerLimits::default()).await;
        let ok = exchange(addr, b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("\r\n\r\nup 1\n"),
            "{ok}"
        );
        let lower = ok.to_ascii_lowercase();
        assert!(lower.contains("\r\ncontent-length: 5\r\n"), "{ok}");
        assert!(lower.contains("\r\nconnection: close\r\n"), "{ok}");
        assert!(lower.contains("\r\ncontent-type: text/plain\r\n"), "{ok}");
        assert!(lower.contains("\r\ndate: "), "{ok}");
        let head = exchange(addr, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        let absolute = exchange(addr, b"GET http://x:1/metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(absolute.ends_with("\r\n\r\nup 1\n"), "{absolute}");
        let old = exchange(addr, b"GET /metrics HTTP/1.0\r\n\r\n").await;
        assert!(old.ends_with("\r\n\r\nup 1\n"), "{old}");
        let missing = exchange(addr, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{missing}"
        );
        let delete = exchange(addr, b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            delete.starts_with("HTTP/1.1 405 ")
                && delete
                    .to_ascii_lowercase()
                    .contains("\r\nallow: get, head\r\n"),
            "{delete}"
        );
        // A client that sends nothing and closes gets nothing.
        drop(TcpStream::connect(addr).await.unwrap());
        let again = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(again.starts_with("HTTP/1.1 200 OK\r\n"), "{again}");
    }

    #[tokio::test]
    async fn refuses_malformed_and_oversized_heads() {
        let addr = start(ServerLimits::default()).await;
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],
            b"GET /metrics HTTP/1.1\r\nHost : h\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: h\r\nno colon\r\n\r\n",
            b"G\xc3\xa9T / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n",
        ] {
            let answer = exchange(addr, bad).await;
            assert!(
                answer.starts_with("HTTP/1.1 400 "),
                "{:?} got {answer:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let huge = format!(
            "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        let refused = exchange(addr, huge.as_bytes()).await;
        assert!(refused.starts_with("HTTP/1.1 431 "), "{refused}");
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let refused = exchange(
            addr,
            format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n").as_bytes(),
        )
        .await;
        assert!(refused.starts_with("HTTP/1.1 431 "), "{refused}");
        // The server is still there.
        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    }

    #[tokio::test]
    async fn slow_clients_are_dropped() {
        let addr = start(ServerLimits {
            header_timeout: Duration::from_millis(200),
            linger: Duration::from_millis(100),
            ..ServerLimits::default()
        })
        .await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\n")
            .await
            .unwrap();
        // Closed by the server (not answered) once the head is late.
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut out))
            .await
            .expect("the slow client was never dropped");
        assert!(
            read.is_err() || !out.starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
    }

    /// Clients that hold connections with half a request each: a scrape
    /// is still answered, while they are all still open.
    #[tokio::test]
    async fn scrape_answered_while_slow_clients_hold_connections() {
        let addr = start(ServerLimits::default()).await;
        let mut held = Vec::new();
        for _ in 0..200 {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nUser-Ag")
                .await
                .unwrap();
            held.push(stream);
        }
        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.ends_with("\r\n\r\nup 1\n"), "{ok}");
        // All 200 are still open (none was answered or closed yet).
        for stream in &held {
            let mut byte = [0u8; 1];
            assert!(
                stream.try_read(&mut byte).is_err(),
                "a slow client was answered before its head was complete"
            );
        }
    }

    /// At the bound, new connections are closed at once instead of queued;
    /// once the slow ones time out, scrapes are served again.
    #[tokio::test]
    async fn past_the_bound_connections_are_closed_not_queued() {
        let addr = start(ServerLimits {
            header_timeout: Duration::from_secs(2),
            max_connections: 4,
            ..ServerLimits::default()
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(b"GET /metrics HTT").await.unwrap();
            held.push(stream);
        }
        // Accepted in order, after the four: closed unanswered (a reset,
        // since its request is unread).
        let mut fifth = TcpStream::connect(addr).await.unwrap();
        let _ = fifth
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), fifth.read_to_end(&mut out))
            .await
            .expect("a fifth connection waited instead of being closed");
        assert!(
            out.is_empty(),
            "a fifth connection was served past the bound"
        );
        // The four are dropped after their head timeout; then served.
        for mut stream in held {
            let mut out = Vec::new();
            tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut out))
                .await
                .expect("a slow client was never dropped")
                .ok();
        }
        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.ends_with("\r\n\r\nup 1\n"), "{ok}");
    }
}

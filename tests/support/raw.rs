//! Raw-socket tools for the hostile-client and broken-backend suites, where
//! a test must control (or see) the exact bytes on the wire:
//!
//! - [`RawBackend`]: a fake backend that records exactly what Baton sent it
//!   (head lines, framing headers, the body as framed) and answers with
//!   scripted bytes, which may be broken, stop halfway, hang or close;
//! - an HTTP/1 client side: write bytes, read until close or until one
//!   answer is complete, and parse answers telling a complete body from a
//!   cut one ([`parse_responses`]);
//! - a minimal HTTP/2 client ([`h2`]): frame writers, an HPACK encoder that
//!   sends any bytes as names and values, and a decoder for Baton's answers,
//!   for requests hyper's own client would refuse to send.
//!
//! Every read is bounded by [`LIMIT`], a safety net and never a way to wait
//! for something: the suites configure Baton's timeouts at a few hundred
//! milliseconds, and a read that reaches the limit is a failure.

#![allow(dead_code)] // each suite uses its own slice of these tools

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// How long a raw read may take before the test calls it a hang. Baton's
/// timeouts in these suites are ~300 ms, so this is only ever reached when
/// Baton failed to act.
pub const LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// The recording, scripted backend.

/// One request as the raw backend read it off the wire.
#[derive(Debug, Clone, Default)]
pub struct RawRequest {
    /// Which accepted connection (0-based) it came on.
    pub connection: usize,
    /// The head as sent, lossily decoded, without the final blank line.
    pub head: String,
    pub method: String,
    pub target: String,
    pub version: String,
    /// Every header line in order, names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body as framed by `Transfer-Encoding: chunked` (which wins) or
    /// `Content-Length`; chunked bodies are de-chunked.
    pub body: Vec<u8>,
    /// The whole body arrived as its framing announced.
    pub complete: bool,
}

impl RawRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// Whether the message's framing is unambiguous: not both
    /// `Content-Length` and `Transfer-Encoding`, at most one of each, a
    /// transfer coding of exactly `chunked`, and a length that matches the
    /// body. `Err` says what is wrong.
    pub fn framing_is_consistent(&self) -> Result<(), String> {
        let cl = self.all("content-length");
        let te = self.all("transfer-encoding");
        if !cl.is_empty() && !te.is_empty() {
            return Err(format!(
                "both Content-Length {cl:?} and Transfer-Encoding {te:?}"
            ));
        }
        if cl.len() > 1 {
            return Err(format!("{} Content-Length lines: {cl:?}", cl.len()));
        }
        if te.len() > 1
            || te
                .first()
                .is_some_and(|v| !v.eq_ignore_ascii_case("chunked"))
        {
            return Err(format!("Transfer-Encoding {te:?}"));
        }
        if let Some(cl) = cl.first() {
            match cl.parse::<usize>() {
                Ok(n) if self.complete && n != self.body.len() => {
                    return Err(format!(
                        "Content-Length {n} but a body of {}",
                        self.body.len()
                    ))
                }
                Ok(_) => {}
                Err(_) => return Err(format!("Content-Length {cl:?}")),
            }
        }
        Ok(())
    }
}

/// What the raw backend does after reading a request (head and body).
#[derive(Debug, Clone)]
pub enum Step {
    Write(Vec<u8>),
    /// Keep the connection open and do nothing more, until the backend is
    /// dropped.
    Hang,
    /// Close the connection.
    Close,
}

/// Picks the steps that answer one request. When the steps run out without
/// `Hang` or `Close`, the backend reads the next request on the connection.
pub type Script = Arc<dyn Fn(&RawRequest) -> Vec<Step> + Send + Sync>;

#[derive(Default)]
struct Recorded {
    requests: Mutex<Vec<RawRequest>>,
    /// Per connection, the bytes read but not (yet) part of a complete
    /// request head.
    pending: Mutex<HashMap<usize, Vec<u8>>>,
    connections: AtomicUsize,
    changed: Notify,
    tasks: Mutex<Vec<AbortHandle>>,
}

/// A fake backend on 127.0.0.1:0 that speaks HTTP/1 from raw bytes.
pub struct RawBackend {
    pub addr: SocketAddr,
    recorded: Arc<Recorded>,
}

impl RawBackend {
    pub async fn start(script: impl Fn(&RawRequest) -> Vec<Step> + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let recorded = Arc::new(Recorded::default());
        let script: Script = Arc::new(script);
        let shared = Arc::clone(&recorded);
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let id = shared.connections.fetch_add(1, Ordering::SeqCst);
                shared.changed.notify_waiters();
                let task =
                    tokio::spawn(serve(id, stream, Arc::clone(&shared), Arc::clone(&script)));
                shared.tasks.lock().unwrap().push(task.abort_handle());
            }
        });
        recorded.tasks.lock().unwrap().push(accept.abort_handle());
        RawBackend { addr, recorded }
    }

    /// A well-behaved keep-alive backend that echoes every request: its
    /// body back, its target in `x-echo-target`.
    pub async fn echo() -> Self {
        Self::start(echo).await
    }

    pub fn requests(&self) -> Vec<RawRequest> {
        self.recorded.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.recorded.requests.lock().unwrap().len()
    }

    pub fn connections(&self) -> usize {
        self.recorded.connections.load(Ordering::SeqCst)
    }

    /// Bytes the backend read that never formed a complete request head:
    /// the start of a request nobody meant to send, or garbage.
    pub fn stray(&self) -> Vec<String> {
        self.recorded
            .pending
            .lock()
            .unwrap()
            .values()
            .filter(|b| !b.is_empty())
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    /// Waits (at most [`LIMIT`]) until `done` holds for the requests seen.
    pub async fn wait_until(&self, done: impl Fn(&[RawRequest]) -> bool) -> Result<(), String> {
        let waited = tokio::time::timeout(LIMIT, async {
            loop {
                let changed = self.recorded.changed.notified();
                if done(&self.recorded.requests.lock().unwrap()) {
                    return;
                }
                changed.await;
            }
        })
        .await;
        waited.map_err(|_| format!("the backend never saw it; it saw {:?}", self.requests()))
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        for task in self.recorded.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// The echo script: `200 OK`, `Content-Length`, the target in
/// `x-echo-target`, the request's body back, and keep-alive.
pub fn echo(request: &RawRequest) -> Vec<Step> {
    vec![Step::Write(response(
        "HTTP/1.1 200 OK",
        &[("x-echo-target", &request.target)],
        &request.body,
    ))]
}

/// A complete response with a `Content-Length` framing `body`.
pub fn response(status_line: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{status_line}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

async fn serve(id: usize, mut stream: TcpStream, recorded: Arc<Recorded>, script: Script) {
    let mut buf = Vec::new();
    let set_pending = |buf: &[u8]| {
        recorded.pending.lock().unwrap().insert(id, buf.to_vec());
        recorded.changed.notify_waiters();
    };
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 1 << 20 || !fill(&mut stream, &mut buf).await {
                set_pending(&buf);
                return;
            }
            set_pending(&buf);
        };
        let head: Vec<u8> = buf.drain(..head_end).collect();
        set_pending(&buf);
        let mut request = parse_head(id, &head[..head.len() - 4]);
        let index = {
            let mut requests = recorded.requests.lock().unwrap();
            requests.push(request.clone());
            requests.len() - 1
        };
        recorded.changed.notify_waiters();

        let chunked = request
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        let length = request
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok());
        let complete = if chunked {
            read_chunked(&mut stream, &mut buf, &mut request.body).await
        } else if let Some(n) = length {
            while buf.len() < n {
                if !fill(&mut stream, &mut buf).await {
                    break;
                }
            }
            let take = n.min(buf.len());
            request.body = buf.drain(..take).collect();
            take == n
        } else {
            true
        };
        request.complete = complete;
        recorded.requests.lock().unwrap()[index] = request.clone();
        set_pending(&buf);
        if !complete {
            return;
        }
        for step in script(&request) {
            match step {
                Step::Write(bytes) => {
                    if stream.write_all(&bytes).await.is_err() {
                        return;
                    }
                    let _ = stream.flush().await;
                }
                Step::Hang => std::future::pending::<()>().await,
                Step::Close => return,
            }
        }
    }
}

/// Reads more bytes into `buf`; false at the end of the stream.
pub async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// De-chunks a body into `body`; false if it ended early or was malformed.
async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>, body: &mut Vec<u8>) -> bool {
    loop {
        let line_end = loop {
            if let Some(i) = find(buf, b"\r\n") {
                break i;
            }
            if !fill(stream, buf).await {
                return false;
            }
        };
        let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        buf.drain(..line_end + 2);
        let size = line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size, 16) else {
            return false;
        };
        if size == 0 {
            // Trailers, up to the blank line.
            loop {
                let end = loop {
                    if let Some(i) = find(buf, b"\r\n") {
                        break i;
                    }
                    if !fill(stream, buf).await {
                        return false;
                    }
                };
                buf.drain(..end + 2);
                if end == 0 {
                    return true;
                }
            }
        }
        while buf.len() < size + 2 {
            if !fill(stream, buf).await {
                return false;
            }
        }
        body.extend_from_slice(&buf[..size]);
        if &buf[size..size + 2] != b"\r\n" {
            return false;
        }
        buf.drain(..size + 2);
    }
}

fn parse_head(connection: usize, head: &[u8]) -> RawRequest {
    let text = String::from_utf8_lossy(head).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or("").splitn(3, ' ');
    let method = first.next().unwrap_or("").to_owned();
    let target = first.next().unwrap_or("").to_owned();
    let version = first.next().unwrap_or("").to_owned();
    let headers = lines
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect();
    RawRequest {
        connection,
        head: text,
        method,
        target,
        version,
        headers,
        body: Vec::new(),
        complete: false,
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// The HTTP/1 client side.

/// One answer as the client read it.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// The status line.
    pub status_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body ended as its framing said it would (`Content-Length` bytes,
    /// the last chunk, or the close of a close-delimited body).
    pub complete: bool,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Checks an RFC 9457 problem answer of `status`; returns its JSON.
    pub fn problem(&self, status: u16) -> Result<serde_json::Value, String> {
        if self.status != status {
            return Err(format!(
                "status {} where {status} was expected: {}",
                self.status,
                self.text()
            ));
        }
        if self.header("content-type") != Some("application/problem+json") {
            return Err(format!(
                "{status} with content-type {:?}, not problem+json: {}",
                self.header("content-type"),
                self.text()
            ));
        }
        let json: serde_json::Value = serde_json::from_slice(&self.body)
            .map_err(|e| format!("{status} body is not JSON ({e}): {}", self.text()))?;
        if json["status"] != status {
            return Err(format!("problem status {} in a {status}", json["status"]));
        }
        let request_id = json["request_id"].as_str().unwrap_or("");
        if request_id.is_empty() || Some(request_id) != self.header("x-request-id") {
            return Err(format!(
                "problem request_id {request_id:?} vs x-request-id {:?}",
                self.header("x-request-id")
            ));
        }
        Ok(json)
    }
}

/// Parses every answer in `bytes`, a whole connection's worth as read up
/// to its close. Interim (1xx) answers are included.
pub fn parse_responses(bytes: &[u8]) -> Vec<RawResponse> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(head_end) = find(rest, b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        rest = &rest[head_end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("").to_owned();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| {
                let (name, value) = line.split_once(':')?;
                Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            })
            .collect();
        let mut response = RawResponse {
            status,
            status_line,
            headers,
            body: Vec::new(),
            complete: true,
        };
        if !status_line_ok(&response.status_line) {
            response.complete = false;
            out.push(response);
            break;
        }
        if (100..200).contains(&status) || status == 204 || status == 304 {
            out.push(response);
            continue;
        }
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        let length = response
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok());
        if chunked {
            let (body, used, complete) = dechunk(rest);
            response.body = body;
            response.complete = complete;
            rest = &rest[used..];
        } else if let Some(n) = length {
            let take = n.min(rest.len());
            response.body = rest[..take].to_vec();
            response.complete = take == n;
            rest = &rest[take..];
        } else {
            // Delimited by the close, which the caller read up to.
            response.body = rest.to_vec();
            rest = &[];
        }
        out.push(response);
    }
    out
}

fn status_line_ok(line: &str) -> bool {
    line.starts_with("HTTP/1.") && line.len() >= 12
}

/// (body, bytes used, whether the last chunk arrived).
fn dechunk(mut rest: &[u8]) -> (Vec<u8>, usize, bool) {
    let total = rest.len();
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(rest, b"\r\n") else {
            return (body, total, false);
        };
        let line = String::from_utf8_lossy(&rest[..line_end]).into_owned();
        let Ok(size) = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
        else {
            return (body, total, false);
        };
        rest = &rest[line_end + 2..];
        if size == 0 {
            // Trailers up to the blank line.
            loop {
                let Some(end) = find(rest, b"\r\n") else {
                    return (body, total, false);
                };
                rest = &rest[end + 2..];
                if end == 0 {
                    return (body, total - rest.len(), true);
                }
            }
        }
        if rest.len() < size + 2 {
            body.extend_from_slice(&rest[..size.min(rest.len())]);
            return (body, total, false);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// What came back on a connection up to its close.
#[derive(Debug)]
pub struct Exchange {
    pub bytes: Vec<u8>,
    pub responses: Vec<RawResponse>,
}

impl Exchange {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The first final (non-1xx) answer.
    pub fn first(&self) -> Result<&RawResponse, String> {
        self.responses
            .iter()
            .find(|r| r.status >= 200)
            .ok_or_else(|| format!("no status line; the client read {:?}", self.text()))
    }

    pub fn finals(&self) -> Vec<&RawResponse> {
        self.responses.iter().filter(|r| r.status >= 200).collect()
    }
}

/// Connects, writes `bytes` (a write Baton cut short is not an error: what
/// it answered still counts), and reads until Baton closes.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Result<Exchange, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tokio::time::timeout(LIMIT, stream.write_all(bytes)).await;
    read_until_close(&mut stream).await
}

/// Reads until the peer closes (or resets) the connection; `Err` if it is
/// still open after [`LIMIT`].
pub async fn read_until_close(stream: &mut TcpStream) -> Result<Exchange, String> {
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(LIMIT, async {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    if read.is_err() {
        return Err(format!(
            "the connection was still open after {LIMIT:?}; read so far: {:?}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    let responses = parse_responses(&bytes);
    Ok(Exchange { bytes, responses })
}

/// Reads until one complete final answer has arrived (or the peer closed),
/// leaving the connection open otherwise. Interim answers are skipped.
pub async fn read_response(stream: &mut TcpStream) -> Result<RawResponse, String> {
    read_response_from(stream, &mut Vec::new()).await
}

/// [`read_response`] keeping bytes read past the answer in `buf` for the
/// next call.
pub async fn read_response_from(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<RawResponse, String> {
    let read = tokio::time::timeout(LIMIT, async {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some((response, used)) = first_complete(buf) {
                buf.drain(..used);
                return Ok(response);
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    let all = parse_responses(buf);
                    return all.into_iter().find(|r| r.status >= 200).ok_or_else(|| {
                        format!(
                            "closed without a status line; read {:?}",
                            String::from_utf8_lossy(buf)
                        )
                    });
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    read.unwrap_or_else(|_| {
        Err(format!(
            "no complete answer within {LIMIT:?}; read {:?}",
            String::from_utf8_lossy(buf)
        ))
    })
}

/// [`read_response`], also returning everything read (interim answers
/// included), for a test that asserts what came first.
pub async fn read_answer(stream: &mut TcpStream) -> Result<(RawResponse, String), String> {
    let mut buf = Vec::new();
    let mut all = Vec::new();
    let read = tokio::time::timeout(LIMIT, async {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some((response, _)) = first_complete(&buf) {
                return Ok(response);
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    return parse_responses(&buf)
                        .into_iter()
                        .find(|r| r.status >= 200)
                        .ok_or_else(|| "closed without a status line".to_owned());
                }
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    all.extend_from_slice(&chunk[..n]);
                }
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&all).into_owned();
    match read {
        Ok(Ok(response)) => Ok((response, text)),
        Ok(Err(e)) => Err(format!("{e}; read {text:?}")),
        Err(_) => Err(format!(
            "no complete answer within {LIMIT:?}; read {text:?}"
        )),
    }
}

/// The first complete final answer in `buf` and the bytes it spans, with
/// any interim answers before it.
fn first_complete(buf: &[u8]) -> Option<(RawResponse, usize)> {
    let mut offset = 0;
    loop {
        let rest = &buf[offset..];
        let head_end = find(rest, b"\r\n\r\n")?;
        let parsed = parse_responses(rest);
        let first = parsed.first()?;
        // Only a framed body can be known complete before the close.
        let framed = first.status < 200
            || first.status == 204
            || first.status == 304
            || first.header("content-length").is_some()
            || first
                .header("transfer-encoding")
                .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if !framed || !first.complete {
            return None;
        }
        let used = head_end + 4 + body_span(&rest[head_end + 4..], first);
        if first.status >= 200 {
            return Some((first.clone(), offset + used));
        }
        offset += used;
    }
}

fn body_span(rest: &[u8], response: &RawResponse) -> usize {
    if response.status < 200 || response.status == 204 || response.status == 304 {
        return 0;
    }
    if response
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
    {
        return dechunk(rest).1;
    }
    response.body.len()
}

/// A plain `GET` on a fresh connection; Ok if it is answered `200`.
pub async fn still_serves(addr: SocketAddr, path: &str) -> Result<(), String> {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: after.example\r\nConnection: close\r\n\r\n");
    let exchange = exchange(addr, request.as_bytes()).await?;
    let first = exchange.first()?;
    if first.status != 200 {
        return Err(format!(
            "a normal request afterwards got {}: {}",
            first.status_line,
            first.text()
        ));
    }
    Ok(())
}

/// Collects the failures of a table's cases and fails once, naming them all.
#[derive(Default)]
pub struct Failures {
    cases: usize,
    failed: Vec<String>,
}

impl Failures {
    pub fn check(&mut self, case: &str, result: Result<(), String>) {
        self.cases += 1;
        if let Err(why) = result {
            self.failed.push(format!("  {case}: {why}"));
        }
    }

    pub fn assert_none(self, what: &str) {
        assert!(
            self.failed.is_empty(),
            "{what}: {} of {} cases failed:\n{}",
            self.failed.len(),
            self.cases,
            self.failed.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------
// A minimal HTTP/2 client.

pub mod h2 {
    //! Frames written by hand (RFC 9113) and HPACK (RFC 7541): an encoder
    //! that sends every field as a literal, so names and values may be any
    //! bytes, and a full decoder for the server's answers.

    use std::collections::{HashMap, VecDeque};
    use std::net::SocketAddr;
    use std::sync::OnceLock;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::LIMIT;

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const RST_STREAM: u8 = 3;
    pub const SETTINGS: u8 = 4;
    pub const PUSH_PROMISE: u8 = 5;
    pub const PING: u8 = 6;
    pub const GOAWAY: u8 = 7;
    pub const WINDOW_UPDATE: u8 = 8;
    pub const CONTINUATION: u8 = 9;

    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;

    pub const CANCEL: u32 = 0x8;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    pub fn settings(values: &[(u16, u32)]) -> Vec<u8> {
        let mut payload = Vec::new();
        for (id, value) in values {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        frame(SETTINGS, 0, 0, &payload)
    }

    /// A HEADERS frame carrying all of `fields`.
    pub fn headers(stream: u32, fields: &[(&str, &str)], end_stream: bool) -> Vec<u8> {
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        frame(HEADERS, flags, stream, &encode(fields))
    }

    pub fn data(stream: u32, bytes: &[u8], end_stream: bool) -> Vec<u8> {
        frame(DATA, if end_stream { END_STREAM } else { 0 }, stream, bytes)
    }

    pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
        frame(RST_STREAM, 0, stream, &code.to_be_bytes())
    }

    /// The request fields of a plain `GET path`.
    pub fn get(path: &str) -> Vec<(&'static str, String)> {
        vec![
            (":method", "GET".to_owned()),
            (":scheme", "http".to_owned()),
            (":authority", "h2.example".to_owned()),
            (":path", path.to_owned()),
        ]
    }

    /// Every field as "literal without indexing, new name", no Huffman: the
    /// bytes go on the wire exactly as given, whatever they are.
    pub fn encode(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in fields {
            out.push(0x00);
            string(&mut out, name.as_bytes());
            string(&mut out, value.as_bytes());
        }
        out
    }

    fn string(out: &mut Vec<u8>, bytes: &[u8]) {
        integer(out, 0x00, 7, bytes.len());
        out.extend_from_slice(bytes);
    }

    fn integer(out: &mut Vec<u8>, first: u8, prefix: u8, mut value: usize) {
        let max = (1usize << prefix) - 1;
        if value < max {
            out.push(first | value as u8);
            return;
        }
        out.push(first | max as u8);
        value -= max;
        while value >= 128 {
            out.push((value % 128 + 128) as u8);
            value /= 128;
        }
        out.push(value as u8);
    }

    #[derive(Debug, Clone)]
    pub struct Frame {
        pub kind: u8,
        pub flags: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    /// How a stream ended, as the client saw it.
    #[derive(Debug, Clone)]
    pub enum Outcome {
        Response {
            status: u16,
            headers: Vec<(String, String)>,
            body: Vec<u8>,
        },
        /// RST_STREAM with this error code.
        Reset(u32),
        /// GOAWAY (last stream id below this one) with this error code.
        GoAway(u32),
        /// The connection closed first.
        Closed,
        /// Nothing within [`LIMIT`].
        Hung,
    }

    impl Outcome {
        pub fn status(&self) -> Option<u16> {
            match self {
                Outcome::Response { status, .. } => Some(*status),
                _ => None,
            }
        }

        /// Refused at the protocol level or with a 4xx, as a malformed
        /// request must be.
        pub fn is_refusal(&self) -> bool {
            match self {
                Outcome::Reset(_) | Outcome::GoAway(_) => true,
                Outcome::Response { status, .. } => (400..500).contains(status),
                _ => false,
            }
        }

        pub fn header(&self, name: &str) -> Option<&str> {
            match self {
                Outcome::Response { headers, .. } => headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str()),
                _ => None,
            }
        }
    }

    /// One HTTP/2 client connection.
    pub struct H2 {
        stream: TcpStream,
        buf: Vec<u8>,
        decoder: Decoder,
        /// Answer the server's SETTINGS and PINGs, as a live client does.
        pub answer: bool,
        /// The GOAWAY received, if any: (last stream id, error code).
        pub goaway: Option<(u32, u32)>,
        /// Header blocks being assembled, by stream.
        partial: HashMap<u32, (Vec<u8>, bool)>,
        /// Decoded answers of streams not asked for yet.
        done: HashMap<u32, Outcome>,
        /// Answers under way: status, fields, body so far.
        open: HashMap<u32, Answer>,
    }

    type Answer = (u16, Vec<(String, String)>, Vec<u8>);

    impl H2 {
        /// Connects and sends the preface and an empty SETTINGS frame.
        pub async fn connect(addr: SocketAddr) -> H2 {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let mut hello = PREFACE.to_vec();
            hello.extend(settings(&[]));
            stream.write_all(&hello).await.unwrap();
            H2 {
                stream,
                buf: Vec::new(),
                decoder: Decoder::default(),
                answer: true,
                goaway: None,
                partial: HashMap::new(),
                done: HashMap::new(),
                open: HashMap::new(),
            }
        }

        /// Writes raw bytes; an error (Baton closed) is returned, not fatal.
        pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            match tokio::time::timeout(LIMIT, self.stream.write_all(bytes)).await {
                Ok(written) => written,
                Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
            }
        }

        /// The next frame; `None` when the connection closed or after
        /// [`LIMIT`] of silence (then `Err`).
        pub async fn next_frame(&mut self) -> Result<Option<Frame>, ()> {
            let read = tokio::time::timeout(LIMIT, async {
                let mut chunk = [0u8; 16 * 1024];
                loop {
                    if self.buf.len() >= 9 {
                        let len = (usize::from(self.buf[0]) << 16)
                            | (usize::from(self.buf[1]) << 8)
                            | usize::from(self.buf[2]);
                        if self.buf.len() >= 9 + len {
                            let head: Vec<u8> = self.buf.drain(..9 + len).collect();
                            return Some(Frame {
                                kind: head[3],
                                flags: head[4],
                                stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]])
                                    & 0x7fff_ffff,
                                payload: head[9..].to_vec(),
                            });
                        }
                    }
                    match self.stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return None,
                        Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    }
                }
            })
            .await;
            let frame = read.map_err(|_| ())?;
            if let Some(frame) = &frame {
                self.handle(frame).await;
            }
            Ok(frame)
        }

        /// Connection-level bookkeeping every frame gets: acks, GOAWAY,
        /// header decoding (the HPACK table is the connection's).
        async fn handle(&mut self, frame: &Frame) {
            match frame.kind {
                SETTINGS if frame.flags & ACK == 0 && self.answer => {
                    let _ = self.send(&frame_ack(SETTINGS, &[])).await;
                }
                PING if frame.flags & ACK == 0 && self.answer => {
                    let _ = self.send(&frame_ack(PING, &frame.payload)).await;
                }
                GOAWAY if frame.payload.len() >= 8 => {
                    let p = &frame.payload;
                    let last = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff;
                    let code = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
                    self.goaway = Some((last, code));
                }
                HEADERS | CONTINUATION => {
                    let mut payload = frame.payload.as_slice();
                    if frame.kind == HEADERS {
                        if frame.flags & PADDED != 0 && !payload.is_empty() {
                            let pad = usize::from(payload[0]);
                            payload = &payload[1..payload.len().saturating_sub(pad)];
                        }
                        if frame.flags & PRIORITY != 0 && payload.len() >= 5 {
                            payload = &payload[5..];
                        }
                    }
                    let entry = self
                        .partial
                        .entry(frame.stream)
                        .or_insert_with(|| (Vec::new(), false));
                    entry.0.extend_from_slice(payload);
                    if frame.kind == HEADERS {
                        entry.1 = frame.flags & END_STREAM != 0;
                    }
                    if frame.flags & END_HEADERS != 0 {
                        let (block, end) = self.partial.remove(&frame.stream).unwrap_or_default();
                        let fields = self.decoder.decode(&block).unwrap_or_default();
                        let status = fields
                            .iter()
                            .find(|(n, _)| n == ":status")
                            .and_then(|(_, v)| v.parse::<u16>().ok())
                            .unwrap_or(0);
                        if (100..200).contains(&status) {
                            return;
                        }
                        let open = self
                            .open
                            .entry(frame.stream)
                            .or_insert_with(|| (status, Vec::new(), Vec::new()));
                        if open.0 == 0 {
                            open.0 = status;
                        }
                        open.1.extend(fields);
                        if end {
                            self.finish(frame.stream);
                        }
                    }
                }
                DATA => {
                    let mut payload = frame.payload.as_slice();
                    if frame.flags & PADDED != 0 && !payload.is_empty() {
                        let pad = usize::from(payload[0]);
                        payload = &payload[1..payload.len().saturating_sub(pad)];
                    }
                    if let Some(open) = self.open.get_mut(&frame.stream) {
                        open.2.extend_from_slice(payload);
                    }
                    if !frame.payload.is_empty() {
                        // Keep the windows open for long answers.
                        let n = (frame.payload.len() as u32).to_be_bytes();
                        let mut updates = frame_plain(WINDOW_UPDATE, 0, &n);
                        updates.extend(frame_plain(WINDOW_UPDATE, frame.stream, &n));
                        let _ = self.send(&updates).await;
                    }
                    if frame.flags & END_STREAM != 0 {
                        self.finish(frame.stream);
                    }
                }
                RST_STREAM if frame.payload.len() >= 4 => {
                    let p = &frame.payload;
                    self.open.remove(&frame.stream);
                    self.done.insert(
                        frame.stream,
                        Outcome::Reset(u32::from_be_bytes([p[0], p[1], p[2], p[3]])),
                    );
                }
                _ => {}
            }
        }

        fn finish(&mut self, stream: u32) {
            if let Some((status, headers, body)) = self.open.remove(&stream) {
                self.done.insert(
                    stream,
                    Outcome::Response {
                        status,
                        headers,
                        body,
                    },
                );
            }
        }

        /// Reads until `stream` ends: its whole answer, a reset, a GOAWAY
        /// that leaves it out, or the connection's close.
        pub async fn outcome(&mut self, stream: u32) -> Outcome {
            loop {
                if let Some(done) = self.done.remove(&stream) {
                    return done;
                }
                if let Some((last, code)) = self.goaway {
                    if last < stream {
                        return Outcome::GoAway(code);
                    }
                }
                match self.next_frame().await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        return match self.goaway {
                            Some((_, code)) => Outcome::GoAway(code),
                            None => Outcome::Closed,
                        }
                    }
                    Err(()) => return Outcome::Hung,
                }
            }
        }

        /// Sends a request (fields, then an optional body) on `stream` and
        /// waits for its outcome.
        pub async fn request(
            &mut self,
            stream: u32,
            fields: &[(&str, &str)],
            body: Option<&[u8]>,
        ) -> Outcome {
            let mut bytes = headers(stream, fields, body.is_none());
            if let Some(body) = body {
                bytes.extend(data(stream, body, true));
            }
            if self.send(&bytes).await.is_err() {
                return self.outcome(stream).await;
            }
            self.outcome(stream).await
        }

        /// Reads until the connection closes or a GOAWAY arrives. `Err` if
        /// neither happens within [`LIMIT`].
        pub async fn until_closed(&mut self) -> Result<(), String> {
            loop {
                if self.goaway.is_some() {
                    return Ok(());
                }
                match self.next_frame().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return Ok(()),
                    Err(()) => {
                        return Err(format!("the connection was still open after {LIMIT:?}"))
                    }
                }
            }
        }
    }

    fn frame_ack(kind: u8, payload: &[u8]) -> Vec<u8> {
        frame(kind, ACK, 0, payload)
    }

    fn frame_plain(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        frame(kind, 0, stream, payload)
    }

    // HPACK decoding.

    #[derive(Default)]
    pub struct Decoder {
        dynamic: VecDeque<(String, String)>,
        size: usize,
        max: Option<usize>,
    }

    impl Decoder {
        fn max(&self) -> usize {
            self.max.unwrap_or(4096)
        }

        pub fn decode(&mut self, mut block: &[u8]) -> Result<Vec<(String, String)>, String> {
            let mut fields = Vec::new();
            while let Some(&first) = block.first() {
                if first & 0x80 != 0 {
                    let (index, rest) = read_integer(block, 7)?;
                    block = rest;
                    fields.push(self.entry(index)?);
                } else if first & 0xc0 == 0x40 {
                    let (field, rest) = self.literal(block, 6)?;
                    block = rest;
                    self.insert(field.clone());
                    fields.push(field);
                } else if first & 0xe0 == 0x20 {
                    let (size, rest) = read_integer(block, 5)?;
                    block = rest;
                    self.max = Some(size);
                    self.evict();
                } else {
                    let (field, rest) = self.literal(block, 4)?;
                    block = rest;
                    fields.push(field);
                }
            }
            Ok(fields)
        }

        fn literal<'a>(
            &self,
            block: &'a [u8],
            prefix: u8,
        ) -> Result<((String, String), &'a [u8]), String> {
            let (index, rest) = read_integer(block, prefix)?;
            let (name, rest) = if index == 0 {
                read_string(rest)?
            } else {
                (self.entry(index)?.0, rest)
            };
            let (value, rest) = read_string(rest)?;
            Ok(((name, value), rest))
        }

        fn entry(&self, index: usize) -> Result<(String, String), String> {
            if index == 0 {
                return Err("HPACK index 0".into());
            }
            if index <= STATIC.len() {
                let (n, v) = STATIC[index - 1];
                return Ok((n.to_owned(), v.to_owned()));
            }
            self.dynamic
                .get(index - STATIC.len() - 1)
                .cloned()
                .ok_or_else(|| format!("HPACK index {index} past the table"))
        }

        fn insert(&mut self, field: (String, String)) {
            self.size += field.0.len() + field.1.len() + 32;
            self.dynamic.push_front(field);
            self.evict();
        }

        fn evict(&mut self) {
            while self.size > self.max() {
                match self.dynamic.pop_back() {
                    Some((n, v)) => self.size -= n.len() + v.len() + 32,
                    None => break,
                }
            }
        }
    }

    fn read_integer(block: &[u8], prefix: u8) -> Result<(usize, &[u8]), String> {
        let max = (1usize << prefix) - 1;
        let first = usize::from(*block.first().ok_or("HPACK: empty integer")?) & max;
        if first < max {
            return Ok((first, &block[1..]));
        }
        let mut value = max;
        let mut shift = 0;
        for (i, byte) in block[1..].iter().enumerate() {
            value += usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                return Ok((value, &block[i + 2..]));
            }
            if shift > 28 {
                break;
            }
        }
        Err("HPACK: bad integer".into())
    }

    fn read_string(block: &[u8]) -> Result<(String, &[u8]), String> {
        let huffman = block.first().is_some_and(|b| b & 0x80 != 0);
        let (len, rest) = read_integer(block, 7)?;
        if rest.len() < len {
            return Err("HPACK: string past the block".into());
        }
        let raw = &rest[..len];
        let bytes = if huffman {
            huffman_decode(raw)?
        } else {
            raw.to_vec()
        };
        Ok((String::from_utf8_lossy(&bytes).into_owned(), &rest[len..]))
    }

    fn huffman_decode(bytes: &[u8]) -> Result<Vec<u8>, String> {
        static CODES: OnceLock<HashMap<(u8, u32), u8>> = OnceLock::new();
        let codes = CODES.get_or_init(|| {
            (0..256)
                .map(|sym| ((HUFFMAN_LENGTHS[sym], HUFFMAN_CODES[sym]), sym as u8))
                .collect()
        });
        let mut out = Vec::new();
        let (mut code, mut len) = (0u32, 0u8);
        for byte in bytes {
            for bit in (0..8).rev() {
                code = (code << 1) | u32::from((byte >> bit) & 1);
                len += 1;
                if let Some(&sym) = codes.get(&(len, code)) {
                    out.push(sym);
                    code = 0;
                    len = 0;
                } else if len > 30 {
                    return Err("HPACK: bad Huffman code".into());
                }
            }
        }
        // What is left is padding: at most 7 bits, all ones.
        Ok(out)
    }

    /// RFC 7541 Appendix A.
    const STATIC: [(&str, &str); 61] = [
        (":authority", ""),
        (":method", "GET"),
        (":method", "POST"),
        (":path", "/"),
        (":path", "/index.html"),
        (":scheme", "http"),
        (":scheme", "https"),
        (":status", "200"),
        (":status", "204"),
        (":status", "206"),
        (":status", "304"),
        (":status", "400"),
        (":status", "404"),
        (":status", "500"),
        ("accept-charset", ""),
        ("accept-encoding", "gzip, deflate"),
        ("accept-language", ""),
        ("accept-ranges", ""),
        ("accept", ""),
        ("access-control-allow-origin", ""),
        ("age", ""),
        ("allow", ""),
        ("authorization", ""),
        ("cache-control", ""),
        ("content-disposition", ""),
        ("content-encoding", ""),
        ("content-language", ""),
        ("content-length", ""),
        ("content-location", ""),
        ("content-range", ""),
        ("content-type", ""),
        ("cookie", ""),
        ("date", ""),
        ("etag", ""),
        ("expect", ""),
        ("expires", ""),
        ("from", ""),
        ("host", ""),
        ("if-match", ""),
        ("if-modified-since", ""),
        ("if-none-match", ""),
        ("if-range", ""),
        ("if-unmodified-since", ""),
        ("last-modified", ""),
        ("link", ""),
        ("location", ""),
        ("max-forwards", ""),
        ("proxy-authenticate", ""),
        ("proxy-authorization", ""),
        ("range", ""),
        ("referer", ""),
        ("refresh", ""),
        ("retry-after", ""),
        ("server", ""),
        ("set-cookie", ""),
        ("strict-transport-security", ""),
        ("transfer-encoding", ""),
        ("user-agent", ""),
        ("vary", ""),
        ("via", ""),
        ("www-authenticate", ""),
    ];

    // RFC 7541 Appendix B, as generated in the h2 crate
    // (src/hpack/huffman/table.rs, MIT licence): code and bit length per
    // octet; the EOS symbol is only ever padding and is left out.
    const HUFFMAN_CODES: [u32; 256] = [
        0x1ff8, 0x7fffd8, 0xfffffe2, 0xfffffe3, 0xfffffe4, 0xfffffe5, 0xfffffe6, 0xfffffe7,
        0xfffffe8, 0xffffea, 0x3ffffffc, 0xfffffe9, 0xfffffea, 0x3ffffffd, 0xfffffeb, 0xfffffec,
        0xfffffed, 0xfffffee, 0xfffffef, 0xffffff0, 0xffffff1, 0xffffff2, 0x3ffffffe, 0xffffff3,
        0xffffff4, 0xffffff5, 0xffffff6, 0xffffff7, 0xffffff8, 0xffffff9, 0xffffffa, 0xffffffb,
        0x14, 0x3f8, 0x3f9, 0xffa, 0x1ff9, 0x15, 0xf8, 0x7fa, 0x3fa, 0x3fb, 0xf9, 0x7fb, 0xfa,
        0x16, 0x17, 0x18, 0x0, 0x1, 0x2, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x5c, 0xfb,
        0x7ffc, 0x20, 0xffb, 0x3fc, 0x1ffa, 0x21, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62, 0x63, 0x64,
        0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72, 0xfc,
        0x73, 0xfd, 0x1ffb, 0x7fff0, 0x1ffc, 0x3ffc, 0x22, 0x7ffd, 0x3, 0x23, 0x4, 0x24, 0x5, 0x25,
        0x26, 0x27, 0x6, 0x74, 0x75, 0x28, 0x29, 0x2a, 0x7, 0x2b, 0x76, 0x2c, 0x8, 0x9, 0x2d, 0x77,
        0x78, 0x79, 0x7a, 0x7b, 0x7ffe, 0x7fc, 0x3ffd, 0x1ffd, 0xffffffc, 0xfffe6, 0x3fffd2,
        0xfffe7, 0xfffe8, 0x3fffd3, 0x3fffd4, 0x3fffd5, 0x7fffd9, 0x3fffd6, 0x7fffda, 0x7fffdb,
        0x7fffdc, 0x7fffdd, 0x7fffde, 0xffffeb, 0x7fffdf, 0xffffec, 0xffffed, 0x3fffd7, 0x7fffe0,
        0xffffee, 0x7fffe1, 0x7fffe2, 0x7fffe3, 0x7fffe4, 0x1fffdc, 0x3fffd8, 0x7fffe5, 0x3fffd9,
        0x7fffe6, 0x7fffe7, 0xffffef, 0x3fffda, 0x1fffdd, 0xfffe9, 0x3fffdb, 0x3fffdc, 0x7fffe8,
        0x7fffe9, 0x1fffde, 0x7fffea, 0x3fffdd, 0x3fffde, 0xfffff0, 0x1fffdf, 0x3fffdf, 0x7fffeb,
        0x7fffec, 0x1fffe0, 0x1fffe1, 0x3fffe0, 0x1fffe2, 0x7fffed, 0x3fffe1, 0x7fffee, 0x7fffef,
        0xfffea, 0x3fffe2, 0x3fffe3, 0x3fffe4, 0x7ffff0, 0x3fffe5, 0x3fffe6, 0x7ffff1, 0x3ffffe0,
        0x3ffffe1, 0xfffeb, 0x7fff1, 0x3fffe7, 0x7ffff2, 0x3fffe8, 0x1ffffec, 0x3ffffe2, 0x3ffffe3,
        0x3ffffe4, 0x7ffffde, 0x7ffffdf, 0x3ffffe5, 0xfffff1, 0x1ffffed, 0x7fff2, 0x1fffe3,
        0x3ffffe6, 0x7ffffe0, 0x7ffffe1, 0x3ffffe7, 0x7ffffe2, 0xfffff2, 0x1fffe4, 0x1fffe5,
        0x3ffffe8, 0x3ffffe9, 0xffffffd, 0x7ffffe3, 0x7ffffe4, 0x7ffffe5, 0xfffec, 0xfffff3,
        0xfffed, 0x1fffe6, 0x3fffe9, 0x1fffe7, 0x1fffe8, 0x7ffff3, 0x3fffea, 0x3fffeb, 0x1ffffee,
        0x1ffffef, 0xfffff4, 0xfffff5, 0x3ffffea, 0x7ffff4, 0x3ffffeb, 0x7ffffe6, 0x3ffffec,
        0x3ffffed, 0x7ffffe7, 0x7ffffe8, 0x7ffffe9, 0x7ffffea, 0x7ffffeb, 0xffffffe, 0x7ffffec,
        0x7ffffed, 0x7ffffee, 0x7ffffef, 0x7fffff0, 0x3ffffee,
    ];

    const HUFFMAN_LENGTHS: [u8; 256] = [
        13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30,
        28, 28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
        5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
        7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5,
        7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22,
        22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23,
        22, 23, 23, 24, 22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22,
        21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26,
        26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20,
        24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27,
        27, 28, 27, 27, 27, 27, 27, 26,
    ];
}

//! A job API with one fault: the `location-303` preset's dialect (202 + `Location`, then 303)
//! served from raw bytes, so a test can break exactly one stage of the job
//! conversation in exactly one way, and heal it at run time so that a
//! retry meets a healthy backend.
//!
//! The healthy conversation: `POST /reports` → `202` with
//! `Location: /status/{id}` and `{"id":…}`; `GET /status/{id}` →
//! `200 {"status":"running"}` [`RUNNING_POLLS`] times, then `303` to
//! `/result/{id}`; `GET /result/{id}` → `200` with [`result_body`];
//! `DELETE /status/{id}` cancels. Every answer says `Connection: close`, so
//! each call has a connection of its own and a fault never spills into the
//! next call. Bodies are [`BODY_LEN`] bytes (JSON padded with spaces), so
//! a drip outlasts any hold.
//!
//! A fault strikes every call of its stage until [`FaultApi::heal`]. A
//! faulted call changes no job: a job advances only on a running answer
//! written whole, and a cancel counts only when its `204` went out whole.
//! A job is created once its `202` head (with the `Location`) went out
//! whole: from then on the job exists for whoever holds its URL.
//!
//! The fake counts submits (with the `Idempotency-Key` each carried), jobs
//! per key, polls, result fetches, cancels and the calls that met the
//! fault. Its only timer (the drip) is `tokio::time`, so it follows a
//! paused clock.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::raw::{fill, find};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// Where clients submit.
pub const SUBMIT_PATH: &str = "/reports";
/// Running answers a job gives before it is done.
pub const RUNNING_POLLS: u32 = 2;
/// The length of every body the fake sends (submit, running status, result).
pub const BODY_LEN: usize = 100;
/// Bytes of a body sent before a `Hang` or `Reset` strikes mid-body.
const PART: usize = 10;
/// The pace of a drip: one byte, then this long.
const DRIP_EVERY: Duration = Duration::from_secs(1);

/// Where in the conversation the fault strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Connecting for the submit (only `Refuse`: nothing listens).
    SubmitConnect,
    SubmitHead,
    SubmitBody,
    StatusHead,
    StatusBody,
    ResultHead,
    ResultBody,
    /// The `DELETE` of the status monitor (it has no body).
    Cancel,
}

impl Stage {
    pub const ALL: [Stage; 8] = [
        Stage::SubmitConnect,
        Stage::SubmitHead,
        Stage::SubmitBody,
        Stage::StatusHead,
        Stage::StatusBody,
        Stage::ResultHead,
        Stage::ResultBody,
        Stage::Cancel,
    ];

    pub fn call(self) -> Call {
        match self {
            Stage::SubmitConnect | Stage::SubmitHead | Stage::SubmitBody => Call::Submit,
            Stage::StatusHead | Stage::StatusBody => Call::Status,
            Stage::ResultHead | Stage::ResultBody => Call::Result,
            Stage::Cancel => Call::Cancel,
        }
    }

    /// Whether the fault strikes the answer's body, after a whole head.
    pub fn in_body(self) -> bool {
        matches!(
            self,
            Stage::SubmitBody | Stage::StatusBody | Stage::ResultBody
        )
    }
}

/// What the backend does wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// Closes the connection (a reset) without reading the request; at
    /// `SubmitConnect`, nothing listens at all.
    Refuse,
    /// Reads the request, then resets: before any answer, or (body stages)
    /// after the head and a part of the body.
    Reset,
    /// Reads the request and never answers, or (body stages) stops after
    /// the head and a part of the body.
    Hang,
    /// Sends the answer one byte per second: all of it, or (body stages)
    /// the head at once and then the body.
    Drip,
    /// `503 Service Unavailable` without `Retry-After`.
    Status5xx,
    /// Not HTTP at all, or (body stages) a sound head over a body that
    /// cannot be read: broken chunked framing, or a status that is not JSON.
    Malformed,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::Refuse,
        Fault::Reset,
        Fault::Hang,
        Fault::Drip,
        Fault::Status5xx,
        Fault::Malformed,
    ];
}

/// Which call of the job conversation a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Submit,
    Status,
    Result,
    Cancel,
}

/// The result a finished job answers with.
pub fn result_body(id: &str) -> String {
    pad(format!("result-of-{id}"), '.')
}

/// A running fake job API on 127.0.0.1.
pub struct FaultApi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Notified whenever a counter changes (see [`FaultApi::wait_until`]).
    changed: Notify,
    /// The accept loop and every connection, aborted when the fake drops.
    tasks: Mutex<Vec<AbortHandle>>,
}

struct State {
    fault: Option<(Stage, Fault)>,
    polls_until_done: u32,
    next_id: u64,
    jobs: BTreeMap<String, Job>,
    /// The `Idempotency-Key` of every submit, in arrival order.
    submits: Vec<Option<String>>,
    polls: usize,
    results: usize,
    cancels: usize,
    faulted: usize,
}

struct Job {
    key: Option<String>,
    running: u32,
    canceled: bool,
}

impl FaultApi {
    /// Starts the fake with `fault` (or none); each job runs for
    /// `polls_until_done` running answers (`u32::MAX`: until healed).
    pub async fn start(fault: Option<(Stage, Fault)>, polls_until_done: u32) -> FaultApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                fault,
                polls_until_done,
                next_id: 0,
                jobs: BTreeMap::new(),
                submits: Vec::new(),
                polls: 0,
                results: 0,
                cancels: 0,
                faulted: 0,
            }),
            changed: Notify::new(),
            tasks: Mutex::new(Vec::new()),
        });
        let api = FaultApi { addr, shared };
        if fault == Some((Stage::SubmitConnect, Fault::Refuse)) {
            // The port stays reserved for `heal`; until then the kernel
            // refuses every connection.
            drop(listener);
        } else {
            api.listen(listener);
        }
        api
    }

    fn listen(&self, listener: TcpListener) {
        let shared = Arc::clone(&self.shared);
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let connection = tokio::spawn(serve(stream, Arc::clone(&shared)));
                shared.track(connection.abort_handle());
            }
        });
        self.shared.track(accept.abort_handle());
    }

    /// Switches the fault off; a job that was to run until healed now
    /// finishes after its running answers. Calls already caught by the
    /// fault (a hanging one, say) stay caught.
    pub fn heal(&self) {
        let healed = {
            let mut state = self.shared.state();
            state.polls_until_done = state.polls_until_done.min(RUNNING_POLLS);
            state.fault.take()
        };
        if healed == Some((Stage::SubmitConnect, Fault::Refuse)) {
            self.listen(rebind(self.addr));
        }
        self.shared.changed.notify_waiters();
    }

    /// The `Idempotency-Key` each submit carried (`None`: none), in order.
    pub fn submits(&self) -> Vec<Option<String>> {
        self.shared.state().submits.clone()
    }

    /// The jobs created for submits that carried `key`.
    pub fn jobs_for(&self, key: &str) -> Vec<String> {
        let state = self.shared.state();
        state
            .jobs
            .iter()
            .filter(|(_, job)| job.key.as_deref() == Some(key))
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn jobs(&self) -> usize {
        self.shared.state().jobs.len()
    }

    /// GETs of a status monitor, faulted or not.
    pub fn polls(&self) -> usize {
        self.shared.state().polls
    }

    /// GETs of a result, faulted or not.
    pub fn results(&self) -> usize {
        self.shared.state().results
    }

    /// DELETEs of a status monitor, faulted or not.
    pub fn cancels(&self) -> usize {
        self.shared.state().cancels
    }

    /// Calls the fault struck.
    pub fn faulted(&self) -> usize {
        self.shared.state().faulted
    }

    /// Waits until `done` holds, checking after every change of the
    /// counters: an event to wait on, not a clock.
    pub async fn wait_until(&self, done: impl Fn(&FaultApi) -> bool) {
        loop {
            let changed = self.shared.changed.notified();
            if done(self) {
                return;
            }
            changed.await;
        }
    }
}

impl Drop for FaultApi {
    fn drop(&mut self) {
        for task in self.shared.tasks().drain(..) {
            task.abort();
        }
    }
}

/// A listener on `addr` again (the port was released, never connected to).
fn rebind(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket.listen(128).unwrap()
}

// ---------------------------------------------------------------------------
// The job conversation.

/// One request as read off the wire.
struct Request {
    method: String,
    path: String,
    key: Option<String>,
}

/// A healthy answer, and what writing it does to the jobs.
struct Answer {
    status_line: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// A job created once the head went out whole: (id, key).
    creates: Option<(String, Option<String>)>,
    /// A job that gave one more running answer once it went out whole.
    advances: Option<String>,
    /// A job canceled once the answer went out whole.
    cancels: Option<String>,
}

impl Answer {
    fn new(status_line: &'static str) -> Answer {
        Answer {
            status_line,
            headers: Vec::new(),
            body: Vec::new(),
            creates: None,
            advances: None,
            cancels: None,
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Answer {
        self.headers.push((name, value.into()));
        self
    }

    fn body(mut self, content_type: &'static str, body: String) -> Answer {
        self.body = body.into_bytes();
        self.header("content-type", content_type)
    }

    /// The head, framed by `Content-Length`, or chunked when `chunked`.
    fn head(&self, chunked: bool) -> Vec<u8> {
        let mut head = format!("{}\r\n", self.status_line);
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if chunked {
            head.push_str("transfer-encoding: chunked\r\n");
        } else {
            head.push_str(&format!("content-length: {}\r\n", self.body.len()));
        }
        head.push_str("connection: close\r\n\r\n");
        head.into_bytes()
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test must not hide the counters from the report.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tasks(&self) -> MutexGuard<'_, Vec<AbortHandle>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn track(&self, task: AbortHandle) {
        self.tasks().push(task);
    }

    fn changed(&self) {
        self.changed.notify_waiters();
    }

    /// The fault for a `call`, if one is armed for its stage.
    fn fault_for(&self, call: Call) -> Option<(Stage, Fault)> {
        self.state().fault.filter(|(stage, _)| stage.call() == call)
    }

    /// Counts `request` as a `call` (and as faulted, when `faulted`).
    fn count(&self, call: Option<Call>, request: &Request, faulted: bool) {
        let mut state = self.state();
        match call {
            Some(Call::Submit) => state.submits.push(request.key.clone()),
            Some(Call::Status) => state.polls += 1,
            Some(Call::Result) => state.results += 1,
            Some(Call::Cancel) => state.cancels += 1,
            None => {}
        }
        if faulted {
            state.faulted += 1;
        }
        drop(state);
        self.changed();
    }

    /// The healthy answer to a request.
    fn answer(&self, call: Option<Call>, request: &Request) -> Answer {
        let mut state = self.state();
        let id = request.path.rsplit('/').next().unwrap_or("").to_owned();
        match call {
            Some(Call::Submit) => {
                state.next_id += 1;
                let id = format!("job-{}", state.next_id);
                let answer = Answer::new("HTTP/1.1 202 Accepted")
                    .header("location", format!("/status/{id}"))
                    .body("application/json", pad(format!(r#"{{"id":"{id}"}}"#), ' '));
                Answer {
                    creates: Some((id, request.key.clone())),
                    ..answer
                }
            }
            Some(Call::Status) => {
                let until = state.polls_until_done;
                match state.jobs.get(&id) {
                    None => Answer::new("HTTP/1.1 404 Not Found"),
                    Some(job) if job.canceled => Answer::new("HTTP/1.1 200 OK").body(
                        "application/json",
                        pad(r#"{"status":"canceled"}"#.to_owned(), ' '),
                    ),
                    Some(job) if job.running < until => Answer {
                        advances: Some(id),
                        ..Answer::new("HTTP/1.1 200 OK").body(
                            "application/json",
                            pad(r#"{"status":"running"}"#.to_owned(), ' '),
                        )
                    },
                    Some(_) => Answer::new("HTTP/1.1 303 See Other")
                        .header("location", format!("/result/{id}")),
                }
            }
            Some(Call::Result) => {
                let until = state.polls_until_done;
                match state.jobs.get(&id) {
                    Some(job) if !job.canceled && job.running >= until => {
                        Answer::new("HTTP/1.1 200 OK").body("text/plain", result_body(&id))
                    }
                    _ => Answer::new("HTTP/1.1 404 Not Found"),
                }
            }
            Some(Call::Cancel) if state.jobs.contains_key(&id) => Answer {
                cancels: Some(id),
                ..Answer::new("HTTP/1.1 204 No Content")
            },
            Some(Call::Cancel) | None => Answer::new("HTTP/1.1 404 Not Found"),
        }
    }

    /// The answer's head went out whole.
    fn head_sent(&self, answer: &Answer) {
        if let Some((id, key)) = &answer.creates {
            self.state().jobs.insert(
                id.clone(),
                Job {
                    key: key.clone(),
                    running: 0,
                    canceled: false,
                },
            );
            self.changed();
        }
    }

    /// The whole answer went out.
    fn all_sent(&self, answer: &Answer) {
        let mut state = self.state();
        if let Some(job) = answer
            .advances
            .as_ref()
            .and_then(|id| state.jobs.get_mut(id))
        {
            job.running += 1;
        }
        if let Some(job) = answer
            .cancels
            .as_ref()
            .and_then(|id| state.jobs.get_mut(id))
        {
            job.canceled = true;
        }
        drop(state);
        self.changed();
    }
}

/// Which call a request is, from its method and path.
fn classify(method: &str, path: &str) -> Option<Call> {
    let on = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
    };
    match method {
        "POST" if path == SUBMIT_PATH => Some(Call::Submit),
        "GET" if on("/status/") => Some(Call::Status),
        "DELETE" if on("/status/") => Some(Call::Cancel),
        "GET" if on("/result/") => Some(Call::Result),
        _ => None,
    }
}

/// Serves one connection: one request, one answer (or one fault).
async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let refusing = matches!(shared.state().fault, Some((_, Fault::Refuse)));
    if refusing {
        // A refusal reads nothing: which call this is shows in the bytes
        // waiting on the socket, looked at without taking them.
        if let Some(request) = peek_request(&stream).await {
            let call = classify(&request.method, &request.path);
            if call.is_some_and(|call| shared.fault_for(call).is_some()) {
                shared.count(call, &request, true);
                // Closing with the request unread resets the connection.
                let _ = stream.set_zero_linger();
                return;
            }
        }
    }
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    let call = classify(&request.method, &request.path);
    let fault = call.and_then(|call| shared.fault_for(call));
    let answer = shared.answer(call, &request);
    // A body fault needs a body to strike (a 303 has none).
    let fault = fault.filter(|(stage, _)| !stage.in_body() || !answer.body.is_empty());
    shared.count(call, &request, fault.is_some());
    match fault {
        None => deliver(stream, &shared, &answer).await,
        Some((stage, fault)) if stage.in_body() => {
            body_fault(stream, &shared, &answer, stage, fault).await
        }
        Some((_, fault)) => head_fault(stream, &shared, &answer, fault).await,
    }
}

/// Writes the whole answer, then closes.
async fn deliver(mut stream: TcpStream, shared: &Shared, answer: &Answer) {
    if stream.write_all(&answer.head(false)).await.is_err() {
        return;
    }
    shared.head_sent(answer);
    if stream.write_all(&answer.body).await.is_err() {
        return;
    }
    shared.all_sent(answer);
    let _ = stream.shutdown().await;
}

/// A fault before or in the answer's head.
async fn head_fault(mut stream: TcpStream, shared: &Shared, answer: &Answer, fault: Fault) {
    match fault {
        Fault::Refuse | Fault::Reset => {
            let _ = stream.set_zero_linger();
        }
        Fault::Hang => hang(stream).await,
        Fault::Drip => {
            if drip(&mut stream, &answer.head(false)).await {
                shared.head_sent(answer);
                if drip(&mut stream, &answer.body).await {
                    // A dripped cancel still never cancels: see the module docs.
                    if answer.cancels.is_none() {
                        shared.all_sent(answer);
                    }
                }
            }
        }
        Fault::Status5xx => {
            let busy =
                Answer::new("HTTP/1.1 503 Service Unavailable").body("text/plain", "busy".into());
            let _ = stream.write_all(&busy.head(false)).await;
            let _ = stream.write_all(&busy.body).await;
            let _ = stream.shutdown().await;
        }
        Fault::Malformed => {
            let _ = stream.write_all(b"this is not HTTP at all\r\n\r\n").await;
            let _ = stream.shutdown().await;
        }
    }
}

/// A fault in the answer's body, after its whole head.
async fn body_fault(
    mut stream: TcpStream,
    shared: &Shared,
    answer: &Answer,
    stage: Stage,
    fault: Fault,
) {
    // A status that is not JSON has a sound framing; the other bodies
    // break their chunked framing at once.
    let chunked = fault == Fault::Malformed && stage != Stage::StatusBody;
    if stream.write_all(&answer.head(chunked)).await.is_err() {
        return;
    }
    shared.head_sent(answer);
    match fault {
        Fault::Reset => {
            let _ = stream.write_all(&answer.body[..PART]).await;
            let _ = stream.set_zero_linger();
        }
        Fault::Hang => {
            if stream.write_all(&answer.body[..PART]).await.is_ok() {
                hang(stream).await;
            }
        }
        Fault::Drip => {
            if drip(&mut stream, &answer.body).await {
                shared.all_sent(answer);
            }
        }
        Fault::Malformed if chunked => {
            let _ = stream.write_all(b"zz\r\nnot a chunk size\r\n").await;
            let _ = stream.shutdown().await;
        }
        Fault::Malformed => {
            let broken = pad(r#"{"status": running"#.to_owned(), ' ');
            let _ = stream.write_all(broken.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
        // Nothing to strike in a body: the head stage's cell.
        Fault::Refuse | Fault::Status5xx => {
            let _ = stream.write_all(&answer.body).await;
            let _ = stream.shutdown().await;
        }
    }
}

/// Never answers; returns once the peer closes the connection.
async fn hang(mut stream: TcpStream) {
    let mut sink = [0u8; 1024];
    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
}

/// Writes `bytes` one at a time, one per [`DRIP_EVERY`]; false if the
/// peer went away first.
async fn drip(stream: &mut TcpStream, bytes: &[u8]) -> bool {
    for byte in bytes {
        if stream.write_all(&[*byte]).await.is_err() {
            return false;
        }
        tokio::time::sleep(DRIP_EVERY).await;
    }
    true
}

/// `text` padded with `fill` to [`BODY_LEN`] bytes.
fn pad(mut text: String, fill: char) -> String {
    while text.len() < BODY_LEN {
        text.push(fill);
    }
    text
}

// ---------------------------------------------------------------------------
// Reading requests.

/// Reads one request: its head, and its body as framed (unread bytes
/// would turn the close after the answer into a reset).
async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 || !fill(stream, &mut buf).await {
            return None;
        }
    };
    let request = parse_head(&buf[..end])?;
    let rest = buf.split_off(end);
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        // The last chunk, then the (empty) trailer section.
        let mut body = rest;
        while find(&body, b"0\r\n\r\n").is_none() {
            if !fill(stream, &mut body).await {
                return None;
            }
        }
    } else {
        let length = header(&buf, "content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = rest;
        while body.len() < length {
            if !fill(stream, &mut body).await {
                return None;
            }
        }
    }
    Some(request)
}

/// The request head waiting on the socket, left unread.
async fn peek_request(stream: &TcpStream) -> Option<Request> {
    let mut buf = vec![0u8; 64 * 1024];
    // Baton writes a head in one piece; a head still arriving is waited
    // for by asking again, a bounded number of times.
    for _ in 0..1000 {
        let n = stream.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        if let Some(i) = find(&buf[..n], b"\r\n\r\n") {
            return parse_head(&buf[..i + 4]);
        }
        tokio::task::yield_now().await;
    }
    None
}

fn parse_head(head: &[u8]) -> Option<Request> {
    let text = String::from_utf8_lossy(head);
    let mut first = text.lines().next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?;
    let path = target.split('?').next().unwrap_or("").to_owned();
    Some(Request {
        method,
        path,
        key: header(head, "idempotency-key"),
    })
}

/// A header's value in a raw head (case-insensitive name).
fn header(head: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .skip(1)
        .find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
}

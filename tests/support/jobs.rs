//! A scriptable fake job API: one server speaking one of the backend dialects
//! of the README's preset table (A–E plus a `Custom` shape no preset matches), so the
//! async-route tests drive Baton against real HTTP on 127.0.0.1:0.
//!
//! This module owns the fake's wire formats, the per-job state machine
//! (unknown → running → done, or canceled) and the counters the tests assert
//! on. A [`Script`] says how every job on the server behaves; each submit
//! creates a new job (`job-1`, `job-2`, …) that follows the script on its own,
//! so concurrent facade requests never share a poll count.
//!
//! The fake keeps no timers: delays are only *advertised* (`Retry-After` and
//! friends), so it behaves the same under tokio's paused clock.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use baton::body::{empty, full, Body};
use bytes::Bytes;
use http::header::{ACCEPT, ALLOW, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::{client, send, Answer, Seen, TestBaton};

/// How every job on one [`JobApi`] behaves.
#[derive(Clone, Debug)]
pub struct Script {
    pub dialect: Dialect,
    /// Status answers say "running" this many times, then the job is done.
    pub polls_until_done: u32,
    pub outcome: Outcome,
    /// Sent on the submit's 202 (where the dialect has one) and on every
    /// running status answer, unless `retry_after_only_on_submit`.
    pub retry_after: Option<RetryAfter>,
    pub retry_after_only_on_submit: bool,
    /// The monitor answers 404 for the first N polls (job "not known yet");
    /// these do not count toward `polls_until_done`.
    pub unknown_first: u32,
    /// 1-based poll numbers (counting every GET of the job's monitor) that
    /// fail transiently instead.
    pub flaky: Vec<(u32, Flake)>,
    pub urls: UrlStyle,
    /// Submit answers synchronously `200 {"sync":true}`: not a job.
    pub sync_answer: bool,
    /// Submit answers this 4xx with `application/problem+json`
    /// `{"title":"rejected"}`: not a job.
    pub reject_submit: Option<u16>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            dialect: Dialect::Location303,
            polls_until_done: 2,
            outcome: Outcome::Succeed(json!({"answer": 42})),
            retry_after: None,
            retry_after_only_on_submit: false,
            unknown_first: 0,
            flaky: Vec::new(),
            urls: UrlStyle::Relative,
            sync_answer: false,
            reject_submit: None,
        }
    }
}

/// The conventions of the presets (README, "Job APIs"); `Custom` is deliberately unlike any preset.
#[derive(Clone, Debug)]
pub enum Dialect {
    Location303,
    OperationLocation,
    Google,
    StatusField,
    AcceptedWhileRunning,
    Custom,
}

#[derive(Clone, Debug)]
pub enum Outcome {
    Succeed(Value),
    Fail(Value),
    Cancel,
    /// The job disappears: its monitor answers 404 (410 for `Location303`).
    Vanish,
}

#[derive(Clone, Debug)]
pub enum RetryAfter {
    /// `Retry-After: n`
    Seconds(u64),
    /// `Retry-After: <IMF-fixdate n seconds from now>`
    HttpDate(u64),
    /// `retry-after-ms: n`
    Millis(u64),
    /// `x-ms-retry-after-ms: n`
    MsMillis(u64),
}

#[derive(Clone, Debug)]
pub enum Flake {
    Status503,
    Status429 {
        retry_after_secs: u64,
    },
    /// Read the request, then close the connection without answering.
    Reset,
}

#[derive(Clone, Debug)]
pub enum UrlStyle {
    Relative,
    Absolute,
    /// Status URLs point at another server (which the test runs, not the fake).
    OffOrigin(SocketAddr),
}

/// A running fake job API on 127.0.0.1:0.
pub struct JobApi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    // Dropping the sender tells every open connection to close, so a dropped
    // fake does not keep serving Baton's pooled keep-alive connections.
    _stop: watch::Sender<()>,
    task: JoinHandle<()>,
}

impl JobApi {
    pub async fn start(script: Script) -> JobApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            script,
            addr,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        });
        let (stop, stopped) = watch::channel(());
        let serving = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve(stream, Arc::clone(&serving), stopped.clone()));
            }
        });
        JobApi {
            addr,
            shared,
            _stop: stop,
            task,
        }
    }

    /// Requests to the submit path (any method).
    pub fn submits(&self) -> usize {
        self.shared.state().submits
    }

    /// GETs of a status monitor, including 404s, 406s and flaky ones.
    pub fn polls(&self) -> usize {
        self.shared.state().polls
    }

    /// GETs of a separate result resource (whether or not it was ready).
    pub fn fetches(&self) -> usize {
        self.shared.state().fetches
    }

    /// DELETEs of a monitor (and Google's `POST …:cancel`).
    pub fn cancels(&self) -> usize {
        self.shared.state().cancels
    }

    /// Every request head, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.shared.state().requests.clone()
    }

    /// The bodies of the submits, in order.
    pub fn submit_bodies(&self) -> Vec<Bytes> {
        self.shared.state().submit_bodies.clone()
    }

    /// Waits until `done` holds, checking after every request the fake
    /// handles: an event to wait on, not a clock.
    pub async fn wait_until(&self, done: impl Fn(&JobApi) -> bool) {
        loop {
            let changed = self.shared.changed.notified();
            if done(self) {
                return;
            }
            changed.await;
        }
    }

    /// The path a client POSTs to for this dialect.
    pub fn submit_path(&self) -> &'static str {
        self.shared.script.dialect.submit_path()
    }

    /// `http://{addr}{submit_path}`.
    pub fn submit_url(&self) -> String {
        format!("http://{}{}", self.addr, self.submit_path())
    }
}

// Baton configs and calls for tests that front a job API.

/// One async route for `path` on the backend at `backend` with the given
/// `[routes.async]` body, and a pass-through route for everything else.
pub fn route_config(backend: SocketAddr, path: &str, table: &str) -> String {
    format!(
        r#"
[backends.jobs]
url = "http://{backend}"

[[routes]]
name = "facade"
match = {{ methods = ["POST"], path = "{path}" }}
backend = "jobs"

[routes.async]
{table}

[[routes]]
name = "default"
match = {{ path = "/*" }}
backend = "jobs"
"#
    )
}

/// [`route_config`] on a fake job API's submit path.
pub fn async_config(api: &JobApi, table: &str) -> String {
    route_config(api.addr, api.submit_path(), table)
}

/// Sends a submit on a raw connection and hangs up once the job is being
/// polled.
pub async fn submit_then_hang_up(baton: &TestBaton, api: &JobApi) {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(baton.addr).await.unwrap();
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}",
        api.submit_path()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    api.wait_until(|a| a.polls() >= 2).await;
    drop(stream);
}

/// POSTs the client's request to `path` through Baton.
pub async fn post(baton: &TestBaton, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::post(baton.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(full(r#"{"report":"q3"}"#)).unwrap();
    send(&client(), request).await
}

impl Drop for JobApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Dialect {
    fn submit_path(&self) -> &'static str {
        match self {
            Dialect::Location303 => "/reports",
            Dialect::OperationLocation => "/documents:analyze",
            Dialect::Google => "/v1/things:run",
            Dialect::StatusField => "/tasks",
            Dialect::AcceptedWhileRunning => "/orchestrators/report",
            Dialect::Custom => "/jobs",
        }
    }

    fn monitor_path(&self, id: &str) -> String {
        match self {
            Dialect::Location303 => format!("/status/{id}"),
            Dialect::OperationLocation => format!("/operations/{id}"),
            Dialect::Google => format!("/v1/operations/{id}"),
            Dialect::StatusField => format!("/tasks/{id}"),
            Dialect::AcceptedWhileRunning => format!("/runtime/instances/{id}"),
            Dialect::Custom => format!("/api/jobs/{id}/status"),
        }
    }

    /// Which resource a path names. Only this dialect's paths are served;
    /// anything else is [`Target::Unknown`].
    fn target(&self, path: &str) -> Target {
        if path == self.submit_path() {
            return Target::Submit;
        }
        let id = |prefix: &str, suffix: &str| -> Option<String> {
            let id = path.strip_prefix(prefix)?.strip_suffix(suffix)?;
            (!id.is_empty() && !id.contains('/')).then(|| id.to_owned())
        };
        let found = match self {
            Dialect::Location303 => id("/status/", "")
                .map(Target::Monitor)
                .or_else(|| id("/result/", "").map(Target::Result)),
            Dialect::OperationLocation => id("/operations/", "").map(Target::Monitor),
            // AIP-151 cancels with a custom method; ids never contain ':'.
            Dialect::Google => id("/v1/operations/", ":cancel")
                .map(Target::CancelMethod)
                .or_else(|| id("/v1/operations/", "").map(Target::Monitor)),
            Dialect::StatusField => id("/tasks/", "").map(Target::Monitor),
            Dialect::AcceptedWhileRunning => id("/runtime/instances/", "").map(Target::Monitor),
            Dialect::Custom => id("/api/jobs/", "/status/results")
                .map(Target::Result)
                .or_else(|| id("/api/jobs/", "/status").map(Target::Monitor)),
        };
        found.unwrap_or(Target::Unknown)
    }
}

enum Target {
    Submit,
    Monitor(String),
    Result(String),
    CancelMethod(String),
    Unknown,
}

/// What the service does with one request.
enum Reply {
    Answer(Response<Body>),
    /// Close the connection without a byte of answer.
    Reset,
}

struct Shared {
    script: Script,
    addr: SocketAddr,
    state: Mutex<State>,
    /// Notified after each request is handled (see [`JobApi::wait_until`]).
    changed: Notify,
}

#[derive(Default)]
struct State {
    next_id: u64,
    jobs: HashMap<String, Job>,
    submits: usize,
    polls: usize,
    fetches: usize,
    cancels: usize,
    requests: Vec<Seen>,
    submit_bodies: Vec<Bytes>,
}

struct Job {
    /// Every GET of this job's monitor so far: the poll number `flaky` names.
    gets: u32,
    /// 404 answers still owed before the job is "known".
    unknown_left: u32,
    /// "Running" answers given so far.
    running: u32,
    canceled: bool,
}

/// Where the job stands when the script is consulted.
enum Phase {
    Running(u32),
    Done,
    Canceled,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the counters from the rest.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn handle(&self, request: Request<Incoming>) -> Reply {
        let reply = self.route(request).await;
        // Counters are final for this request: wake tests waiting on them.
        self.changed.notify_waiters();
        reply
    }

    async fn route(&self, request: Request<Incoming>) -> Reply {
        let (parts, body) = request.into_parts();
        self.state().requests.push(Seen {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
        });
        let dialect = &self.script.dialect;
        let get = parts.method == Method::GET || parts.method == Method::HEAD;
        match dialect.target(parts.uri.path()) {
            Target::Submit => {
                // A body that fails mid-way is recorded as empty (`collect`
                // keeps no partial result); the submit is still answered.
                let bytes = match body.collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(_) => Bytes::new(),
                };
                Reply::Answer(self.submit(bytes))
            }
            Target::Monitor(id) if get => self.poll(&id, &parts.headers),
            Target::Monitor(id) if parts.method == Method::DELETE => {
                Reply::Answer(self.cancel(&id, StatusCode::NO_CONTENT, empty()))
            }
            Target::Monitor(_) => Reply::Answer(not_allowed("GET, HEAD, DELETE")),
            Target::Result(id) if get => Reply::Answer(self.fetch(&id)),
            Target::Result(_) => Reply::Answer(not_allowed("GET, HEAD")),
            Target::CancelMethod(id) if parts.method == Method::POST => {
                Reply::Answer(self.cancel(&id, StatusCode::OK, json_body(&json!({}))))
            }
            Target::CancelMethod(_) => Reply::Answer(not_allowed("POST")),
            Target::Unknown => Reply::Answer(status_only(StatusCode::NOT_FOUND)),
        }
    }

    fn submit(&self, body: Bytes) -> Response<Body> {
        let script = &self.script;
        let mut state = self.state();
        state.submits += 1;
        state.submit_bodies.push(body);
        if let Some(code) = script.reject_submit {
            // An out-of-range code in a script is a test bug; answer 400
            // rather than panic inside the server.
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
            return Response::builder()
                .status(status)
                .header(CONTENT_TYPE, "application/problem+json")
                .body(full(json!({"title": "rejected"}).to_string()))
                .unwrap();
        }
        if script.sync_answer {
            return json_answer(StatusCode::OK, &json!({"sync": true}));
        }
        state.next_id += 1;
        let id = format!("job-{}", state.next_id);
        state.jobs.insert(
            id.clone(),
            Job {
                gets: 0,
                unknown_left: script.unknown_first,
                running: 0,
                canceled: false,
            },
        );
        drop(state);

        let monitor = script.dialect.monitor_path(&id);
        let accepted = Response::builder().status(StatusCode::ACCEPTED);
        let accepted = with_retry_after(accepted, script.retry_after.as_ref());
        match script.dialect {
            Dialect::Location303 | Dialect::AcceptedWhileRunning => accepted
                .header(LOCATION, self.url(&monitor, false))
                .body(empty())
                .unwrap(),
            Dialect::OperationLocation => accepted
                .header("operation-location", self.url(&monitor, true))
                .header(CONTENT_TYPE, "application/json")
                .body(json_body(&json!({"id": id, "status": "NotStarted"})))
                .unwrap(),
            Dialect::Google => json_answer(
                StatusCode::OK,
                &json!({"name": format!("operations/{id}"), "done": false}),
            ),
            Dialect::StatusField => accepted
                .header(CONTENT_TYPE, "application/json")
                .body(json_body(&json!({"task_id": id, "state": "PENDING"})))
                .unwrap(),
            Dialect::Custom => json_answer(StatusCode::OK, &json!({"job": {"ref": id}})),
        }
    }

    fn poll(&self, id: &str, headers: &HeaderMap) -> Reply {
        let script = &self.script;
        let mut state = self.state();
        state.polls += 1;
        let Some(job) = state.jobs.get_mut(id) else {
            return Reply::Answer(status_only(StatusCode::NOT_FOUND));
        };
        job.gets += 1;
        // The custom API insists on content negotiation, so a route has to
        // be able to send configured headers on polls.
        if matches!(script.dialect, Dialect::Custom) && !accepts_json(headers) {
            return Reply::Answer(status_only(StatusCode::NOT_ACCEPTABLE));
        }
        // Transient failures neither reveal nor advance the job.
        if let Some((_, flake)) = script.flaky.iter().find(|(n, _)| *n == job.gets) {
            return match flake {
                Flake::Status503 => Reply::Answer(
                    Response::builder()
                        .status(StatusCode::SERVICE_UNAVAILABLE)
                        .header(CONTENT_TYPE, "text/plain")
                        .body(full("busy"))
                        .unwrap(),
                ),
                Flake::Status429 { retry_after_secs } => Reply::Answer(
                    Response::builder()
                        .status(StatusCode::TOO_MANY_REQUESTS)
                        .header(RETRY_AFTER, retry_after_secs.to_string())
                        .body(empty())
                        .unwrap(),
                ),
                Flake::Reset => Reply::Reset,
            };
        }
        let phase = if job.canceled {
            Phase::Canceled
        } else if job.unknown_left > 0 {
            job.unknown_left -= 1;
            return Reply::Answer(status_only(StatusCode::NOT_FOUND));
        } else if job.running < script.polls_until_done {
            job.running += 1;
            Phase::Running(job.running)
        } else {
            Phase::Done
        };
        drop(state);
        Reply::Answer(self.status_answer(id, phase))
    }

    /// The monitor's answer for a job that is known.
    fn status_answer(&self, id: &str, phase: Phase) -> Response<Body> {
        let script = &self.script;
        let name = format!("operations/{id}");
        let body = match (&script.dialect, &phase) {
            (_, Phase::Running(n)) => {
                let (status, body) = match script.dialect {
                    Dialect::Location303 => (StatusCode::OK, json!({"status": "Running"})),
                    Dialect::OperationLocation => {
                        // The first answer says NotStarted, as real services do,
                        // so clients must treat it as still running.
                        let said = if *n == 1 { "NotStarted" } else { "Running" };
                        (StatusCode::OK, json!({"id": id, "status": said}))
                    }
                    Dialect::Google => (
                        StatusCode::OK,
                        json!({"name": name, "done": false, "metadata": {"progress": n}}),
                    ),
                    Dialect::StatusField => {
                        (StatusCode::OK, json!({"task_id": id, "state": "STARTED"}))
                    }
                    Dialect::AcceptedWhileRunning => {
                        (StatusCode::ACCEPTED, json!({"runtimeStatus": "Running"}))
                    }
                    Dialect::Custom => (StatusCode::OK, json!({"phase": "working"})),
                };
                let retry = if script.retry_after_only_on_submit {
                    None
                } else {
                    script.retry_after.as_ref()
                };
                return with_retry_after(Response::builder().status(status), retry)
                    .header(CONTENT_TYPE, "application/json")
                    .body(json_body(&body))
                    .unwrap();
            }
            (Dialect::Location303, Phase::Canceled) => json!({"status": "Canceled"}),
            (Dialect::OperationLocation, Phase::Canceled) => {
                json!({"id": id, "status": "Canceled"})
            }
            (Dialect::Google, Phase::Canceled) => {
                json!({"name": name, "done": true, "error": {"code": 1, "message": "canceled"}})
            }
            (Dialect::StatusField, Phase::Canceled) => json!({"task_id": id, "state": "REVOKED"}),
            (Dialect::AcceptedWhileRunning, Phase::Canceled) => {
                json!({"runtimeStatus": "Terminated"})
            }
            (Dialect::Custom, Phase::Canceled) => json!({"phase": "stopped"}),
            (dialect, Phase::Done) => match (dialect, &script.outcome) {
                (_, Outcome::Cancel) => return self.status_answer(id, Phase::Canceled),
                (Dialect::Location303, Outcome::Vanish) => return status_only(StatusCode::GONE),
                (_, Outcome::Vanish) => return status_only(StatusCode::NOT_FOUND),
                (Dialect::Location303, Outcome::Succeed(_)) => {
                    let result = self.url(&format!("/result/{id}"), false);
                    return Response::builder()
                        .status(StatusCode::SEE_OTHER)
                        .header(LOCATION, result)
                        .body(empty())
                        .unwrap();
                }
                (Dialect::Location303, Outcome::Fail(e)) => {
                    json!({"status": "Failed", "error": e})
                }
                (Dialect::OperationLocation, Outcome::Succeed(v)) => {
                    json!({"id": id, "status": "Succeeded", "result": v})
                }
                (Dialect::OperationLocation, Outcome::Fail(e)) => {
                    json!({"id": id, "status": "Failed", "error": e})
                }
                (Dialect::Google, Outcome::Succeed(v)) => {
                    json!({"name": name, "done": true, "response": v})
                }
                (Dialect::Google, Outcome::Fail(e)) => {
                    json!({"name": name, "done": true, "error": e})
                }
                (Dialect::StatusField, Outcome::Succeed(v)) => {
                    json!({"task_id": id, "state": "SUCCESS", "result": v})
                }
                (Dialect::StatusField, Outcome::Fail(e)) => {
                    json!({"task_id": id, "state": "FAILURE", "traceback": e})
                }
                (Dialect::AcceptedWhileRunning, Outcome::Succeed(v)) => {
                    json!({"runtimeStatus": "Completed", "output": v})
                }
                (Dialect::AcceptedWhileRunning, Outcome::Fail(e)) => {
                    json!({"runtimeStatus": "Failed", "output": e})
                }
                (Dialect::Custom, Outcome::Succeed(_)) => json!({"phase": "finished"}),
                (Dialect::Custom, Outcome::Fail(e)) => json!({"phase": "broken", "problem": e}),
            },
        };
        json_answer(StatusCode::OK, &body)
    }

    /// A GET of the separate result resource: there only once the job has
    /// succeeded (and was not canceled), 404 otherwise.
    fn fetch(&self, id: &str) -> Response<Body> {
        let script = &self.script;
        let mut state = self.state();
        state.fetches += 1;
        let done = state.jobs.get(id).is_some_and(|job| {
            !job.canceled && job.unknown_left == 0 && job.running >= script.polls_until_done
        });
        drop(state);
        let (true, Outcome::Succeed(value)) = (done, &script.outcome) else {
            return status_only(StatusCode::NOT_FOUND);
        };
        let answer = match script.dialect {
            Dialect::Location303 => Response::builder()
                .status(StatusCode::CREATED)
                .header("x-result", "yes")
                .header("content-location", format!("/result/{id}")),
            _ => Response::builder().status(StatusCode::OK),
        };
        answer
            .header(CONTENT_TYPE, "application/json")
            .body(json_body(value))
            .unwrap()
    }

    fn cancel(&self, id: &str, status: StatusCode, body: Body) -> Response<Body> {
        let mut state = self.state();
        state.cancels += 1;
        match state.jobs.get_mut(id) {
            Some(job) => {
                job.canceled = true;
                Response::builder().status(status).body(body).unwrap()
            }
            None => status_only(StatusCode::NOT_FOUND),
        }
    }

    /// A URL for `path` as the script's `UrlStyle` writes it; `absolute`
    /// forces an absolute URL (Operation-Location always is one).
    fn url(&self, path: &str, absolute: bool) -> String {
        match &self.script.urls {
            UrlStyle::Relative if !absolute => path.to_owned(),
            UrlStyle::Relative | UrlStyle::Absolute => format!("http://{}{path}", self.addr),
            UrlStyle::OffOrigin(other) => format!("http://{other}{path}"),
        }
    }
}

/// Serves one connection until it ends, the fake is dropped, or a
/// [`Flake::Reset`] asks for it to be torn down.
async fn serve(stream: TcpStream, shared: Arc<Shared>, mut stopped: watch::Receiver<()>) {
    // A second handle on the socket outlives hyper's, so a reset can set
    // SO_LINGER=0 on it and the final close sends RST instead of FIN.
    let (stream, spare) = match duplicate(stream) {
        Ok(pair) => pair,
        Err(_) => return,
    };
    let reset = Arc::new(Notify::new());
    let asked = Arc::clone(&reset);
    let service = service_fn(move |request: Request<Incoming>| {
        let shared = Arc::clone(&shared);
        let asked = Arc::clone(&asked);
        async move {
            match shared.handle(request).await {
                Reply::Answer(answer) => Ok::<_, Infallible>(answer),
                Reply::Reset => {
                    // Stored as a permit if the connection task is busy, so
                    // the wake-up cannot be lost; this request never answers.
                    asked.notify_one();
                    std::future::pending().await
                }
            }
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        _ = reset.notified() => {
            if let Ok(spare) = TcpStream::from_std(spare) {
                let _ = spare.set_zero_linger();
            }
            // Both handles drop at the end of this task; the last close
            // resets the connection.
        }
        _ = stopped.changed() => {}
    }
}

fn duplicate(stream: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let std_stream = stream.into_std()?;
    let spare = std_stream.try_clone()?;
    Ok((TcpStream::from_std(std_stream)?, spare))
}

fn accepts_json(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT).iter().any(|value| {
        value
            .to_str()
            .is_ok_and(|v| v.to_ascii_lowercase().contains("application/json"))
    })
}

fn with_retry_after(
    builder: http::response::Builder,
    retry: Option<&RetryAfter>,
) -> http::response::Builder {
    match retry {
        None => builder,
        Some(RetryAfter::Seconds(n)) => builder.header(RETRY_AFTER, n.to_string()),
        Some(RetryAfter::HttpDate(n)) => {
            // HTTP-dates have whole seconds; round up so the advertised time
            // is never earlier than `n` seconds from now.
            let at = SystemTime::now() + Duration::from_secs(*n) + Duration::from_millis(999);
            builder.header(RETRY_AFTER, httpdate::fmt_http_date(at))
        }
        Some(RetryAfter::Millis(n)) => builder.header("retry-after-ms", n.to_string()),
        Some(RetryAfter::MsMillis(n)) => builder.header("x-ms-retry-after-ms", n.to_string()),
    }
}

fn json_body(value: &Value) -> Body {
    full(value.to_string())
}

fn json_answer(status: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(json_body(value))
        .unwrap()
}

fn status_only(status: StatusCode) -> Response<Body> {
    Response::builder().status(status).body(empty()).unwrap()
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::METHOD_NOT_ALLOWED)
        .header(ALLOW, allow)
        .body(empty())
        .unwrap()
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;
    use crate::support::{client, send, Answer, TestClient};

    async fn call(
        client: &TestClient,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        send(client, request.body(empty()).unwrap()).await
    }

    async fn poll(client: &TestClient, url: &str) -> Answer {
        call(client, Method::GET, url, &[]).await
    }

    async fn submit(client: &TestClient, api: &JobApi, body: &'static str) -> Answer {
        let request = Request::post(api.submit_url()).body(full(body)).unwrap();
        send(client, request).await
    }

    fn url(api: &JobApi, path: &str) -> String {
        format!("http://{}{path}", api.addr)
    }

    #[tokio::test]
    async fn jobs_fake_location303_happy_path() {
        let api = JobApi::start(Script::default()).await;
        let client = client();
        assert_eq!(api.submit_path(), "/reports");
        let accepted = submit(&client, &api, "{\"q\":1}").await;
        assert_eq!(accepted.status, StatusCode::ACCEPTED);
        assert_eq!(accepted.header("location"), Some("/status/job-1"));
        assert!(accepted.header("retry-after").is_none());
        assert!(accepted.body.is_empty());

        let monitor = url(&api, "/status/job-1");
        for _ in 0..2 {
            let running = poll(&client, &monitor).await;
            assert_eq!(running.status, StatusCode::OK);
            assert_eq!(running.json(), json!({"status": "Running"}));
        }
        let done = poll(&client, &monitor).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER);
        assert_eq!(done.header("location"), Some("/result/job-1"));

        let result = poll(&client, &url(&api, "/result/job-1")).await;
        assert_eq!(result.status, StatusCode::CREATED);
        assert_eq!(result.json(), json!({"answer": 42}));
        assert_eq!(result.header("content-type"), Some("application/json"));
        assert_eq!(result.header("x-result"), Some("yes"));
        assert_eq!(result.header("content-location"), Some("/result/job-1"));

        assert_eq!(
            (api.submits(), api.polls(), api.fetches(), api.cancels()),
            (1, 3, 1, 0)
        );
        assert_eq!(api.submit_bodies(), vec![Bytes::from_static(b"{\"q\":1}")]);
        let methods: Vec<Method> = api.requests().into_iter().map(|s| s.method).collect();
        assert_eq!(methods[0], Method::POST);
        assert_eq!(methods.len(), 5);
    }

    #[tokio::test]
    async fn jobs_fake_location303_absolute_and_off_origin_urls() {
        let api = JobApi::start(Script {
            urls: UrlStyle::Absolute,
            polls_until_done: 0,
            ..Script::default()
        })
        .await;
        let client = client();
        let accepted = submit(&client, &api, "").await;
        let monitor = format!("http://{}/status/job-1", api.addr);
        assert_eq!(accepted.header("location"), Some(monitor.as_str()));
        let done = poll(&client, &monitor).await;
        let result = format!("http://{}/result/job-1", api.addr);
        assert_eq!(done.header("location"), Some(result.as_str()));

        let elsewhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let api = JobApi::start(Script {
            urls: UrlStyle::OffOrigin(elsewhere),
            ..Script::default()
        })
        .await;
        let accepted = submit(&client, &api, "").await;
        assert_eq!(
            accepted.header("location"),
            Some("http://127.0.0.1:9/status/job-1")
        );
    }

    #[tokio::test]
    async fn jobs_fake_operation_location_happy_path() {
        let api = JobApi::start(Script {
            dialect: Dialect::OperationLocation,
            ..Script::default()
        })
        .await;
        let client = client();
        let accepted = submit(&client, &api, "doc").await;
        assert_eq!(accepted.status, StatusCode::ACCEPTED);
        let monitor = format!("http://{}/operations/job-1", api.addr);
        assert_eq!(
            accepted.header("operation-location"),
            Some(monitor.as_str())
        );
        assert_eq!(
            accepted.json(),
            json!({"id": "job-1", "status": "NotStarted"})
        );

        let first = poll(&client, &monitor).await;
        assert_eq!(first.json(), json!({"id": "job-1", "status": "NotStarted"}));
        let second = poll(&client, &monitor).await;
        assert_eq!(second.json(), json!({"id": "job-1", "status": "Running"}));
        let done = poll(&client, &monitor).await;
        assert_eq!(done.status, StatusCode::OK);
        assert_eq!(
            done.json(),
            json!({"id": "job-1", "status": "Succeeded", "result": {"answer": 42}})
        );
    }

    #[tokio::test]
    async fn jobs_fake_google_happy_path_and_failure() {
        let api = JobApi::start(Script {
            dialect: Dialect::Google,
            polls_until_done: 1,
            ..Script::default()
        })
        .await;
        let client = client();
        let submitted = submit(&client, &api, "").await;
        assert_eq!(submitted.status, StatusCode::OK);
        assert_eq!(
            submitted.json(),
            json!({"name": "operations/job-1", "done": false})
        );
        let monitor = url(&api, "/v1/operations/job-1");
        let running = poll(&client, &monitor).await;
        assert_eq!(
            running.json(),
            json!({"name": "operations/job-1", "done": false, "metadata": {"progress": 1}})
        );
        let done = poll(&client, &monitor).await;
        assert_eq!(
            done.json(),
            json!({"name": "operations/job-1", "done": true, "response": {"answer": 42}})
        );

        let error = json!({"code": 3, "message": "bad input"});
        let api = JobApi::start(Script {
            dialect: Dialect::Google,
            polls_until_done: 0,
            outcome: Outcome::Fail(error.clone()),
            ..Script::default()
        })
        .await;
        submit(&client, &api, "").await;
        let failed = poll(&client, &url(&api, "/v1/operations/job-1")).await;
        assert_eq!(failed.json()["done"], true);
        assert_eq!(failed.json()["error"], error);
    }

    #[tokio::test]
    async fn jobs_fake_status_field_happy_path_and_failure() {
        let api = JobApi::start(Script {
            dialect: Dialect::StatusField,
            polls_until_done: 1,
            ..Script::default()
        })
        .await;
        let client = client();
        let submitted = submit(&client, &api, "").await;
        assert_eq!(submitted.status, StatusCode::ACCEPTED);
        assert_eq!(
            submitted.json(),
            json!({"task_id": "job-1", "state": "PENDING"})
        );
        let monitor = url(&api, "/tasks/job-1");
        assert_eq!(poll(&client, &monitor).await.json()["state"], "STARTED");
        let done = poll(&client, &monitor).await.json();
        assert_eq!(done["state"], "SUCCESS");
        assert_eq!(done["result"], json!({"answer": 42}));

        let api = JobApi::start(Script {
            dialect: Dialect::StatusField,
            polls_until_done: 0,
            outcome: Outcome::Fail(json!("Traceback: boom")),
            ..Script::default()
        })
        .await;
        submit(&client, &api, "").await;
        let failed = poll(&client, &url(&api, "/tasks/job-1")).await.json();
        assert_eq!(failed["state"], "FAILURE");
        assert_eq!(failed["traceback"], "Traceback: boom");
    }

    #[tokio::test]
    async fn jobs_fake_accepted_while_running_happy_path() {
        let api = JobApi::start(Script {
            dialect: Dialect::AcceptedWhileRunning,
            retry_after: Some(RetryAfter::Seconds(2)),
            ..Script::default()
        })
        .await;
        let client = client();
        let accepted = submit(&client, &api, "").await;
        assert_eq!(accepted.status, StatusCode::ACCEPTED);
        assert_eq!(
            accepted.header("location"),
            Some("/runtime/instances/job-1")
        );
        assert_eq!(accepted.header("retry-after"), Some("2"));
        let monitor = url(&api, "/runtime/instances/job-1");
        for _ in 0..2 {
            let running = poll(&client, &monitor).await;
            assert_eq!(running.status, StatusCode::ACCEPTED);
            assert_eq!(running.header("retry-after"), Some("2"));
            assert_eq!(running.json(), json!({"runtimeStatus": "Running"}));
        }
        let done = poll(&client, &monitor).await;
        assert_eq!(done.status, StatusCode::OK);
        assert!(done.header("retry-after").is_none());
        assert_eq!(
            done.json(),
            json!({"runtimeStatus": "Completed", "output": {"answer": 42}})
        );
    }

    #[tokio::test]
    async fn jobs_fake_custom_needs_accept_and_serves_its_result() {
        let api = JobApi::start(Script {
            dialect: Dialect::Custom,
            polls_until_done: 1,
            ..Script::default()
        })
        .await;
        let client = client();
        let submitted = submit(&client, &api, "").await;
        assert_eq!(submitted.status, StatusCode::OK);
        assert_eq!(submitted.json(), json!({"job": {"ref": "job-1"}}));

        let monitor = url(&api, "/api/jobs/job-1/status");
        let refused = poll(&client, &monitor).await;
        assert_eq!(refused.status, StatusCode::NOT_ACCEPTABLE);
        let json_only = [("accept", "application/json")];
        let running = call(&client, Method::GET, &monitor, &json_only).await;
        assert_eq!(running.json(), json!({"phase": "working"}));
        let done = call(&client, Method::GET, &monitor, &json_only).await;
        assert_eq!(done.json(), json!({"phase": "finished"}));
        let result = poll(&client, &url(&api, "/api/jobs/job-1/status/results")).await;
        assert_eq!(result.status, StatusCode::OK);
        assert_eq!(result.header("content-type"), Some("application/json"));
        assert_eq!(result.json(), json!({"answer": 42}));
        assert_eq!((api.polls(), api.fetches()), (3, 1));
    }

    #[tokio::test]
    async fn jobs_fake_retry_after_forms() {
        let client = client();
        let forms = [
            (RetryAfter::Seconds(3), "retry-after"),
            (RetryAfter::HttpDate(5), "retry-after"),
            (RetryAfter::Millis(250), "retry-after-ms"),
            (RetryAfter::MsMillis(750), "x-ms-retry-after-ms"),
        ];
        for (form, header) in forms {
            let api = JobApi::start(Script {
                retry_after: Some(form.clone()),
                ..Script::default()
            })
            .await;
            let accepted = submit(&client, &api, "").await;
            let running = poll(&client, &url(&api, "/status/job-1")).await;
            for answer in [&accepted, &running] {
                let value = answer.header(header).unwrap_or_else(|| panic!("{form:?}"));
                match form {
                    RetryAfter::Seconds(n) | RetryAfter::Millis(n) | RetryAfter::MsMillis(n) => {
                        assert_eq!(value, n.to_string())
                    }
                    RetryAfter::HttpDate(n) => {
                        // Between n and n+2 seconds from now, at second granularity.
                        let now = SystemTime::now();
                        let candidates: Vec<String> = (n..=n + 2)
                            .map(|s| httpdate::fmt_http_date(now + Duration::from_secs(s)))
                            .collect();
                        assert!(candidates.iter().any(|c| c == value), "{value}");
                    }
                }
            }
        }

        let api = JobApi::start(Script {
            retry_after: Some(RetryAfter::Seconds(3)),
            retry_after_only_on_submit: true,
            ..Script::default()
        })
        .await;
        assert_eq!(
            submit(&client, &api, "").await.header("retry-after"),
            Some("3")
        );
        let running = poll(&client, &url(&api, "/status/job-1")).await;
        assert!(running.header("retry-after").is_none());
    }

    #[tokio::test]
    async fn jobs_fake_unknown_first_and_flaky_polls_do_not_advance_the_job() {
        let api = JobApi::start(Script {
            polls_until_done: 1,
            unknown_first: 1,
            flaky: vec![
                (2, Flake::Status503),
                (
                    3,
                    Flake::Status429 {
                        retry_after_secs: 4,
                    },
                ),
                (4, Flake::Reset),
            ],
            ..Script::default()
        })
        .await;
        let client = client();
        submit(&client, &api, "").await;
        let monitor = url(&api, "/status/job-1");
        assert_eq!(poll(&client, &monitor).await.status, StatusCode::NOT_FOUND);
        let busy = poll(&client, &monitor).await;
        assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.text(), "busy");
        let slow = poll(&client, &monitor).await;
        assert_eq!(slow.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(slow.header("retry-after"), Some("4"));

        let reset = tokio::time::timeout(
            crate::support::HANG,
            client.request(Request::get(&monitor).body(empty()).unwrap()),
        )
        .await
        .expect("the reset poll hung");
        assert!(reset.is_err(), "a reset poll got an answer: {reset:?}");

        let running = poll(&client, &monitor).await;
        assert_eq!(running.json(), json!({"status": "Running"}));
        assert_eq!(poll(&client, &monitor).await.status, StatusCode::SEE_OTHER);
        assert_eq!(api.polls(), 6);
    }

    #[tokio::test]
    async fn jobs_fake_cancel_and_unknown_ids() {
        let api = JobApi::start(Script {
            dialect: Dialect::StatusField,
            polls_until_done: 5,
            ..Script::default()
        })
        .await;
        let client = client();
        submit(&client, &api, "").await;
        let monitor = url(&api, "/tasks/job-1");
        assert_eq!(poll(&client, &monitor).await.json()["state"], "STARTED");
        let deleted = call(&client, Method::DELETE, &monitor, &[]).await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        assert_eq!(poll(&client, &monitor).await.json()["state"], "REVOKED");
        assert_eq!(api.cancels(), 1);

        // Unknown ids and paths answer 404; only monitor GETs are polls.
        let stranger = poll(&client, &url(&api, "/tasks/job-99")).await;
        assert_eq!(stranger.status, StatusCode::NOT_FOUND);
        let elsewhere = poll(&client, &url(&api, "/tasks/job-1/extra")).await;
        assert_eq!(elsewhere.status, StatusCode::NOT_FOUND);
        assert_eq!(api.polls(), 3);
        let put = call(&client, Method::PUT, &monitor, &[]).await;
        assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);

        let google = JobApi::start(Script {
            dialect: Dialect::Google,
            ..Script::default()
        })
        .await;
        submit(&client, &google, "").await;
        let cancel = call(
            &client,
            Method::POST,
            &url(&google, "/v1/operations/job-1:cancel"),
            &[],
        )
        .await;
        assert_eq!(cancel.status, StatusCode::OK);
        let canceled = poll(&client, &url(&google, "/v1/operations/job-1")).await;
        assert_eq!(canceled.json()["error"]["code"], 1);
        assert_eq!(google.cancels(), 1);
    }

    #[tokio::test]
    async fn jobs_fake_jobs_run_independently() {
        let api = JobApi::start(Script {
            polls_until_done: 1,
            ..Script::default()
        })
        .await;
        let client = client();
        submit(&client, &api, "a").await;
        let second = submit(&client, &api, "b").await;
        assert_eq!(second.header("location"), Some("/status/job-2"));
        let one = url(&api, "/status/job-1");
        let two = url(&api, "/status/job-2");
        assert_eq!(poll(&client, &one).await.status, StatusCode::OK);
        assert_eq!(poll(&client, &one).await.status, StatusCode::SEE_OTHER);
        // Job 2 has said nothing yet, so it has no result.
        let early = poll(&client, &url(&api, "/result/job-2")).await;
        assert_eq!(early.status, StatusCode::NOT_FOUND);
        assert_eq!(poll(&client, &two).await.status, StatusCode::OK);
        assert_eq!(
            api.submit_bodies(),
            vec![Bytes::from("a"), Bytes::from("b")]
        );
    }

    #[tokio::test]
    async fn jobs_fake_sync_reject_and_vanish() {
        let client = client();
        let sync = JobApi::start(Script {
            sync_answer: true,
            ..Script::default()
        })
        .await;
        let answer = submit(&client, &sync, "").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert_eq!(answer.json(), json!({"sync": true}));

        let reject = JobApi::start(Script {
            reject_submit: Some(422),
            ..Script::default()
        })
        .await;
        let answer = submit(&client, &reject, "").await;
        assert_eq!(answer.status.as_u16(), 422);
        assert_eq!(
            answer.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(answer.json(), json!({"title": "rejected"}));
        assert_eq!(reject.submits(), 1);

        for (dialect, path, gone) in [
            (Dialect::Location303, "/status/job-1", StatusCode::GONE),
            (
                Dialect::OperationLocation,
                "/operations/job-1",
                StatusCode::NOT_FOUND,
            ),
            (
                Dialect::AcceptedWhileRunning,
                "/runtime/instances/job-1",
                StatusCode::NOT_FOUND,
            ),
        ] {
            let api = JobApi::start(Script {
                dialect,
                polls_until_done: 0,
                outcome: Outcome::Vanish,
                ..Script::default()
            })
            .await;
            submit(&client, &api, "").await;
            assert_eq!(poll(&client, &url(&api, path)).await.status, gone);
        }
    }
}

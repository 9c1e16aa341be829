//! The fault matrix: every stage of a job conversation ×
//! every way a backend can fail there × every event around the failure,
//! with the invariants of ARCHITECTURE.md asserted in every cell:
//!
//! 1. **Status line in time**: the client gets a status line, never a bare
//!    close, no later than its deadline + 1 s (on SIGTERM: the end of the
//!    grace period + 1 s); once its head is out, the body may be cut.
//! 2. **Jobs per key**: once the job API accepted the job (faults in the
//!    status, result and cancel stages), at most one job per
//!    `Idempotency-Key`; before that (faults in the submit, where the
//!    record is released and a retry may submit again), every submit
//!    carries the key, so the backend could deduplicate, and there are at
//!    most two.
//! 3. **Real outcome**: a retry with the same key, once the backend is
//!    healed and the job can finish, gets the job's own `200` and result
//!    (a replay of it is fine), never a replayed error.
//!
//! Apart from the invariants, each cell checks what the client should see
//! for its fault ([`expected`]), reported as a separate kind of failure.
//!
//! The cells are generated from three enums ([`Stage`] × [`Fault`] ×
//! [`Event`]); a combination that means nothing is listed with its reason
//! ([`not_meaningful`]) rather than left out. Cells run one after another
//! on a paused clock against `support::faults` (real sockets on
//! 127.0.0.1), so a 5 s hold or a 100 s drip costs no wall time; the
//! Restart cells need Redis and its real clock, and run side by side.
//! Every failing cell is collected, and one panic at the end lists them.

use std::net::SocketAddr;
use std::time::Duration;

use baton::body;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, LOCATION};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::faults::{result_body, Fault, FaultApi, Stage, RUNNING_POLLS, SUBMIT_PATH};
use crate::support::redis::{cluster_table, namespace};
use crate::support::{client, Doomed, TestBaton};

// Timing, on the paused clock. Polls go out at 0.1 s, 0.25 s and 0.475 s
// (backoff without jitter), so three failing polls end a request with a
// 502 at 0.475 s; a poll that hangs from 0.1 s is cut at 3.1 s and the
// next one by the deadline at 5 s (two failures: a 504). A SIGTERM sent
// when the fault strikes ends the grace 1.5 s later, before any poll
// timeout or deadline could answer the request instead.

/// The route's hold: the deadline of every first request.
const HOLD: Duration = Duration::from_secs(5);
/// A retry's hold (`Prefer: wait=30`), long enough for the job to finish.
const RETRY_HOLD: Duration = Duration::from_secs(30);
/// How long after its bound a status line may come (invariant 1).
const SLACK: Duration = Duration::from_secs(1);
/// `shutdown_grace` for the SIGTERM cells.
const GRACE: Duration = Duration::from_millis(1500);
/// How long a request is watched on the paused clock before it counts as
/// unanswered: far past every bound, so a late answer is measured.
const PATIENCE: Duration = Duration::from_secs(180);
/// The same on the real clock (Restart cells): just past a retry's bound.
const REAL_PATIENCE: Duration = Duration::from_secs(35);
/// How long an answer's body is read after its head.
const BODY_PATIENCE: Duration = Duration::from_secs(10);
/// How long a Restart cell waits for the fault to strike (real clock).
const REAL_WAIT: Duration = Duration::from_secs(10);
/// The client's request body (the same on every retry).
const REQUEST_BODY: &str = r#"{"report":"q3"}"#;

/// What happens around the fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// One request under the fault: answered by its deadline (long before,
    /// when the fault answers at once).
    Deadline,
    /// The client hangs up mid-hold, then retries with the same key once
    /// the backend is healed.
    ClientGone,
    /// Shutdown begins while the fault holds a backend call.
    Sigterm,
    /// After the first answer, the backend is healed and the client
    /// retries with the same key.
    RetrySameKey,
    /// The instance (on Redis) dies whole while the fault holds a call; a
    /// second instance on the same Redis gets the retry.
    Restart,
}

impl Event {
    const ALL: [Event; 5] = [
        Event::Deadline,
        Event::ClientGone,
        Event::Sigterm,
        Event::RetrySameKey,
        Event::Restart,
    ];
}

#[derive(Clone, Copy, Debug)]
struct Cell {
    stage: Stage,
    fault: Fault,
    event: Event,
}

impl Cell {
    fn name(&self) -> String {
        format!("{:?} × {:?} × {:?}", self.stage, self.fault, self.event)
    }

    /// The cell's own `Idempotency-Key`.
    fn key(&self) -> String {
        format!("{:?}-{:?}-{:?}", self.stage, self.fault, self.event)
    }

    /// The fault strikes before the job API accepted the job.
    fn before_acceptance(&self) -> bool {
        matches!(
            self.stage,
            Stage::SubmitConnect | Stage::SubmitHead | Stage::SubmitBody
        )
    }
}

fn cells() -> Vec<Cell> {
    let mut cells = Vec::new();
    for stage in Stage::ALL {
        for fault in Fault::ALL {
            for event in Event::ALL {
                cells.push(Cell {
                    stage,
                    fault,
                    event,
                });
            }
        }
    }
    cells
}

/// Why a cell means nothing, if it does not.
fn not_meaningful(cell: Cell) -> Option<&'static str> {
    use Fault::*;
    use Stage::*;
    match (cell.stage, cell.fault) {
        (SubmitConnect, Refuse) => {}
        (SubmitConnect, _) => {
            return Some("a connect carries no answer to break: SubmitHead has this fault")
        }
        (SubmitBody | StatusBody | ResultBody, Refuse) => {
            return Some("a refusal comes before any answer: the head stage's cell")
        }
        (SubmitBody | StatusBody | ResultBody, Status5xx) => {
            return Some("a status code is part of the head: the head stage's cell")
        }
        _ => {}
    }
    // The request is still held while the fault acts: a call hangs or
    // drips, or failing polls are retried on the schedule.
    let holds = matches!(cell.fault, Hang | Drip);
    let retried = cell.stage == StatusHead && matches!(cell.fault, Refuse | Reset | Status5xx);
    match cell.event {
        Event::Deadline | Event::RetrySameKey => None,
        Event::ClientGone if cell.stage == Cancel || holds || retried => None,
        Event::ClientGone => {
            Some("answered at once: no hold for the client to leave (RetrySameKey retries)")
        }
        Event::Sigterm if cell.stage == Cancel => {
            Some("a drained request does not cancel its job: the cancel's fault is never reached")
        }
        Event::Sigterm if holds => None,
        Event::Sigterm => Some("answered before the grace could end: nothing for the drain to cut"),
        Event::Restart if cell.stage == Cancel => {
            Some("the cancel goes out after the client's answer: nothing held to kill")
        }
        Event::Restart if holds || retried => None,
        Event::Restart => Some("answered at once: nothing held when the instance dies"),
    }
}

/// What the client should see for the first request of a cell.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A problem+json answer of this status.
    Problem(u16),
    /// The route's timeout answer: `504`, `job-timeout`.
    Timeout,
    /// The backend's own `503` ("busy"), passed through unchanged.
    Backend503,
    /// Shutdown's `503`, `shutting-down`: with a continuation `Location`
    /// (`Some(true)`), without (`Some(false)`), or either.
    Drained(Option<bool>),
    /// The result's head may be out already: a `200` whose body stalls or
    /// is cut, or a problem of one of these statuses.
    StartedOr(&'static [u16]),
    /// Like `StartedOr`, but a `200` body must not end cleanly: the
    /// backend's body broke.
    CutOr(&'static [u16]),
}

fn expected(cell: Cell) -> Expect {
    use Fault::*;
    use Stage::*;
    if cell.event == Event::Sigterm {
        // Every Sigterm cell holds a call when the grace ends.
        return match cell.stage {
            SubmitConnect | SubmitHead => Expect::Drained(Some(false)),
            // The head with the job's Location arrived; its body did not.
            SubmitBody => Expect::Drained(None),
            ResultBody => Expect::StartedOr(&[502, 503, 504]),
            _ => Expect::Drained(Some(true)),
        };
    }
    match (cell.stage, cell.fault) {
        // The cancel goes out after the answer: it cannot change it.
        (Cancel, _) => Expect::Timeout,
        (ResultBody, Hang | Drip) => Expect::StartedOr(&[502, 504]),
        (ResultBody, _) => Expect::CutOr(&[502]),
        (_, Hang | Drip) => Expect::Timeout,
        (SubmitHead | ResultHead, Status5xx) => Expect::Backend503,
        // Refused, reset or garbled; at the status stage, also three
        // failing polls in a row.
        _ => Expect::Problem(502),
    }
}

// ---------------------------------------------------------------------------
// The run.

#[test]
fn fault_matrix() {
    let mut report = Report::default();
    let mut restarts = Vec::new();
    // One runtime on a paused clock for every cell but the Restart ones.
    let paused = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    for cell in cells() {
        if let Some(reason) = not_meaningful(cell) {
            report.not_meaningful(cell, reason);
        } else if cell.event == Event::Restart {
            restarts.push(cell);
        } else {
            let findings = paused.block_on(isolated(run_paused(cell)));
            report.ran(cell, findings);
        }
    }
    drop(paused);
    // Redis answers in real time, so the Restart cells run on the real
    // clock (and side by side, to keep that short).
    let real = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    real.block_on(async {
        let Some(redis) = crate::support::redis::url().await else {
            println!(
                "\n*** SKIPPED: {} Restart cells: no Redis ***\n",
                restarts.len()
            );
            for cell in restarts {
                report.skipped(cell);
            }
            return;
        };
        let running: Vec<_> = restarts
            .iter()
            .map(|cell| tokio::spawn(isolated(restart(*cell, redis.clone()))))
            .collect();
        for (cell, task) in restarts.iter().zip(running) {
            let findings = task.await.unwrap_or_else(|e| {
                let mut findings = Findings::default();
                findings.fail(Check::Harness, format!("the cell's task failed: {e}"));
                findings
            });
            report.ran(*cell, findings);
        }
    });
    report.finish();
}

async fn run_paused(cell: Cell) -> Findings {
    match cell.event {
        Event::Deadline => deadline(cell).await,
        Event::ClientGone => client_gone(cell).await,
        Event::Sigterm => sigterm(cell).await,
        Event::RetrySameKey => retry_same_key(cell).await,
        Event::Restart => unreachable!("Restart cells run on the real clock"),
    }
}

/// Runs a cell on a task of its own, so a panic in it (the harness
/// unwraps) fails that cell and not the matrix.
async fn isolated(cell: impl std::future::Future<Output = Findings> + Send + 'static) -> Findings {
    match tokio::spawn(cell).await {
        Ok(findings) => findings,
        Err(e) => {
            let message = match e.try_into_panic() {
                Ok(panic) => panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic".to_owned()),
                Err(e) => e.to_string(),
            };
            let mut findings = Findings::default();
            findings.fail(Check::Harness, format!("the cell panicked: {message}"));
            findings
        }
    }
}

// ---------------------------------------------------------------------------
// One function per event.

/// One request under the fault.
async fn deadline(cell: Cell) -> Findings {
    let mut f = Findings::default();
    let (api, baton) = setup(cell).await;
    let first = request(baton.addr, &cell.key(), None, PATIENCE).await;
    first_answer(&mut f, cell, &api, &first).await;
    jobs_per_key(&mut f, cell, &api);
    f
}

/// The first answer, then a retry with the same key after healing.
async fn retry_same_key(cell: Cell) -> Findings {
    let mut f = Findings::default();
    let (api, baton) = setup(cell).await;
    let key = cell.key();
    let first = request(baton.addr, &key, None, PATIENCE).await;
    first_answer(&mut f, cell, &api, &first).await;
    api.heal();
    let retry = request(baton.addr, &key, Some(RETRY_HOLD), PATIENCE).await;
    in_time(&mut f, "the retry", &retry, RETRY_HOLD + SLACK);
    jobs_per_key(&mut f, cell, &api);
    real_outcome(&mut f, &api, &key, &retry);
    f
}

/// The client hangs up mid-hold, then retries after healing.
async fn client_gone(cell: Cell) -> Findings {
    let mut f = Findings::default();
    let (api, baton) = setup(cell).await;
    let key = cell.key();
    let client = raw_request(baton.addr, &key).await;
    // Mid-hold: while the fault holds a call (for the cancel stage, while
    // the job is being followed: the cancel comes when the client leaves).
    let mid_hold = match cell.stage {
        Stage::Cancel => wait(&api, |a| a.polls() >= 1, PATIENCE).await,
        _ => wait(&api, |a| a.faulted() >= 1, PATIENCE).await,
    };
    if !mid_hold {
        f.fail(Check::Harness, "the fault was never reached".to_owned());
        return f;
    }
    drop(client);
    if cell.stage == Stage::Cancel && !wait(&api, |a| a.cancels() >= 1, PATIENCE).await {
        f.fail(
            Check::Expected,
            "the client left (or its deadline passed), but no cancel reached the job API".into(),
        );
    }
    api.heal();
    let retry = request(baton.addr, &key, Some(RETRY_HOLD), PATIENCE).await;
    in_time(&mut f, "the retry", &retry, RETRY_HOLD + SLACK);
    jobs_per_key(&mut f, cell, &api);
    real_outcome(&mut f, &api, &key, &retry);
    f
}

/// Shutdown begins while the fault holds a call. With the memory store a
/// new instance would not know the key, so only invariants 1 and 2 apply.
async fn sigterm(cell: Cell) -> Findings {
    let mut f = Findings::default();
    let (api, mut baton) = setup(cell).await;
    let (addr, key) = (baton.addr, cell.key());
    let sent = Instant::now();
    let held = tokio::spawn(async move { request(addr, &key, None, PATIENCE).await });
    if !wait(&api, |a| a.faulted() >= 1, PATIENCE).await {
        f.fail(Check::Harness, "the fault was never reached".to_owned());
        return f;
    }
    let bound = sent.elapsed() + GRACE + SLACK;
    baton.begin_shutdown();
    let reply = held.await.expect("the client task panicked");
    in_time(&mut f, "the held request", &reply, bound);
    check_expected(&mut f, &reply, expected(cell));
    jobs_per_key(&mut f, cell, &api);
    if tokio::time::timeout(PATIENCE, baton.finished())
        .await
        .is_err()
    {
        f.fail(
            Check::Expected,
            format!("Baton still ran {PATIENCE:?} after the SIGTERM"),
        );
    }
    f
}

/// The instance dies whole while the fault holds a call; a second one on
/// the same Redis gets the retry (real clock).
async fn restart(cell: Cell, redis: String) -> Findings {
    let mut f = Findings::default();
    let cluster = cluster_table(&redis, &namespace(), "1s");
    let api = FaultApi::start(Some((cell.stage, cell.fault)), RUNNING_POLLS).await;
    let toml = config(api.addr, cell, Some(&cluster));
    let mut doomed = Doomed::start(&toml);
    let (addr, key) = (doomed.addr, cell.key());
    let held = tokio::spawn(async move { request(addr, &key, None, REAL_PATIENCE).await });
    if !wait(&api, |a| a.faulted() >= 1, REAL_WAIT).await {
        f.fail(Check::Harness, "the fault was never reached".to_owned());
        return f;
    }
    doomed.crash();
    // Its connection died with the instance: nothing to assert about it.
    held.abort();
    api.heal();
    let survivor = TestBaton::start(&toml).await;
    let key = cell.key();
    let retry = request(survivor.addr, &key, Some(RETRY_HOLD), REAL_PATIENCE).await;
    in_time(
        &mut f,
        "the retry on the second instance",
        &retry,
        RETRY_HOLD + SLACK,
    );
    jobs_per_key(&mut f, cell, &api);
    real_outcome(&mut f, &api, &key, &retry);
    f
}

// ---------------------------------------------------------------------------
// The checks.

/// Which check a failure belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// Invariant 1.
    StatusLine,
    /// Invariant 2.
    JobsPerKey,
    /// Invariant 3.
    RealOutcome,
    /// What the client should see for this fault.
    Expected,
    /// The cell could not do what it meant to (the fault never struck, a
    /// panic): it proves nothing.
    Harness,
}

impl Check {
    fn label(self) -> &'static str {
        match self {
            Check::StatusLine => "invariant 1, status line in time",
            Check::JobsPerKey => "invariant 2, jobs per key",
            Check::RealOutcome => "invariant 3, real outcome",
            Check::Expected => "expected answer",
            Check::Harness => "harness",
        }
    }
}

#[derive(Default)]
struct Findings(Vec<(Check, String)>);

impl Findings {
    fn fail(&mut self, check: Check, message: String) {
        self.0.push((check, message));
    }
}

/// The first request's checks: invariant 1, the expected answer, and
/// that the fault struck at all (a cancel: that one was sent).
async fn first_answer(f: &mut Findings, cell: Cell, api: &FaultApi, first: &Reply) {
    in_time(f, "the first request", first, HOLD + SLACK);
    check_expected(f, first, expected(cell));
    if cell.stage == Stage::Cancel {
        if !wait(api, |a| a.cancels() >= 1, PATIENCE).await {
            f.fail(
                Check::Expected,
                "the deadline passed, but no cancel reached the job API".into(),
            );
        }
    } else if cell.stage != Stage::SubmitConnect && api.faulted() == 0 {
        // (A refused connect never reaches the fake to be counted.)
        f.fail(Check::Harness, "the fault was never reached".into());
    }
}

/// Invariant 1: a status line, by `bound` after the request was sent.
fn in_time(f: &mut Findings, what: &str, reply: &Reply, bound: Duration) {
    let message = match reply {
        Reply::Answered { after, .. } if *after <= bound => return,
        Reply::Answered { after, .. } => format!(
            "{what}: its status line came after {}, past its bound of {}",
            secs(*after),
            secs(bound)
        ),
        Reply::Closed { after, error } => format!(
            "{what}: the connection ended after {} without a status line ({error})",
            secs(*after)
        ),
        Reply::Silent { waited } => {
            format!("{what}: no status line within {}", secs(*waited))
        }
    };
    f.fail(Check::StatusLine, message);
}

/// Invariant 2.
fn jobs_per_key(f: &mut Findings, cell: Cell, api: &FaultApi) {
    let key = cell.key();
    if cell.before_acceptance() {
        let submits = api.submits();
        let keyless = submits
            .iter()
            .filter(|k| k.as_deref() != Some(key.as_str()))
            .count();
        if keyless > 0 {
            f.fail(
                Check::JobsPerKey,
                format!(
                    "{keyless} of {} submits reached the job API without the Idempotency-Key",
                    submits.len()
                ),
            );
        }
        if submits.len() > 2 {
            f.fail(
                Check::JobsPerKey,
                format!("{} submits for one key (at most 2)", submits.len()),
            );
        }
    } else {
        let jobs = api.jobs_for(&key);
        if jobs.len() > 1 {
            f.fail(
                Check::JobsPerKey,
                format!("{} jobs for one key: {jobs:?}", jobs.len()),
            );
        }
    }
}

/// Invariant 3: the retry got the job's own 200 and result.
fn real_outcome(f: &mut Findings, api: &FaultApi, key: &str, retry: &Reply) {
    if let Reply::Answered {
        status,
        body: BodyRead::Whole(bytes),
        ..
    } = retry
    {
        let ours = api
            .jobs_for(key)
            .iter()
            .any(|id| bytes == result_body(id).as_bytes());
        if *status == StatusCode::OK && ours {
            return;
        }
    }
    f.fail(
        Check::RealOutcome,
        format!(
            "the retry after healing got {}, not the job's 200 and result",
            describe(retry)
        ),
    );
}

fn check_expected(f: &mut Findings, reply: &Reply, expect: Expect) {
    // No answer at all is invariant 1's finding.
    let Reply::Answered {
        status,
        headers,
        body,
        ..
    } = reply
    else {
        return;
    };
    let status = status.as_u16();
    let kind = problem_type(headers, body);
    let started = |problems: &[u16]| match kind {
        Some(_) => problems.contains(&status),
        None => status == 200,
    };
    let met = match expect {
        Expect::Problem(code) => status == code && kind.is_some(),
        Expect::Timeout => status == 504 && kind.as_deref() == Some("job-timeout"),
        Expect::Backend503 => {
            status == 503 && kind.is_none() && matches!(body, BodyRead::Whole(b) if b == "busy")
        }
        Expect::Drained(location) => {
            status == 503
                && kind.as_deref() == Some("shutting-down")
                && location.is_none_or(|want| headers.contains_key(LOCATION) == want)
        }
        Expect::StartedOr(problems) => started(problems),
        Expect::CutOr(problems) => {
            started(problems) && !matches!(body, BodyRead::Whole(_) if status == 200)
        }
    };
    if !met {
        f.fail(
            Check::Expected,
            format!(
                "expected {}, got {}",
                describe_expect(expect),
                describe(reply)
            ),
        );
    }
}

/// The problem type's last part (`job-timeout`), for problem+json answers.
fn problem_type(headers: &HeaderMap, body: &BodyRead) -> Option<String> {
    let is_problem = headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !is_problem {
        return None;
    }
    let BodyRead::Whole(bytes) = body else {
        return Some(String::new());
    };
    let json: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let kind = json["type"].as_str().unwrap_or("");
    Some(kind.trim_start_matches("urn:baton:problem:").to_owned())
}

fn describe_expect(expect: Expect) -> String {
    match expect {
        Expect::Problem(code) => format!("a {code} problem"),
        Expect::Timeout => "the timeout answer (504 job-timeout)".into(),
        Expect::Backend503 => "the backend's own 503, passed through".into(),
        Expect::Drained(Some(true)) => "503 shutting-down with a continuation Location".into(),
        Expect::Drained(Some(false)) => "503 shutting-down without a Location".into(),
        Expect::Drained(None) => "503 shutting-down".into(),
        Expect::StartedOr(codes) => {
            format!("200 (its body may stall or be cut) or a {codes:?} problem")
        }
        Expect::CutOr(codes) => format!("a 200 with a visibly cut body, or a {codes:?} problem"),
    }
}

// ---------------------------------------------------------------------------
// Clients.

/// What one client request came to.
enum Reply {
    /// A status line arrived `after` the request was sent.
    Answered {
        after: Duration,
        status: StatusCode,
        headers: HeaderMap,
        body: BodyRead,
    },
    /// The connection ended without a status line.
    Closed { after: Duration, error: String },
    /// Nothing within the patience given.
    Silent { waited: Duration },
}

enum BodyRead {
    Whole(Bytes),
    Broken(String),
    /// Still open after [`BODY_PATIENCE`].
    Open,
}

fn describe(reply: &Reply) -> String {
    match reply {
        Reply::Answered {
            after,
            status,
            headers,
            body,
        } => {
            let mut out = format!("{} after {}", status.as_u16(), secs(*after));
            if let Some(kind) = problem_type(headers, body) {
                out.push_str(&format!(" ({kind})"));
            }
            if headers.contains_key("idempotent-replayed") {
                out.push_str(" replayed");
            }
            match body {
                BodyRead::Whole(bytes) => {
                    let text = String::from_utf8_lossy(bytes);
                    let text = text.trim_end_matches(['.', ' ']);
                    let cut: String = text.chars().take(60).collect();
                    out.push_str(&format!(", body {cut:?}"));
                }
                BodyRead::Broken(e) => out.push_str(&format!(", body broke ({e})")),
                BodyRead::Open => out.push_str(", body still open"),
            }
            out
        }
        Reply::Closed { after, error } => {
            format!(
                "a close without a status line after {} ({error})",
                secs(*after)
            )
        }
        Reply::Silent { waited } => format!("no answer within {}", secs(*waited)),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// POSTs the client's request with `key` (and `Prefer: wait=` when `hold`
/// is given) and reads its answer.
async fn request(addr: SocketAddr, key: &str, hold: Option<Duration>, patience: Duration) -> Reply {
    let mut request = Request::post(format!("http://{addr}{SUBMIT_PATH}"))
        .header("content-type", "application/json")
        .header("idempotency-key", key);
    if let Some(hold) = hold {
        request = request.header("prefer", format!("wait={}", hold.as_secs()));
    }
    let request = request.body(body::full(REQUEST_BODY)).unwrap();
    let sent = Instant::now();
    let response = match tokio::time::timeout(patience, client().request(request)).await {
        Err(_) => return Reply::Silent { waited: patience },
        Ok(Err(e)) => {
            return Reply::Closed {
                after: sent.elapsed(),
                error: format!("{e:?}"),
            }
        }
        Ok(Ok(response)) => response,
    };
    let after = sent.elapsed();
    let (parts, incoming) = response.into_parts();
    let body = match tokio::time::timeout(BODY_PATIENCE, incoming.collect()).await {
        Err(_) => BodyRead::Open,
        Ok(Err(e)) => BodyRead::Broken(e.to_string()),
        Ok(Ok(collected)) => BodyRead::Whole(collected.to_bytes()),
    };
    Reply::Answered {
        after,
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// The same request on a raw connection, which the caller drops to hang up.
async fn raw_request(addr: SocketAddr, key: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {SUBMIT_PATH} HTTP/1.1\r\nhost: baton\r\ncontent-type: application/json\r\nidempotency-key: {key}\r\ncontent-length: {}\r\n\r\n{REQUEST_BODY}",
        REQUEST_BODY.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// Waits (at most `within`) until `done` holds; false if it never did.
async fn wait(api: &FaultApi, done: impl Fn(&FaultApi) -> bool, within: Duration) -> bool {
    tokio::time::timeout(within, api.wait_until(done))
        .await
        .is_ok()
}

// ---------------------------------------------------------------------------
// Configuration.

/// The fake with the cell's fault, and a Baton in front of it.
async fn setup(cell: Cell) -> (FaultApi, TestBaton) {
    // The cancel stage needs a job that outlives the hold.
    let polls = match cell.stage {
        Stage::Cancel => u32::MAX,
        _ => RUNNING_POLLS,
    };
    let api = FaultApi::start(Some((cell.stage, cell.fault)), polls).await;
    let baton = TestBaton::start(&config(api.addr, cell, None)).await;
    (api, baton)
}

/// An async route for the fake: a 5 s hold, polls cut at 3 s, three
/// failures in a row allowed, and backend calls that only the request's
/// deadline can end (`response_timeout` is far past the hold).
fn config(api: SocketAddr, cell: Cell, cluster: Option<&str>) -> String {
    // On SIGTERM a held request is told where to pick its job up again.
    let on_timeout = match cell.event {
        Event::Sigterm => "accepted",
        _ => "504",
    };
    let cancel = match cell.stage {
        Stage::Cancel => "cancel = { on_timeout = true, on_disconnect = true }",
        _ => "",
    };
    format!(
        r#"
{cluster}
[server]
listen = "127.0.0.1:0"
shutdown_grace = "{grace}ms"

[backends.jobs]
url = "http://{api}"
response_timeout = "60s"

[[routes]]
name = "facade"
match = {{ methods = ["POST"], path = "{SUBMIT_PATH}" }}
backend = "jobs"

[routes.async]
preset = "location-303"
wait = "{hold}s"
max_wait = "60s"
on_timeout = "{on_timeout}"
poll = {{ initial = "100ms", factor = 1.5, jitter = 0.0, min_interval = "50ms", max_interval = "1s", timeout = "3s", max_failures = 3, adaptive = false }}
{cancel}
"#,
        cluster = cluster.unwrap_or(""),
        grace = GRACE.as_millis(),
        hold = HOLD.as_secs(),
    )
}

// ---------------------------------------------------------------------------
// The report.

#[derive(Default)]
struct Report {
    /// Every cell with its outcome, in table order.
    outcomes: Vec<(Cell, Outcome)>,
}

enum Outcome {
    Passed,
    Failed(Findings),
    NotMeaningful(&'static str),
    Skipped,
}

impl Report {
    fn ran(&mut self, cell: Cell, findings: Findings) {
        let outcome = if findings.0.is_empty() {
            Outcome::Passed
        } else {
            Outcome::Failed(findings)
        };
        self.outcomes.push((cell, outcome));
    }

    fn not_meaningful(&mut self, cell: Cell, reason: &'static str) {
        self.outcomes.push((cell, Outcome::NotMeaningful(reason)));
    }

    fn skipped(&mut self, cell: Cell) {
        self.outcomes.push((cell, Outcome::Skipped));
    }

    /// Prints the grid and the counts; panics once, listing every failing
    /// cell, if any failed.
    fn finish(mut self) {
        self.outcomes
            .sort_by_key(|(c, _)| (c.stage, c.fault, c.event));
        // Each reason a cell means nothing gets a letter for the grid.
        let mut reasons: Vec<(&str, usize)> = Vec::new();
        for (_, outcome) in &self.outcomes {
            if let Outcome::NotMeaningful(reason) = outcome {
                match reasons.iter_mut().find(|(r, _)| r == reason) {
                    Some((_, n)) => *n += 1,
                    None => reasons.push((reason, 1)),
                }
            }
        }
        let letter = |reason: &str| {
            let i = reasons.iter().position(|(r, _)| *r == reason).unwrap_or(0);
            char::from(b'a' + i as u8)
        };
        println!("\nfault matrix (ok: passed, FAIL: failed, -x: not meaningful for reason x, skip: no Redis)\n");
        let mut line = format!("{:<26}", "stage × fault");
        for event in Event::ALL {
            line.push_str(&format!("{:<14}", format!("{event:?}")));
        }
        println!("{line}");
        for row in self.outcomes.chunks(Event::ALL.len()) {
            let (cell, _) = &row[0];
            let mut line = format!("{:<26}", format!("{:?} × {:?}", cell.stage, cell.fault));
            for (_, outcome) in row {
                let mark = match outcome {
                    Outcome::Passed => "ok".to_owned(),
                    Outcome::Failed(_) => "FAIL".to_owned(),
                    Outcome::NotMeaningful(reason) => format!("-{}", letter(reason)),
                    Outcome::Skipped => "skip".to_owned(),
                };
                line.push_str(&format!("{mark:<14}"));
            }
            println!("{line}");
        }
        println!("\nnot meaningful:");
        for (reason, n) in &reasons {
            println!("  -{} {reason} ({n} cells)", letter(reason));
        }

        let mut failures = String::new();
        for (cell, outcome) in &self.outcomes {
            if let Outcome::Failed(findings) = outcome {
                for (check, message) in &findings.0 {
                    failures.push_str(&format!(
                        "  {}: [{}] {message}\n",
                        cell.name(),
                        check.label()
                    ));
                }
            }
        }
        let count =
            |want: fn(&Outcome) -> bool| self.outcomes.iter().filter(|(_, o)| want(o)).count();
        let passed = count(|o| matches!(o, Outcome::Passed));
        let failed = count(|o| matches!(o, Outcome::Failed(_)));
        let not_meaningful = count(|o| matches!(o, Outcome::NotMeaningful(_)));
        let skipped = count(|o| matches!(o, Outcome::Skipped));
        let summary = format!(
            "fault matrix: {} cells ({} stages × {} faults × {} events): {} run, {passed} passed, {failed} failed, {not_meaningful} not meaningful, {skipped} skipped",
            self.outcomes.len(),
            Stage::ALL.len(),
            Fault::ALL.len(),
            Event::ALL.len(),
            passed + failed,
        );
        if failed > 0 {
            println!("\nfailing cells:\n{failures}");
        }
        println!("{summary}\n");
        if failed > 0 {
            panic!("{failed} cells failed:\n{failures}{summary}");
        }
    }
}

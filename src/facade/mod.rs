//! The sync facade: one blocking client request becomes the whole job
//! conversation, in the order of DESIGN.md's flow:
//!
//! 1. submit — the client's request goes to the job API as a pass-through
//!    would send it, plus the route's submit headers ([`handle`]);
//! 2. accept — [`submit`] decides whether the answer is a job and finds
//!    its monitor;
//! 3. follow — [`follow`] polls on the [`schedule`] until [`dialect`] reads
//!    a final state or the deadline comes;
//! 4. fetch — [`fetch`] gets the result, from the status or by GET;
//! 5. answer — the result, or an [`Error`] the service turns into
//!    problem+json.
//!
//! [`call`] holds what every call after the submit shares: origin policy,
//! credentials, correlation. [`bound`] holds the request's one deadline
//! and the drain, which every backend call runs within.

pub mod adaptive;
pub mod bound;
pub mod call;
pub mod callback;
pub mod continuation;
pub mod fetch;
pub mod follow;
pub mod idempotency;
pub mod job_state;
pub mod prefer;
pub mod schedule;
pub mod submit;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use tokio::time::Instant;

use crate::body::{self, Body};
use crate::config::{AsyncRoute, Callback, CallbackCarrier, HandleSource, OnTimeout};
use crate::error::{ClientError, Error, JobError, JobRef};
use crate::proxy::upstream::Upstream;
use crate::proxy::{self, Forward};
use crate::store::Store;
use crate::telemetry::metrics::{Metrics, RouteLabel};
use adaptive::Timing;
use bound::{Bound, Cut};
use call::JobCalls;
use callback::{Callbacks, Delivery, Registration};
use continuation::{Continuation, Ticket};
use follow::{FirstPoll, Followed, Pace};
use futures_util::future::Either;
use prefer::{Prefer, PREFERENCE_APPLIED};
use std::sync::Arc;
use submit::{Job, Submitted};
use tokio::sync::watch;
use url::Url;

/// What a facade request needs beyond its route.
pub struct JobEnv<'a> {
    pub continuation: &'a Continuation,
    /// What the route's recent jobs took (adaptive polling).
    pub timing: Option<&'a Timing>,
    pub callbacks: &'a Arc<Callbacks>,
    /// The base of callback URLs (`[server] callback_url`).
    pub callback_base: Option<&'a str>,
    /// How long a job's callback is kept for a later request after the
    /// first stopped waiting (`[server] continuation_ttl`, or the route's
    /// idempotency TTL when longer).
    pub callback_keep: Duration,
    pub metrics: &'a Metrics,
    /// The idempotency record to tell the moment the job is accepted, so
    /// a retry on any instance finds the job even if this one dies.
    pub record: Option<(&'a dyn Store, &'a str)>,
    /// Turns true when held requests must answer now (shutdown).
    pub drain: watch::Receiver<bool>,
}

/// How far a facade request got, for the idempotency layer: whether a
/// job exists, and whether the answer leaves it running.
#[derive(Debug, Default)]
pub struct Progress {
    pub submit: Submission,
    /// This request followed a job submitted earlier.
    pub resumed: bool,
    /// The job reported success (a final status or its callback).
    pub succeeded: bool,
    pub polls: u32,
    /// Baton stopped following the job before it ended (deadline,
    /// shutdown): the job goes on.
    pub job_goes_on: bool,
    /// The answer is the job's own outcome (its result, its failure, its
    /// cancellation or disappearance as the backend reports them), worth
    /// replaying to a retry. Anything else leaves the job resumable.
    pub settled: bool,
}

impl Progress {
    /// The URI the client called, once the job is accepted.
    fn original(&self) -> &str {
        match &self.submit {
            Submission::Accepted(ticket) => &ticket.original,
            _ => "",
        }
    }
}

#[derive(Debug, Default)]
pub enum Submission {
    #[default]
    NotSent,
    /// Sent, and whether the job API took it is unknown.
    Sent,
    /// Boxed: every request's future has room for its progress, and most
    /// requests are not facade requests with a job.
    Accepted(Box<Ticket>),
}

/// The shortest hold a client may ask for with `Prefer: wait`.
const MIN_HOLD: Duration = Duration::from_secs(1);

/// The client's hold: how long, and what to tell it.
pub fn hold(facade: &AsyncRoute, headers: &HeaderMap, extra: &mut HeaderMap) -> (Prefer, Duration) {
    let prefer = Prefer::parse(headers);
    let hold = match prefer.wait {
        Some(asked) => {
            // Every backend call runs within the hold, so a hold of nothing
            // could not even submit: a client asking for less gets a second
            // (or the route's whole `max_wait`, if that is shorter).
            let applied = asked.max(MIN_HOLD).min(facade.max_wait);
            if let Ok(value) = HeaderValue::try_from(format!("wait={}", applied.as_secs())) {
                extra.insert(PREFERENCE_APPLIED, value);
            }
            applied
        }
        None => facade.wait,
    };
    (prefer, hold)
}

/// Runs an async route: submit the client's request and follow the job.
/// `extra` collects headers for the client's answer whichever way it ends
/// (`Preference-Applied` belongs on a 504 too).
///
/// An `async move` block rather than an `async fn`, so its arguments are
/// kept once, not twice, for as long as the request is held.
#[allow(clippy::manual_async_fn)] // deliberate: see the doc comment
pub fn handle<'a>(
    cx: Forward<'a>,
    facade: &'a AsyncRoute,
    request: Box<Request<Body>>,
    started: Instant,
    env: JobEnv<'a>,
    extra: &'a mut HeaderMap,
    progress: &'a mut Progress,
) -> impl Future<Output = Result<Response<Body>, Error>> + 'a {
    async move {
        let (prefer, hold) = hold(facade, request.headers(), extra);
        let mut bound = Bound::new(started + hold, env.drain.clone());
        let mut calls = JobCalls::new(cx.route, facade, cx.upstream, request.headers());
        // The submit runs in a box of its own that is gone once the job is
        // accepted: a held request keeps only what following the job needs.
        let submitted = bound
            .within(Box::pin(submit_job(
                &cx, &mut calls, request, &env, prefer, extra, progress,
            )))
            .await;
        let target = match submitted {
            Ok(accepted) => match accepted? {
                Accepted::Answer(answer) => return Ok(answer),
                Accepted::Job(target) => target,
            },
            Err(cut) => return stopped(&calls, env.continuation, hold, cut, progress),
        };
        Box::pin(follow_and_answer(
            &calls, target, hold, bound, env, progress,
        ))
        .await
    }
}

/// What the submit led to.
enum Accepted {
    /// The answer for the client already: not a job, or `respond-async`.
    Answer(Response<Body>),
    /// A job to follow (boxed: it outlives the submit that found it).
    Job(Box<Target>),
}

/// Sends the submit (with the callback URL, where the route takes one)
/// and learns the job from its answer.
async fn submit_job(
    cx: &Forward<'_>,
    calls: &mut JobCalls<'_>,
    request: Box<Request<Body>>,
    env: &JobEnv<'_>,
    prefer: Prefer,
    extra: &mut HeaderMap,
    progress: &mut Progress,
) -> Result<Accepted, Error> {
    let facade = calls.facade;
    let (registration, request) = match &facade.callback {
        Some(callback) => {
            let keep = (facade.max_wait + CALLBACK_SLACK).max(env.callback_keep);
            let registration = env
                .callbacks
                .register(&cx.route.name, keep)
                .await
                .map_err(Error::Unavailable)?;
            let url = format!(
                "{}{}{}",
                env.callback_base.unwrap_or_default(),
                callback::PATH,
                registration.token
            );
            let request = carry(callback, *request, &url, cx.max_request_body()).await?;
            (Some(registration), request)
        }
        None => (None, *request),
    };
    let mut submit = proxy::prepare(cx, request)?;
    for name in facade.submit_headers.keys() {
        submit.headers_mut().remove(name);
    }
    for (name, value) in &facade.submit_headers {
        submit.headers_mut().append(name, value.clone());
    }
    // Also the original URI, for results fetched by re-GETting it.
    let submit_url = call::url_of(submit.uri())?;
    progress.submit = Submission::Sent;
    let submitted = Instant::now();
    let response = cx.upstream.send(submit).await?;
    let token = registration.as_ref().map(|r| r.token.as_str());
    let job = match submit::accept(calls, response, &submit_url, token).await? {
        Submitted::Answer(answer) => return Ok(Accepted::Answer(answer)),
        Submitted::Job(job) => job,
    };
    // The progress keeps the job's one ticket, from the moment it exists:
    // the idempotency layer and the log read it there, and a continuation
    // monitor is made from it.
    progress.submit = Submission::Accepted(Box::new(Ticket {
        route: cx.route.name.to_string(),
        status_url: job.status_url.to_string(),
        job_id: job.id.clone(),
        original: submit_url.to_string(),
        callback: registration.as_ref().map(|r| r.token.clone()),
    }));
    tracing::Span::current().record("job_id", job.id.as_str());
    if let (Some((store, key)), Submission::Accepted(ticket)) = (env.record, &progress.submit) {
        if let Err(e) = store.submitted(key, Ticket::clone(ticket)).await {
            tracing::warn!(error = %e, "could not record the accepted job for retries");
        }
    }
    calls.job = JobRef {
        id: Some(job.id.clone()),
        status_url: Some(calls.public_url(&job.status_url)),
    };
    tracing::debug!(job = %job.id, status_url = %job.status_url, "job accepted");
    if prefer.respond_async {
        extra.insert(
            PREFERENCE_APPLIED,
            HeaderValue::from_static("respond-async"),
        );
        return Ok(Accepted::Answer(respond_async(calls, job)));
    }
    Ok(Accepted::Job(Box::new(Target {
        status_url: job.status_url,
        first_poll: FirstPoll::After(job.retry_after),
        submitted: Some(submitted),
        callback: registration,
    })))
}

/// Follows a job that was submitted earlier (a continuation monitor, or an
/// idempotent retry after its first attempt let go).
///
/// What it needs of the client's `headers` is taken (copied) before the
/// future exists, which borrows neither them nor `extra`: the caller drops
/// the request head before it waits, so a held request does not keep it.
#[allow(clippy::too_many_arguments)]
pub fn resume<'a>(
    cx: Forward<'a>,
    facade: &'a AsyncRoute,
    ticket: Ticket,
    headers: &HeaderMap,
    started: Instant,
    env: JobEnv<'a>,
    extra: &mut HeaderMap,
    progress: &'a mut Progress,
) -> impl Future<Output = Result<Response<Body>, Error>> + 'a {
    let (_, hold) = hold(facade, headers, extra);
    let calls = JobCalls::new(cx.route, facade, cx.upstream, headers);
    async move {
        let mut calls = calls;
        let unreadable =
            |what: &str| Error::Internal(format!("a job ticket with an unreadable {what}").into());
        let status_url = Url::parse(&ticket.status_url).map_err(|_| unreadable("status URL"))?;
        // Checked now, though used only if the result is the original URI
        // again: a bad ticket fails before any call.
        Url::parse(&ticket.original).map_err(|_| unreadable("original URI"))?;
        // The ticket was signed by Baton, but the origin policy may have
        // changed since: check again.
        calls.resolve(&status_url, status_url.as_str())?;
        calls.job = JobRef {
            id: Some(ticket.job_id.clone()),
            status_url: Some(calls.public_url(&status_url)),
        };
        tracing::Span::current().record("job_id", ticket.job_id.as_str());
        // A callback that came after the last request stopped waiting is
        // kept under the job's token: wait on it again.
        let callback = match &ticket.callback {
            Some(token) => env.callbacks.attach(token, &cx.route.name).await,
            None => None,
        };
        progress.submit = Submission::Accepted(Box::new(ticket));
        progress.resumed = true;
        let target = Box::new(Target {
            status_url,
            first_poll: FirstPoll::Now,
            submitted: None,
            callback,
        });
        let bound = Bound::new(started + hold, env.drain.clone());
        Box::pin(follow_and_answer(
            &calls, target, hold, bound, env, progress,
        ))
        .await
    }
}

/// A job to follow. Its original URI is kept once, in the ticket.
struct Target {
    status_url: Url,
    first_poll: FirstPoll,
    /// When the submit went out; unknown for a resumed job.
    submitted: Option<Instant>,
    /// The callback this job will make, when the route uses callbacks.
    callback: Option<Registration>,
}

/// How long a callback token outlives the longest hold: a job that calls
/// back a little late still finds it.
const CALLBACK_SLACK: Duration = Duration::from_secs(60);

/// What ended the wait for a job.
enum Ended {
    Followed(Followed),
    CalledBack(Arc<Delivery>),
}

/// Like [`handle`], an `async move` block so it keeps its arguments once:
/// this is the future a held request sleeps in.
#[allow(clippy::manual_async_fn)] // deliberate: see the doc comment
fn follow_and_answer<'a>(
    calls: &'a JobCalls<'a>,
    mut target: Box<Target>,
    hold: Duration,
    mut bound: Bound,
    env: JobEnv<'a>,
    progress: &'a mut Progress,
) -> impl Future<Output = Result<Response<Body>, Error>> + 'a {
    async move {
        let facade = calls.facade;
        let cancel = CancelGuard::new(calls, &target)?;
        let callback = facade.callback.as_ref();
        // Polling runs unless the job answers by callback alone; then only the
        // deadline and shutdown end the wait. Either future, not an async
        // block choosing one: a held request sleeps in this, and a block
        // would keep a reference to each of its inputs on top.
        let polling = match callback {
            Some(c) if !c.poll_too => Either::Left(wait_out(&mut bound)),
            _ => Either::Right(follow::follow(
                calls,
                &target.status_url,
                &mut bound,
                Pace {
                    first: target.first_poll,
                    floor: callback.map(|c| c.poll_interval),
                    learn: env.timing.zip(target.submitted),
                },
                env.metrics,
                &mut progress.polls,
            )),
        };
        let followed = match target.callback.as_mut() {
            // Boxed, so routes without callbacks do not carry room for both.
            Some(registration) => {
                let ended = Box::pin(async {
                    tokio::select! {
                        delivery = registration.arrived() => Ended::CalledBack(delivery),
                        followed = polling => Ended::Followed(followed),
                    }
                })
                .await;
                match ended {
                    Ended::Followed(followed) => followed,
                    Ended::CalledBack(delivery) => {
                        cancel.disarm();
                        progress.succeeded = true;
                        progress.settled = true;
                        return called_back(calls, callback, &delivery);
                    }
                }
            }
            None => polling.await,
        };
        match followed {
            Followed::Done(completed) => {
                let (last, done) = *completed;
                // The job is over: nothing to cancel, whatever the fetch meets.
                cancel.disarm();
                progress.succeeded = true;
                let done_at = Instant::now();
                let fetched = bound
                    .within(Box::pin(fetch::result(
                        calls,
                        &target.status_url,
                        last,
                        done,
                        progress.original(),
                    )))
                    .await;
                env.metrics
                    .completion_delay
                    .get_or_create(&RouteLabel {
                        route: calls.route.name.to_string(),
                    })
                    .observe(done_at.elapsed().as_secs_f64());
                match fetched {
                    Ok(Ok(answer)) => {
                        // A result that says "not now" is no outcome: a retry
                        // fetches it again.
                        progress.settled = !transient(answer.status());
                        Ok(answer)
                    }
                    Ok(Err(err)) => Err(err),
                    Err(cut) => stopped(calls, env.continuation, hold, cut, progress),
                }
            }
            Followed::Cut(cut) => {
                if cut == Cut::Deadline && facade.cancel.on_timeout {
                    cancel.fire();
                } else {
                    cancel.disarm();
                }
                stopped(calls, env.continuation, hold, cut, progress)
            }
            Followed::Failed(err) => {
                cancel.disarm();
                progress.settled = is_outcome(&err);
                Err(*err)
            }
        }
    }
}

/// The answer of a request that stopped following its job before the job
/// ended: the route's timeout answer at the deadline, a 503 at the end of
/// shutdown's grace; with the continuation monitor where the route has one.
fn stopped(
    calls: &JobCalls<'_>,
    continuation: &Continuation,
    hold: Duration,
    cut: Cut,
    progress: &mut Progress,
) -> Result<Response<Body>, Error> {
    let on_timeout = calls.facade.on_timeout;
    let monitor = match &progress.submit {
        Submission::Accepted(ticket) => {
            progress.job_goes_on = true;
            (on_timeout != OnTimeout::GatewayTimeout).then(|| continuation.monitor(ticket))
        }
        _ => None,
    };
    match (cut, on_timeout, monitor) {
        (Cut::Drained, _, monitor) => Err(calls.fail(JobError::Drained { monitor })),
        (Cut::Deadline, OnTimeout::Accepted, Some(monitor)) => {
            Ok(continue_at(calls, StatusCode::ACCEPTED, &monitor))
        }
        (Cut::Deadline, OnTimeout::Redirect, Some(monitor)) => {
            Ok(continue_at(calls, StatusCode::SEE_OTHER, &monitor))
        }
        (Cut::Deadline, _, _) => Err(calls.fail(JobError::Timeout(hold))),
    }
}

/// Whether a failure is the job's own outcome as the backend reported it,
/// rather than Baton failing to learn it.
fn is_outcome(err: &Error) -> bool {
    matches!(
        err,
        Error::Job {
            kind: JobError::Failed { .. } | JobError::Canceled | JobError::Gone(_),
            ..
        }
    )
}

/// Statuses that say "not now" rather than anything final.
pub fn transient(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// Waits out the hold of a job that answers by callback alone.
async fn wait_out(bound: &mut Bound) -> Followed {
    match bound
        .within(std::future::pending::<std::convert::Infallible>())
        .await
    {
        Ok(never) => match never {},
        Err(cut) => Followed::Cut(cut),
    }
}

/// Puts the callback URL where the route says: a submit header, or a field
/// of the submit's JSON body (which then is read, within the body limit).
async fn carry(
    callback: &Callback,
    request: Request<Body>,
    url: &str,
    limit: u64,
) -> Result<Request<Body>, Error> {
    let (mut parts, incoming) = request.into_parts();
    match &callback.carrier {
        CallbackCarrier::Header(name) => {
            let value = HeaderValue::from_str(url).map_err(|e| Error::Internal(e.into()))?;
            parts.headers.insert(name.clone(), value);
            Ok(Request::from_parts(parts, incoming))
        }
        CallbackCarrier::Pointer(pointer) => {
            let bytes = match incoming.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) => return Err(body::failure(e, limit).into()),
            };
            let mut json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
                ClientError::BadRequest(format!("this route needs a JSON body ({e})"))
            })?;
            set_pointer(&mut json, pointer, url.into()).map_err(ClientError::BadRequest)?;
            let bytes = serde_json::to_vec(&json).map_err(|e| Error::Internal(e.into()))?;
            parts.headers.remove(http::header::CONTENT_LENGTH);
            Ok(Request::from_parts(parts, body::full(bytes)))
        }
    }
}

/// Sets `value` at `pointer`, creating the last member of an object.
fn set_pointer(
    json: &mut serde_json::Value,
    pointer: &str,
    value: serde_json::Value,
) -> Result<(), String> {
    let (parent, member) = pointer.rsplit_once('/').ok_or("an empty pointer")?;
    let member = member.replace("~1", "/").replace("~0", "~");
    match json.pointer_mut(parent) {
        Some(serde_json::Value::Object(map)) => {
            map.insert(member, value);
            Ok(())
        }
        _ => Err(format!(
            "the JSON body has no object at {parent:?} to put the callback URL in"
        )),
    }
}

/// The client's answer from a callback: its status, and its body or the
/// configured part of it.
fn called_back(
    calls: &JobCalls<'_>,
    callback: Option<&Callback>,
    delivery: &Delivery,
) -> Result<Response<Body>, Error> {
    let status = StatusCode::from_u16(delivery.status).unwrap_or(StatusCode::OK);
    let pointer = callback.and_then(|c| c.result_pointer.as_deref());
    let (bytes, content_type) = match pointer {
        Some(pointer) => {
            let json: serde_json::Value =
                serde_json::from_slice(&delivery.body()).map_err(|e| {
                    calls.fail(JobError::BadAnswer(format!(
                        "the callback body is not JSON ({e})"
                    )))
                })?;
            let value = json.pointer(pointer).ok_or_else(|| {
                calls.fail(JobError::BadAnswer(format!(
                    "the callback has no result at {pointer}"
                )))
            })?;
            (
                bytes::Bytes::from(value.to_string()),
                Some("application/json".to_owned()),
            )
        }
        None => (delivery.body(), delivery.content_type.clone()),
    };
    let mut response = Response::new(body::full(bytes));
    *response.status_mut() = status;
    if let Some(value) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    Ok(response)
}

/// The answer of a hold that ended before the job: where to find it again.
fn continue_at(calls: &JobCalls<'_>, status: StatusCode, monitor: &str) -> Response<Body> {
    let body = serde_json::json!({
        "job_id": calls.job.id,
        "status": "running",
        "monitor": monitor,
    });
    let mut response = Response::new(body::full(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(monitor) {
        headers.insert(http::header::LOCATION, location);
    }
    headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The job API's accepting answer, for a client that follows the job
/// itself; the monitor header now points through Baton.
fn respond_async(calls: &JobCalls<'_>, job: Job) -> Response<Body> {
    let (mut parts, bytes) = job.accepted;
    if let HandleSource::Headers(names) = &calls.facade.handle.source {
        if let Some(name) = names.iter().find(|n| parts.headers.contains_key(*n)) {
            if let Ok(value) = HeaderValue::try_from(calls.public_url(&job.status_url)) {
                parts.headers.insert(name, value);
            }
        }
    }
    proxy::finish(Response::from_parts(parts, body::full(bytes)))
}

/// Reads a whole body of at most `limit` bytes; the error says which.
pub async fn read_limited(
    body: hyper::body::Incoming,
    limit: usize,
    what: &'static str,
) -> Result<Bytes, JobError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(JobError::BodyTooLarge {
            what,
            limit: limit as u64,
        }),
        Err(e) => {
            // The library's words stay in the log; the client reads the class.
            tracing::debug!(error = %e, "reading the {what} failed");
            Err(JobError::BadAnswer(format!("the {what} broke off")))
        }
    }
}

/// Cancels the job if the request ends without disarming it: when the
/// client hangs up, hyper drops the request's future, and with it this
/// guard, whose drop sends the cancel on a task of its own.
struct CancelGuard {
    armed: bool,
    /// Boxed: most routes never cancel, and a held request should not
    /// carry room for a request it will not send.
    cancel: Option<Box<Cancel>>,
}

/// The cancel call, ready to go.
struct Cancel {
    upstream: Upstream,
    request: Request<Body>,
    timeout: Duration,
    /// The request's span (request id, route, job id), for the cancel's
    /// log line: it runs after the request is gone.
    span: tracing::Span,
}

impl CancelGuard {
    fn new(calls: &JobCalls<'_>, job: &Target) -> Result<Self, Error> {
        let cancel = &calls.facade.cancel;
        let cancel_call = if cancel.on_disconnect || cancel.on_timeout {
            let vars = crate::config::template::Vars {
                status_url: Some(job.status_url.as_str()),
                job_id: calls.job.id.as_deref(),
            };
            let target = cancel
                .url
                .render(None, vars)
                .map_err(|e| calls.fail(JobError::BadAnswer(format!("the cancel URL: {e}"))))?;
            let url = calls.resolve(&job.status_url, &target)?;
            Some(Box::new(Cancel {
                upstream: calls.upstream.clone(),
                request: calls.request(cancel.method.clone(), &url)?,
                timeout: calls.facade.poll.timeout,
                span: tracing::Span::current(),
            }))
        } else {
            None
        };
        Ok(CancelGuard {
            armed: cancel.on_disconnect,
            cancel: cancel_call,
        })
    }

    fn disarm(mut self) {
        self.armed = false;
    }

    fn fire(mut self) {
        self.armed = true;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Some(cancel) = self.cancel.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Cancel {
            upstream,
            request,
            timeout,
            span,
        } = *cancel;
        let target = request.uri().clone();
        let method: Method = request.method().clone();
        let cancel = async move {
            match upstream.send_within(request, timeout).await {
                Ok(response) => {
                    tracing::info!(%method, %target, status = response.status().as_u16(), "job canceled")
                }
                Err(e) => {
                    tracing::warn!(%method, %target, error = %crate::error::chain(&e), "cancel failed")
                }
            }
        };
        runtime.spawn(tracing::Instrument::instrument(cancel, span));
    }
}

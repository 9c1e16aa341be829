//! The sync facade: one blocking client request becomes the whole job
//! conversation, in the order of the flow in ARCHITECTURE.md:
//!
//! 1. submit — the client's request goes to the job API as a pass-through
//!    would send it, plus the route's submit headers ([`handle`]; the
//!    submit itself is in `send.rs`);
//! 2. accept — [`submit`] decides whether the answer is a job and finds
//!    its monitor;
//! 3. follow — [`follow`] polls on the [`schedule`] until [`job_state`]
//!    reads a final state or the deadline comes;
//! 4. fetch — [`fetch`] gets the result, from the status or by GET;
//! 5. answer — the result, or an [`Error`] the pipeline turns into
//!    problem+json; `answer.rs` builds the answers that are not the job's
//!    result (a hold that ended first, a callback, `respond-async`).
//!
//! [`call`] holds what every call after the submit shares: origin policy,
//! credentials, correlation. [`bound`] holds the request's one deadline
//! and the drain, which every backend call runs within. `cancel.rs`
//! cancels a job the request stops following, where the route says so.
//! [`idempotency`] is the latch around all of it when the request carries
//! an `Idempotency-Key`.

pub(crate) mod adaptive;
mod answer;
pub(crate) mod bound;
pub(crate) mod call;
pub mod callback;
mod cancel;
pub mod continuation;
pub(crate) mod fetch;
pub(crate) mod follow;
pub(crate) mod idempotency;
pub mod job_state;
pub mod prefer;
pub mod schedule;
mod send;
pub(crate) mod submit;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::Either;
use http::header::{HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use tokio::sync::watch;
use tokio::time::Instant;
use url::Url;

use crate::body::Body;
use crate::config::AsyncRoute;
use crate::error::{Error, JobError, JobRef};
use crate::proxy::Forward;
use crate::store::Store;
use crate::telemetry::metrics::{Metrics, RouteLabel};
use adaptive::Timing;
use answer::{called_back, is_outcome, stopped};
use bound::{Bound, Cut};
use call::JobCalls;
use callback::{Callbacks, Delivery, Registration};
use cancel::CancelGuard;
use continuation::{Continuation, Ticket};
use follow::{FirstPoll, Followed, Pace};
use prefer::{Prefer, PREFERENCE_APPLIED};
use send::{submit_job, Accepted};

/// What a facade request needs beyond its route.
pub(crate) struct JobEnv<'a> {
    pub(crate) continuation: &'a Continuation,
    /// What the route's recent jobs took (adaptive polling).
    pub(crate) timing: Option<&'a Timing>,
    pub(crate) callbacks: &'a Arc<Callbacks>,
    /// The base of callback URLs (`[server] callback_url`).
    pub(crate) callback_base: Option<&'a str>,
    /// How long a job's callback is kept for a later request after the
    /// first stopped waiting (`[server] continuation_ttl`, or the route's
    /// idempotency TTL when longer).
    pub(crate) callback_keep: Duration,
    pub(crate) metrics: &'a Metrics,
    /// The idempotency record to tell the moment the job is accepted, so
    /// a retry on any instance finds the job even if this one dies.
    pub(crate) record: Option<(&'a dyn Store, &'a str)>,
    /// Turns true when held requests must answer now (shutdown).
    pub(crate) drain: watch::Receiver<bool>,
}

/// How far a facade request got, for the idempotency layer: whether a
/// job exists, and whether the answer leaves it running.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub(crate) submit: Submission,
    /// This request followed a job submitted earlier.
    pub(crate) resumed: bool,
    /// The job reported success (a final status or its callback).
    pub(crate) succeeded: bool,
    pub(crate) polls: u32,
    /// Baton stopped following the job before it ended (deadline,
    /// shutdown): the job goes on.
    pub(crate) job_goes_on: bool,
    /// The answer is the job's own outcome (its result, its failure, its
    /// cancellation or disappearance as the backend reports them), worth
    /// replaying to a retry. Anything else leaves the job resumable.
    pub(crate) settled: bool,
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
pub(crate) enum Submission {
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
pub(crate) fn hold(
    facade: &AsyncRoute,
    headers: &HeaderMap,
    extra: &mut HeaderMap,
) -> (Prefer, Duration) {
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
pub(crate) fn handle<'a>(
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

/// Follows a job that was submitted earlier (a continuation monitor, or an
/// idempotent retry after its first attempt let go).
///
/// What it needs of the client's `headers` is taken (copied) before the
/// future exists, which borrows neither them nor `extra`: the caller drops
/// the request head before it waits, so a held request does not keep it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn resume<'a>(
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
        let cancel = CancelGuard::new(calls, &target)?;
        let callback = calls.facade.callback.as_ref();
        let polling = polling(
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
        );
        let followed = match target.callback.as_mut() {
            // Boxed, so routes without callbacks do not carry room for both.
            Some(registration) => match Box::pin(first_to_end(registration, polling)).await {
                Ended::Followed(followed) => followed,
                Ended::CalledBack(delivery) => {
                    cancel.disarm();
                    progress.succeeded = true;
                    progress.settled = true;
                    return called_back(calls, callback, &delivery);
                }
            },
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
                observe_completion(env.metrics, calls, done_at);
                fetched_answer(calls, fetched, env.continuation, hold, progress)
            }
            Followed::Cut(cut) => {
                if cut == Cut::Deadline && calls.facade.cancel.on_timeout {
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

/// The wait short of a callback: polling, unless the job answers by
/// callback alone; then only the deadline and shutdown end the wait.
/// Either future, not an async block choosing one: a held request sleeps
/// in this, and a block would keep a reference to each of its inputs on
/// top. A plain function, so choosing adds nothing to the future.
fn polling<'b>(
    calls: &'b JobCalls<'b>,
    status_url: &'b Url,
    bound: &'b mut Bound,
    pace: Pace<'b>,
    metrics: &'b Metrics,
    polls: &'b mut u32,
) -> Either<impl Future<Output = Followed> + 'b, impl Future<Output = Followed> + 'b> {
    match calls.facade.callback.as_ref() {
        Some(c) if !c.poll_too => Either::Left(wait_out(bound)),
        _ => Either::Right(follow::follow(
            calls, status_url, bound, pace, metrics, polls,
        )),
    }
}

/// Whichever ends the wait first: the job's callback, or `polling`. An
/// `async move` block, so it keeps its two inputs once; the caller boxes
/// it.
#[allow(clippy::manual_async_fn)] // deliberate: see the doc comment
fn first_to_end<'r>(
    registration: &'r mut Registration,
    polling: impl Future<Output = Followed> + 'r,
) -> impl Future<Output = Ended> + 'r {
    async move {
        tokio::select! {
            delivery = registration.arrived() => Ended::CalledBack(delivery),
            followed = polling => Ended::Followed(followed),
        }
    }
}

/// How long the result took to fetch once the job was done, per route.
fn observe_completion(metrics: &Metrics, calls: &JobCalls<'_>, done_at: Instant) {
    metrics
        .completion_delay
        .get_or_create(&RouteLabel {
            route: calls.route.name.to_string(),
        })
        .observe(done_at.elapsed().as_secs_f64());
}

/// The client's answer from the fetched result; a fetch cut short by the
/// deadline or shutdown stops like a wait would.
fn fetched_answer(
    calls: &JobCalls<'_>,
    fetched: Result<Result<Response<Body>, Error>, Cut>,
    continuation: &Continuation,
    hold: Duration,
    progress: &mut Progress,
) -> Result<Response<Body>, Error> {
    match fetched {
        Ok(Ok(answer)) => {
            // A result that says "not now" is no outcome: a retry
            // fetches it again.
            progress.settled = !transient(answer.status());
            Ok(answer)
        }
        Ok(Err(err)) => Err(err),
        Err(cut) => stopped(calls, continuation, hold, cut, progress),
    }
}

/// Statuses that say "not now" rather than anything final.
pub(crate) fn transient(status: StatusCode) -> bool {
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

/// Reads a whole body of at most `limit` bytes; the error says which.
pub(crate) async fn read_limited(
    body: hyper::body::Incoming,
    limit: usize,
    what: &'static str,
) -> Result<Bytes, JobError> {
    crate::body::collect_whole(body, limit as u64)
        .await
        .map_err(|e| {
            // The library's words stay in the log.
            tracing::debug!(error = %crate::error::chain(&e), "reading the {what} failed");
            JobError::unreadable(what, e)
        })
}

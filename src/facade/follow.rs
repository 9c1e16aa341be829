//! Following a job: poll its monitor on schedule until it is done, fails,
//! or the deadline comes.
//!
//! The loop lives inside the client's request future, so a client that
//! hangs up drops it and polling stops at once. Each status call, body
//! included, runs within the request's [`Bound`] and the route's poll
//! timeout. A transient failure (the backend unreachable, a 5xx, a 429, a
//! call over its timeout) is retried on the schedule; only `max_failures`
//! of them in a row give up on the job.

use std::time::SystemTime;

use http::{Method, StatusCode};
use tokio::time::Instant;
use url::Url;

use crate::error::{BackendError, Error, JobError};
use crate::telemetry::metrics::{Metrics, RouteKind, RouteLabel};

use super::adaptive::Timing;
use super::bound::{Bound, Cut};

use super::call::JobCalls;
use super::job_state::{self, Done, JobState, StatusAnswer};
use super::schedule::{self, Schedule};

/// The pace of polling beyond the route's schedule.
#[derive(Clone, Copy)]
pub(crate) struct Pace<'a> {
    pub(crate) first: FirstPoll,
    /// No delay shorter than this: a slow fallback poll beside a callback.
    pub(crate) floor: Option<std::time::Duration>,
    /// The route's learned timing and when this job was submitted; `None`
    /// for a job resumed without knowing its age.
    pub(crate) learn: Option<(&'a Timing, Instant)>,
}

/// When to poll first.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FirstPoll {
    /// After the accepting answer's `Retry-After`, else the first backoff step.
    After(Option<std::time::Duration>),
    /// At once: the job was accepted long ago (a resumed follow).
    Now,
}

/// How following ended, short of an error.
pub(crate) enum Followed {
    /// Boxed: a held request keeps room for how its wait may end, and
    /// this is the one way that carries an answer.
    Done(Box<(StatusAnswer, Done)>),
    /// The deadline, or the end of shutdown's grace, came first.
    Cut(Cut),
    /// The job failed, or following it did. Boxed, like `Done`, so the
    /// room a held request keeps for this outcome is a pointer.
    Failed(Box<Error>),
}

/// An `async move` block rather than an `async fn`, so a held request
/// keeps its arguments once (see [`super::handle`]).
#[allow(clippy::manual_async_fn)] // deliberate: see the doc comment
pub(crate) fn follow<'a>(
    calls: &'a JobCalls<'a>,
    status_url: &'a Url,
    bound: &'a mut Bound,
    pace: Pace<'a>,
    metrics: &'a Metrics,
    polls: &'a mut u32,
) -> impl std::future::Future<Output = Followed> + 'a {
    async move {
        let facade = calls.facade;
        let (mut schedule, mut learning) = schedule_for(calls, pace);
        let mut last_running = std::time::Duration::ZERO;
        let mut delay = match pace.first {
            FirstPoll::After(retry_after) => schedule.next(retry_after),
            FirstPoll::Now => std::time::Duration::ZERO,
        };
        let mut failures = 0u32;
        loop {
            // The sleep runs within the bound like a call would, but
            // as one timer (the earlier of the two): a held request spends
            // most of its life here.
            let wake = (Instant::now() + delay).min(bound.deadline);
            tokio::select! {
                biased;
                () = bound.drained() => return Followed::Cut(Cut::Drained),
                () = tokio::time::sleep_until(wake) => {}
            }
            if Instant::now() >= bound.deadline {
                return Followed::Cut(Cut::Deadline);
            }
            *polls += 1;
            metrics.polls.get_or_create(&route_label(calls)).inc();
            // Boxed: a held request's state machine is as large as its
            // largest await, and it spends its life asleep between polls,
            // not in one.
            let timeout = facade.poll.timeout;
            let call = tokio::time::timeout(timeout, Box::pin(poll(calls, status_url, timeout)));
            let polled = match bound.within(call).await {
                Err(cut) => return Followed::Cut(cut),
                Ok(Ok(Ok(polled))) => polled,
                Ok(Ok(Err(err))) => return Followed::Failed(Box::new(err)),
                // The head came in time but its body did not.
                Ok(Err(_)) => Polled::Transient(Transient {
                    kind: "timeout",
                    cause: BackendError::Timeout(timeout).class(),
                    asked: None,
                }),
            };
            let transient = match polled {
                Polled::Running { retry_after } => {
                    failures = 0;
                    if retry_after.is_some() {
                        learning = None;
                    }
                    if let Some((_, started)) = learning {
                        last_running = started.elapsed();
                    }
                    delay = schedule.next(retry_after);
                    continue;
                }
                Polled::Succeeded(answer, result) => {
                    if let Some((timing, started)) = learning {
                        timing.record(last_running, started.elapsed());
                    }
                    return Followed::Done(Box::new((answer, result)));
                }
                Polled::Transient(transient) => transient,
            };
            failures += 1;
            let asked = transient.asked;
            if let Some(failed) = count_failure(calls, metrics, transient, failures) {
                return failed;
            }
            delay = schedule.next(asked);
        }
    }
}

/// The job's schedule, and what its polls may teach the route's timing
/// (`None`: nothing).
fn schedule_for<'a>(
    calls: &JobCalls<'a>,
    pace: Pace<'a>,
) -> (Schedule<'a>, Option<(&'a Timing, Instant)>) {
    let facade = calls.facade;
    let learn = pace.learn.filter(|_| facade.poll.adaptive);
    let plan = learn.and_then(|(timing, _)| timing.plan());
    let schedule = Schedule::new(&facade.poll)
        .with_floor(pace.floor)
        .with_plan(
            plan,
            learn.map_or_else(Instant::now, |(_, started)| started),
        );
    // What a job with a Retry-After takes says nothing about its peers'
    // natural length: learn only from jobs polled on Baton's own schedule.
    let learning = learn.filter(|_| matches!(pace.first, FirstPoll::After(None)));
    (schedule, learning)
}

/// The route's metric label. Built per poll rather than kept: a held
/// request sleeps far more than it polls.
fn route_label(calls: &JobCalls<'_>) -> RouteLabel {
    RouteLabel {
        route: calls.route.name.to_string(),
    }
}

/// Counts the `failures`th transient failure in a row; gives up on the
/// job (`Some`) once the route's `max_failures` are reached.
fn count_failure(
    calls: &JobCalls<'_>,
    metrics: &Metrics,
    transient: Transient,
    failures: u32,
) -> Option<Followed> {
    let Transient { kind, cause, .. } = transient;
    metrics
        .poll_errors
        .get_or_create(&RouteKind {
            route: calls.route.name.to_string(),
            kind: kind.to_owned(),
        })
        .inc();
    tracing::debug!(job = ?calls.job.id, failures, %cause, "status call failed");
    if failures < calls.facade.poll.max_failures {
        return None;
    }
    Some(Followed::Failed(Box::new(calls.fail(
        JobError::PollFailed {
            attempts: failures,
            cause,
        },
    ))))
}

/// What one poll learned, short of an end of the job.
enum Polled {
    Running {
        retry_after: Option<std::time::Duration>,
    },
    Succeeded(StatusAnswer, Done),
    /// The monitor could not say: try again on the schedule.
    Transient(Transient),
}

/// A poll that got no answer about the job, and why.
struct Transient {
    kind: &'static str,
    cause: String,
    /// The monitor's `Retry-After`, if it gave one.
    asked: Option<std::time::Duration>,
}

/// Polls the monitor once and reads its answer. An `Err` ends the job:
/// the job failed, was canceled or is gone, or the answer is unreadable.
async fn poll(
    calls: &JobCalls<'_>,
    status_url: &Url,
    timeout: std::time::Duration,
) -> Result<Polled, Error> {
    let facade = calls.facade;
    let request = calls.request(Method::GET, status_url)?;
    let response = match calls.send(request, timeout).await {
        Ok(response) => response,
        // Only calls that never got an answer land here: connect errors,
        // resets, per-call timeouts.
        Err(err) => {
            let kind = match &err {
                Error::Backend { kind, .. } => kind.slug(),
                _ => "other",
            };
            // The chain (addresses, library errors) is for the log; the
            // client may later read only the class.
            tracing::debug!(error = %crate::error::chain(&err), "status call got no answer");
            return Ok(Polled::Transient(Transient {
                kind,
                cause: err.detail(),
                asked: None,
            }));
        }
    };
    if super::transient(response.status()) {
        let kind = if response.status() == StatusCode::TOO_MANY_REQUESTS {
            "throttled"
        } else {
            "server_error"
        };
        return Ok(Polled::Transient(Transient {
            kind,
            cause: format!("the status monitor answered {}", response.status()),
            asked: schedule::retry_after(response.headers(), SystemTime::now()),
        }));
    }
    let (parts, incoming) = response.into_parts();
    let body = super::read_limited(incoming, facade.max_status_body, "status body")
        .await
        .map_err(|kind| calls.fail(kind))?;
    let mut answer = StatusAnswer::new(parts.status, parts.headers, body);
    match job_state::read(&facade.state, &facade.failure.pointers, &mut answer)
        .map_err(|kind| calls.fail(kind))?
    {
        JobState::Running { retry_after } => Ok(Polled::Running { retry_after }),
        JobState::Succeeded { result } => Ok(Polled::Succeeded(answer, result)),
        JobState::Failed { problem } => Err(calls.fail(JobError::Failed {
            status: facade.failure.status,
            error: problem,
        })),
        JobState::Canceled => Err(calls.fail(JobError::Canceled)),
        JobState::Gone(status) => Err(calls.fail(JobError::Gone(status))),
    }
}

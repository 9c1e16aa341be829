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
//! credentials, correlation.

pub mod call;
pub mod dialect;
pub mod fetch;
pub mod follow;
pub mod prefer;
pub mod schedule;
pub mod submit;
pub mod template;

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::{self, Body};
use crate::config::{AsyncRoute, HandleSource};
use crate::error::{Error, JobError, JobRef};
use crate::proxy::{self, Forward};
use crate::upstream::Upstream;
use call::JobCalls;
use follow::Followed;
use prefer::{Prefer, PREFERENCE_APPLIED};
use submit::{Job, Submitted};

/// Runs an async route. `extra` collects headers for the client's answer
/// whichever way it ends (`Preference-Applied` belongs on a 504 too).
pub async fn handle(
    cx: Forward<'_>,
    facade: &AsyncRoute,
    request: Request<Incoming>,
    started: Instant,
    extra: &mut HeaderMap,
) -> Result<Response<Body>, Error> {
    let prefer = Prefer::parse(request.headers());
    let hold = match prefer.wait {
        Some(asked) => {
            let applied = asked.min(facade.max_wait);
            if let Ok(value) = HeaderValue::try_from(format!("wait={}", applied.as_secs())) {
                extra.insert(PREFERENCE_APPLIED, value);
            }
            applied
        }
        None => facade.wait,
    };
    let deadline = started + hold;
    let mut calls = JobCalls::new(cx.route, facade, cx.upstream, request.headers());

    let mut submit = proxy::prepare(&cx, request)?;
    for name in facade.submit_headers.keys() {
        submit.headers_mut().remove(name);
    }
    for (name, value) in &facade.submit_headers {
        submit.headers_mut().append(name, value.clone());
    }
    // Also the original URI, for results fetched by re-GETting it.
    let submit_url = call::url_of(submit.uri())?;
    let response = cx.upstream.send(submit).await?;
    let job = match submit::accept(&calls, response, &submit_url).await? {
        Submitted::Answer(answer) => return Ok(answer),
        Submitted::Job(job) => job,
    };
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
        return Ok(respond_async(&calls, job));
    }

    let cancel = CancelGuard::new(&calls, &job)?;
    match follow::follow(&calls, &job.status_url, deadline, job.retry_after).await {
        Ok(Followed::Done(last, done)) => {
            cancel.disarm();
            fetch::result(&calls, &job.status_url, last, done, &submit_url).await
        }
        Ok(Followed::TimedOut) => {
            if facade.cancel.on_timeout {
                cancel.fire();
            } else {
                cancel.disarm();
            }
            Err(calls.fail(JobError::Timeout(hold)))
        }
        Err(err) => {
            cancel.disarm();
            Err(err)
        }
    }
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
    body: Incoming,
    limit: usize,
    what: &'static str,
) -> Result<Bytes, JobError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(JobError::BodyTooLarge {
            what,
            limit: limit as u64,
        }),
        Err(e) => Err(JobError::BadAnswer(format!(
            "reading the {what} failed: {e}"
        ))),
    }
}

/// Cancels the job if the request ends without disarming it: when the
/// client hangs up, hyper drops the request's future, and with it this
/// guard, whose drop sends the cancel on a task of its own.
struct CancelGuard {
    armed: bool,
    upstream: Upstream,
    request: Option<Request<Body>>,
    timeout: Duration,
}

impl CancelGuard {
    fn new(calls: &JobCalls<'_>, job: &Job) -> Result<Self, Error> {
        let cancel = &calls.facade.cancel;
        let request = if cancel.on_disconnect || cancel.on_timeout {
            let vars = template::Vars {
                status_url: Some(job.status_url.as_str()),
                job_id: Some(&job.id),
            };
            let target = cancel
                .url
                .render(None, vars)
                .map_err(|e| calls.fail(JobError::BadAnswer(format!("the cancel URL: {e}"))))?;
            let url = calls.resolve(&job.status_url, &target)?;
            Some(calls.request(cancel.method.clone(), &url)?)
        } else {
            None
        };
        Ok(CancelGuard {
            armed: cancel.on_disconnect,
            upstream: calls.upstream.clone(),
            request,
            timeout: calls.facade.poll.timeout,
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
        let Some(request) = self.request.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let upstream = self.upstream.clone();
        let timeout = self.timeout;
        let target = request.uri().clone();
        let method: Method = request.method().clone();
        runtime.spawn(async move {
            match upstream.send_within(request, timeout).await {
                Ok(response) => tracing::info!(%method, %target, status = response.status().as_u16(), "job canceled"),
                Err(e) => tracing::warn!(%method, %target, error = %crate::error::chain(&e), "cancel failed"),
            }
        });
    }
}

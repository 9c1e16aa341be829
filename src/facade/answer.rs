//! The client's answer when it is not the job's fetched result: a hold
//! that stopped before the job ended ([`stopped`], with the continuation
//! monitor), a callback's delivery ([`called_back`]), and the accepting
//! answer for a client that follows the job itself ([`respond_async`]).
//! Also which failures are the job's own outcome ([`is_outcome`]), which
//! decides whether the idempotency layer keeps an answer for retries.

use std::time::Duration;

use http::header::HeaderValue;
use http::{Response, StatusCode};

use crate::body::{self, Body};
use crate::config::{Callback, HandleSource, OnTimeout};
use crate::error::{Error, JobError};
use crate::proxy;

use super::bound::Cut;
use super::call::JobCalls;
use super::callback::Delivery;
use super::continuation::Continuation;
use super::submit::Job;
use super::{Progress, Submission};

/// The answer of a request that stopped following its job before the job
/// ended: the route's timeout answer at the deadline, a 503 at the end of
/// shutdown's grace; with the continuation monitor where the route has one.
pub(super) fn stopped(
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
pub(super) fn is_outcome(err: &Error) -> bool {
    matches!(
        err,
        Error::Job {
            kind: JobError::Failed { .. } | JobError::Canceled | JobError::Gone(_),
            ..
        }
    )
}

/// The client's answer from a callback: its status, and its body or the
/// configured part of it.
pub(super) fn called_back(
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
pub(super) fn respond_async(calls: &JobCalls<'_>, job: Job) -> Response<Body> {
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

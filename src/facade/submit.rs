//! The submit's answer: is it a job, and if so, where is its monitor?
//!
//! An answer that is not a job is the final answer and goes back to the
//! client unchanged (a synchronous result, a 4xx rejection). A job's body
//! is read only when the handle or the job id lives in it, and then only up
//! to the route's status-body limit.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::response::Parts;
use http::Response;
use hyper::body::Incoming;
use serde_json::Value;
use url::Url;

use crate::body::{self, Body};
use crate::config::template::Vars;
use crate::config::{self, AsyncRoute, HandleSource};
use crate::error::{Error, JobError};
use crate::proxy;

use super::call::JobCalls;
use super::schedule;

/// What the submit produced.
pub(crate) enum Submitted {
    /// Not a job: this is the client's answer.
    Answer(Response<Body>),
    Job(Job),
}

/// A job the backend accepted.
pub(crate) struct Job {
    pub(crate) status_url: Url,
    pub(crate) id: String,
    /// The delay the accepting answer asked for before the first poll.
    pub(crate) retry_after: Option<Duration>,
    /// The accepting answer, for a client that asked to handle the job
    /// itself (`Prefer: respond-async`).
    pub(crate) accepted: (Parts, Bytes),
}

/// `callback_token` names a job that has no monitor (callback only).
pub(crate) async fn accept(
    calls: &JobCalls<'_>,
    response: Response<Incoming>,
    submit_url: &Url,
    callback_token: Option<&str>,
) -> Result<Submitted, Error> {
    let facade = calls.facade;
    let status = response.status();
    if !facade.job.statuses.contains(&status) {
        return Ok(Submitted::Answer(
            proxy::relay(response, &calls.upstream.config).await?,
        ));
    }
    let (parts, incoming) = response.into_parts();
    let limit = facade.max_status_body;
    let bytes = super::read_limited(incoming, limit, "submit answer's body")
        .await
        .map_err(|kind| calls.fail(kind))?;
    let json = body_json(facade, &bytes);
    let handle = match find_handle(&facade.handle.source, &parts, json.as_ref(), submit_url) {
        Ok(handle) => handle,
        Err(Handle::Missing(_)) if facade.job.needs_handle => {
            // Not a job after all: a synchronous answer with a job-like status.
            return Ok(Submitted::Answer(proxy::finish(Response::from_parts(
                parts,
                body::full(bytes),
            ))));
        }
        Err(Handle::Missing(detail)) => {
            return Err(calls.fail(JobError::NoHandle { status, detail }))
        }
        Err(Handle::Invalid(detail)) => {
            return Err(calls.fail(JobError::BadAnswer(format!("the job's handle: {detail}"))))
        }
    };
    let status_url = calls.resolve(submit_url, &handle)?;
    let id = job_id(&facade.handle, json.as_ref(), callback_token, &status_url);
    Ok(Submitted::Job(Job {
        retry_after: schedule::retry_after(&parts.headers, SystemTime::now()),
        status_url,
        id,
        accepted: (parts, bytes),
    }))
}

/// The submit answer's body as JSON, parsed only when the route reads
/// something from it (the handle or the job id): most jobs' bodies are
/// never built into values.
fn body_json(facade: &AsyncRoute, bytes: &[u8]) -> Option<Value> {
    let reads_body = facade.handle.id_pointer.is_some()
        || matches!(
            facade.handle.source,
            HandleSource::Pointer(_) | HandleSource::Template(_)
        );
    if reads_body {
        serde_json::from_slice(bytes).ok()
    } else {
        None
    }
}

/// The job's handle (its monitor, not yet resolved) where the route says
/// it is. A handle that is absent may mean "not a job"; one that is
/// present but unusable is always a broken answer.
fn find_handle(
    source: &HandleSource,
    parts: &Parts,
    json: Option<&Value>,
    submit_url: &Url,
) -> Result<String, Handle> {
    match source {
        HandleSource::Headers(names) => names
            .iter()
            .find_map(|name| parts.headers.get(name))
            .ok_or_else(|| {
                let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
                Handle::Missing(format!("no {} header", names.join(" or ")))
            })
            .and_then(|value| {
                value
                    .to_str()
                    .map(str::to_owned)
                    .map_err(|_| Handle::Invalid("the handle header is not text".to_owned()))
            }),
        HandleSource::Pointer(pointer) => match json.and_then(|j| j.pointer(pointer)) {
            None | Some(Value::Null) => Err(Handle::Missing(format!(
                "no value at {pointer} in a JSON body"
            ))),
            Some(Value::String(url)) => Ok(url.clone()),
            Some(other) => Err(Handle::Invalid(format!(
                "the value at {pointer} is not a URL string: {other}"
            ))),
        },
        HandleSource::Template(template) if !template.has_values(json) => Err(Handle::Missing(
            "the JSON body lacks the values the handle template needs".to_owned(),
        )),
        HandleSource::Template(template) => template
            .render(json, Vars::default())
            .map_err(Handle::Invalid),
        // No monitor to find: the submit's own URL stands in, never polled.
        HandleSource::Callback => Ok(submit_url.to_string()),
    }
}

/// The job's id: from the body where the route points, else a callback
/// job's token, else the monitor's last path segment.
fn job_id(
    handle: &config::Handle,
    json: Option<&Value>,
    callback_token: Option<&str>,
    status_url: &Url,
) -> String {
    handle
        .id_pointer
        .as_deref()
        .and_then(|p| json?.pointer(p))
        .and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .or_else(|| match handle.source {
            HandleSource::Callback => callback_token.map(str::to_owned),
            _ => None,
        })
        .unwrap_or_else(|| last_segment(status_url))
}

enum Handle {
    Missing(String),
    Invalid(String),
}

/// A job's id when the backend does not name it: the monitor's last path
/// segment (`/status/42` → `42`).
fn last_segment(url: &Url) -> String {
    url.path_segments()
        .and_then(|mut segments| segments.rfind(|s| !s.is_empty()))
        .unwrap_or("")
        .to_owned()
}

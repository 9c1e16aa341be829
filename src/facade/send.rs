//! Step 1 of the flow: the client's request goes to the job API as the
//! submit, as a pass-through would send it plus the route's submit
//! headers and, where the route takes callbacks, the callback URL; then
//! [`submit::accept`] learns from the answer whether there is a job to
//! follow. Everything here lives in the submit's own box, which is gone
//! once the job is accepted (see [`super::handle`]).

use std::time::Duration;

use http::header::{HeaderMap, HeaderValue};
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::time::Instant;
use url::Url;

use crate::body::{self, Body};
use crate::config::{AsyncRoute, Callback, CallbackCarrier};
use crate::error::{ClientError, Error, JobRef};
use crate::proxy::{self, Forward};

use super::answer::respond_async;
use super::call::{self, JobCalls};
use super::callback::{self, Registration};
use super::continuation::Ticket;
use super::follow::FirstPoll;
use super::prefer::{Prefer, PREFERENCE_APPLIED};
use super::submit::{self, Job, Submitted};
use super::{JobEnv, Progress, Submission, Target};

/// What the submit led to.
pub(super) enum Accepted {
    /// The answer for the client already: not a job, or `respond-async`.
    Answer(Response<Body>),
    /// A job to follow (boxed: it outlives the submit that found it).
    Job(Box<Target>),
}

/// Sends the submit (with the callback URL, where the route takes one)
/// and learns the job from its answer.
pub(super) async fn submit_job(
    cx: &Forward<'_>,
    calls: &mut JobCalls<'_>,
    request: Box<Request<Body>>,
    env: &JobEnv<'_>,
    prefer: Prefer,
    extra: &mut HeaderMap,
    progress: &mut Progress,
) -> Result<Accepted, Error> {
    let (registration, request) = with_callback(cx, calls.facade, env, request).await?;
    let submit = submit_request(cx, calls.facade, request)?;
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
    progress.submit = Submission::Accepted(Box::new(ticket_of(
        cx,
        &job,
        &submit_url,
        registration.as_ref(),
    )));
    tracing::Span::current().record("job_id", job.id.as_str());
    record_accepted(env, &progress.submit).await;
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

/// Where the route takes callbacks: registers this job's token and puts
/// its URL in the submit. The registration is made before the submit goes
/// out, so a job that calls back at once still finds it.
async fn with_callback(
    cx: &Forward<'_>,
    facade: &AsyncRoute,
    env: &JobEnv<'_>,
    request: Box<Request<Body>>,
) -> Result<(Option<Registration>, Request<Body>), Error> {
    let Some(callback) = &facade.callback else {
        return Ok((None, *request));
    };
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
    Ok((Some(registration), request))
}

/// The submit as a pass-through would send it, with the route's submit
/// headers in place of any the client sent under the same names.
fn submit_request(
    cx: &Forward<'_>,
    facade: &AsyncRoute,
    request: Request<Body>,
) -> Result<Request<Body>, Error> {
    let mut submit = proxy::prepare(cx, request)?;
    for name in facade.submit_headers.keys() {
        submit.headers_mut().remove(name);
    }
    for (name, value) in &facade.submit_headers {
        submit.headers_mut().append(name, value.clone());
    }
    Ok(submit)
}

/// The accepted job's ticket: all a later request needs to follow it.
fn ticket_of(
    cx: &Forward<'_>,
    job: &Job,
    submit_url: &Url,
    registration: Option<&Registration>,
) -> Ticket {
    Ticket {
        route: cx.route.name.to_string(),
        status_url: job.status_url.to_string(),
        job_id: job.id.clone(),
        original: submit_url.to_string(),
        callback: registration.map(|r| r.token.clone()),
    }
}

/// Tells the idempotency record the job was accepted, so a retry on any
/// instance finds the job even if this one dies. A failure only costs
/// that: the request goes on.
async fn record_accepted(env: &JobEnv<'_>, submit: &Submission) {
    if let (Some((store, key)), Submission::Accepted(ticket)) = (env.record, submit) {
        if let Err(e) = store.submitted(key, Ticket::clone(ticket)).await {
            tracing::warn!(error = %e, "could not record the accepted job for retries");
        }
    }
}

/// How long a callback token outlives the longest hold: a job that calls
/// back a little late still finds it.
const CALLBACK_SLACK: Duration = Duration::from_secs(60);

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
            // The client's body, already read whole before the submit (see
            // `pipeline/route.rs`): this only joins its pieces.
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

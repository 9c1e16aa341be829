//! The finished job's result, turned into the client's answer.
//!
//! The result is either inside the last status answer (the whole body or a
//! JSON value in it) or a separate resource that is fetched with GET —
//! never by repeating the submit — and streamed to the client behind the
//! route's result-size limit. Redirects on the way are followed up to the
//! route's hop limit, and each hop must stay on an allowed origin.

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use url::Url;

use crate::body::{self, Body};
use crate::config::template::Vars;
use crate::config::ResultSource;
use crate::error::{Error, JobError};
use crate::proxy;

use super::call::JobCalls;
use super::job_state::{Done, StatusAnswer};

/// Turns the final status answer into the client's answer.
pub(crate) async fn result(
    calls: &JobCalls<'_>,
    status_url: &Url,
    mut last: StatusAnswer,
    done: Done,
    original: &str,
) -> Result<Response<Body>, Error> {
    let facade = calls.facade;
    let target = match (done, &facade.result) {
        (Done::Redirect(location), _) => calls.resolve(status_url, &location)?,
        (Done::InBody, ResultSource::StatusBody) => {
            let mut response = Response::new(body::full(last.body));
            *response.status_mut() = last.status;
            copy_content_headers(&last.headers, response.headers_mut());
            return Ok(response);
        }
        (Done::InBody, ResultSource::BodyPointer(pointer)) => {
            let json = last.json().map_err(|kind| calls.fail(kind))?;
            let Some(value) = json.pointer(pointer) else {
                return Err(calls.fail(JobError::BadAnswer(format!(
                    "the job succeeded but its status has no result at {pointer}"
                ))));
            };
            let mut response = Response::new(body::full(value.to_string()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return Ok(response);
        }
        (Done::InBody, ResultSource::UrlPointer(pointer)) => {
            let json = last.json().map_err(|kind| calls.fail(kind))?;
            let Some(location) = json.pointer(pointer).and_then(|v| v.as_str()) else {
                return Err(calls.fail(JobError::BadAnswer(format!(
                    "the job succeeded but its status has no result URL at {pointer}"
                ))));
            };
            calls.resolve(status_url, location)?
        }
        (Done::InBody, ResultSource::UrlTemplate(template)) => {
            let json = if template.needs_body() {
                Some(last.json().map_err(|kind| calls.fail(kind))?.clone())
            } else {
                None
            };
            let vars = Vars {
                status_url: Some(status_url.as_str()),
                job_id: calls.job.id.as_deref(),
            };
            let location = template
                .render(json.as_ref(), vars)
                .map_err(|e| calls.fail(JobError::BadAnswer(format!("the result URL: {e}"))))?;
            calls.resolve(status_url, &location)?
        }
        (Done::InBody, ResultSource::OriginalUri) => {
            Url::parse(original).map_err(|e| Error::Internal(e.into()))?
        }
    };
    fetch(calls, target).await
}

/// GETs the result resource, following redirects, and streams it.
async fn fetch(calls: &JobCalls<'_>, mut url: Url) -> Result<Response<Body>, Error> {
    let facade = calls.facade;
    let mut visited = vec![url.clone()];
    loop {
        let request = calls.request(Method::GET, &url)?;
        let response = calls
            .send(request, calls.upstream.config.response_timeout)
            .await
            .map_err(|e| match e {
                Error::Backend { kind, .. } => calls.fail(JobError::Call(kind)),
                other => other,
            })?;
        let status = response.status();
        if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
            let Some(location) = response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
            else {
                return Err(calls.fail(JobError::BadAnswer(format!(
                    "the result answered {status} without a Location"
                ))));
            };
            let next = calls.resolve(&url, location)?;
            if visited.contains(&next) || visited.len() > facade.max_hops {
                return Err(calls.fail(JobError::TooManyHops(facade.max_hops)));
            }
            visited.push(next.clone());
            url = next;
            continue;
        }
        let limit = facade.max_result_body;
        let declared = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(calls.fail(JobError::BodyTooLarge {
                what: "result body",
                limit,
            }));
        }
        // Streamed: an undeclared body that outgrows the limit is cut off
        // mid-stream rather than held.
        let mut response = proxy::relay(
            response.map(|b| body::limited(b, limit)),
            &calls.upstream.config,
        )
        .await?;
        response.headers_mut().remove(header::LOCATION);
        return Ok(response);
    }
}

/// The headers that describe a body, for answers built from a status body.
fn copy_content_headers(from: &http::HeaderMap, to: &mut http::HeaderMap) {
    for (name, value) in from {
        let name_str = name.as_str();
        if (name_str.starts_with("content-") && name != header::CONTENT_LENGTH)
            || name == header::ETAG
            || name == header::LAST_MODIFIED
            || name == header::CACHE_CONTROL
        {
            to.append(name.clone(), value.clone());
        }
    }
}

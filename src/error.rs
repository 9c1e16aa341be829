//! Every way a request can fail, grouped by who is to blame, and the one
//! place where a failure becomes an HTTP answer.
//!
//! The blame decides the status class (as in pingora's error source): the
//! client's fault is a 4xx, the backend's a 502/504, ours a 500, and a
//! request that arrives while we drain a 503. Handlers return [`Error`] and
//! never build error responses themselves; [`Error::into_response`] turns it
//! into an RFC 9457 `application/problem+json` body carrying the request id.

use std::error::Error as StdError;
use std::fmt::Write as _;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use crate::body::{self, Body};

use crate::body::BodyError;
pub(crate) use crate::body::BoxError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client sent something Baton will not forward.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The backend could not be reached or answered badly.
    #[error("backend `{backend}`: {kind}")]
    Backend {
        backend: String,
        #[source]
        kind: BackendError,
    },
    /// The job behind an async route did not produce an answer.
    #[error("job{}: {kind}", job.describe())]
    Job {
        job: JobRef,
        #[source]
        kind: JobError,
    },
    /// A bug or resource failure inside Baton.
    #[error("internal error: {0}")]
    Internal(#[source] BoxError),
    /// Baton is draining and takes no new work.
    #[error("Baton is shutting down")]
    ShuttingDown,
    /// A shared store this request needs cannot be reached.
    #[error(transparent)]
    Unavailable(#[from] crate::store::StoreError),
    /// Too many requests are held already.
    #[error("{scope} holds {limit} requests already")]
    Overloaded { scope: String, limit: usize },
}

/// The client's request is not acceptable to the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no route matches {method} {path}")]
    NoRoute { method: http::Method, path: String },
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("request header fields total {size} bytes, over the limit of {limit} bytes")]
    HeaderTooLarge { size: usize, limit: usize },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("reading the request body failed")]
    BodyRead(#[source] BoxError),
    #[error("this Idempotency-Key was first used with a different request (method, path or body)")]
    IdempotencyMismatch,
    #[error("no such job monitor")]
    UnknownMonitor,
    #[error("this job monitor has expired")]
    MonitorExpired,
    #[error("bad request target: {0}")]
    BadTarget(#[from] crate::target::TargetError),
    #[error("the request body stalled: nothing arrived for {0:?}")]
    BodyTimeout(std::time::Duration),
}

impl JobError {
    /// A backend's answer that could not be read whole: over its limit, or
    /// broken off (the client reads the class, not the library's words).
    pub(crate) fn unreadable(what: &'static str, err: BodyError) -> JobError {
        match err {
            BodyError::TooLarge { limit } => JobError::BodyTooLarge { what, limit },
            BodyError::Stalled(_) | BodyError::Read(_) => {
                JobError::BadAnswer(format!("the {what} broke off"))
            }
        }
    }
}

impl From<BodyError> for ClientError {
    fn from(err: BodyError) -> ClientError {
        match err {
            BodyError::TooLarge { limit } => ClientError::BodyTooLarge { limit },
            BodyError::Stalled(pause) => ClientError::BodyTimeout(pause),
            BodyError::Read(source) => ClientError::BodyRead(source),
        }
    }
}

impl From<BodyError> for Error {
    fn from(err: BodyError) -> Error {
        Error::Client(err.into())
    }
}

/// What went wrong between Baton and a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("connection refused")]
    Refused(#[source] BoxError),
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(std::time::Duration),
    #[error("TLS handshake failed: {cause}")]
    Tls {
        cause: String,
        #[source]
        source: BoxError,
    },
    #[error("connect failed: {cause}")]
    Connect {
        cause: String,
        #[source]
        source: BoxError,
    },
    #[error("no response within {0:?}")]
    Timeout(std::time::Duration),
    #[error("connection failed mid-request: {cause}")]
    Broken {
        cause: String,
        #[source]
        source: BoxError,
    },
    #[error("protocol upgrade failed: {0}")]
    Upgrade(String),
    #[error("malformed answer: {0}")]
    BadAnswer(String),
    #[error("the answer's body stalled: nothing arrived for {0:?}")]
    BodyStalled(std::time::Duration),
}

/// Which job a failure is about, as the client may see it.
#[derive(Debug, Clone, Default)]
pub struct JobRef {
    pub(crate) id: Option<String>,
    /// The status monitor, as a path through Baton where it can be.
    pub(crate) status_url: Option<String>,
}

impl JobRef {
    fn describe(&self) -> String {
        match &self.id {
            Some(id) => format!(" {id}"),
            None => String::new(),
        }
    }
}

/// How following a job went wrong.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("the backend accepted the job ({status}) but its answer has no handle: {detail}")]
    NoHandle { status: StatusCode, detail: String },
    #[error("the job failed{}", summary(error))]
    Failed {
        status: StatusCode,
        /// The backend's own account of the failure.
        error: Option<serde_json::Value>,
    },
    #[error("the job was canceled")]
    Canceled,
    #[error("the job is gone: its status monitor answered {0}")]
    Gone(StatusCode),
    #[error("the job did not finish within {0:?}")]
    Timeout(std::time::Duration),
    #[error("{attempts} status calls in a row failed; the last: {cause}")]
    PollFailed { attempts: u32, cause: String },
    #[error(
        "refusing to follow {url}: it is not on the backend's origin or the route's allow-list"
    )]
    OffOrigin { url: String },
    #[error("more than {0} redirects, or a redirect loop, fetching the result")]
    TooManyHops(usize),
    #[error("the {what} exceeds the route's limit of {limit} bytes")]
    BodyTooLarge { what: &'static str, limit: u64 },
    #[error("the backend's answer cannot be read: {0}")]
    BadAnswer(String),
    #[error("calling the backend failed: {0}")]
    Call(#[source] BackendError),
    /// Baton is shutting down; the job goes on, and `monitor` (where the
    /// route has continuation) is where the client may find it again.
    #[error("Baton is shutting down; the job continues")]
    Drained { monitor: Option<String> },
    #[error("the first request with this Idempotency-Key received the answer; at over {limit} bytes it was not kept for replay")]
    NotReplayable { limit: usize },
}

/// The backend's error message, when it gave one: a string, or an
/// object's `message`.
fn summary(error: &Option<serde_json::Value>) -> String {
    let text = match error {
        Some(serde_json::Value::String(s)) => s.as_str(),
        Some(v) => match v.get("message").and_then(|m| m.as_str()) {
            Some(m) => m,
            None => return String::new(),
        },
        None => return String::new(),
    };
    format!(": {text}")
}

impl BackendError {
    /// The kind of failure, as a metric label.
    pub(crate) fn slug(&self) -> &'static str {
        match self {
            BackendError::Refused(_) => "refused",
            BackendError::ConnectTimeout(_) => "connect_timeout",
            BackendError::Tls { .. } => "tls",
            BackendError::Connect { .. } => "connect",
            BackendError::Timeout(_) => "timeout",
            BackendError::Broken { .. } => "broken",
            BackendError::Upgrade(_) => "upgrade",
            BackendError::BadAnswer(_) => "bad_answer",
            BackendError::BodyStalled(_) => "body_stalled",
        }
    }

    /// What went wrong, as a class the client may read: no backend names,
    /// addresses or library error chains (those go to the log).
    pub(crate) fn class(&self) -> String {
        match self {
            BackendError::Refused(_) => "the backend refused the connection".to_owned(),
            BackendError::ConnectTimeout(after) => {
                format!("the backend did not accept the connection within {after:?}")
            }
            BackendError::Tls { cause, .. } => {
                format!("the backend's TLS handshake failed: {cause}")
            }
            BackendError::Connect { .. } => "the backend could not be reached".to_owned(),
            BackendError::Timeout(after) => format!("the backend did not answer within {after:?}"),
            BackendError::Broken { .. } => {
                "the backend closed or broke the connection before answering".to_owned()
            }
            BackendError::Upgrade(_) => "the backend's protocol upgrade failed".to_owned(),
            BackendError::BadAnswer(_) => "the backend's answer was malformed".to_owned(),
            BackendError::BodyStalled(after) => {
                format!("the backend's answer stalled: no body bytes within {after:?}")
            }
        }
    }
}

impl Error {
    pub(crate) fn job(job: &JobRef, kind: JobError) -> Self {
        Error::Job {
            job: job.clone(),
            kind,
        }
    }

    pub(crate) fn backend(backend: &str, kind: BackendError) -> Self {
        Error::Backend {
            backend: backend.to_owned(),
            kind,
        }
    }

    /// The status this failure answers with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Error::Client(c) => match c {
                ClientError::NoRoute { .. } => StatusCode::NOT_FOUND,
                ClientError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                ClientError::HeaderTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                ClientError::BadRequest(_)
                | ClientError::BodyRead(_)
                | ClientError::BadTarget(_) => StatusCode::BAD_REQUEST,
                ClientError::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
                ClientError::UnknownMonitor => StatusCode::NOT_FOUND,
                ClientError::MonitorExpired => StatusCode::GONE,
                ClientError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            },
            Error::Backend { kind, .. } => match kind {
                BackendError::ConnectTimeout(_)
                | BackendError::Timeout(_)
                | BackendError::BodyStalled(_) => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::BAD_GATEWAY,
            },
            Error::Overloaded { .. } | Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Job { kind, .. } => match kind {
                JobError::Failed { status, .. } => *status,
                JobError::Timeout(_)
                | JobError::Call(
                    BackendError::Timeout(_)
                    | BackendError::ConnectTimeout(_)
                    | BackendError::BodyStalled(_),
                ) => StatusCode::GATEWAY_TIMEOUT,
                JobError::Drained { .. } => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            },
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short stable identifier of the failure, used in the problem `type`
    /// URI and as the outcome in logs.
    pub(crate) fn slug(&self) -> &'static str {
        match self {
            Error::Client(c) => match c {
                ClientError::NoRoute { .. } => "no-route",
                ClientError::BodyTooLarge { .. } => "body-too-large",
                ClientError::HeaderTooLarge { .. } => "header-too-large",
                ClientError::BadRequest(_) => "bad-request",
                ClientError::BodyRead(_) => "body-read",
                ClientError::IdempotencyMismatch => "idempotency-key-reused",
                ClientError::UnknownMonitor => "unknown-monitor",
                ClientError::MonitorExpired => "monitor-expired",
                ClientError::BadTarget(_) => "bad-target",
                ClientError::BodyTimeout(_) => "body-timeout",
            },
            Error::Backend { kind, .. } => match kind {
                BackendError::Refused(_) => "backend-refused",
                BackendError::ConnectTimeout(_) => "backend-connect-timeout",
                BackendError::Tls { .. } => "backend-tls",
                BackendError::Connect { .. } => "backend-connect",
                BackendError::Timeout(_) => "backend-timeout",
                BackendError::Broken { .. } => "backend-broken",
                BackendError::Upgrade(_) => "backend-upgrade",
                BackendError::BadAnswer(_) => "backend-bad-answer",
                BackendError::BodyStalled(_) => "backend-body-stalled",
            },
            Error::Job { kind, .. } => match kind {
                JobError::NoHandle { .. } => "job-no-handle",
                JobError::Failed { .. } => "job-failed",
                JobError::Canceled => "job-canceled",
                JobError::Gone(_) => "job-gone",
                JobError::Timeout(_) => "job-timeout",
                JobError::PollFailed { .. } => "job-poll-failed",
                JobError::OffOrigin { .. } => "job-off-origin",
                JobError::TooManyHops(_) => "job-too-many-hops",
                JobError::BodyTooLarge { .. } => "job-body-too-large",
                JobError::BadAnswer(_) => "job-bad-answer",
                JobError::Call(_) => "job-backend-call",
                JobError::Drained { .. } => "shutting-down",
                JobError::NotReplayable { .. } => "idempotent-answer-not-kept",
            },
            Error::Overloaded { .. } => "overloaded",
            Error::Unavailable(_) => "store-unavailable",
            Error::Internal(_) => "internal",
            Error::ShuttingDown => "shutting-down",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Error::Client(c) => match c {
                ClientError::NoRoute { .. } => "No route matches the request",
                ClientError::BodyTooLarge { .. } => "Request body too large",
                ClientError::HeaderTooLarge { .. } => "Request header fields too large",
                ClientError::BadRequest(_) | ClientError::BodyRead(_) => "Bad request",
                ClientError::BadTarget(_) => "Bad request target",
                ClientError::IdempotencyMismatch => "Idempotency-Key reused",
                ClientError::UnknownMonitor => "No such job monitor",
                ClientError::MonitorExpired => "Job monitor expired",
                ClientError::BodyTimeout(_) => "Request body timed out",
            },
            Error::Backend { kind, .. } => match kind {
                BackendError::ConnectTimeout(_)
                | BackendError::Timeout(_)
                | BackendError::BodyStalled(_) => "Backend timed out",
                _ => "Backend unavailable",
            },
            Error::Job { kind, .. } => match kind {
                JobError::Failed { .. } => "The job failed",
                JobError::Canceled => "The job was canceled",
                JobError::Gone(_) => "The job is gone",
                JobError::Timeout(_) => "The job did not finish in time",
                JobError::Drained { .. } => "Shutting down",
                _ => "The job could not be followed",
            },
            Error::Overloaded { .. } => "Too many held requests",
            Error::Unavailable(_) => "Shared store unavailable",
            Error::Internal(_) => "Internal error",
            Error::ShuttingDown => "Shutting down",
        }
    }

    /// The one mapping from a failure to what the client receives.
    pub(crate) fn into_response(self, request_id: &str) -> Response<Body> {
        let status = self.status();
        let mut problem = serde_json::json!({
            "type": format!("urn:baton:problem:{}", self.slug()),
            "title": self.title(),
            "status": status.as_u16(),
            "detail": self.detail(),
            "request_id": request_id,
        });
        if let Error::Job { job, kind } = &self {
            if let Some(id) = &job.id {
                problem["job_id"] = id.as_str().into();
            }
            if let Some(url) = &job.status_url {
                problem["status_url"] = url.as_str().into();
            }
            if let JobError::Failed {
                error: Some(error), ..
            } = kind
            {
                problem["error"] = error.clone();
            }
            if let JobError::Drained {
                monitor: Some(monitor),
            } = kind
            {
                problem["monitor"] = monitor.as_str().into();
            }
        }
        let mut response = Response::new(body::full(Bytes::from(problem.to_string())));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.closes_connection() {
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Error::Job {
            kind: JobError::Drained {
                monitor: Some(monitor),
            },
            ..
        } = &self
        {
            if let Ok(value) = HeaderValue::from_str(monitor) {
                headers.insert(http::header::LOCATION, value);
            }
        }
        response
    }

    /// The message and every distinct cause below it, for humans. Internal
    /// errors keep their detail out of the answer: it belongs in the log.
    pub(crate) fn detail(&self) -> String {
        match self {
            Error::Internal(_) => "Baton hit an internal error; see its log".to_owned(),
            Error::Backend { kind, .. }
            | Error::Job {
                kind: JobError::Call(kind),
                ..
            } => kind.class(),
            Error::Client(ClientError::BodyRead(_)) => {
                "reading the request body failed: the client's upload broke off".to_owned()
            }
            _ => chain(self),
        }
    }

    /// Whether the client's connection should close after this answer: a
    /// backend or Baton failed mid-exchange, and a client that reuses the
    /// connection should start afresh rather than trust its state.
    pub(crate) fn closes_connection(&self) -> bool {
        matches!(
            self,
            Error::Backend { .. }
                | Error::Internal(_)
                | Error::Client(ClientError::BodyTimeout(_) | ClientError::BodyRead(_))
                | Error::Job {
                    kind: JobError::Call(_),
                    ..
                }
        )
    }
}

/// Renders an error and its sources as `a: b: c`, skipping a source whose
/// text its parent already contains (wrappers often repeat their cause).
pub(crate) fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !out.contains(&text) {
            let _ = write!(out, ": {text}");
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blame_decides_status() {
        let no_route = Error::from(ClientError::NoRoute {
            method: http::Method::GET,
            path: "/x".into(),
        });
        assert_eq!(no_route.status(), StatusCode::NOT_FOUND);
        let timeout = Error::backend(
            "b",
            BackendError::Timeout(std::time::Duration::from_secs(1)),
        );
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        let refused = Error::backend("b", BackendError::Refused("refused".into()));
        assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            Error::ShuttingDown.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn internal_detail_is_not_leaked() {
        let err = Error::Internal("secret path /etc/x".into());
        assert!(!err.detail().contains("/etc/x"));
    }
}

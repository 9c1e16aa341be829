//! One job's calls to its backend after the submit: where they may go,
//! what they carry, and how a backend URL looks from the client's side.
//!
//! Every URL a backend hands us (status monitor, result, redirect) is
//! resolved against the URL that returned it and must then be on the
//! backend's origin or the route's allow-list — a `Location` header is not
//! a licence to make Baton call anywhere (SSRF). The client's credentials
//! go only to the backend's own origin.

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};
use hyper::body::Incoming;
use url::Url;

use crate::body;
use crate::config::{AsyncRoute, Origin, Route};
use crate::error::{Error, JobError, JobRef};
use crate::headers::{detached, X_REQUEST_ID};
use crate::proxy::upstream::Upstream;
use crate::telemetry::correlation::TRACEPARENT;

/// The client's correlation headers, which every call of its job carries.
const CORRELATION: [HeaderName; 2] = [X_REQUEST_ID, TRACEPARENT];

/// What every call of one job needs.
pub(crate) struct JobCalls<'a> {
    pub(crate) route: &'a Route,
    pub(crate) facade: &'a AsyncRoute,
    pub(crate) upstream: &'a Upstream,
    backend_origin: &'a Origin,
    /// Sent with every call, after the route's poll headers: the client's
    /// request id and `traceparent`. Two values rather than a map of them:
    /// a held request keeps these for its whole life, and a map's first
    /// entry costs a table for eight.
    correlation: [Option<HeaderValue>; 2],
    /// Sent only to the backend's own origin (empty, and unallocated, on
    /// routes that forward no credentials). A list, not a map: a held
    /// request keeps this, and an empty map is still 96 bytes.
    credentials: Vec<(HeaderName, HeaderValue)>,
    /// The job as the client may see it in errors.
    pub(crate) job: JobRef,
}

impl<'a> JobCalls<'a> {
    /// Picks from the client's headers what follows the job.
    pub(crate) fn new(
        route: &'a Route,
        facade: &'a AsyncRoute,
        upstream: &'a Upstream,
        client_headers: &HeaderMap,
    ) -> Self {
        // Copies, not clones: a held request keeps these, and a clone would
        // keep the client's whole request head buffer (see `detached`).
        let correlation = CORRELATION.map(|name| client_headers.get(name).map(detached));
        let credentials = facade
            .credential_headers
            .iter()
            .flat_map(|name| {
                client_headers
                    .get_all(name)
                    .iter()
                    .map(move |value| (name.clone(), detached(value)))
            })
            .collect();
        JobCalls {
            route,
            facade,
            upstream,
            backend_origin: &upstream.origin,
            correlation,
            credentials,
            job: JobRef::default(),
        }
    }

    pub(crate) fn fail(&self, kind: JobError) -> Error {
        Error::job(&self.job, kind)
    }

    /// Resolves `reference` against `base` and checks where it points.
    pub(crate) fn resolve(&self, base: &Url, reference: &str) -> Result<Url, Error> {
        let url = base.join(reference.trim()).map_err(|e| {
            self.fail(JobError::BadAnswer(format!(
                "{reference:?} is not a URL ({e})"
            )))
        })?;
        let origin = origin_of(&url);
        let allowed = origin
            .as_ref()
            .is_some_and(|o| o == self.backend_origin || self.facade.allow_origins.contains(o));
        if !allowed {
            return Err(self.fail(JobError::OffOrigin {
                url: url.to_string(),
            }));
        }
        Ok(url)
    }

    fn same_origin(&self, url: &Url) -> bool {
        origin_of(url).is_some_and(|o| o == *self.backend_origin)
    }

    /// A bodiless call (poll, fetch, cancel) to an already-resolved URL.
    pub(crate) fn request(&self, method: Method, url: &Url) -> Result<Request<body::Body>, Error> {
        let uri: Uri = url
            .as_str()
            .parse()
            .map_err(|e| self.fail(JobError::BadAnswer(format!("{url} is not usable ({e})"))))?;
        let mut request = Request::new(body::empty());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.clone_from(&self.facade.poll_headers);
        for (name, value) in CORRELATION.iter().zip(&self.correlation) {
            if let Some(value) = value {
                headers.insert(name, value.clone());
            }
        }
        if self.same_origin(url) {
            for (name, value) in &self.credentials {
                headers.append(name, value.clone());
            }
        }
        if let Some(authority) = request.uri().authority() {
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                request.headers_mut().insert(http::header::HOST, host);
            }
        }
        Ok(request)
    }

    /// Sends a call, waiting at most `timeout` for the response head.
    pub(crate) async fn send(
        &self,
        request: Request<body::Body>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, Error> {
        self.upstream.send_within(request, timeout).await
    }

    /// How the client should see a backend URL: a path on Baton when the
    /// URL is on the backend's origin (undoing the route's path rewrite),
    /// else the URL itself.
    pub(crate) fn public_url(&self, url: &Url) -> String {
        if !self.same_origin(url) {
            return url.to_string();
        }
        crate::proxy::rewrite::client_path(&self.upstream.config, self.route, url)
    }
}

pub(crate) fn origin_of(url: &Url) -> Option<Origin> {
    let scheme = match url.scheme() {
        "http" => http::uri::Scheme::HTTP,
        "https" => http::uri::Scheme::HTTPS,
        _ => return None,
    };
    Some(Origin {
        scheme,
        host: url.host_str()?.to_ascii_lowercase(),
        port: url.port_or_known_default()?,
    })
}

/// The URL a request was sent to, as a base for what its answer refers to.
pub(crate) fn url_of(uri: &Uri) -> Result<Url, Error> {
    Url::parse(&uri.to_string()).map_err(|e| Error::Internal(e.into()))
}

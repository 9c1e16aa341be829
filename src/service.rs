//! The per-request pipeline every connection runs: correlation id, limits,
//! routing, then the route's handler; and the one place where a failed
//! request turns into its problem+json answer and its access-log line.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::HeaderMap;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::body::Body;
use crate::config::Config;
use crate::correlation;
use crate::error::{ClientError, Error};
use crate::headers::{self, X_REQUEST_ID};
use crate::job;
use crate::proxy::{self, Forward};
use crate::router;
use crate::upstream::Upstreams;

/// What every request needs to see: the config it runs under and the
/// clients that reach its backends.
pub struct Shared {
    pub config: Arc<Config>,
    pub upstreams: Upstreams,
}

/// Handles one request; never fails, because every failure has an answer.
pub async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    mut request: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let request_id = correlation::request_id(request.headers_mut());
    let traceparent = correlation::traceparent(request.headers_mut());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mut route_name = None;
    let mut extra = HeaderMap::new();
    let result = dispatch(&shared, peer, request, started, &mut route_name, &mut extra).await;
    let outcome;
    let mut response = match result {
        Ok(response) => {
            outcome = "ok";
            response
        }
        Err(err) => {
            outcome = err.slug();
            if err.status().is_server_error() {
                warn!(request_id = ?request_id, error = %crate::error::chain(&err), "request failed");
            }
            err.into_response(request_id.to_str().unwrap_or_default())
        }
    };
    let headers = response.headers_mut();
    headers.extend(extra);
    headers.insert(X_REQUEST_ID, request_id.clone());
    headers.insert(correlation::TRACEPARENT, traceparent);
    info!(
        target: "baton::access",
        %method,
        %path,
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        route = route_name.as_deref().unwrap_or("-"),
        request_id = request_id.to_str().unwrap_or_default(),
        outcome,
    );
    response
}

async fn dispatch(
    shared: &Shared,
    peer: SocketAddr,
    request: Request<Incoming>,
    started: Instant,
    route_name: &mut Option<Arc<str>>,
    extra: &mut HeaderMap,
) -> Result<Response<Body>, Error> {
    let config = &shared.config;
    let target_len = request
        .uri()
        .path_and_query()
        .map_or(1, |p| p.as_str().len());
    let size = headers::header_size(
        request.method().as_str().len(),
        target_len,
        request.headers(),
    );
    if size > config.server.max_header_size {
        return Err(ClientError::HeaderTooLarge {
            size,
            limit: config.server.max_header_size,
        }
        .into());
    }
    let host = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host());
    let route = router::find(&config.routes, request.method(), host, request.uri().path())
        .ok_or_else(|| ClientError::NoRoute {
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
        })?;
    *route_name = Some(Arc::clone(&route.name));
    let upstream = shared.upstreams.get(&route.backend.name).ok_or_else(|| {
        Error::Internal(format!("no client for backend `{}`", route.backend.name).into())
    })?;
    let cx = Forward {
        route,
        upstream,
        peer,
        max_request_body: config.server.max_request_body,
    };
    match &route.facade {
        Some(facade) => job::handle(cx, facade, request, started, extra).await,
        None => proxy::forward(cx, request).await,
    }
}

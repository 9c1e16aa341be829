//! The admin listener, on its own address so it need not face clients:
//! `/metrics` (Prometheus text), `/healthz` (the process answers) and
//! `/readyz` (config loaded and not draining, so a load balancer stops
//! sending work before we stop).

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{self, Body};
use crate::edge::connection::{Phase, Settings};
use crate::state::State;

/// Open admin connections at most: scrapes and probes, not traffic.
const MAX_CONNECTIONS: usize = 256;

/// Serves health endpoints until `listening` leaves serving (after the
/// client listener has drained). `ready` leaving [`Phase::Serving`] turns
/// `/readyz` to 503 the moment shutdown begins.
pub(crate) async fn serve(
    listener: TcpListener,
    ready: watch::Receiver<Phase>,
    listening: watch::Receiver<Phase>,
    settings: Arc<Settings>,
    state: Arc<State>,
) {
    let ready = Arc::new(ready);
    crate::edge::accept::serve_each(listener, settings, MAX_CONNECTIONS, listening, |_peer| {
        let ready = Arc::clone(&ready);
        let state = Arc::clone(&state);
        service_fn(move |request| {
            let ready = *ready.borrow() == Phase::Serving;
            let answer = answer(&request, ready, &state);
            std::future::ready(Ok::<_, Infallible>(answer))
        })
    })
    .await;
}

fn answer(request: &Request<Incoming>, ready: bool, state: &State) -> Response<Body> {
    if request.uri().path() == "/metrics" {
        let text = state
            .metrics
            .render(state.idempotency.len(), state.idempotency.evictions());
        let mut response = Response::new(body::full(text));
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        return response;
    }
    let (status, text) = match request.uri().path() {
        "/healthz" => (StatusCode::OK, "ok\n"),
        "/readyz" if ready => (StatusCode::OK, "ready\n"),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        _ => (StatusCode::NOT_FOUND, "not found\n"),
    };
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

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
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::body::{self, Body};
use crate::connection::Phase;
use crate::state::State;

/// Serves health endpoints until the process ends. `phase` leaving
/// [`Phase::Serving`] turns `/readyz` to 503 the moment shutdown begins.
pub async fn serve(listener: TcpListener, phase: watch::Receiver<Phase>, state: Arc<State>) {
    let phase = Arc::new(phase);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let phase = Arc::clone(&phase);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let ready = *phase.borrow() == Phase::Serving;
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(answer(&request, ready, &state)) }
            });
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, error = %e, "admin connection ended with an error");
            }
        });
    }
}

fn answer(request: &Request<Incoming>, ready: bool, state: &State) -> Response<Body> {
    if request.uri().path() == "/metrics" {
        let text = state.metrics.render(&*state.idempotency);
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

//! The callback listener: job APIs POST a job's outcome here (dialect F),
//! on an address of its own so that clients never reach it. Each request
//! names a token; what a callback means, and whether it is genuine, is
//! the facade's ([`crate::facade::callback`]); this file is the HTTP
//! around it.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{self, Body};
use crate::edge::connection::{Phase, Settings};
use crate::facade::callback;
use crate::state::State;

/// Serves the callback listener until `listening` leaves serving (after the
/// client listener has drained: held requests may wait for callbacks to
/// the end of the grace period).
pub(crate) async fn serve(
    listener: TcpListener,
    listening: watch::Receiver<Phase>,
    settings: Arc<Settings>,
    state: Arc<State>,
) {
    crate::edge::accept::serve_each(listener, settings, MAX_CONNECTIONS, listening, |_peer| {
        let state = Arc::clone(&state);
        service_fn(move |request| {
            let state = Arc::clone(&state);
            async move { Ok::<_, Infallible>(take(&state, request).await) }
        })
    })
    .await;
}

/// Open callback connections at most.
const MAX_CONNECTIONS: usize = 1024;

/// One callback: 204 when it reached a waiting job, 404 when it did not
/// (unknown, used, or not signed as its route requires).
async fn take(state: &State, request: Request<Incoming>) -> Response<Body> {
    let reply = |status: StatusCode| {
        let mut response = Response::new(body::empty());
        *response.status_mut() = status;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    };
    let Some(token) = request
        .uri()
        .path()
        .strip_prefix(callback::PATH)
        .map(str::to_owned)
    else {
        return reply(StatusCode::NOT_FOUND);
    };
    if request.method() != Method::POST && request.method() != Method::PUT {
        return reply(StatusCode::METHOD_NOT_ALLOWED);
    }
    let route = match state.callbacks.route_of(&token).await {
        Ok(Some(route)) => route,
        Ok(None) => return reply(StatusCode::NOT_FOUND),
        Err(e) => {
            tracing::warn!(error = %e, "a callback could not be looked up");
            return reply(StatusCode::SERVICE_UNAVAILABLE);
        }
    };
    let generation = state.current();
    let Some(callback) = generation
        .config
        .routes
        .iter()
        .find(|r| *r.name == *route)
        .and_then(|r| r.facade.as_ref())
        .and_then(|f| f.callback.as_ref())
    else {
        return reply(StatusCode::NOT_FOUND);
    };
    let (parts, incoming) = request.into_parts();
    let reading = body::Reading {
        limit: callback::MAX_BODY as u64,
        buffer: callback::MAX_BODY as u64,
        idle: generation.config.server.body_read_timeout,
    };
    let bytes = match body::collect(incoming, &reading, None).await {
        Ok(bytes) => bytes,
        Err(e) => {
            let status = crate::error::Error::from(e).status();
            return reply(status);
        }
    };
    let Some(delivery) = callback::delivery(callback, &parts.headers, &bytes) else {
        return reply(StatusCode::NOT_FOUND);
    };
    match state.callbacks.deliver(&token, &route, delivery).await {
        Ok(true) => reply(StatusCode::NO_CONTENT),
        Ok(false) => reply(StatusCode::NOT_FOUND),
        Err(e) => {
            tracing::warn!(error = %e, "a callback could not be stored");
            reply(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

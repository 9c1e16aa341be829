//! The request pipeline every client connection runs, as tower layers
//! composed statically (see ARCHITECTURE.md, "The layer stack"):
//!
//! 1. [`correlate`]: ids, span, access line, and every failure becomes its
//!    answer here. Outermost, so that even a refusal by a layer below
//!    carries the request id and is logged once.
//! 2. [`guard`]: the head's size, the host and the canonical path. Before
//!    routing, so that no route ever sees a path that reads two ways.
//! 3. [`route`]: the route table, admission of held requests, and the
//!    handler (pass-through, facade, monitor). Innermost, because it is the
//!    first step that needs to know the route.
//!
//! [`callbacks`] is the callback listener's own, smaller service.

pub(crate) mod callbacks;
mod correlate;
mod exchange;
mod guard;
mod route;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;
use tower::ServiceBuilder;

use crate::body::Body;
use crate::error::Error;
use crate::state::{Generation, State};
use exchange::Exchange;

/// A request on its way in, past the correlation layer.
pub(crate) struct Call {
    /// The process: the one `Arc` the request's future holds of it.
    state: Arc<State>,
    /// Boxed: see `correlate`.
    request: Box<Request<Incoming>>,
    /// The configuration this request runs under, from start to end.
    generation: Arc<Generation>,
    started: Instant,
    exchange: Box<Exchange>,
}

/// What the inner layers give back: the outcome, and what the request
/// gathered on its way (for its answer, metrics and log line).
pub(crate) struct Answer {
    result: Result<Response<Body>, Error>,
    exchange: Box<Exchange>,
}

/// The service of one client connection from `peer`.
pub(crate) fn service(
    state: &Arc<State>,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future: Send + 'static,
> + Send
       + 'static {
    ServiceBuilder::new()
        .layer(correlate::CorrelateLayer::new(Arc::clone(state)))
        .layer(guard::GuardLayer)
        .service(route::Router::new(peer))
}

//! Routing, the innermost step: the request goes to the route it names
//! (first match in file order) and runs that route's handler: pass-through
//! ([`crate::proxy`]), the sync facade ([`crate::facade`], through its
//! idempotency latch when the request carries a key), or a Baton-served
//! job monitor. Admission sits here too, in front of the facade only: a
//! facade request takes a held place (or is shed with a 503) once its body
//! is read, since only held requests are what the limit counts.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;
use tower::Service;

use super::exchange::{Exchange, HeldMetric};
use super::{Answer, Call};
use crate::body::{self, Body};
use crate::config::{router, Route};
use crate::error::{ClientError, Error};
use crate::facade::continuation::{self, Refused};
use crate::facade::idempotency as idempotent;
use crate::facade::{self, JobEnv};
use crate::headers;
use crate::proxy::{self, Forward};
use crate::state::{Generation, State};
use crate::target::{self, TargetError};
use crate::telemetry::metrics::RouteLabel;

/// The innermost service: finds the route and runs its handler.
#[derive(Clone)]
pub(super) struct Router {
    peer: SocketAddr,
}

impl Router {
    pub(super) fn new(peer: SocketAddr) -> Router {
        Router { peer }
    }
}

/// A handler's future, boxed so that what hyper keeps for a request is
/// only as large as the handler actually running: a held facade request
/// does not carry room for a pass-through, nor the other way round.
type Handling = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>;

/// Where a request goes, decided before anything awaits.
enum Pick {
    Monitor(String),
    /// A pass-through route, by its place in the table.
    Proxy(usize),
    /// An async route, by its place in the table.
    Facade(usize),
    Refused(Error),
}

impl Service<Call> for Router {
    type Response = Answer;
    type Error = Infallible;
    type Future = Handling;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Handling {
        let Call {
            state,
            request,
            generation,
            started,
            mut exchange,
        } = call;
        let peer = self.peer;
        match pick(&generation, &request, &mut exchange) {
            Pick::Refused(err) => Box::pin(futures_util::future::ok(Answer {
                result: Err(err),
                exchange,
            })),
            Pick::Monitor(token) => Box::pin(async move {
                let request = unbox(request);
                let handler = monitor(
                    &state,
                    &generation,
                    peer,
                    request,
                    &token,
                    started,
                    &mut exchange,
                );
                let result = caught(handler).await;
                Ok(Answer { result, exchange })
            }),
            Pick::Proxy(index) => Box::pin(async move {
                let route = &generation.config.routes[index];
                let handler = async {
                    let cx = forward(&state, &generation, route, peer)?;
                    proxy::forward(cx, unbox(request)).await
                };
                let result = caught(handler).await;
                Ok(Answer { result, exchange })
            }),
            Pick::Facade(index) => Box::pin(async move {
                let route = &generation.config.routes[index];
                let handler = run_facade(
                    &state,
                    &generation,
                    route,
                    peer,
                    request,
                    started,
                    &mut exchange,
                );
                let result = caught(handler).await;
                Ok(Answer { result, exchange })
            }),
        }
    }
}

/// A panic in a handler becomes a 500, never a connection dropped bare:
/// the client would not know whether to retry. A combinator, not an
/// `async fn`: an `async fn` would keep room for the handler twice (as
/// passed, and inside the catch), and a held request keeps this for as
/// long as it waits.
fn caught(
    handler: impl Future<Output = Result<Response<Body>, Error>>,
) -> impl Future<Output = Result<Response<Body>, Error>> {
    AssertUnwindSafe(handler).catch_unwind().map(|caught| {
        caught.unwrap_or_else(|_| Err(Error::Internal("a request handler panicked".into())))
    })
}

/// Matches the request against the route table. `Host` is read here, and
/// only here: like every value of the request head it points into hyper's
/// read buffer, and a held request that kept it would keep that 8 KiB
/// buffer while hyper took another.
fn pick(generation: &Generation, request: &Request<Incoming>, exchange: &mut Exchange) -> Pick {
    let config = &generation.config;
    let path = request.uri().path();
    let host = request
        .headers()
        .get(http::header::HOST)
        .filter(|h| !h.is_empty())
        .and_then(|h| h.to_str().ok());
    let index = router::position(&config.routes, request.method(), host, path);
    if let Some(token) = path.strip_prefix(continuation::PREFIX) {
        if request.method() == Method::GET {
            return Pick::Monitor(token.to_owned());
        }
    }
    let Some(index) = index else {
        return Pick::Refused(
            ClientError::NoRoute {
                method: request.method().clone(),
                path: path.to_owned(),
            }
            .into(),
        );
    };
    let route = &config.routes[index];
    exchange.route = Some(Arc::clone(&route.name));
    tracing::Span::current().record("route", &*route.name);
    if !route.allow_encoded_slashes && target::has_encoded_slash(path) {
        return Pick::Refused(ClientError::BadTarget(TargetError::EncodedSlash).into());
    }
    match route.facade {
        Some(_) => Pick::Facade(index),
        None => Pick::Proxy(index),
    }
}

/// The facade: the whole body first, then a held place, then the job
/// (through the idempotency latch when the request carries a key).
/// An `async move` block rather than an `async fn`, so it keeps its
/// arguments once (an `async fn` keeps room for them twice).
#[allow(clippy::manual_async_fn)] // deliberate: see the doc comment
fn run_facade<'a>(
    state: &'a State,
    generation: &'a Generation,
    route: &'a Route,
    peer: SocketAddr,
    request: Box<Request<Incoming>>,
    started: Instant,
    exchange: &'a mut Exchange,
) -> impl Future<Output = Result<Response<Body>, Error>> + 'a {
    async move {
        // `pick` sends only async routes here.
        let Some(facade) = &route.facade else {
            return Err(Error::Internal(
                "a pass-through route reached the facade".into(),
            ));
        };
        let cx = forward(state, generation, route, peer)?;
        // The whole body is read before a held place is taken, within the
        // hold: a client that trickles its upload must not keep a place that
        // a ready request could use.
        let (parts, incoming) = unbox(request).into_parts();
        if proxy::content_length(&parts.headers).is_some_and(|n| n > cx.max_request_body()) {
            return Err(ClientError::BodyTooLarge {
                limit: cx.max_request_body(),
            }
            .into());
        }
        let (_, hold) = facade::hold(facade, &parts.headers, &mut exchange.extra);
        // The upload counts against the hold, but never gets less than one
        // body-read pause: `Prefer: wait=0` must not refuse a body that is
        // on its way.
        let upload = hold.max(cx.reading.idle);
        let mut drain = cx.drain.clone();
        let collecting = body::collect(incoming, &cx.reading, Some((started + upload, upload)));
        let bytes = tokio::select! {
            biased;
            bytes = Box::pin(collecting) => bytes?,
            _ = drain.wait_for(|now| *now) => return Err(Error::ShuttingDown),
        };
        let request = Request::from_parts(parts, bytes);
        hold_place(state, generation, route, exchange)?;
        let env = job_env(state, generation, route);
        if let Some(config) = &facade.idempotency {
            if let Some(key) = idempotent::key_of(config, &request)?.map(headers::detached) {
                let keyed = idempotent::Keyed {
                    config,
                    store: &state.idempotency,
                    key,
                };
                let caller = idempotent::Caller {
                    started,
                    extra: &mut exchange.extra,
                    leader: &mut exchange.leader,
                    role: &mut exchange.role,
                };
                return Box::pin(idempotent::run(cx, facade, keyed, request, env, caller)).await;
            }
        }
        let request = Box::new(request.map(body::full));
        Box::pin(facade::handle(
            cx,
            facade,
            request,
            started,
            env,
            &mut exchange.extra,
            &mut exchange.progress,
        ))
        .await
    }
}

/// Takes the request out of its box and frees the box now. Moving out of
/// a box in place (`*request`) would free it only when the binding goes
/// out of scope: at the end of the request, however long it is held.
#[allow(clippy::boxed_local)] // taking the box is the point
fn unbox<T>(boxed: Box<T>) -> T {
    *boxed
}

/// What the facade needs from the process and the configuration.
fn job_env<'a>(state: &'a State, generation: &'a Generation, route: &Route) -> JobEnv<'a> {
    JobEnv {
        continuation: &state.continuation,
        timing: generation.timings.get(&route.name).map(|t| &**t),
        callbacks: &state.callbacks,
        callback_base: generation.config.server.callback_url.as_deref(),
        callback_keep: route
            .facade
            .as_ref()
            .and_then(|f| f.idempotency.as_ref())
            .map_or(Duration::ZERO, |i| i.ttl)
            .max(generation.config.server.continuation_ttl),
        metrics: &state.metrics,
        record: None,
        drain: state.drain_signal(),
    }
}

/// A Baton-served job monitor: the token names the route and the job.
async fn monitor(
    state: &State,
    generation: &Generation,
    peer: SocketAddr,
    request: Request<Incoming>,
    token: &str,
    started: Instant,
    exchange: &mut Exchange,
) -> Result<Response<Body>, Error> {
    // Checked before anything else: a forged token costs no backend call.
    let ticket = state
        .continuation
        .open(token)
        .map_err(|refused| match refused {
            Refused::Unknown => ClientError::UnknownMonitor,
            Refused::Expired => ClientError::MonitorExpired,
        })?;
    let route = generation
        .config
        .routes
        .iter()
        .find(|r| *r.name == *ticket.route && r.facade.is_some())
        .ok_or(ClientError::UnknownMonitor)?;
    let Some(facade) = &route.facade else {
        return Err(ClientError::UnknownMonitor.into());
    };
    exchange.route = Some(Arc::clone(&route.name));
    tracing::Span::current().record("route", &*route.name);
    let cx = forward(state, generation, route, peer)?;
    hold_place(state, generation, route, exchange)?;
    let env = job_env(state, generation, route);
    let resumed = facade::resume(
        cx,
        facade,
        ticket,
        request.headers(),
        started,
        env,
        &mut exchange.extra,
        &mut exchange.progress,
    );
    // The head is not kept while the request is held (see `facade::resume`).
    drop(request);
    Box::pin(resumed).await
}

fn forward<'a>(
    state: &'a State,
    generation: &'a Generation,
    route: &'a Route,
    peer: SocketAddr,
) -> Result<Forward<'a>, Error> {
    let upstream = generation
        .upstreams
        .get(&route.backend.name)
        .ok_or_else(|| {
            Error::Internal(format!("no client for backend `{}`", route.backend.name).into())
        })?;
    let server = &generation.config.server;
    let limit = route.max_request_body.unwrap_or(server.max_request_body);
    let client = peer.ip().to_canonical();
    Ok(Forward {
        route,
        upstream,
        peer: SocketAddr::new(client, peer.port()),
        trusted_peer: server
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&client)),
        reading: body::Reading {
            limit,
            buffer: route
                .request_buffering
                .or(server.request_buffering)
                .unwrap_or(limit),
            idle: server.body_read_timeout,
        },
        buffer_budget: &state.buffer_budget,
        drain: state.drain_signal(),
        tunnels: &state.tunnels,
    })
}

/// Takes this request's place among those held, or sheds it.
fn hold_place(
    state: &State,
    generation: &Generation,
    route: &Route,
    exchange: &mut Exchange,
) -> Result<(), Error> {
    let overloaded = |scope: String, limit| Error::Overloaded { scope, limit };
    let held = state
        .held
        .enter()
        .ok_or_else(|| overloaded("Baton".to_owned(), generation.config.server.max_held))?;
    exchange._held[0] = Some(held);
    if let Some(gauge) = generation.route_held.get(&route.name) {
        let limit = route.facade.as_ref().and_then(|f| f.max_held).unwrap_or(0);
        let held = gauge
            .enter()
            .ok_or_else(|| overloaded(format!("route `{}`", route.name), limit))?;
        exchange._held[1] = Some(held);
    }
    let gauge = state.metrics.held.get_or_create(&RouteLabel {
        route: route.name.to_string(),
    });
    gauge.inc();
    exchange._held_metric = Some(HeldMetric(gauge.clone()));
    Ok(())
}

//! The per-request pipeline every connection runs: correlation ids, limits,
//! routing, then the route's handler (pass-through, facade, or a
//! continuation monitor); and the one place where a failed request turns
//! into its problem+json answer and its access-log line.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::HeaderMap;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;
use tracing::field::Empty;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::body::{self, Body};
use crate::config::Route;
use crate::correlation;
use crate::error::{BackendError, ClientError, Error};
use crate::headers::{self, Redacted, X_REQUEST_ID};
use crate::idempotency::request::{self as idempotent, Leader};
use crate::job::{self, continuation, JobEnv, Progress, Submission};
use crate::metrics::{Metrics, RouteLabel, RouteOutcome};
use crate::proxy::{self, Forward};
use crate::router;
use crate::state::{Generation, Held, State};

/// What a request gathers on its way, for its answer, its metrics and its
/// log line.
#[derive(Default)]
struct Exchange {
    route: Option<Arc<str>>,
    /// Headers for the answer, success or failure.
    extra: HeaderMap,
    /// Set when this request leads an idempotent job (and then holds the
    /// job's progress). Boxed: every request's future has room for this,
    /// and most never lead one.
    leader: Option<Box<Leader>>,
    /// The job's progress when this request does not lead one.
    progress: Progress,
    /// `latched` or `replayed`: the answer came from another request's job.
    role: Option<&'static str>,
    /// Places held by this request (Baton's and its route's), released
    /// when it ends.
    _held: [Option<Held>; 2],
    _held_metric: Option<HeldMetric>,
}

impl Exchange {
    fn progress(&self) -> &Progress {
        self.leader.as_ref().map_or(&self.progress, |l| &l.progress)
    }
}

/// One held request in the `requests_held` gauge.
struct HeldMetric(prometheus_client::metrics::gauge::Gauge);

impl Drop for HeldMetric {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The route label of requests that matched none.
static NO_ROUTE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("none"));

/// Handles one request; never fails, because every failure has an answer
/// (the `Result` is the one hyper's service wants).
///
/// An `async move` block rather than an `async fn`: an `async fn` keeps
/// room for its arguments twice (as passed, and as moved into its body),
/// and hyper keeps this future for the request's whole life, however long
/// it is held. For the same reason the request travels boxed: a future
/// keeps room for what it captured after it has passed it on, and the
/// request, passed down three layers, would be kept three times.
#[allow(clippy::manual_async_fn)] // deliberate: see the doc comment
pub fn handle(
    state: Arc<State>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> impl Future<Output = Result<Response<Body>, Infallible>> {
    let mut request = Box::new(request);
    async move {
        let started = Instant::now();
        let request_id = correlation::request_id(request.headers_mut());
        let traceparent = correlation::traceparent(request.headers_mut());
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        // A request runs under the configuration it arrived with, whatever a
        // reload does meanwhile.
        let generation = state.current();
        let span = info_span!(
            "request",
            request_id = request_id.to_str().unwrap_or_default(),
            route = Empty,
            job_id = Empty,
            outcome = Empty,
        );
        debug!(parent: &span, %method, %path, headers = ?Redacted::new(request.headers(), &generation.config.server.redact_headers), "request");
        let mut exchange = Exchange::default();
        let (mut response, outcome, reached_backend) =
            match dispatch(&state, &generation, peer, request, started, &mut exchange)
                .instrument(span.clone())
                .await
            {
                Ok(response) => (response, "ok", true),
                Err(err) => {
                    if err.status().is_server_error() {
                        warn!(parent: &span, error = %crate::error::chain(&err), "request failed");
                    }
                    let (outcome, reached_backend) = (err.slug(), !never_reached_backend(&err));
                    (
                        err.into_response(request_id.to_str().unwrap_or_default()),
                        outcome,
                        reached_backend,
                    )
                }
            };
        span.record("outcome", outcome);
        let route = exchange
            .route
            .clone()
            .unwrap_or_else(|| Arc::clone(&NO_ROUTE));
        let (job_id, polls) = record_job(&state.metrics, &route, &exchange, outcome);
        if let Some(leader) = exchange.leader.take() {
            // Boxed: only the requests that lead an idempotent job need room
            // for it.
            response = Box::pin(leader.finish(response, reached_backend)).await;
        }
        let headers = response.headers_mut();
        headers.extend(std::mem::take(&mut exchange.extra));
        headers.insert(X_REQUEST_ID, request_id.clone());
        headers.insert(correlation::TRACEPARENT, traceparent);
        let elapsed = started.elapsed();
        let labels = RouteOutcome { route, outcome };
        state.metrics.requests.get_or_create(&labels).inc();
        state
            .metrics
            .request_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        info!(
            target: "baton::access",
            parent: &span,
            %method,
            %path,
            status = response.status().as_u16(),
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            route = %labels.route,
            request_id = request_id.to_str().unwrap_or_default(),
            job_id = job_id.as_deref().unwrap_or("-"),
            polls,
            outcome,
        );
        Ok(response)
    }
}

/// Counts what happened to the request's job; returns its id and polls
/// for the access log.
fn record_job(
    metrics: &Metrics,
    route: &str,
    exchange: &Exchange,
    outcome: &str,
) -> (Option<String>, u32) {
    if let Some(role) = exchange.role {
        metrics.job(route, role);
    }
    let progress = exchange.progress();
    let Submission::Accepted(ticket) = &progress.submit else {
        return (None, progress.polls);
    };
    if !progress.resumed {
        metrics.job(route, "submitted");
    }
    let event = match outcome {
        _ if progress.job_goes_on => Some("timed_out"),
        _ if progress.succeeded => Some("succeeded"),
        "job-failed" | "job-gone" => Some("failed"),
        "job-canceled" => Some("canceled"),
        "job-timeout" => Some("timed_out"),
        _ => None,
    };
    if let Some(event) = event {
        metrics.job(route, event);
    }
    (Some(ticket.job_id.clone()), progress.polls)
}

/// Failures that happen before a request could reach a backend: retrying
/// them cannot repeat anything.
fn never_reached_backend(err: &Error) -> bool {
    matches!(
        err,
        Error::Client(_)
            | Error::Overloaded { .. }
            | Error::Backend {
                kind: BackendError::Refused(_)
                    | BackendError::ConnectTimeout(_)
                    | BackendError::Tls { .. }
                    | BackendError::Connect { .. },
                ..
            }
    )
}

/// Like [`handle`], an `async move` block so it keeps its arguments once.
#[allow(clippy::manual_async_fn)] // deliberate: see the doc comment
fn dispatch<'a>(
    state: &'a State,
    generation: &'a Generation,
    peer: SocketAddr,
    request: Box<Request<Incoming>>,
    started: Instant,
    exchange: &'a mut Exchange,
) -> impl Future<Output = Result<Response<Body>, Error>> + 'a {
    async move {
        let config = &generation.config;
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
        if let Some(token) = request.uri().path().strip_prefix(continuation::PREFIX) {
            if request.method() == Method::GET {
                let token = token.to_owned();
                return Box::pin(monitor(
                    state,
                    generation,
                    peer,
                    unbox(request),
                    &token,
                    started,
                    exchange,
                ))
                .await;
            }
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
        exchange.route = Some(Arc::clone(&route.name));
        tracing::Span::current().record("route", &*route.name);
        let cx = forward(state, generation, route, peer)?;
        // Each handler is boxed, so this future (which hyper keeps for the
        // whole request) is only as large as the handler actually running:
        // a held facade request does not carry room for a pass-through.
        let Some(facade) = &route.facade else {
            return Box::pin(proxy::forward(cx, unbox(request))).await;
        };
        hold_place(state, generation, route, exchange)?;
        let env = job_env(state, generation, route);
        if let Some(config) = &facade.idempotency {
            if let Some(key) = idempotent::key_of(config, &request)?.cloned() {
                return Box::pin(idempotent::run(
                    cx,
                    facade,
                    config,
                    &state.idempotency,
                    unbox(request),
                    key,
                    started,
                    env,
                    &mut exchange.extra,
                    &mut exchange.leader,
                    &mut exchange.role,
                ))
                .await;
            }
        }
        let request = Box::new(unbox(request).map(body::stream));
        Box::pin(job::handle(
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
        .ok_or(ClientError::UnknownMonitor)?;
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
    Box::pin(job::resume(
        cx,
        facade,
        ticket,
        request.headers(),
        started,
        env,
        &mut exchange.extra,
        &mut exchange.progress,
    ))
    .await
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
    Ok(Forward {
        route,
        upstream,
        peer,
        max_request_body: route
            .max_request_body
            .unwrap_or(generation.config.server.max_request_body),
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

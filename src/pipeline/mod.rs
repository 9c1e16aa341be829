//! The per-request pipeline every connection runs: correlation ids, limits,
//! routing, then the route's handler (pass-through, facade, or a
//! continuation monitor); and the one place where a failed request turns
//! into its problem+json answer and its access-log line.

pub mod callbacks;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use http::header::{HeaderMap, HeaderValue};
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;
use tokio::time::Instant;
use tracing::field::Empty;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::body::{self, Body};
use crate::config::router;
use crate::config::Route;
use crate::error::{ClientError, Error};
use crate::facade::continuation::{self, Refused};
use crate::facade::idempotency::{self as idempotent, Leader};
use crate::facade::{self, JobEnv, Progress, Submission};
use crate::headers::{self, Redacted, X_REQUEST_ID};
use crate::proxy::{self, Forward};
use crate::state::{Generation, Held, State};
use crate::target::{self, TargetError};
use crate::telemetry::correlation;
use crate::telemetry::metrics::{Metrics, RouteLabel, RouteOutcome};

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
    /// What the access line needs; still here when the request's future is
    /// dropped (the client went away), so that case is logged and counted
    /// too. Boxed: most of it is only read once, at the end.
    line: Option<Box<AccessLine>>,
}

/// The request as its access line names it.
struct AccessLine {
    state: Arc<State>,
    span: tracing::Span,
    method: Method,
    path: String,
    request_id: HeaderValue,
    started: Instant,
}

/// Shed requests, for their warning: one line a second at most, with the
/// count since the last, so an overload does not flood the log too.
struct ShedLog {
    since_last: std::sync::atomic::AtomicU64,
    last: std::sync::Mutex<Option<Instant>>,
}

static SHED: ShedLog = ShedLog {
    since_last: std::sync::atomic::AtomicU64::new(0),
    last: std::sync::Mutex::new(None),
};

impl ShedLog {
    fn note(&self, span: &tracing::Span) {
        use std::sync::atomic::Ordering;
        self.since_last.fetch_add(1, Ordering::Relaxed);
        // Whoever holds the lock writes the line; the others just count.
        let Ok(mut last) = self.last.try_lock() else {
            return;
        };
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < std::time::Duration::from_secs(1)) {
            return;
        }
        *last = Some(now);
        let shed = self.since_last.swap(0, Ordering::Relaxed);
        warn!(parent: span, shed, "shedding requests: too many held (this many since the last such line)");
    }
}

/// The outcome of a request whose client went away before its answer: 499,
/// as nginx logs it.
const CLIENT_GONE: &str = "client-gone";

impl Drop for Exchange {
    fn drop(&mut self) {
        let Some(line) = self.line.take() else {
            return;
        };
        let route = self.route.clone().unwrap_or_else(|| Arc::clone(&NO_ROUTE));
        let (job_id, polls) = record_job(&line.state.metrics, &route, self, CLIENT_GONE);
        line.log(route, 499, CLIENT_GONE, job_id.as_deref(), polls);
    }
}

impl AccessLine {
    /// Counts the request and writes its access line.
    fn log(
        &self,
        route: Arc<str>,
        status: u16,
        outcome: &'static str,
        job_id: Option<&str>,
        polls: u32,
    ) {
        let elapsed = self.started.elapsed();
        let labels = RouteOutcome { route, outcome };
        let metrics = &self.state.metrics;
        metrics.requests.get_or_create(&labels).inc();
        metrics
            .request_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        info!(
            target: "baton::access",
            parent: &self.span,
            method = %self.method,
            path = %self.path,
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            route = %labels.route,
            request_id = self.request_id.to_str().unwrap_or_default(),
            job_id = job_id.unwrap_or("-"),
            polls,
            outcome,
        );
    }
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

/// The service of one client connection from `peer`.
pub fn service(
    state: &Arc<State>,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future: Send + 'static,
> + Send
       + 'static {
    let state = Arc::clone(state);
    // The handler's own future, not one wrapped in an `async` block that
    // would keep room for the request beside the handler's copy of it.
    hyper::service::service_fn(move |request| handle(Arc::clone(&state), peer, request))
}

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
        exchange.line = Some(Box::new(AccessLine {
            state: Arc::clone(&state),
            span: span.clone(),
            method,
            path,
            request_id: request_id.clone(),
            started,
        }));
        let (mut response, mut outcome) =
            // A panic below must still answer (a 500), never drop the
            // connection bare: the client would not know whether to retry.
            match AssertUnwindSafe(
                dispatch(&state, &generation, peer, request, started, &mut exchange)
                    .instrument(span.clone()),
            )
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(Error::Internal("a request handler panicked".into())))
            {
                Ok(response) => (response, "ok"),
                Err(err) => {
                    if let Error::Overloaded { .. } = err {
                        SHED.note(&span);
                    } else if err.status().is_server_error() {
                        warn!(parent: &span, error = %crate::error::chain(&err), "request failed");
                    }
                    let outcome = err.slug();
                    (
                        err.into_response(request_id.to_str().unwrap_or_default()),
                        outcome,
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
            response = match Box::pin(leader.finish(response)).await {
                Ok(response) => response,
                Err(err) => {
                    warn!(parent: &span, error = %crate::error::chain(&err), "request failed");
                    outcome = err.slug();
                    err.into_response(request_id.to_str().unwrap_or_default())
                }
            };
        }
        let headers = response.headers_mut();
        headers.extend(std::mem::take(&mut exchange.extra));
        headers.insert(X_REQUEST_ID, request_id);
        headers.insert(correlation::TRACEPARENT, traceparent);
        if let Some(line) = exchange.line.take() {
            line.log(
                route,
                response.status().as_u16(),
                outcome,
                job_id.as_deref(),
                polls,
            );
        }
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
        let mut request = request;
        // The route is found in this block so that `host`, which points into
        // hyper's read buffer like every value of the request head, is gone
        // before anything awaits: a held request that kept it would keep
        // that 8 KiB buffer, and hyper would take another.
        let route = {
            let host = checked_host(&request)?;
            if let (Some(host), Some(_)) = (&host, request.uri().authority()) {
                // An absolute-form target's authority wins over `Host` (RFC
                // 9112 §3.2.2); from here on `Host` says what the client
                // asked for.
                request
                    .headers_mut()
                    .insert(http::header::HOST, host.clone());
            }
            normalize_target(&mut request)?;
            let host = host.as_ref().and_then(|h| h.to_str().ok());
            router::find(&config.routes, request.method(), host, request.uri().path())
        };
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
        let route = route.ok_or_else(|| ClientError::NoRoute {
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
        })?;
        exchange.route = Some(Arc::clone(&route.name));
        tracing::Span::current().record("route", &*route.name);
        if !route.allow_encoded_slashes && target::has_encoded_slash(request.uri().path()) {
            return Err(ClientError::BadTarget(TargetError::EncodedSlash).into());
        }
        let cx = forward(state, generation, route, peer)?;
        // Each handler is boxed, so this future (which hyper keeps for the
        // whole request) is only as large as the handler actually running:
        // a held facade request does not carry room for a pass-through.
        let Some(facade) = &route.facade else {
            return Box::pin(proxy::forward(cx, unbox(request))).await;
        };
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

/// The host the client asked for: an absolute-form target's (or HTTP/2's
/// `:authority`), else `Host`. An HTTP/1.1 request without `Host`, with
/// two, or with one that is not a plain `host[:port]` is refused (RFC 9112
/// §3.2), as is an HTTP/2 request whose `Host` names another authority.
fn checked_host<B>(request: &Request<B>) -> Result<Option<HeaderValue>, ClientError> {
    let bad = |why: &str| ClientError::BadRequest(why.to_owned());
    let mut fields = request.headers().get_all(http::header::HOST).iter();
    let field = fields.next();
    if fields.next().is_some() {
        return Err(bad("the request has more than one Host field"));
    }
    let field = match field {
        None => None,
        Some(value) if value.is_empty() => None,
        Some(value) => {
            let valid = value.to_str().ok().is_some_and(is_host_and_port);
            if !valid {
                return Err(bad(
                    "the Host field is not a host name with an optional port",
                ));
            }
            Some(value)
        }
    };
    if request.version() == Version::HTTP_11 && request.headers().get(http::header::HOST).is_none()
    {
        return Err(bad("an HTTP/1.1 request needs a Host field"));
    }
    let Some(authority) = request.uri().authority() else {
        return Ok(field.cloned());
    };
    if authority.as_str().contains('@') {
        return Err(bad("the request target carries credentials"));
    }
    if request.version() == Version::HTTP_2
        && field.is_some_and(|f| {
            !f.as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes())
        })
    {
        return Err(bad("Host and :authority name different hosts"));
    }
    HeaderValue::from_str(authority.as_str())
        .map(Some)
        .map_err(|_| bad("the request target's authority is not a valid host"))
}

/// `host[:port]` as RFC 9110 §7.2 allows it in `Host`: a bracketed IP
/// literal or a registered name (unreserved, sub-delims, `%`-escapes, no
/// `@`), then an optional port of digits that fit 16 bits. Checked byte by
/// byte, without the allocation a parse would cost every request.
fn is_host_and_port(text: &str) -> bool {
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let Some((literal, after)) = rest.split_once(']') else {
                return false;
            };
            let port = match after {
                "" => "",
                after => match after.strip_prefix(':') {
                    Some(port) => port,
                    None => return false,
                },
            };
            let literal_ok = !literal.is_empty()
                && literal
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            (literal_ok, port)
        }
        None => {
            let (name, port) = text.rsplit_once(':').unwrap_or((text, ""));
            let name_ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b));
            (name_ok, port)
        }
    };
    host && (port.is_empty()
        || (port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok()))
}

/// Puts the request's path in its canonical form ([`target`]), so routing,
/// rewriting and the backend all read the same one.
fn normalize_target<B>(request: &mut Request<B>) -> Result<(), ClientError> {
    let path = match target::normalize(request.uri().path(), true)? {
        std::borrow::Cow::Borrowed(_) => return Ok(()),
        std::borrow::Cow::Owned(path) => path,
    };
    let uri = request.uri();
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|_| ClientError::BadTarget(TargetError::BadEscape))?,
    );
    *request.uri_mut() =
        http::Uri::from_parts(parts).map_err(|_| ClientError::BadTarget(TargetError::BadEscape))?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_fields() {
        for good in [
            "example.com",
            "example.com:8080",
            "example.com:",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:443",
            "a-b_c~d",
        ] {
            assert!(is_host_and_port(good), "{good}");
        }
        for bad in [
            "", "a b", "x@y", "x:abc", "x:99999", "x/y", "[::1", "[]:80", "[::1]x", ":80", "a\\b",
        ] {
            assert!(!is_host_and_port(bad), "{bad}");
        }
    }
}

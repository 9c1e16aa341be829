//! The outermost layer: every request gets its correlation ids, its span
//! and its access-log line here, and every failure from the layers inside
//! becomes its problem+json answer here, once ([`crate::error`] decides
//! the status). An idempotent leader leaves its answer to the store on the
//! way out.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::FutureExt;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;
use tower::{Layer, Service};
use tracing::field::Empty;
use tracing::{debug, info_span, warn, Instrument};

use super::exchange::{record_job, AccessLine, Exchange, NO_ROUTE, SHED};
use super::{Answer, Call};
use crate::body::Body;
use crate::error::Error;
use crate::headers::{Redacted, X_REQUEST_ID};
use crate::state::State;
use crate::telemetry::correlation;

/// Gives each request its ids and turns whatever the inner layers answer
/// into the client's response.
#[derive(Clone)]
pub(super) struct Correlate<S> {
    state: Arc<State>,
    inner: S,
}

pub(super) struct CorrelateLayer {
    state: Arc<State>,
}

impl CorrelateLayer {
    pub(super) fn new(state: Arc<State>) -> CorrelateLayer {
        CorrelateLayer { state }
    }
}

impl<S> Layer<S> for CorrelateLayer {
    type Service = Correlate<S>;

    fn layer(&self, inner: S) -> Correlate<S> {
        Correlate {
            state: Arc::clone(&self.state),
            inner,
        }
    }
}

/// The request's whole future, boxed once: hyper keeps it for as long as
/// the request lives, and its type (an `async` block) has no name.
type Answering = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// The outermost layer is hyper's service itself: hyper calls it through
/// `&self`, and each request gets a copy of the layers inside (a route's
/// peer address: nothing shared is counted per request but the one `Arc`
/// of the process that the request's future holds).
impl<S> hyper::service::Service<Request<Incoming>> for Correlate<S>
where
    S: Service<Call, Response = Answer, Error = Infallible> + Clone,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Answering;

    fn call(&self, request: Request<Incoming>) -> Answering {
        // Boxed: passed down the layers, the head would otherwise be kept
        // once per layer for the request's whole life.
        let mut request = Box::new(request);
        let started = Instant::now();
        let request_id = correlation::request_id(request.headers_mut());
        let traceparent = correlation::traceparent(request.headers_mut());
        // A request runs under the configuration it arrived with, whatever
        // a reload does meanwhile.
        let generation = self.state.current();
        let span = info_span!(
            "request",
            request_id = request_id.to_str().unwrap_or_default(),
            route = Empty,
            job_id = Empty,
            outcome = Empty,
        );
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        debug!(parent: &span, %method, %path, headers = ?Redacted::new(request.headers(), &generation.config.server.redact_headers), "request");
        let mut exchange = Exchange::default();
        exchange.line = Some(Box::new(AccessLine {
            state: Arc::clone(&self.state),
            span: span.clone(),
            method,
            path,
            request_id: request_id.clone(),
            started,
        }));
        let call = Call {
            state: Arc::clone(&self.state),
            request,
            generation,
            started,
            exchange,
        };
        // The inner layers decide synchronously (limits, host, route), so
        // they run inside the span, and a panic there still answers. They
        // are always ready (admission sheds with a 503 rather than wait),
        // so readiness is not polled.
        let mut inner = self.inner.clone();
        let inner =
            span.in_scope(|| std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(call))).ok());
        Box::pin(respond(inner, span, request_id, traceparent))
    }
}

/// Waits for the inner layers' answer and makes it the client's: a
/// failure becomes its problem+json, an idempotent leader leaves its
/// answer to the store, the correlation headers go on, the access line is
/// written. An `async move` block rather than an `async fn`, so it keeps
/// its arguments once.
#[allow(clippy::manual_async_fn)] // deliberate: see the doc comment
fn respond<F>(
    inner: Option<F>,
    span: tracing::Span,
    request_id: HeaderValue,
    traceparent: HeaderValue,
) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send
where
    F: Future<Output = Result<Answer, Infallible>> + Send,
{
    async move {
        let answer = match inner {
            Some(inner) => AssertUnwindSafe(inner.instrument(span.clone()))
                .catch_unwind()
                .await
                .ok()
                .map(|Ok(answer)| answer),
            None => None,
        };
        let Answer {
            result,
            mut exchange,
        } = answer.unwrap_or_else(|| Answer {
            result: Err(Error::Internal("a request handler panicked".into())),
            exchange: Exchange::default(),
        });
        let (mut response, mut outcome) = match result {
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
        // The access line holds the process (a panic may have lost it, and
        // with it the request's counts; the answer still goes out).
        let (job_id, polls) = match &exchange.line {
            Some(line) => record_job(&line.state.metrics, &route, &exchange, outcome),
            None => (None, 0),
        };
        if let Some(leader) = exchange.leader.take() {
            // Boxed: only the requests that lead an idempotent job need
            // room for it.
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

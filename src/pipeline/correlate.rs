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
use std::task::{ready, Context, Poll};

use futures_util::future::CatchUnwind;
use futures_util::FutureExt;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;
use tower::{Layer, Service};
use tracing::field::Empty;
use tracing::instrument::Instrumented;
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
    type Future = Answering<S::Future>;

    fn call(&self, request: Request<Incoming>) -> Answering<S::Future> {
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
        let mut exchange = Box::<Exchange>::default();
        exchange.line = Some(AccessLine {
            state: Arc::clone(&self.state),
            span: span.clone(),
            method,
            path,
            request_id: request_id.clone(),
            started,
        });
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
        Answering {
            inner: inner
                .map(|inner| AssertUnwindSafe(inner.instrument(span.clone())).catch_unwind()),
            finishing: None,
            out: Outgoing {
                span,
                request_id,
                traceparent,
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The request's whole future, held inline by hyper (no allocation of
    /// its own): the inner layers' answer, then, for an idempotent leader,
    /// the store's part, then the response as the client gets it.
    pub(crate) struct Answering<F> {
        #[pin]
        inner: Option<CatchUnwind<AssertUnwindSafe<Instrumented<F>>>>,
        // Boxed: only the requests that lead an idempotent job need room
        // for it.
        finishing: Option<Box<Finishing>>,
        out: Outgoing,
    }
}

/// What every answer carries out, whatever happened inside.
struct Outgoing {
    span: tracing::Span,
    request_id: HeaderValue,
    traceparent: HeaderValue,
}

/// An idempotent leader leaving its answer to the store.
struct Finishing {
    storing: Pin<Box<dyn Future<Output = Result<Response<Body>, Error>> + Send>>,
    settled: Settled,
}

/// The request's outcome, counted, waiting for its response to go out.
struct Settled {
    exchange: Box<Exchange>,
    outcome: &'static str,
    route: Arc<str>,
    job_id: Option<String>,
    polls: u32,
}

impl<F> Future for Answering<F>
where
    F: Future<Output = Result<Answer, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if this.finishing.is_none() {
            // `None`: the inner layers panicked, before or after answering.
            let answer = match this.inner.as_mut().as_pin_mut() {
                Some(inner) => match ready!(inner.poll(cx)) {
                    Ok(Ok(answer)) => Some(answer),
                    Err(_) => None,
                },
                None => None,
            };
            this.inner.set(None);
            let (response, mut settled) = settle(answer, this.out);
            match settled.exchange.leader.take() {
                None => return Poll::Ready(Ok(this.out.complete(response, settled))),
                Some(leader) => {
                    *this.finishing = Some(Box::new(Finishing {
                        storing: Box::pin(leader.finish(response)),
                        settled,
                    }))
                }
            }
        }
        let Some(finishing) = this.finishing.as_mut() else {
            return Poll::Pending;
        };
        let stored = ready!(finishing.storing.as_mut().poll(cx));
        let Some(finishing) = this.finishing.take() else {
            return Poll::Pending;
        };
        let mut settled = finishing.settled;
        let response = match stored {
            Ok(response) => response,
            Err(err) => {
                let span = &this.out.span;
                warn!(parent: span, error = %crate::error::chain(&err), "request failed");
                settled.outcome = err.slug();
                err.into_response(this.out.request_id.to_str().unwrap_or_default())
            }
        };
        Poll::Ready(Ok(this.out.complete(response, settled)))
    }
}

/// The inner layers' answer made the client's: a failure becomes its
/// problem+json, and the request's job is counted.
fn settle(answer: Option<Answer>, out: &Outgoing) -> (Response<Body>, Settled) {
    let Answer { result, exchange } = answer.unwrap_or_else(|| Answer {
        result: Err(Error::Internal("a request handler panicked".into())),
        exchange: Box::default(),
    });
    let span = &out.span;
    let (response, outcome) = match result {
        Ok(response) => (response, "ok"),
        Err(err) => {
            if let Error::Overloaded { .. } = err {
                SHED.note(span);
            } else if err.status().is_server_error() {
                warn!(parent: span, error = %crate::error::chain(&err), "request failed");
            }
            let outcome = err.slug();
            (
                err.into_response(out.request_id.to_str().unwrap_or_default()),
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
    let settled = Settled {
        exchange,
        outcome,
        route,
        job_id,
        polls,
    };
    (response, settled)
}

impl Outgoing {
    /// The correlation headers and whatever the request gathered go on the
    /// response, and the access line is written.
    fn complete(&mut self, mut response: Response<Body>, mut settled: Settled) -> Response<Body> {
        let headers = response.headers_mut();
        headers.extend(std::mem::take(&mut settled.exchange.extra));
        let empty = || HeaderValue::from_static("");
        headers.insert(
            X_REQUEST_ID,
            std::mem::replace(&mut self.request_id, empty()),
        );
        headers.insert(
            correlation::TRACEPARENT,
            std::mem::replace(&mut self.traceparent, empty()),
        );
        if let Some(line) = settled.exchange.line.take() {
            line.log(
                settled.route,
                response.status().as_u16(),
                settled.outcome,
                settled.job_id.as_deref(),
                settled.polls,
            );
        }
        response
    }
}

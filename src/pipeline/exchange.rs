//! What one request gathers on its way through the pipeline (its route,
//! the headers its answer will carry, its job's progress, the held places
//! it takes) and the access-log line and metrics it leaves at the end,
//! including when its client goes away first.

use std::sync::Arc;

use http::header::{HeaderMap, HeaderValue};
use http::Method;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::facade::idempotency::Leader;
use crate::facade::{Progress, Submission};
use crate::state::{Held, State};
use crate::telemetry::metrics::{Metrics, RouteOutcome};

/// What a request gathers on its way, for its answer, its metrics and its
/// log line. It travels boxed through the layers (`Box<Exchange>`), so
/// that handing it on moves a pointer, not the whole record.
#[derive(Default)]
pub(super) struct Exchange {
    pub(super) route: Option<Arc<str>>,
    /// Headers for the answer, success or failure.
    pub(super) extra: HeaderMap,
    /// Set when this request leads an idempotent job (and then holds the
    /// job's progress). Boxed: every request's future has room for this,
    /// and most never lead one.
    pub(super) leader: Option<Box<Leader>>,
    /// The job's progress when this request does not lead one.
    pub(super) progress: Progress,
    /// `latched` or `replayed`: the answer came from another request's job.
    pub(super) role: Option<&'static str>,
    /// Places held by this request (Baton's and its route's), released
    /// when it ends.
    pub(super) _held: [Option<Held>; 2],
    pub(super) _held_metric: Option<HeldMetric>,
    /// What the access line needs; still here when the request's future is
    /// dropped (the client went away), so that case is logged and counted
    /// too.
    pub(super) line: Option<AccessLine>,
}

/// The request as its access line names it.
pub(super) struct AccessLine {
    pub(super) state: Arc<State>,
    pub(super) span: tracing::Span,
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) request_id: HeaderValue,
    pub(super) started: Instant,
}

/// Shed requests, for their warning: one line a second at most, with the
/// count since the last, so an overload does not flood the log too.
pub(super) struct ShedLog {
    since_last: std::sync::atomic::AtomicU64,
    last: std::sync::Mutex<Option<Instant>>,
}

pub(super) static SHED: ShedLog = ShedLog {
    since_last: std::sync::atomic::AtomicU64::new(0),
    last: std::sync::Mutex::new(None),
};

impl ShedLog {
    pub(super) fn note(&self, span: &tracing::Span) {
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
        // Dropped by a panic on its way (the client still gets a 500), or
        // because the client went away.
        let (status, outcome) = match std::thread::panicking() {
            true => (500, "internal"),
            false => (499, CLIENT_GONE),
        };
        let (job_id, polls) = record_job(&line.state.metrics, &route, self, outcome);
        line.log(route, status, outcome, job_id.as_deref(), polls);
    }
}

impl AccessLine {
    /// Counts the request and writes its access line.
    pub(super) fn log(
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
pub(super) struct HeldMetric(pub(super) prometheus_client::metrics::gauge::Gauge);

impl Drop for HeldMetric {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The route label of requests that matched none.
pub(super) static NO_ROUTE: std::sync::LazyLock<Arc<str>> =
    std::sync::LazyLock::new(|| Arc::from("none"));

/// Counts what happened to the request's job; returns its id and polls
/// for the access log.
pub(super) fn record_job(
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

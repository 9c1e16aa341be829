//! What Baton counts, for Prometheus: served on the admin listener as
//! `/metrics` in the OpenMetrics text format.
//!
//! Labels are route and backend names from the configuration and small
//! fixed vocabularies (outcome slugs, job events, error kinds) — never a
//! raw path or header, so series stay few however clients behave.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of every request: shared and static text, so counting a
/// request allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteOutcome {
    pub(crate) route: Arc<str>,
    pub(crate) outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabel {
    pub(crate) route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct JobEvent {
    pub(crate) route: String,
    /// submitted, succeeded, failed, timed_out, canceled, latched, replayed.
    pub(crate) event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteKind {
    pub(crate) route: String,
    pub(crate) kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BackendLabel {
    pub(crate) backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BackendKind {
    pub(crate) backend: String,
    pub(crate) kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReloadResult {
    pub(crate) result: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latencies from a millisecond to about nine minutes.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) requests: Family<RouteOutcome, Counter>,
    pub(crate) request_duration: Histograms<RouteOutcome>,
    pub(crate) held: Family<RouteLabel, Gauge>,
    pub(crate) jobs: Family<JobEvent, Counter>,
    pub(crate) polls: Family<RouteLabel, Counter>,
    pub(crate) poll_errors: Family<RouteKind, Counter>,
    pub(crate) completion_delay: Histograms<RouteLabel>,
    pub(crate) backend_duration: Histograms<BackendLabel>,
    pub(crate) backend_errors: Family<BackendKind, Counter>,
    pub(crate) reloads: Family<ReloadResult, Counter>,
    idempotency_records: Gauge,
    idempotency_evictions: Counter,
    /// Evictions already added to the counter, read from the store.
    evictions_seen: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("baton");
        let metrics = Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(seconds),
            held: Family::default(),
            jobs: Family::default(),
            polls: Family::default(),
            poll_errors: Family::default(),
            completion_delay: Family::new_with_constructor(seconds),
            backend_duration: Family::new_with_constructor(seconds),
            backend_errors: Family::default(),
            reloads: Family::default(),
            idempotency_records: Gauge::default(),
            idempotency_evictions: Counter::default(),
            evictions_seen: AtomicU64::new(0),
            registry: Registry::default(),
        };
        metrics.register(&mut registry);
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Names and explains every series, in the order `/metrics` lists
    /// them.
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "requests",
            "Requests by route and outcome",
            self.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to answer, by route and outcome",
            self.request_duration.clone(),
        );
        registry.register(
            "requests_held",
            "Facade requests held now, by route",
            self.held.clone(),
        );
        registry.register(
            "jobs",
            "Job events by route: submitted, succeeded, failed, timed_out, canceled, latched, replayed",
            self.jobs.clone(),
        );
        registry.register("polls", "Status polls sent, by route", self.polls.clone());
        registry.register(
            "poll_errors",
            "Status polls that failed transiently, by route and kind",
            self.poll_errors.clone(),
        );
        registry.register(
            "completion_delay_seconds",
            "Time from the first status saying done to the answer, by route",
            self.completion_delay.clone(),
        );
        registry.register(
            "backend_call_duration_seconds",
            "Time to a backend's response head, by backend",
            self.backend_duration.clone(),
        );
        registry.register(
            "backend_errors",
            "Backend calls that failed, by backend and kind",
            self.backend_errors.clone(),
        );
        registry.register(
            "idempotency_records",
            "Idempotency records held",
            self.idempotency_records.clone(),
        );
        registry.register(
            "idempotency_evictions",
            "Stored answers evicted to stay within the memory bound",
            self.idempotency_evictions.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads by result",
            self.reloads.clone(),
        );
    }

    pub(crate) fn job(&self, route: &str, event: &str) {
        self.jobs
            .get_or_create(&JobEvent {
                route: route.to_owned(),
                event: event.to_owned(),
            })
            .inc();
    }

    pub(crate) fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads
            .get_or_create(&ReloadResult {
                result: result.to_owned(),
            })
            .inc();
    }

    /// The text exposition, with the idempotency store's figures (its
    /// records, and its evictions so far) read now.
    pub(crate) fn render(&self, records: usize, evictions: u64) -> String {
        self.idempotency_records.set(records as i64);
        let seen = self.evictions_seen.swap(evictions, Ordering::AcqRel);
        self.idempotency_evictions
            .inc_by(evictions.saturating_sub(seen));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

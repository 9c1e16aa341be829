//! What lives as long as the process, as opposed to one request: the
//! current configuration generation (swapped whole on reload), the held
//! request gauges, the drain signal, the idempotency store and the
//! continuation key.
//!
//! A request loads the generation once when it starts and keeps that
//! `Arc` to its end, so a reload never changes the route a held request
//! runs under; new requests see the new routes at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::facade::adaptive::Timing;
use crate::facade::callback::Callbacks;
use crate::facade::continuation::Continuation;
use crate::proxy::upstream::{TrustError, Upstreams};
use crate::store::{memory::MemoryStore, redis::RedisStore, Store};
use crate::telemetry::metrics::Metrics;

/// One configuration and everything built from it.
pub(crate) struct Generation {
    pub(crate) config: Arc<Config>,
    pub(crate) upstreams: Upstreams,
    /// Held-request gauges of the routes that limit them, by route name.
    pub(crate) route_held: HashMap<Arc<str>, Arc<Gauge>>,
    /// Learned job lengths of the async routes, by route name.
    pub(crate) timings: HashMap<Arc<str>, Arc<Timing>>,
}

impl Generation {
    pub(crate) fn new(
        config: Config,
        previous: Option<&Generation>,
        metrics: &Arc<Metrics>,
        lanes: usize,
    ) -> Result<Self, TrustError> {
        let upstreams = Upstreams::new(&config, metrics, lanes)?;
        let mut route_held = HashMap::new();
        let mut timings = HashMap::new();
        for route in config.routes.iter().filter(|r| r.facade.is_some()) {
            // What a surviving route learned survives the reload too.
            let timing = previous
                .and_then(|p| p.timings.get(&route.name).cloned())
                .unwrap_or_default();
            timings.insert(Arc::clone(&route.name), timing);
        }
        for route in &config.routes {
            let Some(limit) = route.facade.as_ref().and_then(|f| f.max_held) else {
                continue;
            };
            // A route that survives a reload keeps counting the requests it
            // already holds.
            let gauge = match previous.and_then(|p| p.route_held.get(&route.name)) {
                Some(gauge) => {
                    gauge.set_limit(limit);
                    Arc::clone(gauge)
                }
                None => Arc::new(Gauge::new(limit)),
            };
            route_held.insert(Arc::clone(&route.name), gauge);
        }
        Ok(Generation {
            config: Arc::new(config),
            upstreams,
            route_held,
            timings,
        })
    }
}

/// How often expired idempotency records are dropped from memory.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Process-wide state shared by every connection.
pub(crate) struct State {
    current: ArcSwap<Generation>,
    /// Facade requests held now, against `[server] max_held`.
    pub(crate) held: Arc<Gauge>,
    /// Turns true when the grace period ends: held requests answer now.
    drain: watch::Sender<bool>,
    /// Upgraded connections (WebSocket and the like), for the drain.
    pub(crate) tunnels: tokio_util::task::TaskTracker,
    /// Memory buffered request bodies share, in KiB (`[server]
    /// request_buffer_memory`; read at start).
    pub(crate) buffer_budget: Arc<tokio::sync::Semaphore>,
    pub(crate) idempotency: Arc<dyn Store>,
    /// Callbacks awaited, here and (with a cluster) anywhere.
    pub(crate) callbacks: Arc<Callbacks>,
    pub(crate) continuation: Continuation,
    pub(crate) metrics: Arc<Metrics>,
    /// Event-loop threads, fixed at start (`[server] threads`).
    pub(crate) lanes: usize,
}

impl State {
    pub(crate) fn new(
        config: Config,
        cluster: Option<Arc<Cluster>>,
    ) -> Result<Self, crate::StartError> {
        let server = config.server.clone();
        let metrics = Arc::new(Metrics::new());
        let lanes = server.threads;
        let generation = Generation::new(config, None, &metrics, lanes)?;
        Ok(State {
            current: ArcSwap::from_pointee(generation),
            held: Arc::new(Gauge::new(server.max_held)),
            drain: watch::channel(false).0,
            tunnels: tokio_util::task::TaskTracker::new(),
            buffer_budget: Arc::new(tokio::sync::Semaphore::new(
                usize::try_from(server.request_buffer_memory / 1024)
                    .unwrap_or(usize::MAX)
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
            idempotency: match &cluster {
                Some(cluster) => Arc::new(RedisStore::new(Arc::clone(cluster))),
                None => {
                    let store = Arc::new(MemoryStore::new(server.idempotency_memory));
                    store.sweep_every(SWEEP_EVERY);
                    store
                }
            },
            callbacks: Arc::new(Callbacks::new(cluster)),
            continuation: {
                let previous: Vec<&[u8]> =
                    server.continuation_keys.iter().map(|k| &k[..]).collect();
                match &server.continuation_key {
                    Some(key) => Continuation::new(key, &previous, server.continuation_ttl),
                    None => Continuation::random(server.continuation_ttl)?,
                }
            },
            metrics,
            lanes,
        })
    }

    /// The generation a new request runs under.
    pub(crate) fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Replaces the configuration for new requests. Settings of the
    /// listener itself (addresses, connection limits) need a restart.
    pub(crate) fn reload(&self, mut config: Config) -> Result<(), TrustError> {
        let previous = self.current();
        let kept = keep_restart_only(&previous.config, &mut config);
        if !kept.is_empty() {
            tracing::warn!(
                settings = %kept.join(", "),
                "reload: these settings change only on restart; their running values stay"
            );
        }
        let max_held = config.server.max_held;
        let generation = Generation::new(config, Some(&previous), &self.metrics, self.lanes);
        self.metrics.reload(generation.is_ok());
        let generation = generation?;
        self.held.set_limit(max_held);
        self.current.store(Arc::new(generation));
        Ok(())
    }

    /// Tells held requests to answer now (the grace period is over).
    pub(crate) fn drain_now(&self) {
        self.drain.send_replace(true);
    }

    pub(crate) fn drain_signal(&self) -> watch::Receiver<bool> {
        self.drain.subscribe()
    }
}

/// Puts back into `new` the settings a running Baton cannot change (its
/// sockets, threads, keys, shared store and connection handling are built
/// at start), so the configuration in force says what is really in force;
/// returns the names of those that differed.
fn keep_restart_only(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    let (old, server) = (&running.server, &mut new.server);
    macro_rules! keep {
        ($($field:ident),* $(,)?) => {$(
            if server.$field != old.$field {
                server.$field = old.$field.clone();
                kept.push(stringify!($field));
            }
        )*};
    }
    keep!(
        listen,
        admin,
        threads,
        continuation_key,
        continuation_keys,
        continuation_ttl,
        callback_listen,
        idempotency_memory,
        max_connections,
        max_header_size,
        header_read_timeout,
        keep_alive,
        idle_timeout,
        http2_keep_alive_interval,
        http2_keep_alive_timeout,
        request_buffer_memory,
    );
    if new.cluster != running.cluster {
        new.cluster = running.cluster.clone();
        kept.push("cluster");
    }
    kept
}

/// A count of requests held, with its limit.
pub(crate) struct Gauge {
    now: AtomicUsize,
    limit: AtomicUsize,
}

impl Gauge {
    pub(crate) fn new(limit: usize) -> Self {
        Gauge {
            now: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
        }
    }

    fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Counts one more held request, unless the limit is reached.
    pub(crate) fn enter(self: &Arc<Self>) -> Option<Held> {
        let limit = self.limit.load(Ordering::Relaxed);
        self.now
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Held(Arc::clone(self)))
    }
}

/// One held request; dropping it releases its place.
pub(crate) struct Held(Arc<Gauge>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::AcqRel);
    }
}

impl crate::edge::server::Drain for State {
    fn grace(&self) -> std::time::Duration {
        self.current().config.server.shutdown_grace
    }

    fn tunnels(&self) -> &tokio_util::task::TaskTracker {
        &self.tunnels
    }

    fn answer_now(&self) {
        self.drain_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(server: &str) -> Config {
        let text = format!(
            "[server]\n{server}\n[backends.b]\nurl = \"http://b\"\n[[routes]]\nname = \"r\"\nmatch = {{ path = \"/*\" }}\nbackend = \"b\"\n"
        );
        Config::parse(&text, "test.toml", None).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_reload_keeps_and_names_the_settings_only_a_restart_changes() {
        let running = config("max_connections = 100\nmax_held = 5\nshutdown_grace = \"5s\"");
        let mut new = config(
            "max_connections = 200\nmax_header_size = \"8KiB\"\nmax_held = 7\nshutdown_grace = \"9s\"\nlisten = \"127.0.0.1:9999\"",
        );
        let kept = keep_restart_only(&running, &mut new);
        assert_eq!(kept, ["listen", "max_connections", "max_header_size"]);
        assert_eq!(new.server.max_connections, 100);
        assert_eq!(new.server.max_header_size, running.server.max_header_size);
        assert_eq!(new.server.listen, running.server.listen);
        // What a reload can change, it changes.
        assert_eq!(new.server.max_held, 7);
        assert_eq!(new.server.shutdown_grace, std::time::Duration::from_secs(9));
        let mut same = config("max_connections = 100\nmax_held = 5");
        assert!(keep_restart_only(&running, &mut same).is_empty());
    }
}

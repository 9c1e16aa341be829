//! Baton: a sync-facade reverse proxy.
//!
//! ARCHITECTURE.md is the map: the flow, the layer stack and why each
//! layer sits where it does, the invariants, where to change what. In the
//! order a request travels:
//!
//! - [`edge`] accepts connections (one accept loop for every listener),
//!   runs each on a lane (a thread per core), serves HTTP/1 or h2c, and
//!   drains at shutdown;
//! - [`pipeline`] is the request's path as tower layers: correlation,
//!   the guard (limits, host, canonical path), routing;
//! - [`proxy`] forwards a pass-through request over the upstream pools,
//!   with the path rewrite (both ways) and [`headers`] hygiene;
//! - [`facade`] turns an async route's request into the whole job
//!   conversation, behind its idempotency latch, keeping records in
//!   [`store`] (and, across instances, [`cluster`]);
//! - [`error`] is every failure by blame and the one mapping to an answer.
//!
//! Beside the path: [`config`] (raw TOML to validated types), [`state`]
//! (what lives as long as the process), [`telemetry`] (correlation ids,
//! metrics), [`ops`] (admin, signals, demo), and the small shared pieces
//! [`body`], [`target`] and [`sync`].

#![forbid(unsafe_code)]

pub mod body;
mod cluster;
pub mod config;
pub mod edge;
pub mod error;
pub mod facade;
pub mod headers;
pub mod ops;
mod pipeline;
mod proxy;
mod state;
pub mod store;
mod sync;
pub mod target;
mod telemetry;

use std::future::Future;
use std::io;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use cluster::ClusterError;
pub use config::{Config, ConfigError};
pub use proxy::upstream::TrustError;

/// Why Baton cannot start with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    #[error(transparent)]
    Random(#[from] facade::continuation::NoRandomness),
}

/// The sockets Baton serves: client traffic and, optionally, admin and
/// job API callbacks.
pub struct Listeners {
    pub main: TcpListener,
    pub admin: Option<TcpListener>,
    pub callbacks: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses the config names.
    pub async fn bind(server: &config::ServerConfig) -> io::Result<Listeners> {
        let main = TcpListener::bind(server.listen).await?;
        let admin = match server.admin {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let callbacks = match server.callback_listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        Ok(Listeners {
            main,
            admin,
            callbacks,
        })
    }
}

/// A configured proxy, ready to serve.
pub struct Baton {
    state: Arc<state::State>,
}

/// Replaces a running Baton's configuration (SIGHUP).
#[derive(Clone)]
pub struct Reloader {
    state: Arc<state::State>,
}

impl Reloader {
    /// New requests use `config` from now on; requests already running
    /// finish under the configuration they started with.
    pub fn reload(&self, config: Config) -> Result<(), TrustError> {
        self.state.reload(config)
    }

    /// Loads `path` and reloads from it; the error says which step failed.
    pub fn reload_file(&self, path: &std::path::Path) -> Result<(), String> {
        let config = Config::load(path).map_err(|e| {
            self.state.metrics.reload(false);
            e.to_string()
        })?;
        self.reload(config).map_err(|e| e.to_string())
    }
}

impl Baton {
    /// Builds the backend clients and, for `[cluster]`, connects to Redis;
    /// fails when an `https://` backend has no usable trust anchors or the
    /// cluster's Redis does not answer.
    pub async fn new(config: Config) -> Result<Baton, StartError> {
        let cluster = match &config.cluster {
            Some(cluster) => Some(cluster::Cluster::connect(cluster).await?),
            None => None,
        };
        Ok(Baton {
            state: Arc::new(state::State::new(config, cluster)?),
        })
    }

    pub fn reloader(&self) -> Reloader {
        Reloader {
            state: Arc::clone(&self.state),
        }
    }

    /// Serves until `shutdown` resolves, then drains within the configured
    /// grace period and returns.
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        // Listener settings come from the config at start; a reload changes
        // routes and backends, not these.
        let config = self.state.current().config.clone();
        // Shared, each connection holding a pointer rather than a copy.
        let settings = Arc::new(edge::connection::Settings::new(&config.server));
        let (phase, phase_rx) = watch::channel(edge::connection::Phase::Serving);
        // Admin and callbacks keep serving while the client listener drains
        // (probes read `/readyz`; held requests may still be called back),
        // and drain themselves once it is done.
        let (listening, listening_rx) = watch::channel(edge::connection::Phase::Serving);
        let admin = listeners.admin.map(|listener| {
            tokio::spawn(ops::admin::serve(
                listener,
                phase_rx,
                listening_rx.clone(),
                Arc::clone(&settings),
                Arc::clone(&self.state),
            ))
        });
        let callbacks = listeners.callbacks.map(|listener| {
            tokio::spawn(pipeline::callbacks::serve(
                listener,
                listening_rx,
                Arc::clone(&settings),
                Arc::clone(&self.state),
            ))
        });
        let state = &self.state;
        let result = edge::server::serve(
            listeners.main,
            &config.server,
            settings,
            |peer| pipeline::service(state, peer),
            &**state,
            shutdown,
            phase,
        )
        .await;
        edge::server::close_side_listeners(listening, admin.into_iter().chain(callbacks)).await;
        result
    }
}

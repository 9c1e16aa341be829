//! The validated configuration the rest of Baton reads.
//!
//! Loading is two steps. `raw` deserializes the TOML into a mirror that
//! keeps every value's span; [`Config::parse`] then turns strings into
//! typed values (durations, sizes, URIs, patterns), checks what cannot be
//! true (an unknown backend, a duplicate route name, a zero timeout) and
//! fills defaults. Any failure is a [`ConfigError`] naming the file, line,
//! column and key, so a bad file is refused before a port is bound.
//!
//! Each TOML table is validated in a module of its own: `server`,
//! `backend`, `route`, `cluster` and `facade` (a route's `async` table);
//! `context` holds what they share. This module ties them together.

mod backend;
mod cluster;
mod context;
mod facade;
mod presets;
mod raw;
mod route;
pub mod router;
mod server;
pub mod template;

pub(crate) use backend::BackendConfig;
pub(crate) use cluster::ClusterConfig;
pub use facade::{AsyncRoute, NotFound, StateReader, StateRules};
pub(crate) use facade::{
    Callback, CallbackCarrier, Handle, HandleSource, Idempotency, OnTimeout, Origin, PollSchedule,
    ResultSource,
};
pub(crate) use route::Route;
pub(crate) use server::ServerConfig;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::Method;

use context::Cx;
use raw::RawConfig;

/// Everything Baton runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    /// Backends in name order; routes refer to them by index.
    pub backends: Vec<Arc<BackendConfig>>,
    /// Routes in file order: the first match wins.
    pub routes: Vec<Route>,
    /// Present: several instances share state through Redis.
    pub cluster: Option<ClusterConfig>,
}

/// A config that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the config: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: `{key}`: {message}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
}

pub mod defaults {
    //! Every default in one place, so `config/example.toml` can be checked
    //! against them.
    use std::time::Duration;

    pub const LISTEN: &str = "127.0.0.1:8080";
    pub const MAX_HEADER_SIZE: usize = 32 * 1024;
    pub const MAX_REQUEST_BODY: u64 = 10 * 1024 * 1024;
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    pub const MAX_CONNECTIONS: usize = 10_000;
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
    pub const POOL_MAX_IDLE: usize = 64;
    pub const MAX_HELD: usize = 10_000;
    pub const NAMESPACE: &str = "baton";
    pub const LEASE: Duration = Duration::from_secs(15);
    pub const IDEMPOTENCY_MEMORY: u64 = 64 * 1024 * 1024;
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
    pub const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
    pub const HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
    pub const REQUEST_BUFFER_MEMORY: u64 = 32 * 1024 * 1024;
    pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const UPGRADES: &[&str] = &["websocket"];
    /// As long as an idempotency record: a client back within a day
    /// finds its job either way.
    pub const CONTINUATION_TTL: Duration = Duration::from_secs(24 * 60 * 60);
    /// The longest duration any setting takes.
    pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Config::parse(&source, &file, path.parent())
    }

    /// Validates `source`, reporting errors against the name `file`.
    /// Relative paths inside (a CA file) resolve against `dir`.
    pub fn parse(source: &str, file: &str, dir: Option<&Path>) -> Result<Config, ConfigError> {
        let cx = Cx { file, source, dir };
        let raw: RawConfig = cx.deserialize()?;
        let server = cx.server(&raw.server)?;
        let backends = cx.backends(&raw)?;
        let routes = cx.routes(&raw, &backends)?;
        let mut backends: Vec<_> = backends.into_values().collect();
        backends.sort_by(|a, b| a.name.cmp(&b.name));
        if server.callback_listen.is_none() {
            cx.no_callbacks(&raw, &routes)?;
        }
        let cluster = match &raw.cluster {
            Some(c) => Some(cx.cluster(c.get_ref())?),
            None => None,
        };
        Ok(Config {
            server,
            backends,
            routes,
            cluster,
        })
    }
}

impl Cx<'_> {
    /// Every `[backends.NAME]`, by name.
    fn backends<'r>(
        &self,
        raw: &'r RawConfig,
    ) -> Result<HashMap<&'r str, Arc<BackendConfig>>, ConfigError> {
        let mut backends = HashMap::with_capacity(raw.backends.len());
        // In file order, so the first error reported is the first in the file.
        let mut in_file_order: Vec<_> = raw.backends.iter().collect();
        in_file_order.sort_by_key(|(_, backend)| backend.span().start);
        for (name, backend) in in_file_order {
            backends.insert(name.as_str(), Arc::new(self.backend(name, backend)?));
        }
        Ok(backends)
    }

    /// Every `[[routes]]`, in file order, each name used once.
    fn routes(
        &self,
        raw: &RawConfig,
        backends: &HashMap<&str, Arc<BackendConfig>>,
    ) -> Result<Vec<Route>, ConfigError> {
        let mut names = HashSet::new();
        let mut routes = Vec::with_capacity(raw.routes.len());
        for (index, route) in raw.routes.iter().enumerate() {
            let route = self.route(index, route.get_ref(), backends)?;
            if !names.insert(route.name.clone()) {
                let span = raw.routes[index].get_ref().name.span();
                return Err(self.error(
                    span,
                    format!("routes[{index}].name"),
                    format!(
                        "route name {:?} is already used by an earlier route",
                        &*route.name
                    ),
                ));
            }
            routes.push(route);
        }
        if routes.is_empty() {
            // Every request would be a 404: a file that lost its routes (or
            // an empty one) is a mistake, refused at start and on reload.
            return Err(self.error(
                0..0,
                "routes".to_owned(),
                "the config has no [[routes]]; Baton would answer every request 404".to_owned(),
            ));
        }
        Ok(routes)
    }

    /// Without `[server] callback_listen` no job API could reach Baton, so
    /// a route that waits for a callback would wait forever.
    fn no_callbacks(&self, raw: &RawConfig, routes: &[Route]) -> Result<(), ConfigError> {
        for (index, route) in routes.iter().enumerate() {
            if route.facade.as_ref().is_some_and(|f| f.callback.is_some()) {
                let span = raw.routes[index].get_ref().name.span();
                return Err(self.error(
                    span,
                    format!("routes[{index}].async.callback"),
                    "callbacks need a listener: set [server] callback_listen".to_owned(),
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// The effective routes, one per line, as `baton check` prints them:
    /// what each matches, where it goes, and with which limits.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for route in &self.routes {
            out.push_str(&self.describe_route(route));
            out.push('\n');
        }
        out
    }

    fn describe_route(&self, route: &Route) -> String {
        let methods = if route.methods.is_empty() {
            "*".to_owned()
        } else {
            let names: Vec<&str> = route.methods.iter().map(Method::as_str).collect();
            names.join(",")
        };
        let host = route
            .host
            .as_ref()
            .map(|h| format!(" host {h}"))
            .unwrap_or_default();
        let body = size(
            route
                .max_request_body
                .unwrap_or(self.server.max_request_body),
        );
        let backend = &route.backend;
        let mut line = format!(
            "{}: {methods} {}{host} -> {} ({}://{}{})",
            route.name,
            route.path,
            backend.name,
            backend.scheme,
            backend.authority,
            backend.base_path
        );
        match &route.facade {
            None => line.push_str(&format!(" | pass-through | body <= {body}")),
            Some(f) => line.push_str(&describe_async(f, &body)),
        }
        line
    }
}

/// The tail of an async route's line: how long it holds, what then, and
/// its limits.
fn describe_async(f: &AsyncRoute, body: &str) -> String {
    let on_timeout = match f.on_timeout {
        OnTimeout::GatewayTimeout => "504",
        OnTimeout::Accepted => "202 + monitor",
        OnTimeout::Redirect => "303 to monitor",
    };
    let held = f
        .max_held
        .map_or_else(|| "server limit".to_owned(), |n| n.to_string());
    let idempotency = f.idempotency.as_ref().map_or_else(
        || "off".to_owned(),
        |i| format!("{} for {}", i.header, time(i.ttl)),
    );
    format!(
        " | async, preset {} | wait {} (up to {}), then {on_timeout} | body <= {body}, result <= {} | held <= {held} | idempotency {idempotency}",
        f.preset.unwrap_or("none"),
        time(f.wait),
        time(f.max_wait),
        size(f.max_result_body),
    )
}

fn size(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}

fn time(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

//! The validated configuration the rest of Baton reads.
//!
//! Loading is two steps. `raw` deserializes the TOML into a mirror that
//! keeps every value's span; [`Config::parse`] then turns strings into
//! typed values (durations, sizes, URIs, patterns), checks what cannot be
//! true (an unknown backend, a duplicate route name, a zero timeout) and
//! fills defaults. Any failure is a [`ConfigError`] naming the file, line,
//! column and key, so a bad file is refused before a port is bound.

mod facade;
mod presets;
mod raw;
pub mod router;
pub mod template;

pub use facade::{
    AsyncRoute, Callback, CallbackCarrier, Cancel, Failure, Handle, HandleSource, Idempotency,
    JobDetect, NotFound, OnTimeout, Origin, PollSchedule, ResultSource, StateReader, StateRules,
};

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{Method, Uri};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use toml::Spanned;

use crate::config::router::{HostPattern, PathPattern};
use raw::{RawBackend, RawConfig, RawRoute, RawServer};

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub redis: String,
    /// Prefix of every key and channel, so deployments can share a Redis.
    pub namespace: String,
    /// How long a leader's claim on a job survives its instance.
    pub lease: Duration,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin: Option<SocketAddr>,
    /// Request line plus header fields, in bytes; more is a 431.
    pub max_header_size: usize,
    /// Request body, in bytes; more is a 413.
    pub max_request_body: u64,
    /// A client that has not sent its whole header by then is dropped
    /// (slowloris).
    pub header_read_timeout: Duration,
    pub keep_alive: bool,
    /// Open client connections; at the limit Baton stops accepting until
    /// one closes, rather than running out of file descriptors.
    pub max_connections: usize,
    /// How long in-flight requests may run after SIGTERM.
    pub shutdown_grace: Duration,
    /// Facade requests held at once, across routes; more are shed (503).
    pub max_held: usize,
    /// Event-loop threads ("lanes"), each serving its connections start to
    /// finish with backend pools of its own; `0` in the file means one per
    /// CPU core. Read at start; a reload does not change it.
    pub threads: usize,
    /// Seals continuation tokens; `None`: a random key per process, so
    /// tokens work only on this instance until it restarts.
    pub continuation_key: Option<Arc<[u8]>>,
    /// Earlier continuation secrets: they still open the tokens they
    /// sealed (key rotation) and seal nothing.
    pub continuation_keys: Vec<Arc<[u8]>>,
    /// How long a continuation monitor stays valid after it is handed out.
    pub continuation_ttl: Duration,
    /// Memory the idempotency store may use for stored answers.
    pub idempotency_memory: u64,
    /// Header values never logged, besides the credentials always hidden.
    pub redact_headers: Vec<http::HeaderName>,
    /// Where job APIs call back; its own listener, so it need not face
    /// clients.
    pub callback_listen: Option<SocketAddr>,
    /// The base of the callback URLs handed to job APIs.
    pub callback_url: Option<String>,
    /// Peers whose forwarding headers (`X-Forwarded-*`, `Forwarded`) are
    /// appended to; from anyone else they are replaced.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// A connection with no request in flight for this long is closed
    /// (HTTP/2 with a GOAWAY).
    pub idle_timeout: Duration,
    /// Longest pause between two pieces of a request body; more is a 408.
    pub body_read_timeout: Duration,
    /// HTTP/2 keep-alive pings: how often on a quiet connection, and how
    /// long an unanswered ping may stay unanswered before the connection
    /// is closed.
    pub http2_keep_alive_interval: Duration,
    pub http2_keep_alive_timeout: Duration,
    /// Request bodies up to this size are read whole before the backend is
    /// called (`None`: up to the route's body limit); routes may override.
    pub request_buffering: Option<u64>,
    /// Memory all buffered request bodies may take together; past it, a
    /// body streams instead.
    pub request_buffer_memory: u64,
}

#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub name: String,
    pub scheme: Scheme,
    pub authority: Authority,
    /// Path prefix of the base URL without a trailing slash (`""` for none).
    pub base_path: String,
    pub connect_timeout: Duration,
    /// Time allowed from sending the request to receiving response headers.
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
    /// Send the client's `Host` instead of the backend's authority.
    pub preserve_host: bool,
    /// Trust anchors for `https://`: the configured CA file, else the
    /// system's roots.
    pub ca_certificates: Option<Arc<[CertificateDer<'static>]>>,
    /// Longest pause between two pieces of an answer's body; a stalled
    /// answer whose head was sent is cut, one whose head was not is a 504.
    pub body_idle_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: Arc<str>,
    /// Empty: any method.
    pub methods: Vec<Method>,
    pub path: PathPattern,
    pub host: Option<HostPattern>,
    pub backend: Arc<BackendConfig>,
    pub strip_prefix: Option<String>,
    pub add_prefix: Option<String>,
    /// Overrides the server's request body limit for this route.
    pub max_request_body: Option<u64>,
    /// Overrides the server's request buffering for this route; `Some(0)`
    /// streams every body.
    pub request_buffering: Option<u64>,
    /// Pass encoded slashes (`%2F`, `%5C`, `\`) in the path through
    /// rather than refuse them with a 400.
    pub allow_encoded_slashes: bool,
    /// Protocols a client may upgrade to (lower case); any other `Upgrade`
    /// is dropped and the request forwarded as an ordinary one.
    pub upgrades: Vec<String>,
    /// Present: a sync facade over a job API rather than a pass-through.
    pub facade: Option<Arc<AsyncRoute>>,
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
    /// The longest duration any setting takes.
    /// As long as an idempotency record: a client back within a day
    /// finds its job either way.
    pub const CONTINUATION_TTL: Duration = Duration::from_secs(24 * 60 * 60);
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
        let mut backends = HashMap::with_capacity(raw.backends.len());
        // In file order, so the first error reported is the first in the file.
        let mut in_file_order: Vec<_> = raw.backends.iter().collect();
        in_file_order.sort_by_key(|(_, backend)| backend.span().start);
        for (name, backend) in in_file_order {
            backends.insert(name.as_str(), Arc::new(cx.backend(name, backend)?));
        }
        let mut names = HashSet::new();
        let mut routes = Vec::with_capacity(raw.routes.len());
        for (index, route) in raw.routes.iter().enumerate() {
            let route = cx.route(index, route.get_ref(), &backends)?;
            if !names.insert(route.name.clone()) {
                let span = raw.routes[index].get_ref().name.span();
                return Err(cx.error(
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
            return Err(cx.error(
                0..0,
                "routes".to_owned(),
                "the config has no [[routes]]; Baton would answer every request 404".to_owned(),
            ));
        }
        let mut backends: Vec<_> = backends.into_values().collect();
        backends.sort_by(|a, b| a.name.cmp(&b.name));
        if server.callback_listen.is_none() {
            for (index, route) in routes.iter().enumerate() {
                if route.facade.as_ref().is_some_and(|f| f.callback.is_some()) {
                    let span = raw.routes[index].get_ref().name.span();
                    return Err(cx.error(
                        span,
                        format!("routes[{index}].async.callback"),
                        "callbacks need a listener: set [server] callback_listen".to_owned(),
                    ));
                }
            }
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

impl Config {
    /// The effective routes, one per line, as `baton check` prints them:
    /// what each matches, where it goes, and with which limits.
    pub fn describe(&self) -> String {
        let size = |n: u64| bytesize::ByteSize(n).display().iec().to_string();
        let time = |d: Duration| humantime::format_duration(d).to_string();
        let mut out = String::new();
        for route in &self.routes {
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
                Some(f) => {
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
                    line.push_str(&format!(
                        " | async, preset {} | wait {} (up to {}), then {on_timeout} | body <= {body}, result <= {} | held <= {held} | idempotency {idempotency}",
                        f.preset.unwrap_or("none"),
                        time(f.wait),
                        time(f.max_wait),
                        size(f.max_result_body),
                    ));
                }
            }
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

/// The validation context: where errors point.
struct Cx<'a> {
    file: &'a str,
    source: &'a str,
    dir: Option<&'a Path>,
}

impl Cx<'_> {
    fn error(&self, span: Range<usize>, key: String, message: String) -> ConfigError {
        let (line, column) = line_column(self.source, span.start);
        ConfigError::Invalid {
            file: self.file.to_owned(),
            line,
            column,
            key,
            message,
        }
    }

    fn deserialize(&self) -> Result<RawConfig, ConfigError> {
        let deserializer = toml::Deserializer::parse(self.source)
            .map_err(|e| self.toml_error(&e, "(syntax)".to_owned()))?;
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            // `Spanned` wraps values in a private struct; its field name is
            // noise in a key path a user reads.
            let key = e
                .path()
                .to_string()
                .replace(".$__serde_spanned_private_value", "");
            self.toml_error(e.inner(), key)
        })
    }

    fn toml_error(&self, error: &toml::de::Error, mut key: String) -> ConfigError {
        let span = error.span().unwrap_or(0..0);
        let message = error.message().trim().replace('\n', "; ");
        // serde reports a missing field against the table that lacks it;
        // the user needs the name of the key to add.
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            key = format!("{key}.{field}");
        }
        self.error(span, key, message)
    }

    /// Parses a spanned string with `parse`, turning its error into one
    /// that points at the value.
    fn value<T>(
        &self,
        value: &Spanned<String>,
        key: impl FnOnce() -> String,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        parse(value.get_ref()).map_err(|message| self.error(value.span(), key(), message))
    }

    fn duration(
        &self,
        value: Option<&Spanned<String>>,
        key: impl FnOnce() -> String,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        self.value(value, key, |text| {
            let duration = humantime::parse_duration(text).map_err(|e| {
                format!("{text:?} is not a duration ({e}); write e.g. \"250ms\", \"30s\", \"2m\"")
            })?;
            if duration.is_zero() {
                return Err("must be greater than zero".to_owned());
            }
            // Deadlines are instants now + duration: a duration past any
            // sane one would overflow the clock, and is a typo anyway.
            if duration > defaults::MAX_DURATION {
                return Err(format!(
                    "{text:?} is longer than the longest duration Baton accepts ({})",
                    humantime::format_duration(defaults::MAX_DURATION)
                ));
            }
            Ok(duration)
        })
    }

    fn size(
        &self,
        value: Option<&Spanned<String>>,
        key: impl FnOnce() -> String,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        self.value(value, key, |text| {
            let size = text
                .parse::<bytesize::ByteSize>()
                .map_err(|e| {
                    format!("{text:?} is not a size ({e}); write e.g. \"64KiB\", \"10MiB\"")
                })?
                .as_u64();
            if !range.contains(&size) {
                return Err(format!(
                    "{text:?} is out of range: must be at least {} and at most {}",
                    bytesize::ByteSize(*range.start()).display().iec(),
                    bytesize::ByteSize(*range.end()).display().iec()
                ));
            }
            Ok(size)
        })
    }

    fn count(
        &self,
        value: Option<&Spanned<i64>>,
        key: impl FnOnce() -> String,
        default: usize,
        range: RangeInclusive<i64>,
    ) -> Result<usize, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        let n = *value.get_ref();
        if !range.contains(&n) {
            return Err(self.error(
                value.span(),
                key(),
                format!(
                    "{n} is out of range: must be at least {} and at most {}",
                    range.start(),
                    range.end()
                ),
            ));
        }
        Ok(n as usize)
    }

    fn address(
        &self,
        value: &Spanned<String>,
        key: impl FnOnce() -> String,
    ) -> Result<SocketAddr, ConfigError> {
        self.value(value, key, |text| {
            text.parse().map_err(|_| {
                format!("{text:?} is not an address; write IP:PORT, e.g. \"0.0.0.0:8080\"")
            })
        })
    }

    fn server(&self, raw: &RawServer) -> Result<ServerConfig, ConfigError> {
        let key = |k: &'static str| move || format!("server.{k}");
        let listen = match &raw.listen {
            Some(v) => self.address(v, key("listen"))?,
            None => defaults::LISTEN
                .parse()
                .expect("the default address parses"),
        };
        let admin = match &raw.admin {
            Some(v) => Some(self.address(v, key("admin"))?),
            None => None,
        };
        Ok(ServerConfig {
            listen,
            admin,
            max_header_size: self.size(
                raw.max_header_size.as_ref(),
                key("max_header_size"),
                defaults::MAX_HEADER_SIZE as u64,
                1024..=1024 * 1024,
            )? as usize,
            max_request_body: self.size(
                raw.max_request_body.as_ref(),
                key("max_request_body"),
                defaults::MAX_REQUEST_BODY,
                1..=u64::MAX,
            )?,
            header_read_timeout: self.duration(
                raw.header_read_timeout.as_ref(),
                key("header_read_timeout"),
                defaults::HEADER_READ_TIMEOUT,
            )?,
            keep_alive: raw.keep_alive.unwrap_or(true),
            max_connections: self.count(
                raw.max_connections.as_ref(),
                key("max_connections"),
                defaults::MAX_CONNECTIONS,
                1..=1_000_000,
            )?,
            shutdown_grace: self.duration(
                raw.shutdown_grace.as_ref(),
                key("shutdown_grace"),
                defaults::SHUTDOWN_GRACE,
            )?,
            max_held: self.count(
                raw.max_held.as_ref(),
                key("max_held"),
                defaults::MAX_HELD,
                1..=1_000_000,
            )?,
            threads: match self.count(raw.threads.as_ref(), key("threads"), 0, 0..=1024)? {
                0 => std::thread::available_parallelism().map_or(1, usize::from),
                n => n,
            },
            continuation_key: match &raw.continuation_key {
                None => None,
                Some(k) => Some(self.value(k, key("continuation_key"), secret)?),
            },
            continuation_keys: raw
                .continuation_keys
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, k)| self.value(k, || format!("server.continuation_keys[{i}]"), secret))
                .collect::<Result<_, _>>()?,
            continuation_ttl: self.duration(
                raw.continuation_ttl.as_ref(),
                key("continuation_ttl"),
                defaults::CONTINUATION_TTL,
            )?,
            idempotency_memory: self.size(
                raw.idempotency_memory.as_ref(),
                key("idempotency_memory"),
                defaults::IDEMPOTENCY_MEMORY,
                1..=u64::MAX,
            )?,
            redact_headers: raw
                .redact_headers
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, name)| {
                    self.value(
                        name,
                        || format!("server.redact_headers[{i}]"),
                        |n| {
                            http::HeaderName::from_bytes(n.as_bytes())
                                .map_err(|_| format!("{n:?} is not a valid header name"))
                        },
                    )
                })
                .collect::<Result<_, _>>()?,
            callback_listen: match &raw.callback_listen {
                Some(v) => Some(self.address(v, key("callback_listen"))?),
                None => None,
            },
            callback_url: match &raw.callback_url {
                None => raw
                    .callback_listen
                    .as_ref()
                    .and_then(|v| v.get_ref().parse::<SocketAddr>().ok())
                    .map(|addr| format!("http://{addr}")),
                Some(v) => Some(self.value(v, key("callback_url"), |u| {
                    let url =
                        url::Url::parse(u).map_err(|e| format!("{u:?} is not a URL ({e})"))?;
                    if !matches!(url.scheme(), "http" | "https") || url.query().is_some() {
                        return Err(format!("{u:?} must be an http(s) base URL without a query"));
                    }
                    Ok(u.trim_end_matches('/').to_owned())
                })?),
            },
            trusted_proxies: raw
                .trusted_proxies
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, cidr)| {
                    self.value(cidr, || format!("server.trusted_proxies[{i}]"), parse_cidr)
                })
                .collect::<Result<_, _>>()?,
            idle_timeout: self.duration(
                raw.idle_timeout.as_ref(),
                key("idle_timeout"),
                defaults::IDLE_TIMEOUT,
            )?,
            body_read_timeout: self.duration(
                raw.body_read_timeout.as_ref(),
                key("body_read_timeout"),
                defaults::BODY_READ_TIMEOUT,
            )?,
            http2_keep_alive_interval: self.duration(
                raw.http2_keep_alive_interval.as_ref(),
                key("http2_keep_alive_interval"),
                defaults::HTTP2_KEEP_ALIVE_INTERVAL,
            )?,
            http2_keep_alive_timeout: self.duration(
                raw.http2_keep_alive_timeout.as_ref(),
                key("http2_keep_alive_timeout"),
                defaults::HTTP2_KEEP_ALIVE_TIMEOUT,
            )?,
            request_buffering: self
                .buffering(raw.request_buffering.as_ref(), key("request_buffering"))?,
            request_buffer_memory: self.size(
                raw.request_buffer_memory.as_ref(),
                key("request_buffer_memory"),
                defaults::REQUEST_BUFFER_MEMORY,
                0..=u64::MAX,
            )?,
        })
    }

    /// `"off"` (stream every body, `Some(0)`) or a size.
    fn buffering(
        &self,
        value: Option<&Spanned<String>>,
        key: impl FnOnce() -> String,
    ) -> Result<Option<u64>, ConfigError> {
        match value {
            None => Ok(None),
            Some(v) if v.get_ref() == "off" => Ok(Some(0)),
            Some(_) => self.size(value, key, 0, 0..=u64::MAX).map(Some),
        }
    }

    fn cluster(&self, raw: &raw::RawCluster) -> Result<ClusterConfig, ConfigError> {
        let redis = self.value(
            &raw.redis,
            || "cluster.redis".to_owned(),
            |url| {
                let parsed =
                    url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL ({e})"))?;
                match parsed.scheme() {
                    "redis" | "rediss" => Ok(url.to_owned()),
                    other => Err(format!(
                        "{other}:// is not a Redis URL; write redis://host:port"
                    )),
                }
            },
        )?;
        let namespace = match &raw.namespace {
            None => defaults::NAMESPACE.to_owned(),
            Some(n) => self.value(
                n,
                || "cluster.namespace".to_owned(),
                |n| {
                    if valid_name(n) {
                        Ok(n.to_owned())
                    } else {
                        Err("a namespace is letters, digits, `-` and `_`".to_owned())
                    }
                },
            )?,
        };
        Ok(ClusterConfig {
            redis,
            namespace,
            lease: self.duration(
                raw.lease.as_ref(),
                || "cluster.lease".to_owned(),
                defaults::LEASE,
            )?,
        })
    }

    fn backend(&self, name: &str, raw: &Spanned<RawBackend>) -> Result<BackendConfig, ConfigError> {
        let base = format!("backends.{name}");
        if !valid_name(name) {
            return Err(self.error(
                raw.span(),
                base,
                "backend names are letters, digits, `-` and `_`".to_owned(),
            ));
        }
        let key = |k: &'static str| {
            let base = &base;
            move || format!("{base}.{k}")
        };
        let raw = raw.get_ref();
        let (scheme, authority, base_path) = self.value(&raw.url, key("url"), parse_base_url)?;
        let ca_certificates = match &raw.ca_file {
            None => None,
            Some(path) if scheme != Scheme::HTTPS => {
                return Err(self.error(
                    path.span(),
                    key("ca_file")(),
                    "a CA file only applies to an https:// backend".to_owned(),
                ))
            }
            Some(path) => Some(self.value(path, key("ca_file"), |p| self.load_ca(p))?),
        };
        Ok(BackendConfig {
            name: name.to_owned(),
            scheme,
            authority,
            base_path,
            connect_timeout: self.duration(
                raw.connect_timeout.as_ref(),
                key("connect_timeout"),
                defaults::CONNECT_TIMEOUT,
            )?,
            response_timeout: self.duration(
                raw.response_timeout.as_ref(),
                key("response_timeout"),
                defaults::RESPONSE_TIMEOUT,
            )?,
            pool_idle_timeout: self.duration(
                raw.pool_idle_timeout.as_ref(),
                key("pool_idle_timeout"),
                defaults::POOL_IDLE_TIMEOUT,
            )?,
            pool_max_idle: self.count(
                raw.pool_max_idle.as_ref(),
                key("pool_max_idle"),
                defaults::POOL_MAX_IDLE,
                0..=100_000,
            )?,
            preserve_host: raw.preserve_host.unwrap_or(false),
            ca_certificates,
            body_idle_timeout: self.duration(
                raw.body_idle_timeout.as_ref(),
                key("body_idle_timeout"),
                defaults::BODY_IDLE_TIMEOUT,
            )?,
        })
    }

    fn load_ca(&self, path: &str) -> Result<Arc<[CertificateDer<'static>]>, String> {
        let full: PathBuf = match self.dir {
            Some(dir) => dir.join(path),
            None => PathBuf::from(path),
        };
        let certs = CertificateDer::pem_file_iter(&full)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read CA certificates from {}: {e}", full.display()))?;
        if certs.is_empty() {
            return Err(format!("{} holds no PEM certificate", full.display()));
        }
        Ok(certs.into())
    }

    fn route(
        &self,
        index: usize,
        raw: &RawRoute,
        backends: &HashMap<&str, Arc<BackendConfig>>,
    ) -> Result<Route, ConfigError> {
        let key = |k: &'static str| move || format!("routes[{index}].{k}");
        let name = raw.name.get_ref();
        if !valid_name(name) {
            return Err(self.error(
                raw.name.span(),
                key("name")(),
                "route names are letters, digits, `-` and `_` (they label metrics)".to_owned(),
            ));
        }
        let matcher = raw.matcher.get_ref();
        let mut methods = Vec::with_capacity(matcher.methods.len());
        for (i, method) in matcher.methods.iter().enumerate() {
            let method = self.value(
                method,
                || format!("routes[{index}].match.methods[{i}]"),
                parse_method,
            )?;
            methods.push(method);
        }
        let path = self.value(&matcher.path, key("match.path"), PathPattern::parse)?;
        let host = match &matcher.host {
            Some(h) => Some(self.value(h, key("match.host"), HostPattern::parse)?),
            None => None,
        };
        let backend = self.value(&raw.backend, key("backend"), |b| {
            backends.get(b).cloned().ok_or_else(|| {
                let mut known: Vec<&str> = backends.keys().copied().collect();
                known.sort_unstable();
                format!(
                    "unknown backend {b:?}; defined backends: [{}]",
                    known.join(", ")
                )
            })
        })?;
        let strip_prefix = match &raw.strip_prefix {
            Some(p) => Some(self.value(p, key("strip_prefix"), parse_prefix)?),
            None => None,
        };
        let add_prefix = match &raw.add_prefix {
            Some(p) => Some(self.value(p, key("add_prefix"), parse_prefix)?),
            None => None,
        };
        let only_get = !methods.is_empty()
            && methods
                .iter()
                .all(|m| *m == Method::GET || *m == Method::HEAD);
        let facade = match &raw.facade {
            Some(table) => Some(Arc::new(self.facade(index, table, only_get)?)),
            None => None,
        };
        let max_request_body = match &raw.max_request_body {
            None => None,
            Some(_) => Some(self.size(
                raw.max_request_body.as_ref(),
                key("max_request_body"),
                0,
                1..=u64::MAX,
            )?),
        };
        let upgrades = match &raw.upgrades {
            None => defaults::UPGRADES.iter().map(|p| (*p).to_owned()).collect(),
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, protocol)| {
                    self.value(
                        protocol,
                        || format!("routes[{index}].upgrades[{i}]"),
                        |p| {
                            let valid = !p.is_empty()
                                && p.bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b"-._/".contains(&b));
                            if valid {
                                Ok(p.to_ascii_lowercase())
                            } else {
                                Err(format!("{p:?} is not a protocol name like \"websocket\""))
                            }
                        },
                    )
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Route {
            name: name.as_str().into(),
            methods,
            path,
            host,
            backend,
            strip_prefix,
            add_prefix,
            max_request_body,
            request_buffering: self
                .buffering(raw.request_buffering.as_ref(), key("request_buffering"))?,
            allow_encoded_slashes: raw.allow_encoded_slashes.unwrap_or(false),
            upgrades,
            facade,
        })
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn parse_base_url(text: &str) -> Result<(Scheme, Authority, String), String> {
    if let Some(rest) = text.split_once("://").map(|(_, rest)| rest) {
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!("{text:?} has no host"));
        }
    }
    let uri: Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    let scheme = match uri.scheme() {
        Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => s.clone(),
        _ => {
            return Err(format!(
                "{text:?} must be an absolute http:// or https:// URL"
            ))
        }
    };
    let Some(authority) = uri.authority().cloned().filter(|a| !a.host().is_empty()) else {
        return Err(format!("{text:?} has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "{text:?}: credentials in the URL are not supported"
        ));
    }
    if uri.query().is_some() {
        return Err(format!("{text:?}: a backend URL cannot carry a query"));
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    Ok((scheme, authority, base_path))
}

/// A continuation secret: long enough to be worth deriving a key from.
fn secret(text: &str) -> Result<Arc<[u8]>, String> {
    if text.len() < 32 {
        return Err(format!(
            "is {} bytes; use at least 32 random bytes (e.g. `openssl rand -base64 32`)",
            text.len()
        ));
    }
    Ok(Arc::from(text.as_bytes()))
}

/// `10.0.0.0/8`, `2001:db8::/32`, or a single address.
fn parse_cidr(text: &str) -> Result<ipnet::IpNet, String> {
    let parsed = text
        .parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
    parsed.map(|net| net.trunc()).map_err(|_| {
        format!("{text:?} is not an address or CIDR block, e.g. \"10.0.0.0/8\" or \"192.0.2.7\"")
    })
}

fn parse_method(text: &str) -> Result<Method, String> {
    if text != text.to_ascii_uppercase() {
        return Err(format!(
            "method {text:?} must be upper case (methods are case-sensitive): did you mean {:?}?",
            text.to_ascii_uppercase()
        ));
    }
    Method::from_bytes(text.as_bytes()).map_err(|_| format!("{text:?} is not an HTTP method"))
}

fn parse_prefix(text: &str) -> Result<String, String> {
    if !text.starts_with('/') || (text.len() > 1 && text.ends_with('/')) {
        return Err(format!(
            "{text:?} must start with `/` and not end with one, e.g. \"/api\""
        ));
    }
    if text.contains(['?', '#', '*', '{']) {
        return Err(format!("{text:?} must be a plain path prefix"));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("abc", 0), (1, 1));
        assert_eq!(line_column("a\nbc", 3), (2, 2));
        assert_eq!(line_column("a\nbc", 99), (2, 3));
    }

    #[test]
    fn base_urls() {
        let (s, a, p) = parse_base_url("https://h:8443/v1/").unwrap();
        assert_eq!(
            (s.as_str(), a.as_str(), p.as_str()),
            ("https", "h:8443", "/v1")
        );
        assert!(parse_base_url("ftp://h").is_err());
        assert!(parse_base_url("/relative").is_err());
        assert!(parse_base_url("http://u:p@h").is_err());
        assert!(parse_base_url("http://h/?q=1").is_err());
    }

    #[test]
    fn prefixes_and_methods() {
        assert_eq!(parse_prefix("/").unwrap(), "");
        assert_eq!(parse_prefix("/api").unwrap(), "/api");
        assert!(parse_prefix("api").is_err());
        assert!(parse_prefix("/api/").is_err());
        assert_eq!(parse_method("PATCH").unwrap(), Method::PATCH);
        assert!(parse_method("post").unwrap_err().contains("POST"));
    }
}

//! The `[server]` table: listeners, request limits, connection timeouts,
//! continuation secrets and the callback endpoint, validated into a
//! [`ServerConfig`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::context::Cx;
use super::raw::RawServer;
use super::{defaults, ConfigError};

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

/// The key of a `[server]` setting, built only when an error needs it.
fn key(k: &'static str) -> impl FnOnce() -> String {
    move || format!("server.{k}")
}

impl Cx<'_> {
    /// Keys are read in the order of [`ServerConfig`]'s fields, helpers
    /// included, so a file with several mistakes reports the first of them.
    pub(super) fn server(&self, raw: &RawServer) -> Result<ServerConfig, ConfigError> {
        let (listen, admin) = self.listeners(raw)?;
        let (max_header_size, max_request_body, header_read_timeout) = self.request_limits(raw)?;
        let max_connections = self.count(
            raw.max_connections.as_ref(),
            key("max_connections"),
            defaults::MAX_CONNECTIONS,
            1..=1_000_000,
        )?;
        let shutdown_grace = self.duration(
            raw.shutdown_grace.as_ref(),
            key("shutdown_grace"),
            defaults::SHUTDOWN_GRACE,
        )?;
        let max_held = self.count(
            raw.max_held.as_ref(),
            key("max_held"),
            defaults::MAX_HELD,
            1..=1_000_000,
        )?;
        let threads = self.threads(raw)?;
        let (continuation_key, continuation_keys, continuation_ttl) = self.continuation(raw)?;
        let idempotency_memory = self.size(
            raw.idempotency_memory.as_ref(),
            key("idempotency_memory"),
            defaults::IDEMPOTENCY_MEMORY,
            1..=u64::MAX,
        )?;
        let redact_headers = self.redact_headers(raw)?;
        let (callback_listen, callback_url) = self.callback_endpoint(raw)?;
        let trusted_proxies = self.trusted_proxies(raw)?;
        let (idle_timeout, body_read_timeout) = self.connection_timeouts(raw)?;
        let (http2_keep_alive_interval, http2_keep_alive_timeout) = self.http2_keep_alive(raw)?;
        let (request_buffering, request_buffer_memory) = self.request_buffering(raw)?;
        Ok(ServerConfig {
            listen,
            admin,
            max_header_size,
            max_request_body,
            header_read_timeout,
            keep_alive: raw.keep_alive.unwrap_or(true),
            max_connections,
            shutdown_grace,
            max_held,
            threads,
            continuation_key,
            continuation_keys,
            continuation_ttl,
            idempotency_memory,
            redact_headers,
            callback_listen,
            callback_url,
            trusted_proxies,
            idle_timeout,
            body_read_timeout,
            http2_keep_alive_interval,
            http2_keep_alive_timeout,
            request_buffering,
            request_buffer_memory,
        })
    }

    /// `(listen, admin)`.
    fn listeners(&self, raw: &RawServer) -> Result<(SocketAddr, Option<SocketAddr>), ConfigError> {
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
        Ok((listen, admin))
    }

    /// `(max_header_size, max_request_body, header_read_timeout)`.
    fn request_limits(&self, raw: &RawServer) -> Result<(usize, u64, Duration), ConfigError> {
        let max_header_size = self.size(
            raw.max_header_size.as_ref(),
            key("max_header_size"),
            defaults::MAX_HEADER_SIZE as u64,
            1024..=1024 * 1024,
        )? as usize;
        let max_request_body = self.size(
            raw.max_request_body.as_ref(),
            key("max_request_body"),
            defaults::MAX_REQUEST_BODY,
            1..=u64::MAX,
        )?;
        let header_read_timeout = self.duration(
            raw.header_read_timeout.as_ref(),
            key("header_read_timeout"),
            defaults::HEADER_READ_TIMEOUT,
        )?;
        Ok((max_header_size, max_request_body, header_read_timeout))
    }

    fn threads(&self, raw: &RawServer) -> Result<usize, ConfigError> {
        Ok(
            match self.count(raw.threads.as_ref(), key("threads"), 0, 0..=1024)? {
                0 => std::thread::available_parallelism().map_or(1, usize::from),
                n => n,
            },
        )
    }

    /// `(continuation_key, continuation_keys, continuation_ttl)`.
    fn continuation(
        &self,
        raw: &RawServer,
    ) -> Result<(Option<Secret>, Vec<Secret>, Duration), ConfigError> {
        let current = match &raw.continuation_key {
            None => None,
            Some(k) => Some(self.value(k, key("continuation_key"), secret)?),
        };
        let earlier = raw
            .continuation_keys
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, k)| self.value(k, || format!("server.continuation_keys[{i}]"), secret))
            .collect::<Result<_, _>>()?;
        let ttl = self.duration(
            raw.continuation_ttl.as_ref(),
            key("continuation_ttl"),
            defaults::CONTINUATION_TTL,
        )?;
        Ok((current, earlier, ttl))
    }

    fn redact_headers(&self, raw: &RawServer) -> Result<Vec<http::HeaderName>, ConfigError> {
        raw.redact_headers
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
            .collect::<Result<_, _>>()
    }

    /// `(callback_listen, callback_url)`; without a URL, callbacks go to
    /// the listener's own address.
    fn callback_endpoint(
        &self,
        raw: &RawServer,
    ) -> Result<(Option<SocketAddr>, Option<String>), ConfigError> {
        let listen = match &raw.callback_listen {
            Some(v) => Some(self.address(v, key("callback_listen"))?),
            None => None,
        };
        let url = match &raw.callback_url {
            None => raw
                .callback_listen
                .as_ref()
                .and_then(|v| v.get_ref().parse::<SocketAddr>().ok())
                .map(|addr| format!("http://{addr}")),
            Some(v) => Some(self.value(v, key("callback_url"), |u| {
                let url = url::Url::parse(u).map_err(|e| format!("{u:?} is not a URL ({e})"))?;
                if !matches!(url.scheme(), "http" | "https") || url.query().is_some() {
                    return Err(format!("{u:?} must be an http(s) base URL without a query"));
                }
                Ok(u.trim_end_matches('/').to_owned())
            })?),
        };
        Ok((listen, url))
    }

    fn trusted_proxies(&self, raw: &RawServer) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        raw.trusted_proxies
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, cidr)| {
                self.value(cidr, || format!("server.trusted_proxies[{i}]"), parse_cidr)
            })
            .collect::<Result<_, _>>()
    }

    /// `(idle_timeout, body_read_timeout)`.
    fn connection_timeouts(&self, raw: &RawServer) -> Result<(Duration, Duration), ConfigError> {
        let idle = self.duration(
            raw.idle_timeout.as_ref(),
            key("idle_timeout"),
            defaults::IDLE_TIMEOUT,
        )?;
        let body_read = self.duration(
            raw.body_read_timeout.as_ref(),
            key("body_read_timeout"),
            defaults::BODY_READ_TIMEOUT,
        )?;
        Ok((idle, body_read))
    }

    /// `(http2_keep_alive_interval, http2_keep_alive_timeout)`.
    fn http2_keep_alive(&self, raw: &RawServer) -> Result<(Duration, Duration), ConfigError> {
        let interval = self.duration(
            raw.http2_keep_alive_interval.as_ref(),
            key("http2_keep_alive_interval"),
            defaults::HTTP2_KEEP_ALIVE_INTERVAL,
        )?;
        let timeout = self.duration(
            raw.http2_keep_alive_timeout.as_ref(),
            key("http2_keep_alive_timeout"),
            defaults::HTTP2_KEEP_ALIVE_TIMEOUT,
        )?;
        Ok((interval, timeout))
    }

    /// `(request_buffering, request_buffer_memory)`.
    fn request_buffering(&self, raw: &RawServer) -> Result<(Option<u64>, u64), ConfigError> {
        let buffering = self.buffering(raw.request_buffering.as_ref(), key("request_buffering"))?;
        let memory = self.size(
            raw.request_buffer_memory.as_ref(),
            key("request_buffer_memory"),
            defaults::REQUEST_BUFFER_MEMORY,
            0..=u64::MAX,
        )?;
        Ok((buffering, memory))
    }
}

/// The bytes of a continuation secret, as [`ServerConfig`] holds them.
type Secret = Arc<[u8]>;

/// A continuation secret: long enough to be worth deriving a key from.
fn secret(text: &str) -> Result<Secret, String> {
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

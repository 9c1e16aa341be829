//! The serde mirror of the TOML file: shapes only, no meaning.
//!
//! Every table denies unknown keys, so a typo is an error rather than a
//! silently ignored setting. Values that need parsing or cross-checking are
//! kept as `Spanned` strings, so the validation in `config.rs` can point at
//! the exact line and column of a bad value. Defaults live there too, next
//! to the types they fill.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub backends: BTreeMap<String, Spanned<RawBackend>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
    pub cluster: Option<Spanned<RawCluster>>,
}

/// `[cluster]`: Redis as the shared engine of many instances.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub redis: Spanned<String>,
    pub namespace: Option<Spanned<String>>,
    pub lease: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<Spanned<String>>,
    pub admin: Option<Spanned<String>>,
    pub max_header_size: Option<Spanned<String>>,
    pub max_request_body: Option<Spanned<String>>,
    pub header_read_timeout: Option<Spanned<String>>,
    pub keep_alive: Option<bool>,
    pub max_connections: Option<Spanned<i64>>,
    pub shutdown_grace: Option<Spanned<String>>,
    pub max_held: Option<Spanned<i64>>,
    pub threads: Option<Spanned<i64>>,
    pub continuation_key: Option<Spanned<String>>,
    pub continuation_keys: Option<Vec<Spanned<String>>>,
    pub continuation_ttl: Option<Spanned<String>>,
    pub idempotency_memory: Option<Spanned<String>>,
    pub redact_headers: Option<Vec<Spanned<String>>>,
    pub callback_listen: Option<Spanned<String>>,
    pub callback_url: Option<Spanned<String>>,
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub body_read_timeout: Option<Spanned<String>>,
    pub http2_keep_alive_interval: Option<Spanned<String>>,
    pub http2_keep_alive_timeout: Option<Spanned<String>>,
    pub request_buffering: Option<Spanned<String>>,
    pub request_buffer_memory: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub url: Spanned<String>,
    pub connect_timeout: Option<Spanned<String>>,
    pub response_timeout: Option<Spanned<String>>,
    pub pool_idle_timeout: Option<Spanned<String>>,
    pub pool_max_idle: Option<Spanned<i64>>,
    pub preserve_host: Option<bool>,
    pub ca_file: Option<Spanned<String>>,
    pub body_idle_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Spanned<String>,
    #[serde(rename = "match")]
    pub matcher: Spanned<RawMatch>,
    pub backend: Spanned<String>,
    pub strip_prefix: Option<Spanned<String>>,
    pub add_prefix: Option<Spanned<String>>,
    pub max_request_body: Option<Spanned<String>>,
    pub request_buffering: Option<Spanned<String>>,
    pub allow_encoded_slashes: Option<bool>,
    pub upgrades: Option<Vec<Spanned<String>>>,
    /// Present: the route is a sync facade over a job API.
    #[serde(rename = "async")]
    pub facade: Option<Spanned<RawAsync>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    pub path: Spanned<String>,
    pub host: Option<Spanned<String>>,
}

/// One value or a list of them (`header = "Location"` or
/// `header = ["Operation-Location", "Azure-AsyncOperation"]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub(crate) fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

/// `[routes.async]`. Every field is optional here because a preset may
/// supply it; `config.rs` merges the route over its preset.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAsync {
    pub preset: Option<Spanned<String>>,
    pub wait: Option<Spanned<String>>,
    pub max_wait: Option<Spanned<String>>,
    pub submit_headers: Option<BTreeMap<String, Spanned<String>>>,
    pub poll_headers: Option<BTreeMap<String, Spanned<String>>>,
    pub forward_headers: Option<Vec<Spanned<String>>>,
    pub allow_origins: Option<Vec<Spanned<String>>>,
    pub max_status_body: Option<Spanned<String>>,
    pub max_result_body: Option<Spanned<String>>,
    pub max_hops: Option<Spanned<i64>>,
    pub on_timeout: Option<Spanned<String>>,
    pub max_held: Option<Spanned<i64>>,
    #[serde(default)]
    pub idempotency: RawIdempotency,
    pub callback: Option<Spanned<RawCallback>>,
    #[serde(default)]
    pub job: RawJob,
    #[serde(default)]
    pub handle: RawHandle,
    #[serde(default)]
    pub state: RawState,
    #[serde(default)]
    pub result: RawResult,
    #[serde(default)]
    pub failure: RawFailure,
    #[serde(default)]
    pub poll: RawPoll,
    #[serde(default)]
    pub cancel: RawCancel,
}

/// Which submit answers are jobs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJob {
    pub statuses: Option<Spanned<Vec<Spanned<i64>>>>,
    pub needs_handle: Option<bool>,
}

/// Where the status monitor's URL (and the job id) come from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHandle {
    pub header: Option<Spanned<OneOrMany<String>>>,
    pub pointer: Option<Spanned<String>>,
    pub template: Option<Spanned<String>>,
    pub id_pointer: Option<Spanned<String>>,
}

/// How a status answer says what the job is doing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub running_statuses: Option<Spanned<Vec<Spanned<i64>>>>,
    pub redirect_statuses: Option<Spanned<Vec<Spanned<i64>>>>,
    pub not_found: Option<Spanned<String>>,
    pub pointer: Option<Spanned<String>>,
    pub running: Option<Vec<Spanned<String>>>,
    pub succeeded: Option<Vec<Spanned<String>>>,
    pub failed: Option<Vec<Spanned<String>>>,
    pub canceled: Option<Vec<Spanned<String>>>,
    pub done_pointer: Option<Spanned<String>>,
    pub error_pointer: Option<Spanned<String>>,
}

/// Where the finished job's result is.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResult {
    pub from: Option<Spanned<String>>,
    pub pointer: Option<Spanned<String>>,
    pub template: Option<Spanned<String>>,
}

/// What a failed job answers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailure {
    pub status: Option<Spanned<i64>>,
    pub pointers: Option<Vec<Spanned<String>>>,
}

/// The polling schedule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPoll {
    pub initial: Option<Spanned<String>>,
    pub factor: Option<Spanned<f64>>,
    pub jitter: Option<Spanned<f64>>,
    pub min_interval: Option<Spanned<String>>,
    pub max_interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub max_failures: Option<Spanned<i64>>,
    pub adaptive: Option<bool>,
}

/// Canceling the job when nobody waits for it any more.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCancel {
    pub on_disconnect: Option<bool>,
    pub on_timeout: Option<bool>,
    pub method: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
}

/// `Idempotency-Key` handling for an async route.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdempotency {
    pub enabled: Option<bool>,
    pub header: Option<Spanned<String>>,
    pub scope_header: Option<Spanned<String>>,
    pub ttl: Option<Spanned<String>>,
    pub max_stored_body: Option<Spanned<String>>,
}

/// Completion by callback (dialect F).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCallback {
    pub mode: Option<Spanned<String>>,
    pub header: Option<Spanned<String>>,
    pub pointer: Option<Spanned<String>>,
    pub secret: Option<Spanned<String>>,
    pub signature_header: Option<Spanned<String>>,
    pub status_header: Option<Spanned<String>>,
    pub result_pointer: Option<Spanned<String>>,
    pub poll_interval: Option<Spanned<String>>,
}

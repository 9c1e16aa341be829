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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    pub path: Spanned<String>,
    pub host: Option<Spanned<String>>,
}

//! A `[[routes]]` entry: what it matches, which backend it forwards to and
//! how the path is rewritten, validated into a [`Route`]. Its `async`
//! table, if any, is the facade module's.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;
use toml::Spanned;

use super::context::{valid_name, Cx};
use super::raw::{RawMatch, RawRoute};
use super::router::{HostPattern, PathPattern};
use super::{defaults, AsyncRoute, BackendConfig, ConfigError};

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

impl Cx<'_> {
    pub(super) fn route(
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
        let methods = self.methods(index, matcher)?;
        let path = self.value(&matcher.path, key("match.path"), PathPattern::parse)?;
        let host = match &matcher.host {
            Some(h) => Some(self.value(h, key("match.host"), HostPattern::parse)?),
            None => None,
        };
        let backend = self.value(&raw.backend, key("backend"), |b| known_backend(b, backends))?;
        let strip_prefix = match &raw.strip_prefix {
            Some(p) => Some(self.value(p, key("strip_prefix"), parse_prefix)?),
            None => None,
        };
        let add_prefix = match &raw.add_prefix {
            Some(p) => Some(self.value(p, key("add_prefix"), parse_prefix)?),
            None => None,
        };
        let facade = self.route_facade(index, raw, &methods)?;
        let max_request_body = match &raw.max_request_body {
            None => None,
            Some(_) => Some(self.size(
                raw.max_request_body.as_ref(),
                key("max_request_body"),
                0,
                1..=u64::MAX,
            )?),
        };
        let upgrades = self.upgrades(index, raw.upgrades.as_ref())?;
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

    fn methods(&self, index: usize, matcher: &RawMatch) -> Result<Vec<Method>, ConfigError> {
        let mut methods = Vec::with_capacity(matcher.methods.len());
        for (i, method) in matcher.methods.iter().enumerate() {
            let method = self.value(
                method,
                || format!("routes[{index}].match.methods[{i}]"),
                parse_method,
            )?;
            methods.push(method);
        }
        Ok(methods)
    }

    /// The route's `async` table; a route that only reads (GET, HEAD) has
    /// no retry that could start a second job, which changes its defaults.
    fn route_facade(
        &self,
        index: usize,
        raw: &RawRoute,
        methods: &[Method],
    ) -> Result<Option<Arc<AsyncRoute>>, ConfigError> {
        let only_get = !methods.is_empty()
            && methods
                .iter()
                .all(|m| *m == Method::GET || *m == Method::HEAD);
        Ok(match &raw.facade {
            Some(table) => Some(Arc::new(self.facade(index, table, only_get)?)),
            None => None,
        })
    }

    fn upgrades(
        &self,
        index: usize,
        raw: Option<&Vec<Spanned<String>>>,
    ) -> Result<Vec<String>, ConfigError> {
        let Some(list) = raw else {
            return Ok(defaults::UPGRADES.iter().map(|p| (*p).to_owned()).collect());
        };
        list.iter()
            .enumerate()
            .map(|(i, protocol)| {
                self.value(
                    protocol,
                    || format!("routes[{index}].upgrades[{i}]"),
                    parse_protocol,
                )
            })
            .collect::<Result<_, _>>()
    }
}

fn known_backend(
    name: &str,
    backends: &HashMap<&str, Arc<BackendConfig>>,
) -> Result<Arc<BackendConfig>, String> {
    backends.get(name).cloned().ok_or_else(|| {
        let mut known: Vec<&str> = backends.keys().copied().collect();
        known.sort_unstable();
        format!(
            "unknown backend {name:?}; defined backends: [{}]",
            known.join(", ")
        )
    })
}

/// An `Upgrade` protocol token, compared in lower case.
fn parse_protocol(p: &str) -> Result<String, String> {
    let valid = !p.is_empty()
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._/".contains(&b));
    if valid {
        Ok(p.to_ascii_lowercase())
    } else {
        Err(format!("{p:?} is not a protocol name like \"websocket\""))
    }
}

pub(super) fn parse_method(text: &str) -> Result<Method, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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

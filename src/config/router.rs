//! Request → route: the ordered route table, first match wins.
//!
//! Patterns are parsed once, when the config is validated, into segments;
//! matching walks the request path without allocating. Three shapes cover
//! what users write: exact (`/orders`), prefix (`/api/*`, which also matches
//! `/api` itself) and named segments (`/orders/{id}`, one non-empty segment
//! each), freely combined (`/tenants/{t}/jobs/*`).

use http::Method;

use crate::config::Route;

/// A parsed path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    /// As written, for display.
    text: Box<str>,
    segments: Box<[Segment]>,
    /// Ends in `/*`: any further segments (including none) match.
    tail: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    Param(Box<str>),
}

impl PathPattern {
    /// Parses `/orders`, `/api/*` or `/orders/{id}`; the error says what is
    /// wrong in words a config author can act on.
    pub(crate) fn parse(pattern: &str) -> Result<Self, String> {
        let Some(rest) = pattern.strip_prefix('/') else {
            return Err(format!("path pattern {pattern:?} must start with `/`"));
        };
        let mut parts: Vec<&str> = rest.split('/').collect();
        let tail = parts.last() == Some(&"*");
        if tail {
            parts.pop();
        }
        let mut segments = Vec::with_capacity(parts.len());
        let mut names: Vec<&str> = Vec::new();
        for part in parts {
            if part.contains('*') {
                return Err(format!(
                    "path pattern {pattern:?}: `*` is only allowed as the whole last segment (`/prefix/*`)"
                ));
            }
            if let Some(inner) = part.strip_prefix('{') {
                let Some(name) = inner.strip_suffix('}') else {
                    return Err(format!(
                        "path pattern {pattern:?}: segment {part:?} opens `{{` without closing it"
                    ));
                };
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(format!(
                        "path pattern {pattern:?}: parameter name {name:?} must be letters, digits or `_`"
                    ));
                }
                if names.contains(&name) {
                    return Err(format!(
                        "path pattern {pattern:?}: parameter `{name}` appears twice"
                    ));
                }
                names.push(name);
                segments.push(Segment::Param(name.into()));
            } else if part.contains(['{', '}']) {
                return Err(format!(
                    "path pattern {pattern:?}: a parameter must be a whole segment, like `/{{id}}`"
                ));
            } else {
                segments.push(Segment::Literal(part.into()));
            }
        }
        Ok(PathPattern {
            text: pattern.into(),
            segments: segments.into(),
            tail,
        })
    }

    pub fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = rest.split('/');
        for segment in self.segments.iter() {
            match (segment, parts.next()) {
                (Segment::Literal(lit), Some(part)) if **lit == *part => {}
                (Segment::Param(_), Some(part)) if !part.is_empty() => {}
                _ => return false,
            }
        }
        self.tail || parts.next().is_none()
    }
}

impl std::fmt::Display for PathPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::AnySubdomain(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// A host to match: exact (`api.example.com`) or a wildcard for any
/// subdomain (`*.example.com`). Compared case-insensitively, port ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(Box<str>),
    /// Stored with its leading dot: `.example.com`.
    AnySubdomain(Box<str>),
}

impl HostPattern {
    pub(crate) fn parse(pattern: &str) -> Result<Self, String> {
        let lower = pattern.to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(name) => (true, name),
            None => (false, lower.as_str()),
        };
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid {
            return Err(format!(
                "host pattern {pattern:?} must be a host name like `api.example.com` or `*.example.com`, without a port"
            ));
        }
        Ok(if wild {
            HostPattern::AnySubdomain(format!(".{name}").into())
        } else {
            HostPattern::Exact(name.into())
        })
    }

    pub fn matches(&self, host: &str) -> bool {
        let host = strip_port(host);
        match self {
            HostPattern::Exact(name) => host.eq_ignore_ascii_case(name),
            HostPattern::AnySubdomain(suffix) => {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // An IPv6 literal keeps its brackets; only what follows `]` is a port.
        return host
            .split_once(']')
            .map_or(host, |(ip, _)| &host[..ip.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// The first route, in file order, that accepts this request.
pub fn find<'a>(
    routes: &'a [Route],
    method: &Method,
    host: Option<&str>,
    path: &str,
) -> Option<&'a Route> {
    position(routes, method, host, path).map(|i| &routes[i])
}

/// Where [`find`]'s route is in the table.
pub(crate) fn position(
    routes: &[Route],
    method: &Method,
    host: Option<&str>,
    path: &str,
) -> Option<usize> {
    routes.iter().position(|route| {
        (route.methods.is_empty() || route.methods.contains(method))
            && route
                .host
                .as_ref()
                .is_none_or(|pattern| host.is_some_and(|h| pattern.matches(h)))
            && route.path.matches(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, path: &str) -> bool {
        PathPattern::parse(pattern).unwrap().matches(path)
    }

    #[test]
    fn exact_prefix_and_params() {
        assert!(m("/orders", "/orders"));
        assert!(!m("/orders", "/orders/1"));
        assert!(!m("/orders", "/order"));
        assert!(m("/api/*", "/api"));
        assert!(m("/api/*", "/api/"));
        assert!(m("/api/*", "/api/v1/x"));
        assert!(!m("/api/*", "/apix"));
        assert!(m("/*", "/"));
        assert!(m("/*", "/anything/at/all"));
        assert!(m("/", "/"));
        assert!(!m("/", "/x"));
        assert!(m("/orders/{id}", "/orders/42"));
        assert!(!m("/orders/{id}", "/orders/"));
        assert!(!m("/orders/{id}", "/orders/42/items"));
        assert!(m("/t/{t}/jobs/*", "/t/acme/jobs/1/2"));
        assert!(!m("/t/{t}/jobs/*", "/t//jobs/1"));
    }

    #[test]
    fn bad_patterns_are_explained() {
        for (pattern, needle) in [
            ("orders", "must start with `/`"),
            ("/a*/b", "`*` is only allowed"),
            ("/a/*/b", "`*` is only allowed"),
            ("/{id", "without closing"),
            ("/{}", "parameter name"),
            ("/{a}/{a}", "appears twice"),
            ("/x{a}", "whole segment"),
        ] {
            let err = PathPattern::parse(pattern).unwrap_err();
            assert!(err.contains(needle), "{pattern}: {err}");
        }
    }

    #[test]
    fn hosts() {
        let exact = HostPattern::parse("API.example.com").unwrap();
        assert!(exact.matches("api.example.com:8080"));
        assert!(!exact.matches("x.api.example.com"));
        let wild = HostPattern::parse("*.example.com").unwrap();
        assert!(wild.matches("a.example.com"));
        assert!(wild.matches("A.B.Example.com:1"));
        assert!(!wild.matches("example.com"));
        assert!(HostPattern::parse("a b").is_err());
        assert!(HostPattern::parse("a:80").is_err());
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}

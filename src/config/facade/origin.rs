//! Origins (scheme, host, port): the backend's own, and the others an
//! async route's `allow_origins` lets followed URLs point to.

use http::uri::{Authority, Scheme};
use http::Uri;

/// A scheme, host and port that followed URLs may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
}

impl Origin {
    pub(crate) fn of(scheme: &Scheme, authority: &Authority) -> Origin {
        let port = authority
            .port_u16()
            .unwrap_or(if *scheme == Scheme::HTTPS { 443 } else { 80 });
        Origin {
            scheme: scheme.clone(),
            host: authority.host().to_ascii_lowercase(),
            port,
        }
    }
}

pub(super) fn parse_origin(text: &str) -> Result<Origin, String> {
    let uri: Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not an origin: {e}"))?;
    match (uri.scheme(), uri.authority()) {
        (Some(scheme), Some(authority))
            if (*scheme == Scheme::HTTP || *scheme == Scheme::HTTPS)
                && uri.path_and_query().is_none_or(|p| p.as_str() == "/" || p.as_str().is_empty()) =>
        {
            Ok(Origin::of(scheme, authority))
        }
        _ => Err(format!("{text:?} is not an origin; write scheme://host[:port], e.g. \"https://files.example.com\"")),
    }
}

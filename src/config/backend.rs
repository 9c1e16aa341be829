//! A `[backends.NAME]` table: where a backend is, how long to wait for it
//! and which CAs to trust, validated into a [`BackendConfig`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Uri;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use toml::Spanned;

use super::context::{valid_name, Cx};
use super::raw::RawBackend;
use super::{defaults, ConfigError};

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

impl Cx<'_> {
    pub(super) fn backend(
        &self,
        name: &str,
        raw: &Spanned<RawBackend>,
    ) -> Result<BackendConfig, ConfigError> {
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
        let ca_certificates = self.ca_certificates(raw, &scheme, &base)?;
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

    /// The backend's own trust anchors; `None` leaves it to the system's.
    fn ca_certificates(
        &self,
        raw: &RawBackend,
        scheme: &Scheme,
        base: &str,
    ) -> Result<Option<Arc<[CertificateDer<'static>]>>, ConfigError> {
        let key = || format!("{base}.ca_file");
        match &raw.ca_file {
            None => Ok(None),
            Some(path) if *scheme != Scheme::HTTPS => Err(self.error(
                path.span(),
                key(),
                "a CA file only applies to an https:// backend".to_owned(),
            )),
            Some(path) => Ok(Some(self.value(path, key, |p| self.load_ca(p))?)),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

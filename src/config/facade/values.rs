//! The typed readers the async tables share: header names and maps,
//! status codes and lists of them, JSON pointers.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use toml::Spanned;

use crate::config::context::Cx;
use crate::config::ConfigError;

impl Cx<'_> {
    pub(super) fn headers(
        &self,
        raw: Option<&BTreeMap<String, Spanned<String>>>,
        at: impl Fn(&str) -> String,
    ) -> Result<HeaderMap, ConfigError> {
        let mut map = HeaderMap::new();
        for (name, value) in raw.into_iter().flatten() {
            let header = self.value(value, || at(name), |_| header_name(name))?;
            let value = self.value(
                value,
                || at(name),
                |v| {
                    HeaderValue::from_str(v)
                        .map_err(|_| format!("{v:?} is not a valid header value"))
                },
            )?;
            map.append(header, value);
        }
        Ok(map)
    }

    pub(super) fn statuses(
        &self,
        raw: Option<&Spanned<Vec<Spanned<i64>>>>,
        key: impl Fn() -> String,
        fallback: &[u16],
    ) -> Result<Vec<StatusCode>, ConfigError> {
        let Some(list) = raw else {
            return Ok(fallback
                .iter()
                .filter_map(|s| StatusCode::from_u16(*s).ok())
                .collect());
        };
        list.get_ref()
            .iter()
            .map(|s| self.status(s, &key, 100..=599))
            .collect()
    }

    pub(super) fn status(
        &self,
        raw: &Spanned<i64>,
        key: impl Fn() -> String,
        range: RangeInclusive<i64>,
    ) -> Result<StatusCode, ConfigError> {
        let n = *raw.get_ref();
        if !range.contains(&n) {
            return Err(self.error(
                raw.span(),
                key(),
                format!(
                    "{n} is not an HTTP status between {} and {}",
                    range.start(),
                    range.end()
                ),
            ));
        }
        StatusCode::from_u16(n as u16).map_err(|e| self.error(raw.span(), key(), e.to_string()))
    }

    pub(super) fn pointers(
        &self,
        raw: Option<&Vec<Spanned<String>>>,
        key: impl Fn(usize) -> String,
        fallback: &[&str],
    ) -> Result<Vec<String>, ConfigError> {
        match raw {
            None => Ok(fallback.iter().map(|s| (*s).to_owned()).collect()),
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, p)| self.value(p, || key(i), parse_pointer))
                .collect(),
        }
    }
}

pub(super) fn parse_pointer(text: &str) -> Result<String, String> {
    if text.is_empty() || text.starts_with('/') {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a JSON pointer (RFC 6901): it must start with `/`, e.g. \"/status\""
        ))
    }
}

pub(super) fn header_name(text: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(text.as_bytes())
        .map_err(|_| format!("{text:?} is not a valid header name"))
}

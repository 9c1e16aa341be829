//! The validation context every table's checks share: it turns a span into
//! a [`ConfigError`] naming file, line, column and key, deserializes the
//! TOML, and reads the typed values (durations, sizes, counts, addresses)
//! that appear in more than one table.

use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::raw::RawConfig;
use super::{defaults, ConfigError};

/// The validation context: where errors point.
pub(super) struct Cx<'a> {
    pub(super) file: &'a str,
    pub(super) source: &'a str,
    pub(super) dir: Option<&'a Path>,
}

impl Cx<'_> {
    pub(super) fn error(&self, span: Range<usize>, key: String, message: String) -> ConfigError {
        let (line, column) = line_column(self.source, span.start);
        ConfigError::Invalid {
            file: self.file.to_owned(),
            line,
            column,
            key,
            message,
        }
    }

    pub(super) fn deserialize(&self) -> Result<RawConfig, ConfigError> {
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
    pub(super) fn value<T>(
        &self,
        value: &Spanned<String>,
        key: impl FnOnce() -> String,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        parse(value.get_ref()).map_err(|message| self.error(value.span(), key(), message))
    }

    pub(super) fn duration(
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

    pub(super) fn size(
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

    pub(super) fn count(
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

    pub(super) fn address(
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

    /// `"off"` (stream every body, `Some(0)`) or a size.
    pub(super) fn buffering(
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
}

/// Route and backend names label metrics and the cluster namespace
/// prefixes Redis keys, so a name is kept to characters safe in both.
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
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
}

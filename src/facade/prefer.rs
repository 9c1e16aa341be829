//! The client's `Prefer` header (RFC 7240): `wait=N` to bound the hold,
//! `respond-async` to take the job API's own answer instead.

use std::time::Duration;

use http::header::{HeaderMap, HeaderName};

pub const PREFER: HeaderName = HeaderName::from_static("prefer");
pub(crate) const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Prefer {
    pub wait: Option<Duration>,
    pub respond_async: bool,
}

impl Prefer {
    pub fn parse(headers: &HeaderMap) -> Prefer {
        let mut prefer = Prefer::default();
        let tokens = headers
            .get_all(&PREFER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','));
        for token in tokens {
            // Parameters after `;` refine a preference; none of ours use them.
            let preference = token.split(';').next().unwrap_or("").trim();
            let (name, value) = match preference.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (preference, None),
            };
            if name.eq_ignore_ascii_case("respond-async") {
                prefer.respond_async = true;
            } else if name.eq_ignore_ascii_case("wait") {
                // RFC 7240: the first occurrence of a preference wins.
                if prefer.wait.is_none() {
                    prefer.wait = value.and_then(|v| v.parse().ok()).map(Duration::from_secs);
                }
            }
        }
        prefer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn parse(values: &[&'static str]) -> Prefer {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(&PREFER, HeaderValue::from_static(v));
        }
        Prefer::parse(&h)
    }

    #[test]
    fn preferences() {
        assert_eq!(parse(&[]), Prefer::default());
        assert_eq!(
            parse(&["respond-async, wait=10"]),
            Prefer {
                wait: Some(Duration::from_secs(10)),
                respond_async: true
            }
        );
        assert_eq!(
            parse(&["wait=\"5\"", "wait=9"]).wait,
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse(&["WAIT = 3 ; x=y"]).wait,
            Some(Duration::from_secs(3))
        );
        assert_eq!(parse(&["wait=soon"]).wait, None);
        assert_eq!(parse(&["handling=lenient"]), Prefer::default());
    }
}

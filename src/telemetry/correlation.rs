//! Correlation: the `X-Request-Id` and W3C `traceparent` every request
//! carries to each backend call and back to its client, so one client
//! request can be found in every log it touched.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::headers::{detached, X_REQUEST_ID};

pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The client's `X-Request-Id` when it is a sane token, else a fresh one;
/// either way it is set on `headers` so every backend call carries it.
pub(crate) fn request_id(headers: &mut HeaderMap) -> HeaderValue {
    let sane = |v: &HeaderValue| {
        (1..=128).contains(&v.len()) && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    };
    if let Some(id) = headers.get(X_REQUEST_ID).filter(|v| sane(v)) {
        // Kept for the whole request: see `detached`.
        return detached(id);
    }
    let mut id = [0u8; 32];
    spell(&fastrand::u128(..).to_be_bytes(), &mut id);
    let id = hex_value(&id);
    headers.insert(X_REQUEST_ID, id.clone());
    id
}

/// Continues the client's trace when it sent a valid `traceparent`, else
/// starts one; the value is set on `headers` for the backend calls.
pub(crate) fn traceparent(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(value) = headers
        .get(&TRACEPARENT)
        .filter(|v| valid_traceparent(v.as_bytes()))
    {
        return detached(value);
    }
    let mut text = *b"00-................................-................-01";
    spell(&fastrand::u128(1..).to_be_bytes(), &mut text[3..35]);
    spell(&fastrand::u64(1..).to_be_bytes(), &mut text[36..52]);
    let value = hex_value(&text);
    headers.insert(TRACEPARENT, value.clone());
    value
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, ids not zero.
fn valid_traceparent(v: &[u8]) -> bool {
    let hex = |s: &[u8]| {
        s.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    let zero = |s: &[u8]| s.iter().all(|b| *b == b'0');
    v.len() == 55
        && &v[..3] == b"00-"
        && v[35] == b'-'
        && v[52] == b'-'
        && hex(&v[3..35])
        && hex(&v[36..52])
        && hex(&v[53..55])
        && !zero(&v[3..35])
        && !zero(&v[36..52])
}

fn hex_value(text: &[u8]) -> HeaderValue {
    // Only ASCII hex digits and dashes reach here.
    HeaderValue::from_bytes(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Spells `bytes` in lower-case hex into `out`, which holds exactly twice
/// as many: ids are made on every request, without a heap allocation.
fn spell(bytes: &[u8], out: &mut [u8]) {
    // The lengths are fixed by the callers above; a mismatch is a bug the
    // tests catch, and never reachable from input.
    let spelled = hex::encode_to_slice(bytes, out);
    debug_assert!(spelled.is_ok());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_kept_when_valid_and_started_otherwise() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = HeaderMap::new();
        h.insert(&TRACEPARENT, HeaderValue::from_static(good));
        assert_eq!(traceparent(&mut h), good);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let mut h = HeaderMap::new();
            h.insert(&TRACEPARENT, HeaderValue::from_static(bad));
            let fresh = traceparent(&mut h);
            assert_ne!(fresh, bad);
            assert!(valid_traceparent(fresh.as_bytes()), "{fresh:?}");
            assert_eq!(h[&TRACEPARENT], fresh);
        }
    }
}

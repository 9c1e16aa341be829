//! Header hygiene between two hops: what must not cross a proxy, and what a
//! proxy adds so the far side knows where a request came from.
//!
//! Hop-by-hop fields describe one connection (RFC 9110 §7.6.1): forwarding
//! them would make the backend or the client act on a connection that is
//! not theirs (say, `Transfer-Encoding` framing or a `Connection: close`).

use std::fmt::Write as _;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Version;

const HOP_BY_HOP_COUNT: usize = 10;

/// Fields that are hop-by-hop by definition, whatever `Connection` says.
/// `Expect` is answered by Baton's own server (it sends the `100 Continue`),
/// so passing it on would ask the backend for a second one.
const HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::EXPECT,
];

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Removes the hop-by-hop fields and every field the `Connection` header
/// names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names a message has (a handful), rather than a
    // hashed removal of each of the ten: this runs twice per request, and
    // most messages carry none of them or only `Connection`.
    let mut present: [Option<HeaderName>; HOP_BY_HOP_COUNT] = Default::default();
    for (slot, name) in present
        .iter_mut()
        .zip(headers.keys().filter(|name| HOP_BY_HOP.contains(name)))
    {
        *slot = Some(name.clone());
    }
    if present[0].is_none() {
        return;
    }
    // Only allocate when a sender actually listed extra fields; the usual
    // `keep-alive` / `close` tokens name nothing else to remove.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named.into_iter().chain(present.into_iter().flatten()) {
        headers.remove(name);
    }
}

/// The protocol a request asks to upgrade to (`websocket`), if it asks.
/// Only HTTP/1.1 can upgrade, and only when `Connection` lists `upgrade`.
pub fn upgrade_protocol(version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != Version::HTTP_11 {
        return None;
    }
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Restores the two fields an upgrade needs after hygiene removed them.
pub fn set_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Appends the client to `X-Forwarded-For` (keeping what earlier proxies
/// wrote) and says how and to which host the client connected.
/// The longest text of an IP address (IPv6 with an embedded IPv4).
const MAX_IP_TEXT: usize = 45;

pub fn add_forwarded(headers: &mut HeaderMap, client: IpAddr, host: Option<&HeaderValue>) {
    // One allocation, sized up front: this runs on every request.
    let earlier = headers.get_all(&X_FORWARDED_FOR);
    let mut chain =
        String::with_capacity(earlier.iter().map(|v| v.len() + 2).sum::<usize>() + MAX_IP_TEXT);
    for value in earlier {
        if let Ok(v) = value.to_str() {
            chain.push_str(v);
            chain.push_str(", ");
        }
    }
    // Writing into a String cannot fail.
    let _ = write!(chain, "{client}");
    if let Ok(value) = HeaderValue::try_from(chain) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
}

/// Appends this hop to `Via` (RFC 9110 §7.6.3), received-protocol first.
pub fn add_via(headers: &mut HeaderMap, version: Version) {
    let hop = match version {
        Version::HTTP_09 => "0.9 baton",
        Version::HTTP_10 => "1.0 baton",
        Version::HTTP_2 => "2 baton",
        Version::HTTP_3 => "3 baton",
        _ => "1.1 baton",
    };
    headers.append(header::VIA, HeaderValue::from_static(hop));
}

/// Bytes the request line and header fields take on the wire, as a client
/// sent them (name, `: `, value, CRLF), to enforce the header size limit
/// for HTTP/1 and HTTP/2 alike.
pub fn header_size(method_len: usize, target_len: usize, headers: &HeaderMap) -> usize {
    headers
        .iter()
        .fold(method_len + target_len + 12, |sum, (name, value)| {
            sum + name.as_str().len() + value.len() + 4
        })
}

/// Headers whose values are credentials, whatever the configuration says.
const SECRET: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
    header::SET_COOKIE,
];

/// Headers for a log line: names kept, the values of credentials (and of
/// the configured secret headers) replaced.
pub struct Redacted<'a> {
    headers: &'a HeaderMap,
    secret: &'a [HeaderName],
}

impl<'a> Redacted<'a> {
    pub fn new(headers: &'a HeaderMap, secret: &'a [HeaderName]) -> Self {
        Redacted { headers, secret }
    }
}

impl std::fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in self.headers {
            if SECRET.contains(name) || self.secret.contains(name) {
                map.entry(&name.as_str(), &"<redacted>");
            } else {
                map.entry(&name.as_str(), &String::from_utf8_lossy(value.as_bytes()));
            }
        }
        map.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_listed_and_named_fields() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn strips_every_listed_field_with_all_its_values() {
        let mut h = HeaderMap::new();
        for name in &HOP_BY_HOP {
            h.append(name, HeaderValue::from_static("a"));
            h.append(name, HeaderValue::from_static("b"));
        }
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");

        let mut plain = HeaderMap::new();
        plain.insert(header::HOST, HeaderValue::from_static("example.test"));
        plain.insert("x-kept", HeaderValue::from_static("1"));
        let before = plain.clone();
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain, before);
    }

    #[test]
    fn redaction_hides_credentials_and_configured_secrets() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        h.insert(header::COOKIE, HeaderValue::from_static("sid=s3cret"));
        h.insert("x-api-key", HeaderValue::from_static("s3cret"));
        h.insert("x-plain", HeaderValue::from_static("visible"));
        let secret = [HeaderName::from_static("x-api-key")];
        let shown = format!("{:?}", Redacted::new(&h, &secret));
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("visible") && shown.contains("authorization"),
            "{shown}"
        );
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("2.2.2.2"));
        add_forwarded(&mut h, "10.0.0.1".parse().unwrap(), None);
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 10.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
    }

    #[test]
    fn upgrade_needs_connection_token() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(upgrade_protocol(Version::HTTP_11, &h).is_none());
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(upgrade_protocol(Version::HTTP_11, &h).unwrap(), "websocket");
        assert!(upgrade_protocol(Version::HTTP_10, &h).is_none());
    }
}

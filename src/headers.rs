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

const HOP_BY_HOP_COUNT: usize = 11;

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
    // Only meaningful beside `Upgrade: h2c` (RFC 7540 §3.2.1), which is
    // never forwarded as an upgrade.
    HeaderName::from_static("http2-settings"),
];

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Fields that proxies and load balancers set and backends act on: the
/// client's address, the original URL or prefix (which some frameworks
/// route by, so a client could step outside its route with them). Only a
/// trusted proxy may send them; from anyone else they are removed.
const SET_BY_PROXIES: [HeaderName; 8] = [
    X_REAL_IP,
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-forwarded-server"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
];

/// Fields Baton sets for every backend call; a client's `Connection`
/// header cannot name them away.
const OWN: [HeaderName; 2] = [X_REQUEST_ID, HeaderName::from_static("traceparent")];

/// Removes the hop-by-hop fields and every field the `Connection` header
/// names.
/// A copy of a request head's value that does not share its buffer. Every
/// value hyper parses points into the connection's read buffer; one kept
/// for as long as a request is held (its id, a credential for the polls)
/// would keep that 8 KiB buffer from being reused, and hyper would read
/// on into a fresh one.
pub(crate) fn detached(value: &HeaderValue) -> HeaderValue {
    HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone())
}

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
        .filter(|name| !OWN.contains(name))
        .collect();
    for name in named.into_iter().chain(present.into_iter().flatten()) {
        headers.remove(name);
    }
}

/// The protocol a request asks to upgrade to (`websocket`), if it asks.
/// Only HTTP/1.1 can upgrade, and only when `Connection` lists `upgrade`.
pub(crate) fn upgrade_protocol(version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
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

/// Whether every protocol an `Upgrade` value lists (`websocket`,
/// `h2c, websocket`, `foo/2`) is one the route allows.
pub(crate) fn upgrade_allowed(protocol: &HeaderValue, allowed: &[String]) -> bool {
    let Ok(text) = protocol.to_str() else {
        return false;
    };
    let mut listed = text.split(',').map(str::trim).filter(|t| !t.is_empty());
    let mut any = false;
    let all = listed.all(|token| {
        any = true;
        let name = token.split('/').next().unwrap_or(token);
        allowed
            .iter()
            .any(|a| a.eq_ignore_ascii_case(name) || a.eq_ignore_ascii_case(token))
    });
    any && all
}

/// Restores the two fields an upgrade needs after hygiene removed them.
pub(crate) fn set_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// The longest text of an IP address (IPv6 with an embedded IPv4).
const MAX_IP_TEXT: usize = 45;

/// Tells the backend where the request came from. From a trusted proxy
/// the forwarding fields it sent are kept and this hop appended (it vouches
/// for what came before); from anyone else they are replaced, because a
/// client could write any address or host into them.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client: IpAddr,
    host: Option<&HeaderValue>,
    trusted: bool,
) {
    // One pass over the names a request has, as in hop-by-hop hygiene:
    // most requests carry none of these, and a hashed removal of each of
    // the twelve on every request is what the pass-through bench shows.
    let spoofable = |name: &HeaderName| {
        [
            &X_FORWARDED_FOR,
            &X_FORWARDED_HOST,
            &X_FORWARDED_PROTO,
            &header::FORWARDED,
        ]
        .contains(&name)
            || SET_BY_PROXIES.contains(name)
    };
    if !trusted && headers.keys().any(spoofable) {
        let present: Vec<HeaderName> = headers.keys().filter(|n| spoofable(n)).cloned().collect();
        for name in present {
            headers.remove(name);
        }
    }
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
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if let Some(host) = host {
        if !headers.contains_key(&X_FORWARDED_HOST) {
            headers.insert(X_FORWARDED_HOST, host.clone());
        }
    }
    add_forwarded_element(headers, client, host);
}

/// Appends this hop's element to `Forwarded` (RFC 7239): `for` (an IPv6
/// address quoted in brackets), `host` quoted, `proto`.
fn add_forwarded_element(headers: &mut HeaderMap, client: IpAddr, host: Option<&HeaderValue>) {
    let mut element = String::with_capacity(MAX_IP_TEXT + 48);
    let _ = match client {
        IpAddr::V4(v4) => write!(element, "for={v4}"),
        IpAddr::V6(v6) => write!(element, "for=\"[{v6}]\""),
    };
    // A Host that passed validation is an authority: no quote or
    // backslash that would need escaping inside a quoted string.
    if let Some(host) = host.and_then(|h| h.to_str().ok()) {
        let _ = write!(element, ";host=\"{host}\"");
    }
    element.push_str(";proto=http");
    let value = match headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {element}"),
        None => element,
    };
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(header::FORWARDED, value);
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
pub(crate) fn header_size(method_len: usize, target_len: usize, headers: &HeaderMap) -> usize {
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
pub(crate) struct Redacted<'a> {
    headers: &'a HeaderMap,
    secret: &'a [HeaderName],
}

impl<'a> Redacted<'a> {
    pub(crate) fn new(headers: &'a HeaderMap, secret: &'a [HeaderName]) -> Self {
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
        add_forwarded(&mut h, "10.0.0.1".parse().unwrap(), None, true);
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 10.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[header::FORWARDED], "for=10.0.0.1;proto=http");
    }

    #[test]
    fn forwarding_fields_from_an_untrusted_peer_are_replaced() {
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        h.insert(&X_FORWARDED_HOST, HeaderValue::from_static("evil"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(header::FORWARDED, HeaderValue::from_static("for=6.6.6.6"));
        h.insert(&X_REAL_IP, HeaderValue::from_static("6.6.6.6"));
        h.insert("x-original-url", HeaderValue::from_static("/admin"));
        h.insert("X-Forwarded-Prefix", HeaderValue::from_static("/admin"));
        let host = HeaderValue::from_static("shop.example:8080");
        add_forwarded(&mut h, "::1".parse().unwrap(), Some(&host), false);
        assert_eq!(h[&X_FORWARDED_FOR], "::1");
        assert_eq!(h[&X_FORWARDED_HOST], "shop.example:8080");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(
            h[header::FORWARDED],
            "for=\"[::1]\";host=\"shop.example:8080\";proto=http"
        );
        for name in &SET_BY_PROXIES {
            assert!(!h.contains_key(name), "{name} kept");
        }
    }

    #[test]
    fn connection_cannot_name_away_the_request_id() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("X-Request-Id, traceparent, x-gone"),
        );
        h.insert(X_REQUEST_ID, HeaderValue::from_static("id"));
        h.insert("traceparent", HeaderValue::from_static("tp"));
        h.insert("x-gone", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
    }

    #[test]
    fn only_allowed_upgrades_pass() {
        let allowed = ["websocket".to_owned()];
        let ok = |v: &'static str| upgrade_allowed(&HeaderValue::from_static(v), &allowed);
        assert!(ok("websocket"));
        assert!(ok("WebSocket"));
        assert!(!ok("h2c"));
        assert!(!ok("websocket, h2c"));
        assert!(!ok(""));
        assert!(!upgrade_allowed(
            &HeaderValue::from_static("websocket"),
            &[]
        ));
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

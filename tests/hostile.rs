//! Hostile clients, from raw bytes: request smuggling, path traversal,
//! authority and forwarding confusion, upgrade tricks, HTTP/2 abuse, slow
//! heads and bodies, pipelining and oversized bodies.
//!
//! Each class is a table of named cases sharing one assertion, and every
//! case checks what a user can observe: the status line the client got,
//! the problem+json body where Baton answers, what a recording backend saw
//! (nothing smuggled, nothing outside the route), and that Baton still
//! serves a normal request afterwards. Cases that fail are collected and
//! reported together, so one run names every case that does not hold.

use std::net::SocketAddr;

use baton::{body, Config};
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::support::jobs::{async_config, JobApi, Script};
use crate::support::raw::h2::{self, Outcome, H2};
use crate::support::raw::{
    exchange, find, read_answer, read_response, read_until_close, still_serves, Failures,
    RawBackend, LIMIT,
};
use crate::support::{config, Backend, Seen, TestBaton};

/// Starts Baton, or says why the configuration was refused (so one case's
/// config does not stop the rest of its table).
async fn start(toml: &str) -> Result<TestBaton, String> {
    Config::parse(toml, "test.toml", None).map_err(|e| format!("config refused: {e}"))?;
    Ok(TestBaton::start(toml).await)
}

/// Keep-alive connections close 300 ms after their last answer, so a test
/// reads a connection to its end instead of guessing when it is done.
const QUICK_IDLE: &str = r#"header_read_timeout = "300ms""#;

// ---------------------------------------------------------------------------
// Request smuggling: framing that two parsers could read two ways.

/// A request that, read the other way, carries this one inside it.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

struct Smuggle {
    name: &'static str,
    bytes: Vec<u8>,
    /// The body the backend may see if Baton accepts the request (only
    /// where an unambiguous reading exists); `None`: it must be refused.
    accepted: Option<&'static [u8]>,
}

fn post_with(fields: &str, body: &str) -> Vec<u8> {
    format!("POST /s HTTP/1.1\r\nHost: x\r\n{fields}\r\n{body}").into_bytes()
}

fn smuggling_cases() -> Vec<Smuggle> {
    let zero_then_smuggled = format!("0\r\n\r\n{SMUGGLED}");
    let chunk_of_smuggled = format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len());
    let s = |name, fields: &str, body: &str, accepted| Smuggle {
        name,
        bytes: post_with(fields, body),
        accepted,
    };
    let empty: Option<&'static [u8]> = Some(b"");
    let hello: Option<&'static [u8]> = Some(b"hello");
    let inner: Option<&'static [u8]> = Some(SMUGGLED.as_bytes());
    vec![
        // CL.TE and TE.CL, both orders of the two fields.
        s(
            "cl-te-zero-chunk",
            "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
            &zero_then_smuggled,
            empty,
        ),
        s(
            "te-cl-zero-chunk",
            "Transfer-Encoding: chunked\r\nContent-Length: 6\r\n",
            &zero_then_smuggled,
            empty,
        ),
        s(
            "te-cl-request-in-chunk",
            "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
            &chunk_of_smuggled,
            inner,
        ),
        s(
            "cl-te-request-in-chunk",
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
            &chunk_of_smuggled,
            inner,
        ),
        // Transfer-Encoding obfuscations.
        s(
            "te-xchunked",
            "Content-Length: 5\r\nTransfer-Encoding: xchunked\r\n",
            &zero_then_smuggled,
            None,
        ),
        s(
            "te-value-leading-space",
            "Content-Length: 5\r\nTransfer-Encoding:  chunked\r\n",
            &zero_then_smuggled,
            empty,
        ),
        s(
            "te-name-leading-space",
            "Content-Length: 5\r\n Transfer-Encoding: chunked\r\n",
            &zero_then_smuggled,
            None,
        ),
        s(
            "te-chunked-then-identity",
            "Content-Length: 5\r\nTransfer-Encoding: chunked, identity\r\n",
            &zero_then_smuggled,
            None,
        ),
        s(
            "te-tab-before-value",
            "Content-Length: 5\r\nTransfer-Encoding:\tchunked\r\n",
            &zero_then_smuggled,
            empty,
        ),
        s(
            "te-duplicate-lines",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            &zero_then_smuggled,
            empty,
        ),
        s(
            "te-duplicate-lines-identity-last",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
            &zero_then_smuggled,
            None,
        ),
        s(
            "te-quoted",
            "Content-Length: 5\r\nTransfer-Encoding: \"chunked\"\r\n",
            &zero_then_smuggled,
            None,
        ),
        s(
            "te-vertical-tab",
            "Content-Length: 5\r\nTransfer-Encoding: \x0bchunked\r\n",
            &zero_then_smuggled,
            None,
        ),
        s(
            "te-space-before-colon",
            "Content-Length: 5\r\nTransfer-Encoding : chunked\r\n",
            &zero_then_smuggled,
            None,
        ),
        s(
            "te-uppercase-value",
            "Transfer-Encoding: CHUNKED\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
            hello,
        ),
        Smuggle {
            name: "te-in-http10",
            bytes: format!(
                "POST /s HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n{zero_then_smuggled}"
            )
            .into_bytes(),
            accepted: None,
        },
        Smuggle {
            name: "te-alone-in-http10",
            bytes: format!(
                "POST /s HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{zero_then_smuggled}"
            )
            .into_bytes(),
            accepted: None,
        },
        // Content-Length, repeated or malformed.
        s(
            "cl-duplicate-same",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "hello",
            hello,
        ),
        s(
            "cl-duplicate-different",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "hello!",
            None,
        ),
        s("cl-list-same", "Content-Length: 5, 5\r\n", "hello", hello),
        s("cl-list-different", "Content-Length: 5, 6\r\n", "hello!", None),
        s("cl-plus-sign", "Content-Length: +5\r\n", "hello", None),
        s("cl-negative", "Content-Length: -1\r\n", "hello", None),
        s("cl-space-inside", "Content-Length: 5 5\r\n", "hello", None),
        s("cl-hex", "Content-Length: 0x5\r\n", "hello", None),
        s(
            "cl-past-u64",
            "Content-Length: 99999999999999999999999\r\n",
            "hello",
            None,
        ),
        s("cl-leading-zeros", "Content-Length: 005\r\n", "hello", hello),
        // Line structure: folding, bare CR, NUL, bare LF.
        s(
            "obs-fold-of-transfer-encoding",
            "Content-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n",
            &zero_then_smuggled,
            empty,
        ),
        Smuggle {
            name: "obs-fold-of-plain-field",
            bytes: b"GET /s HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n".to_vec(),
            accepted: empty,
        },
        Smuggle {
            name: "bare-cr-in-value",
            bytes: b"GET /s HTTP/1.1\r\nHost: x\r\nX-Bad: a\rb\r\n\r\n".to_vec(),
            accepted: None,
        },
        s(
            "bare-cr-ends-content-length",
            "Content-Length: 5\rTransfer-Encoding: chunked\r\n",
            &zero_then_smuggled,
            None,
        ),
        Smuggle {
            name: "nul-in-value",
            bytes: b"GET /s HTTP/1.1\r\nHost: x\r\nX-Bad: a\0b\r\n\r\n".to_vec(),
            accepted: None,
        },
        Smuggle {
            name: "nul-in-name",
            bytes: b"GET /s HTTP/1.1\r\nHost: x\r\nX-B\0ad: 1\r\n\r\n".to_vec(),
            accepted: None,
        },
        Smuggle {
            name: "bare-lf-line-endings",
            bytes: b"GET /s HTTP/1.1\nHost: x\n\n".to_vec(),
            accepted: empty,
        },
        Smuggle {
            name: "bare-lf-cl-te",
            bytes: format!(
                "POST /s HTTP/1.1\nHost: x\nContent-Length: 6\nTransfer-Encoding: chunked\n\n{zero_then_smuggled}"
            )
            .into_bytes(),
            accepted: empty,
        },
        // Chunked framing itself.
        s(
            "chunk-size-past-u64",
            "Transfer-Encoding: chunked\r\n",
            "fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            None,
        ),
        s(
            "chunk-size-negative",
            "Transfer-Encoding: chunked\r\n",
            "-5\r\nhello\r\n0\r\n\r\n",
            None,
        ),
        s(
            "chunk-data-overruns-size",
            "Transfer-Encoding: chunked\r\n",
            "5\r\nhelloXX\r\n0\r\n\r\n",
            None,
        ),
        s(
            "chunk-extension",
            "Transfer-Encoding: chunked\r\n",
            "5;name=value\r\nhello\r\n0\r\n\r\n",
            hello,
        ),
        // A Content-Length beside chunked that no parser can read.
        s(
            "te-then-invalid-cl",
            "Transfer-Encoding: chunked\r\nContent-Length: abc\r\n",
            &zero_then_smuggled,
            empty,
        ),
        s(
            "invalid-cl-then-te",
            "Content-Length: abc\r\nTransfer-Encoding: chunked\r\n",
            &zero_then_smuggled,
            empty,
        ),
        // Request lines that are not HTTP/1.1's.
        Smuggle {
            name: "request-line-extra-token",
            bytes: b"GET /s HTTP/1.1 extra\r\nHost: x\r\n\r\n".to_vec(),
            accepted: None,
        },
        Smuggle {
            name: "http09-request-line",
            bytes: b"GET /s\r\n\r\n".to_vec(),
            accepted: None,
        },
    ]
}

#[tokio::test]
async fn smuggling_is_refused_or_read_one_way_and_never_reaches_the_backend_twice() {
    let mut failures = Failures::default();
    let cases = smuggling_cases();
    assert!(cases.len() >= 40);
    for case in &cases {
        failures.check(case.name, smuggle(case).await);
    }
    failures.assert_none("request smuggling");
}

async fn smuggle(case: &Smuggle) -> Result<(), String> {
    let backend = RawBackend::echo().await;
    let baton = start(&config(backend.addr, QUICK_IDLE, "")).await?;
    let answered = exchange(baton.addr, &case.bytes).await?;
    let first = answered.first()?;
    let requests = backend.requests();
    if let Some(r) = requests.iter().find(|r| r.target.contains("smuggled")) {
        return Err(format!(
            "a smuggled request reached the backend: {:?}",
            r.head
        ));
    }
    if let Some(stray) = backend.stray().into_iter().find(|s| !s.is_empty()) {
        return Err(format!(
            "the backend was sent bytes outside any request: {stray:?}"
        ));
    }
    let finals: Vec<_> = answered.finals().iter().map(|r| r.status).collect();
    if finals.len() > 1 {
        return Err(format!(
            "{} answers on one connection {finals:?}: the rest was read as another request",
            finals.len()
        ));
    }
    match first.status {
        400..=499 => {
            if let Some(r) = requests.iter().find(|r| r.complete) {
                return Err(format!(
                    "refused with {} yet the backend got a complete request: {:?}",
                    first.status, r.head
                ));
            }
        }
        200 => {
            let Some(body) = case.accepted else {
                return Err(format!(
                    "accepted ({}) where only a 4xx is safe; backend saw {:?}",
                    first.status_line,
                    requests.iter().map(|r| &r.head).collect::<Vec<_>>()
                ));
            };
            if requests.len() != 1 {
                return Err(format!("the backend saw {} requests", requests.len()));
            }
            let r = &requests[0];
            if !r.complete || r.body != body {
                return Err(format!(
                    "the backend got body {:?} (complete: {}), not {:?}",
                    String::from_utf8_lossy(&r.body),
                    r.complete,
                    String::from_utf8_lossy(body)
                ));
            }
            r.framing_is_consistent()
                .map_err(|e| format!("forwarded with ambiguous framing: {e}"))?;
        }
        _ => {
            return Err(format!(
                "got {:?}; expected a 4xx or a clean 200",
                first.status_line
            ))
        }
    }
    still_serves(baton.addr, "/after").await
}

// ---------------------------------------------------------------------------
// Path traversal: one normalisation before routing, no way out of a route.

#[derive(Clone, Copy, Debug)]
enum Goes {
    /// 400, and no backend sees it.
    Rejected,
    /// The `/pub/*` route's backend sees exactly this target.
    Pub(&'static str),
    /// The catch-all route's backend sees exactly this target.
    Other(&'static str),
}

const TRAVERSAL: &[(&str, &str, Goes)] = {
    use Goes::*;
    &[
        (
            "dot-dot",
            "/pub/../secret/key.txt",
            Other("/secret/key.txt"),
        ),
        (
            "encoded-dots",
            "/pub/%2e%2e/secret/key.txt",
            Other("/secret/key.txt"),
        ),
        (
            "encoded-dots-mixed-case",
            "/pub/%2E%2e/secret",
            Other("/secret"),
        ),
        ("half-encoded-dots", "/pub/.%2e/secret", Other("/secret")),
        ("encoded-slash", "/pub/..%2fsecret/key.txt", Rejected),
        ("encoded-slash-upper", "/pub/..%2Fsecret", Rejected),
        ("encoded-slash-in-prefix", "/pub%2f../secret", Rejected),
        (
            "double-encoded-dots",
            "/pub/%252e%252e/secret",
            Pub("/public/%252e%252e/secret"),
        ),
        ("climb-two", "/pub/a/../../secret", Other("/secret")),
        ("dot-then-dot-dot", "/pub/./../secret", Other("/secret")),
        ("backslash", "/pub/..\\secret", Rejected),
        ("encoded-backslash", "/pub/..%5csecret", Rejected),
        ("encoded-nul", "/pub/%00", Rejected),
        ("malformed-escape", "/pub/%zz", Rejected),
        ("truncated-escape", "/pub/%2", Rejected),
        ("above-root", "/../x", Rejected),
        (
            "above-root-through-prefix",
            "/pub/../../etc/passwd",
            Rejected,
        ),
        ("above-root-deep", "/a/b/../../../x", Rejected),
        ("inner-dot-dot", "/pub/a/../b", Pub("/public/b")),
        (
            "encoded-single-dot",
            "/pub/%2e/secret",
            Pub("/public/secret"),
        ),
        ("trailing-dot-dot", "/pub/secret/..", Pub("/public/")),
        ("encoded-dots-to-root", "/pub/%2e%2e", Other("/")),
        ("encoded-unreserved", "/pub/%61bc", Pub("/public/abc")),
        ("encoded-tilde", "/pub/%7Euser", Pub("/public/~user")),
        ("encoded-percent-kept", "/pub/100%25", Pub("/public/100%25")),
        (
            "query-left-alone",
            "/pub/x?a=../../b",
            Pub("/public/x?a=../../b"),
        ),
        ("three-dots-is-a-name", "/pub/.../x", Pub("/public/.../x")),
        ("many-single-dots", "/pub/./././x", Pub("/public/x")),
        ("iis-u-escape", "/pub/%u002e%u002e/secret", Rejected),
        ("encoded-above-root", "/pub/%2e%2e/%2e%2e/secret", Rejected),
        (
            "encoded-slashes-and-dots",
            "/pub/a%2f..%2f..%2fsecret",
            Rejected,
        ),
        ("nul-after-dots", "/pub/..%00/secret", Rejected),
        // Servlet containers drop `;parameters`, then resolve the dots.
        ("dots-with-parameters", "/pub/..;/secret", Rejected),
        (
            "encoded-dots-with-parameters",
            "/pub/%2e%2e;x/secret",
            Rejected,
        ),
        (
            "parameters-on-a-name",
            "/pub/a;v=1/x",
            Pub("/public/a;v=1/x"),
        ),
    ]
};

fn traversal_toml(public: SocketAddr, other: SocketAddr) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[backends.public]
url = "http://{public}"

[backends.other]
url = "http://{other}"

[[routes]]
name = "pub"
match = {{ path = "/pub/*" }}
backend = "public"
strip_prefix = "/pub"
add_prefix = "/public"

[[routes]]
name = "rest"
match = {{ path = "/*" }}
backend = "other"
"#
    )
}

const PROBLEM: &str = "application/problem+json";

/// Judges one traversal case from what the client got (`status`, or a
/// protocol-level refusal) and what each backend saw meanwhile.
fn judge(
    goes: Goes,
    status: Option<u16>,
    problem: bool,
    refused_by_protocol: bool,
    public: &[Seen],
    other: &[Seen],
) -> Result<(), String> {
    for seen in public {
        let path = seen.uri.path();
        if path != "/public" && !path.starts_with("/public/") {
            return Err(format!(
                "the /pub route's backend saw {path:?}, outside /public/"
            ));
        }
    }
    for seen in public.iter().chain(other) {
        let path = seen.uri.path();
        if path.split('/').any(|s| s == ".." || s == ".") {
            return Err(format!("a backend saw a dot segment: {path:?}"));
        }
        if path.to_ascii_lowercase().contains("%2e") {
            return Err(format!("a backend saw an encoded dot: {path:?}"));
        }
    }
    let seen = |s: &[Seen]| s.iter().map(|s| s.uri.to_string()).collect::<Vec<_>>();
    match goes {
        Goes::Rejected => {
            if !(status == Some(400) || refused_by_protocol) {
                return Err(format!("got {status:?}; expected 400"));
            }
            if status == Some(400) && !problem {
                return Err("a 400 without a problem+json body".to_owned());
            }
            if !public.is_empty() || !other.is_empty() {
                return Err(format!(
                    "refused, yet backends saw {:?} / {:?}",
                    seen(public),
                    seen(other)
                ));
            }
        }
        Goes::Pub(target) | Goes::Other(target) => {
            let (hit, miss) = match goes {
                Goes::Pub(_) => (public, other),
                _ => (other, public),
            };
            if status != Some(200) {
                return Err(format!(
                    "got {status:?}; expected 200 from {goes:?} (backends saw {:?} / {:?})",
                    seen(public),
                    seen(other)
                ));
            }
            if seen(hit) != [target] || !miss.is_empty() {
                return Err(format!(
                    "expected {goes:?}; the /pub backend saw {:?}, the catch-all {:?}",
                    seen(public),
                    seen(other)
                ));
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn paths_are_normalised_once_and_never_leave_their_route_over_http1() {
    let public = Backend::echo().await;
    let other = Backend::echo().await;
    let baton = TestBaton::start(&traversal_toml(public.addr, other.addr)).await;
    let mut failures = Failures::default();
    for &(name, target, goes) in TRAVERSAL {
        let (p, o) = (public.count(), other.count());
        let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let result = match exchange(baton.addr, request.as_bytes()).await {
            Err(e) => Err(e),
            Ok(answered) => match answered.first() {
                Err(e) => Err(e),
                Ok(first) => judge(
                    goes,
                    Some(first.status),
                    first.header("content-type") == Some(PROBLEM),
                    false,
                    &public.seen()[p..],
                    &other.seen()[o..],
                ),
            },
        };
        failures.check(name, result);
    }
    failures.check("serves-after", still_serves(baton.addr, "/pub/ok").await);
    failures.assert_none("traversal over HTTP/1.1");
}

#[tokio::test]
async fn paths_are_normalised_once_and_never_leave_their_route_over_h2c() {
    let public = Backend::echo().await;
    let other = Backend::echo().await;
    let baton = TestBaton::start(&traversal_toml(public.addr, other.addr)).await;
    let mut failures = Failures::default();
    for &(name, target, goes) in TRAVERSAL {
        let (p, o) = (public.count(), other.count());
        // Raw frames: the :path goes on the wire exactly as written.
        let mut conn = H2::connect(baton.addr).await;
        let outcome = conn.request(1, &base(target), None).await;
        let result = match outcome {
            Outcome::Hung | Outcome::Closed => Err(format!("no answer: {outcome:?}")),
            _ => judge(
                goes,
                outcome.status(),
                outcome.header("content-type") == Some(PROBLEM),
                matches!(outcome, Outcome::Reset(_) | Outcome::GoAway(_)),
                &public.seen()[p..],
                &other.seen()[o..],
            ),
        };
        failures.check(name, result);
    }
    let mut conn = H2::connect(baton.addr).await;
    let after = conn.request(1, &base("/pub/ok"), None).await;
    failures.check(
        "serves-after",
        if after.status() == Some(200) {
            Ok(())
        } else {
            Err(format!("a normal h2 request afterwards got {after:?}"))
        },
    );
    failures.assert_none("traversal over h2c");
}

#[tokio::test]
async fn encoded_slashes_pass_only_where_the_route_allows_them() {
    let files = Backend::echo().await;
    let other = Backend::echo().await;
    let toml = format!(
        r#"
[backends.files]
url = "http://{}"

[backends.other]
url = "http://{}"

[[routes]]
name = "files"
match = {{ path = "/files/*" }}
backend = "files"
allow_encoded_slashes = true

[[routes]]
name = "rest"
match = {{ path = "/*" }}
backend = "other"
"#,
        files.addr, other.addr
    );
    let baton = TestBaton::start(&toml).await;
    let mut failures = Failures::default();
    for (name, target, expect) in [
        (
            "encoded-slash-allowed",
            "/files/a%2Fb",
            Some("/files/a%2Fb"),
        ),
        (
            "encoded-backslash-allowed",
            "/files/a%5Cb",
            Some("/files/a%5Cb"),
        ),
        ("encoded-slash-elsewhere-refused", "/docs/a%2Fb", None),
    ] {
        let (f, o) = (files.count(), other.count());
        let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let result = async {
            let answered = exchange(baton.addr, request.as_bytes()).await?;
            let status = answered.first()?.status;
            let (f_new, o_new) = (&files.seen()[f..], &other.seen()[o..]);
            match expect {
                Some(path) => {
                    if status != 200 || f_new.len() != 1 || f_new[0].uri != path {
                        return Err(format!(
                            "got {status}, the files backend saw {:?}; expected {path}",
                            f_new.iter().map(|s| s.uri.to_string()).collect::<Vec<_>>()
                        ));
                    }
                }
                None => {
                    if status != 400 || !f_new.is_empty() || !o_new.is_empty() {
                        return Err(format!("got {status}; expected 400 and no backend"));
                    }
                    answered.first()?.problem(400)?;
                }
            }
            Ok(())
        }
        .await;
        failures.check(name, result);
    }
    failures.check("serves-after", still_serves(baton.addr, "/files/ok").await);
    failures.assert_none("encoded slashes");
}

// ---------------------------------------------------------------------------
// Host and authority confusion.

#[tokio::test]
async fn requests_without_one_valid_host_are_refused() {
    let backend = Backend::echo().await;
    let baton = TestBaton::start(&config(backend.addr, "", "")).await;
    let mut failures = Failures::default();
    for (name, head, expect) in [
        ("no-host", "GET /h HTTP/1.1\r\n", 400),
        (
            "two-hosts",
            "GET /h HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n",
            400,
        ),
        (
            "two-hosts-same",
            "GET /h HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n",
            400,
        ),
        ("host-with-space", "GET /h HTTP/1.1\r\nHost: a b\r\n", 400),
        (
            "host-with-userinfo",
            "GET /h HTTP/1.1\r\nHost: x@y\r\n",
            400,
        ),
        (
            "host-with-bad-port",
            "GET /h HTTP/1.1\r\nHost: x:abc\r\n",
            400,
        ),
        ("host-with-path", "GET /h HTTP/1.1\r\nHost: x/y\r\n", 400),
        // RFC 9112 §3.2: Host is required even beside an absolute target.
        (
            "absolute-form-without-host",
            "GET http://a.example/h HTTP/1.1\r\n",
            400,
        ),
        // HTTP/1.0 has no Host requirement.
        ("http10-without-host", "GET /h HTTP/1.0\r\n", 200),
    ] {
        let before = backend.count();
        let request = format!("{head}Connection: close\r\n\r\n");
        let result = async {
            let answered = exchange(baton.addr, request.as_bytes()).await?;
            let first = answered.first()?;
            if first.status != expect {
                return Err(format!("got {:?}; expected {expect}", first.status_line));
            }
            if expect == 400 {
                first.problem(400)?;
            }
            if expect == 400 && backend.count() != before {
                return Err(format!(
                    "refused, yet the backend saw {:?}",
                    backend
                        .last()
                        .headers
                        .get_all("host")
                        .iter()
                        .collect::<Vec<_>>()
                ));
            }
            Ok(())
        }
        .await;
        failures.check(name, result);
    }
    failures.check("serves-after", still_serves(baton.addr, "/after").await);
    failures.assert_none("host validation");
}

#[tokio::test]
async fn an_absolute_form_target_overrides_the_host_field_for_routing_and_forwarding() {
    let a = Backend::echo().await;
    let b = Backend::echo().await;
    let toml = format!(
        r#"
[backends.a]
url = "http://{}"
[backends.b]
url = "http://{}"

[[routes]]
name = "a"
match = {{ path = "/*", host = "a.example" }}
backend = "a"

[[routes]]
name = "b"
match = {{ path = "/*", host = "b.example" }}
backend = "b"
"#,
        a.addr, b.addr
    );
    let baton = TestBaton::start(&toml).await;
    let mut failures = Failures::default();
    for (name, target, host, winner, forwarded_host) in [
        (
            "absolute-a-host-b",
            "http://a.example/x",
            "b.example",
            "a",
            "a.example",
        ),
        (
            "absolute-b-host-a",
            "http://b.example/x",
            "a.example",
            "b",
            "b.example",
        ),
        (
            "absolute-with-port",
            "http://a.example:8080/x",
            "b.example",
            "a",
            "a.example:8080",
        ),
    ] {
        let (na, nb) = (a.count(), b.count());
        let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let result = async {
            let answered = exchange(baton.addr, request.as_bytes()).await?;
            let first = answered.first()?;
            if first.status != 200 {
                return Err(format!("got {:?}", first.status_line));
            }
            let (won, lost) = if winner == "a" { (&a, &b) } else { (&b, &a) };
            let (won_before, lost_before) = if winner == "a" { (na, nb) } else { (nb, na) };
            if won.count() != won_before + 1 || lost.count() != lost_before {
                return Err(format!(
                    "route {winner} should have won (the target's authority, not Host)"
                ));
            }
            let seen = won.last();
            let xfh = seen
                .headers
                .get("x-forwarded-host")
                .map(|v| v.to_str().unwrap_or(""));
            if xfh != Some(forwarded_host) {
                return Err(format!(
                    "X-Forwarded-Host {xfh:?}; expected {forwarded_host}"
                ));
            }
            if seen.uri != "/x" {
                return Err(format!("the backend got target {}", seen.uri));
            }
            Ok(())
        }
        .await;
        failures.check(name, result);
    }
    let after = exchange(
        baton.addr,
        b"GET /after HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    )
    .await
    .and_then(|e| e.first().map(|f| f.status));
    failures.check(
        "serves-after",
        if after == Ok(200) {
            Ok(())
        } else {
            Err(format!("{after:?}"))
        },
    );
    failures.assert_none("absolute-form");
}

const SPOOFED: &str = "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\n\
                       X-Forwarded-Proto: https\r\nForwarded: for=6.6.6.6;host=evil;proto=https\r\n";

fn header<'a>(seen: &'a Seen, name: &str) -> Vec<&'a str> {
    seen.headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or("<binary>"))
        .collect()
}

#[tokio::test]
async fn forwarding_fields_from_an_untrusted_peer_are_replaced() {
    let backend = Backend::echo().await;
    let baton = TestBaton::start(&config(backend.addr, "", "")).await;
    let request =
        format!("GET /f HTTP/1.1\r\nHost: front.example\r\n{SPOOFED}Connection: close\r\n\r\n");
    let answered = exchange(baton.addr, request.as_bytes()).await.unwrap();
    assert_eq!(answered.first().unwrap().status, 200, "{}", answered.text());
    let seen = backend.last();
    assert_eq!(header(&seen, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(header(&seen, "x-forwarded-host"), ["front.example"]);
    assert_eq!(header(&seen, "x-forwarded-proto"), ["http"]);
    let forwarded = header(&seen, "forwarded").join(", ");
    assert!(
        forwarded.contains("for=127.0.0.1"),
        "Forwarded: {forwarded}"
    );
    assert!(forwarded.contains("proto=http"), "Forwarded: {forwarded}");
    assert!(
        !forwarded.contains("6.6.6.6") && !forwarded.contains("evil"),
        "Forwarded: {forwarded}"
    );
    still_serves(baton.addr, "/after").await.unwrap();
}

/// Fields other proxies set and backends act on (some frameworks route by
/// `X-Original-URL`): from a client, none reaches the backend.
#[tokio::test]
async fn proxy_set_fields_from_an_untrusted_peer_are_removed() {
    let backend = Backend::echo().await;
    let baton = TestBaton::start(&config(backend.addr, "", "")).await;
    let mut failures = Failures::default();
    for name in [
        "X-Real-IP",
        "X-Client-IP",
        "True-Client-IP",
        "X-Forwarded-Port",
        "X-Forwarded-Prefix",
        "X-Forwarded-Server",
        "X-Original-URL",
        "X-Rewrite-URL",
    ] {
        let request = format!(
            "GET /f HTTP/1.1\r\nHost: front.example\r\n{name}: /admin\r\nConnection: close\r\n\r\n"
        );
        let answered = exchange(baton.addr, request.as_bytes()).await.unwrap();
        let status = answered.first().map_or(0, |a| a.status);
        let seen = backend.last();
        let result = if status != 200 || seen.headers.contains_key(name) {
            Err(format!(
                "status {status}; backend saw {:?}",
                header(&seen, name)
            ))
        } else {
            Ok(())
        };
        failures.check(name, result);
    }
    failures.assert_none("proxy-set fields");
}

#[tokio::test]
async fn forwarding_fields_from_a_trusted_proxy_are_appended_to() {
    let backend = Backend::echo().await;
    let baton = TestBaton::start(&config(
        backend.addr,
        r#"trusted_proxies = ["127.0.0.1/32"]"#,
        "",
    ))
    .await;
    let request =
        format!("GET /f HTTP/1.1\r\nHost: front.example\r\n{SPOOFED}Connection: close\r\n\r\n");
    let answered = exchange(baton.addr, request.as_bytes()).await.unwrap();
    assert_eq!(answered.first().unwrap().status, 200, "{}", answered.text());
    let seen = backend.last();
    assert_eq!(header(&seen, "x-forwarded-for"), ["6.6.6.6, 127.0.0.1"]);
    let forwarded = header(&seen, "forwarded").join(", ");
    assert!(
        forwarded.contains("for=6.6.6.6") && forwarded.contains("for=127.0.0.1"),
        "Forwarded: {forwarded}"
    );
    // Two X-Forwarded-For lines are one list, in order.
    let request = "GET /f HTTP/1.1\r\nHost: front.example\r\nX-Forwarded-For: 6.6.6.6\r\n\
                   X-Forwarded-For: 7.7.7.7\r\nConnection: close\r\n\r\n";
    let answered = exchange(baton.addr, request.as_bytes()).await.unwrap();
    assert_eq!(answered.first().unwrap().status, 200, "{}", answered.text());
    assert_eq!(
        header(&backend.last(), "x-forwarded-for"),
        ["6.6.6.6, 7.7.7.7, 127.0.0.1"]
    );
    still_serves(baton.addr, "/after").await.unwrap();
}

#[tokio::test]
async fn a_client_cannot_name_the_fields_baton_adds_as_hop_by_hop() {
    let backend = Backend::echo().await;
    let baton = TestBaton::start(&config(backend.addr, "", "")).await;
    let mut failures = Failures::default();
    for name in [
        "x-request-id",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "forwarded",
        "via",
        "traceparent",
    ] {
        let request =
            format!("GET /n HTTP/1.1\r\nHost: front.example\r\nConnection: close, {name}\r\n\r\n");
        let result = async {
            let answered = exchange(baton.addr, request.as_bytes()).await?;
            let first = answered.first()?;
            if first.status != 200 {
                return Err(format!("got {:?}", first.status_line));
            }
            let seen = backend.last();
            let values = header(&seen, name);
            let ok = match name {
                "x-request-id" => {
                    values.len() == 1 && Some(values[0]) == first.header("x-request-id")
                }
                "x-forwarded-for" => values == ["127.0.0.1"],
                "x-forwarded-proto" => values == ["http"],
                "x-forwarded-host" => values == ["front.example"],
                "forwarded" => values.iter().any(|v| v.contains("for=127.0.0.1")),
                "via" => values == ["1.1 baton"],
                _ => values.len() == 1,
            };
            if ok {
                Ok(())
            } else {
                Err(format!("the backend saw {name}: {values:?}"))
            }
        }
        .await;
        failures.check(&format!("connection-names-{name}"), result);
    }
    failures.check("serves-after", still_serves(baton.addr, "/after").await);
    failures.assert_none("hop-by-hop nomination");
}

// ---------------------------------------------------------------------------
// Upgrades.

/// Answers `101` to any upgrade it is asked for (and runs a WebSocket echo
/// when that upgrade is WebSocket), `200 plain` otherwise.
async fn upgrading_backend() -> Backend {
    Backend::start(|mut request: Request<Incoming>| async move {
        let Some(upgrade) = request.headers().get("upgrade").cloned() else {
            return Response::new(body::full("plain"));
        };
        let mut answer = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", upgrade.clone());
        if let Some(key) = request.headers().get("sec-websocket-key").cloned() {
            answer = answer.header("sec-websocket-accept", derive_accept_key(key.as_bytes()));
            let upgraded = hyper::upgrade::on(&mut request);
            tokio::spawn(async move {
                let Ok(upgraded) = upgraded.await else { return };
                let mut socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_close() || socket.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
        answer.body(body::empty()).unwrap()
    })
    .await
}

#[tokio::test]
async fn an_h2c_upgrade_is_not_passed_on() {
    let backend = upgrading_backend().await;
    let baton = TestBaton::start(&config(backend.addr, QUICK_IDLE, "")).await;
    let answered = exchange(
        baton.addr,
        b"GET /u HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(
        answered.responses.iter().all(|r| r.status != 101),
        "the client was switched: {}",
        answered.text()
    );
    let first = answered.first().unwrap();
    assert_eq!((first.status, first.text().as_str()), (200, "plain"));
    let seen = backend.last();
    for name in ["upgrade", "http2-settings"] {
        assert!(!seen.headers.contains_key(name), "the backend saw {name}");
    }
    let connection = header(&seen, "connection").join(",").to_ascii_lowercase();
    assert!(
        !connection.contains("upgrade") && !connection.contains("http2-settings"),
        "connection: {connection}"
    );
    still_serves(baton.addr, "/after").await.unwrap();
}

#[tokio::test]
async fn a_websocket_upgrade_still_works_where_allowed() {
    let backend = upgrading_backend().await;
    let baton = TestBaton::start(&config(backend.addr, "", "")).await;
    let (mut socket, response) = tokio::time::timeout(
        LIMIT,
        tokio_tungstenite::connect_async(format!("ws://{}/chat", baton.addr)),
    )
    .await
    .expect("handshake hung")
    .expect("handshake failed");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    socket.send(Message::text("ping")).await.unwrap();
    let echoed = tokio::time::timeout(LIMIT, socket.next())
        .await
        .expect("no frame")
        .expect("closed")
        .expect("broken frame");
    assert_eq!(echoed, Message::text("ping"));
    socket.close(None).await.unwrap();
    still_serves(baton.addr, "/after").await.unwrap();
}

#[tokio::test]
async fn a_route_without_upgrades_forwards_a_websocket_handshake_as_a_plain_request() {
    let backend = upgrading_backend().await;
    let toml = format!(
        r#"
[server]
{QUICK_IDLE}

[backends.app]
url = "http://{}"

[[routes]]
name = "plain"
match = {{ path = "/*" }}
backend = "app"
upgrades = []
"#,
        backend.addr
    );
    let baton = TestBaton::start(&toml).await;
    let answered = exchange(
        baton.addr,
        b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(
        answered.responses.iter().all(|r| r.status != 101),
        "the client was switched: {}",
        answered.text()
    );
    let first = answered.first().unwrap();
    assert_eq!((first.status, first.text().as_str()), (200, "plain"));
    assert!(!backend.last().headers.contains_key("upgrade"));
    still_serves(baton.addr, "/after").await.unwrap();
}

// ---------------------------------------------------------------------------
// HTTP/2 abuse.

type Fields = Vec<(&'static str, &'static str)>;

fn base(path: &'static str) -> Fields {
    vec![
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "h2.example"),
        (":path", path),
    ]
}

fn with(mut fields: Fields, extra: &[(&'static str, &'static str)]) -> Fields {
    fields.extend_from_slice(extra);
    fields
}

fn without(fields: Fields, name: &str) -> Fields {
    fields.into_iter().filter(|(n, _)| *n != name).collect()
}

fn replace(fields: Fields, name: &str, value: &'static str) -> Fields {
    fields
        .into_iter()
        .map(|(n, v)| if n == name { (n, value) } else { (n, v) })
        .collect()
}

/// (case, request fields, request body)
type H2Case = (&'static str, Fields, Option<&'static [u8]>);

fn malformed_h2_requests() -> Vec<H2Case> {
    let get = || base("/h2");
    let post = || replace(base("/h2"), ":method", "POST");
    vec![
        (
            "connection-keep-alive",
            with(get(), &[("connection", "keep-alive")]),
            None,
        ),
        (
            "transfer-encoding-chunked",
            with(post(), &[("transfer-encoding", "chunked")]),
            Some(&b"5\r\nhello\r\n0\r\n\r\n"[..]),
        ),
        (
            "keep-alive-field",
            with(get(), &[("keep-alive", "timeout=5")]),
            None,
        ),
        (
            "proxy-connection",
            with(get(), &[("proxy-connection", "keep-alive")]),
            None,
        ),
        (
            "upgrade-field",
            with(get(), &[("upgrade", "websocket")]),
            None,
        ),
        ("te-not-trailers", with(get(), &[("te", "gzip")]), None),
        ("missing-path", without(get(), ":path"), None),
        ("missing-method", without(get(), ":method"), None),
        ("missing-scheme", without(get(), ":scheme"), None),
        (
            "duplicate-method",
            with(get(), &[(":method", "POST")]),
            None,
        ),
        ("duplicate-path", with(get(), &[(":path", "/other")]), None),
        (
            "path-not-absolute",
            replace(get(), ":path", "secret/key.txt"),
            None,
        ),
        ("empty-path", replace(get(), ":path", ""), None),
        ("uppercase-name", with(get(), &[("X-Upper", "1")]), None),
        (
            "pseudo-after-regular",
            vec![
                (":method", "GET"),
                ("accept", "*/*"),
                (":scheme", "http"),
                (":authority", "h2.example"),
                (":path", "/h2"),
            ],
            None,
        ),
        ("unknown-pseudo", with(get(), &[(":foo", "bar")]), None),
        (
            "response-pseudo-in-request",
            with(get(), &[(":status", "200")]),
            None,
        ),
        (
            "crlf-in-value",
            with(get(), &[("x-inject", "a\r\nx-evil: 1")]),
            None,
        ),
        ("space-in-name", with(get(), &[("x bad", "1")]), None),
        (
            "authority-with-userinfo",
            replace(get(), ":authority", "user@h2.example"),
            None,
        ),
        (
            "authority-with-space",
            replace(get(), ":authority", "a b"),
            None,
        ),
        (
            "header-list-too-large",
            with(
                get(),
                &[("x-big", Box::leak("v".repeat(64 * 1024).into_boxed_str()))],
            ),
            None,
        ),
    ]
}

#[tokio::test]
async fn malformed_h2_requests_are_refused_before_any_backend() {
    let backend = Backend::echo().await;
    let baton = TestBaton::start(&config(backend.addr, "", "")).await;
    let mut failures = Failures::default();
    for (name, fields, body) in malformed_h2_requests() {
        let before = backend.count();
        let mut conn = H2::connect(baton.addr).await;
        let outcome = conn.request(1, &fields, body).await;
        let result = if !outcome.is_refusal() {
            Err(format!("got {outcome:?}; expected a stream reset or a 4xx"))
        } else if backend.count() != before {
            Err(format!(
                "refused ({outcome:?}), yet the backend saw {}",
                backend.last().uri
            ))
        } else {
            Ok(())
        };
        failures.check(name, result);
    }
    failures.check("serves-after", h2_still_serves(baton.addr).await);
    failures.assert_none("malformed h2 requests");
}

async fn h2_still_serves(addr: SocketAddr) -> Result<(), String> {
    let mut conn = H2::connect(addr).await;
    let outcome = conn.request(1, &base("/after"), None).await;
    match outcome.status() {
        Some(200) => Ok(()),
        _ => Err(format!("a normal h2 request afterwards got {outcome:?}")),
    }
}

#[tokio::test]
async fn an_h2_body_that_contradicts_its_content_length_never_reaches_the_backend_whole() {
    let backend = RawBackend::echo().await;
    let baton = TestBaton::start(&config(backend.addr, "", "")).await;
    let mut failures = Failures::default();
    let post = |length: &'static str| {
        with(
            replace(base("/cl"), ":method", "POST"),
            &[("content-length", length)],
        )
    };
    for (name, length, frames) in [
        ("declares-10-sends-3", "10", vec![&b"abc"[..]]),
        ("declares-3-sends-10", "3", vec![&b"abcdefghij"[..]]),
        ("declares-0-sends-3", "0", vec![&b"abc"[..]]),
        (
            "declares-3-sends-3-then-3",
            "3",
            vec![&b"abc"[..], &b"def"[..]],
        ),
    ] {
        let before = backend.count();
        let mut conn = H2::connect(baton.addr).await;
        let mut bytes = h2::headers(1, &post(length), false);
        for (i, frame) in frames.iter().enumerate() {
            bytes.extend(h2::data(1, frame, i + 1 == frames.len()));
        }
        let _ = conn.send(&bytes).await;
        let outcome = conn.outcome(1).await;
        let seen = backend.requests();
        let result = if !outcome.is_refusal() {
            Err(format!("got {outcome:?}; expected a stream reset or a 4xx"))
        } else if let Some(r) = seen[before..].iter().find(|r| r.complete) {
            Err(format!(
                "the backend got a complete request with body {:?}",
                String::from_utf8_lossy(&r.body)
            ))
        } else {
            Ok(())
        };
        failures.check(name, result);
    }
    failures.check("serves-after", h2_still_serves(baton.addr).await);
    failures.assert_none("h2 content-length");
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let backend = Backend::echo().await;
    // The header timeout is set past the safety limit, so only the idle
    // timeout can close these connections in time.
    let baton = TestBaton::start(&config(
        backend.addr,
        "idle_timeout = \"300ms\"\nheader_read_timeout = \"30s\"",
        "",
    ))
    .await;
    let mut failures = Failures::default();
    for (name, answer) in [
        ("h2-silent-after-settings", false),
        ("h2-acks-but-opens-nothing", true),
    ] {
        let mut conn = H2::connect(baton.addr).await;
        conn.answer = answer;
        failures.check(name, conn.until_closed().await);
    }
    let result = async {
        let mut stream = TcpStream::connect(baton.addr)
            .await
            .map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let first = read_response(&mut stream).await?;
        if first.status != 200 {
            return Err(format!("got {:?}", first.status_line));
        }
        read_until_close(&mut stream).await.map(|_| ())
    }
    .await;
    failures.check("h1-keep-alive-after-one-request", result);
    failures.check("serves-after", still_serves(baton.addr, "/after").await);
    failures.assert_none("idle connections");
}

#[tokio::test]
async fn rapid_reset_is_cut_off_or_absorbed_and_baton_keeps_serving() {
    let backend = Backend::echo().await;
    let baton = TestBaton::start(&config(backend.addr, "", "")).await;
    let mut conn = H2::connect(baton.addr).await;
    let mut burst = Vec::new();
    for i in 0..1000u32 {
        let stream = 1 + 2 * i;
        burst.extend(h2::headers(stream, &base("/rr"), true));
        burst.extend(h2::rst_stream(stream, h2::CANCEL));
    }
    // Baton may close the connection partway: what it did is read below.
    let _ = conn.send(&burst).await;
    let next = conn.request(2001, &base("/after-burst"), None).await;
    let cut_off = conn.goaway.is_some() || matches!(next, Outcome::GoAway(_) | Outcome::Closed);
    assert!(
        cut_off || next.status() == Some(200),
        "neither a GOAWAY nor an answer after the burst: {next:?}"
    );
    h2_still_serves(baton.addr).await.unwrap();
    still_serves(baton.addr, "/after").await.unwrap();
}

#[tokio::test]
async fn a_header_block_that_never_ends_is_cut_off() {
    let backend = Backend::echo().await;
    let baton = TestBaton::start(&config(backend.addr, "", "")).await;
    let mut conn = H2::connect(baton.addr).await;
    // HEADERS without END_HEADERS, then CONTINUATION frames of junk fields
    // without end (CVE-2024-27316's shape): 4 MiB if Baton read them all.
    let mut flood = h2::frame(h2::HEADERS, h2::END_STREAM, 1, &h2::encode(&base("/cont")));
    let piece = h2::encode(&[("x-junk", &"j".repeat(1000))]);
    for _ in 0..4096 {
        flood.extend(h2::frame(h2::CONTINUATION, 0, 1, &piece));
    }
    let _ = conn.send(&flood).await;
    let outcome = conn.outcome(1).await;
    assert!(
        matches!(
            outcome,
            Outcome::GoAway(_) | Outcome::Closed | Outcome::Reset(_)
        ) || outcome.status().is_some_and(|s| (400..500).contains(&s)),
        "the endless header block was not refused: {outcome:?}"
    );
    assert_eq!(backend.count(), 0);
    h2_still_serves(baton.addr).await.unwrap();
}

// ---------------------------------------------------------------------------
// Slow heads and bodies.

#[tokio::test]
async fn slow_or_absent_heads_lose_their_connection() {
    let backend = Backend::echo().await;
    let baton = TestBaton::start(&config(backend.addr, QUICK_IDLE, "")).await;
    let mut failures = Failures::default();
    for (name, first) in [
        ("half-a-head", &b"GET / HTTP/1.1\r\nHost: x\r\n"[..]),
        ("request-line-only", &b"GET / HTTP/1.1\r\n"[..]),
        ("nothing", &b""[..]),
        ("partial-h2-preface", &b"PRI * HTTP/2.0\r\n"[..]),
        ("h2-preface-without-settings", h2::PREFACE),
    ] {
        let result = async {
            let mut stream = TcpStream::connect(baton.addr)
                .await
                .map_err(|e| e.to_string())?;
            stream.write_all(first).await.map_err(|e| e.to_string())?;
            let answered = read_until_close(&mut stream).await?;
            let text = answered.text();
            if !first.starts_with(b"PRI") && !text.is_empty() && !text.starts_with("HTTP/1.1 4") {
                return Err(format!("closed after {text:?}"));
            }
            Ok(())
        }
        .await;
        failures.check(name, result);
    }
    // A head sent a byte at a time, never finishing: the header timeout
    // bounds the whole head, not the gap between its bytes.
    let trickle = async {
        let mut stream = TcpStream::connect(baton.addr)
            .await
            .map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .map_err(|e| e.to_string())?;
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
        let closed = tokio::time::timeout(LIMIT, async {
            let mut buf = [0u8; 256];
            loop {
                tokio::select! {
                    read = stream.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    },
                    _ = tick.tick() => {
                        if stream.write_all(b"a").await.is_err() {
                            return;
                        }
                    }
                }
            }
        })
        .await;
        closed.map_err(|_| format!("a trickled head kept its connection past {LIMIT:?}"))
    }
    .await;
    failures.check("head-trickled-a-byte-at-a-time", trickle);
    failures.check(
        "backend-saw-nothing",
        if backend.count() == 0 {
            Ok(())
        } else {
            Err(format!("{}", backend.count()))
        },
    );
    failures.check("serves-after", still_serves(baton.addr, "/after").await);
    failures.assert_none("slow heads");
}

#[tokio::test]
async fn a_body_that_stalls_is_a_408_and_never_reaches_the_backend_whole() {
    let backend = RawBackend::echo().await;
    let baton = TestBaton::start(&config(backend.addr, r#"body_read_timeout = "300ms""#, "")).await;
    let mut failures = Failures::default();
    for (name, head, body) in [
        (
            "content-length-stalls-after-3",
            "Content-Length: 100\r\n",
            "abc",
        ),
        (
            "chunked-stalls-mid-chunk",
            "Transfer-Encoding: chunked\r\n",
            "64\r\nabc",
        ),
        (
            "chunked-stalls-between-chunks",
            "Transfer-Encoding: chunked\r\n",
            "3\r\nabc\r\n",
        ),
        (
            "expect-continue-then-nothing",
            "Content-Length: 100\r\nExpect: 100-continue\r\n",
            "",
        ),
    ] {
        let result = async {
            let mut stream = TcpStream::connect(baton.addr)
                .await
                .map_err(|e| e.to_string())?;
            let request = format!("POST /stall HTTP/1.1\r\nHost: x\r\n{head}\r\n{body}");
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            // The client keeps its side open: only Baton's timeout ends this.
            let answer = read_response(&mut stream).await?;
            answer.problem(408)?;
            Ok(())
        }
        .await;
        failures.check(name, result);
    }
    failures.check(
        "backend-saw-no-complete-request",
        match backend.requests().iter().find(|r| r.complete) {
            Some(r) => Err(format!("{:?}", r.head)),
            None => Ok(()),
        },
    );
    failures.check("serves-after", still_serves(baton.addr, "/after").await);
    failures.assert_none("stalled bodies");
}

#[tokio::test]
async fn clients_stalling_their_bodies_hold_no_place_on_a_facade_route() {
    let api = JobApi::start(Script {
        sync_answer: true,
        ..Script::default()
    })
    .await;
    let baton = TestBaton::start(&async_config(
        &api,
        "preset = \"location-303\"\nmax_held = 1",
    ))
    .await;
    let mut stallers = Vec::new();
    for i in 0..2 {
        let mut stream = TcpStream::connect(baton.addr).await.unwrap();
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: 100\r\nExpect: 100-continue\r\n\r\n",
            api.submit_path()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // `100 Continue` says Baton is reading the body: the event this
        // test waits on instead of a clock.
        let interim = first_head(&mut stream).await;
        assert!(
            interim.starts_with("HTTP/1.1 100"),
            "staller {i} got {interim:?} instead of 100 Continue"
        );
        stream.write_all(b"{\"a\"").await.unwrap();
        stallers.push(stream);
    }
    let normal = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 15\r\nConnection: close\r\n\r\n{{\"report\":\"q3\"}}",
        api.submit_path()
    );
    let answered = exchange(baton.addr, normal.as_bytes()).await.unwrap();
    let first = answered.first().unwrap();
    assert_eq!(
        first.status,
        200,
        "a normal client behind two stalled bodies: {}",
        answered.text()
    );
    assert_eq!(api.submits(), 1, "only the complete request was submitted");
    drop(stallers);
    let again = exchange(baton.addr, normal.as_bytes()).await.unwrap();
    assert_eq!(again.first().unwrap().status, 200, "{}", again.text());
    assert_eq!(api.submits(), 2);
}

/// Reads one head (up to the blank line), bounded by [`LIMIT`].
async fn first_head(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(LIMIT, async {
        while find(&buf, b"\r\n\r\n").is_none() {
            match stream.read(&mut byte).await {
                Ok(0) | Err(_) => break,
                Ok(_) => buf.push(byte[0]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no head within {LIMIT:?}: {:?}",
        String::from_utf8_lossy(&buf)
    );
    String::from_utf8_lossy(&buf).into_owned()
}

// ---------------------------------------------------------------------------
// Pipelining.

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_stop_at_a_close() {
    let backend = Backend::echo().await;
    let baton = TestBaton::start(&config(backend.addr, "", "")).await;
    let mut failures = Failures::default();
    // (case, bytes, the (target, body) of each answer in order)
    type Pipelined<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
    let cases: [Pipelined; 4] = [
        (
            "two-in-one-write",
            "GET /p/1 HTTP/1.1\r\nHost: x\r\n\r\n\
             POST /p/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\ntwo",
            &[("/p/1", ""), ("/p/2", "two")],
        ),
        (
            "three-in-one-write",
            "GET /p/1 HTTP/1.1\r\nHost: x\r\n\r\n\
             POST /p/2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nsecond\r\n0\r\n\r\n\
             POST /p/3 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nthird",
            &[("/p/1", ""), ("/p/2", "second"), ("/p/3", "third")],
        ),
        (
            "nothing-after-connection-close",
            "GET /p/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n\
             GET /p/2 HTTP/1.1\r\nHost: x\r\n\r\n",
            &[("/p/1", "")],
        ),
        (
            "close-in-the-middle",
            "POST /p/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none\
             GET /p/2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n\
             POST /p/3 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nthree",
            &[("/p/1", "one"), ("/p/2", "")],
        ),
    ];
    for (name, bytes, expected) in cases {
        let before = backend.count();
        let result = async {
            let answered = exchange(baton.addr, bytes.as_bytes()).await?;
            let got: Vec<(String, String)> = answered
                .finals()
                .iter()
                .map(|r| {
                    (
                        format!("{} {}", r.status, r.header("x-echo-target").unwrap_or("-")),
                        r.text(),
                    )
                })
                .collect();
            let want: Vec<(String, String)> = expected
                .iter()
                .map(|(path, body)| (format!("200 {path}"), body.to_string()))
                .collect();
            if got != want {
                return Err(format!("answers {got:?}; expected {want:?}"));
            }
            let seen: Vec<String> = backend.seen()[before..]
                .iter()
                .map(|s| s.uri.to_string())
                .collect();
            let want: Vec<&str> = expected.iter().map(|(p, _)| *p).collect();
            if seen != want {
                return Err(format!("the backend saw {seen:?}; expected {want:?}"));
            }
            Ok(())
        }
        .await;
        failures.check(name, result);
    }
    failures.check("serves-after", still_serves(baton.addr, "/after").await);
    failures.assert_none("pipelining");
}

// ---------------------------------------------------------------------------
// Bodies over the limit.

#[tokio::test]
async fn bodies_over_the_limit_are_a_413_before_any_backend() {
    let backend = Backend::echo().await;
    let baton = TestBaton::start(&config(backend.addr, r#"max_request_body = "1KiB""#, "")).await;
    let mut failures = Failures::default();
    let chunks = |size: usize, count: usize| {
        let mut out = String::new();
        for _ in 0..count {
            out.push_str(&format!("{size:x}\r\n{}\r\n", "y".repeat(size)));
        }
        out.push_str("0\r\n\r\n");
        out
    };
    let chunked = "Transfer-Encoding: chunked\r\nConnection: close\r\n";
    let cases: Vec<(&str, String, bool)> = vec![
        (
            "chunked-over",
            format!("{chunked}\r\n{}", chunks(256, 8)),
            true,
        ),
        (
            "chunked-over-one-chunk",
            format!("{chunked}\r\n{}", chunks(2048, 1)),
            true,
        ),
        (
            "chunked-over-tiny-chunks",
            format!("{chunked}\r\n{}", chunks(1, 1100)),
            true,
        ),
        (
            "declared-over",
            format!(
                "Content-Length: 2048\r\nConnection: close\r\n\r\n{}",
                "z".repeat(2048)
            ),
            true,
        ),
        // The client waits before sending its body: the declared size
        // alone must be enough to refuse it.
        (
            "declared-over-body-withheld",
            "Content-Length: 2048\r\n\r\n".to_owned(),
            false,
        ),
        (
            "declared-over-expecting-continue",
            "Content-Length: 2048\r\nExpect: 100-continue\r\n\r\n".to_owned(),
            false,
        ),
    ];
    for (name, rest, sends_all) in cases {
        let before = backend.count();
        let request = format!("POST /big HTTP/1.1\r\nHost: x\r\n{rest}");
        let result = async {
            let answer = if sends_all {
                exchange(baton.addr, request.as_bytes())
                    .await?
                    .first()?
                    .clone()
            } else {
                let mut stream = TcpStream::connect(baton.addr)
                    .await
                    .map_err(|e| e.to_string())?;
                stream
                    .write_all(request.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                let (answer, read) = read_answer(&mut stream).await?;
                // No `100 Continue` first: the declared size alone refuses it.
                if !read.starts_with("HTTP/1.1 413") {
                    return Err(format!("the first answer was {:?}", read.lines().next()));
                }
                answer
            };
            answer.problem(413)?;
            if backend.count() != before {
                return Err(format!("the backend saw {}", backend.last().uri));
            }
            Ok(())
        }
        .await;
        failures.check(name, result);
    }
    failures.check("serves-after", still_serves(baton.addr, "/after").await);
    failures.assert_none("bodies over the limit");
}

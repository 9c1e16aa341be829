//! The guard: what a request must be before anything reads its path or
//! routes it. Its head fits the header limit, it names one well-formed
//! host (an absolute-form target's authority wins over `Host`), and its
//! path is made canonical ([`crate::target`]), so routing, the rewrite and
//! the backend all read the same one. A request that fails here is
//! refused with a 4xx and touches nothing else.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures_util::future::{self, Either, Ready};
use http::header::HeaderValue;
use http::{Request, Version};
use tower::{Layer, Service};

use super::{Answer, Call};
use crate::config::ServerConfig;
use crate::error::ClientError;
use crate::headers;
use crate::target::{self, TargetError};

/// Refuses a request whose head is not fit to route, before the inner
/// service sees it.
#[derive(Clone)]
pub(super) struct Guard<S> {
    inner: S,
}

pub(super) struct GuardLayer;

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard { inner }
    }
}

impl<S> Service<Call> for Guard<S>
where
    S: Service<Call, Response = Answer, Error = Infallible>,
{
    type Response = Answer;
    type Error = Infallible;
    /// A refusal is boxed: it is rare, and unboxed it would give every
    /// request's future room for a whole answer.
    type Future = Either<Box<Ready<Result<Answer, Infallible>>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: Call) -> Self::Future {
        match check(&mut call.request, &call.generation.config.server) {
            Ok(()) => Either::Right(self.inner.call(call)),
            Err(refused) => Either::Left(Box::new(future::ok(Answer {
                result: Err(refused.into()),
                exchange: call.exchange,
            }))),
        }
    }
}

/// The checks, in order: the size of the head, the host, the path.
fn check<B>(request: &mut Request<B>, server: &ServerConfig) -> Result<(), ClientError> {
    let target_len = request
        .uri()
        .path_and_query()
        .map_or(1, |p| p.as_str().len());
    let size = headers::header_size(
        request.method().as_str().len(),
        target_len,
        request.headers(),
    );
    if size > server.max_header_size {
        return Err(ClientError::HeaderTooLarge {
            size,
            limit: server.max_header_size,
        });
    }
    let host = checked_host(request)?;
    if let (Some(host), Some(_)) = (host, request.uri().authority()) {
        // An absolute-form target's authority wins over `Host` (RFC 9112
        // §3.2.2); from here on `Host` says what the client asked for.
        request.headers_mut().insert(http::header::HOST, host);
    }
    normalize_target(request)
}

/// The host the client asked for: an absolute-form target's (or HTTP/2's
/// `:authority`), else `Host`. An HTTP/1.1 request without `Host`, with
/// two, or with one that is not a plain `host[:port]` is refused (RFC 9112
/// §3.2), as is an HTTP/2 request whose `Host` names another authority.
fn checked_host<B>(request: &Request<B>) -> Result<Option<HeaderValue>, ClientError> {
    let bad = |why: &str| ClientError::BadRequest(why.to_owned());
    let mut fields = request.headers().get_all(http::header::HOST).iter();
    let field = fields.next();
    if fields.next().is_some() {
        return Err(bad("the request has more than one Host field"));
    }
    let field = match field {
        None => None,
        Some(value) if value.is_empty() => None,
        Some(value) => {
            let valid = value.to_str().ok().is_some_and(is_host_and_port);
            if !valid {
                return Err(bad(
                    "the Host field is not a host name with an optional port",
                ));
            }
            Some(value)
        }
    };
    if request.version() == Version::HTTP_11 && request.headers().get(http::header::HOST).is_none()
    {
        return Err(bad("an HTTP/1.1 request needs a Host field"));
    }
    let Some(authority) = request.uri().authority() else {
        return Ok(field.cloned());
    };
    if authority.as_str().contains('@') {
        return Err(bad("the request target carries credentials"));
    }
    if request.version() == Version::HTTP_2
        && field.is_some_and(|f| {
            !f.as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes())
        })
    {
        return Err(bad("Host and :authority name different hosts"));
    }
    HeaderValue::from_str(authority.as_str())
        .map(Some)
        .map_err(|_| bad("the request target's authority is not a valid host"))
}

/// `host[:port]` as RFC 9110 §7.2 allows it in `Host`: a bracketed IP
/// literal or a registered name (unreserved, sub-delims, `%`-escapes, no
/// `@`), then an optional port of digits that fit 16 bits. Checked byte by
/// byte, without the allocation a parse would cost every request.
fn is_host_and_port(text: &str) -> bool {
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let Some((literal, after)) = rest.split_once(']') else {
                return false;
            };
            let port = match after {
                "" => "",
                after => match after.strip_prefix(':') {
                    Some(port) => port,
                    None => return false,
                },
            };
            let literal_ok = !literal.is_empty()
                && literal
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            (literal_ok, port)
        }
        None => {
            let (name, port) = text.rsplit_once(':').unwrap_or((text, ""));
            let name_ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b));
            (name_ok, port)
        }
    };
    host && (port.is_empty()
        || (port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok()))
}

/// Puts the request's path in its canonical form ([`target`]), so routing,
/// rewriting and the backend all read the same one.
fn normalize_target<B>(request: &mut Request<B>) -> Result<(), ClientError> {
    let path = match target::normalize(request.uri().path(), true)? {
        std::borrow::Cow::Borrowed(_) => return Ok(()),
        std::borrow::Cow::Owned(path) => path,
    };
    let uri = request.uri();
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|_| ClientError::BadTarget(TargetError::BadEscape))?,
    );
    *request.uri_mut() =
        http::Uri::from_parts(parts).map_err(|_| ClientError::BadTarget(TargetError::BadEscape))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_fields() {
        for good in [
            "example.com",
            "example.com:8080",
            "example.com:",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:443",
            "a-b_c~d",
        ] {
            assert!(is_host_and_port(good), "{good}");
        }
        for bad in [
            "", "a b", "x@y", "x:abc", "x:99999", "x/y", "[::1", "[]:80", "[::1]x", ":80", "a\\b",
        ] {
            assert!(!is_host_and_port(bad), "{bad}");
        }
    }
}

//! Pass-through: forward one request to its route's backend and stream the
//! answer back, as a faithful reverse proxy.
//!
//! Bodies are never collected: the client's body becomes the backend
//! request's body (behind the size limit) and the backend's body becomes
//! the client's, so a gigabyte moves through a few buffers. The only edits
//! are the ones a proxy owes both sides: hop-by-hop hygiene, `Via`, the
//! `X-Forwarded-*` fields, `Host`, and the route's path rewrite. An
//! `Upgrade` (WebSocket and friends) becomes a byte tunnel once the backend
//! agrees with a `101`.

pub(crate) mod rewrite;
pub(crate) mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use http::header;
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;
use tracing::debug;

use crate::body::{self, Body};
use crate::config::{BackendConfig, Route};
use crate::error::{BackendError, Error};
use crate::headers;
use crate::proxy::upstream::Upstream;

/// What the proxy needs to know about the request beyond the request.
pub(crate) struct Forward<'a> {
    pub(crate) route: &'a Route,
    pub(crate) upstream: &'a Upstream,
    pub(crate) peer: SocketAddr,
    /// The peer is a trusted proxy: its forwarding fields are kept.
    pub(crate) trusted_peer: bool,
    /// How the client's body is read: limit, buffering, idle timeout.
    pub(crate) reading: body::Reading,
    /// Memory that buffered request bodies share.
    pub(crate) buffer_budget: &'a Arc<Semaphore>,
    /// Turns true when the grace period ends: upgraded tunnels close then.
    pub(crate) drain: tokio::sync::watch::Receiver<bool>,
    /// Where tunnels run: they outlive the HTTP connection that the drain
    /// tracks, so the drain waits for these too.
    pub(crate) tunnels: &'a tokio_util::task::TaskTracker,
}

impl Forward<'_> {
    pub(crate) fn max_request_body(&self) -> u64 {
        self.reading.limit
    }
}

/// Forwards `request` and relays the answer. A request whose answer has
/// not started when the grace period ends gets a 503, not a connection cut
/// without a status line.
pub(crate) async fn forward(
    cx: Forward<'_>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let mut drain = cx.drain.clone();
    tokio::select! {
        biased;
        answer = exchange(&cx, request) => answer,
        _ = drain.wait_for(|now| *now) => Err(Error::ShuttingDown),
    }
}

async fn exchange(
    cx: &Forward<'_>,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let backend = &cx.upstream.config;
    // Only the upgrades the route allows pass (WebSocket by default): an
    // `Upgrade: h2c` tunnelled to an h2c-capable backend would carry
    // requests past every check Baton makes. Any other upgrade is dropped
    // with the hop-by-hop fields and the request goes as an ordinary one.
    let upgrade = headers::upgrade_protocol(request.version(), request.headers())
        .filter(|protocol| headers::upgrade_allowed(protocol, &cx.route.upgrades));
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
    let (parts, incoming) = request.into_parts();
    let body = body::request(
        incoming,
        content_length(&parts.headers),
        &cx.reading,
        cx.buffer_budget,
    )
    .await?;
    let mut outgoing = prepare(cx, Request::from_parts(parts, body))?;
    if let Some(protocol) = upgrade {
        headers::set_upgrade(outgoing.headers_mut(), protocol);
    }

    let response = cx.upstream.send(outgoing).await?;

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            return tunnel(backend, client_upgrade, response, cx);
        }
        return Err(Error::backend(
            &backend.name,
            BackendError::Upgrade("answered 101 to a request that asked for no upgrade".into()),
        ));
    }
    relay(response, backend).await
}

/// The client's request as its backend should receive it: the route's
/// target URL, hygienic headers, forwarding fields and `Host`. The body
/// is already read or limited ([`body::request`]). Also the first step of
/// a facade's submit.
pub(crate) fn prepare(cx: &Forward<'_>, request: Request<Body>) -> Result<Request<Body>, Error> {
    let backend = &cx.upstream.config;
    let (mut parts, body) = request.into_parts();
    // The service has checked Host and made it agree with an absolute-form
    // target, so it names the host the client asked for.
    let client_host = parts.headers.get(header::HOST).cloned();
    parts.uri = rewrite::backend_uri(backend, cx.route, &parts.uri)?;
    let headers = &mut parts.headers;
    headers::strip_hop_by_hop(headers);
    headers::add_forwarded(headers, cx.peer.ip(), client_host.as_ref(), cx.trusted_peer);
    headers::add_via(headers, parts.version);
    let host = match (&client_host, backend.preserve_host) {
        (Some(host), true) => host.clone(),
        _ => cx.upstream.host.clone().ok_or_else(|| {
            Error::Internal(format!("backend `{}` has no usable Host", backend.name).into())
        })?,
    };
    headers.insert(header::HOST, host);
    // Backends speak HTTP/1.1 whatever the client spoke; hyper frames the
    // body (chunked or sized) from the body's own size hint.
    parts.version = Version::HTTP_11;
    parts.extensions = http::Extensions::new();
    Ok(Request::from_parts(parts, body))
}

/// A backend's response as the client should receive it, headers only:
/// hop-by-hop fields out, `Via` in. A `Content-Length` beside a
/// `Transfer-Encoding` is removed (RFC 9112 §6.3): the body was framed by
/// the transfer coding, and the stale length would cut it short.
pub(crate) fn finish<B>(mut response: Response<B>) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<crate::error::BoxError>,
{
    let version = response.version();
    let headers = response.headers_mut();
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    headers::strip_hop_by_hop(headers);
    headers::add_via(headers, version);
    response.map(body::stream)
}

/// [`finish`], with the body behind the backend's idle timeout and its
/// first piece read before the head goes out: a body that breaks or stalls
/// before its first byte becomes a 502 or 504 the client can read, rather
/// than a connection closed without a status line (which some clients
/// answer by sending a POST again). Event streams are passed on at once:
/// their clients wait for the head, and the first event may be far off.
pub(crate) async fn relay<B>(
    response: Response<B>,
    backend: &BackendConfig,
) -> Result<Response<Body>, Error>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<crate::error::BoxError>,
{
    let idle = backend.body_idle_timeout;
    let streams_events = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().starts_with("text/event-stream"));
    let response = response.map(|b| body::IdleTimeout::new(b, idle, false));
    if streams_events {
        return Ok(finish(response));
    }
    let (parts, body) = response.into_parts();
    let body = body::prefetch(body).await.map_err(|e| {
        let kind = match e.downcast_ref::<body::Stalled>() {
            Some(stalled) => BackendError::BodyStalled(stalled.timeout),
            None => BackendError::Broken {
                cause: crate::error::chain(&*e),
                source: e,
            },
        };
        Error::backend(&backend.name, kind)
    })?;
    Ok(finish(Response::from_parts(parts, body)))
}

/// Answers the client's upgrade with the backend's `101` and, once both
/// sides have switched, copies bytes both ways until either closes.
fn tunnel(
    backend: &BackendConfig,
    client_upgrade: hyper::upgrade::OnUpgrade,
    mut response: Response<Incoming>,
    cx: &Forward<'_>,
) -> Result<Response<Body>, Error> {
    let mut drain = cx.drain.clone();
    let Some(protocol) = response.headers().get(header::UPGRADE).cloned() else {
        return Err(Error::backend(
            &backend.name,
            BackendError::Upgrade("101 without an Upgrade header".into()),
        ));
    };
    let backend_upgrade = hyper::upgrade::on(&mut response);
    let name = backend.name.clone();
    cx.tunnels.spawn(async move {
        match tokio::try_join!(client_upgrade, backend_upgrade) {
            Ok((client, backend)) => {
                let mut client = TokioIo::new(client);
                let mut backend = TokioIo::new(backend);
                tokio::select! {
                    copied = tokio::io::copy_bidirectional(&mut client, &mut backend) => {
                        if let Err(e) = copied {
                            debug!(backend = %name, error = %e, "upgraded tunnel closed with an error");
                        }
                    }
                    _ = drain.wait_for(|now| *now) => {
                        debug!(backend = %name, "upgraded tunnel closed at the end of the grace period");
                    }
                }
            }
            Err(e) => debug!(backend = %name, error = %e, "upgrade did not complete"),
        }
    });
    let (mut parts, _) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::set_upgrade(&mut parts.headers, protocol);
    Ok(Response::from_parts(parts, body::empty()))
}

pub(crate) fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

//! One client connection: which HTTP it speaks, then hyper serving it, a
//! graceful close when the drain begins, and the cut when the grace period
//! ends.
//!
//! The protocol is told by peeking at the first bytes — the HTTP/2 client
//! preface (h2c with prior knowledge) or anything else (HTTP/1.x) — and the
//! connection is then served by hyper's own HTTP/1 or HTTP/2 connection.
//! hyper-util's auto builder does the same by reading the bytes into a
//! buffer it replays in front of the socket, and keeps the state of both
//! protocols in every connection: 2–3 KiB more per open connection, which
//! a server holding thousands of requests pays thousands of times
//! (BENCHMARKS.md, held requests).

use std::convert::Infallible;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tracing::debug;

use crate::body::Body;
use crate::config::ServerConfig;

/// How client connections are served; built once per listener.
pub struct Settings {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// The time a new connection has to say which HTTP it speaks and to
    /// send its first request: the header read timeout, or the idle
    /// timeout where that is shorter (a silent connection is idle too).
    header_read_timeout: Duration,
    /// An HTTP/2 connection with no request in flight this long is closed.
    /// (HTTP/1 needs no such timer: hyper's header read timeout already
    /// runs while a keep-alive connection waits for its next request.)
    idle_timeout: Duration,
}

impl Settings {
    pub fn new(server: &ServerConfig) -> Self {
        // hyper refuses header blocks over its read buffer with a bare 431
        // and closes; the buffer is kept well above the configured limit so
        // that the service's own check answers first, with a problem+json.
        let buffer = (server.max_header_size * 2).max(16 * 1024);
        // hyper's header timer also runs while a keep-alive connection
        // waits for its next request, so it is the HTTP/1 idle timeout too.
        let first_request = server.header_read_timeout.min(server.idle_timeout);
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(first_request)
            .keep_alive(server.keep_alive)
            .max_buf_size(buffer);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        // Pings find a peer that vanished without closing; an idle but
        // live peer is closed by the idle timer instead.
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(buffer).unwrap_or(u32::MAX))
            .keep_alive_interval(server.http2_keep_alive_interval)
            .keep_alive_timeout(server.http2_keep_alive_timeout);
        Settings {
            http1,
            http2,
            header_read_timeout: first_request,
            idle_timeout: server.idle_timeout,
        }
    }
}

/// Where serving stands, as every connection sees it: one signal for both
/// steps of the shutdown, so a connection waits on (and is woken for) one
/// thing rather than two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Serving,
    /// Finish what is in flight, then close.
    Draining,
    /// The grace period is over: close now.
    Cut,
}

/// The first bytes of every HTTP/2 connection (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

enum Protocol {
    Http1,
    Http2,
}

/// Serves `stream` until it closes, or closes it gracefully (in-flight
/// requests finish, then it closes) once `phase` is past serving, or at
/// once when it is cut.
///
/// An `async move` block rather than an `async fn`, so the task keeps its
/// arguments once for the connection's whole life.
#[allow(clippy::manual_async_fn)] // deliberate: see the doc comment
pub fn serve<S>(
    stream: TcpStream,
    service: S,
    settings: Arc<Settings>,
    mut phase: watch::Receiver<Phase>,
) -> impl Future<Output = Result<(), hyper::Error>>
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    async move {
        // A client that connects and says nothing is dropped like one that
        // sends half a request head (slowloris), and at once when draining.
        let protocol = tokio::select! {
            sniffed = tokio::time::timeout(settings.header_read_timeout, sniff(&stream)) => {
                match sniffed {
                    Ok(Ok(Some(protocol))) => protocol,
                    _ => return Ok(()),
                }
            }
            _ = phase.wait_for(|now| *now >= Phase::Draining) => return Ok(()),
        };
        let io = TokioIo::new(stream);
        // A connection's state lives in its task for as long as the client
        // stays, so each is stored once: pinned here, and borrowed by the
        // drain. HTTP/2's state is twice HTTP/1's and a task is as large as
        // its largest branch, so it goes in a box of its own rather than
        // make every HTTP/1 connection pay for it.
        match protocol {
            Protocol::Http1 => {
                let connection = pin!(settings.http1.serve_connection(io, service).with_upgrades());
                let never_idle = std::future::pending();
                until_drained(connection, phase, never_idle, |c| c.graceful_shutdown()).await
            }
            Protocol::Http2 => {
                let activity = Arc::new(Activity::default());
                let service = Tracked {
                    inner: service,
                    activity: Arc::clone(&activity),
                };
                let mut connection = Box::pin(settings.http2.serve_connection(io, service));
                let idle = activity.idle(settings.header_read_timeout, settings.idle_timeout);
                let closing =
                    until_drained(connection.as_mut(), phase, idle, |c| c.graceful_shutdown());
                closing.await
            }
        }
    }
}

/// Which HTTP the client speaks, from its first bytes, without taking them
/// off the socket; `None` if it closed first.
async fn sniff(stream: &TcpStream) -> std::io::Result<Option<Protocol>> {
    let mut first = [0u8; PREFACE.len()];
    let mut pause = Duration::from_millis(5);
    loop {
        let n = stream.peek(&mut first).await?;
        if n == 0 {
            return Ok(None);
        }
        if first[..n] != PREFACE[..n] {
            return Ok(Some(Protocol::Http1));
        }
        if n == PREFACE.len() {
            return Ok(Some(Protocol::Http2));
        }
        // Part of the preface so far. Peeking again at once would find the
        // same bytes: give the rest a moment, longer each time, so a client
        // that sends half a preface and stops costs a few wake-ups rather
        // than one every few milliseconds until the header timeout.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_SNIFF_PAUSE);
    }
}

/// The longest pause between two looks at a partial HTTP/2 preface.
const MAX_SNIFF_PAUSE: Duration = Duration::from_millis(250);

/// Runs `connection`; when the drain begins or `idle` resolves, asks it to
/// finish what is in flight and close, and runs it to its end or until the
/// cut. A connection closed for being idle that does not end within
/// [`IDLE_CLOSE`] (a peer that never finished the HTTP/2 handshake, or
/// ignores the GOAWAY) is dropped: it has nothing in flight to lose.
async fn until_drained<C, E>(
    mut connection: Pin<&mut C>,
    mut phase: watch::Receiver<Phase>,
    idle: impl Future<Output = ()>,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    // Biased, and so polled in order, because this runs at every wake-up
    // of every connection: an unbiased select draws a random number each
    // time. A dropped sender (serving is over) counts as the next step.
    let was_idle = tokio::select! {
        biased;
        result = connection.as_mut() => return result,
        _ = phase.wait_for(|now| *now >= Phase::Draining) => false,
        () = idle => true,
    };
    graceful_shutdown(connection.as_mut());
    let dropped_when_idle = async {
        if was_idle {
            tokio::time::sleep(IDLE_CLOSE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        biased;
        result = connection => result,
        _ = phase.wait_for(|now| *now == Phase::Cut) => {
            debug!("connection cut at the end of the grace period");
            Ok(())
        }
        () = dropped_when_idle => {
            debug!("idle connection did not close after its GOAWAY; dropped");
            Ok(())
        }
    }
}

/// How long an idle connection that was asked to close may take to do it.
const IDLE_CLOSE: Duration = Duration::from_secs(1);

/// Requests in flight on one HTTP/2 connection, so the connection can be
/// closed once it has had none for the idle timeout. hyper's HTTP/2 server
/// keeps a quiet connection open for as long as the peer answers pings.
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    changed: Notify,
}

impl Activity {
    /// Resolves once no request has been in flight for `idle` (`first`
    /// for the wait for the connection's first request).
    async fn idle(&self, first: Duration, idle: Duration) {
        let mut timeout = first;
        loop {
            // Enabled before the count is read, so a change between the
            // read and the wait still wakes it.
            let changed = self.changed.notified();
            let mut changed = pin!(changed);
            changed.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                tokio::select! {
                    () = tokio::time::sleep(timeout) => return,
                    () = changed => {}
                }
            } else {
                changed.await;
            }
            timeout = idle;
        }
    }
}

/// Counts one request in flight until its response is ready.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.changed.notify_waiters();
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

/// An HTTP/2 connection's service, counting its requests in flight.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = TrackedAnswer<S::Future>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::enter(&self.activity);
        TrackedAnswer {
            answer: Box::pin(self.inner.call(request)),
            in_flight: Some(in_flight),
        }
    }
}

/// A request's answer on an HTTP/2 connection; the stream stays open until
/// its body is sent, so the count travels on with the body.
struct TrackedAnswer<F> {
    answer: Pin<Box<F>>,
    in_flight: Option<InFlight>,
}

impl<F> Future for TrackedAnswer<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let Ok(response) = std::task::ready!(self.answer.as_mut().poll(cx));
        let in_flight = self.in_flight.take();
        std::task::Poll::Ready(Ok(response.map(|body| {
            body.map_frame(move |frame| {
                let _open = &in_flight;
                frame
            })
            .boxed_unsync()
        })))
    }
}

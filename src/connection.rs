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
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::debug;

use crate::body::Body;
use crate::config::ServerConfig;

/// How client connections are served; built once per listener.
pub struct Settings {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// Also the time a new connection has to say which HTTP it speaks.
    header_read_timeout: Duration,
}

impl Settings {
    pub fn new(server: &ServerConfig) -> Self {
        // hyper refuses header blocks over its read buffer with a bare 431
        // and closes; the buffer is kept well above the configured limit so
        // that the service's own check answers first, with a problem+json.
        let buffer = (server.max_header_size * 2).max(16 * 1024);
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(server.header_read_timeout)
            .keep_alive(server.keep_alive)
            .max_buf_size(buffer);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(buffer).unwrap_or(u32::MAX));
        Settings {
            http1,
            http2,
            header_read_timeout: server.header_read_timeout,
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
                until_drained(connection, phase, |c| c.graceful_shutdown()).await
            }
            Protocol::Http2 => {
                let mut connection = Box::pin(settings.http2.serve_connection(io, service));
                until_drained(connection.as_mut(), phase, |c| c.graceful_shutdown()).await
            }
        }
    }
}

/// Which HTTP the client speaks, from its first bytes, without taking them
/// off the socket; `None` if it closed first.
async fn sniff(stream: &TcpStream) -> std::io::Result<Option<Protocol>> {
    let mut first = [0u8; PREFACE.len()];
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
        // same bytes: give the rest a moment (an h2c client sends the
        // preface in one write, so this is rare).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `connection`; when the drain begins, asks it to finish what is in
/// flight and close, and runs it to its end or until the cut.
async fn until_drained<C, E>(
    mut connection: Pin<&mut C>,
    mut phase: watch::Receiver<Phase>,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    // Biased, and so polled in order, because this runs at every wake-up
    // of every connection: an unbiased select draws a random number each
    // time. A dropped sender (serving is over) counts as the next step.
    tokio::select! {
        biased;
        result = connection.as_mut() => return result,
        _ = phase.wait_for(|now| *now >= Phase::Draining) => graceful_shutdown(connection.as_mut()),
    }
    tokio::select! {
        biased;
        result = connection => result,
        _ = phase.wait_for(|now| *now == Phase::Cut) => {
            debug!("connection cut at the end of the grace period");
            Ok(())
        }
    }
}

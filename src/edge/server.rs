//! The accept loop and the graceful drain: each client connection goes to
//! a lane ([`crate::edge::lanes`]), where [`crate::edge::connection`] serves it —
//! HTTP/1.0, 1.1 and h2c (prior knowledge) on the same port.
//!
//! Connections are taken by the one accept loop ([`crate::edge::accept`]).
//! Shape after hyper-util's graceful server: on shutdown the listener is
//! dropped at once (new connections are refused by the kernel), every open
//! connection is told to finish its in-flight requests and close (see
//! [`crate::edge::connection`]), and whatever is still open when the grace
//! period ends is cut.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::Service;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::body::Body;
use crate::config::ServerConfig;
use crate::edge::accept;
use crate::edge::connection::{self, Phase, Settings};
use crate::edge::lanes::Lanes;

/// Serves `listener` until `shutdown` resolves, then drains. `phase` turns
/// to draining once the listener is closed (so readiness reports the
/// truth and every connection finishes what it has), and to cut when the
/// grace period ends.
///
/// `settings` are shared by every connection (a pointer each, so a held
/// request's connection does not carry a copy); `service` makes each
/// connection's service, given its peer; `drain` is what the process does
/// while it drains.
pub(crate) async fn serve<M, S>(
    listener: TcpListener,
    server: &ServerConfig,
    settings: Arc<Settings>,
    service: M,
    drain: &impl Drain,
    shutdown: impl Future<Output = ()>,
    phase: watch::Sender<Phase>,
) -> io::Result<()>
where
    M: Fn(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let connections = TaskTracker::new();
    let lanes = Lanes::start(server.threads)?;
    info!(address = %listener.local_addr()?, "listening");
    accept::accept_loop(
        &listener,
        server.max_connections,
        shutdown,
        |stream, peer, place| {
            let service = service(peer);
            let settings = Arc::clone(&settings);
            let phase_rx = phase.subscribe();
            // Counted from here, not from when its lane first runs it, so the
            // drain cannot miss a connection still being handed over.
            let counted = connections.token();
            // `map` rather than an `async` block around the connection: the
            // block would keep room for the connection's arguments beside the
            // connection's own future, for as long as the client stays.
            lanes.spawn(stream, move |stream| {
                connection::serve(stream, service, settings, phase_rx).map(move |result| {
                    if let Err(e) = result {
                        debug!(%peer, error = %e, "connection ended with an error");
                    }
                    drop(place);
                    drop(counted);
                })
            });
        },
    )
    .await;

    drop(listener);
    phase.send_replace(Phase::Draining);
    let grace = drain.grace();
    info!(grace = ?grace, open = connections.len(), "shutting down: draining connections");
    let deadline = tokio::time::Instant::now() + grace;
    // In-flight requests and upgraded tunnels both get the grace period.
    drain.tunnels().close();
    let drained = async {
        connections.close();
        connections.wait().await;
        drain.tunnels().wait().await;
    };
    tokio::pin!(drained);
    if tokio::time::timeout_at(deadline, &mut drained)
        .await
        .is_err()
    {
        // Held requests answer now (a 503 with their continuation) rather
        // than lose their connection, and tunnels close; a moment later
        // whatever is still open is cut.
        warn!("grace period over; answering held requests and closing what is left");
        drain.answer_now();
        if tokio::time::timeout(ANSWER_MARGIN, &mut drained)
            .await
            .is_err()
        {
            phase.send_replace(Phase::Cut);
        }
    }
    lanes.stop().await;
    Ok(())
}

/// Closes the listeners of Baton's own (admin, callbacks) once the client
/// listener has drained: until then probes read `/readyz` and held
/// requests may still be called back. Their requests are short; what is
/// still open a moment later is cut.
pub(crate) async fn close_side_listeners(
    listening: watch::Sender<Phase>,
    listeners: impl IntoIterator<Item = tokio::task::JoinHandle<()>>,
) {
    listening.send_replace(Phase::Draining);
    let mut listeners: Vec<_> = listeners.into_iter().collect();
    let finished = futures_util::future::join_all(listeners.iter_mut());
    if tokio::time::timeout(SIDE_MARGIN, finished).await.is_err() {
        listening.send_replace(Phase::Cut);
        for task in &listeners {
            task.abort();
        }
    }
}

/// How long the admin and callback listeners get to finish their requests
/// once the client listener has drained.
const SIDE_MARGIN: Duration = Duration::from_secs(1);

/// Time held requests get, after the grace period, to write their 503.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// What the process does while the edge drains.
pub(crate) trait Drain {
    /// The grace period in force now (a reload may have changed it).
    fn grace(&self) -> Duration;
    /// Upgraded tunnels, which get the grace period as requests do.
    fn tunnels(&self) -> &TaskTracker;
    /// The grace period is over: held requests answer now.
    fn answer_now(&self);
}

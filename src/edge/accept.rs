//! The one accept loop every listener runs: the client listener, the
//! admin and callback listeners, and the demo's sample job API.
//!
//! Shaped after axum's serve loop and hyper-util's graceful server: a cap
//! on open connections (waiting for a free place before accepting leaves
//! the excess in the kernel's backlog rather than failing them), and accept
//! errors sorted by what they mean. Running out of descriptors or memory
//! (EMFILE, ENFILE, ENOBUFS, ENOMEM) is the process's condition: retrying
//! at once would spin, so the loop backs off, longer each time. Anything
//! else is one connection's failure (reset before it was taken): the next
//! one is accepted at once.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::Service;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::body::Body;
use crate::edge::connection::{self, Phase, Settings};

/// The first and the longest pause after the process ran out of a
/// resource accepting needs.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts on `listener` until `stop` resolves, at most `max_connections`
/// open at once; each accepted connection goes to `serve` with the place it
/// holds, which it releases by dropping.
pub(crate) async fn accept_loop(
    listener: &TcpListener,
    max_connections: usize,
    stop: impl Future<Output = ()>,
    mut serve: impl FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit),
) {
    let places = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut backoff = FIRST_BACKOFF;
    tokio::pin!(stop);
    loop {
        let place = tokio::select! {
            biased;
            () = &mut stop => return,
            place = Arc::clone(&places).acquire_owned() => match place {
                Ok(place) => place,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            biased;
            () = &mut stop => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = FIRST_BACKOFF;
                let _ = stream.set_nodelay(true);
                serve(stream, peer, place);
            }
            Err(e) if out_of_resources(&e) => {
                warn!(error = %e, pause = ?backoff, "cannot accept connections: out of resources; pausing");
                tokio::select! {
                    biased;
                    () = &mut stop => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) => debug!(error = %e, "a connection failed before it was accepted"),
        }
    }
}

/// Whether an accept error is the process's (retrying at once would spin)
/// rather than one connection's.
fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Serves a listener of Baton's own (admin, callbacks, the demo's API) on
/// the current runtime: the accept loop, then [`connection::serve`] for
/// each connection, with its header timeout and idle close. When `phase`
/// leaves serving, the listener closes and open connections finish what
/// they have in flight; at [`Phase::Cut`] they close.
pub(crate) async fn serve_each<M, S>(
    listener: TcpListener,
    settings: Arc<Settings>,
    max_connections: usize,
    phase: watch::Receiver<Phase>,
    mut make_service: M,
) where
    M: FnMut(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let connections = TaskTracker::new();
    let mut stopping = phase.clone();
    let stop = async move {
        let _ = stopping.wait_for(|now| *now >= Phase::Draining).await;
    };
    accept_loop(&listener, max_connections, stop, |stream, peer, place| {
        let service = make_service(peer);
        let served = connection::serve(stream, service, Arc::clone(&settings), phase.clone());
        connections.spawn(served.map(move |result| {
            if let Err(e) = result {
                debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(place);
        }));
    })
    .await;
    drop(listener);
    connections.close();
    connections.wait().await;
}

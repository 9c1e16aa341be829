//! The accept loop: one task per client connection, HTTP/1.0, 1.1 and h2c
//! (prior knowledge) on the same port, and the graceful drain.
//!
//! Shape after hyper-util's graceful server: on shutdown the listener is
//! dropped at once (new connections are refused by the kernel), every open
//! connection is told to finish its in-flight requests and close, and
//! whatever is still open when the grace period ends is cut.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};

use crate::service::{self, Shared};

/// Serves `listener` until `shutdown` resolves, then drains. `draining`
/// turns true once the listener is closed, so readiness reports the truth.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
    draining: watch::Sender<bool>,
) -> io::Result<()> {
    let server = &shared.config.server;
    let grace = server.shutdown_grace;
    let builder = connection_builder(&shared);
    let graceful = GracefulShutdown::new();
    let (hard_stop, hard_stop_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(server.max_connections));
    info!(address = %listener.local_addr()?, "listening");
    tokio::pin!(shutdown);

    loop {
        // Waiting for a permit before accepting leaves excess connections
        // in the kernel's backlog instead of failing them with EMFILE.
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or a connection reset before we took
                    // it: back off briefly rather than spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let service = service_fn(move |request| {
            let shared = Arc::clone(&shared);
            async move {
                Ok::<_, std::convert::Infallible>(service::handle(shared, peer, request).await)
            }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        let mut hard_stop = hard_stop_rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                result = connection => if let Err(e) = result {
                    debug!(%peer, error = %e, "connection ended with an error");
                },
                _ = hard_stop.wait_for(|stop| *stop) => {
                    debug!(%peer, "connection cut at the end of the grace period");
                }
            }
            drop(permit);
        });
    }

    drop(listener);
    let _ = draining.send(true);
    info!(grace = ?grace, open = graceful.count(), "shutting down: draining connections");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("grace period over; closing the connections still open");
        let _ = hard_stop.send(true);
    }
    Ok(())
}

fn connection_builder(shared: &Shared) -> auto::Builder<TokioExecutor> {
    let server = &shared.config.server;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper refuses header blocks over its read buffer with a bare 431 and
    // closes; the buffer is kept well above the configured limit so that
    // the service's own check answers first, with a problem+json body.
    let buffer = (server.max_header_size * 2).max(16 * 1024);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .keep_alive(server.keep_alive)
        .max_buf_size(buffer);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(buffer).unwrap_or(u32::MAX));
    builder
}

//! Thread-per-core serving. A lane is one event-loop thread: the runtime
//! that accepted a connection hands it to a lane, and the lane runs it
//! start to finish — its requests, their backend calls (on that lane's own
//! connection pools, kept per lane by the proxy), their answers.
//! Nothing a request does wakes another thread, which a work-stealing
//! runtime does on every backend round trip.
//!
//! Lane 0 is the runtime `Baton::run` is called on; the others are
//! threads with a single-threaded runtime each, started here and stopped
//! when serving ends. With one lane nothing is started and connections
//! run where they were accepted, as tests with a paused clock need.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::future::{Either, FutureExt};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    static LANE: Cell<usize> = const { Cell::new(0) };
}

/// The lane this thread serves; 0 outside the lanes' own threads.
pub(crate) fn current() -> usize {
    LANE.with(Cell::get)
}

/// The lanes beyond the caller's runtime.
pub(crate) struct Lanes {
    /// Lanes 1.. (lane 0 is the caller's runtime).
    others: Vec<Lane>,
    next: AtomicUsize,
}

struct Lane {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Lanes {
    /// Starts `count - 1` lane threads; the caller's runtime is lane 0.
    pub(crate) fn start(count: usize) -> io::Result<Lanes> {
        let mut others = Vec::with_capacity(count.saturating_sub(1));
        for index in 1..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("baton-lane-{index}"))
                .spawn(move || {
                    LANE.with(|lane| lane.set(index));
                    // Runs the lane's connections until told to stop; its
                    // runtime, dropped on return, ends what is left.
                    let _ = runtime.block_on(stopped);
                })?;
            others.push(Lane {
                handle,
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Lanes {
            others,
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `serve(stream)` on the next lane, round robin.
    pub(crate) fn spawn<F, Fut>(&self, stream: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let lanes = self.others.len() + 1;
        let index = self.next.fetch_add(1, Ordering::Relaxed) % lanes;
        let Some(lane) = index.checked_sub(1).and_then(|i| self.others.get(i)) else {
            tokio::spawn(serve(stream));
            return;
        };
        // A socket belongs to the reactor that registered it: hand it over
        // unregistered, and register it on the lane.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "a connection could not be handed to a lane");
                return;
            }
        };
        // `lazy` then `flatten` rather than an `async` block: the task then
        // holds the closure or the connection's future, never room for both,
        // and it holds it for as long as the client stays.
        let start = futures_util::future::lazy(move |_| match TcpStream::from_std(stream) {
            Ok(stream) => Either::Left(serve(stream)),
            Err(e) => {
                tracing::debug!(error = %e, "a lane could not take a connection");
                Either::Right(std::future::ready(()))
            }
        });
        lane.handle.spawn(start.flatten());
    }

    /// Stops the lane threads once serving is over, and waits for them.
    pub(crate) async fn stop(mut self) {
        let threads: Vec<_> = self
            .others
            .iter_mut()
            .filter_map(|lane| {
                if let Some(stop) = lane.stop.take() {
                    let _ = stop.send(());
                }
                lane.thread.take()
            })
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

//! Process signals that end the server: SIGTERM (orchestrators) and SIGINT
//! (a terminal's Ctrl-C) both start the graceful drain.

use std::io;

use tokio::signal::unix::{signal, SignalKind};
use tracing::info;

/// Resolves when the process is asked to stop. Handlers are installed
/// before this returns, so a signal that arrives early is not lost.
pub fn on_terminate() -> io::Result<impl std::future::Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "shutdown requested");
    })
}

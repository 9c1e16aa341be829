//! Process signals: SIGTERM (orchestrators) and SIGINT (a terminal's
//! Ctrl-C) start the graceful drain; SIGHUP reloads the configuration.

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

/// Re-reads `path` on every SIGHUP. A file that fails to load or build is
/// logged with its error and the running configuration keeps serving.
pub fn reload_on_hangup(path: std::path::PathBuf, reloader: crate::Reloader) -> io::Result<()> {
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match reloader.reload_file(&path) {
                Ok(()) => info!(config = %path.display(), "configuration reloaded"),
                Err(error) => {
                    tracing::error!(%error, "reload failed; the running configuration stays")
                }
            }
        }
    });
    Ok(())
}

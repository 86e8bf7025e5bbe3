//! SIGTERM (systemd stopping the service, an instance being terminated)
//! and SIGINT (a local run): a watch flag every part of the daemon
//! selects on, so the loop stops taking jobs and running jobs release
//! their messages and clean up.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// A flag that turns `true` on the first SIGTERM or SIGINT.
///
/// If a handler cannot be installed, the daemon runs without it (and says
/// so): the default action, exit, remains.
pub fn shutdown() -> watch::Receiver<bool> {
    let (sender, receiver) = watch::channel(false);
    tokio::spawn(async move {
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => (term, int),
            (Err(err), _) | (_, Err(err)) => {
                tracing::warn!(error = %err, "installing the signal handlers failed");
                // Keep the sender: a closed channel would read as a signal.
                std::future::pending::<()>().await;
                return;
            }
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "stopping: no new jobs, releasing running ones"
        );
        let _ = sender.send(true);
        // Keep the sender alive so receivers see `true`, not a closed channel.
        sender.closed().await;
    });
    receiver
}

//! The server-wide shutdown signal, as every long-running task waits on it: the gRPC streams,
//! the periodic purge, the metrics listener and the key-cache tasks.
//!
//! A `watch` channel of `bool`, set once by [`crate::run_with_metrics`]: every task holds its
//! own receiver, and one that starts after the signal sees it at once.

use tokio::sync::watch;

/// Resolves once the server starts shutting down (or its signal is gone).
pub async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|down| *down).await;
}

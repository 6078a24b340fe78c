//! Retention: the purge, on demand (`AdminService.PurgeExpiredData`) and periodically.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::domain::{PurgeCounts, now_micros};
use crate::store::{Store, StoreResult};

/// Deletes everything the retention policy no longer allows, now.
pub async fn purge(store: &dyn Store) -> StoreResult<PurgeCounts> {
    let counts = store.purge_expired(now_micros()).await?;
    if counts != PurgeCounts::default() {
        tracing::info!(?counts, "expired data purged");
    }
    Ok(counts)
}

/// Purges every `interval` (the first time one interval after start) until shutdown.
pub async fn purge_periodically(
    store: Arc<dyn Store>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = purge(store.as_ref()).await {
                    tracing::warn!(error = %e, "periodic purge failed; retrying at the next interval");
                }
            }
            () = crate::shutdown::stopping(&mut shutdown) => return,
        }
    }
}

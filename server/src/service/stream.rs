//! Stream plumbing shared by the services: the feeds (`WatchNumberEvents`,
//! `StreamCallRecords`) and the batched upload streams (`IngestCallRecords`,
//! `UploadCallDurations`).
//!
//! A feed is a task per subscriber that reads from the store, sends with backpressure (a
//! bounded channel), and waits for the store's commit signal; it ends when the client leaves,
//! when the key that opened it is revoked (UNAUTHENTICATED), or when the server stops
//! (UNAVAILABLE, which the SDKs resume from). An upload stream is [`pipeline`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures_util::future::{Shared, join_all};
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::{Status, Streaming};

use crate::auth::KeyCache;
use crate::shutdown::stopping;

/// A cursor past the last sequence would silently skip whatever gets those sequences later
/// (for example after a restore from backup), so it is refused.
pub(crate) fn check_cursor(after: i64, head: i64) -> Result<(), Status> {
    if after > head {
        return Err(Status::out_of_range(format!(
            "after_sequence {after} is beyond the last sequence {head}; resume from a sequence you received, or 0"
        )));
    }
    Ok(())
}

/// Sends one message unless the server starts shutting down first (a client that stops
/// reading must not hold shutdown up). Returns whether the stream should go on.
pub(crate) async fn send_or_stop<T>(
    tx: &mpsc::Sender<Result<T, Status>>,
    message: T,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        sent = tx.send(Ok(message)) => sent.is_ok(),
        () = stopping(shutdown) => false,
    }
}

/// Whether the key that opened a stream is still active; if not, ends the stream with
/// UNAUTHENTICATED (revoking a key also cuts off the streams it opened).
pub(crate) async fn still_authorised<T>(
    keys: &KeyCache,
    key_id: &str,
    tx: &mpsc::Sender<Result<T, Status>>,
) -> bool {
    if keys.is_active(key_id) {
        return true;
    }
    let _ = tx
        .send(Err(Status::unauthenticated(
            "the API key of this stream has been revoked",
        )))
        .await;
    false
}

/// Waits for the store's next commit signal. False when the stream should end instead: the
/// client left, the signal is gone, or the server is stopping (then the stream ends with
/// UNAVAILABLE and `resume`, which tells the client what to reconnect with).
pub(crate) async fn next_commit<T>(
    signal: &mut watch::Receiver<u64>,
    shutdown: &mut watch::Receiver<bool>,
    tx: &mpsc::Sender<Result<T, Status>>,
    resume: &str,
) -> bool {
    tokio::select! {
        changed = signal.changed() => changed.is_ok(),
        () = stopping(shutdown) => {
            let message = format!("the server is shutting down; {resume}");
            let _ = tx.send(Err(Status::unavailable(message))).await;
            false
        }
        () = tx.closed() => false,
    }
}

/// Batches of one upload stream that may be committing at once. While this many wait for their
/// commit the server stops reading the stream, so HTTP/2 flow control slows the sender.
pub const STREAM_IN_FLIGHT: usize = 8;

/// Drives one batched upload stream (call-record ingestion, duration uploads): reads batches
/// while fewer than [`STREAM_IN_FLIGHT`] are being handled and their encoded bytes are below
/// `budget` (`--upload-buffer-bytes`; one batch is always let in), and sends each
/// acknowledgement strictly in batch order once `handle` (validation and a durable commit)
/// finishes. An error from `handle` ends the stream once the batches behind it have settled
/// (committed or not, never acknowledged): when the client sees the end, no write of the
/// stream is still pending. On shutdown it stops reading, finishes the batches it has, and
/// ends the stream with UNAVAILABLE.
pub(crate) async fn pipeline<Req, Resp, F, Fut>(
    mut inbound: Streaming<Req>,
    tx: mpsc::Sender<Result<Resp, Status>>,
    mut shutdown: watch::Receiver<bool>,
    budget: usize,
    handle: F,
) where
    Req: prost::Message,
    F: Fn(Req) -> Fut,
    Fut: Future<Output = Result<Resp, Status>>,
{
    let mut in_flight = FuturesOrdered::new();
    // Encoded bytes of the batches in flight.
    let mut in_flight_bytes = 0usize;
    let mut reading = true;
    let mut ending: Option<Status> = None;
    loop {
        let room = in_flight.is_empty()
            || (in_flight.len() < STREAM_IN_FLIGHT && in_flight_bytes < budget);
        tokio::select! {
            biased;
            Some((ack, size)) = in_flight.next(), if !in_flight.is_empty() => {
                in_flight_bytes -= size;
                let ack: Resp = match ack {
                    Ok(ack) => ack,
                    Err(status) => {
                        // The batches behind the failed one are already with the store: let
                        // them settle, unacknowledged, before the stream ends, so nothing from
                        // this stream commits after the client has seen its end.
                        while in_flight.next().await.is_some() {}
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                if tx.send(Ok(ack)).await.is_err() {
                    return;
                }
            }
            message = inbound.message(), if reading && room => match message {
                Ok(Some(batch)) => {
                    let size = batch.encoded_len();
                    in_flight_bytes += size;
                    in_flight.push_back(handle(batch).map(move |ack| (ack, size)));
                }
                Ok(None) => reading = false,
                Err(status) => {
                    // A message the server cannot take (over the size limit, undecodable) or a
                    // broken connection: the batches already read are still answered, then the
                    // stream ends with this status (a client that went away never reads it).
                    tracing::debug!(error = %status, "upload stream broke");
                    reading = false;
                    ending = Some(status);
                }
            },
            () = stopping(&mut shutdown), if reading => {
                reading = false;
                ending = Some(Status::unavailable("the server is shutting down; send unacknowledged batches again"));
            }
            else => break,
        }
    }
    if let Some(status) = ending {
        let _ = tx.send(Err(status)).await;
    }
}

/// Resolves when a batch of the stream has been stored (or failed): its sender is dropped.
type Done = Shared<oneshot::Receiver<()>>;

/// Keeps the writes of one upload stream in batch order where batches share a key (a call
/// id, a report's record id): a batch waits, before it reaches the store, for the earlier
/// batches still in flight that carry one of its keys. So a revision in batch 2 and another in
/// batch 3 are answered REVISED and REVISED on every backend, as if sent one at a time, even
/// where the store commits batches side by side (PostgreSQL); batches on distinct keys still
/// commit together.
///
/// Keys are kept as 64-bit hashes (no copy of a batch's ids): two ids that share a hash only
/// make a batch wait when it need not.
#[derive(Clone, Default)]
pub(crate) struct KeyOrder {
    /// The hash of each key of a batch in flight, and the completion of the last batch that
    /// carries it.
    last: Arc<Mutex<HashMap<u64, (u64, Done)>>>,
    /// Numbers the batches, to tell whose entry a key holds.
    next: Arc<std::sync::atomic::AtomicU64>,
}

/// A batch's place in its stream's order: released (waking the batches behind it on the same
/// keys) when dropped.
pub(crate) struct Turn {
    /// The earlier batches to wait for.
    before: Vec<Done>,
    /// Dropped when this batch is done.
    _done: oneshot::Sender<()>,
    /// This batch's number and key hashes, to forget them when done.
    batch: u64,
    keys: Vec<u64>,
    order: KeyOrder,
}

impl KeyOrder {
    /// Takes the next place, for a batch with `keys`. Call it in batch order (when the batch
    /// is read, not when its future first runs).
    pub(crate) fn turn<K: std::hash::Hash>(&self, keys: impl IntoIterator<Item = K>) -> Turn {
        let batch = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (done_tx, done_rx) = oneshot::channel();
        let done = done_rx.shared();
        let mut keys: Vec<u64> = keys
            .into_iter()
            .map(|key| {
                let mut hasher = std::hash::DefaultHasher::new();
                key.hash(&mut hasher);
                std::hash::Hasher::finish(&hasher)
            })
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut before: Vec<(u64, Done)> = Vec::new();
        if let Ok(mut last) = self.last.lock() {
            for key in &keys {
                if let Some((earlier, waiting)) = last.insert(*key, (batch, done.clone()))
                    && !before.iter().any(|(b, _)| *b == earlier)
                {
                    before.push((earlier, waiting));
                }
            }
        }
        Turn {
            before: before.into_iter().map(|(_, done)| done).collect(),
            _done: done_tx,
            batch,
            keys,
            order: self.clone(),
        }
    }
}

impl Turn {
    /// Waits until the earlier batches on the same keys are done.
    pub(crate) async fn wait(&mut self) {
        join_all(std::mem::take(&mut self.before)).await;
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        // Forget the keys this batch was the last to carry, so the map holds only keys in
        // flight.
        if let Ok(mut last) = self.order.last.lock() {
            for key in &self.keys {
                if last.get(key).is_some_and(|(batch, _)| *batch == self.batch) {
                    last.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::KeyOrder;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn a_batch_waits_only_for_earlier_batches_on_its_keys() {
        let order = KeyOrder::default();
        let first = order.turn(["a", "b"]);
        let mut other = order.turn(["c"]);
        let mut second = order.turn(["b", "d"]);
        let mut third = order.turn(["d"]);
        assert!(
            other.wait().now_or_never().is_some(),
            "no shared key: no wait"
        );
        assert!(second.wait().now_or_never().is_none(), "b is in flight");
        drop(first);
        second.wait().await;
        assert!(third.wait().now_or_never().is_none(), "d is in flight");
        drop(second);
        third.wait().await;
        drop((other, third));
        assert!(order.last.lock().expect("lock").is_empty(), "nothing kept");
    }
}

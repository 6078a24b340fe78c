//! Stream plumbing shared by the services: the feeds (`WatchNumberEvents`,
//! `StreamCallRecords`) and the batched upload streams (`IngestCallRecords`,
//! `UploadCallDurations`).
//!
//! A feed is a task per subscriber that reads from the store, queues messages for its client
//! in a [`feed`] queue of at most `--feed-buffer-bytes`, and waits for the store's commit
//! signal; it ends when the client leaves, when the key that opened it is revoked
//! (UNAUTHENTICATED), when its client takes nothing for `--stall-timeout` (UNAVAILABLE), or when
//! the server stops (UNAVAILABLE); the SDKs resume from UNAVAILABLE. An upload stream is
//! [`pipeline`].

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::future::{Shared, join_all};
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;
use tonic::{Status, Streaming};

use crate::auth::KeyCache;
use crate::metrics::Metrics;
use crate::shutdown::stopping;

/// A feed's queue of messages for its client: the sending half ([`FeedSender`], the feed's
/// task) and the receiving half ([`FeedReceiver`], the response body), holding at most
/// `budget` bytes of encoded messages (one message larger than that still goes, alone).
///
/// Not an `mpsc` channel: when an HTTP/2 client stops reading, hyper stops polling the response
/// body (the stream has no flow-control window left), so only the sender can free what is
/// queued. A feed whose queue stays full for `stall_timeout` is ended by its sender
/// ([`FeedSender::stall`]): the messages are dropped and the client, when it reads again, gets
/// the messages hyper already had and then UNAVAILABLE.
pub(crate) fn feed<T>(
    budget: usize,
    stall_timeout: Duration,
    metrics: Arc<Metrics>,
) -> (FeedSender<T>, FeedReceiver<T>) {
    let shared = Arc::new(FeedShared {
        state: Mutex::new(FeedState {
            queue: VecDeque::new(),
            bytes: 0,
            receiver_gone: false,
            sender_done: false,
            last_take: Instant::now(),
            waker: None,
        }),
        space: Notify::new(),
        budget,
        metrics,
    });
    (
        FeedSender {
            shared: Arc::clone(&shared),
            stall_timeout,
        },
        FeedReceiver { shared },
    )
}

/// What the two halves of a feed share.
struct FeedShared<T> {
    /// The queue. A std `Mutex`, not tokio's: it is held only to push or pop, never across an
    /// `.await`, and the receiver takes it in `poll_next`, which cannot wait.
    state: Mutex<FeedState<T>>,
    /// Wakes the sender when the client took a message or left. `notify_one` keeps a permit
    /// when the sender is not waiting yet, so no wake-up is lost between its check and its wait.
    space: Notify,
    /// Most bytes of messages queued.
    budget: usize,
    /// Where the queued bytes are published (all feeds together).
    metrics: Arc<Metrics>,
}

/// The queue of a feed and what is known about both ends.
struct FeedState<T> {
    /// Messages (and, last, an ending status) with their encoded sizes.
    queue: VecDeque<(Result<T, Status>, usize)>,
    /// The sum of the sizes queued.
    bytes: usize,
    /// The response body was dropped (the client left): nothing more is worth sending.
    receiver_gone: bool,
    /// The sender ended (or was dropped): once the queue is empty the stream ends.
    sender_done: bool,
    /// When the client last took a message (or the feed opened): the stall clock.
    last_take: Instant,
    /// The response body's task, waiting for a message.
    waker: Option<Waker>,
}

impl<T> FeedShared<T> {
    /// The state; a panic elsewhere while it was held leaves it consistent (every change is a
    /// push or a pop), so a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, FeedState<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a feed message carries, for the metrics ([`Metrics::feed_sent`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tally {
    /// The feed.
    pub feed: crate::metrics::Feed,
    /// Its entries.
    pub entries: usize,
    /// When its newest entry was stored, if the feed's entries carry the time.
    pub newest_stored: Option<crate::domain::Micros>,
}

/// What became of a message given to [`FeedSender::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Queued for the client.
    Queued,
    /// The client left; the feed should end.
    Gone,
    /// The queue stayed full for the stall timeout; the feed should end with
    /// [`FeedSender::stall`].
    Stalled,
}

/// The sending half of a feed queue, owned by the feed's task.
pub(crate) struct FeedSender<T> {
    /// The queue.
    shared: Arc<FeedShared<T>>,
    /// How long the queue may stay full, the client taking nothing, before the feed is ended.
    stall_timeout: Duration,
}

impl<T> FeedSender<T> {
    /// Queues `message` once it fits in the budget (at once into an empty queue, whatever its
    /// size). Waits while the queue is full, at most until the client has taken nothing for the
    /// stall timeout, counted from when the queue became full to this message.
    ///
    /// `tally` is counted in the metrics as the message is queued (before the client can take
    /// it, so a scrape after the client has it counts it).
    pub(crate) async fn send(&self, message: T, tally: Option<Tally>) -> Sent
    where
        T: prost::Message,
    {
        let size = message.encoded_len();
        let waiting_since = Instant::now();
        let mut message = Some(message);
        loop {
            let deadline = {
                let state = self.shared.lock();
                if state.receiver_gone {
                    return Sent::Gone;
                }
                if state.queue.is_empty() || state.bytes + size <= self.shared.budget {
                    if let Some(message) = message.take() {
                        if let Some(t) = tally {
                            self.shared
                                .metrics
                                .feed_sent(t.feed, t.entries, t.newest_stored);
                        }
                        self.push(state, Ok(message), size);
                    }
                    return Sent::Queued;
                }
                state.last_take.max(waiting_since) + self.stall_timeout
            };
            tokio::select! {
                () = self.shared.space.notified() => {}
                () = tokio::time::sleep_until(deadline) => {
                    // Unless the client took something just now (then the loop goes on).
                    let quiet_since = self.shared.lock().last_take.max(waiting_since);
                    if Instant::now() >= quiet_since + self.stall_timeout {
                        return Sent::Stalled;
                    }
                }
            }
        }
    }

    /// Adds an item to the queue (the lock held) and wakes the response body.
    fn push(&self, mut state: MutexGuard<'_, FeedState<T>>, item: Result<T, Status>, size: usize) {
        state.queue.push_back((item, size));
        state.bytes += size;
        let waker = state.waker.take();
        drop(state);
        self.shared.metrics.feed_buffered(bytes_delta(size));
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Ends the feed with `status` after the messages queued (at once: a status is not
    /// counted against the budget).
    pub(crate) fn end(&self, status: Status) {
        let mut state = self.shared.lock();
        if state.receiver_gone || state.sender_done {
            return;
        }
        state.sender_done = true;
        self.push(state, Err(status), 0);
    }

    /// Ends a stalled feed: drops the messages its client has not taken (freeing them now, as
    /// the client may never read again) and queues UNAVAILABLE with `resume`, which tells the
    /// client what to reconnect with; the client gets it when it reads again, after what hyper
    /// already had.
    pub(crate) fn stall(&self, resume: &str) {
        let mut state = self.shared.lock();
        let dropped = std::mem::take(&mut state.queue);
        let bytes = std::mem::take(&mut state.bytes);
        let message = format!(
            "this stream's client took nothing for {}, so the server ended it; {resume}",
            humantime::format_duration(self.stall_timeout)
        );
        if !state.receiver_gone && !state.sender_done {
            state.sender_done = true;
            self.push(state, Err(Status::unavailable(message)), 0);
        } else {
            drop(state);
        }
        self.shared.metrics.feed_buffered(-bytes_delta(bytes));
        self.shared.metrics.feed_stalled();
        tracing::info!(
            dropped_messages = dropped.len(),
            dropped_bytes = bytes,
            stall_timeout = ?self.stall_timeout,
            "feed stalled: its client took nothing; ended with UNAVAILABLE"
        );
    }

    /// Resolves when the client has left (the response body was dropped).
    pub(crate) async fn closed(&self) {
        loop {
            if self.shared.lock().receiver_gone {
                return;
            }
            self.shared.space.notified().await;
        }
    }

    /// The most bytes the queue holds.
    pub(crate) fn budget(&self) -> usize {
        self.shared.budget
    }

    /// Bytes of the budget not taken by queued messages.
    pub(crate) fn free(&self) -> usize {
        self.shared.budget.saturating_sub(self.shared.lock().bytes)
    }
}

impl<T> Drop for FeedSender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.sender_done = true;
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The receiving half of a feed queue: the response body's stream of messages.
pub(crate) struct FeedReceiver<T> {
    /// The queue.
    shared: Arc<FeedShared<T>>,
}

impl<T> Stream for FeedReceiver<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut state = self.shared.lock();
        if let Some((item, size)) = state.queue.pop_front() {
            state.bytes -= size;
            state.last_take = Instant::now();
            drop(state);
            self.shared.metrics.feed_buffered(-bytes_delta(size));
            self.shared.space.notify_one();
            return Poll::Ready(Some(item));
        }
        if state.sender_done {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<T> Drop for FeedReceiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_gone = true;
        let dropped = std::mem::take(&mut state.queue);
        let bytes = std::mem::take(&mut state.bytes);
        drop(state);
        self.shared.metrics.feed_buffered(-bytes_delta(bytes));
        self.shared.space.notify_one();
        // The messages are freed here, outside the lock.
        drop(dropped);
    }
}

/// `bytes` as a gauge change.
fn bytes_delta(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// How many items (records, events) a feed reads from the store next: what fits in the free
/// part of its budget after `in_hand` items already read and not yet queued, at `item_bytes`
/// encoded bytes each (observed), between `least` and `most`. So a feed whose client keeps up
/// reads `most` at a time, and one whose client is slow reads `least`: what a feed holds, queued
/// and in hand, stays near its budget.
pub(crate) fn read_size(
    free: usize,
    in_hand: usize,
    item_bytes: usize,
    least: usize,
    most: usize,
) -> usize {
    let item_bytes = item_bytes.max(1);
    let room = free.saturating_sub(in_hand.saturating_mul(item_bytes)) / item_bytes;
    room.clamp(least, most)
}

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
/// reading must not hold shutdown up; the stream then ends with UNAVAILABLE and `resume`) or
/// the client takes nothing for the stall timeout (the feed is ended, see
/// [`FeedSender::stall`]). Returns whether the stream should go on.
pub(crate) async fn send_or_stop<T: prost::Message>(
    tx: &FeedSender<T>,
    (message, tally): (T, Tally),
    shutdown: &mut watch::Receiver<bool>,
    resume: &str,
) -> bool {
    tokio::select! {
        sent = tx.send(message, Some(tally)) => match sent {
            Sent::Queued => true,
            Sent::Gone => false,
            Sent::Stalled => {
                tx.stall(resume);
                false
            }
        },
        () = stopping(shutdown) => {
            tx.end(Status::unavailable(format!("the server is shutting down; {resume}")));
            false
        }
    }
}

/// Whether the key that opened a stream is still active; if not, ends the stream with
/// UNAUTHENTICATED (revoking a key also cuts off the streams it opened).
pub(crate) fn still_authorised<T>(keys: &KeyCache, key_id: &str, tx: &FeedSender<T>) -> bool {
    if keys.is_active(key_id) {
        return true;
    }
    tx.end(Status::unauthenticated(
        "the API key of this stream has been revoked",
    ));
    false
}

/// Waits for the store's next commit signal. False when the stream should end instead: the
/// client left, the signal is gone, or the server is stopping (then the stream ends with
/// UNAVAILABLE and `resume`, which tells the client what to reconnect with).
pub(crate) async fn next_commit<T>(
    signal: &mut watch::Receiver<u64>,
    shutdown: &mut watch::Receiver<bool>,
    tx: &FeedSender<T>,
    resume: &str,
) -> bool {
    tokio::select! {
        changed = signal.changed() => changed.is_ok(),
        () = stopping(shutdown) => {
            tx.end(Status::unavailable(format!("the server is shutting down; {resume}")));
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
    use super::{KeyOrder, Sent, feed, read_size};
    use futures_util::{FutureExt, StreamExt};
    use std::sync::Arc;
    use std::time::Duration;

    /// A message of `n` encoded bytes: one bytes field (its tag, its length, the bytes).
    fn message(n: usize) -> prost_types::Any {
        let length_bytes = if n - 2 < 128 { 1 } else { 2 };
        let any = prost_types::Any {
            type_url: String::new(),
            value: vec![0; n - 1 - length_bytes],
        };
        assert_eq!(prost::Message::encoded_len(&any), n);
        any
    }

    #[tokio::test]
    async fn a_feed_queue_holds_at_most_its_budget_and_a_large_message_alone() {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let (tx, mut rx) = feed(100, Duration::from_secs(3600), metrics);
        assert_eq!(
            tx.send(message(40), None).now_or_never(),
            Some(Sent::Queued)
        );
        assert_eq!(
            tx.send(message(40), None).now_or_never(),
            Some(Sent::Queued)
        );
        assert_eq!(tx.free(), 20);
        let mut third = Box::pin(tx.send(message(40), None));
        assert!(
            (&mut third).now_or_never().is_none(),
            "over the budget: waits"
        );
        let first = rx.next().await.expect("an item").expect("a message");
        assert_eq!(prost::Message::encoded_len(&first), 40);
        assert_eq!(
            third.await,
            Sent::Queued,
            "room again once the client took one"
        );
        assert!(rx.next().now_or_never().is_some());
        assert!(rx.next().now_or_never().is_some());
        assert!(
            rx.next().now_or_never().is_none(),
            "empty: the client waits"
        );
        assert_eq!(
            tx.send(message(500), None).now_or_never(),
            Some(Sent::Queued),
            "larger than the budget, into an empty queue"
        );
        assert_eq!(tx.free(), 0);
    }

    #[tokio::test]
    async fn a_full_feed_queue_stalls_is_freed_and_ends_with_unavailable() {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let (tx, mut rx) = feed(100, Duration::from_millis(50), metrics);
        assert_eq!(tx.send(message(60), None).await, Sent::Queued);
        // The client takes nothing: the next message waits out the stall timeout.
        assert_eq!(tx.send(message(60), None).await, Sent::Stalled);
        tx.stall("reconnect with your last sequence");
        assert_eq!(tx.free(), 100, "the queued message was dropped");
        drop(tx);
        let status = rx
            .next()
            .await
            .expect("an item")
            .expect_err("the ending status");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(
            status
                .message()
                .ends_with("reconnect with your last sequence")
        );
        assert!(rx.next().await.is_none(), "then the end");
    }

    #[tokio::test]
    async fn a_feed_sender_sees_its_client_leave() {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let (tx, rx) = feed(100, Duration::from_secs(3600), metrics);
        assert_eq!(tx.send(message(80), None).await, Sent::Queued);
        let mut blocked = Box::pin(tx.send(message(80), None));
        assert!((&mut blocked).now_or_never().is_none());
        drop(rx);
        assert_eq!(blocked.await, Sent::Gone);
        tx.closed().await;
        assert_eq!(tx.free(), 100, "the queue was freed with the receiver");
    }

    #[test]
    fn reads_are_sized_by_the_free_budget_within_bounds() {
        assert_eq!(
            read_size(1 << 20, 0, 1000, 16, 1024),
            1024,
            "a client keeping up"
        );
        assert_eq!(read_size(100_000, 0, 1000, 16, 1024), 100);
        assert_eq!(
            read_size(100_000, 50, 1000, 16, 1024),
            50,
            "records in hand count"
        );
        assert_eq!(
            read_size(0, 0, 1000, 16, 1024),
            16,
            "a full budget: the least"
        );
        assert_eq!(
            read_size(0, 10, 0, 0, 1024),
            0,
            "no bytes per record known: no panic"
        );
    }

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

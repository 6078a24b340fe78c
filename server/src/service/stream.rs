//! Stream plumbing shared by the services: the feeds (`WatchNumberEvents`,
//! `StreamCallRecords`) and the batched upload streams (`IngestCallRecords`,
//! `UploadCallDurations`).
//!
//! A feed is a task per subscriber that reads from the store, sends with backpressure (a
//! bounded channel), and waits for the store's commit signal; it ends when the client leaves,
//! when the key that opened it is revoked (UNAUTHENTICATED), or when the server stops
//! (UNAVAILABLE, which the SDKs resume from). An upload stream is [`pipeline`].

use std::future::Future;

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::sync::{mpsc, watch};
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
/// while fewer than [`STREAM_IN_FLIGHT`] are being handled, and sends each acknowledgement
/// strictly in batch order once `handle` (validation and a durable commit) finishes. An error
/// from `handle` ends the stream once the batches behind it have settled (committed or not,
/// never acknowledged): when the client sees the end, no write of the stream is still pending.
/// On shutdown it stops reading, finishes the batches it has, and ends the stream with
/// UNAVAILABLE.
pub(crate) async fn pipeline<Req, Resp, F, Fut>(
    mut inbound: Streaming<Req>,
    tx: mpsc::Sender<Result<Resp, Status>>,
    mut shutdown: watch::Receiver<bool>,
    handle: F,
) where
    F: Fn(Req) -> Fut,
    Fut: Future<Output = Result<Resp, Status>>,
{
    let mut in_flight = FuturesOrdered::new();
    let mut reading = true;
    let mut ending: Option<Status> = None;
    loop {
        tokio::select! {
            biased;
            Some(ack) = in_flight.next(), if !in_flight.is_empty() => {
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
            message = inbound.message(), if reading && in_flight.len() < STREAM_IN_FLIGHT => match message {
                Ok(Some(batch)) => in_flight.push_back(handle(batch)),
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

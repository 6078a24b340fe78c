//! The resuming follower behind every feed ([`Client::follow_number_events`],
//! [`Client::follow_call_records`]), written once: it (re)opens a server stream after the last
//! sequence it yielded, backs off between attempts, and drops anything a reconnect replays.
//!
//! A feed is described by three things: how to open it after a sequence (`connect`), how to
//! turn one message into items (`unpack`: a message may carry one item or a batch), and where
//! an item sits in the feed (`sequence`).
//!
//! [`Client::follow_number_events`]: crate::Client::follow_number_events
//! [`Client::follow_call_records`]: crate::Client::follow_call_records

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use futures_util::Stream;
use futures_util::stream;
use tonic::Code;
use tonic::codec::Streaming;

use crate::error::{Error, Result};

/// First reconnect delay, and the delay again after any message arrives.
pub(crate) const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest reconnect delay: short enough that a restarted server is picked up promptly.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a follower follows, and how to read it.
pub(crate) struct Feed<C, M, T> {
    /// Names the feed in logs, e.g. `"number events"`.
    pub name: &'static str,
    /// The carrier followed, for logs.
    pub carrier_id: String,
    /// Opens the server stream for items after the given sequence.
    pub connect: C,
    /// The items of one message, in feed order; an error ends the follow (a broken contract).
    pub unpack: fn(M) -> Result<Vec<T>>,
    /// An item's position in the feed.
    pub sequence: fn(&T) -> i64,
}

/// Follows `feed` from `after_sequence` until a non-retryable error, which is the last item.
///
/// Retryable failures (see [`is_retryable`]) and a cleanly ended stream reconnect with
/// exponential backoff ([`INITIAL_BACKOFF`] doubling to [`MAX_BACKOFF`], reset by any message)
/// and resume after the last sequence yielded; items at or below it are replays and are
/// dropped, so each item is yielded once, in order.
pub(crate) fn follow<C, Fut, M, T>(
    feed: Feed<C, M, T>,
    after_sequence: i64,
) -> impl Stream<Item = Result<T>> + Send + 'static
where
    C: Fn(i64) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Streaming<M>, tonic::Status>> + Send,
    M: Send + 'static,
    T: Send + 'static,
{
    let follower = Follower {
        feed,
        last_sequence: after_sequence,
        messages: None,
        buffered: VecDeque::new(),
        backoff: INITIAL_BACKOFF,
        delay: None,
        finished: false,
    };
    stream::unfold(follower, |mut follower| async move {
        let item = follower.next_item().await?;
        Some((item, follower))
    })
}

/// The state of a follow between items.
struct Follower<C, M, T> {
    /// How to open and read the feed.
    feed: Feed<C, M, T>,
    /// The last sequence yielded (or the caller's starting point): the resume point, and the
    /// filter that drops anything a reconnect replays twice.
    last_sequence: i64,
    /// The open server stream, if any.
    messages: Option<Streaming<M>>,
    /// Items of the last message not yet yielded (a message may carry a batch).
    buffered: VecDeque<T>,
    /// The delay before the next reconnect after this one.
    backoff: Duration,
    /// A wait owed before the next (re)open, set by a failure.
    delay: Option<Duration>,
    /// Set once a non-retryable error has been yielded.
    finished: bool,
}

impl<C, Fut, M, T> Follower<C, M, T>
where
    C: Fn(i64) -> Fut,
    Fut: Future<Output = Result<Streaming<M>, tonic::Status>>,
{
    /// The next item, or the error that ends the stream; `None` after that error.
    async fn next_item(&mut self) -> Option<Result<T>> {
        loop {
            if self.finished {
                return None;
            }
            // Items already received are yielded before anything else, even if the stream
            // broke after their message.
            if let Some(item) = self.buffered.pop_front() {
                let sequence = (self.feed.sequence)(&item);
                if sequence <= self.last_sequence {
                    // Already yielded before a reconnect; the contract says sequences only
                    // grow, so this is a replay, not news.
                    continue;
                }
                self.last_sequence = sequence;
                return Some(Ok(item));
            }
            if self.messages.is_none() {
                if let Some(delay) = self.delay.take() {
                    tokio::time::sleep(delay).await;
                }
                match (self.feed.connect)(self.last_sequence).await {
                    Ok(messages) => self.messages = Some(messages),
                    Err(status) => match self.retry_or_end(status) {
                        Some(error) => return Some(Err(error)),
                        None => continue,
                    },
                }
            }
            let Some(messages) = self.messages.as_mut() else {
                continue;
            };
            match messages.message().await {
                Ok(Some(message)) => {
                    self.backoff = INITIAL_BACKOFF;
                    match (self.feed.unpack)(message) {
                        Ok(items) => self.buffered.extend(items),
                        Err(error) => {
                            self.finished = true;
                            return Some(Err(error));
                        }
                    }
                }
                Ok(None) => {
                    self.messages = None;
                    let delay = self.next_backoff();
                    tracing::warn!(
                        feed = self.feed.name,
                        carrier = %self.feed.carrier_id,
                        after_sequence = self.last_sequence,
                        ?delay,
                        "feed ended; reconnecting",
                    );
                    self.delay = Some(delay);
                }
                Err(status) => {
                    self.messages = None;
                    if let Some(error) = self.retry_or_end(status) {
                        return Some(Err(error));
                    }
                }
            }
        }
    }

    /// For a retryable status, schedules a reconnect and returns `None`; otherwise marks the
    /// stream finished and returns the error to yield last.
    fn retry_or_end(&mut self, status: tonic::Status) -> Option<Error> {
        if is_retryable(&status) {
            let delay = self.next_backoff();
            tracing::warn!(
                feed = self.feed.name,
                carrier = %self.feed.carrier_id,
                after_sequence = self.last_sequence,
                code = ?status.code(),
                error = status.message(),
                ?delay,
                "feed failed; reconnecting",
            );
            self.delay = Some(delay);
            None
        } else {
            self.finished = true;
            Some(Error::from(status))
        }
    }

    /// The delay to wait now, doubling the one after it up to [`MAX_BACKOFF`].
    fn next_backoff(&mut self) -> Duration {
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        delay
    }
}

/// Whether a failed or broken feed is worth reopening.
///
/// tonic reports a broken connection as `UNAVAILABLE`, `UNKNOWN`, `CANCELLED` or `INTERNAL`
/// (an HTTP/2 reset); only the transport's `INTERNAL` carries an error source, while one sent by
/// the server in trailers never does, and that one is not retried (it would fail again).
pub(crate) fn is_retryable(status: &tonic::Status) -> bool {
    match status.code() {
        Code::Unavailable
        | Code::Unknown
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::ResourceExhausted => true,
        Code::Internal => std::error::Error::source(status).is_some(),
        Code::Ok
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::DataLoss
        | Code::Unauthenticated => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn internal_is_retried_only_from_the_transport() {
        assert!(!is_retryable(&tonic::Status::internal(
            "sent by the server"
        )));
        let mut internal = tonic::Status::internal("h2 protocol error");
        internal.set_source(Arc::new(std::io::Error::other("reset")));
        assert!(is_retryable(&internal));
    }
}

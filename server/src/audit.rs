//! The audit trail: one event per call to an OCX service (health and reflection are not
//! audited), written by [`crate::gate`] when the call is answered. An event's resource kind comes
//! from its method's row in [`crate::rpcs::RPCS`].
//!
//! Events are queued and appended by one task in batches (a batch per writer commit), so a
//! read never waits for a write of its own: the cost is that a crash of the process can lose
//! the events of the last moments before it, never any data. Events hold key ids, carrier ids,
//! methods and counts: never phone numbers, SIP URIs or secrets.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::domain::AuditEvent;
use crate::store::Store;

/// Events queued before callers wait for the appender.
const QUEUE: usize = 4096;
/// Most events appended in one write.
const BATCH: usize = 1000;

/// How many items a call read or wrote, set by a handler on its response when it is not one
/// (a page, a batch). The gate copies it into the call's audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemCount(pub i64);

/// Records `count` items on a response for its audit event.
pub fn set_count<T>(response: &mut tonic::Response<T>, count: i64) {
    response.extensions_mut().insert(ItemCount(count));
}

/// The items a stream has carried so far (records and events sent, reports and records
/// received), counted by its handler and read by the gate for the stream's audit event, which
/// is recorded when the stream ends.
#[derive(Debug, Clone, Default)]
pub struct StreamItems(Arc<std::sync::atomic::AtomicI64>);

impl StreamItems {
    /// The counter the gate attached to a streaming request (a fresh one if none: a handler
    /// mounted without the gate still works).
    pub fn of<T>(request: &tonic::Request<T>) -> StreamItems {
        request
            .extensions()
            .get::<StreamItems>()
            .cloned()
            .unwrap_or_default()
    }

    /// Counts `n` more items.
    pub fn add(&self, n: usize) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// The items so far.
    pub fn get(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A response of `message` that read or wrote `count` items.
pub fn counted<T>(message: T, count: usize) -> tonic::Response<T> {
    let mut response = tonic::Response::new(message);
    set_count(&mut response, i64::try_from(count).unwrap_or(i64::MAX));
    response
}

/// A response message that carries items: pages, batch results, usage rows.
pub trait Items {
    /// How many items it carries.
    fn items(&self) -> usize;
}

/// Implements [`Items`] as the length of one repeated field.
macro_rules! items {
    ($($message:ident . $field:ident),+ $(,)?) => {
        $(impl Items for ocx_api::pb::$message {
            fn items(&self) -> usize {
                self.$field.len()
            }
        })+
    };
}

items!(
    ListCarriersResponse.carriers,
    ListApiKeysResponse.api_keys,
    ListAuditEventsResponse.audit_events,
    ListConsentsResponse.consents,
    ListNumbersResponse.phone_numbers,
    UploadNumbersResponse.results,
    ReleaseNumbersResponse.results,
    ListCallRecordsResponse.call_records,
    ReportCallDurationsResponse.results,
    ListCallDurationsResponse.call_durations,
    ListDiscrepanciesResponse.discrepancies,
    GetTenantUsageResponse.rows,
);

/// A response whose audit event counts the items it carries.
pub fn respond<T: Items>(message: T) -> tonic::Response<T> {
    let n = message.items();
    counted(message, n)
}

/// What the appender is sent.
#[derive(Debug)]
enum Message {
    /// An event to append.
    Event(AuditEvent),
    /// Answer once everything queued before this is appended.
    Flush(oneshot::Sender<()>),
}

/// The queue to the appender.
#[derive(Debug, Clone)]
pub struct AuditLog {
    /// Sends events to the appender task.
    tx: mpsc::Sender<Message>,
}

impl AuditLog {
    /// Starts the appender; it ends (after appending everything queued) once every clone of
    /// the returned log is dropped.
    pub fn start(store: Arc<dyn Store>) -> (AuditLog, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (AuditLog { tx }, tokio::spawn(append(store, rx)))
    }

    /// Queues an event (waits only when the queue is full).
    pub async fn record(&self, event: AuditEvent) {
        if self.tx.send(Message::Event(event)).await.is_err() {
            tracing::error!("the audit appender stopped; an audit event was lost");
        }
    }

    /// Queues an event without waiting (from synchronous code): at once if the queue has room,
    /// else from a task.
    pub fn record_now(&self, event: AuditEvent) {
        match self.tx.try_send(Message::Event(event)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(message)) => {
                let tx = self.tx.clone();
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move { tx.send(message).await });
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("the audit appender stopped; an audit event was lost");
            }
        }
    }

    /// Waits until every event queued before this call is appended, so that a listing made
    /// after it sees every call answered before it.
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }

    /// A log whose events arrive on the returned receiver instead of in a store, for unit
    /// tests of what gets audited.
    #[cfg(test)]
    pub(crate) fn in_memory() -> (AuditLog, mpsc::UnboundedReceiver<AuditEvent>) {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let (events_tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                match message {
                    Message::Event(event) => {
                        let _ = events_tx.send(event);
                    }
                    Message::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        (AuditLog { tx }, events)
    }
}

/// Appends queued events in batches until the queue closes.
async fn append(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Message>) {
    let mut received = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut received, BATCH).await > 0 {
        let mut events = Vec::with_capacity(received.len());
        let mut flushes = Vec::new();
        for message in received.drain(..) {
            match message {
                Message::Event(event) => events.push(event),
                Message::Flush(done) => flushes.push(done),
            }
        }
        let n = events.len();
        if n > 0
            && let Err(e) = store.append_audit_events(events).await
        {
            tracing::error!(error = %e, events = n, "could not append audit events");
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

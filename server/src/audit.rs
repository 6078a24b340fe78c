//! The audit trail: one event per call to an OCX service (health and reflection are not
//! audited), written by [`crate::gate`] when the call is answered. An event's resource kind comes
//! from its method's row in [`crate::rpcs::RPCS`].
//!
//! Events are queued and appended by one task in batches (a batch per writer commit), so a
//! read never waits for a write of its own: the cost is that a crash of the process can lose
//! the events of the last moments before it, never any data. Events hold key ids, carrier ids,
//! methods, counts and client addresses: never phone numbers, SIP URIs or secrets.
//!
//! Calls refused before a key is accepted ([`AuditLog::refused`]) are summed in memory per
//! client address, method and outcome over each minute and appended as one event per sum
//! when the minute ends (or sooner, when a listing flushes the log): a flood of junk keys
//! costs a counter each, not a row each.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::domain::{AuditEvent, Micros, now_micros};
use crate::rpcs::Rpc;
use crate::store::Store;

/// Events queued before callers wait for the appender.
const QUEUE: usize = 4096;
/// Most events appended in one write.
const BATCH: usize = 1000;
/// Sums kept apart in one minute's refusals; past them, the rest are summed as one, from `*`.
pub const TALLY_SUMS: usize = 1000;
/// A minute, in microseconds.
const MINUTE_US: Micros = 60_000_000;

/// Where a summed refusal came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    /// A client address.
    Addr(IpAddr),
    /// The transport gave none.
    Unknown,
    /// The refusals past [`TALLY_SUMS`].
    Other,
}

/// What refusals are summed by: client address, claimed key id, method (`None`: not a method
/// of the server) and outcome.
type SumKey = (Source, String, Option<&'static Rpc>, &'static str);

/// The refusals summed since the last roll.
#[derive(Debug, Default)]
struct Tally {
    /// The minute being summed (microseconds since the epoch / a minute).
    minute: Micros,
    /// Calls refused, by what they are summed by.
    counts: HashMap<SumKey, i64>,
}

impl Tally {
    /// Counts one refusal at `now`; the sums of a minute that has ended, as events, if this is
    /// the first refusal after it.
    fn count(
        &mut self,
        now: Micros,
        source: Option<IpAddr>,
        key_id: String,
        rpc: Option<&'static Rpc>,
        outcome: &'static str,
    ) -> Vec<AuditEvent> {
        let minute = now.div_euclid(MINUTE_US);
        let ended = if minute == self.minute {
            Vec::new()
        } else {
            let ended = self.roll();
            self.minute = minute;
            ended
        };
        let source = source.map_or(Source::Unknown, Source::Addr);
        let mut key = (source, key_id, rpc, outcome);
        if self.counts.len() >= TALLY_SUMS && !self.counts.contains_key(&key) {
            key = (Source::Other, String::new(), None, outcome);
        }
        *self.counts.entry(key).or_insert(0) += 1;
        ended
    }

    /// Takes the sums so far, as events dated at the start of their minute.
    fn roll(&mut self) -> Vec<AuditEvent> {
        let time = self.minute * MINUTE_US;
        self.counts
            .drain()
            .map(|((source, key_id, rpc, outcome), count)| AuditEvent {
                id: 0,
                time,
                key_id,
                carrier_id: String::new(),
                role: String::new(),
                rpc: rpc.map(Rpc::path).unwrap_or_default(),
                resource_kind: String::new(),
                item_count: count,
                outcome: outcome.to_owned(),
                source: match source {
                    Source::Addr(addr) => addr.to_string(),
                    Source::Unknown => String::new(),
                    Source::Other => "*".to_owned(),
                },
            })
            .collect()
    }
}

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
    GetQualitySummaryResponse.rows,
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
    /// Refusals summed, not yet queued.
    tally: Arc<Mutex<Tally>>,
}

impl AuditLog {
    /// Starts the appender; it ends (after appending everything queued) once every clone of
    /// the returned log is dropped.
    pub fn start(store: Arc<dyn Store>) -> (AuditLog, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let tally = Arc::default();
        (
            AuditLog {
                tx,
                tally: Arc::clone(&tally),
            },
            tokio::spawn(append(store, rx, tally)),
        )
    }

    /// Counts a call refused before a key was accepted, from `source`, claiming `key_id` (empty
    /// for none), to `rpc` (`None`: not a method of the server), with `outcome`: summed per
    /// minute, not recorded on its own.
    pub fn refused(
        &self,
        source: Option<IpAddr>,
        key_id: String,
        rpc: Option<&'static Rpc>,
        outcome: &'static str,
    ) {
        let ended = match self.tally.lock() {
            Ok(mut tally) => tally.count(now_micros(), source, key_id, rpc, outcome),
            Err(_) => return,
        };
        for event in ended {
            self.record_now(event);
        }
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
        let tally: Arc<Mutex<Tally>> = Arc::default();
        let rolled = Arc::clone(&tally);
        tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                match message {
                    Message::Event(event) => {
                        let _ = events_tx.send(event);
                    }
                    Message::Flush(done) => {
                        for event in take_tally(&rolled) {
                            let _ = events_tx.send(event);
                        }
                        let _ = done.send(());
                    }
                }
            }
        });
        (AuditLog { tx, tally }, events)
    }
}

/// The refusals summed so far, as events.
fn take_tally(tally: &Mutex<Tally>) -> Vec<AuditEvent> {
    tally.lock().map(|mut t| t.roll()).unwrap_or_default()
}

/// How long until the next minute starts.
fn until_next_minute() -> Duration {
    let into = now_micros().rem_euclid(MINUTE_US);
    Duration::from_micros(u64::try_from(MINUTE_US - into).unwrap_or(1))
}

/// Appends queued events in batches until the queue closes; appends the refusals summed over a
/// minute when it ends (nothing if none came), before a flush answers, and at the end.
async fn append(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Message>, tally: Arc<Mutex<Tally>>) {
    let mut received = Vec::with_capacity(BATCH);
    loop {
        let got = tokio::select! {
            got = rx.recv_many(&mut received, BATCH) => got,
            () = tokio::time::sleep(until_next_minute()) => {
                let rolled = take_tally(&tally);
                if !rolled.is_empty() {
                    write(store.as_ref(), rolled).await;
                }
                continue;
            }
        };
        if got == 0 {
            let rolled = take_tally(&tally);
            if !rolled.is_empty() {
                write(store.as_ref(), rolled).await;
            }
            return;
        }
        let mut events = Vec::with_capacity(received.len());
        let mut flushes = Vec::new();
        for message in received.drain(..) {
            match message {
                Message::Event(event) => events.push(event),
                Message::Flush(done) => flushes.push(done),
            }
        }
        if !flushes.is_empty() {
            events.extend(take_tally(&tally));
        }
        if !events.is_empty() {
            write(store.as_ref(), events).await;
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Appends `events`, logging a failure (the caller's call was answered already).
async fn write(store: &dyn Store, events: Vec<AuditEvent>) {
    let n = events.len();
    if let Err(e) = store.append_audit_events(events).await {
        tracing::error!(error = %e, events = n, "could not append audit events");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sums of `events` by (source, key id, outcome), sorted.
    fn sums(events: &[AuditEvent]) -> Vec<(String, String, String, i64)> {
        let mut sums: Vec<_> = events
            .iter()
            .map(|e| {
                (
                    e.source.clone(),
                    e.key_id.clone(),
                    e.outcome.clone(),
                    e.item_count,
                )
            })
            .collect();
        sums.sort();
        sums
    }

    #[test]
    fn refusals_are_summed_per_source_key_and_minute_and_rolled_when_it_ends() {
        let mut tally = Tally::default();
        let minute = 29_000_000 * MINUTE_US;
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        for i in 0..10 {
            let ended = tally.count(minute + i, Some(a), String::new(), None, "UNAUTHENTICATED");
            assert!(ended.is_empty());
        }
        tally.count(
            minute + 59_999_999,
            Some(b),
            "k".into(),
            None,
            "UNAUTHENTICATED",
        );
        tally.count(minute + 1, None, String::new(), None, "UNIMPLEMENTED");
        // The next minute's first refusal hands over the last minute's sums.
        let ended = tally.count(
            minute + MINUTE_US,
            Some(a),
            String::new(),
            None,
            "UNAUTHENTICATED",
        );
        assert!(
            ended.iter().all(|e| e.time == minute),
            "dated at the minute's start"
        );
        assert_eq!(
            sums(&ended),
            [
                (String::new(), String::new(), "UNIMPLEMENTED".into(), 1),
                (
                    "192.0.2.1".into(),
                    String::new(),
                    "UNAUTHENTICATED".into(),
                    10
                ),
                ("192.0.2.2".into(), "k".into(), "UNAUTHENTICATED".into(), 1),
            ]
        );
        let rest = tally.roll();
        assert_eq!(rest.len(), 1);
        assert_eq!((rest[0].time, rest[0].item_count), (minute + MINUTE_US, 1));
        assert!(tally.roll().is_empty(), "nothing is handed over twice");
    }

    #[test]
    fn past_the_limit_of_sums_a_minute_the_rest_are_one_sum() {
        let mut tally = Tally::default();
        let minute = 29_000_000 * MINUTE_US;
        let n = TALLY_SUMS + 500;
        for i in 0..n {
            let addr = IpAddr::from(u32::try_from(i).expect("small").to_be_bytes());
            // Each address twice: the second lands in the same sum as the first.
            for _ in 0..2 {
                tally.count(
                    minute,
                    Some(addr),
                    format!("{i:016x}"),
                    None,
                    "UNAUTHENTICATED",
                );
            }
        }
        let events = tally.roll();
        assert_eq!(events.len(), TALLY_SUMS + 1);
        let other: Vec<_> = events.iter().filter(|e| e.source == "*").collect();
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].item_count, 2 * 500);
        assert_eq!(other[0].key_id, "");
        assert_eq!(
            events.iter().map(|e| e.item_count).sum::<i64>(),
            2 * i64::try_from(n).expect("small")
        );
    }
}

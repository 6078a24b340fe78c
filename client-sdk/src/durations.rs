//! Call durations (`CallDurationService`: report a batch, stream batches, list), the
//! [`DurationUploader`] that streams any number of reports with retries, reconciliation
//! (`ReconciliationService`) and tenant usage (`PlatformService.GetTenantUsage`).

use std::collections::VecDeque;

use futures_util::{Stream, StreamExt, stream};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::follow::{self, Feed, INITIAL_BACKOFF, MAX_BACKOFF, is_retryable};
use ocx_api::pb;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::paging;

use pb::call_duration_service_client::CallDurationServiceClient;
use pb::reconciliation_service_client::ReconciliationServiceClient;

impl Client {
    /// Reports up to [`ocx_api::MAX_BATCH_ITEMS`] durations in one call, with one result per
    /// report (created, unchanged, corrected or rejected with its field violations). The call
    /// fails as a whole only for the batch itself (empty or too many: `INVALID_ARGUMENT`) or
    /// the key (`PERMISSION_DENIED` for another carrier's id).
    ///
    /// `carrier_id`: empty for a carrier key; required for a platform key.
    pub async fn report_call_durations(
        &self,
        carrier_id: &str,
        durations: Vec<pb::CallDurationReport>,
    ) -> Result<pb::ReportCallDurationsResponse> {
        let message = pb::ReportCallDurationsRequest {
            carrier_id: carrier_id.to_owned(),
            durations,
            ..Default::default()
        };
        Ok(send_once!(
            self,
            call_duration_service,
            report_call_durations,
            message
        ))
    }

    /// Sends each `Vec` from `batches` as one `UploadCallDurationsRequest` (batch ids 1, 2, 3,
    /// ... in order) on ONE `UploadCallDurations` stream, and yields the acknowledgements in
    /// order, each after its batch is durably committed. Backpressure as for
    /// [`Client::ingest_call_records`]. No retries: see [`DurationUploader`] for those.
    pub async fn upload_call_durations<S>(
        &self,
        carrier_id: &str,
        batches: S,
    ) -> Result<impl Stream<Item = Result<pb::UploadCallDurationsResponse>> + Send + 'static>
    where
        S: Stream<Item = Vec<pb::CallDurationReport>> + Send + 'static,
    {
        let carrier_id = carrier_id.to_owned();
        let requests = batches
            .zip(stream::iter(1_i64..))
            .map(
                move |(durations, batch_id)| pb::UploadCallDurationsRequest {
                    carrier_id: carrier_id.clone(),
                    batch_id,
                    durations,
                },
            );
        let acks = self
            .call_duration_service()
            .upload_call_durations(self.request(requests))
            .await?
            .into_inner();
        Ok(until_error(acks))
    }

    /// One page of the carrier's reports, ordered by start time then record id. See
    /// [`Client::call_durations`] for all of them.
    pub async fn list_call_durations(
        &self,
        req: pb::ListCallDurationsRequest,
    ) -> Result<pb::ListCallDurationsResponse> {
        Ok(read!(self, call_duration_service, list_call_durations, req))
    }

    /// Every report matching `req`, page after page. An error is the last item.
    pub fn call_durations(
        &self,
        req: pb::ListCallDurationsRequest,
    ) -> impl Stream<Item = Result<pb::CallDuration>> + Send + 'static {
        let client = self.clone();
        paging::pages(req.page_token.clone(), move |page_token| {
            let (client, req) = (
                client.clone(),
                pb::ListCallDurationsRequest {
                    page_token,
                    ..req.clone()
                },
            );
            async move {
                let page = client.list_call_durations(req).await?;
                Ok((page.call_durations, page.next_page_token))
            }
        })
    }

    /// The reconciliation of the platform's records and the carrier's reports over
    /// `[req.start_time, req.end_time)`, within `req.tolerance` (default 1 s).
    pub async fn get_reconciliation_summary(
        &self,
        req: pb::GetReconciliationSummaryRequest,
    ) -> Result<pb::ReconciliationSummary> {
        let response = read!(
            self,
            reconciliation_service,
            get_reconciliation_summary,
            req
        );
        response.summary.ok_or_else(|| Error::missing("summary"))
    }

    /// One page of the calls the two sides disagree on. See [`Client::discrepancies`] for all.
    pub async fn list_discrepancies(
        &self,
        req: pb::ListDiscrepanciesRequest,
    ) -> Result<pb::ListDiscrepanciesResponse> {
        Ok(read!(self, reconciliation_service, list_discrepancies, req))
    }

    /// Every discrepancy matching `req`, page after page. An error is the last item.
    pub fn discrepancies(
        &self,
        req: pb::ListDiscrepanciesRequest,
    ) -> impl Stream<Item = Result<pb::Discrepancy>> + Send + 'static {
        let client = self.clone();
        paging::pages(req.page_token.clone(), move |page_token| {
            let (client, req) = (
                client.clone(),
                pb::ListDiscrepanciesRequest {
                    page_token,
                    ..req.clone()
                },
            );
            async move {
                let page = client.list_discrepancies(req).await?;
                Ok((page.discrepancies, page.next_page_token))
            }
        })
    }

    /// A tenant's calls and summed durations over a period, by day or by number and direction
    /// (platform key).
    pub async fn get_tenant_usage(
        &self,
        req: pb::GetTenantUsageRequest,
    ) -> Result<pb::GetTenantUsageResponse> {
        Ok(read!(self, platform, get_tenant_usage, req))
    }

    /// One `WatchReconciliation` call, no reconnect: yields the messages (each 1 to 256 changes
    /// in feed order) after `req.after_sequence`, then new ones as they are committed, until the
    /// server ends the stream; a failure mid-stream is the last item. See
    /// [`Client::follow_reconciliation`] for a follower that resumes by itself.
    pub async fn watch_reconciliation(
        &self,
        req: pb::WatchReconciliationRequest,
    ) -> Result<impl Stream<Item = Result<pb::WatchReconciliationResponse>> + Send + 'static> {
        let request = self.request(req);
        let messages = self
            .reconciliation_service()
            .watch_reconciliation(request)
            .await?
            .into_inner();
        Ok(messages.map(|message| message.map_err(Error::from)))
    }

    /// Follows the carrier's reconciliation live (`WatchReconciliation`) forever, like
    /// [`Client::follow_number_events`]: on a retryable failure (or the stream ending cleanly)
    /// it reconnects with the same backoff and resumes after the last `sequence` it yielded,
    /// dropping replays, so each change is seen exactly once and in order. From 0 it yields
    /// every entry as it now stands, then each change as it is committed; apply them in order
    /// with a [`ReconciliationView`] to hold the carrier's calls as they stand. `tolerance`
    /// decides MATCHED against MISMATCHED (`None`: 1 s). Any other status (`OUT_OF_RANGE` when
    /// the position was forgotten: follow from 0 again) is yielded as the last item.
    pub fn follow_reconciliation(
        &self,
        carrier_id: &str,
        after_sequence: i64,
        tolerance: Option<prost_types::Duration>,
    ) -> impl Stream<Item = Result<pb::ReconciliationChange>> + Send + 'static {
        let client = self.clone();
        let carrier = carrier_id.to_owned();
        let feed = Feed {
            name: "reconciliation",
            carrier_id: carrier_id.to_owned(),
            connect: move |after_sequence| {
                let (client, carrier) = (client.clone(), carrier.clone());
                async move {
                    let request = client.request(pb::WatchReconciliationRequest {
                        carrier_id: carrier,
                        after_sequence,
                        tolerance,
                    });
                    Ok(client
                        .reconciliation_service()
                        .watch_reconciliation(request)
                        .await?
                        .into_inner())
                }
            },
            unpack: |message: pb::WatchReconciliationResponse| Ok(message.changes),
            sequence: |change: &pb::ReconciliationChange| change.sequence,
        };
        follow::follow(feed, after_sequence)
    }

    /// A stub for CallDurationService on the shared channel.
    fn call_duration_service(&self) -> CallDurationServiceClient<Channel> {
        CallDurationServiceClient::new(self.channel.clone())
    }

    /// A stub for ReconciliationService on the shared channel.
    fn reconciliation_service(&self) -> ReconciliationServiceClient<Channel> {
        ReconciliationServiceClient::new(self.channel.clone())
    }
}

/// Ends a stream of acknowledgements at its first error (which is yielded).
pub(crate) fn until_error<T, S>(acks: S) -> impl Stream<Item = Result<T>> + Send + 'static
where
    S: Stream<Item = std::result::Result<T, tonic::Status>> + Send + 'static,
    T: Send + 'static,
{
    acks.scan(false, |failed, ack| {
        let item = (!*failed).then(|| ack.map_err(Error::from));
        *failed = item.as_ref().is_some_and(Result::is_err);
        std::future::ready(item)
    })
}

/// What a [`DurationUploader`] did, in total.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadTotals {
    /// Batches acknowledged.
    pub batches: u64,
    /// Reports acknowledged (every result, whatever its status).
    pub reports: u64,
    /// Reports stored for the first time.
    pub created: u64,
    /// Reports identical to what was stored. A batch resent after a lost acknowledgement
    /// counts here: its first sending was committed.
    pub unchanged: u64,
    /// Reports that replaced an earlier duration for the same `record_id`.
    pub corrected: u64,
    /// Reports rejected, each with a reason in its result.
    pub rejected: u64,
    /// Times the stream was reopened after a retryable failure.
    pub reconnects: u32,
}

impl UploadTotals {
    /// Adds one acknowledgement's counts.
    fn add(&mut self, ack: &pb::UploadCallDurationsResponse) {
        let count = |n: i32| u64::try_from(n).unwrap_or(0);
        self.batches += 1;
        self.reports += ack.results.len() as u64;
        self.created += count(ack.created_count);
        self.unchanged += count(ack.unchanged_count);
        self.corrected += count(ack.corrected_count);
        self.rejected += count(ack.rejected_count);
    }
}

/// A batch sent but not yet acknowledged, kept so it can be sent again.
struct Pending<M> {
    /// The batch id it was last sent with.
    batch_id: i64,
    /// The caller's tag for the batch, handed back with its acknowledgement.
    tag: M,
    /// The reports, for resending.
    reports: Vec<pb::CallDurationReport>,
}

/// Streams any number of duration reports over `UploadCallDurations`, keeping up to
/// [`DurationUploader::in_flight`] batches unacknowledged, and survives a broken stream: on a
/// retryable failure (the server restarting, a dropped connection) it reopens the stream with
/// backoff and sends again every batch not yet acknowledged, in order. Resending is safe
/// because reports are keyed by their `record_id`: a batch that was committed but whose
/// acknowledgement was lost comes back as `UNCHANGED`.
///
/// ```no_run
/// # async fn demo(client: ocx_client::Client, batches: Vec<Vec<ocx_client::pb::CallDurationReport>>)
/// # -> ocx_client::Result<()> {
/// use futures_util::stream;
/// let uploader = ocx_client::DurationUploader::new(&client, "");
/// let tagged = stream::iter(batches.into_iter().enumerate());
/// let totals = uploader
///     .run(tagged, |batch_number, ack| {
///         println!("batch {batch_number}: {} created", ack.created_count);
///     })
///     .await?;
/// println!("{totals:?}");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DurationUploader {
    /// The client calls are made with.
    client: Client,
    /// Empty for a carrier key; the carrier's id for a platform key.
    carrier_id: String,
    /// Most batches sent and not yet acknowledged.
    in_flight: usize,
    /// Most consecutive reconnects without an acknowledgement in between before giving up.
    max_retries: u32,
}

impl DurationUploader {
    /// Batches the server reads ahead of its commits (`STREAM_IN_FLIGHT` on the server): more
    /// in flight would only queue in transport buffers.
    pub const DEFAULT_IN_FLIGHT: usize = 8;
    /// Reconnects without progress before the upload fails: with backoff doubling from 100 ms
    /// to 5 s, about a minute of a server being away.
    pub const DEFAULT_MAX_RETRIES: u32 = 15;

    /// An uploader for `carrier_id` (empty for a carrier key).
    pub fn new(client: &Client, carrier_id: &str) -> DurationUploader {
        DurationUploader {
            client: client.clone(),
            carrier_id: carrier_id.to_owned(),
            in_flight: Self::DEFAULT_IN_FLIGHT,
            max_retries: Self::DEFAULT_MAX_RETRIES,
        }
    }

    /// Sets the most batches awaiting acknowledgement (at least 1).
    pub fn in_flight(mut self, batches: usize) -> DurationUploader {
        self.in_flight = batches.max(1);
        self
    }

    /// Sets the most reconnects in a row without an acknowledgement; 0 fails on the first
    /// broken stream.
    pub fn max_retries(mut self, retries: u32) -> DurationUploader {
        self.max_retries = retries;
        self
    }

    /// Uploads every batch of `batches` (each 1 to [`ocx_api::MAX_BATCH_ITEMS`] reports, with
    /// a tag of the caller's choosing, e.g. the CSV lines it came from) and calls `on_ack` with
    /// the tag and the acknowledgement of each batch, once per batch, in order. Returns the
    /// totals once every batch is acknowledged.
    ///
    /// Fails with the first non-retryable status (e.g. `INVALID_ARGUMENT` for an empty or
    /// oversized batch, `PERMISSION_DENIED`), or the last retryable one once `max_retries`
    /// reconnects in a row brought no acknowledgement. Batches acknowledged before a failure
    /// are stored; the others may or may not be, and can be uploaded again.
    pub async fn run<S, M, F>(&self, batches: S, mut on_ack: F) -> Result<UploadTotals>
    where
        S: Stream<Item = (M, Vec<pb::CallDurationReport>)>,
        F: FnMut(M, &pb::UploadCallDurationsResponse),
    {
        let mut batches = std::pin::pin!(batches);
        let mut input_done = false;
        let mut pending: VecDeque<Pending<M>> = VecDeque::new();
        let mut totals = UploadTotals::default();
        let mut next_batch_id = 1_i64;
        let mut failures = 0_u32;
        let mut backoff = INITIAL_BACKOFF;
        loop {
            // One stream: resend what is pending, then keep `in_flight` batches outstanding.
            let (tx, rx) = mpsc::channel(self.in_flight.max(pending.len()));
            for batch in &mut pending {
                batch.batch_id = next_batch_id;
                next_batch_id += 1;
                let request = self.request(batch.batch_id, batch.reports.clone());
                // The channel holds every pending batch, so this never waits.
                let _ = tx.send(request).await;
            }
            let outcome = self
                .one_stream(
                    tx,
                    rx,
                    (&mut batches, &mut input_done),
                    &mut next_batch_id,
                    &mut pending,
                    &mut totals,
                    &mut on_ack,
                )
                .await;
            let status = match outcome {
                Ok(()) => return Ok(totals),
                Err(Interrupted::Fatal(error)) => return Err(error),
                Err(Interrupted::Retry { status, progressed }) => {
                    if progressed {
                        failures = 0;
                        backoff = INITIAL_BACKOFF;
                    }
                    status
                }
            };
            failures += 1;
            if failures > self.max_retries {
                return Err(Error::from(status));
            }
            tracing::warn!(
                code = ?status.code(),
                error = status.message(),
                pending = pending.len(),
                ?backoff,
                "duration upload interrupted; reconnecting",
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            totals.reconnects += 1;
        }
    }

    /// Runs one `UploadCallDurations` call until every batch is acknowledged (`Ok`) or it
    /// breaks. `tx` already holds the resent batches.
    #[allow(clippy::too_many_arguments)]
    async fn one_stream<S, M, F>(
        &self,
        tx: mpsc::Sender<pb::UploadCallDurationsRequest>,
        rx: mpsc::Receiver<pb::UploadCallDurationsRequest>,
        (batches, input_done): (&mut std::pin::Pin<&mut S>, &mut bool),
        next_batch_id: &mut i64,
        pending: &mut VecDeque<Pending<M>>,
        totals: &mut UploadTotals,
        on_ack: &mut F,
    ) -> std::result::Result<(), Interrupted>
    where
        S: Stream<Item = (M, Vec<pb::CallDurationReport>)>,
        F: FnMut(M, &pb::UploadCallDurationsResponse),
    {
        let requests = stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|request| (request, rx))
        });
        let mut acks = self
            .client
            .call_duration_service()
            .upload_call_durations(self.client.request(requests))
            .await
            .map_err(|status| Interrupted::from_status(status, false))?
            .into_inner();
        let mut tx = Some(tx);
        let mut progressed = false;
        loop {
            if *input_done && pending.is_empty() {
                // Half-close so the server ends the call; it has nothing left to answer.
                drop(tx.take());
                // Everything is acknowledged: how the call closes changes nothing.
                let _ = acks.message().await;
                return Ok(());
            }
            if *input_done {
                drop(tx.take());
            }
            // Wait for whichever comes first: an acknowledgement, or (while the window has
            // room) the next batch of the input. Both futures are cancel-safe (they poll a
            // stream that keeps its own state), so the one that loses loses nothing. Waiting on
            // both matters when the input is slow or bursty: acknowledgements keep flowing
            // while it has nothing to give.
            let room = !*input_done && pending.len() < self.in_flight;
            let message = tokio::select! {
                biased;
                message = acks.message() => message,
                next = batches.next(), if room => {
                    let Some((tag, reports)) = next else {
                        *input_done = true;
                        continue;
                    };
                    let batch_id = *next_batch_id;
                    *next_batch_id += 1;
                    let request = self.request(batch_id, reports.clone());
                    pending.push_back(Pending {
                        batch_id,
                        tag,
                        reports,
                    });
                    if let Some(tx) = &tx {
                        // The channel has room for the whole window, so this never waits; a
                        // closed channel means the call ended, and the next message says why.
                        let _ = tx.send(request).await;
                    }
                    continue;
                }
            };
            let ack = match message {
                Ok(Some(ack)) => ack,
                Ok(None) => {
                    return Err(Interrupted::Retry {
                        status: tonic::Status::unavailable(
                            "the server ended the upload before acknowledging every batch",
                        ),
                        progressed,
                    });
                }
                Err(status) => return Err(Interrupted::from_status(status, progressed)),
            };
            let Some(batch) = pending.pop_front() else {
                return Err(Interrupted::Fatal(Error::missing(
                    "an acknowledgement for a batch that was sent",
                )));
            };
            if ack.batch_id != batch.batch_id || ack.results.len() != batch.reports.len() {
                return Err(Interrupted::Fatal(Error::Status {
                    code: tonic::Code::Internal,
                    message: format!(
                        "acknowledgement for batch {} ({} results) when batch {} ({} reports) \
                         was next",
                        ack.batch_id,
                        ack.results.len(),
                        batch.batch_id,
                        batch.reports.len()
                    ),
                    violations: Vec::new(),
                }));
            }
            progressed = true;
            totals.add(&ack);
            on_ack(batch.tag, &ack);
        }
    }

    /// One batch as a request.
    fn request(
        &self,
        batch_id: i64,
        durations: Vec<pb::CallDurationReport>,
    ) -> pb::UploadCallDurationsRequest {
        pb::UploadCallDurationsRequest {
            carrier_id: self.carrier_id.clone(),
            batch_id,
            durations,
        }
    }
}

/// Why one stream of an upload ended early.
enum Interrupted {
    /// Worth reopening; `progressed` if any batch was acknowledged on it.
    Retry {
        /// What broke it.
        status: tonic::Status,
        /// Whether it acknowledged anything.
        progressed: bool,
    },
    /// The upload fails with this.
    Fatal(Error),
}

impl Interrupted {
    /// Classifies a status with [`is_retryable`].
    fn from_status(status: tonic::Status, progressed: bool) -> Interrupted {
        if is_retryable(&status) {
            Interrupted::Retry { status, progressed }
        } else {
            Interrupted::Fatal(Error::from(status))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};

    use pb::call_duration_service_server::{CallDurationService, CallDurationServiceServer};
    use tonic::{Code, Request, Response, Status};

    /// What the scripted server does on one UploadCallDurations call.
    #[derive(Clone, Copy)]
    enum Script {
        /// Acknowledges this many batches, reads one more, then fails with UNAVAILABLE.
        BreakAfter(usize),
        /// Acknowledges every batch.
        AckAll,
        /// Fails the first batch with INVALID_ARGUMENT.
        Reject,
    }

    /// A CallDurationService whose upload call `n` follows `scripts[n]` (the last one for
    /// later calls) and records `(call, batch_id, first record_id)` for each batch it reads.
    struct Scripted {
        scripts: Vec<Script>,
        received: Arc<Mutex<Vec<(usize, i64, String)>>>,
        calls: Mutex<usize>,
        /// The request id of each ReportCallDurations call; the first two are UNAVAILABLE.
        reports: Arc<Mutex<Vec<String>>>,
    }

    type Acks = Pin<Box<dyn Stream<Item = Result<pb::UploadCallDurationsResponse, Status>> + Send>>;

    #[tonic::async_trait]
    impl CallDurationService for Scripted {
        async fn report_call_durations(
            &self,
            request: Request<pb::ReportCallDurationsRequest>,
        ) -> Result<Response<pb::ReportCallDurationsResponse>, Status> {
            let request = request.into_inner();
            let calls = {
                let mut reports = self.reports.lock().expect("not poisoned");
                reports.push(request.request_id);
                reports.len()
            };
            if calls <= 2 {
                return Err(Status::unavailable("server restarting"));
            }
            Ok(Response::new(pb::ReportCallDurationsResponse {
                created_count: request.durations.len() as i32,
                ..Default::default()
            }))
        }

        type UploadCallDurationsStream = Acks;

        async fn upload_call_durations(
            &self,
            request: Request<tonic::Streaming<pb::UploadCallDurationsRequest>>,
        ) -> Result<Response<Acks>, Status> {
            let call = {
                let mut calls = self.calls.lock().expect("not poisoned");
                *calls += 1;
                *calls - 1
            };
            let script = self.scripts[call.min(self.scripts.len() - 1)];
            let received = self.received.clone();
            let acks = stream::unfold(
                (request.into_inner(), 0_usize, false),
                move |(mut batches, acked, done)| {
                    let received = received.clone();
                    async move {
                        if done {
                            return None;
                        }
                        let batch = batches.message().await.ok()??;
                        let first = batch.durations.first().map(|d| d.record_id.clone());
                        received.lock().expect("not poisoned").push((
                            call,
                            batch.batch_id,
                            first.unwrap_or_default(),
                        ));
                        let reply = match script {
                            Script::BreakAfter(n) if acked == n => {
                                Err(Status::unavailable("server restarting"))
                            }
                            Script::Reject => Err(Status::invalid_argument("bad batch")),
                            _ => Ok(pb::UploadCallDurationsResponse {
                                batch_id: batch.batch_id,
                                results: batch
                                    .durations
                                    .iter()
                                    .enumerate()
                                    .map(|(i, d)| pb::CallDurationResult {
                                        index: i as i32,
                                        record_id: d.record_id.clone(),
                                        status: pb::ItemStatus::Created as i32,
                                        ..Default::default()
                                    })
                                    .collect(),
                                created_count: batch.durations.len() as i32,
                                ..Default::default()
                            }),
                        };
                        let done = reply.is_err();
                        Some((reply, (batches, acked + 1, done)))
                    }
                },
            );
            Ok(Response::new(Box::pin(acks)))
        }

        async fn list_call_durations(
            &self,
            _: Request<pb::ListCallDurationsRequest>,
        ) -> Result<Response<pb::ListCallDurationsResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
    }

    #[tokio::test]
    async fn a_report_is_retried_on_unavailable_under_one_request_id() {
        let fake = serve(vec![Script::AckAll]).await;
        let answer = fake
            .client
            .report_call_durations(
                "",
                vec![pb::CallDurationReport {
                    record_id: "r1".into(),
                    ..Default::default()
                }],
            )
            .await
            .expect("the third attempt succeeds");
        assert_eq!(answer.created_count, 1);
        let ids = fake.reports.lock().expect("not poisoned").clone();
        assert_eq!(ids.len(), 3, "two UNAVAILABLE, then the answer");
        assert!(
            ids.iter().all(|id| id == &ids[0]),
            "one request id: {ids:?}"
        );
        assert!(ocx_api::validate::is_guid(&ids[0]), "{}", ids[0]);
        assert_eq!(&ids[0][14..15], "4", "a version 4 UUID: {}", ids[0]);
    }

    /// A client of a [`Scripted`] server, and what that server received.
    struct Fake {
        client: Client,
        /// `(call, batch_id, first record_id)` of each upload batch.
        received: Arc<Mutex<Vec<(usize, i64, String)>>>,
        /// The request id of each ReportCallDurations call.
        reports: Arc<Mutex<Vec<String>>>,
    }

    async fn serve(scripts: Vec<Script>) -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let reports = Arc::new(Mutex::new(Vec::new()));
        let service = Scripted {
            scripts,
            received: received.clone(),
            calls: Mutex::new(0),
            reports: reports.clone(),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(CallDurationServiceServer::new(service))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let client = Client::connect(format!("http://{addr}"), "k")
            .await
            .expect("connect");
        Fake {
            client,
            received,
            reports,
        }
    }

    /// Batch `i` of 2 reports, `r{i}a` and `r{i}b`, tagged `i`.
    fn batches(n: usize) -> impl Stream<Item = (usize, Vec<pb::CallDurationReport>)> {
        stream::iter((0..n).map(|i| {
            let report = |suffix: &str| pb::CallDurationReport {
                record_id: format!("r{i}{suffix}"),
                ..Default::default()
            };
            (i, vec![report("a"), report("b")])
        }))
    }

    #[tokio::test]
    async fn resends_unacknowledged_batches_after_a_broken_stream() {
        let Fake {
            client, received, ..
        } = serve(vec![Script::BreakAfter(2), Script::AckAll]).await;
        let mut tags = Vec::new();
        let totals = DurationUploader::new(&client, "")
            .in_flight(1)
            .run(batches(5), |tag, ack| tags.push((tag, ack.batch_id)))
            .await
            .expect("uploaded");
        // Each batch acknowledged once, in order; the broken one under its new batch id.
        assert_eq!(tags, [(0, 1), (1, 2), (2, 4), (3, 5), (4, 6)]);
        assert_eq!(
            totals,
            UploadTotals {
                batches: 5,
                reports: 10,
                created: 10,
                reconnects: 1,
                ..Default::default()
            }
        );
        let received = received.lock().expect("not poisoned").clone();
        let first: Vec<(usize, i64, &str)> = received
            .iter()
            .map(|(call, id, first)| (*call, *id, first.as_str()))
            .collect();
        assert_eq!(
            first,
            [
                (0, 1, "r0a"),
                (0, 2, "r1a"),
                (0, 3, "r2a"),
                (1, 4, "r2a"),
                (1, 5, "r3a"),
                (1, 6, "r4a"),
            ]
        );
    }

    #[tokio::test]
    async fn keeps_several_batches_in_flight_and_resends_them_all() {
        let Fake {
            client, received, ..
        } = serve(vec![Script::BreakAfter(1), Script::AckAll]).await;
        let mut tags = Vec::new();
        let totals = DurationUploader::new(&client, "")
            .in_flight(3)
            .run(batches(6), |tag, _| tags.push(tag))
            .await
            .expect("uploaded");
        assert_eq!(tags, [0, 1, 2, 3, 4, 5]);
        assert_eq!((totals.batches, totals.reconnects), (6, 1));
        // The second call starts with every batch the first left unacknowledged, in order.
        let received = received.lock().expect("not poisoned").clone();
        let second: Vec<&str> = received
            .iter()
            .filter(|(call, _, _)| *call == 1)
            .map(|(_, _, first)| first.as_str())
            .collect();
        assert_eq!(second, ["r1a", "r2a", "r3a", "r4a", "r5a"]);
    }

    #[tokio::test]
    async fn gives_up_after_max_retries_without_progress() {
        let Fake {
            client, received, ..
        } = serve(vec![Script::BreakAfter(0)]).await;
        let error = DurationUploader::new(&client, "")
            .max_retries(2)
            .run(batches(3), |_, _| panic!("nothing is acknowledged"))
            .await
            .expect_err("gives up");
        assert_eq!(error.code(), Some(Code::Unavailable));
        let calls: Vec<usize> = received
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(call, _, _)| *call)
            .collect();
        assert_eq!(calls.iter().max(), Some(&2), "1 attempt + 2 retries");
    }

    #[tokio::test]
    async fn does_not_retry_a_rejected_batch() {
        let Fake {
            client, received, ..
        } = serve(vec![Script::Reject, Script::AckAll]).await;
        let error = DurationUploader::new(&client, "")
            .run(batches(2), |_, _| {})
            .await
            .expect_err("rejected");
        assert_eq!(error.code(), Some(Code::InvalidArgument));
        assert!(
            received
                .lock()
                .expect("not poisoned")
                .iter()
                .all(|(call, _, _)| *call == 0),
            "no second call"
        );
    }

    #[tokio::test]
    async fn an_empty_input_uploads_nothing() {
        let Fake { client, .. } = serve(vec![Script::AckAll]).await;
        let totals = DurationUploader::new(&client, "")
            .run(batches(0), |_, _| {})
            .await
            .expect("nothing to do");
        assert_eq!(totals, UploadTotals::default());
    }
}

/// A follower's view of a carrier's reconciliation, built by applying the changes of
/// [`Client::follow_reconciliation`] in order: every entry as it last stood, keyed by whose it
/// is (a platform record's `call_id`, or a lone report's `record_id`); a REMOVED change drops
/// its entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReconciliationView {
    /// (entry, key) → the entry's last change.
    entries: std::collections::BTreeMap<(i32, String), pb::ReconciliationChange>,
    /// The last sequence applied.
    last_sequence: i64,
}

impl ReconciliationView {
    /// An empty view (follow from 0 to fill it).
    pub fn new() -> ReconciliationView {
        ReconciliationView::default()
    }

    /// Applies one change (in feed order).
    pub fn apply(&mut self, change: pb::ReconciliationChange) {
        self.last_sequence = self.last_sequence.max(change.sequence);
        let key = match change.entry() {
            pb::ReconciliationEntry::CarrierReport => change.record_id.clone(),
            _ => change.call_id.clone(),
        };
        let key = (change.entry, key);
        if change.state() == pb::ReconciliationState::Removed {
            self.entries.remove(&key);
        } else {
            self.entries.insert(key, change);
        }
    }

    /// The last sequence applied: where to resume.
    pub fn last_sequence(&self) -> i64 {
        self.last_sequence
    }

    /// Every entry as it stands, platform records' first, each group by key.
    pub fn entries(&self) -> impl Iterator<Item = &pb::ReconciliationChange> {
        self.entries.values()
    }

    /// The entries that are not MATCHED: what `ListDiscrepancies` lists (for every period, at
    /// the watch's tolerance).
    pub fn discrepancies(&self) -> impl Iterator<Item = &pb::ReconciliationChange> {
        self.entries
            .values()
            .filter(|c| c.state() != pb::ReconciliationState::Matched)
    }
}

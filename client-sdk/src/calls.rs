//! Call records: reading them (`CallRecordService`: one record, pages, every page, the feed as
//! one call or as a resuming follower) and ingesting them (`PlatformService.IngestCallRecords`,
//! one bidirectional stream of batches and acknowledgements).

use futures_util::stream;
use futures_util::{Stream, StreamExt};
use tonic::codec::Streaming;
use tonic::transport::Channel;

use crate::follow::{self, Feed};
use ocx_api::pb;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::paging;

use pb::call_record_service_client::CallRecordServiceClient;

/// Largest message the SDK accepts from `CallRecordService`. A page (or feed message) of 1000
/// records with 16 streams each and long text fields can pass tonic's 4 MiB default.
const MAX_CALL_RECORD_MESSAGE: usize = 64 * 1024 * 1024;

/// The smallest period of whole UTC hours that holds `[start, end)`, as `GetQualitySummary`
/// wants it: `start` down to its hour, `end` up to the next (an `end` on a whole hour stays).
pub fn whole_hours(
    start: &prost_types::Timestamp,
    end: &prost_types::Timestamp,
) -> (prost_types::Timestamp, prost_types::Timestamp) {
    let floor = |t: &prost_types::Timestamp| t.seconds.div_euclid(3600) * 3600;
    let start = floor(start);
    let end = if end.nanos == 0 && end.seconds.rem_euclid(3600) == 0 {
        end.seconds
    } else {
        floor(end) + 3600
    };
    let at = |seconds| prost_types::Timestamp { seconds, nanos: 0 };
    (at(start), at(end))
}

impl Client {
    /// Reads one record by the platform's `call_id`. `carrier_id`: empty for a carrier key,
    /// required for a platform key. Another carrier's record is `NOT_FOUND`.
    pub async fn get_call_record(&self, carrier_id: &str, call_id: &str) -> Result<pb::CallRecord> {
        let request = pb::GetCallRecordRequest {
            carrier_id: carrier_id.to_owned(),
            call_id: call_id.to_owned(),
        };
        let response = read!(self, call_record_service, get_call_record, request);
        response
            .call_record
            .ok_or_else(|| Error::missing("call_record"))
    }

    /// One page of records, ordered by start time. See [`Client::call_records`] for all of them.
    pub async fn list_call_records(
        &self,
        req: pb::ListCallRecordsRequest,
    ) -> Result<pb::ListCallRecordsResponse> {
        Ok(read!(self, call_record_service, list_call_records, req))
    }

    /// Call quality and traffic figures (`GetQualitySummary`): one row per time bucket and
    /// group, in order. The period's ends must be on whole UTC hours: see [`whole_hours`].
    pub async fn quality_summary(
        &self,
        req: pb::GetQualitySummaryRequest,
    ) -> Result<Vec<pb::QualitySummaryRow>> {
        Ok(read!(self, call_record_service, get_quality_summary, req).rows)
    }

    /// Every record matching `req`'s filters, in start-time order, page after page (following
    /// `next_page_token` from `req.page_token`, normally empty). An error is the last item.
    pub fn call_records(
        &self,
        req: pb::ListCallRecordsRequest,
    ) -> impl Stream<Item = Result<pb::CallRecord>> + Send + 'static {
        let client = self.clone();
        paging::pages(req.page_token.clone(), move |page_token| {
            let (client, req) = (
                client.clone(),
                pb::ListCallRecordsRequest {
                    page_token,
                    ..req.clone()
                },
            );
            async move {
                let page = client.list_call_records(req).await?;
                Ok((page.call_records, page.next_page_token))
            }
        })
    }

    /// One `StreamCallRecords` call, no reconnect: yields the records with a `feed_sequence`
    /// greater than `after_sequence`, one by one (the server sends them in batches), then new
    /// ones as they are committed, until the server ends the stream. A failure mid-stream is the
    /// last item.
    ///
    /// `carrier_id`: empty (or its own id) for a carrier key; required for a platform key.
    pub async fn stream_call_records(
        &self,
        carrier_id: &str,
        after_sequence: i64,
    ) -> Result<impl Stream<Item = Result<pb::CallRecord>> + Send + 'static> {
        let messages = self.open_call_feed(carrier_id, after_sequence).await?;
        Ok(messages.flat_map(|message| {
            let items: Vec<Result<pb::CallRecord>> = match message {
                Ok(message) => message.call_records.into_iter().map(Ok).collect(),
                Err(status) => vec![Err(Error::from(status))],
            };
            stream::iter(items)
        }))
    }

    /// Follows the feed forever, like [`Client::follow_number_events`]: on a retryable failure
    /// (or the stream ending cleanly) it reconnects with the same backoff (100 ms doubling to
    /// 5 s, reset by any message) and resumes after the last `feed_sequence` it yielded,
    /// dropping replays, so each feed entry is seen exactly once and in order. A revised record
    /// appears again, at a new sequence. Any other status is yielded as the last item.
    pub fn follow_call_records(
        &self,
        carrier_id: &str,
        after_sequence: i64,
    ) -> impl Stream<Item = Result<pb::CallRecord>> + Send + 'static {
        let client = self.clone();
        let carrier = carrier_id.to_owned();
        let feed = Feed {
            name: "call records",
            carrier_id: carrier_id.to_owned(),
            connect: move |after_sequence| {
                let (client, carrier) = (client.clone(), carrier.clone());
                async move { client.open_call_feed(&carrier, after_sequence).await }
            },
            unpack: |message: pb::StreamCallRecordsResponse| Ok(message.call_records),
            sequence: |record: &pb::CallRecord| record.feed_sequence,
        };
        follow::follow(feed, after_sequence)
    }

    /// Ingests call records (platform key): sends each `Vec` from `batches` as one
    /// `IngestCallRecordsRequest` (batch ids 1, 2, 3, ... in order) on ONE `IngestCallRecords`
    /// stream, and yields the acknowledgements in order, each after its batch is durably
    /// committed, with one result per record.
    ///
    /// Backpressure comes from gRPC flow control: `batches` is polled only as fast as the
    /// transport accepts, and the server stops reading while 8 batches await their commit, so a
    /// lazily generated `batches` is never far ahead of the server. The stream ends after the
    /// last acknowledgement, or with the error that ended the call (e.g. `INVALID_ARGUMENT` for
    /// a batch over [`ocx_api::MAX_BATCH_ITEMS`] records); batches not acknowledged may or may
    /// not be stored, and can be sent again (ingestion is idempotent).
    ///
    /// An error opening the call (e.g. `PERMISSION_DENIED` for a carrier key) may come back
    /// here or as the only item of the stream, depending on when the server answers.
    pub async fn ingest_call_records<S>(
        &self,
        batches: S,
    ) -> Result<impl Stream<Item = Result<pb::IngestCallRecordsResponse>> + Send + 'static>
    where
        S: Stream<Item = Vec<pb::CallRecord>> + Send + 'static,
    {
        let requests = batches
            .zip(stream::iter(1_i64..))
            .map(|(call_records, batch_id)| pb::IngestCallRecordsRequest {
                batch_id,
                call_records,
            });
        let acks = self
            .platform()
            .ingest_call_records(self.request(requests))
            .await?
            .into_inner();
        Ok(crate::durations::until_error(acks))
    }

    /// Starts one `StreamCallRecords` call, keeping the raw status so that the follower can
    /// tell transport failures from answers.
    async fn open_call_feed(
        &self,
        carrier_id: &str,
        after_sequence: i64,
    ) -> Result<Streaming<pb::StreamCallRecordsResponse>, tonic::Status> {
        let request = self.request(pb::StreamCallRecordsRequest {
            carrier_id: carrier_id.to_owned(),
            after_sequence,
        });
        Ok(self
            .call_record_service()
            .stream_call_records(request)
            .await?
            .into_inner())
    }

    /// A stub for CallRecordService on the shared channel.
    fn call_record_service(&self) -> CallRecordServiceClient<Channel> {
        CallRecordServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_CALL_RECORD_MESSAGE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};

    use pb::call_record_service_server::{CallRecordService, CallRecordServiceServer};
    use pb::platform_service_server::{PlatformService, PlatformServiceServer};
    use tokio::sync::{Notify, mpsc};
    use tonic::{Code, Request, Response, Status};

    type FeedReply = Result<pb::StreamCallRecordsResponse, Status>;

    /// Services whose streaming RPCs are scripted: call `n` of StreamCallRecords returns
    /// `feed[n]` (the last entry for later calls); IngestCallRecords acknowledges each batch
    /// with its size, one at a time, waiting for `release` before each one.
    struct Scripted {
        /// The replies of each StreamCallRecords call, in call order.
        feed: Vec<Vec<FeedReply>>,
        /// `after_sequence` of each StreamCallRecords call.
        calls: Arc<Mutex<Vec<i64>>>,
        /// Batch ids and sizes as the ingest handler read them.
        received: Arc<Mutex<Vec<(i64, usize)>>>,
        /// Lets the ingest handler read (and acknowledge) one more batch.
        release: Arc<Notify>,
    }

    fn records(sequences: &[i64]) -> FeedReply {
        Ok(pb::StreamCallRecordsResponse {
            call_records: sequences
                .iter()
                .map(|&feed_sequence| pb::CallRecord {
                    call_id: format!("c-{feed_sequence}"),
                    feed_sequence,
                    ..Default::default()
                })
                .collect(),
        })
    }

    #[tonic::async_trait]
    impl CallRecordService for Scripted {
        async fn get_quality_summary(
            &self,
            _: Request<pb::GetQualitySummaryRequest>,
        ) -> Result<Response<pb::GetQualitySummaryResponse>, Status> {
            Err(Status::unimplemented("not scripted"))
        }

        async fn get_call_record(
            &self,
            request: Request<pb::GetCallRecordRequest>,
        ) -> Result<Response<pb::GetCallRecordResponse>, Status> {
            let call_id = request.into_inner().call_id;
            if call_id == "missing" {
                return Err(Status::not_found("no such call"));
            }
            Ok(Response::new(pb::GetCallRecordResponse {
                call_record: Some(pb::CallRecord {
                    call_id,
                    ..Default::default()
                }),
            }))
        }

        async fn list_call_records(
            &self,
            request: Request<pb::ListCallRecordsRequest>,
        ) -> Result<Response<pb::ListCallRecordsResponse>, Status> {
            // Three pages of two: tokens "2" and "4"; the filter must come back every time.
            let req = request.into_inner();
            if req.tenant_id != "t" {
                return Err(Status::invalid_argument("filters changed between pages"));
            }
            let from: i64 = req.page_token.parse().unwrap_or(0);
            let call_records = (from..from + 2)
                .map(|i| pb::CallRecord {
                    call_id: format!("l-{i}"),
                    ..Default::default()
                })
                .collect();
            let next_page_token = if from + 2 < 6 {
                (from + 2).to_string()
            } else {
                String::new()
            };
            Ok(Response::new(pb::ListCallRecordsResponse {
                call_records,
                next_page_token,
            }))
        }

        type StreamCallRecordsStream = Pin<Box<dyn Stream<Item = FeedReply> + Send>>;

        async fn stream_call_records(
            &self,
            request: Request<pb::StreamCallRecordsRequest>,
        ) -> Result<Response<Self::StreamCallRecordsStream>, Status> {
            let mut calls = self.calls.lock().expect("not poisoned");
            calls.push(request.get_ref().after_sequence);
            let n = (calls.len() - 1).min(self.feed.len() - 1);
            Ok(Response::new(Box::pin(stream::iter(self.feed[n].clone()))))
        }
    }

    #[tonic::async_trait]
    impl PlatformService for Scripted {
        async fn grant_consent(
            &self,
            _: Request<pb::GrantConsentRequest>,
        ) -> Result<Response<pb::GrantConsentResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn revoke_consent(
            &self,
            _: Request<pb::RevokeConsentRequest>,
        ) -> Result<Response<pb::RevokeConsentResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn assign_number(
            &self,
            _: Request<pb::AssignNumberRequest>,
        ) -> Result<Response<pb::AssignNumberResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn unassign_number(
            &self,
            _: Request<pb::UnassignNumberRequest>,
        ) -> Result<Response<pb::UnassignNumberResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn get_tenant_usage(
            &self,
            _: Request<pb::GetTenantUsageRequest>,
        ) -> Result<Response<pb::GetTenantUsageResponse>, Status> {
            Err(Status::unimplemented("test"))
        }

        type IngestCallRecordsStream =
            Pin<Box<dyn Stream<Item = Result<pb::IngestCallRecordsResponse, Status>> + Send>>;

        async fn ingest_call_records(
            &self,
            request: Request<tonic::Streaming<pb::IngestCallRecordsRequest>>,
        ) -> Result<Response<Self::IngestCallRecordsStream>, Status> {
            let mut batches = request.into_inner();
            let (received, release) = (self.received.clone(), self.release.clone());
            let (tx, rx) = mpsc::channel(1);
            tokio::spawn(async move {
                loop {
                    release.notified().await;
                    let reply = match batches.message().await {
                        Ok(Some(batch)) if batch.call_records.len() > 2 => {
                            Err(Status::invalid_argument("too many records"))
                        }
                        Ok(Some(batch)) => {
                            let size = batch.call_records.len();
                            received
                                .lock()
                                .expect("not poisoned")
                                .push((batch.batch_id, size));
                            Ok(pb::IngestCallRecordsResponse {
                                batch_id: batch.batch_id,
                                created_count: i32::try_from(size).unwrap_or(i32::MAX),
                                ..Default::default()
                            })
                        }
                        Ok(None) => break,
                        Err(status) => Err(status),
                    };
                    let failed = reply.is_err();
                    if tx.send(reply).await.is_err() || failed {
                        break;
                    }
                }
            });
            Ok(Response::new(Box::pin(receiver_stream(rx))))
        }
    }

    /// An mpsc receiver as a stream (without pulling in tokio-stream for one test).
    fn receiver_stream<T: Send + 'static>(
        rx: mpsc::Receiver<T>,
    ) -> impl Stream<Item = T> + Send + 'static {
        stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
    }

    struct Served {
        client: Client,
        calls: Arc<Mutex<Vec<i64>>>,
        received: Arc<Mutex<Vec<(i64, usize)>>>,
        release: Arc<Notify>,
    }

    async fn serve(feed: Vec<Vec<FeedReply>>) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound address");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let received = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(Notify::new());
        let service = Arc::new(Scripted {
            feed,
            calls: calls.clone(),
            received: received.clone(),
            release: release.clone(),
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(CallRecordServiceServer::from_arc(service.clone()))
                .add_service(PlatformServiceServer::from_arc(service))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let client = Client::connect(format!("http://{addr}"), "k")
            .await
            .expect("connect");
        Served {
            client,
            calls,
            received,
            release,
        }
    }

    #[tokio::test]
    async fn get_and_every_page() {
        let served = serve(vec![vec![]]).await;
        let record = served
            .client
            .get_call_record("", "c-9")
            .await
            .expect("found");
        assert_eq!(record.call_id, "c-9");
        let missing = served.client.get_call_record("", "missing").await;
        assert_eq!(missing.expect_err("not found").code(), Some(Code::NotFound));
        let req = pb::ListCallRecordsRequest {
            tenant_id: "t".into(),
            ..Default::default()
        };
        let ids: Vec<String> = served
            .client
            .call_records(req)
            .map(|r| r.expect("listed").call_id)
            .collect()
            .await;
        assert_eq!(ids, ["l-0", "l-1", "l-2", "l-3", "l-4", "l-5"]);
    }

    #[tokio::test]
    async fn stream_flattens_batches_and_ends_with_the_server() {
        let served = serve(vec![vec![records(&[3, 4]), records(&[]), records(&[5])]]).await;
        let sequences: Vec<i64> = served
            .client
            .stream_call_records("c", 2)
            .await
            .expect("opens")
            .map(|r| r.expect("no error").feed_sequence)
            .collect()
            .await;
        assert_eq!(sequences, [3, 4, 5]);
        assert_eq!(*served.calls.lock().expect("not poisoned"), [2]);
    }

    #[tokio::test]
    async fn follow_resumes_after_the_last_record_and_skips_replays() {
        let served = serve(vec![
            // Ends cleanly: reconnect after 2.
            vec![records(&[1, 2])],
            // Replays 2 inside a batch, then a retryable failure after 4.
            vec![
                records(&[2, 3]),
                records(&[4]),
                Err(Status::unavailable("restarting")),
            ],
            // Then a failure that must end the stream.
            vec![
                records(&[5, 6]),
                Err(Status::permission_denied("key revoked")),
            ],
        ])
        .await;
        let items: Vec<_> = served.client.follow_call_records("c", 0).collect().await;
        let sequences: Vec<i64> = items
            .iter()
            .filter_map(|item| item.as_ref().ok().map(|r| r.feed_sequence))
            .collect();
        assert_eq!(sequences, [1, 2, 3, 4, 5, 6]);
        assert_eq!(items.len(), 7, "one error after the records: {items:?}");
        assert_eq!(
            items
                .last()
                .and_then(|i| i.as_ref().err())
                .and_then(Error::code),
            Some(Code::PermissionDenied)
        );
        assert_eq!(*served.calls.lock().expect("not poisoned"), [0, 2, 4]);
    }

    #[tokio::test]
    async fn ingest_numbers_batches_and_acknowledges_in_order() {
        let served = serve(vec![vec![]]).await;
        let record = pb::CallRecord::default;
        let batches = vec![vec![record()], vec![record(), record()], vec![record()]];
        let acks = served
            .client
            .ingest_call_records(stream::iter(batches))
            .await
            .expect("opens");
        let mut acks = std::pin::pin!(acks);
        let mut got = Vec::new();
        for _ in 0..3 {
            served.release.notify_one();
            let ack = acks.next().await.expect("an ack").expect("acknowledged");
            got.push((ack.batch_id, ack.created_count));
        }
        served.release.notify_one();
        assert!(acks.next().await.is_none(), "ends after the last ack");
        assert_eq!(got, [(1, 1), (2, 2), (3, 1)]);
        assert_eq!(
            *served.received.lock().expect("not poisoned"),
            [(1, 1), (2, 2), (3, 1)]
        );
    }

    #[tokio::test]
    async fn ingest_ends_with_the_error() {
        let served = serve(vec![vec![]]).await;
        let record = pb::CallRecord::default;
        let batches = vec![vec![record()], vec![record(); 3], vec![record()]];
        let acks = served
            .client
            .ingest_call_records(stream::iter(batches))
            .await
            .expect("opens");
        let mut acks = std::pin::pin!(acks);
        served.release.notify_one();
        assert_eq!(acks.next().await.expect("ack").expect("ok").batch_id, 1);
        served.release.notify_one();
        let error = acks.next().await.expect("an item").expect_err("too big");
        assert_eq!(error.code(), Some(Code::InvalidArgument));
        assert!(acks.next().await.is_none(), "nothing after the error");
    }

    #[tokio::test]
    async fn ingest_polls_batches_only_as_the_server_reads() {
        let served = serve(vec![vec![]]).await;
        // Each batch is ~200 KB; HTTP/2 flow-control windows (about 1 MB with hyper's defaults)
        // keep the client from running far ahead of a server that does not read: a client that
        // drained `batches` eagerly would take all 100.
        let big = pb::CallRecord {
            correlation_id: "x".repeat(100_000),
            ..Default::default()
        };
        let polled = Arc::new(Mutex::new(0_usize));
        let counter = polled.clone();
        let batches = stream::iter(0..100).map(move |_| {
            *counter.lock().expect("not poisoned") += 1;
            vec![big.clone(); 2]
        });
        let acks = served
            .client
            .ingest_call_records(batches)
            .await
            .expect("opens");
        let mut acks = std::pin::pin!(acks);
        served.release.notify_one();
        assert_eq!(acks.next().await.expect("ack").expect("ok").batch_id, 1);
        // Give a client that ran ahead every chance to do so (no sleep: the test runtime is
        // single-threaded, so yielding runs the connection tasks).
        for _ in 0..500 {
            tokio::task::yield_now().await;
        }
        let taken = *polled.lock().expect("not poisoned");
        assert!(taken < 20, "polled {taken} batches while the server read 1");
    }
}

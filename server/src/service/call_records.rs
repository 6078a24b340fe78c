//! `CallRecordService`: a carrier's call records, one by one, page by page, or as a feed.

use std::pin::Pin;

use futures_util::Stream;
use ocx_api::pb;
use ocx_api::pb::call_record_service_server::CallRecordService;
use ocx_api::validate;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::Ctx;
use super::stream::{check_cursor, next_commit, send_or_stop, still_authorised};
use crate::auth;
use crate::convert::{self, filter_enum};
use crate::convert_calls;
use crate::domain::{CallDirection, CallRecordFilter, CallType};
use crate::error::{Violations, invalid, store_status};
use crate::paging;

/// Records read from the store per feed query.
const FEED_READ: usize = 1024;
/// Records per feed message at most: 256 records with many media streams and long text fields
/// stay under the 4 MiB a default gRPC client accepts.
const FEED_MESSAGE: usize = 256;
/// Feed messages buffered per subscriber before it waits for its client.
const FEED_BUFFER: usize = 16;

/// The call record service.
pub struct CallRecords {
    /// Shared state.
    pub ctx: Ctx,
}

#[tonic::async_trait]
impl CallRecordService for CallRecords {
    #[tracing::instrument(skip_all, fields(rpc = "GetCallRecord"))]
    async fn get_call_record(
        &self,
        request: Request<pb::GetCallRecordRequest>,
    ) -> Result<Response<pb::GetCallRecordResponse>, Status> {
        let principal = auth::principal(&request)?;
        let req = request.into_inner();
        let carrier = self.ctx.carrier_scope(&principal, &req.carrier_id).await?;
        if req.call_id.is_empty() {
            return Err(invalid("call_id", "call_id is required"));
        }
        // Another carrier's record and a missing record give the same answer.
        let record = self
            .ctx
            .store
            .get_call_record(&carrier, &req.call_id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "call record {} not found",
                    validate::quote(&req.call_id)
                ))
            })?;
        Ok(Response::new(pb::GetCallRecordResponse {
            call_record: Some(convert_calls::call_record(record)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListCallRecords"))]
    async fn list_call_records(
        &self,
        request: Request<pb::ListCallRecordsRequest>,
    ) -> Result<Response<pb::ListCallRecordsResponse>, Status> {
        let principal = auth::principal(&request)?;
        let req = request.into_inner();
        let carrier = self.ctx.carrier_scope(&principal, &req.carrier_id).await?;
        let mut v = Violations::new();
        let (from, to) = convert::time_range(
            (req.start_time_from.as_ref(), "start_time_from"),
            (req.start_time_to.as_ref(), "start_time_to"),
            &mut v,
        );
        let tenant_id = (!req.tenant_id.is_empty())
            .then(|| convert::tenant_id(&req.tenant_id, "tenant_id", &mut v));
        if !req.number.is_empty() {
            v.check("number", validate::e164(&req.number));
        }
        let filter = CallRecordFilter {
            from,
            to,
            tenant_id,
            number: (!req.number.is_empty()).then(|| req.number.clone()),
            direction: filter_enum(req.direction, "direction", CallDirection::from_code, &mut v),
            call_type: filter_enum(req.call_type, "call_type", CallType::from_code, &mut v),
            quality: convert_calls::quality_filter(req.quality, "quality", &mut v),
        };
        let size = paging::page_size(req.page_size, self.ctx.limits.max_page_size, &mut v);
        v.into_result()?;
        let filters = format!("calls|{carrier}|{filter:?}");
        let after = match paging::decode(&filters, &req.page_token)? {
            None => None,
            Some(key) => Some(paging::time_and_id(&key)?),
        };
        let (rows, more) = self
            .ctx
            .store
            .list_call_records(&carrier, filter, after, size)
            .await
            .map_err(store_status)?;
        let next_page_token = match rows.last() {
            Some((_, (start, id))) if more => paging::encode(&filters, &format!("{start}:{id}")),
            _ => String::new(),
        };
        Ok(crate::audit::respond(pb::ListCallRecordsResponse {
            call_records: rows
                .into_iter()
                .map(|(r, _)| convert_calls::call_record(r))
                .collect(),
            next_page_token,
        }))
    }

    type StreamCallRecordsStream =
        Pin<Box<dyn Stream<Item = Result<pb::StreamCallRecordsResponse, Status>> + Send>>;

    #[tracing::instrument(skip_all, fields(rpc = "StreamCallRecords", carrier))]
    async fn stream_call_records(
        &self,
        request: Request<pb::StreamCallRecordsRequest>,
    ) -> Result<Response<Self::StreamCallRecordsStream>, Status> {
        let principal = auth::principal(&request)?;
        let items = crate::audit::StreamItems::of(&request);
        let req = request.into_inner();
        let carrier = self.ctx.carrier_scope(&principal, &req.carrier_id).await?;
        tracing::Span::current().record("carrier", carrier.as_str());
        if req.after_sequence < 0 {
            return Err(invalid(
                "after_sequence",
                "after_sequence must be 0 (from the start) or a feed_sequence you received",
            ));
        }
        let head = self
            .ctx
            .store
            .call_record_head(&carrier)
            .await
            .map_err(store_status)?;
        check_cursor(req.after_sequence, head)?;
        let (tx, rx) = mpsc::channel(FEED_BUFFER);
        tokio::spawn(feed_loop(
            self.ctx.clone(),
            principal.key_id().to_owned(),
            carrier,
            req.after_sequence,
            tx,
            items,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Feeds one subscriber, as the number-event watcher does: mark the signal seen, read what is
/// new, send it, wait for the next commit (or shutdown, or the client leaving).
///
/// While a read comes back full (a replay from far behind), the next read runs while this one
/// is converted and sent, so the reader thread and the sending side work at once (R7 in
/// `ocx-bench ingest`).
async fn feed_loop(
    ctx: Ctx,
    key_id: String,
    carrier: String,
    mut after: i64,
    tx: mpsc::Sender<Result<pb::StreamCallRecordsResponse, Status>>,
    items: crate::audit::StreamItems,
) {
    let mut signal = ctx.store.call_record_signal();
    let mut shutdown = ctx.shutdown.clone();
    let read = |after: i64| ctx.store.call_records_after(&carrier, after, FEED_READ);
    loop {
        signal.borrow_and_update();
        let mut next = read(after).await;
        // Until caught up: send what is new, reading on while reads come back full.
        loop {
            if !still_authorised(&ctx.keys, &key_id, &tx).await {
                return;
            }
            let records = match next {
                Ok(records) => records,
                Err(e) => {
                    let _ = tx.send(Err(store_status(e))).await;
                    return;
                }
            };
            let full = records.len() == FEED_READ;
            let Some(last) = records.last() else {
                break;
            };
            after = last.feed_sequence;
            let send = send_all(&tx, records, &mut shutdown, &items);
            if !full {
                if !send.await {
                    return;
                }
                break;
            }
            let (sent, prefetched) = tokio::join!(send, read(after));
            if !sent {
                return;
            }
            next = prefetched;
        }
        let resume = "reconnect with your last feed_sequence";
        if !next_commit(&mut signal, &mut shutdown, &tx, resume).await {
            return;
        }
    }
}

/// Sends `records` in messages of at most [`FEED_MESSAGE`], counting them for the audit event;
/// false if the client left or the server is stopping.
async fn send_all(
    tx: &mpsc::Sender<Result<pb::StreamCallRecordsResponse, Status>>,
    records: Vec<crate::domain::CallRecord>,
    shutdown: &mut watch::Receiver<bool>,
    items: &crate::audit::StreamItems,
) -> bool {
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() {
        let message = pb::StreamCallRecordsResponse {
            call_records: records
                .by_ref()
                .take(FEED_MESSAGE)
                .map(convert_calls::call_record)
                .collect(),
        };
        let count = message.call_records.len();
        if !send_or_stop(tx, message, shutdown).await {
            return false;
        }
        items.add(count);
    }
    true
}

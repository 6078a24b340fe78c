//! `CallRecordService`: a carrier's call records, one by one, page by page, or as a feed.

use std::pin::Pin;

use futures_util::Stream;
use ocx_api::pb;
use ocx_api::pb::call_record_service_server::CallRecordService;
use ocx_api::validate;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::Ctx;
use super::stream::{
    FeedSender, Tally, check_cursor, feed, next_commit, read_size, send_or_stop, still_authorised,
};
use crate::auth;
use crate::convert::{self, filter_enum};
use crate::convert_calls;
use crate::convert_quality;
use crate::domain::{CallDirection, CallRecordFilter, CallType};
use crate::error::{Violations, invalid, store_status};
use crate::metrics::Feed;
use crate::paging;

/// Most records read from the store per feed query (while the client keeps up).
const FEED_READ: usize = 1024;
/// Fewest records read per feed query: while the client is slow (its feed's buffer full) a
/// feed reads this many at a time, so it holds little beyond its buffer.
const FEED_READ_MIN: usize = 16;
/// Records per feed message at most: 256 records with many media streams and long text fields
/// stay under the 4 MiB a default gRPC client accepts.
const FEED_MESSAGE: usize = 256;
/// Encoded bytes per record assumed until a feed has sent its first message (then the feed
/// uses what its messages measured).
const RECORD_BYTES_GUESS: usize = 1024;
/// What a feed tells its client when it ends it with UNAVAILABLE (stalled, or shutting down).
const RESUME: &str = "reconnect with your last feed_sequence";

/// The call record service.
pub struct CallRecords {
    /// Shared state.
    pub ctx: Ctx,
}

#[tonic::async_trait]
impl CallRecordService for CallRecords {
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

    async fn get_quality_summary(
        &self,
        request: Request<pb::GetQualitySummaryRequest>,
    ) -> Result<Response<pb::GetQualitySummaryResponse>, Status> {
        let principal = auth::principal(&request)?;
        let req = request.into_inner();
        // A platform key may ask for every carrier at once; otherwise the usual scope.
        let carrier = match (&principal, req.carrier_id.is_empty()) {
            (auth::Principal::Platform { .. }, true) => None,
            _ => Some(self.ctx.carrier_scope(&principal, &req.carrier_id).await?),
        };
        let mut v = Violations::new();
        let query = convert_quality::quality_query(&req, carrier, &mut v);
        v.into_result()?;
        let query = query.ok_or_else(|| Status::internal("a valid query was not built"))?;
        let rows = self
            .ctx
            .store
            .quality_summary(query)
            .await
            .map_err(store_status)?;
        Ok(crate::audit::respond(pb::GetQualitySummaryResponse {
            rows: rows.into_iter().map(convert_quality::quality_row).collect(),
        }))
    }

    type StreamCallRecordsStream =
        Pin<Box<dyn Stream<Item = Result<pb::StreamCallRecordsResponse, Status>> + Send>>;

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
        let (tx, rx) = feed(
            self.ctx.limits.feed_buffer_bytes,
            self.ctx.limits.stall_timeout,
            std::sync::Arc::clone(&self.ctx.metrics),
        );
        tokio::spawn(feed_loop(
            self.ctx.clone(),
            principal.key_id().to_owned(),
            carrier,
            req.after_sequence,
            tx,
            items,
        ));
        Ok(Response::new(Box::pin(rx)))
    }
}

/// Feeds one subscriber, as the number-event watcher does: mark the signal seen, read what is
/// new, send it, wait for the next commit (or shutdown, or the client leaving).
///
/// While reads come back full (a replay from far behind) and the client keeps up, the next
/// read runs while this one is converted and sent, so the reader thread and the sending side
/// work at once (R7 in `ocx-bench ingest`). Each read is sized by what is free in the feed's
/// buffer ([`read_size`]), and there is no read ahead while the buffer is full, so a feed holds
/// about its buffer's worth of records, queued and in hand, whatever its client does.
async fn feed_loop(
    ctx: Ctx,
    key_id: String,
    carrier: String,
    mut after: i64,
    tx: FeedSender<pb::StreamCallRecordsResponse>,
    items: crate::audit::StreamItems,
) {
    let mut signal = ctx.store.call_record_signal();
    let mut shutdown = ctx.shutdown.clone();
    let read = |after: i64, limit: usize| ctx.store.call_records_after(&carrier, after, limit);
    let mut record_bytes = RECORD_BYTES_GUESS;
    loop {
        signal.borrow_and_update();
        let mut limit = read_size(tx.free(), 0, record_bytes, FEED_READ_MIN, FEED_READ);
        let mut next = read(after, limit).await;
        // Until caught up: send what is new, reading on while reads come back full.
        loop {
            if !still_authorised(&ctx.keys, &key_id, &tx) {
                return;
            }
            let records = match next {
                Ok(records) => records,
                Err(e) => {
                    tx.end(store_status(e));
                    return;
                }
            };
            let full = records.len() == limit;
            let Some(last) = records.last() else {
                break;
            };
            after = last.feed_sequence;
            if !full {
                if !send_all(&tx, records, &mut shutdown, &items, &mut record_bytes).await {
                    return;
                }
                break;
            }
            // Read ahead only into room the budget has beside these records.
            let in_hand = records.len();
            let ahead = read_size(tx.free(), in_hand, record_bytes, 0, FEED_READ);
            if ahead >= FEED_READ_MIN {
                limit = ahead;
                let send = send_all(&tx, records, &mut shutdown, &items, &mut record_bytes);
                let (sent, prefetched) = tokio::join!(send, read(after, limit));
                if !sent {
                    return;
                }
                next = prefetched;
            } else {
                if !send_all(&tx, records, &mut shutdown, &items, &mut record_bytes).await {
                    return;
                }
                limit = read_size(tx.free(), 0, record_bytes, FEED_READ_MIN, FEED_READ);
                next = read(after, limit).await;
            }
        }
        if !next_commit(&mut signal, &mut shutdown, &tx, RESUME).await {
            return;
        }
    }
}

/// Sends `records` in messages of at most [`FEED_MESSAGE`] records and about a quarter of the
/// feed's budget (so that the queue holds several, and the one message hyper has taken off the
/// queue is small beside the budget), counting them for the audit event and noting the encoded
/// bytes per record in `record_bytes`; false if the feed should end (the client left or
/// stalled, or the server is stopping).
async fn send_all(
    tx: &FeedSender<pb::StreamCallRecordsResponse>,
    records: Vec<crate::domain::CallRecord>,
    shutdown: &mut watch::Receiver<bool>,
    items: &crate::audit::StreamItems,
    record_bytes: &mut usize,
) -> bool {
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() {
        let per_message = (tx.budget() / 4 / *record_bytes).clamp(1, FEED_MESSAGE);
        let mut newest = None;
        let message = pb::StreamCallRecordsResponse {
            call_records: records
                .by_ref()
                .take(per_message)
                .inspect(|r| newest = newest.max(Some(r.update_time)))
                .map(convert_calls::call_record)
                .collect(),
        };
        let count = message.call_records.len();
        *record_bytes = (prost::Message::encoded_len(&message) / count.max(1)).max(1);
        let tally = Tally {
            feed: Feed::CallRecords,
            entries: count,
            newest_stored: newest,
        };
        if !send_or_stop(tx, (message, tally), shutdown, RESUME).await {
            return false;
        }
        items.add(count);
    }
    true
}

//! `NumberService`: a carrier's numbers and the stream of their events.

use std::pin::Pin;

use futures_util::Stream;
use ocx_api::pb;
use ocx_api::pb::number_service_server::NumberService;
use ocx_api::validate;
use tonic::{Request, Response, Status};

use super::batch::{accept, batch_len, item_violations};
use super::stream::{
    FeedSender, Tally, check_cursor, feed, next_commit, read_size, send_or_stop, still_authorised,
};
use super::{Ctx, request_key};
use crate::auth;
use crate::convert;
use crate::domain::{ItemOutcome, NumberFilter};
use crate::error::{Violations, invalid, refusal, store_status};
use crate::metrics::Feed;
use crate::paging;
use crate::store::request::with_request;

/// Most events read from the store per query while replaying (while the client keeps up).
const EVENT_BATCH: usize = 500;
/// Fewest events read per query: while the client is slow (its buffer full) a watcher reads
/// this many at a time, so it holds little beyond its buffer.
const EVENT_BATCH_MIN: usize = 16;
/// Encoded bytes per event message assumed until a watcher has sent its first one.
const EVENT_BYTES_GUESS: usize = 512;
/// What a watcher tells its client when it ends it with UNAVAILABLE (stalled, or shutting
/// down).
const RESUME: &str = "reconnect with your last sequence";

/// The number service.
pub struct Numbers {
    /// Shared state.
    pub ctx: Ctx,
}

/// The answer for item `index` of a batch write on `number`: the store's outcome, or the
/// item's violations. The number is quoted back at most [`validate::MAX_QUOTED`] characters (an
/// invalid one may be any text; a valid one is shorter).
fn number_result(
    index: usize,
    number: &str,
    outcome: Result<ItemOutcome, Violations>,
) -> pb::NumberResult {
    let none = || (String::new(), Vec::new());
    let (status, (reason, violations), phone_number) = match outcome {
        Ok(ItemOutcome::Created(n)) => (pb::ItemStatus::Created, none(), Some(n)),
        Ok(ItemOutcome::Unchanged(n)) => (pb::ItemStatus::Unchanged, none(), Some(n)),
        Ok(ItemOutcome::Updated(n)) => (pb::ItemStatus::Updated, none(), Some(n)),
        Ok(ItemOutcome::Rejected(why)) => {
            (pb::ItemStatus::Rejected, (refusal(&why), Vec::new()), None)
        }
        Err(violations) => (pb::ItemStatus::Rejected, item_violations(violations), None),
    };
    pb::NumberResult {
        index: index as i32,
        number: number.chars().take(validate::MAX_QUOTED).collect(),
        status: status as i32,
        reason,
        violations,
        phone_number: phone_number.map(convert::phone_number),
    }
}

#[tonic::async_trait]
impl NumberService for Numbers {
    async fn upload_numbers(
        &self,
        request: Request<pb::UploadNumbersRequest>,
    ) -> Result<Response<pb::UploadNumbersResponse>, Status> {
        let principal = auth::principal(&request)?;
        let mut req = request.into_inner();
        let once = request_key(&principal, "UploadNumbers", &mut req)?;
        let carrier = self.ctx.carrier_scope(&principal, &req.carrier_id).await?;
        tracing::Span::current().record("carrier", carrier.as_str());
        batch_len(
            req.numbers.len(),
            self.ctx.limits.max_batch_items,
            "numbers",
        )?;

        let store = |valid| with_request(once, self.ctx.store.upload_numbers(&carrier, valid));
        let results = accept(
            &req.numbers,
            "numbers",
            |item, path| convert::number_upload(item.clone(), path),
            store,
            |i, item, outcome| number_result(i, &item.number, outcome),
        )
        .await?;
        let count =
            |s: pb::ItemStatus| results.iter().filter(|r| r.status == s as i32).count() as i32;
        let stored = count(pb::ItemStatus::Created) + count(pb::ItemStatus::Updated);
        self.ctx.metrics.rows("number", stored as usize);
        let response = pb::UploadNumbersResponse {
            created_count: count(pb::ItemStatus::Created),
            unchanged_count: count(pb::ItemStatus::Unchanged),
            updated_count: count(pb::ItemStatus::Updated),
            rejected_count: count(pb::ItemStatus::Rejected),
            results,
        };
        tracing::info!(
            created = response.created_count,
            unchanged = response.unchanged_count,
            updated = response.updated_count,
            rejected = response.rejected_count,
            "numbers uploaded"
        );
        Ok(crate::audit::respond(response))
    }

    async fn release_numbers(
        &self,
        request: Request<pb::ReleaseNumbersRequest>,
    ) -> Result<Response<pb::ReleaseNumbersResponse>, Status> {
        let principal = auth::principal(&request)?;
        let mut req = request.into_inner();
        let once = request_key(&principal, "ReleaseNumbers", &mut req)?;
        let carrier = self.ctx.carrier_scope(&principal, &req.carrier_id).await?;
        tracing::Span::current().record("carrier", carrier.as_str());
        batch_len(
            req.numbers.len(),
            self.ctx.limits.max_batch_items,
            "numbers",
        )?;
        let store = |valid| with_request(once, self.ctx.store.release_numbers(&carrier, valid));
        let results = accept(
            &req.numbers,
            "numbers",
            |number, path| {
                let mut v = Violations::new();
                v.check(path, validate::e164(number));
                v.into_value(number.clone())
            },
            store,
            |i, number, outcome| number_result(i, number, outcome),
        )
        .await?;
        Ok(crate::audit::respond(pb::ReleaseNumbersResponse {
            results,
        }))
    }

    async fn get_number(
        &self,
        request: Request<pb::GetNumberRequest>,
    ) -> Result<Response<pb::GetNumberResponse>, Status> {
        let principal = auth::principal(&request)?;
        let req = request.into_inner();
        let carrier = self.ctx.carrier_scope(&principal, &req.carrier_id).await?;
        let mut v = Violations::new();
        v.check("number", validate::e164(&req.number));
        v.into_result()?;
        // Another carrier's number and a missing number give the same answer.
        let number = self
            .ctx
            .store
            .get_number(&carrier, &req.number)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("number {} not found", req.number)))?;
        Ok(Response::new(pb::GetNumberResponse {
            phone_number: Some(convert::phone_number(number)),
        }))
    }

    async fn list_numbers(
        &self,
        request: Request<pb::ListNumbersRequest>,
    ) -> Result<Response<pb::ListNumbersResponse>, Status> {
        let principal = auth::principal(&request)?;
        let req = request.into_inner();
        let carrier = self.ctx.carrier_scope(&principal, &req.carrier_id).await?;
        let mut v = Violations::new();
        let tenant_id = (!req.tenant_id.is_empty())
            .then(|| convert::tenant_id(&req.tenant_id, "tenant_id", &mut v));
        let state = convert::number_state_filter(req.state, "state", &mut v);
        let updated_since = req
            .updated_since
            .as_ref()
            .and_then(|ts| convert::micros(ts, "updated_since", &mut v));
        let size = paging::page_size(req.page_size, self.ctx.limits.max_page_size, &mut v);
        v.into_result()?;
        let filters = format!("numbers|{carrier}|{tenant_id:?}|{state:?}|{updated_since:?}");
        let after = paging::decode(&filters, &req.page_token)?;
        let filter = NumberFilter {
            tenant_id,
            state,
            updated_since,
        };
        let page = self
            .ctx
            .store
            .list_numbers(&carrier, filter, after, size)
            .await
            .map_err(store_status)?;
        let next_page_token = paging::next_token(&page, &filters, |n| &n.number);
        Ok(crate::audit::respond(pb::ListNumbersResponse {
            phone_numbers: page.items.into_iter().map(convert::phone_number).collect(),
            next_page_token,
            total_size: page.total,
        }))
    }

    type WatchNumberEventsStream =
        Pin<Box<dyn Stream<Item = Result<pb::WatchNumberEventsResponse, Status>> + Send>>;

    async fn watch_number_events(
        &self,
        request: Request<pb::WatchNumberEventsRequest>,
    ) -> Result<Response<Self::WatchNumberEventsStream>, Status> {
        let principal = auth::principal(&request)?;
        let items = crate::audit::StreamItems::of(&request);
        let req = request.into_inner();
        let carrier = self.ctx.carrier_scope(&principal, &req.carrier_id).await?;
        tracing::Span::current().record("carrier", carrier.as_str());
        if req.after_sequence < 0 {
            return Err(invalid(
                "after_sequence",
                "after_sequence must be 0 (from the start) or a sequence you received",
            ));
        }
        let head = self
            .ctx
            .store
            .number_event_head(&carrier)
            .await
            .map_err(store_status)?;
        check_cursor(req.after_sequence, head)?;
        let (tx, rx) = feed(
            self.ctx.limits.feed_buffer_bytes,
            self.ctx.limits.stall_timeout,
            std::sync::Arc::clone(&self.ctx.metrics),
        );
        let ctx = self.ctx.clone();
        tokio::spawn(watch_loop(
            ctx,
            principal.key_id().to_owned(),
            carrier,
            req.after_sequence,
            tx,
            items,
        ));
        Ok(Response::new(Box::pin(rx)))
    }
}

/// Feeds one watcher: replay from the store, then wait for the commit signal and read again.
/// The signal is marked seen *before* each read, so a commit that lands during the read wakes
/// the next wait: nothing committed is ever left unsent. Each read is sized by what is free in
/// the watcher's buffer ([`read_size`]), so a watcher whose client is slow reads little.
async fn watch_loop(
    ctx: Ctx,
    key_id: String,
    carrier: String,
    mut after: i64,
    tx: FeedSender<pb::WatchNumberEventsResponse>,
    items: crate::audit::StreamItems,
) {
    let mut signal = ctx.store.number_event_signal();
    let mut shutdown = ctx.shutdown.clone();
    let mut event_bytes = EVENT_BYTES_GUESS;
    tracing::debug!(carrier = %carrier, after, "watch started");
    loop {
        signal.borrow_and_update();
        if !still_authorised(&ctx.keys, &key_id, &tx) {
            return;
        }
        let limit = read_size(tx.free(), 0, event_bytes, EVENT_BATCH_MIN, EVENT_BATCH);
        let events = match ctx.store.number_events_after(&carrier, after, limit).await {
            Ok(events) => events,
            Err(e) => {
                tx.end(store_status(e));
                return;
            }
        };
        let caught_up = events.len() < limit;
        for event in events {
            after = event.sequence;
            let stored = event.event_time;
            let message = pb::WatchNumberEventsResponse {
                event: Some(convert::number_event(event)),
            };
            event_bytes = prost::Message::encoded_len(&message).max(1);
            let tally = Tally {
                feed: Feed::NumberEvents,
                entries: 1,
                newest_stored: Some(stored),
            };
            if !send_or_stop(&tx, (message, tally), &mut shutdown, RESUME).await {
                return; // the client went away or stalled, or the server is stopping
            }
            items.add(1);
        }
        if !caught_up {
            continue;
        }
        if !next_commit(&mut signal, &mut shutdown, &tx, RESUME).await {
            return;
        }
    }
}

//! `ReconciliationService`: the platform's records against the carrier's reports.

use std::pin::Pin;

use futures_util::Stream;
use ocx_api::pb;
use ocx_api::pb::reconciliation_service_server::ReconciliationService;
use tonic::{Request, Response, Status};

use super::Ctx;
use super::stream::{
    FeedSender, Tally, check_cursor, feed, next_commit, read_size, send_or_stop, still_authorised,
};
use crate::auth::{self, Principal};
use crate::convert::filter_enum;
use crate::convert_durations;
use crate::domain::{DiscrepancyKind, ReconciliationPeriod};
use crate::error::{Violations, invalid, store_status};
use crate::metrics::Feed;
use crate::paging;

/// The reconciliation service.
pub struct Reconciliation {
    /// Shared state.
    pub ctx: Ctx,
}

impl Reconciliation {
    /// The carrier, period and tolerance of a request, or INVALID_ARGUMENT listing every problem.
    async fn period(
        &self,
        principal: &Principal,
        carrier_id: &str,
        start: &Option<prost_types::Timestamp>,
        end: &Option<prost_types::Timestamp>,
        tolerance: &Option<prost_types::Duration>,
        v: &mut Violations,
    ) -> Result<Option<ReconciliationPeriod>, Status> {
        let carrier_id = self.ctx.carrier_scope(principal, carrier_id).await?;
        let window = convert_durations::period(start, end, v);
        let tolerance_us = convert_durations::tolerance(tolerance, v);
        Ok(window.map(|(start, end)| ReconciliationPeriod {
            carrier_id,
            start,
            end,
            tolerance_us,
        }))
    }
}

#[tonic::async_trait]
impl ReconciliationService for Reconciliation {
    async fn get_reconciliation_summary(
        &self,
        request: Request<pb::GetReconciliationSummaryRequest>,
    ) -> Result<Response<pb::GetReconciliationSummaryResponse>, Status> {
        let principal = auth::principal(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let period = self
            .period(
                &principal,
                &req.carrier_id,
                &req.start_time,
                &req.end_time,
                &req.tolerance,
                &mut v,
            )
            .await?;
        let period = v.finish(period)?;
        let summary = self
            .ctx
            .store
            .reconciliation_summary(period.clone())
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::GetReconciliationSummaryResponse {
            summary: Some(convert_durations::summary(&period, summary)),
        }))
    }

    async fn list_discrepancies(
        &self,
        request: Request<pb::ListDiscrepanciesRequest>,
    ) -> Result<Response<pb::ListDiscrepanciesResponse>, Status> {
        let principal = auth::principal(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let period = self
            .period(
                &principal,
                &req.carrier_id,
                &req.start_time,
                &req.end_time,
                &req.tolerance,
                &mut v,
            )
            .await?;
        let kind = filter_enum(req.kind, "kind", DiscrepancyKind::from_code, &mut v);
        let size = paging::page_size(req.page_size, self.ctx.limits.max_page_size, &mut v);
        let period = v.finish(period)?;
        let filters = format!("discrepancies|{period:?}|{kind:?}");
        let after = match paging::decode(&filters, &req.page_token)? {
            None => None,
            Some(key) => Some(parse_cursor(&key)?),
        };
        let (rows, more) = self
            .ctx
            .store
            .list_discrepancies(period, kind, after, size)
            .await
            .map_err(store_status)?;
        let next_page_token = match rows.last() {
            Some((_, (s, k, id))) if more => paging::encode(&filters, &format!("{s}:{k}:{id}")),
            _ => String::new(),
        };
        Ok(crate::audit::respond(pb::ListDiscrepanciesResponse {
            discrepancies: rows
                .into_iter()
                .map(|(d, _)| convert_durations::discrepancy(d))
                .collect(),
            next_page_token,
        }))
    }

    type WatchReconciliationStream =
        Pin<Box<dyn Stream<Item = Result<pb::WatchReconciliationResponse, Status>> + Send>>;

    async fn watch_reconciliation(
        &self,
        request: Request<pb::WatchReconciliationRequest>,
    ) -> Result<Response<Self::WatchReconciliationStream>, Status> {
        let principal = auth::principal(&request)?;
        let items = crate::audit::StreamItems::of(&request);
        let req = request.into_inner();
        let carrier = self.ctx.carrier_scope(&principal, &req.carrier_id).await?;
        tracing::Span::current().record("carrier", carrier.as_str());
        let mut v = Violations::new();
        if req.after_sequence < 0 {
            v.add(
                "after_sequence",
                "after_sequence must be 0 (every entry as it stands) or a sequence you received",
            );
        }
        let tolerance_us = convert_durations::tolerance(&req.tolerance, &mut v);
        v.finish(Some(()))?;
        let (head, floor) = self
            .ctx
            .store
            .reconciliation_head(&carrier)
            .await
            .map_err(store_status)?;
        check_cursor(req.after_sequence, head)?;
        if req.after_sequence > 0 && req.after_sequence < floor {
            return Err(Status::out_of_range(format!(
                "after_sequence {} is behind {floor}: removals up to there were forgotten \
                 (they are kept for the retention period); replay from 0",
                req.after_sequence
            )));
        }
        let (tx, rx) = feed(
            self.ctx.limits.feed_buffer_bytes,
            self.ctx.limits.stall_timeout,
            std::sync::Arc::clone(&self.ctx.metrics),
        );
        tokio::spawn(watch_loop(
            self.ctx.clone(),
            principal.key_id().to_owned(),
            carrier,
            req.after_sequence,
            tolerance_us,
            tx,
            items,
        ));
        Ok(Response::new(Box::pin(rx)))
    }
}

/// Most changes read from the store per query while replaying (while the client keeps up).
const CHANGE_BATCH: usize = 1000;
/// Fewest changes read per query (while the client is slow).
const CHANGE_BATCH_MIN: usize = 16;
/// Most changes per message.
const CHANGE_MESSAGE: usize = 256;
/// Encoded bytes per change assumed until a watcher has sent its first message.
const CHANGE_BYTES_GUESS: usize = 128;
/// What a watcher tells its client when it ends it with UNAVAILABLE.
const RESUME: &str = "reconnect with your last sequence";

/// Feeds one watcher of a carrier's reconciliation, as the number-event watcher does: mark the
/// commit signal seen, read what is new, send it, wait for the next commit (or shutdown, or
/// the client leaving). The signal is marked seen before each read, so a commit that lands
/// during the read wakes the next wait.
async fn watch_loop(
    ctx: Ctx,
    key_id: String,
    carrier: String,
    mut after: i64,
    tolerance_us: i64,
    tx: FeedSender<pb::WatchReconciliationResponse>,
    items: crate::audit::StreamItems,
) {
    let mut signal = ctx.store.reconciliation_signal();
    let mut shutdown = ctx.shutdown.clone();
    let mut change_bytes = CHANGE_BYTES_GUESS;
    loop {
        signal.borrow_and_update();
        if !still_authorised(&ctx.keys, &key_id, &tx) {
            return;
        }
        let limit = read_size(tx.free(), 0, change_bytes, CHANGE_BATCH_MIN, CHANGE_BATCH);
        let changes = match ctx
            .store
            .reconciliation_changes_after(&carrier, after, limit)
            .await
        {
            Ok(changes) => changes,
            Err(e) => {
                tx.end(store_status(e));
                return;
            }
        };
        let caught_up = changes.len() < limit;
        let mut changes = changes.into_iter().peekable();
        while changes.peek().is_some() {
            let per_message = (tx.budget() / 4 / change_bytes).clamp(1, CHANGE_MESSAGE);
            let message = pb::WatchReconciliationResponse {
                changes: changes
                    .by_ref()
                    .take(per_message)
                    .map(|c| convert_durations::change(c, tolerance_us))
                    .collect(),
            };
            let count = message.changes.len();
            after = message.changes.last().map_or(after, |c| c.sequence);
            change_bytes = (prost::Message::encoded_len(&message) / count.max(1)).max(1);
            let tally = Tally {
                feed: Feed::Reconciliation,
                entries: count,
                newest_stored: None,
            };
            if !send_or_stop(&tx, (message, tally), &mut shutdown, RESUME).await {
                return; // the client went away or stalled, or the server is stopping
            }
            items.add(count);
        }
        if !caught_up {
            continue;
        }
        if !next_commit(&mut signal, &mut shutdown, &tx, RESUME).await {
            return;
        }
    }
}

/// `start:kind:id` inside a discrepancy page token.
fn parse_cursor(key: &str) -> Result<(i64, i32, i64), Status> {
    let mut parts = key.split(':');
    let mut next = || parts.next().and_then(|p| p.parse::<i64>().ok());
    match (next(), next(), next()) {
        (Some(s), Some(k), Some(id)) => Ok((s, k as i32, id)),
        _ => Err(invalid(
            "page_token",
            "page_token is not a token this list returned",
        )),
    }
}

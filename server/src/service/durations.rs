//! `CallDurationService`: carriers report the durations they measured.

use std::pin::Pin;

use futures_util::Stream;
use ocx_api::pb;
use ocx_api::pb::call_duration_service_server::CallDurationService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::batch::{accept, item_violations};
use super::{Ctx, request_key};
use crate::auth::{self, Principal};
use crate::convert;
use crate::convert_durations;
use crate::domain::DurationOutcome;
use crate::error::{Violations, invalid, store_status};
use crate::paging;
use crate::store::request::with_request;

/// The call duration service.
pub struct Durations {
    /// Shared state.
    pub ctx: Ctx,
}

/// Counts of a batch's results: (created, unchanged, corrected, rejected).
fn counts(results: &[pb::CallDurationResult]) -> [i32; 4] {
    let count = |s: pb::ItemStatus| results.iter().filter(|r| r.status == s as i32).count() as i32;
    [
        count(pb::ItemStatus::Created),
        count(pb::ItemStatus::Unchanged),
        count(pb::ItemStatus::Corrected),
        count(pb::ItemStatus::Rejected),
    ]
}

/// Validates and stores one batch for `principal` (scope from the key), returning a result per
/// report after the durable commit.
async fn report_batch(
    ctx: &Ctx,
    principal: &Principal,
    carrier_id: &str,
    batch: Vec<pb::CallDurationReport>,
) -> Result<Vec<pb::CallDurationResult>, Status> {
    let carrier = ctx.carrier_scope(principal, carrier_id).await?;
    let n = batch.len();
    let max = ctx.limits.max_batch_items;
    if n == 0 || n > max {
        return Err(invalid(
            "durations",
            format!("{n} reports: send 1 to {max} per call or batch"),
        ));
    }
    let store = |valid| ctx.store.report_call_durations(&carrier, valid);
    let results = accept(
        &batch,
        "durations",
        convert_durations::report_in,
        store,
        |i, r, outcome| {
            let (status, (reason, violations)) = match outcome {
                Ok(DurationOutcome::Created) => (pb::ItemStatus::Created, Default::default()),
                Ok(DurationOutcome::Unchanged) => (pb::ItemStatus::Unchanged, Default::default()),
                Ok(DurationOutcome::Corrected) => (pb::ItemStatus::Corrected, Default::default()),
                Err(violations) => (pb::ItemStatus::Rejected, item_violations(violations)),
            };
            pb::CallDurationResult {
                index: i as i32,
                record_id: r.record_id.chars().take(128).collect(),
                status: status as i32,
                reason,
                violations,
            }
        },
    )
    .await?;
    let stored = results
        .iter()
        .filter(|r| {
            [
                pb::ItemStatus::Created as i32,
                pb::ItemStatus::Corrected as i32,
            ]
            .contains(&r.status)
        })
        .count();
    ctx.metrics.rows("call_duration", stored);
    Ok(results)
}

#[tonic::async_trait]
impl CallDurationService for Durations {
    async fn report_call_durations(
        &self,
        request: Request<pb::ReportCallDurationsRequest>,
    ) -> Result<Response<pb::ReportCallDurationsResponse>, Status> {
        let principal = auth::principal(&request)?;
        let mut req = request.into_inner();
        let once = request_key(&principal, "ReportCallDurations", &mut req)?;
        let results = with_request(
            once,
            report_batch(&self.ctx, &principal, &req.carrier_id, req.durations),
        )
        .await?;
        let [
            created_count,
            unchanged_count,
            corrected_count,
            rejected_count,
        ] = counts(&results);
        Ok(crate::audit::respond(pb::ReportCallDurationsResponse {
            results,
            created_count,
            unchanged_count,
            corrected_count,
            rejected_count,
        }))
    }

    type UploadCallDurationsStream =
        Pin<Box<dyn Stream<Item = Result<pb::UploadCallDurationsResponse, Status>> + Send>>;

    async fn upload_call_durations(
        &self,
        request: Request<Streaming<pb::UploadCallDurationsRequest>>,
    ) -> Result<Response<Self::UploadCallDurationsStream>, Status> {
        let principal = auth::principal(&request)?;
        let items = crate::audit::StreamItems::of(&request);
        let (tx, rx) = mpsc::channel(super::stream::STREAM_IN_FLIGHT);
        let ctx = self.ctx.clone();
        let shutdown = ctx.shutdown.clone();
        // Batches carrying one record id are stored in batch order (see `KeyOrder`).
        let order = super::stream::KeyOrder::default();
        let handle = move |batch: pb::UploadCallDurationsRequest| {
            let mut turn = order.turn(batch.durations.iter().map(|d| &d.record_id));
            let (ctx, principal, items) = (ctx.clone(), principal.clone(), items.clone());
            async move {
                turn.wait().await;
                let results =
                    report_batch(&ctx, &principal, &batch.carrier_id, batch.durations).await;
                drop(turn);
                let results = results?;
                items.add(results.len());
                let [
                    created_count,
                    unchanged_count,
                    corrected_count,
                    rejected_count,
                ] = counts(&results);
                Ok(pb::UploadCallDurationsResponse {
                    batch_id: batch.batch_id,
                    results,
                    created_count,
                    unchanged_count,
                    corrected_count,
                    rejected_count,
                })
            }
        };
        let budget = self.ctx.limits.upload_buffer_bytes;
        // In the call's span: its writes are traced under it (see `telemetry`).
        tokio::spawn(tracing::Instrument::in_current_span(
            super::stream::pipeline(request.into_inner(), tx, shutdown, budget, handle),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_call_durations(
        &self,
        request: Request<pb::ListCallDurationsRequest>,
    ) -> Result<Response<pb::ListCallDurationsResponse>, Status> {
        let principal = auth::principal(&request)?;
        let req = request.into_inner();
        let carrier = self.ctx.carrier_scope(&principal, &req.carrier_id).await?;
        let mut v = Violations::new();
        let (from, to) = convert::time_range(
            (req.start_time_from.as_ref(), "start_time_from"),
            (req.start_time_to.as_ref(), "start_time_to"),
            &mut v,
        );
        let size = paging::page_size(req.page_size, self.ctx.limits.max_page_size, &mut v);
        v.into_result()?;
        let filters = format!("durations|{carrier}|{from:?}|{to:?}");
        let after = match paging::decode(&filters, &req.page_token)? {
            None => None,
            Some(key) => Some(paging::time_and_id(&key)?),
        };
        let (rows, more) = self
            .ctx
            .store
            .list_call_durations(&carrier, (from, to), after, size)
            .await
            .map_err(store_status)?;
        let next_page_token = match rows.last() {
            Some((_, (start, id))) if more => paging::encode(&filters, &format!("{start}:{id}")),
            _ => String::new(),
        };
        Ok(crate::audit::respond(pb::ListCallDurationsResponse {
            call_durations: rows
                .into_iter()
                .map(|(d, _)| convert_durations::call_duration(d))
                .collect(),
            next_page_token,
        }))
    }
}

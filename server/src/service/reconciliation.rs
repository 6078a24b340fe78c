//! `ReconciliationService`: the platform's records against the carrier's reports.

use ocx_api::pb;
use ocx_api::pb::reconciliation_service_server::ReconciliationService;
use tonic::{Request, Response, Status};

use super::Ctx;
use crate::auth::{self, Principal};
use crate::convert::filter_enum;
use crate::convert_durations;
use crate::domain::{DiscrepancyKind, ReconciliationPeriod};
use crate::error::{Violations, invalid, store_status};
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
    #[tracing::instrument(skip_all, fields(rpc = "GetReconciliationSummary"))]
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

    #[tracing::instrument(skip_all, fields(rpc = "ListDiscrepancies"))]
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

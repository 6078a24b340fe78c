//! `PlatformService`: what the calling platform tells OCX (platform keys only).

use ocx_api::pb;
use ocx_api::pb::platform_service_server::PlatformService;
use ocx_api::validate;
use tonic::{Request, Response, Status};

use std::pin::Pin;

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::batch::{accept, item_violations};
use super::{Ctx, request_key};
use crate::auth;
use crate::convert;
use crate::convert_calls;
use crate::convert_durations;
use crate::domain::{AssignRequest, ConsentGrant, ConsentStatus};
use crate::domain::{IngestOutcome, UsageGrouping};
use crate::error::{Violations, invalid, refusal, store_status};
use crate::store::request::with_request;

/// Validates a batch, stores its valid records, and builds the acknowledgement. Runs after the
/// store's reply, i.e. after the durable commit.
async fn ingest_batch(
    ctx: Ctx,
    batch: pb::IngestCallRecordsRequest,
) -> Result<pb::IngestCallRecordsResponse, Status> {
    let n = batch.call_records.len();
    let max = ctx.limits.max_batch_items;
    if n == 0 || n > max {
        return Err(invalid(
            "call_records",
            format!(
                "batch {} has {n} records; send 1 to {max} per batch",
                batch.batch_id
            ),
        ));
    }
    let store = |valid| ctx.store.ingest_call_records(valid);
    let answer = |i: usize, record: &pb::CallRecord, outcome| {
        let stored = |status, carrier_id| (status, carrier_id, (String::new(), Vec::new()));
        let (status, carrier_id, (reason, violations)) = match outcome {
            Ok(IngestOutcome::Created(c)) => stored(pb::ItemStatus::Created, c),
            Ok(IngestOutcome::Revised(c)) => stored(pb::ItemStatus::Revised, c),
            Ok(IngestOutcome::Unchanged(c)) => stored(pb::ItemStatus::Unchanged, c),
            Ok(IngestOutcome::Rejected(why)) => (
                pb::ItemStatus::Rejected,
                String::new(),
                (refusal(&why), Vec::new()),
            ),
            Err(violations) => (
                pb::ItemStatus::Rejected,
                String::new(),
                item_violations(violations),
            ),
        };
        pb::CallRecordResult {
            index: i as i32,
            call_id: record.call_id.chars().take(128).collect(),
            carrier_id,
            status: status as i32,
            reason,
            violations,
        }
    };
    let results = accept(
        &batch.call_records,
        "call_records",
        convert_calls::call_record_in,
        store,
        answer,
    )
    .await?;
    let count = |s: pb::ItemStatus| results.iter().filter(|r| r.status == s as i32).count() as i32;
    let stored = count(pb::ItemStatus::Created) + count(pb::ItemStatus::Revised);
    ctx.metrics.rows("call_record", stored as usize);
    Ok(pb::IngestCallRecordsResponse {
        batch_id: batch.batch_id,
        created_count: count(pb::ItemStatus::Created),
        revised_count: count(pb::ItemStatus::Revised),
        unchanged_count: count(pb::ItemStatus::Unchanged),
        rejected_count: count(pb::ItemStatus::Rejected),
        results,
    })
}

/// The platform service.
pub struct Platform {
    /// Shared state.
    pub ctx: Ctx,
}

#[tonic::async_trait]
impl PlatformService for Platform {
    async fn grant_consent(
        &self,
        request: Request<pb::GrantConsentRequest>,
    ) -> Result<Response<pb::GrantConsentResponse>, Status> {
        let principal = auth::principal(&request)?;
        let mut req = request.into_inner();
        let once = request_key(&principal, "GrantConsent", &mut req)?;
        let mut v = Violations::new();
        v.check("carrier_id", validate::carrier_id(&req.carrier_id));
        let tenant_id = convert::tenant_id(&req.tenant_id, "tenant_id", &mut v);
        let status =
            match convert::filter_enum(req.status, "status", ConsentStatus::from_code, &mut v) {
                None => ConsentStatus::Active,
                Some(ConsentStatus::Removed) => {
                    v.add(
                    "status",
                    "use RevokeConsent to remove a consent; GrantConsent sets ACTIVE or SUSPENDED",
                );
                    ConsentStatus::Removed
                }
                Some(s) => s,
            };
        let mut countries = Vec::new();
        for (i, c) in req.consented_countries.iter().enumerate() {
            v.check(
                format!("consented_countries[{i}]"),
                validate::country_code(c),
            );
            if !countries.contains(c) {
                countries.push(c.clone());
            }
        }
        countries.sort();
        let contact = convert::contact_in(req.contact, "contact", &mut v);
        v.into_result()?;
        let grant = ConsentGrant {
            carrier_id: req.carrier_id,
            tenant_id,
            status,
            countries,
            contact,
        };
        let consent = with_request(once, self.ctx.store.grant_consent(grant))
            .await
            .map_err(store_status)?;
        tracing::info!(carrier = %consent.carrier_id, tenant = %consent.tenant_id, status = ?consent.status, "consent granted");
        Ok(Response::new(pb::GrantConsentResponse {
            consent: Some(convert::consent(consent)),
        }))
    }

    async fn revoke_consent(
        &self,
        request: Request<pb::RevokeConsentRequest>,
    ) -> Result<Response<pb::RevokeConsentResponse>, Status> {
        let principal = auth::principal(&request)?;
        let mut req = request.into_inner();
        let once = request_key(&principal, "RevokeConsent", &mut req)?;
        let mut v = Violations::new();
        v.check("carrier_id", validate::carrier_id(&req.carrier_id));
        let tenant_id = convert::tenant_id(&req.tenant_id, "tenant_id", &mut v);
        v.into_result()?;
        let consent = with_request(
            once,
            self.ctx.store.revoke_consent(&req.carrier_id, &tenant_id),
        )
        .await
        .map_err(store_status)?;
        tracing::info!(carrier = %consent.carrier_id, tenant = %consent.tenant_id, "consent removed");
        Ok(Response::new(pb::RevokeConsentResponse {
            consent: Some(convert::consent(consent)),
        }))
    }

    async fn assign_number(
        &self,
        request: Request<pb::AssignNumberRequest>,
    ) -> Result<Response<pb::AssignNumberResponse>, Status> {
        let principal = auth::principal(&request)?;
        let mut req = request.into_inner();
        let once = request_key(&principal, "AssignNumber", &mut req)?;
        let mut v = Violations::new();
        v.check("number", validate::e164(&req.number));
        let tenant_id = convert::tenant_id(&req.tenant_id, "tenant_id", &mut v);
        let assignment_type =
            convert::assignment_type(req.assignment_type, "assignment_type", &mut v);
        v.check("sip_uri", validate::sip_uri(&req.sip_uri));
        v.check("user_id", validate::text(&req.user_id, 128));
        let assignment_type = v.finish(assignment_type)?;
        let request = AssignRequest {
            number: req.number,
            tenant_id,
            assignment_type,
            sip_uri: req.sip_uri,
            user_id: req.user_id,
        };
        let number = with_request(once, self.ctx.store.assign_number(request))
            .await
            .map_err(store_status)?;
        tracing::info!(carrier = %number.carrier_id, version = number.version, "number assigned");
        Ok(Response::new(pb::AssignNumberResponse {
            phone_number: Some(convert::phone_number(number)),
        }))
    }

    type IngestCallRecordsStream =
        Pin<Box<dyn Stream<Item = Result<pb::IngestCallRecordsResponse, Status>> + Send>>;

    async fn ingest_call_records(
        &self,
        request: Request<Streaming<pb::IngestCallRecordsRequest>>,
    ) -> Result<Response<Self::IngestCallRecordsStream>, Status> {
        let items = crate::audit::StreamItems::of(&request);
        let (tx, rx) = mpsc::channel(super::stream::STREAM_IN_FLIGHT);
        let ctx = self.ctx.clone();
        let shutdown = ctx.shutdown.clone();
        // Batches carrying one call id are stored in batch order (see `KeyOrder`).
        let order = super::stream::KeyOrder::default();
        let handle = move |batch: pb::IngestCallRecordsRequest| {
            let mut turn = order.turn(batch.call_records.iter().map(|r| &r.call_id));
            let (ctx, items) = (ctx.clone(), items.clone());
            async move {
                turn.wait().await;
                let ack = ingest_batch(ctx, batch).await;
                drop(turn);
                let ack = ack?;
                items.add(ack.results.len());
                Ok(ack)
            }
        };
        let budget = self.ctx.limits.upload_buffer_bytes;
        // In the call's span: its writes are traced under it (see `telemetry`).
        tokio::spawn(tracing::Instrument::in_current_span(
            super::stream::pipeline(request.into_inner(), tx, shutdown, budget, handle),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_tenant_usage(
        &self,
        request: Request<pb::GetTenantUsageRequest>,
    ) -> Result<Response<pb::GetTenantUsageResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let tenant_id = convert::tenant_id(&req.tenant_id, "tenant_id", &mut v);
        let window = convert_durations::period(&req.start_time, &req.end_time, &mut v);
        let grouping = match pb::UsageGrouping::try_from(req.grouping) {
            Ok(pb::UsageGrouping::Day) => Some(UsageGrouping::Day),
            Ok(pb::UsageGrouping::NumberAndDirection) => Some(UsageGrouping::NumberAndDirection),
            _ => {
                v.add(
                    "grouping",
                    "grouping must be USAGE_GROUPING_DAY or USAGE_GROUPING_NUMBER_AND_DIRECTION",
                );
                None
            }
        };
        let (window, grouping) = v.finish(window.zip(grouping))?;
        let rows = self
            .ctx
            .store
            .tenant_usage(&tenant_id, window, grouping)
            .await
            .map_err(store_status)?;
        let call_count = rows.iter().map(|r| r.calls).sum();
        let total_us = rows.iter().map(|r| r.duration_us).sum();
        Ok(crate::audit::respond(pb::GetTenantUsageResponse {
            rows: rows.into_iter().map(convert_durations::usage_row).collect(),
            call_count,
            total_duration: Some(convert::duration(total_us)),
        }))
    }

    async fn unassign_number(
        &self,
        request: Request<pb::UnassignNumberRequest>,
    ) -> Result<Response<pb::UnassignNumberResponse>, Status> {
        let principal = auth::principal(&request)?;
        let mut req = request.into_inner();
        let once = request_key(&principal, "UnassignNumber", &mut req)?;
        let mut v = Violations::new();
        v.check("number", validate::e164(&req.number));
        let tenant_id = convert::tenant_id(&req.tenant_id, "tenant_id", &mut v);
        v.into_result()?;
        let number = with_request(
            once,
            self.ctx.store.unassign_number(&req.number, &tenant_id),
        )
        .await
        .map_err(store_status)?;
        tracing::info!(carrier = %number.carrier_id, version = number.version, "number unassigned");
        Ok(Response::new(pb::UnassignNumberResponse {
            phone_number: Some(convert::phone_number(number)),
        }))
    }
}

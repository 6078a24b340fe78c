//! `AdminService` (platform keys only): carriers, API keys, the retention policy and purges,
//! tenant erasure, and the audit trail.

use ocx_api::pb;
use ocx_api::pb::admin_service_server::AdminService;
use ocx_api::validate;
use tonic::{Request, Response, Status};

use super::{Ctx, request_key};
use crate::auth::{self, issue_key};
use crate::convert;
use crate::domain::{AuditFilter, Carrier, Role, now_micros};
use crate::error::{Violations, store_status};
use crate::paging;
use crate::store::request::with_request;

/// The admin service.
pub struct Admin {
    /// Shared state.
    pub ctx: Ctx,
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn create_carrier(
        &self,
        request: Request<pb::CreateCarrierRequest>,
    ) -> Result<Response<pb::CreateCarrierResponse>, Status> {
        let principal = auth::principal(&request)?;
        let mut req = request.into_inner();
        let once = request_key(&principal, "CreateCarrier", &mut req)?;
        let mut v = Violations::new();
        v.check("carrier_id", validate::carrier_id(&req.carrier_id));
        if req.display_name.trim().is_empty() {
            v.add("display_name", "display_name is required");
        }
        v.check(
            "display_name",
            validate::text(&req.display_name, validate::MAX_TEXT_LEN),
        );
        v.into_result()?;
        let carrier = Carrier {
            carrier_id: req.carrier_id,
            display_name: req.display_name,
            create_time: now_micros(),
        };
        let carrier = with_request(once, self.ctx.store.create_carrier(carrier))
            .await
            .map_err(store_status)?;
        tracing::info!(carrier = %carrier.carrier_id, "carrier created");
        Ok(Response::new(pb::CreateCarrierResponse {
            carrier: Some(convert::carrier(carrier)),
        }))
    }

    async fn list_carriers(
        &self,
        request: Request<pb::ListCarriersRequest>,
    ) -> Result<Response<pb::ListCarriersResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let size = paging::page_size(req.page_size, self.ctx.limits.max_page_size, &mut v);
        v.into_result()?;
        let after = paging::decode("carriers", &req.page_token)?;
        let page = self
            .ctx
            .store
            .list_carriers(after, size)
            .await
            .map_err(store_status)?;
        let next_page_token = paging::next_token(&page, "carriers", |c| &c.carrier_id);
        Ok(crate::audit::respond(pb::ListCarriersResponse {
            carriers: page.items.into_iter().map(convert::carrier).collect(),
            next_page_token,
            total_size: page.total,
        }))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let principal = auth::principal(&request)?;
        let mut req = request.into_inner();
        let once = request_key(&principal, "CreateApiKey", &mut req)?;
        let mut v = Violations::new();
        let role = convert::required_enum(req.role, "role", Role::from_code, &mut v);
        match role {
            Some(Role::Carrier) if req.carrier_id.is_empty() => {
                v.add("carrier_id", "a carrier key needs the carrier's id");
            }
            Some(Role::Carrier) => v.check("carrier_id", validate::carrier_id(&req.carrier_id)),
            Some(Role::Platform) if !req.carrier_id.is_empty() => {
                v.add(
                    "carrier_id",
                    "a platform key belongs to no carrier; leave carrier_id empty",
                );
            }
            _ => {}
        }
        v.check(
            "display_name",
            validate::text(&req.display_name, validate::MAX_TEXT_LEN),
        );
        let role = v.finish(role)?;
        let carrier_id = (role == Role::Carrier).then_some(req.carrier_id);
        let issued = issue_key(role, carrier_id, req.display_name);
        let new_key_id = issued.record.key_id.clone();
        let stored = with_request(once, self.ctx.store.insert_api_key(issued.record))
            .await
            .map_err(store_status)?;
        if stored.key_id != new_key_id {
            // A retry of a request that already created a key: its secret was shown once and
            // is kept nowhere, so it cannot be answered again.
            return Err(Status::already_exists(format!(
                "this request_id already created API key {}; its secret is shown only once: \
                 revoke that key if the answer was lost, and create another with a new request_id",
                stored.key_id
            )));
        }
        self.ctx.keys.insert(&stored);
        tracing::info!(key_id = %stored.key_id, role = ?stored.role, carrier = ?stored.carrier_id, "API key issued");
        Ok(Response::new(pb::CreateApiKeyResponse {
            api_key: Some(convert::api_key(stored, None)),
            secret: issued.token,
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let principal = auth::principal(&request)?;
        let mut req = request.into_inner();
        let once = request_key(&principal, "RevokeApiKey", &mut req)?;
        if req.key_id.len() != 16 || !req.key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(crate::error::invalid(
                "key_id",
                "key_id must be the 16 hex characters shown by CreateApiKey or ListApiKeys",
            ));
        }
        let key = with_request(once, self.ctx.store.revoke_api_key(&req.key_id))
            .await
            .map_err(store_status)?;
        // Only after the revocation is durable does the cache forget the key.
        self.ctx.keys.remove(&key.key_id);
        tracing::info!(key_id = %key.key_id, "API key revoked");
        Ok(Response::new(pb::RevokeApiKeyResponse {
            api_key: Some(convert::api_key(key, None)),
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let size = paging::page_size(req.page_size, self.ctx.limits.max_page_size, &mut v);
        if !req.carrier_id.is_empty() {
            v.check("carrier_id", validate::carrier_id(&req.carrier_id));
        }
        v.into_result()?;
        let filters = format!("keys|{}", req.carrier_id);
        let after = paging::decode(&filters, &req.page_token)?;
        let carrier = (!req.carrier_id.is_empty()).then_some(req.carrier_id);
        let page = self
            .ctx
            .store
            .list_api_keys(carrier, after, size)
            .await
            .map_err(store_status)?;
        let next_page_token = paging::next_token(&page, &filters, |k| &k.key_id);
        let keys = &self.ctx.keys;
        Ok(crate::audit::respond(pb::ListApiKeysResponse {
            api_keys: page
                .items
                .into_iter()
                .map(|k| {
                    let last = keys.last_use(&k.key_id);
                    convert::api_key(k, last)
                })
                .collect(),
            next_page_token,
            total_size: page.total,
        }))
    }

    async fn get_retention_policy(
        &self,
        _request: Request<pb::GetRetentionPolicyRequest>,
    ) -> Result<Response<pb::GetRetentionPolicyResponse>, Status> {
        let policy = self
            .ctx
            .store
            .retention_policy()
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::GetRetentionPolicyResponse {
            policy: Some(convert::retention_policy(policy)),
        }))
    }

    async fn set_retention_policy(
        &self,
        request: Request<pb::SetRetentionPolicyRequest>,
    ) -> Result<Response<pb::SetRetentionPolicyResponse>, Status> {
        let principal = auth::principal(&request)?;
        let mut req = request.into_inner();
        let once = request_key(&principal, "SetRetentionPolicy", &mut req)?;
        let policy = convert::retention_policy_in(req.policy)?;
        let policy = with_request(once, self.ctx.store.set_retention_policy(policy))
            .await
            .map_err(store_status)?;
        tracing::info!(?policy, "retention policy changed");
        Ok(Response::new(pb::SetRetentionPolicyResponse {
            policy: Some(convert::retention_policy(policy)),
        }))
    }

    async fn purge_expired_data(
        &self,
        request: Request<pb::PurgeExpiredDataRequest>,
    ) -> Result<Response<pb::PurgeExpiredDataResponse>, Status> {
        let principal = auth::principal(&request)?;
        let mut req = request.into_inner();
        let once = request_key(&principal, "PurgeExpiredData", &mut req)?;
        let counts = with_request(once, crate::retention::purge(self.ctx.store.as_ref()))
            .await
            .map_err(store_status)?;
        let mut response = Response::new(pb::PurgeExpiredDataResponse {
            call_records: counts.call_records,
            call_durations: counts.call_durations,
            released_numbers: counts.released_numbers,
            number_events: counts.number_events,
            audit_events: counts.audit_events,
        });
        crate::audit::set_count(
            &mut response,
            counts.call_records
                + counts.call_durations
                + counts.released_numbers
                + counts.audit_events,
        );
        Ok(response)
    }

    async fn erase_tenant_data(
        &self,
        request: Request<pb::EraseTenantDataRequest>,
    ) -> Result<Response<pb::EraseTenantDataResponse>, Status> {
        let principal = auth::principal(&request)?;
        let mut req = request.into_inner();
        let once = request_key(&principal, "EraseTenantData", &mut req)?;
        let mut v = Violations::new();
        let tenant_id = convert::tenant_id(&req.tenant_id, "tenant_id", &mut v);
        v.into_result()?;
        let counts = with_request(once, self.ctx.store.erase_tenant(&tenant_id))
            .await
            .map_err(store_status)?;
        tracing::info!(?counts, "tenant data erased");
        let mut response = Response::new(pb::EraseTenantDataResponse {
            call_records: counts.call_records,
            call_durations: counts.call_durations,
            numbers: counts.numbers,
            number_events: counts.number_events,
        });
        crate::audit::set_count(
            &mut response,
            counts.call_records + counts.call_durations + counts.numbers,
        );
        Ok(response)
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let size = paging::page_size(req.page_size, self.ctx.limits.max_page_size, &mut v);
        let (start, end) = convert::time_range(
            (req.start_time.as_ref(), "start_time"),
            (req.end_time.as_ref(), "end_time"),
            &mut v,
        );
        if !req.carrier_id.is_empty() {
            v.check("carrier_id", validate::carrier_id(&req.carrier_id));
        }
        v.into_result()?;
        let nonempty = |s: String| (!s.is_empty()).then_some(s);
        let filter = AuditFilter {
            key_id: nonempty(req.key_id),
            carrier_id: nonempty(req.carrier_id),
            rpc: nonempty(req.rpc),
            start,
            end,
        };
        let filters = format!("audit|{filter:?}");
        let before = paging::decode(&filters, &req.page_token)?
            .map(|id| id.parse::<i64>())
            .transpose()
            .map_err(|_| Status::invalid_argument("page_token is not one this listing issued"))?;
        // Every call answered before this one is in the listing.
        self.ctx.audit.flush().await;
        let (events, more) = self
            .ctx
            .store
            .list_audit_events(filter, before, size)
            .await
            .map_err(store_status)?;
        let next_page_token = match events.last() {
            Some(last) if more => paging::encode(&filters, &last.id.to_string()),
            _ => String::new(),
        };
        Ok(crate::audit::respond(pb::ListAuditEventsResponse {
            audit_events: events.into_iter().map(convert::audit_event).collect(),
            next_page_token,
        }))
    }
}

//! `AdminService`: carriers and API keys (platform keys only).

use ocx_api::pb;
use ocx_api::pb::admin_service_server::AdminService;
use ocx_api::validate;
use tonic::{Request, Response, Status};

use super::Ctx;
use crate::auth::{self, issue_key};
use crate::convert;
use crate::domain::{Carrier, Role, now_micros};
use crate::error::{Violations, store_status};
use crate::paging;

/// The admin service.
pub struct Admin {
    /// Shared state.
    pub ctx: Ctx,
}

#[tonic::async_trait]
impl AdminService for Admin {
    #[tracing::instrument(skip_all, fields(rpc = "CreateCarrier"))]
    async fn create_carrier(
        &self,
        request: Request<pb::CreateCarrierRequest>,
    ) -> Result<Response<pb::CreateCarrierResponse>, Status> {
        auth::principal(&request)?.require_platform()?;
        let req = request.into_inner();
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
        let carrier = self
            .ctx
            .store
            .create_carrier(carrier)
            .await
            .map_err(store_status)?;
        tracing::info!(carrier = %carrier.carrier_id, "carrier created");
        Ok(Response::new(pb::CreateCarrierResponse {
            carrier: Some(convert::carrier(carrier)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListCarriers"))]
    async fn list_carriers(
        &self,
        request: Request<pb::ListCarriersRequest>,
    ) -> Result<Response<pb::ListCarriersResponse>, Status> {
        auth::principal(&request)?.require_platform()?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let size = paging::page_size(req.page_size, &mut v);
        v.into_result()?;
        let after = paging::decode("carriers", &req.page_token)?;
        let page = self
            .ctx
            .store
            .list_carriers(after, size)
            .await
            .map_err(store_status)?;
        let next_page_token = paging::next_token(&page, "carriers", |c| &c.carrier_id);
        Ok(Response::new(pb::ListCarriersResponse {
            carriers: page.items.into_iter().map(convert::carrier).collect(),
            next_page_token,
            total_size: page.total,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "CreateApiKey"))]
    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        auth::principal(&request)?.require_platform()?;
        let req = request.into_inner();
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
        v.into_result()?;
        let role = role.unwrap_or(Role::Carrier);
        let carrier_id = (role == Role::Carrier).then_some(req.carrier_id);
        let issued = issue_key(role, carrier_id, req.display_name);
        let stored = self
            .ctx
            .store
            .insert_api_key(issued.record)
            .await
            .map_err(store_status)?;
        self.ctx.keys.insert(&stored);
        tracing::info!(key_id = %stored.key_id, role = ?stored.role, carrier = ?stored.carrier_id, "API key issued");
        Ok(Response::new(pb::CreateApiKeyResponse {
            api_key: Some(convert::api_key(stored, None)),
            secret: issued.token,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RevokeApiKey"))]
    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        auth::principal(&request)?.require_platform()?;
        let req = request.into_inner();
        if req.key_id.len() != 16 || !req.key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(crate::error::invalid(
                "key_id",
                "key_id must be the 16 hex characters shown by CreateApiKey or ListApiKeys",
            ));
        }
        let key = self
            .ctx
            .store
            .revoke_api_key(&req.key_id)
            .await
            .map_err(store_status)?;
        // Only after the revocation is durable does the cache forget the key.
        self.ctx.keys.remove(&key.key_id);
        tracing::info!(key_id = %key.key_id, "API key revoked");
        Ok(Response::new(pb::RevokeApiKeyResponse {
            api_key: Some(convert::api_key(key, None)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListApiKeys"))]
    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        auth::principal(&request)?.require_platform()?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let size = paging::page_size(req.page_size, &mut v);
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
        Ok(Response::new(pb::ListApiKeysResponse {
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
}

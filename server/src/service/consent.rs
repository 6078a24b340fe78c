//! `ConsentService`: a carrier's view of the tenants that consented to it.

use ocx_api::pb;
use ocx_api::pb::consent_service_server::ConsentService;
use tonic::{Request, Response, Status};

use super::Ctx;
use crate::auth;
use crate::convert;
use crate::domain::ConsentStatus;
use crate::error::{Violations, store_status};
use crate::paging;

/// The consent service.
pub struct Consents {
    /// Shared state.
    pub ctx: Ctx,
}

#[tonic::async_trait]
impl ConsentService for Consents {
    async fn list_consents(
        &self,
        request: Request<pb::ListConsentsRequest>,
    ) -> Result<Response<pb::ListConsentsResponse>, Status> {
        let principal = auth::principal(&request)?;
        let req = request.into_inner();
        let carrier = self.ctx.carrier_scope(&principal, &req.carrier_id).await?;
        let mut v = Violations::new();
        let status = convert::filter_enum(req.status, "status", ConsentStatus::from_code, &mut v);
        let size = paging::page_size(req.page_size, self.ctx.limits.max_page_size, &mut v);
        v.into_result()?;
        let filters = format!("consents|{carrier}|{}", req.status);
        let after = paging::decode(&filters, &req.page_token)?;
        let page = self
            .ctx
            .store
            .list_consents(&carrier, status, after, size)
            .await
            .map_err(store_status)?;
        let next_page_token = paging::next_token(&page, &filters, |c| &c.tenant_id);
        Ok(crate::audit::respond(pb::ListConsentsResponse {
            consents: page.items.into_iter().map(convert::consent).collect(),
            next_page_token,
            total_size: page.total,
        }))
    }
}

//! `PlatformService`: what the calling platform tells OCX (platform keys only).

use ocx_api::pb;
use ocx_api::pb::platform_service_server::PlatformService;
use ocx_api::validate;
use tonic::{Request, Response, Status};

use super::Ctx;
use crate::auth;
use crate::convert;
use crate::domain::{AssignRequest, ConsentGrant, ConsentStatus};
use crate::error::{Violations, store_status};

/// The platform service.
pub struct Platform {
    /// Shared state.
    pub ctx: Ctx,
}

#[tonic::async_trait]
impl PlatformService for Platform {
    #[tracing::instrument(skip_all, fields(rpc = "GrantConsent"))]
    async fn grant_consent(
        &self,
        request: Request<pb::GrantConsentRequest>,
    ) -> Result<Response<pb::GrantConsentResponse>, Status> {
        auth::principal(&request)?.require_platform()?;
        let req = request.into_inner();
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
        let consent = self
            .ctx
            .store
            .grant_consent(grant)
            .await
            .map_err(store_status)?;
        tracing::info!(carrier = %consent.carrier_id, tenant = %consent.tenant_id, status = ?consent.status, "consent granted");
        Ok(Response::new(pb::GrantConsentResponse {
            consent: Some(convert::consent(consent)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RevokeConsent"))]
    async fn revoke_consent(
        &self,
        request: Request<pb::RevokeConsentRequest>,
    ) -> Result<Response<pb::RevokeConsentResponse>, Status> {
        auth::principal(&request)?.require_platform()?;
        let req = request.into_inner();
        let mut v = Violations::new();
        v.check("carrier_id", validate::carrier_id(&req.carrier_id));
        let tenant_id = convert::tenant_id(&req.tenant_id, "tenant_id", &mut v);
        v.into_result()?;
        let consent = self
            .ctx
            .store
            .revoke_consent(&req.carrier_id, &tenant_id)
            .await
            .map_err(store_status)?;
        tracing::info!(carrier = %consent.carrier_id, tenant = %consent.tenant_id, "consent removed");
        Ok(Response::new(pb::RevokeConsentResponse {
            consent: Some(convert::consent(consent)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "AssignNumber"))]
    async fn assign_number(
        &self,
        request: Request<pb::AssignNumberRequest>,
    ) -> Result<Response<pb::AssignNumberResponse>, Status> {
        auth::principal(&request)?.require_platform()?;
        let req = request.into_inner();
        let mut v = Violations::new();
        v.check("number", validate::e164(&req.number));
        let tenant_id = convert::tenant_id(&req.tenant_id, "tenant_id", &mut v);
        let assignment_type =
            convert::assignment_type(req.assignment_type, "assignment_type", &mut v);
        v.check("sip_uri", validate::sip_uri(&req.sip_uri));
        v.check("user_id", validate::text(&req.user_id, 128));
        v.into_result()?;
        let Some(assignment_type) = assignment_type else {
            return Err(Status::internal(
                "assignment type vanished after validation",
            ));
        };
        let request = AssignRequest {
            number: req.number,
            tenant_id,
            assignment_type,
            sip_uri: req.sip_uri,
            user_id: req.user_id,
        };
        let number = self
            .ctx
            .store
            .assign_number(request)
            .await
            .map_err(store_status)?;
        tracing::info!(carrier = %number.carrier_id, version = number.version, "number assigned");
        Ok(Response::new(pb::AssignNumberResponse {
            phone_number: Some(convert::phone_number(number)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "UnassignNumber"))]
    async fn unassign_number(
        &self,
        request: Request<pb::UnassignNumberRequest>,
    ) -> Result<Response<pb::UnassignNumberResponse>, Status> {
        auth::principal(&request)?.require_platform()?;
        let req = request.into_inner();
        let mut v = Violations::new();
        v.check("number", validate::e164(&req.number));
        let tenant_id = convert::tenant_id(&req.tenant_id, "tenant_id", &mut v);
        v.into_result()?;
        let number = self
            .ctx
            .store
            .unassign_number(&req.number, &tenant_id)
            .await
            .map_err(store_status)?;
        tracing::info!(carrier = %number.carrier_id, version = number.version, "number unassigned");
        Ok(Response::new(pb::UnassignNumberResponse {
            phone_number: Some(convert::phone_number(number)),
        }))
    }
}

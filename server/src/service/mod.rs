//! The gRPC services. Handlers are thin: scope the call to the caller's carrier (where it is
//! carrier-scoped), validate the whole request (every violation at once), call the store,
//! convert back. Which keys may call a method at all is checked before a handler runs, by the
//! gate, from [`crate::rpcs::RPCS`].
//!
//! ## Layout
//! - [`admin`]: `AdminService` (carriers, API keys).
//! - [`call_records`]: `CallRecordService` (get, list, feed).
//! - [`consent`]: `ConsentService` (a carrier's consents).
//! - [`durations`]: `CallDurationService` (reports, uploads, listing).
//! - [`numbers`]: `NumberService` (upload, release, get, list, watch).
//! - [`platform`]: `PlatformService` (consents, assignments, call-record ingestion, usage).
//! - [`reconciliation`]: `ReconciliationService` (summary, discrepancies).
//!
//! Below the services, shared by them: `batch` (the partial-accept batch write: validate each
//! item, store the valid ones together, answer every item in order) and `stream` (the plumbing
//! of the feeds and of the upload streams: cursors, sending with backpressure, revoked keys,
//! waiting for the next commit, the in-order acknowledgement pipeline).

pub mod admin;
mod batch;
pub mod call_records;
pub mod consent;
pub mod durations;
pub mod numbers;
pub mod platform;
pub mod reconciliation;
mod stream;

use std::sync::Arc;

use tokio::sync::watch;
use tonic::Status;

use crate::auth::{KeyCache, Principal};
use crate::error::{Violations, store_status};
use crate::store::Store;

/// What every service shares.
#[derive(Clone)]
pub struct Ctx {
    /// The storage backend.
    pub store: Arc<dyn Store>,
    /// Active API keys (the admin service keeps it in step with the store).
    pub keys: Arc<KeyCache>,
    /// Becomes `true` when the server is shutting down, so long-lived streams end promptly
    /// (with UNAVAILABLE, which the SDK treats as "reconnect") instead of holding shutdown up.
    pub shutdown: watch::Receiver<bool>,
    /// Batch and page limits.
    pub limits: crate::limits::Limits,
    /// The audit trail (listings flush it first).
    pub audit: crate::audit::AuditLog,
    /// Rows stored, for the metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Ctx {
    /// The carrier a carrier-scoped call acts for. A carrier key acts for its own carrier:
    /// `requested` may be empty or its own id, another id is PERMISSION_DENIED. A platform key
    /// must name an existing carrier.
    pub async fn carrier_scope(
        &self,
        principal: &Principal,
        requested: &str,
    ) -> Result<String, Status> {
        match principal {
            Principal::Carrier { carrier_id, .. } => {
                if requested.is_empty() || requested == carrier_id {
                    Ok(carrier_id.clone())
                } else {
                    Err(Status::permission_denied(
                        "a carrier key may act only for its own carrier; leave carrier_id empty or set it to your own id",
                    ))
                }
            }
            Principal::Platform { .. } => {
                let mut v = Violations::new();
                if requested.is_empty() {
                    v.add(
                        "carrier_id",
                        "a platform key must name the carrier in carrier_id",
                    );
                } else {
                    v.check("carrier_id", ocx_api::validate::carrier_id(requested));
                }
                v.into_result()?;
                self.store
                    .get_carrier(requested)
                    .await
                    .map_err(store_status)?
                    .ok_or_else(|| Status::not_found(format!("carrier {requested:?} not found")))?;
                Ok(requested.to_owned())
            }
        }
    }
}

/// The request key of a write (AIP-155), taking the `request_id` out of `request` so that the
/// fingerprint covers what the request asks for and nothing else; `None` without one. A
/// `request_id` that is not a UUID is INVALID_ARGUMENT.
pub(crate) fn request_key<M: prost::Message + ocx_api::RequestId>(
    principal: &Principal,
    rpc: &'static str,
    request: &mut M,
) -> Result<Option<crate::store::request::RequestKey>, Status> {
    use sha2::{Digest, Sha256};
    let request_id = std::mem::take(request.request_id_mut());
    if request_id.is_empty() {
        return Ok(None);
    }
    if !ocx_api::validate::is_guid(&request_id) {
        return Err(crate::error::invalid(
            "request_id",
            "request_id must be a UUID such as 4f3c1a2b-8d9e-4f60-a1b2-c3d4e5f60718, or empty",
        ));
    }
    let mut hash = Sha256::new();
    hash.update(rpc.as_bytes());
    hash.update([0]);
    hash.update(request.encode_to_vec());
    Ok(Some(crate::store::request::RequestKey {
        key_id: principal.key_id().to_owned(),
        request_id: request_id.to_ascii_lowercase(),
        rpc,
        fingerprint: hash.finalize().into(),
    }))
}

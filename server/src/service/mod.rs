//! The gRPC services. Handlers are thin: authorise, validate the whole request (every
//! violation at once), call the store, convert back.
//!
//! ## Layout
//! - [`admin`]: `AdminService` (carriers, API keys).
//! - [`call_records`]: `CallRecordService` (get, list, feed).
//! - [`consent`]: `ConsentService` (a carrier's consents).
//! - [`numbers`]: `NumberService` (upload, release, get, list, watch).
//! - [`platform`]: `PlatformService` (consents, assignments, call-record ingestion).

pub mod admin;
pub mod call_records;
pub mod consent;
pub mod numbers;
pub mod platform;

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

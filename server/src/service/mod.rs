//! The gRPC services. Handlers are thin: authorise, validate the whole request (every
//! violation at once), call the store, convert back.
//!
//! ## Layout
//! - [`admin`]: `AdminService` (carriers, API keys).
//! - [`call_records`]: `CallRecordService` (get, list, feed).
//! - [`consent`]: `ConsentService` (a carrier's consents).
//! - [`durations`]: `CallDurationService` (reports, uploads, listing).
//! - [`numbers`]: `NumberService` (upload, release, get, list, watch).
//! - [`platform`]: `PlatformService` (consents, assignments, call-record ingestion, usage).
//! - [`reconciliation`]: `ReconciliationService` (summary, discrepancies).

pub mod admin;
pub mod call_records;
pub mod consent;
pub mod durations;
pub mod numbers;
pub mod platform;
pub mod reconciliation;

use std::future::Future;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

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

/// Batches of one upload stream that may be committing at once. While this many wait for their
/// commit the server stops reading the stream, so HTTP/2 flow control slows the sender.
pub const STREAM_IN_FLIGHT: usize = 8;

/// Drives one batched upload stream (call-record ingestion, duration uploads): reads batches
/// while fewer than [`STREAM_IN_FLIGHT`] are being handled, and sends each acknowledgement
/// strictly in batch order once `handle` (validation and a durable commit) finishes. An error
/// from `handle` is sent and ends the stream. On shutdown it stops reading, finishes the batches
/// it has, and ends the stream with UNAVAILABLE.
pub(crate) async fn pipeline<Req, Resp, F, Fut>(
    mut inbound: Streaming<Req>,
    tx: mpsc::Sender<Result<Resp, Status>>,
    mut shutdown: watch::Receiver<bool>,
    handle: F,
) where
    F: Fn(Req) -> Fut,
    Fut: Future<Output = Result<Resp, Status>>,
{
    let mut in_flight = FuturesOrdered::new();
    let mut reading = true;
    let mut ending: Option<Status> = None;
    loop {
        tokio::select! {
            biased;
            Some(ack) = in_flight.next(), if !in_flight.is_empty() => {
                let ack: Result<Resp, Status> = ack;
                let stop = ack.is_err();
                if tx.send(ack).await.is_err() || stop {
                    return;
                }
            }
            message = inbound.message(), if reading && in_flight.len() < STREAM_IN_FLIGHT => match message {
                Ok(Some(batch)) => in_flight.push_back(handle(batch)),
                Ok(None) => reading = false,
                Err(status) => {
                    // A message the server cannot take (over the size limit, undecodable) or a
                    // broken connection: the batches already read are still answered, then the
                    // stream ends with this status (a client that went away never reads it).
                    tracing::debug!(error = %status, "upload stream broke");
                    reading = false;
                    ending = Some(status);
                }
            },
            () = numbers::stopping(&mut shutdown), if reading => {
                reading = false;
                ending = Some(Status::unavailable("the server is shutting down; send unacknowledged batches again"));
            }
            else => break,
        }
    }
    if let Some(status) = ending {
        let _ = tx.send(Err(status)).await;
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

//! Request ids (AIP-155): what makes a retried write answer like the first attempt.
//!
//! A handler that received a `request_id` runs its one store write inside [`with_request`].
//! The store takes the [`RequestKey`] from there ([`take_request`]) and, in the same
//! transaction as the write, looks the key up:
//! - if it has a record for it, the write is not done again and the recorded outcome is
//!   returned, so the handler answers exactly as it did the first time;
//! - if the record is for a different request, the answer is ALREADY_EXISTS;
//! - otherwise the write runs and its outcome is recorded beside it.
//!
//! The record and the write commit together, so a crash can never leave one without the other.
//! Concurrent retries of one id get one answer on both backends: on SQLite the single writer
//! thread serialises them (the first one writes, the others find its record); on PostgreSQL
//! the record's primary key makes all but one transaction fail, and their reruns find it
//! (`postgres::requests`). The records are kept for [`REQUEST_ID_DAYS`] days.

use std::cell::RefCell;
use std::future::Future;

/// How long request ids are honoured (the API promises at least 24 hours).
pub const REQUEST_ID_DAYS: i64 = 2;

/// One request id, scoped to the API key that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    /// The API key's id (never the secret).
    pub key_id: String,
    /// The caller's UUID, lower-case.
    pub request_id: String,
    /// The RPC, e.g. `UploadNumbers`.
    pub rpc: &'static str,
    /// SHA-256 of the RPC name and the request without its request id.
    pub fingerprint: [u8; 32],
}

tokio::task_local! {
    static REQUEST: RefCell<Option<RequestKey>>;
}

/// Runs `write` with `key` available to the store's next write in this task.
pub async fn with_request<F: Future>(key: Option<RequestKey>, write: F) -> F::Output {
    REQUEST.scope(RefCell::new(key), write).await
}

/// The request key of the write being made, if its caller gave one; taken, so that only one
/// write per request uses it.
pub fn take_request() -> Option<RequestKey> {
    REQUEST
        .try_with(|key| key.borrow_mut().take())
        .ok()
        .flatten()
}

/// The oldest record time still honoured at `now`.
pub fn window_start(now: i64) -> i64 {
    now - REQUEST_ID_DAYS * crate::domain::DAY_US
}

/// Reads a recorded outcome for `key`, found under the same key id and request id with `rpc`
/// and `fingerprint`: the outcome if the request is the same, ALREADY_EXISTS if the id was used
/// for a different request.
pub fn recorded<T: serde::de::DeserializeOwned>(
    key: &RequestKey,
    rpc: &str,
    fingerprint: &[u8],
    outcome: &str,
) -> Result<T, super::StoreError> {
    if rpc == key.rpc && fingerprint == key.fingerprint {
        serde_json::from_str(outcome).map_err(|e| {
            super::StoreError::Internal(format!("a recorded outcome does not read: {e}"))
        })
    } else {
        Err(crate::domain::Refusal::RequestIdReused {
            request_id: key.request_id.clone(),
            rpc: rpc.to_owned(),
        }
        .into())
    }
}

//! The storage interface: what the services need from a database, in domain types.
//!
//! One trait, [`Store`], with two backends: [`sqlite`] (the embedded default) and [`postgres`]
//! (shared by several replicas); the services never know which. Every backend passes one
//! conformance suite (`server/tests/it/conformance`), written against this trait alone.

pub mod histogram;
pub mod media;
pub mod pairing;
pub mod postgres;
pub mod quality;
pub mod repair;
pub mod request;
pub mod retention;
pub mod rows;
pub mod rules;
pub mod sql;
pub mod sqlite;
pub mod state;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::domain::{
    ApiKey, AssignRequest, CallRecord, CallRecordFilter, Carrier, Consent, ConsentGrant,
    ConsentStatus, IngestOutcome, ItemOutcome, Micros, NumberEvent, NumberFilter, NumberUpload,
    Page, PhoneNumber,
};
use crate::domain::{AuditEvent, AuditFilter, EraseCounts, PurgeCounts, RetentionPolicy};
use crate::domain::{
    CallDuration, Discrepancy, DiscrepancyCursor, DiscrepancyKind, DurationOutcome, DurationReport,
    ReconciliationChange, ReconciliationPeriod, ReconciliationSummary, UsageGrouping, UsageRow,
};

/// A page of items each with the key that a listing resumes after, and whether more follow.
pub type KeyedPage<T, K> = (Vec<(T, K)>, bool);

/// Where a call-record listing resumes: the sort key (start time, insertion id) of the last
/// record served.
pub type CallRecordCursor = (Micros, i64);

impl From<quality::TooManyRows> for StoreError {
    fn from(e: quality::TooManyRows) -> StoreError {
        StoreError::InvalidArgument(e.to_string())
    }
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store refused: a thing is missing or taken, or the current state forbids the
    /// write. Facts, not words: the error layer words it.
    #[error("{0}")]
    Refused(crate::domain::Refusal),
    /// A value the database cannot hold (e.g. a NUL character in a text field) that
    /// validation let through.
    #[error("{0}")]
    InvalidArgument(String),
    /// The store cannot serve now (writer stopped, disk full, read-only); retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The query was interrupted because its caller stopped waiting (deadline, disconnect).
    #[error("{0}")]
    Cancelled(String),
    /// A bug or an unexpected database error; logged, never shown to clients.
    #[error("internal store error: {0}")]
    Internal(String),
}

impl From<crate::domain::Refusal> for StoreError {
    fn from(r: crate::domain::Refusal) -> Self {
        StoreError::Refused(r)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::Unavailable(
                "the server's storage is full; nothing of this request was stored: retry later"
                    .into(),
            ),
            Some(ErrorCode::ReadOnly | ErrorCode::SystemIoFailure | ErrorCode::CannotOpen) => {
                StoreError::Unavailable(format!(
                    "the server cannot write to its storage ({e}); nothing of this request was stored: retry later"
                ))
            }
            Some(ErrorCode::OperationInterrupted) => StoreError::Cancelled(
                "the query was interrupted: its caller stopped waiting".into(),
            ),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                StoreError::Unavailable(format!("the database is busy: {e}"))
            }
            _ => StoreError::Internal(e.to_string()),
        }
    }
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// Everything the services persist or read. Implementations must make every acknowledged write
/// durable before returning, and must keep per-carrier number-event sequences gapless.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Registers a carrier; refused (`CarrierExists`) if the id is taken.
    async fn create_carrier(&self, carrier: Carrier) -> StoreResult<Carrier>;
    /// One carrier, if it exists.
    async fn get_carrier(&self, carrier_id: &str) -> StoreResult<Option<Carrier>>;
    /// Carriers ordered by id, after `after`.
    async fn list_carriers(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Page<Carrier>>;

    /// Stores a new key; refused (`CarrierNotFound`) if its carrier does not exist.
    async fn insert_api_key(&self, key: ApiKey) -> StoreResult<ApiKey>;
    /// Marks a key revoked (idempotent); refused (`KeyNotFound`) if no such key.
    async fn revoke_api_key(&self, key_id: &str) -> StoreResult<ApiKey>;
    /// Keys ordered by id, optionally of one carrier.
    async fn list_api_keys(
        &self,
        carrier_id: Option<String>,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Page<ApiKey>>;
    /// Every key that is not revoked (to fill the authentication cache).
    async fn active_api_keys(&self) -> StoreResult<Vec<ApiKey>>;
    /// Persists last-use times (key id, time); a time never moves backwards.
    async fn record_key_use(&self, uses: Vec<(String, Micros)>) -> StoreResult<()>;

    /// Creates or changes a consent; refused (`CarrierNotFound`) if the carrier does not exist.
    async fn grant_consent(&self, grant: ConsentGrant) -> StoreResult<Consent>;
    /// Marks a consent removed; refused (`ConsentNotFound`) if there never was one.
    async fn revoke_consent(&self, carrier_id: &str, tenant_id: &str) -> StoreResult<Consent>;
    /// A carrier's consents ordered by tenant id.
    async fn list_consents(
        &self,
        carrier_id: &str,
        status: Option<ConsentStatus>,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Page<Consent>>;

    /// Provisions numbers for a carrier, each item independently, in one durable commit.
    /// Returns one outcome per item, in order.
    async fn upload_numbers(
        &self,
        carrier_id: &str,
        items: Vec<NumberUpload>,
    ) -> StoreResult<Vec<ItemOutcome>>;
    /// Releases a carrier's numbers, each item independently. `Updated` = released now,
    /// `Unchanged` = was already released.
    async fn release_numbers(
        &self,
        carrier_id: &str,
        numbers: Vec<String>,
    ) -> StoreResult<Vec<ItemOutcome>>;
    /// A carrier's number; `None` if it does not exist or belongs to another carrier.
    async fn get_number(&self, carrier_id: &str, number: &str) -> StoreResult<Option<PhoneNumber>>;
    /// A carrier's numbers ordered by number, after `after`.
    async fn list_numbers(
        &self,
        carrier_id: &str,
        filter: NumberFilter,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Page<PhoneNumber>>;
    /// Assigns a number (platform); refused (`NumberNotProvisioned`, `NumberReleased`,
    /// `NumberNotInTenant`) as the proto says.
    async fn assign_number(&self, request: AssignRequest) -> StoreResult<PhoneNumber>;
    /// Unassigns a number (platform).
    async fn unassign_number(&self, number: &str, tenant_id: &str) -> StoreResult<PhoneNumber>;

    /// The carrier's last number-event sequence (0 if none).
    async fn number_event_head(&self, carrier_id: &str) -> StoreResult<i64>;
    /// The carrier's last call-record feed sequence (0 if none).
    async fn call_record_head(&self, carrier_id: &str) -> StoreResult<i64>;
    /// A carrier's events with `sequence > after`, in order, at most `limit`.
    async fn number_events_after(
        &self,
        carrier_id: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<NumberEvent>>;
    /// A receiver whose value changes after every commit that appended number events. Watchers
    /// mark it seen, read what is new from the store, then wait for the next change: the store
    /// stays the source of truth, the channel is only a wake-up.
    fn number_event_signal(&self) -> watch::Receiver<u64>;

    /// Ingests validated records in one durable commit, each independently: ownership (the
    /// named carrier, else the owner of the tenant-side number), then create / revise /
    /// unchanged / stale by `call_id` and `version`. One outcome per record, in order.
    async fn ingest_call_records(
        &self,
        records: Vec<CallRecord>,
    ) -> StoreResult<Vec<IngestOutcome>>;
    /// A carrier's record; `None` if missing or another carrier's.
    async fn get_call_record(
        &self,
        carrier_id: &str,
        call_id: &str,
    ) -> StoreResult<Option<CallRecord>>;
    /// A carrier's records ordered by (start time, insertion), after `after`, at most `limit`;
    /// `more` says whether records follow. Each record comes with its cursor.
    async fn list_call_records(
        &self,
        carrier_id: &str,
        filter: CallRecordFilter,
        after: Option<CallRecordCursor>,
        limit: usize,
    ) -> StoreResult<KeyedPage<CallRecord, CallRecordCursor>>;
    /// A carrier's feed after `after` (by `feed_sequence`), at most `limit`.
    async fn call_records_after(
        &self,
        carrier_id: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<CallRecord>>;
    /// Changes after every commit that created or revised call records (a wake-up, as for
    /// number events).
    fn call_record_signal(&self) -> watch::Receiver<u64>;
    /// Changes after API keys were created or revoked by another process sharing the database
    /// (another replica), so the key cache reloads. A single-process store never changes it:
    /// the default is a closed channel.
    fn api_key_signal(&self) -> watch::Receiver<u64> {
        watch::channel(0).1
    }

    /// Stores a carrier's validated duration reports in one durable commit, each independently
    /// (new, duplicate, or correction with the old content kept in history).
    async fn report_call_durations(
        &self,
        carrier_id: &str,
        reports: Vec<DurationReport>,
    ) -> StoreResult<Vec<DurationOutcome>>;
    /// A carrier's reports by (start time, arrival) in [from, to), after `after`.
    async fn list_call_durations(
        &self,
        carrier_id: &str,
        window: (Option<Micros>, Option<Micros>),
        after: Option<(Micros, i64)>,
        limit: usize,
    ) -> StoreResult<KeyedPage<CallDuration, (Micros, i64)>>;
    /// The reconciliation summary of a period, computed in the database.
    async fn reconciliation_summary(
        &self,
        period: ReconciliationPeriod,
    ) -> StoreResult<ReconciliationSummary>;
    /// A page of a period's discrepancies by (start time, kind, row).
    async fn list_discrepancies(
        &self,
        period: ReconciliationPeriod,
        kind: Option<DiscrepancyKind>,
        after: Option<DiscrepancyCursor>,
        limit: usize,
    ) -> StoreResult<KeyedPage<Discrepancy, DiscrepancyCursor>>;
    /// The carrier's last reconciliation feed position (0 if none), and its floor: the last
    /// position of a removal that retention forgot (a follower behind it must replay from 0).
    async fn reconciliation_head(&self, carrier_id: &str) -> StoreResult<(i64, i64)>;
    /// A carrier's reconciliation changes with `sequence > after`, in order, at most `limit`.
    async fn reconciliation_changes_after(
        &self,
        carrier_id: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<ReconciliationChange>>;
    /// Changes after every commit that changed the pairing state (a wake-up, as for number
    /// events).
    fn reconciliation_signal(&self) -> watch::Receiver<u64>;
    /// A tenant's usage in [start, end), grouped.
    async fn tenant_usage(
        &self,
        tenant_id: &str,
        window: (Micros, Micros),
        grouping: UsageGrouping,
    ) -> StoreResult<Vec<UsageRow>>;

    /// A quality summary (GetQualitySummary), from the aggregates kept at ingest.
    async fn quality_summary(
        &self,
        query: crate::domain::QualityQuery,
    ) -> StoreResult<Vec<quality::QualityRow>>;

    /// Bytes the store takes on disk, if it can tell (for metrics).
    fn size_bytes(&self) -> Option<u64> {
        None
    }

    // ----- privacy: retention, erasure, audit -----

    /// The retention policy in force (the defaults until one is set).
    async fn retention_policy(&self) -> StoreResult<RetentionPolicy>;
    /// Replaces the retention policy (already validated); returns it with its update time.
    async fn set_retention_policy(&self, policy: RetentionPolicy) -> StoreResult<RetentionPolicy>;
    /// Deletes what the policy no longer allows as of `now`, overwriting the freed space and
    /// truncating the write-ahead log when anything was deleted.
    async fn purge_expired(&self, now: Micros) -> StoreResult<PurgeCounts>;
    /// Erases a tenant's personal data (see `AdminService.EraseTenantData`), overwriting the
    /// freed space and truncating the write-ahead log; assigned numbers are unassigned with an
    /// event each.
    async fn erase_tenant(&self, tenant_id: &str) -> StoreResult<EraseCounts>;
    /// Appends audit events (ids are assigned in order).
    async fn append_audit_events(&self, events: Vec<AuditEvent>) -> StoreResult<()>;
    /// Audit events matching `filter`, newest first, with ids below `before`; `limit` at most,
    /// and whether more follow.
    async fn list_audit_events(
        &self,
        filter: AuditFilter,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<(Vec<AuditEvent>, bool)>;
}

#[cfg(test)]
mod tests {
    use super::StoreError;

    fn sqlite(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn storage_faults_are_unavailable_with_a_reason() {
        let cases = [
            (rusqlite::ffi::SQLITE_FULL, "storage is full"),
            (rusqlite::ffi::SQLITE_READONLY, "cannot write"),
            (rusqlite::ffi::SQLITE_IOERR_WRITE, "cannot write"),
            (rusqlite::ffi::SQLITE_CANTOPEN, "cannot write"),
        ];
        for (code, says) in cases {
            match StoreError::from(sqlite(code)) {
                StoreError::Unavailable(message) => {
                    assert!(message.contains(says), "{code}: {message}");
                    assert!(message.contains("retry"), "{code}: {message}");
                }
                other => panic!("{code}: {other:?}"),
            }
        }
        assert!(matches!(
            StoreError::from(sqlite(rusqlite::ffi::SQLITE_BUSY)),
            StoreError::Unavailable(_)
        ));
    }
}

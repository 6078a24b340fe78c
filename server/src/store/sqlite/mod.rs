//! The embedded SQLite backend: one file in WAL mode, a writer thread, a reader pool.
//!
//! ## Layout
//! - `actor`: the writer thread (group commit) and the reader pool.
//! - `baseline` (feature `bench` only): plain rusqlite inserts into the same schema, the limit
//!   `ocx-bench` measures ingest against.
//! - `schema`: migrations; `query`: queries read by the shared decoders (`store::rows`).
//! - `carriers`: carriers, API keys, consents.
//! - `calls`: call records (ingest, list, feed).
//! - `durations`: duration reports.
//! - `reconcile`: reconciliation and usage (set-based SQL).
//! - `numbers`: the number and number-event statements (the busiest part).
//! - `privacy`: retention policy and purges, tenant erasure, the audit trail.
//! - `requests`: request-id records, written in the write's transaction.
//! - [`backup`]: the online backup (`ocx-server backup`).
//! - this module: [`SqliteStore`], the [`Store`] implementation.

mod actor;
pub mod backup;
#[cfg(any(test, feature = "bench"))]
pub mod baseline;
mod calls;
mod carriers;
mod durations;
mod numbers;
pub mod pairing;
mod privacy;
mod quality;
mod query;
mod reconcile;
mod requests;
mod schema;

use std::path::Path;

use async_trait::async_trait;
use tokio::sync::watch;

pub use self::actor::Durability;
use self::actor::{Lane, Readers, Touched, Writer};
pub use self::reconcile::summary_sql;
use crate::domain::{
    ApiKey, AssignRequest, CallDuration, CallRecord, CallRecordFilter, Carrier, Consent,
    ConsentGrant, ConsentStatus, Discrepancy, DiscrepancyCursor, DiscrepancyKind, DurationOutcome,
    DurationReport, IngestOutcome, ItemOutcome, Micros, NumberEvent, NumberFilter, NumberUpload,
    Page, PhoneNumber, ReconciliationChange, ReconciliationPeriod, ReconciliationSummary,
    UsageGrouping, UsageRow,
};
use crate::domain::{AuditEvent, AuditFilter, EraseCounts, PurgeCounts, RetentionPolicy};
use crate::store::rows::page;
use crate::store::{CallRecordCursor, KeyedPage, Store, StoreError, StoreResult};

/// The SQLite store. Cheap to clone: clones share the writer and the readers.
#[derive(Clone)]
pub struct SqliteStore {
    /// The writer thread.
    writer: Writer,
    /// Read-only connections.
    readers: Readers,
    /// The database file.
    path: std::path::PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it to the current schema.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        SqliteStore::open_with(path, Durability::Full)
    }

    /// [`SqliteStore::open`] with another durability: for measuring its cost, not for serving.
    pub fn open_with(path: &Path, durability: Durability) -> StoreResult<SqliteStore> {
        let mut conn = actor::open_writer(path, durability)?;
        schema::migrations()
            .to_latest(&mut conn)
            .map_err(|e| StoreError::Internal(format!("migrating {}: {e}", path.display())))?;
        let writer = Writer::start(conn)
            .map_err(|e| StoreError::Internal(format!("starting the writer thread: {e}")))?;
        Ok(SqliteStore {
            writer,
            readers: Readers::new(path)
                .map_err(|e| StoreError::Internal(format!("starting the reader threads: {e}")))?,
            path: path.to_path_buf(),
        })
    }
}

impl SqliteStore {
    /// [`Writer::write`] for a write a caller may retry: with a request id in scope (see
    /// `store::request`), a retry returns the recorded outcome and `work` does not run again.
    async fn write_once<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
        F: FnMut(&rusqlite::Connection) -> StoreResult<(T, Touched)> + Send + 'static,
    {
        match crate::store::request::take_request() {
            None => self.writer.write(work).await,
            Some(key) => {
                let mut work = work;
                self.writer
                    .write(move |conn| requests::once(conn, &key, &mut work))
                    .await
            }
        }
    }

    /// A receiver that changes each time a read query is interrupted because its caller
    /// stopped waiting (a deadline passed, the client went away).
    pub fn interrupted_reads(&self) -> watch::Receiver<u64> {
        self.readers.interrupted()
    }

    /// A quality summary recomputed from the records of its period themselves, not read from
    /// the aggregates: the reference they are held to (`ocx-bench quality`).
    pub async fn reference_quality(
        &self,
        q: crate::domain::QualityQuery,
    ) -> StoreResult<Vec<crate::store::quality::QualityRow>> {
        self.readers
            .read_in(Lane::Long, move |conn| calls::quality_reference(conn, &q))
            .await
    }

    /// The summary by the set-based rules, computed from the records and reports themselves:
    /// the reference the pairing state is held to (tests, `ocx-bench reconcile`).
    pub async fn reference_summary(
        &self,
        p: ReconciliationPeriod,
    ) -> StoreResult<ReconciliationSummary> {
        self.summary_by(reconcile::reference_summary, p).await
    }

    /// A page of discrepancies by the set-based rules: the reference for
    /// [`Store::list_discrepancies`].
    pub async fn reference_discrepancies(
        &self,
        p: ReconciliationPeriod,
        kind: Option<DiscrepancyKind>,
        after: Option<DiscrepancyCursor>,
        limit: usize,
    ) -> StoreResult<KeyedPage<Discrepancy, DiscrepancyCursor>> {
        self.discrepancies_by(reconcile::reference_discrepancies, p, kind, after, limit)
            .await
    }

    /// Every record and report of `carrier_id` as pairing reads them (for the tests that hold
    /// the state to a pairing of every fact).
    pub async fn pairing_facts(
        &self,
        carrier_id: &str,
    ) -> StoreResult<(
        Vec<crate::store::pairing::RecordFact>,
        Vec<crate::store::pairing::ReportFact>,
    )> {
        let carrier_id = carrier_id.to_owned();
        self.readers
            .read(move |conn| pairing::facts(conn, &carrier_id))
            .await
    }

    /// Every item of `carrier_id`'s pairing state (for the tests that hold the state to a
    /// pairing of every fact).
    pub async fn pairing_items(
        &self,
        carrier_id: &str,
    ) -> StoreResult<Vec<crate::store::pairing::Item>> {
        let carrier_id = carrier_id.to_owned();
        self.readers
            .read(move |conn| pairing::items(conn, &carrier_id))
            .await
    }

    /// A tenant's usage by the set-based rules: the reference for [`Store::tenant_usage`].
    pub async fn reference_usage(
        &self,
        tenant_id: &str,
        window: (Micros, Micros),
        grouping: UsageGrouping,
    ) -> StoreResult<Vec<UsageRow>> {
        self.usage_by(reconcile::reference_usage, tenant_id, window, grouping)
            .await
    }

    /// A tenant's usage by `query` (the state's or the reference's), on the long lane.
    async fn usage_by(
        &self,
        query: reconcile::UsageQuery,
        tenant_id: &str,
        window: (Micros, Micros),
        grouping: UsageGrouping,
    ) -> StoreResult<Vec<UsageRow>> {
        let tenant_id = tenant_id.to_owned();
        self.readers
            .read_in(Lane::Long, move |conn| {
                query(conn, &tenant_id, window.0, window.1, grouping)
            })
            .await
    }

    /// A summary by `query` (the state's or the reference's), on the long lane.
    async fn summary_by(
        &self,
        query: reconcile::SummaryQuery,
        p: ReconciliationPeriod,
    ) -> StoreResult<ReconciliationSummary> {
        self.readers
            .read_in(Lane::Long, move |conn| {
                query(conn, &p.carrier_id, p.start, p.end, p.tolerance_us)
            })
            .await
    }

    /// A discrepancy page by `query` (the state's or the reference's), on the long lane.
    async fn discrepancies_by(
        &self,
        query: reconcile::DiscrepancyQuery,
        p: ReconciliationPeriod,
        kind: Option<DiscrepancyKind>,
        after: Option<DiscrepancyCursor>,
        limit: usize,
    ) -> StoreResult<KeyedPage<Discrepancy, DiscrepancyCursor>> {
        self.readers
            .read_in(Lane::Long, move |conn| {
                query(
                    conn,
                    &p.carrier_id,
                    p.start,
                    p.end,
                    p.tolerance_us,
                    kind,
                    after,
                    limit,
                )
            })
            .await
    }
}

/// Writes with nothing to announce.
fn quiet<T>(value: T) -> StoreResult<(T, Touched)> {
    Ok((value, Touched::default()))
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_carrier(&self, carrier: Carrier) -> StoreResult<Carrier> {
        self.write_once(move |conn| quiet(carriers::create(conn, carrier.clone())?))
            .await
    }

    async fn get_carrier(&self, carrier_id: &str) -> StoreResult<Option<Carrier>> {
        let carrier_id = carrier_id.to_owned();
        self.readers
            .read(move |conn| carriers::get(conn, &carrier_id))
            .await
    }

    async fn list_carriers(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Page<Carrier>> {
        self.readers
            .read(move |conn| carriers::list(conn, after.as_deref(), limit))
            .await
    }

    async fn insert_api_key(&self, key: ApiKey) -> StoreResult<ApiKey> {
        self.write_once(move |conn| quiet(carriers::insert_key(conn, key.clone())?))
            .await
    }

    async fn revoke_api_key(&self, key_id: &str) -> StoreResult<ApiKey> {
        let key_id = key_id.to_owned();
        self.write_once(move |conn| quiet(carriers::revoke_key(conn, &key_id)?))
            .await
    }

    async fn list_api_keys(
        &self,
        carrier_id: Option<String>,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Page<ApiKey>> {
        self.readers
            .read(move |conn| {
                carriers::list_keys(conn, carrier_id.as_deref(), after.as_deref(), limit)
            })
            .await
    }

    async fn active_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        self.readers.read(carriers::active_keys).await
    }

    async fn record_key_use(&self, uses: Vec<(String, Micros)>) -> StoreResult<()> {
        self.writer
            .write(move |conn| quiet(carriers::record_key_use(conn, &uses)?))
            .await
    }

    async fn grant_consent(&self, grant: ConsentGrant) -> StoreResult<Consent> {
        self.write_once(move |conn| quiet(carriers::grant_consent(conn, &grant)?))
            .await
    }

    async fn revoke_consent(&self, carrier_id: &str, tenant_id: &str) -> StoreResult<Consent> {
        let (carrier_id, tenant_id) = (carrier_id.to_owned(), tenant_id.to_owned());
        self.write_once(move |conn| quiet(carriers::revoke_consent(conn, &carrier_id, &tenant_id)?))
            .await
    }

    async fn list_consents(
        &self,
        carrier_id: &str,
        status: Option<ConsentStatus>,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Page<Consent>> {
        let carrier_id = carrier_id.to_owned();
        self.readers
            .read(move |conn| {
                carriers::list_consents(conn, &carrier_id, status, after.as_deref(), limit)
            })
            .await
    }

    async fn upload_numbers(
        &self,
        carrier_id: &str,
        items: Vec<NumberUpload>,
    ) -> StoreResult<Vec<ItemOutcome>> {
        let carrier_id = carrier_id.to_owned();
        self.write_once(move |conn| {
            let outcomes = numbers::upload(conn, &carrier_id, &items)?;
            let changed = outcomes.iter().any(ItemOutcome::changed);
            Ok((outcomes, Touched::number_events(changed)))
        })
        .await
    }

    async fn release_numbers(
        &self,
        carrier_id: &str,
        items: Vec<String>,
    ) -> StoreResult<Vec<ItemOutcome>> {
        let carrier_id = carrier_id.to_owned();
        self.write_once(move |conn| {
            let outcomes = numbers::release(conn, &carrier_id, &items)?;
            let changed = outcomes.iter().any(ItemOutcome::changed);
            Ok((outcomes, Touched::number_events(changed)))
        })
        .await
    }

    async fn get_number(&self, carrier_id: &str, number: &str) -> StoreResult<Option<PhoneNumber>> {
        let (carrier_id, number) = (carrier_id.to_owned(), number.to_owned());
        self.readers
            .read(move |conn| numbers::own(conn, &carrier_id, &number))
            .await
    }

    async fn list_numbers(
        &self,
        carrier_id: &str,
        filter: NumberFilter,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Page<PhoneNumber>> {
        let carrier_id = carrier_id.to_owned();
        self.readers
            .read(move |conn| {
                let (items, total) =
                    numbers::list(conn, &carrier_id, &filter, after.as_deref(), limit + 1)?;
                Ok(page(items, limit, total))
            })
            .await
    }

    async fn assign_number(&self, request: AssignRequest) -> StoreResult<PhoneNumber> {
        self.write_once(move |conn| {
            let (number, changed) = numbers::assign(conn, &request)?;
            Ok((number, Touched::number_events(changed)))
        })
        .await
    }

    async fn unassign_number(&self, number: &str, tenant_id: &str) -> StoreResult<PhoneNumber> {
        let (number, tenant_id) = (number.to_owned(), tenant_id.to_owned());
        self.write_once(move |conn| {
            let (number, changed) = numbers::unassign(conn, &number, &tenant_id)?;
            Ok((number, Touched::number_events(changed)))
        })
        .await
    }

    async fn number_event_head(&self, carrier_id: &str) -> StoreResult<i64> {
        let carrier_id = carrier_id.to_owned();
        self.readers
            .read(move |conn| numbers::event_head(conn, &carrier_id))
            .await
    }

    async fn call_record_head(&self, carrier_id: &str) -> StoreResult<i64> {
        let carrier_id = carrier_id.to_owned();
        self.readers
            .read(move |conn| calls::head(conn, &carrier_id))
            .await
    }

    async fn number_events_after(
        &self,
        carrier_id: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<NumberEvent>> {
        let carrier_id = carrier_id.to_owned();
        self.readers
            .read(move |conn| numbers::events_after(conn, &carrier_id, after, limit))
            .await
    }

    fn number_event_signal(&self) -> watch::Receiver<u64> {
        self.writer.number_event_signal()
    }

    async fn ingest_call_records(
        &self,
        records: Vec<CallRecord>,
    ) -> StoreResult<Vec<IngestOutcome>> {
        self.writer
            .write(move |conn| {
                let outcomes = calls::ingest(conn, &records)?;
                let changed = outcomes.iter().any(IngestOutcome::changed);
                Ok((
                    outcomes,
                    Touched {
                        call_records: changed,
                        reconciliation: changed,
                        ..Touched::default()
                    },
                ))
            })
            .await
    }

    async fn get_call_record(
        &self,
        carrier_id: &str,
        call_id: &str,
    ) -> StoreResult<Option<CallRecord>> {
        let (carrier_id, call_id) = (carrier_id.to_owned(), call_id.to_owned());
        self.readers
            .read(move |conn| calls::get(conn, &carrier_id, &call_id))
            .await
    }

    async fn list_call_records(
        &self,
        carrier_id: &str,
        filter: CallRecordFilter,
        after: Option<CallRecordCursor>,
        limit: usize,
    ) -> StoreResult<KeyedPage<CallRecord, CallRecordCursor>> {
        let carrier_id = carrier_id.to_owned();
        self.readers
            .read(move |conn| calls::list(conn, &carrier_id, &filter, after, limit))
            .await
    }

    async fn call_records_after(
        &self,
        carrier_id: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<CallRecord>> {
        let carrier_id = carrier_id.to_owned();
        self.readers
            .read(move |conn| calls::feed(conn, &carrier_id, after, limit))
            .await
    }

    fn call_record_signal(&self) -> watch::Receiver<u64> {
        self.writer.call_record_signal()
    }

    async fn report_call_durations(
        &self,
        carrier_id: &str,
        reports: Vec<DurationReport>,
    ) -> StoreResult<Vec<DurationOutcome>> {
        let carrier_id = carrier_id.to_owned();
        self.write_once(move |conn| {
            let outcomes = durations::report(conn, &carrier_id, &reports)?;
            let changed = outcomes.iter().any(|o| *o != DurationOutcome::Unchanged);
            Ok((
                outcomes,
                Touched {
                    reconciliation: changed,
                    ..Touched::default()
                },
            ))
        })
        .await
    }

    async fn list_call_durations(
        &self,
        carrier_id: &str,
        window: (Option<Micros>, Option<Micros>),
        after: Option<(Micros, i64)>,
        limit: usize,
    ) -> StoreResult<KeyedPage<CallDuration, (Micros, i64)>> {
        let carrier_id = carrier_id.to_owned();
        self.readers
            .read(move |conn| durations::list(conn, &carrier_id, window.0, window.1, after, limit))
            .await
    }

    async fn reconciliation_summary(
        &self,
        p: ReconciliationPeriod,
    ) -> StoreResult<ReconciliationSummary> {
        self.summary_by(reconcile::summary, p).await
    }

    async fn list_discrepancies(
        &self,
        p: ReconciliationPeriod,
        kind: Option<DiscrepancyKind>,
        after: Option<DiscrepancyCursor>,
        limit: usize,
    ) -> StoreResult<KeyedPage<Discrepancy, DiscrepancyCursor>> {
        self.discrepancies_by(reconcile::discrepancies, p, kind, after, limit)
            .await
    }

    async fn reconciliation_head(&self, carrier_id: &str) -> StoreResult<(i64, i64)> {
        let carrier_id = carrier_id.to_owned();
        self.readers
            .read(move |conn| pairing::heads(conn, &carrier_id))
            .await
    }

    async fn reconciliation_changes_after(
        &self,
        carrier_id: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<ReconciliationChange>> {
        let carrier_id = carrier_id.to_owned();
        self.readers
            .read(move |conn| reconcile::changes_after(conn, &carrier_id, after, limit))
            .await
    }

    fn reconciliation_signal(&self) -> watch::Receiver<u64> {
        self.writer.reconciliation_signal()
    }

    async fn tenant_usage(
        &self,
        tenant_id: &str,
        window: (Micros, Micros),
        grouping: UsageGrouping,
    ) -> StoreResult<Vec<UsageRow>> {
        self.usage_by(reconcile::usage, tenant_id, window, grouping)
            .await
    }

    async fn quality_summary(
        &self,
        query: crate::domain::QualityQuery,
    ) -> StoreResult<Vec<crate::store::quality::QualityRow>> {
        // Milliseconds for a month by day; a year by hour reads more: the long lane.
        self.readers
            .read_in(Lane::Long, move |conn| quality::summary(conn, &query))
            .await
    }

    fn size_bytes(&self) -> Option<u64> {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        Some(size(&self.path) + size(std::path::Path::new(&wal)))
    }

    async fn retention_policy(&self) -> StoreResult<RetentionPolicy> {
        self.readers.read(privacy::policy).await
    }

    async fn set_retention_policy(&self, policy: RetentionPolicy) -> StoreResult<RetentionPolicy> {
        self.write_once(move |conn| quiet(privacy::set_policy(conn, policy)?))
            .await
    }

    async fn purge_expired(&self, now: Micros) -> StoreResult<PurgeCounts> {
        // A purge spans many transactions, so its request id is looked up first and recorded
        // last rather than in one transaction with it: running a purge twice is harmless.
        let request = crate::store::request::take_request();
        if let Some(key) = request.clone() {
            let recorded = self
                .writer
                .write(move |conn| quiet(requests::replay(conn, &key)?))
                .await?;
            if let Some(counts) = recorded {
                return Ok(counts);
            }
        }
        let policy = self.retention_policy().await?;
        let mut counts = PurgeCounts::default();
        for kind in privacy::Expiring::ALL {
            let cutoff = kind.cutoff(&policy, now);
            loop {
                let (rows, secondary) = self
                    .writer
                    .write(move |conn| {
                        let deleted = privacy::purge_chunk(conn, kind, cutoff)?;
                        Ok((
                            deleted,
                            Touched {
                                checkpoint: deleted.0 > 0,
                                reconciliation: deleted.0 > 0,
                                ..Touched::default()
                            },
                        ))
                    })
                    .await?;
                crate::store::rules::count_purged(&mut counts, kind, rows, secondary);
                if rows < privacy::PURGE_CHUNK {
                    break;
                }
            }
        }
        self.writer
            .write(move |conn| {
                requests::purge(conn, now)?;
                if let Some(key) = &request {
                    requests::record(conn, key, &counts)?;
                }
                quiet(())
            })
            .await?;
        Ok(counts)
    }

    async fn erase_tenant(&self, tenant_id: &str) -> StoreResult<EraseCounts> {
        let tenant_id = tenant_id.to_owned();
        self.write_once(move |conn| {
            let (counts, appended) = privacy::erase_tenant(conn, &tenant_id)?;
            Ok((
                counts,
                Touched {
                    number_events: appended,
                    checkpoint: true,
                    reconciliation: true,
                    ..Touched::default()
                },
            ))
        })
        .await
    }

    async fn append_audit_events(&self, events: Vec<AuditEvent>) -> StoreResult<()> {
        self.writer
            .write(move |conn| quiet(privacy::append_audit(conn, &events)?))
            .await
    }

    async fn list_audit_events(
        &self,
        filter: AuditFilter,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<(Vec<AuditEvent>, bool)> {
        self.readers
            .read(move |conn| privacy::list_audit(conn, &filter, before, limit))
            .await
    }
}

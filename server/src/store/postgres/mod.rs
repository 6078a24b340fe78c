//! The PostgreSQL backend: for deployments that outgrow one machine, several stateless
//! `ocx-server` replicas share one PostgreSQL database.
//!
//! ## How it keeps the SQLite backend's guarantees with several writers
//! - **Transactions.** Every write is one transaction at READ COMMITTED, run by
//!   `transaction!`, which retries the whole transaction when PostgreSQL reports a conflict
//!   another writer won (serialization failure, deadlock, or a unique key a concurrent
//!   transaction inserted first): the retry then sees the winner's rows and answers as the
//!   SQLite backend would (`Unchanged`, a stale version, a number taken).
//! - **Gapless sequences.** A carrier's number-event and feed sequences are drawn from its row
//!   in `carrier_heads` with `UPDATE ... RETURNING`, which holds the row lock until commit: two
//!   writers for one carrier, on any replica, append one after the other, in commit order, and a
//!   rolled-back transaction gives its numbers back.
//! - **Request ids.** `write_once!` looks the id up and records the outcome in the write's
//!   transaction, so a retry on another replica finds it; two replicas racing on one id both
//!   insert the record, one of them hits the primary key, retries, and replays.
//! - **Live feeds.** A write that appends number events or call records sends a NOTIFY in its
//!   transaction (delivered on commit). Each replica holds one LISTEN connection (`listen`)
//!   and wakes its local watchers; they then read from the database, which stays the source of
//!   truth. After the listener reconnects it wakes everyone, so nothing waits on a lost
//!   notification. API-key changes are announced the same way, so a key created or revoked
//!   through one replica is known to the others at once.
//!
//! ## Layout (file for file as in the SQLite backend)
//! - this module: [`PgStore`] and its [`Store`] implementation, one call per method;
//! - `pool`: errors, the transaction macros, reads that cancel (SQLite: `actor`);
//! - `listen`: the LISTEN connection and the wake-up channels (SQLite wakes from its writer);
//! - `schema`: migrations; `query`: queries read by the shared decoders (`store::rows`);
//! - `carriers`, `numbers`, `calls`, `durations`, `reconcile`, `privacy`, `requests` (and its
//!   `write_once!`): the same areas as the SQLite backend's files of the same names.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::watch;
use tokio_postgres::NoTls;

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

#[macro_use]
mod pool;
#[macro_use]
mod requests;
mod calls;
mod carriers;
mod durations;
mod listen;
mod numbers;
pub mod pairing;
mod privacy;
mod quality;
mod query;
mod reconcile;
mod schema;

use self::listen::Signals;
use self::pool::Db;
pub use self::pool::{PgError, PgResult};
pub use self::reconcile::summary_sql;

/// Settings of the PostgreSQL backend.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections in the pool (each replica has its own pool).
    pub pool_size: usize,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions { pool_size: 16 }
    }
}

/// What clones of a [`PgStore`] share; stops the listener when the last one goes.
struct Shared {
    signals: Arc<Signals>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// The PostgreSQL store. Cheap to clone: clones share the pool and the listener.
#[derive(Clone)]
pub struct PgStore {
    /// The connection pool: transactions and reads.
    db: Db,
    /// The listener and the wake-up channels.
    shared: Arc<Shared>,
}

impl PgStore {
    /// A quality summary recomputed from the records of its period themselves, not read from
    /// the aggregates: the reference they are held to (`ocx-bench quality`).
    pub async fn reference_quality(
        &self,
        q: crate::domain::QualityQuery,
    ) -> StoreResult<Vec<crate::store::quality::QualityRow>> {
        self.db
            .read(async |db| calls::quality_reference(db, &q).await)
            .await
    }

    /// The summary by the set-based rules, computed from the records and reports themselves:
    /// the reference the pairing state is held to (tests, `ocx-bench reconcile`).
    pub async fn reference_summary(
        &self,
        p: ReconciliationPeriod,
    ) -> StoreResult<ReconciliationSummary> {
        self.db
            .read(async |db| {
                reconcile::reference_summary(db, &p.carrier_id, p.start, p.end, p.tolerance_us)
                    .await
            })
            .await
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
        self.db
            .read(async |db| reconcile::reference_discrepancies(db, &p, kind, after, limit).await)
            .await
    }

    /// A tenant's usage by the set-based rules: the reference for [`Store::tenant_usage`].
    pub async fn reference_usage(
        &self,
        tenant_id: &str,
        window: (Micros, Micros),
        grouping: UsageGrouping,
    ) -> StoreResult<Vec<UsageRow>> {
        self.db
            .read(async |db| {
                reconcile::reference_usage(db, tenant_id, window.0, window.1, grouping).await
            })
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
        self.db
            .read(async |db| pairing::facts(db, carrier_id).await)
            .await
    }

    /// Every item of `carrier_id`'s pairing state (for the tests that hold the state to a
    /// pairing of every fact).
    pub async fn pairing_items(
        &self,
        carrier_id: &str,
    ) -> StoreResult<Vec<crate::store::pairing::Item>> {
        self.db
            .read(async |db| pairing::items(db, carrier_id).await)
            .await
    }

    /// Connects to the database at `url` (`postgres://user:password@host:port/database`, with
    /// the usual libpq parameters), migrates it to the current schema, and starts listening
    /// for other replicas' changes.
    pub async fn connect(url: &str, options: PgOptions) -> StoreResult<PgStore> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Internal(format!("the database URL does not read: {e}")))?;
        config.application_name("ocx-server");
        // Per host tried: with a multi-host URL, a first host that is down without refusing
        // (its machine gone, packets dropped) costs each new connection this long before the
        // next host is tried, and the pool's wait for a connection (below) covers two.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // A dead database host is noticed in about a minute, not the system's two hours.
        config.keepalives_idle(Duration::from_secs(30));
        // A host that stops answering mid-query (its machine gone: no reset ever comes) fails
        // the connection once sent data has gone unacknowledged this long, instead of after
        // the kernel's retransmissions (about 15 minutes); the pool then drops it, and the
        // next connection finds the new primary. It bounds no query's run time: the database
        // acknowledges a query as it receives it.
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(Duration::from_secs(10));
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(15)))
            .build()
            .map_err(|e| StoreError::Internal(format!("building the connection pool: {e}")))?;
        {
            let mut client = pool.get().await.map_err(PgError::from)?;
            schema::migrate(&mut client).await?;
        }
        let signals = Arc::new(Signals::new());
        let listener = listen::start(config, Arc::clone(&signals)).await?;
        Ok(PgStore {
            db: Db(pool),
            shared: Arc::new(Shared { signals, listener }),
        })
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create_carrier(&self, carrier: Carrier) -> StoreResult<Carrier> {
        write_once!(self.db, |tx| carriers::create(tx, &carrier).await)
    }

    async fn get_carrier(&self, carrier_id: &str) -> StoreResult<Option<Carrier>> {
        self.db
            .read(async |db| carriers::get(db, carrier_id).await)
            .await
    }

    async fn list_carriers(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Page<Carrier>> {
        self.db
            .read(async |db| carriers::list(db, after.as_deref(), limit).await)
            .await
    }

    async fn insert_api_key(&self, key: ApiKey) -> StoreResult<ApiKey> {
        write_once!(self.db, |tx| carriers::insert_key(tx, &key).await)
    }

    async fn revoke_api_key(&self, key_id: &str) -> StoreResult<ApiKey> {
        write_once!(self.db, |tx| carriers::revoke_key(tx, key_id).await)
    }

    async fn list_api_keys(
        &self,
        carrier_id: Option<String>,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Page<ApiKey>> {
        self.db
            .read(async |db| {
                carriers::list_keys(db, carrier_id.as_deref(), after.as_deref(), limit).await
            })
            .await
    }

    async fn active_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        self.db
            .read(async |db| carriers::active_keys(db).await)
            .await
    }

    async fn record_key_use(&self, uses: Vec<(String, Micros)>) -> StoreResult<()> {
        transaction!(self.db, |tx| carriers::record_key_use(tx, &uses).await)
    }

    async fn grant_consent(&self, grant: ConsentGrant) -> StoreResult<Consent> {
        write_once!(self.db, |tx| carriers::grant_consent(tx, &grant).await)
    }

    async fn revoke_consent(&self, carrier_id: &str, tenant_id: &str) -> StoreResult<Consent> {
        write_once!(self.db, |tx| carriers::revoke_consent(
            tx, carrier_id, tenant_id
        )
        .await)
    }

    async fn list_consents(
        &self,
        carrier_id: &str,
        status: Option<ConsentStatus>,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Page<Consent>> {
        self.db
            .read(async |db| {
                carriers::list_consents(db, carrier_id, status, after.as_deref(), limit).await
            })
            .await
    }

    async fn upload_numbers(
        &self,
        carrier_id: &str,
        items: Vec<NumberUpload>,
    ) -> StoreResult<Vec<ItemOutcome>> {
        write_once!(self.db, |tx| numbers::upload(tx, carrier_id, &items).await)
    }

    async fn release_numbers(
        &self,
        carrier_id: &str,
        items: Vec<String>,
    ) -> StoreResult<Vec<ItemOutcome>> {
        write_once!(self.db, |tx| numbers::release(tx, carrier_id, &items).await)
    }

    async fn get_number(&self, carrier_id: &str, number: &str) -> StoreResult<Option<PhoneNumber>> {
        self.db
            .read(async |db| numbers::own(db, carrier_id, number).await)
            .await
    }

    async fn list_numbers(
        &self,
        carrier_id: &str,
        filter: NumberFilter,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Page<PhoneNumber>> {
        self.db
            .read(async |db| {
                let (items, total) =
                    numbers::list(db, carrier_id, &filter, after.as_deref(), limit + 1).await?;
                Ok(page(items, limit, total))
            })
            .await
    }

    async fn assign_number(&self, request: AssignRequest) -> StoreResult<PhoneNumber> {
        write_once!(self.db, |tx| numbers::assign(tx, &request).await)
    }

    async fn unassign_number(&self, number: &str, tenant_id: &str) -> StoreResult<PhoneNumber> {
        write_once!(self.db, |tx| numbers::unassign(tx, number, tenant_id).await)
    }

    async fn number_event_head(&self, carrier_id: &str) -> StoreResult<i64> {
        self.db
            .read(async |db| numbers::event_head(db, carrier_id).await)
            .await
    }

    async fn call_record_head(&self, carrier_id: &str) -> StoreResult<i64> {
        self.db
            .read(async |db| calls::head(db, carrier_id).await)
            .await
    }

    async fn number_events_after(
        &self,
        carrier_id: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<NumberEvent>> {
        self.db
            .read(async |db| numbers::events_after(db, carrier_id, after, limit).await)
            .await
    }

    fn number_event_signal(&self) -> watch::Receiver<u64> {
        self.shared.signals.number_events.subscribe()
    }

    async fn ingest_call_records(
        &self,
        records: Vec<CallRecord>,
    ) -> StoreResult<Vec<IngestOutcome>> {
        transaction!(self.db, |tx| calls::ingest(tx, &records).await)
    }

    async fn get_call_record(
        &self,
        carrier_id: &str,
        call_id: &str,
    ) -> StoreResult<Option<CallRecord>> {
        self.db
            .read(async |db| calls::get(db, carrier_id, call_id).await)
            .await
    }

    async fn list_call_records(
        &self,
        carrier_id: &str,
        filter: CallRecordFilter,
        after: Option<CallRecordCursor>,
        limit: usize,
    ) -> StoreResult<KeyedPage<CallRecord, CallRecordCursor>> {
        self.db
            .read(async |db| calls::list(db, carrier_id, &filter, after, limit).await)
            .await
    }

    async fn call_records_after(
        &self,
        carrier_id: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<CallRecord>> {
        self.db
            .read(async |db| calls::feed(db, carrier_id, after, limit).await)
            .await
    }

    fn call_record_signal(&self) -> watch::Receiver<u64> {
        self.shared.signals.call_records.subscribe()
    }

    fn api_key_signal(&self) -> watch::Receiver<u64> {
        self.shared.signals.api_keys.subscribe()
    }

    async fn report_call_durations(
        &self,
        carrier_id: &str,
        reports: Vec<DurationReport>,
    ) -> StoreResult<Vec<DurationOutcome>> {
        write_once!(self.db, |tx| durations::report(tx, carrier_id, &reports)
            .await)
    }

    async fn list_call_durations(
        &self,
        carrier_id: &str,
        window: (Option<Micros>, Option<Micros>),
        after: Option<(Micros, i64)>,
        limit: usize,
    ) -> StoreResult<KeyedPage<CallDuration, (Micros, i64)>> {
        self.db
            .read(async |db| {
                durations::list(db, carrier_id, window.0, window.1, after, limit).await
            })
            .await
    }

    async fn reconciliation_summary(
        &self,
        p: ReconciliationPeriod,
    ) -> StoreResult<ReconciliationSummary> {
        self.db
            .read(async |db| {
                reconcile::summary(db, &p.carrier_id, p.start, p.end, p.tolerance_us).await
            })
            .await
    }

    async fn list_discrepancies(
        &self,
        p: ReconciliationPeriod,
        kind: Option<DiscrepancyKind>,
        after: Option<DiscrepancyCursor>,
        limit: usize,
    ) -> StoreResult<KeyedPage<Discrepancy, DiscrepancyCursor>> {
        self.db
            .read(async |db| reconcile::discrepancies(db, &p, kind, after, limit).await)
            .await
    }

    async fn reconciliation_head(&self, carrier_id: &str) -> StoreResult<(i64, i64)> {
        self.db
            .read(async |db| pairing::heads(db, carrier_id).await)
            .await
    }

    async fn reconciliation_changes_after(
        &self,
        carrier_id: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<ReconciliationChange>> {
        self.db
            .read(async |db| reconcile::changes_after(db, carrier_id, after, limit).await)
            .await
    }

    fn reconciliation_signal(&self) -> watch::Receiver<u64> {
        self.shared.signals.reconciliation.subscribe()
    }

    async fn tenant_usage(
        &self,
        tenant_id: &str,
        window: (Micros, Micros),
        grouping: UsageGrouping,
    ) -> StoreResult<Vec<UsageRow>> {
        self.db
            .read(async |db| reconcile::usage(db, tenant_id, window.0, window.1, grouping).await)
            .await
    }

    async fn quality_summary(
        &self,
        query: crate::domain::QualityQuery,
    ) -> StoreResult<Vec<crate::store::quality::QualityRow>> {
        self.db
            .read(async |db| quality::summary(db, &query).await)
            .await
    }

    async fn retention_policy(&self) -> StoreResult<RetentionPolicy> {
        self.db.read(async |db| privacy::policy(db).await).await
    }

    async fn set_retention_policy(&self, policy: RetentionPolicy) -> StoreResult<RetentionPolicy> {
        write_once!(self.db, |tx| privacy::set_policy(tx, &policy).await)
    }

    async fn purge_expired(&self, now: Micros) -> StoreResult<PurgeCounts> {
        privacy::purge_expired(&self.db, now).await
    }

    async fn erase_tenant(&self, tenant_id: &str) -> StoreResult<EraseCounts> {
        write_once!(self.db, |tx| privacy::erase_tenant(tx, tenant_id).await)
    }

    async fn append_audit_events(&self, events: Vec<AuditEvent>) -> StoreResult<()> {
        transaction!(self.db, |tx| privacy::append_audit(tx, &events).await)
    }

    async fn list_audit_events(
        &self,
        filter: AuditFilter,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<(Vec<AuditEvent>, bool)> {
        self.db
            .read(async |db| privacy::list_audit(db, &filter, before, limit).await)
            .await
    }
}

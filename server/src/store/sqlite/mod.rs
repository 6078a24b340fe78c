//! The embedded SQLite backend: one file in WAL mode, a writer thread, a reader pool.
//!
//! ## Layout
//! - `actor`: the writer thread (group commit) and the reader pool.
//! - [`baseline`]: plain rusqlite inserts into the same schema, the limit `ocx-bench` measures
//!   ingest against.
//! - `schema`: migrations.
//! - `calls`: call records (ingest, list, feed).
//! - `durations`: duration reports, reconciliation and usage (set-based SQL).
//! - `numbers`: the number and number-event statements (the busiest part).
//! - `privacy`: retention policy and purges, tenant erasure, the audit trail.
//! - this module: [`SqliteStore`], the [`Store`] implementation.

mod actor;
pub mod backup;
#[cfg(any(test, feature = "bench"))]
pub mod baseline;
mod calls;
mod durations;
mod numbers;
mod privacy;
mod requests;
mod schema;

use std::path::Path;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::watch;

pub use self::actor::Durability;
use self::actor::{Lane, Readers, Touched, Writer};
pub use self::durations::summary_sql;
use crate::domain::{
    ApiKey, AssignRequest, CallDuration, CallRecord, CallRecordFilter, Carrier, Consent,
    ConsentGrant, ConsentStatus, Discrepancy, DiscrepancyCursor, DiscrepancyKind, DurationOutcome,
    DurationReport, IngestOutcome, ItemOutcome, Micros, NumberEvent, NumberFilter, NumberUpload,
    Page, PhoneNumber, ReconciliationPeriod, ReconciliationSummary, UsageGrouping, UsageRow,
    now_micros,
};
use crate::domain::{AuditEvent, AuditFilter, EraseCounts, PurgeCounts, RetentionPolicy};
use crate::store::rules::{self, page};
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
    /// A receiver that changes each time a read query is interrupted because its caller
    /// stopped waiting (a deadline passed, the client went away).
    pub fn interrupted_reads(&self) -> watch::Receiver<u64> {
        self.readers.interrupted()
    }
}

/// Writes with nothing to announce.
fn quiet<T>(value: T) -> StoreResult<(T, Touched)> {
    Ok((value, Touched::default()))
}

fn carrier_from_row(row: &Row<'_>) -> rusqlite::Result<Carrier> {
    Ok(Carrier {
        carrier_id: row.get(0)?,
        display_name: row.get(1)?,
        create_time: row.get(2)?,
    })
}

const KEY_COLUMNS: &str =
    "key_id, role, carrier_id, display_name, secret_hash, create_time, last_use_time, revoke_time";

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<ApiKey> {
    let (role, secret_hash) = rules::key_secrets(row.get(1)?, row.get(4)?).map_err(|e| {
        rusqlite::Error::InvalidColumnType(4, e.to_string(), rusqlite::types::Type::Blob)
    })?;
    Ok(ApiKey {
        key_id: row.get(0)?,
        role,
        carrier_id: row.get(2)?,
        display_name: row.get(3)?,
        secret_hash,
        create_time: row.get(5)?,
        last_use_time: row.get(6)?,
        revoke_time: row.get(7)?,
    })
}

fn get_key(conn: &Connection, key_id: &str) -> StoreResult<Option<ApiKey>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = ?1"
        ))?
        .query_row([key_id], key_from_row)
        .optional()?)
}

const CONSENT_COLUMNS: &str =
    "carrier_id, tenant_id, status, countries, contact, consent_time, update_time";

fn consent_from_row(row: &Row<'_>) -> rusqlite::Result<Consent> {
    Ok(rules::StoredConsent {
        carrier_id: row.get(0)?,
        tenant_id: row.get(1)?,
        status: row.get(2)?,
        countries: row.get(3)?,
        contact: row.get(4)?,
        consent_time: row.get(5)?,
        update_time: row.get(6)?,
    }
    .into())
}

fn get_consent(
    conn: &Connection,
    carrier_id: &str,
    tenant_id: &str,
) -> StoreResult<Option<Consent>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {CONSENT_COLUMNS} FROM consents WHERE carrier_id = ?1 AND tenant_id = ?2"
        ))?
        .query_row([carrier_id, tenant_id], consent_from_row)
        .optional()?)
}

fn carrier_exists(conn: &Connection, carrier_id: &str) -> StoreResult<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM carriers WHERE carrier_id = ?1")?
        .exists([carrier_id])?)
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_carrier(&self, carrier: Carrier) -> StoreResult<Carrier> {
        self.writer
            .write_once(move |conn| {
                if carrier_exists(conn, &carrier.carrier_id)? {
                    return Err(StoreError::AlreadyExists(format!(
                        "carrier {:?} already exists",
                        carrier.carrier_id
                    )));
                }
                conn.prepare_cached(
                    "INSERT INTO carriers (carrier_id, display_name, create_time) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![carrier.carrier_id, carrier.display_name, carrier.create_time])?;
                quiet(carrier)
            })
            .await
    }

    async fn get_carrier(&self, carrier_id: &str) -> StoreResult<Option<Carrier>> {
        let id = carrier_id.to_owned();
        self.readers
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT carrier_id, display_name, create_time FROM carriers WHERE carrier_id = ?1",
                    )?
                    .query_row([id], carrier_from_row)
                    .optional()?)
            })
            .await
    }

    async fn list_carriers(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Page<Carrier>> {
        self.readers
            .read(move |conn| {
                let items = conn
                    .prepare_cached(
                        "SELECT carrier_id, display_name, create_time FROM carriers
                         WHERE ?1 IS NULL OR carrier_id > ?1 ORDER BY carrier_id LIMIT ?2",
                    )?
                    .query_map(params![after, limit as i64 + 1], carrier_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let total = conn.query_row("SELECT count(*) FROM carriers", [], |r| r.get(0))?;
                Ok(page(items, limit, total))
            })
            .await
    }

    async fn insert_api_key(&self, key: ApiKey) -> StoreResult<ApiKey> {
        self.writer
            .write_once(move |conn| {
                if let Some(carrier) = &key.carrier_id
                    && !carrier_exists(conn, carrier)?
                {
                    return Err(StoreError::NotFound(format!(
                        "carrier {carrier:?} not found"
                    )));
                }
                conn.prepare_cached(&format!(
                    "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                ))?
                .execute(params![
                    key.key_id,
                    key.role.code(),
                    key.carrier_id,
                    key.display_name,
                    &key.secret_hash[..],
                    key.create_time,
                    key.last_use_time,
                    key.revoke_time
                ])?;
                quiet(key)
            })
            .await
    }

    async fn revoke_api_key(&self, key_id: &str) -> StoreResult<ApiKey> {
        let key_id = key_id.to_owned();
        self.writer
            .write_once(move |conn| {
                conn.prepare_cached(
                    "UPDATE api_keys SET revoke_time = ?2 WHERE key_id = ?1 AND revoke_time IS NULL",
                )?
                .execute(params![key_id, now_micros()])?;
                let key = get_key(conn, &key_id)?
                    .ok_or_else(|| StoreError::NotFound(format!("API key {key_id:?} not found")))?;
                quiet(key)
            })
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
                let items = conn
                    .prepare_cached(&format!(
                        "SELECT {KEY_COLUMNS} FROM api_keys
                         WHERE (?1 IS NULL OR carrier_id = ?1) AND (?2 IS NULL OR key_id > ?2)
                         ORDER BY key_id LIMIT ?3"
                    ))?
                    .query_map(params![carrier_id, after, limit as i64 + 1], key_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let total = conn
                    .prepare_cached(
                        "SELECT count(*) FROM api_keys WHERE ?1 IS NULL OR carrier_id = ?1",
                    )?
                    .query_row([&carrier_id], |r| r.get(0))?;
                Ok(page(items, limit, total))
            })
            .await
    }

    async fn active_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        self.readers
            .read(|conn| {
                Ok(conn
                    .prepare_cached(&format!(
                        "SELECT {KEY_COLUMNS} FROM api_keys WHERE revoke_time IS NULL"
                    ))?
                    .query_map([], key_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
    }

    async fn record_key_use(&self, uses: Vec<(String, Micros)>) -> StoreResult<()> {
        self.writer
            .write(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "UPDATE api_keys SET last_use_time = ?2
                     WHERE key_id = ?1 AND (last_use_time IS NULL OR last_use_time < ?2)",
                )?;
                for (key_id, at) in &uses {
                    stmt.execute(params![key_id, at])?;
                }
                quiet(())
            })
            .await
    }

    async fn grant_consent(&self, grant: ConsentGrant) -> StoreResult<Consent> {
        self.writer
            .write_once(move |conn| {
                if !carrier_exists(conn, &grant.carrier_id)? {
                    return Err(StoreError::NotFound(format!(
                        "carrier {:?} not found",
                        grant.carrier_id
                    )));
                }
                let now = now_micros();
                conn.prepare_cached(&format!(
                    "INSERT INTO consents ({CONSENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
                     ON CONFLICT (carrier_id, tenant_id) DO UPDATE SET
                       status = excluded.status, countries = excluded.countries,
                       contact = excluded.contact, update_time = excluded.update_time"
                ))?
                .execute(params![
                    grant.carrier_id,
                    grant.tenant_id,
                    grant.status.code(),
                    grant.countries.join(","),
                    rules::contact_json(&grant.contact)?,
                    now
                ])?;
                let consent = get_consent(conn, &grant.carrier_id, &grant.tenant_id)?
                    .ok_or_else(|| StoreError::Internal("consent vanished after upsert".into()))?;
                quiet(consent)
            })
            .await
    }

    async fn revoke_consent(&self, carrier_id: &str, tenant_id: &str) -> StoreResult<Consent> {
        let (carrier_id, tenant_id) = (carrier_id.to_owned(), tenant_id.to_owned());
        self.writer
            .write_once(move |conn| {
                conn.prepare_cached(
                    "UPDATE consents SET status = ?3, update_time = ?4
                     WHERE carrier_id = ?1 AND tenant_id = ?2 AND status != ?3",
                )?
                .execute(params![
                    carrier_id,
                    tenant_id,
                    ConsentStatus::Removed.code(),
                    now_micros()
                ])?;
                let consent = get_consent(conn, &carrier_id, &tenant_id)?.ok_or_else(|| {
                    StoreError::NotFound(format!(
                        "tenant {tenant_id} has no consent for carrier {carrier_id:?}"
                    ))
                })?;
                quiet(consent)
            })
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
        let status = status.map(ConsentStatus::code);
        self.readers
            .read(move |conn| {
                let items = conn
                    .prepare_cached(&format!(
                        "SELECT {CONSENT_COLUMNS} FROM consents
                         WHERE carrier_id = ?1 AND (?2 IS NULL OR status = ?2)
                           AND (?3 IS NULL OR tenant_id > ?3)
                         ORDER BY tenant_id LIMIT ?4"
                    ))?
                    .query_map(params![carrier_id, status, after, limit as i64 + 1], consent_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let total = conn
                    .prepare_cached(
                        "SELECT count(*) FROM consents WHERE carrier_id = ?1 AND (?2 IS NULL OR status = ?2)",
                    )?
                    .query_row(params![carrier_id, status], |r| r.get(0))?;
                Ok(page(items, limit, total))
            })
            .await
    }

    async fn upload_numbers(
        &self,
        carrier_id: &str,
        items: Vec<NumberUpload>,
    ) -> StoreResult<Vec<ItemOutcome>> {
        let carrier_id = carrier_id.to_owned();
        self.writer
            .write_once(move |conn| {
                let outcomes = numbers::upload(conn, &carrier_id, &items)?;
                let changed = outcomes
                    .iter()
                    .any(|o| matches!(o, ItemOutcome::Created(_) | ItemOutcome::Updated(_)));
                Ok((
                    outcomes,
                    Touched {
                        number_events: changed,
                        ..Touched::default()
                    },
                ))
            })
            .await
    }

    async fn release_numbers(
        &self,
        carrier_id: &str,
        items: Vec<String>,
    ) -> StoreResult<Vec<ItemOutcome>> {
        let carrier_id = carrier_id.to_owned();
        self.writer
            .write_once(move |conn| {
                let outcomes = numbers::release(conn, &carrier_id, &items)?;
                let changed = outcomes
                    .iter()
                    .any(|o| matches!(o, ItemOutcome::Updated(_)));
                Ok((
                    outcomes,
                    Touched {
                        number_events: changed,
                        ..Touched::default()
                    },
                ))
            })
            .await
    }

    async fn get_number(&self, carrier_id: &str, number: &str) -> StoreResult<Option<PhoneNumber>> {
        let (carrier_id, number) = (carrier_id.to_owned(), number.to_owned());
        self.readers
            .read(move |conn| {
                Ok(numbers::get(conn, &number)?.filter(|n| n.carrier_id == carrier_id))
            })
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
        self.writer
            .write_once(move |conn| {
                let (number, changed) = numbers::assign(conn, &request)?;
                Ok((
                    number,
                    Touched {
                        number_events: changed,
                        ..Touched::default()
                    },
                ))
            })
            .await
    }

    async fn unassign_number(&self, number: &str, tenant_id: &str) -> StoreResult<PhoneNumber> {
        let (number, tenant_id) = (number.to_owned(), tenant_id.to_owned());
        self.writer
            .write_once(move |conn| {
                let (number, changed) = numbers::unassign(conn, &number, &tenant_id)?;
                Ok((
                    number,
                    Touched {
                        number_events: changed,
                        ..Touched::default()
                    },
                ))
            })
            .await
    }

    async fn number_event_head(&self, carrier_id: &str) -> StoreResult<i64> {
        let carrier_id = carrier_id.to_owned();
        self.readers
            .read(move |conn| {
                Ok(conn
                    .prepare_cached("SELECT coalesce((SELECT number_event_seq FROM carrier_heads WHERE carrier_id = ?1), 0)")?
                    .query_row([carrier_id], |r| r.get(0))?)
            })
            .await
    }

    async fn call_record_head(&self, carrier_id: &str) -> StoreResult<i64> {
        let carrier_id = carrier_id.to_owned();
        self.readers
            .read(move |conn| {
                Ok(conn
                    .prepare_cached("SELECT coalesce((SELECT call_record_seq FROM carrier_heads WHERE carrier_id = ?1), 0)")?
                    .query_row([carrier_id], |r| r.get(0))?)
            })
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
                let outcomes = calls::ingest(conn, records)?;
                let changed = outcomes
                    .iter()
                    .any(|o| matches!(o, IngestOutcome::Created(_) | IngestOutcome::Revised(_)));
                Ok((
                    outcomes,
                    Touched {
                        call_records: changed,
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
        self.writer
            .write_once(move |conn| quiet(durations::report(conn, &carrier_id, &reports)?))
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
        self.readers
            .read_in(Lane::Long, move |conn| {
                durations::summary(conn, &p.carrier_id, p.start, p.end, p.tolerance_us)
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
        self.readers
            .read_in(Lane::Long, move |conn| {
                durations::discrepancies(
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

    async fn tenant_usage(
        &self,
        tenant_id: &str,
        window: (Micros, Micros),
        grouping: UsageGrouping,
    ) -> StoreResult<Vec<UsageRow>> {
        let tenant_id = tenant_id.to_owned();
        self.readers
            .read_in(Lane::Long, move |conn| {
                durations::usage(conn, &tenant_id, window.0, window.1, grouping)
            })
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
        self.writer
            .write_once(move |conn| quiet(privacy::set_policy(conn, policy)?))
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
        self.writer
            .write_once(move |conn| {
                let (counts, appended) = privacy::erase_tenant(conn, &tenant_id)?;
                Ok((
                    counts,
                    Touched {
                        number_events: appended,
                        checkpoint: true,
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

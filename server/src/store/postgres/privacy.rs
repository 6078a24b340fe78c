//! Retention, erasure and the audit trail (the port of `sqlite::privacy`).

use deadpool_postgres::{GenericClient, Transaction};

use super::{PgError, PgResult, PgStore};
use crate::domain::{AuditEvent, AuditFilter, EraseCounts, Micros, PurgeCounts, RetentionPolicy};
use crate::store::{StoreError, StoreResult};

fn unwritten<T>() -> PgResult<T> {
    Err(PgError::Store(StoreError::Internal(
        "not written yet".into(),
    )))
}

pub async fn policy(db: &impl GenericClient) -> PgResult<RetentionPolicy> {
    let _ = db;
    unwritten()
}

pub async fn set_policy(
    tx: &Transaction<'_>,
    policy: &RetentionPolicy,
) -> PgResult<RetentionPolicy> {
    let _ = (tx, policy);
    unwritten()
}

pub async fn purge_expired(store: &PgStore, now: Micros) -> StoreResult<PurgeCounts> {
    let _ = (store, now);
    Ok(unwritten()?)
}

pub async fn erase_tenant(tx: &Transaction<'_>, tenant_id: &str) -> PgResult<EraseCounts> {
    let _ = (tx, tenant_id);
    unwritten()
}

pub async fn append_audit(tx: &Transaction<'_>, events: &[AuditEvent]) -> PgResult<()> {
    let _ = (tx, events);
    unwritten()
}

pub async fn list_audit(
    db: &impl GenericClient,
    filter: &AuditFilter,
    before: Option<i64>,
    limit: usize,
) -> PgResult<(Vec<AuditEvent>, bool)> {
    let _ = (db, filter, before, limit);
    unwritten()
}

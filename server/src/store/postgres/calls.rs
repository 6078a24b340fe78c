//! Call records (the port of `sqlite::calls`).

use deadpool_postgres::{GenericClient, Transaction};

use super::{PgError, PgResult};
use crate::domain::{CallRecord, CallRecordFilter, IngestOutcome};
use crate::store::{CallRecordCursor, KeyedPage, StoreError};

fn unwritten<T>() -> PgResult<T> {
    Err(PgError::Store(StoreError::Internal(
        "not written yet".into(),
    )))
}

pub async fn ingest(tx: &Transaction<'_>, records: &[CallRecord]) -> PgResult<Vec<IngestOutcome>> {
    let _ = (tx, records);
    unwritten()
}

pub async fn get(
    db: &impl GenericClient,
    carrier_id: &str,
    call_id: &str,
) -> PgResult<Option<CallRecord>> {
    let _ = (db, carrier_id, call_id);
    unwritten()
}

pub async fn list(
    db: &impl GenericClient,
    carrier_id: &str,
    filter: &CallRecordFilter,
    after: Option<CallRecordCursor>,
    limit: usize,
) -> PgResult<KeyedPage<CallRecord, CallRecordCursor>> {
    let _ = (db, carrier_id, filter, after, limit);
    unwritten()
}

pub async fn feed(
    db: &impl GenericClient,
    carrier_id: &str,
    after: i64,
    limit: usize,
) -> PgResult<Vec<CallRecord>> {
    let _ = (db, carrier_id, after, limit);
    unwritten()
}

//! Numbers and number events (the port of `sqlite::numbers`).

use deadpool_postgres::{GenericClient, Transaction};

use super::{PgError, PgResult};
use crate::domain::{
    AssignRequest, ItemOutcome, NumberEvent, NumberFilter, NumberUpload, PhoneNumber,
};
use crate::store::StoreError;

fn unwritten<T>() -> PgResult<T> {
    Err(PgError::Store(StoreError::Internal(
        "not written yet".into(),
    )))
}

pub async fn upload(
    tx: &Transaction<'_>,
    carrier_id: &str,
    items: &[NumberUpload],
) -> PgResult<Vec<ItemOutcome>> {
    let _ = (tx, carrier_id, items);
    unwritten()
}

pub async fn release(
    tx: &Transaction<'_>,
    carrier_id: &str,
    numbers: &[String],
) -> PgResult<Vec<ItemOutcome>> {
    let _ = (tx, carrier_id, numbers);
    unwritten()
}

pub async fn get(db: &impl GenericClient, number: &str) -> PgResult<Option<PhoneNumber>> {
    let _ = (db, number);
    unwritten()
}

pub async fn list(
    db: &impl GenericClient,
    carrier_id: &str,
    filter: &NumberFilter,
    after: Option<&str>,
    limit_plus_one: usize,
) -> PgResult<(Vec<PhoneNumber>, i64)> {
    let _ = (db, carrier_id, filter, after, limit_plus_one);
    unwritten()
}

pub async fn assign(tx: &Transaction<'_>, request: &AssignRequest) -> PgResult<PhoneNumber> {
    let _ = (tx, request);
    unwritten()
}

pub async fn unassign(
    tx: &Transaction<'_>,
    number: &str,
    tenant_id: &str,
) -> PgResult<PhoneNumber> {
    let _ = (tx, number, tenant_id);
    unwritten()
}

pub async fn events_after(
    db: &impl GenericClient,
    carrier_id: &str,
    after: i64,
    limit: usize,
) -> PgResult<Vec<NumberEvent>> {
    let _ = (db, carrier_id, after, limit);
    unwritten()
}

//! Duration reports (the port of `sqlite::durations`' report and list).

use deadpool_postgres::{GenericClient, Transaction};

use super::{PgError, PgResult};
use crate::domain::{CallDuration, DurationOutcome, DurationReport, Micros};
use crate::store::{KeyedPage, StoreError};

fn unwritten<T>() -> PgResult<T> {
    Err(PgError::Store(StoreError::Internal(
        "not written yet".into(),
    )))
}

pub async fn report(
    tx: &Transaction<'_>,
    carrier_id: &str,
    reports: &[DurationReport],
) -> PgResult<Vec<DurationOutcome>> {
    let _ = (tx, carrier_id, reports);
    unwritten()
}

pub async fn list(
    db: &impl GenericClient,
    carrier_id: &str,
    from: Option<Micros>,
    to: Option<Micros>,
    after: Option<(Micros, i64)>,
    limit: usize,
) -> PgResult<KeyedPage<CallDuration, (Micros, i64)>> {
    let _ = (db, carrier_id, from, to, after, limit);
    unwritten()
}

//! Reconciliation and usage (the port of `sqlite::durations`' set-based SQL).

use deadpool_postgres::GenericClient;

use super::{PgError, PgResult};
use crate::domain::{
    Discrepancy, DiscrepancyCursor, DiscrepancyKind, Micros, ReconciliationSummary, UsageGrouping,
    UsageRow,
};
use crate::store::{KeyedPage, StoreError};

fn unwritten<T>() -> PgResult<T> {
    Err(PgError::Store(StoreError::Internal(
        "not written yet".into(),
    )))
}

pub async fn summary(
    db: &impl GenericClient,
    carrier_id: &str,
    start: Micros,
    end: Micros,
    tolerance_us: Micros,
) -> PgResult<ReconciliationSummary> {
    let _ = (db, carrier_id, start, end, tolerance_us);
    unwritten()
}

#[allow(clippy::too_many_arguments)]
pub async fn discrepancies(
    db: &impl GenericClient,
    carrier_id: &str,
    start: Micros,
    end: Micros,
    tolerance_us: Micros,
    kind: Option<DiscrepancyKind>,
    after: Option<DiscrepancyCursor>,
    limit: usize,
) -> PgResult<KeyedPage<Discrepancy, DiscrepancyCursor>> {
    let _ = (db, carrier_id, start, end, tolerance_us, kind, after, limit);
    unwritten()
}

pub async fn usage(
    db: &impl GenericClient,
    tenant_id: &str,
    start: Micros,
    end: Micros,
    grouping: UsageGrouping,
) -> PgResult<Vec<UsageRow>> {
    let _ = (db, tenant_id, start, end, grouping);
    unwritten()
}

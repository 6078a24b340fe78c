//! Queries whose rows the shared decoders (`store::rows`) read: the SQLite backend's `query`
//! module is the same for its driver.

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::pool::PgResult;
use crate::store::StoreResult;
use crate::store::rows::Row;

/// `rows`, each decoded by `decode`.
pub fn decode_all<T>(
    rows: &[tokio_postgres::Row],
    decode: fn(&dyn Row) -> StoreResult<T>,
) -> PgResult<Vec<T>> {
    Ok(rows.iter().map(|r| decode(r)).collect::<StoreResult<_>>()?)
}

/// Every row `sql` (a cached statement) returns for `params`, decoded by `decode`.
pub async fn all<T>(
    db: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    decode: fn(&dyn Row) -> StoreResult<T>,
) -> PgResult<Vec<T>> {
    let stmt = db.prepare_cached(sql).await?;
    decode_all(&db.query(&stmt, params).await?, decode)
}

/// The row `sql` (a cached statement) returns for `params`, if any, decoded by `decode`.
pub async fn first<T>(
    db: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    decode: fn(&dyn Row) -> StoreResult<T>,
) -> PgResult<Option<T>> {
    let stmt = db.prepare_cached(sql).await?;
    let row = db.query_opt(&stmt, params).await?;
    Ok(row.map(|r| decode(&r)).transpose()?)
}

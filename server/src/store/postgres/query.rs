//! Queries whose rows the shared decoders (`store::rows`) read: the SQLite backend's `query`
//! module is the same for its driver.

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::pool::PgResult;
use crate::store::StoreResult;
use crate::store::rows::Decode;

/// Query parameters.
type Args<'a> = &'a [&'a (dyn ToSql + Sync)];

/// `rows`, each decoded by `d`.
pub fn decode_all<T>(rows: &[tokio_postgres::Row], d: Decode<T>) -> PgResult<Vec<T>> {
    Ok(rows.iter().map(|r| d(r)).collect::<StoreResult<_>>()?)
}

/// Every row `sql` (a cached statement) returns for `p`, each decoded by `d`.
pub async fn all<T>(db: &impl GenericClient, sql: &str, p: Args<'_>, d: Decode<T>) -> Many<T> {
    let stmt = db.prepare_cached(sql).await?;
    decode_all(&db.query(&stmt, p).await?, d)
}

/// Every `T` a query found.
type Many<T> = PgResult<Vec<T>>;

/// The row `sql` (a cached statement) returns for `p`, if any, decoded by `d`.
pub async fn first<T>(db: &impl GenericClient, sql: &str, p: Args<'_>, d: Decode<T>) -> One<T> {
    let stmt = db.prepare_cached(sql).await?;
    let row = db.query_opt(&stmt, p).await?;
    Ok(row.map(|r| d(&r)).transpose()?)
}

/// At most one `T`.
type One<T> = PgResult<Option<T>>;

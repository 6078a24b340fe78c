//! Queries whose rows the shared decoders (`store::rows`) read: the PostgreSQL backend's
//! `query` module is the same for its driver.

use crate::store::StoreResult;
use crate::store::rows::Row;

/// Every row `sql` (a cached statement) returns for `params`, decoded by `decode`.
pub fn all<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: fn(&dyn Row) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// A keyset page: `sql` asks for `limit + 1` rows, `decode` decodes each; at most `limit`
/// come back, and whether more follow.
pub fn page<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: fn(&dyn Row) -> StoreResult<T>,
    limit: usize,
) -> StoreResult<(Vec<T>, bool)> {
    Ok(crate::store::rows::limited(
        all(conn, sql, params, decode)?,
        limit,
    ))
}

/// The first row `sql` (a cached statement) returns for `params`, if any, decoded by
/// `decode`.
pub fn first<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: fn(&dyn Row) -> StoreResult<T>,
) -> StoreResult<Option<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    rows.next()?.map(|r| decode(r)).transpose()
}

//! Queries whose rows the shared decoders (`store::rows`) read: the PostgreSQL backend's
//! `query` module is the same for its driver.

use rusqlite::{Connection, Params};

use crate::store::StoreResult;
use crate::store::rows::{self, Decode};

/// Every row `sql` (a cached statement) returns for `p`, each decoded by `d`.
pub fn all<T>(conn: &Connection, sql: &str, p: impl Params, d: Decode<T>) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut found = stmt.query(p)?;
    let mut out = Vec::new();
    while let Some(row) = found.next()? {
        out.push(d(row)?);
    }
    Ok(out)
}

/// A keyset page: `sql` asks for `limit + 1` rows; at most `limit` come back, and whether more
/// follow.
pub fn page<T>(
    conn: &Connection,
    sql: &str,
    p: impl Params,
    d: Decode<T>,
    limit: usize,
) -> Page<T> {
    Ok(rows::limited(all(conn, sql, p, d)?, limit))
}

/// A page of `T` and whether more follow.
type Page<T> = StoreResult<(Vec<T>, bool)>;

/// The first row `sql` (a cached statement) returns for `p`, if any, decoded by `d`.
pub fn first<T>(conn: &Connection, sql: &str, p: impl Params, d: Decode<T>) -> One<T> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut found = stmt.query(p)?;
    found.next()?.map(|r| d(r)).transpose()
}

/// At most one `T`.
type One<T> = StoreResult<Option<T>>;

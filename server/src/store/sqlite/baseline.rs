//! The limit OCX's ingest is measured against (`ocx-bench`): the same records written by
//! rusqlite directly into the same schema, with the same indexes, pragmas and INSERT statement,
//! batched in transactions, and nothing else (no gRPC, no validation, no ownership or duplicate
//! checks, no writer thread). Not used by the server.

use std::path::Path;

use rusqlite::Connection;

use crate::domain::{CallRecord, DurationReport, now_micros};
use crate::store::{StoreError, StoreResult};

/// A database at `path` with OCX's schema, on a connection with the writer's pragmas.
pub fn open(path: &Path) -> StoreResult<Connection> {
    let mut conn = super::actor::open_writer(path, super::actor::Durability::Full)?;
    super::schema::migrations()
        .to_latest(&mut conn)
        .map_err(|e| StoreError::Internal(format!("migrating {}: {e}", path.display())))?;
    Ok(conn)
}

/// Inserts `records` (already owned by `carrier_id`, feed sequences from `first_sequence`) in one
/// transaction, with the store's own INSERT statement.
pub fn insert_call_records(
    conn: &Connection,
    records: &mut [CallRecord],
    carrier_id: &str,
    first_sequence: i64,
) -> StoreResult<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    for (i, r) in records.iter_mut().enumerate() {
        r.carrier_id = carrier_id.to_owned();
        r.feed_sequence = first_sequence + i as i64;
        super::calls::put(conn, None, r)?;
    }
    conn.execute_batch("COMMIT")?;
    Ok(())
}

/// Inserts `reports` for `carrier_id` in one transaction, with the store's own INSERT statement.
pub fn insert_call_durations(
    conn: &Connection,
    reports: &[DurationReport],
    carrier_id: &str,
) -> StoreResult<()> {
    let now = now_micros();
    conn.execute_batch("BEGIN IMMEDIATE")?;
    for r in reports {
        super::durations::insert(conn, carrier_id, r, now)?;
    }
    conn.execute_batch("COMMIT")?;
    Ok(())
}

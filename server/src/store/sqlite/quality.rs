//! The quality aggregates (`quality_groups`, `quality_cells`) on SQLite: the reads and writes
//! of [`crate::store::quality`], which decides what a call adds to its cells.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use crate::domain::QualityQuery;
use crate::store::quality::{Changes, Group, QualityRow, Summary, cuts};
use crate::store::{StoreError, StoreResult};

/// The SQL function the cells' UPSERT merges with: `ocx_quality_merge(stored, change)` (see
/// [`crate::store::quality::merge_encoded`]). Registered on the write connection.
pub const MERGE_FUNCTION: &str = "ocx_quality_merge";

/// Registers [`MERGE_FUNCTION`] on `conn`.
pub fn register_merge(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        MERGE_FUNCTION,
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let (stored, change) = (ctx.get_raw(0).as_blob()?, ctx.get_raw(1).as_blob()?);
            crate::store::quality::merge_encoded(stored, change).ok_or_else(|| {
                rusqlite::Error::UserFunctionError("a quality cell does not decode".into())
            })
        },
    )
}

/// Writes what `changes` adds to and takes from each cell: one UPSERT per cell, merging in
/// SQLite (no read first); a cell that a change took calls from is deleted if it comes to none.
pub fn apply(conn: &Connection, changes: Changes) -> StoreResult<()> {
    let mut groups: HashMap<(String, Group), i64> = HashMap::new();
    let mut upsert = conn.prepare_cached(&format!(
        "INSERT INTO quality_cells (carrier_id, level, bucket, group_id, calls, figures)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (carrier_id, level, bucket, group_id) DO UPDATE SET
             calls = calls + excluded.calls,
             figures = {MERGE_FUNCTION}(figures, excluded.figures)"
    ))?;
    let mut emptied = conn.prepare_cached(
        "DELETE FROM quality_cells
          WHERE carrier_id = ?1 AND level = ?2 AND bucket = ?3 AND group_id = ?4 AND calls <= 0",
    )?;
    for ((carrier_id, level, bucket, group), change) in changes.sorted() {
        let key = (carrier_id, group);
        let group_id = match groups.get(&key) {
            Some(id) => *id,
            None => {
                let id = group_id(conn, &key.0, &key.1)?;
                groups.insert(key.clone(), id);
                id
            }
        };
        let carrier_id = &key.0;
        upsert.execute(params![
            carrier_id,
            level,
            bucket,
            group_id,
            change.calls(),
            change.encode()
        ])?;
        if change.calls() < 0 {
            emptied.execute(params![carrier_id, level, bucket, group_id])?;
        }
    }
    Ok(())
}

/// The error for a cell that does not decode.
fn malformed(carrier_id: &str) -> StoreError {
    StoreError::Internal(format!(
        "a quality cell of carrier {carrier_id} does not decode"
    ))
}

/// The id of a carrier's group, created if new.
fn group_id(conn: &Connection, carrier_id: &str, g: &Group) -> StoreResult<i64> {
    let values = params![
        carrier_id,
        g.trunk_fqdn,
        g.usage_country_code,
        g.destination_context,
        g.call_type,
        g.direction,
        g.codec
    ];
    let found: Option<i64> = conn
        .prepare_cached(
            "SELECT id FROM quality_groups
              WHERE carrier_id = ?1 AND trunk_fqdn = ?2 AND usage_country_code = ?3
                AND destination_context = ?4 AND call_type = ?5 AND direction = ?6 AND codec = ?7",
        )?
        .query_row(values, |r| r.get(0))
        .optional()?;
    match found {
        Some(id) => Ok(id),
        None => Ok(conn
            .prepare_cached(
                "INSERT INTO quality_groups (carrier_id, trunk_fqdn, usage_country_code,
                                             destination_context, call_type, direction, codec)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
            )?
            .query_row(values, |r| r.get(0))?),
    }
}

/// A carrier's groups by id.
fn groups(conn: &Connection, carrier_id: &str) -> StoreResult<HashMap<i64, Group>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, trunk_fqdn, usage_country_code, destination_context, call_type, direction,
                codec
           FROM quality_groups WHERE carrier_id = ?1",
    )?;
    let groups = stmt
        .query_map([carrier_id], |r| {
            Ok((
                r.get(0)?,
                Group {
                    trunk_fqdn: r.get(1)?,
                    usage_country_code: r.get(2)?,
                    destination_context: r.get(3)?,
                    call_type: r.get(4)?,
                    direction: r.get(5)?,
                    codec: r.get(6)?,
                },
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(groups)
}

/// The summary's rows: for one carrier, or for every carrier with cells.
pub fn summary(conn: &Connection, q: &QualityQuery) -> StoreResult<Vec<QualityRow>> {
    let carriers: Vec<String> = match &q.carrier_id {
        Some(c) => vec![c.clone()],
        None => conn
            .prepare_cached("SELECT DISTINCT carrier_id FROM quality_groups")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?,
    };
    let mut summary = Summary::new(q);
    let mut cells = conn.prepare_cached(
        "SELECT bucket, group_id, figures FROM quality_cells
          WHERE carrier_id = ?1 AND level = ?2 AND bucket >= ?3 AND bucket < ?4",
    )?;
    for carrier_id in &carriers {
        let groups = groups(conn, carrier_id)?;
        for (level, from, to) in cuts(q) {
            let mut rows = cells.query(params![carrier_id, level, from, to])?;
            while let Some(row) = rows.next()? {
                let (bucket, group_id): (i64, i64) = (row.get(0)?, row.get(1)?);
                let figures = row
                    .get_ref(2)?
                    .as_blob()
                    .map_err(|_| malformed(carrier_id))?;
                let group = groups.get(&group_id).ok_or_else(|| malformed(carrier_id))?;
                summary
                    .add(level, bucket, group, figures)
                    .ok_or_else(|| malformed(carrier_id))?;
            }
        }
    }
    Ok(summary.rows()?)
}

//! Retention (policy and purge), tenant erasure, and the audit trail.
//!
//! Purges delete in chunks of [`PURGE_CHUNK`] rows, one writer job each, so that a large purge
//! never holds the writer (and every other write) for long. Erasure is one job: it must be all
//! or nothing.

use super::pairing::{self, Touched};
use rusqlite::{Connection, OptionalExtension, params};

use super::query;
use crate::domain::{
    AuditEvent, AuditFilter, EraseCounts, Micros, NumberState, RetentionPolicy, now_micros,
};
use crate::store::StoreResult;
use crate::store::rows;

use super::numbers;

pub use crate::store::retention::{Expiring, PURGE_CHUNK};

/// The policy in force.
pub fn policy(conn: &Connection) -> StoreResult<RetentionPolicy> {
    let stored = conn
        .prepare_cached(
            "SELECT call_record_days, call_duration_days, released_number_days, audit_event_days,
                    update_time
             FROM retention_policy WHERE id = 1",
        )?
        .query_row([], |r| {
            Ok(RetentionPolicy {
                call_record_days: r.get(0)?,
                call_duration_days: r.get(1)?,
                released_number_days: r.get(2)?,
                audit_event_days: r.get(3)?,
                update_time: Some(r.get(4)?),
            })
        })
        .optional()?;
    Ok(stored.unwrap_or_default())
}

/// Replaces the policy.
pub fn set_policy(conn: &Connection, p: RetentionPolicy) -> StoreResult<RetentionPolicy> {
    let now = now_micros();
    conn.prepare_cached(
        "INSERT INTO retention_policy (id, call_record_days, call_duration_days,
                                       released_number_days, audit_event_days, update_time)
         VALUES (1, ?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET
             call_record_days = excluded.call_record_days,
             call_duration_days = excluded.call_duration_days,
             released_number_days = excluded.released_number_days,
             audit_event_days = excluded.audit_event_days,
             update_time = excluded.update_time",
    )?
    .execute(params![
        p.call_record_days,
        p.call_duration_days,
        p.released_number_days,
        p.audit_event_days,
        now
    ])?;
    Ok(RetentionPolicy {
        update_time: Some(now),
        ..p
    })
}

/// Deletes up to [`PURGE_CHUNK`] rows of `table` whose `time_column` is before `cutoff`; how
/// many. (`table` and `time_column` are this module's constants, never input.)
fn delete_before(
    conn: &Connection,
    table: &str,
    time_column: &str,
    cutoff: Micros,
) -> StoreResult<i64> {
    let n = conn
        .prepare_cached(&format!(
            "DELETE FROM {table} WHERE id IN
               (SELECT id FROM {table} WHERE {time_column} < ?1 LIMIT ?2)"
        ))?
        .execute(params![cutoff, PURGE_CHUNK])?;
    Ok(n as i64)
}

/// Deletes the call records `condition` selects, and takes them out of the pairing state and
/// the quality aggregates; how many.
fn delete_records(
    conn: &Connection,
    condition: &str,
    p: impl rusqlite::Params,
) -> StoreResult<usize> {
    let sql = format!(
        "DELETE FROM call_records WHERE {condition} RETURNING {COLUMNS}, id",
        COLUMNS = super::calls::COLUMNS
    );
    let gone = query::all(conn, &sql, p, rows::call_record_listed)?;
    let mut touched = Touched::default();
    let mut quality = crate::store::quality::Changes::default();
    for (r, (_, id)) in &gone {
        touched.deleted_record(*id, &r.carrier_id, &r.call_id, &r.correlation_id);
        quality.record(&r.carrier_id, r, -1);
    }
    pairing::repair(conn, &touched)?;
    super::quality::apply(conn, quality)?;
    Ok(gone.len())
}

/// Deletes up to [`PURGE_CHUNK`] rows of `kind` older than `cutoff`; returns (rows, secondary
/// rows) deleted: for reports their history rows, for released numbers their events.
pub fn purge_chunk(conn: &Connection, kind: Expiring, cutoff: Micros) -> StoreResult<(i64, i64)> {
    Ok(match kind {
        Expiring::CallRecords => {
            let gone = delete_records(
                conn,
                "id IN (SELECT id FROM call_records WHERE start_time < ?1 LIMIT ?2)",
                params![cutoff, PURGE_CHUNK],
            )?;
            (gone as i64, 0)
        }
        Expiring::CallDurations => {
            let ids: Vec<i64> = conn
                .prepare_cached("SELECT id FROM call_durations WHERE start_time < ?1 LIMIT ?2")?
                .query_map(params![cutoff, PURGE_CHUNK], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let history = delete_durations(conn, &ids)?;
            (ids.len() as i64, history)
        }
        Expiring::ReleasedNumbers => {
            let gone: Vec<(String, String)> = conn
                .prepare_cached(
                    "SELECT number, carrier_id FROM numbers
                     WHERE state = ?1 AND update_time < ?2 LIMIT ?3",
                )?
                .query_map(
                    params![NumberState::Released.code(), cutoff, PURGE_CHUNK],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?
                .collect::<rusqlite::Result<_>>()?;
            let mut events = 0;
            for (number, carrier_id) in &gone {
                events += conn
                    .prepare_cached(
                        "DELETE FROM number_events
                         WHERE carrier_id = ?1 AND json_extract(snapshot, '$.number') = ?2",
                    )?
                    .execute(params![carrier_id, number])? as i64;
                conn.prepare_cached("DELETE FROM numbers WHERE carrier_id = ?1 AND number = ?2")?
                    .execute([carrier_id, number])?;
            }
            (gone.len() as i64, events)
        }
        Expiring::AuditEvents => (delete_before(conn, "audit_events", "time", cutoff)?, 0),
        Expiring::ReconciliationRemovals => {
            // Each carrier's floor moves to the last removal purged.
            let purged: Vec<(String, i64)> = conn
                .prepare_cached(
                    "DELETE FROM recon_removed WHERE (carrier_id, sequence) IN
                       (SELECT carrier_id, sequence FROM recon_removed INDEXED BY recon_removed_by_time
                         WHERE remove_time < ?1 LIMIT ?2)
                     RETURNING carrier_id, sequence",
                )?
                .query_map(params![cutoff, PURGE_CHUNK], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut floors: std::collections::BTreeMap<&str, i64> = Default::default();
            for (carrier_id, sequence) in &purged {
                let floor = floors.entry(carrier_id).or_default();
                *floor = (*floor).max(*sequence);
            }
            for (carrier_id, floor) in floors {
                conn.prepare_cached(
                    "UPDATE carrier_heads SET recon_floor = max(recon_floor, ?2) WHERE carrier_id = ?1",
                )?
                .execute(params![carrier_id, floor])?;
            }
            let removals = purged.len() as i64;
            // With the last chunk, the lines left with no call (one pass over the sums).
            let lines = if removals < PURGE_CHUNK {
                conn.prepare_cached(
                    "DELETE FROM usage_lines WHERE id NOT IN (SELECT line_id FROM usage_sums)",
                )?
                .execute([])? as i64
            } else {
                0
            };
            (removals, lines)
        }
    })
}

/// Deletes reports by id with their history, and re-pairs what they were part of; returns the
/// history rows deleted.
fn delete_durations(conn: &Connection, ids: &[i64]) -> StoreResult<i64> {
    let mut history = 0;
    let mut touched = Touched::default();
    for id in ids {
        history += conn
            .prepare_cached("DELETE FROM call_duration_history WHERE duration_id = ?1")?
            .execute([id])? as i64;
        let gone: Option<(String, String, String, String)> = conn
            .prepare_cached(
                "DELETE FROM call_durations WHERE id = ?1
                 RETURNING carrier_id, record_id, call_id, correlation_id",
            )?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()?;
        if let Some((carrier_id, record_id, call_id, correlation_id)) = gone {
            touched.deleted_report(*id, &carrier_id, &record_id, &call_id, &correlation_id);
        }
    }
    pairing::repair(conn, &touched)?;
    Ok(history)
}

/// Erases a tenant's personal data; returns the counts and whether number events were
/// appended (assigned numbers are unassigned).
pub fn erase_tenant(conn: &Connection, tenant_id: &str) -> StoreResult<(EraseCounts, bool)> {
    // Reports first, while the records they match are still there: those matching one of the
    // tenant's calls by call id or correlation id, and those naming one of its numbers.
    let durations: Vec<i64> = conn
        .prepare_cached(
            "SELECT d.id FROM call_durations d
              WHERE EXISTS (SELECT 1 FROM call_records r
                             WHERE r.tenant_id = ?1 AND r.carrier_id = d.carrier_id
                               AND (r.call_id = d.call_id
                                    OR (d.correlation_id != '' AND r.correlation_id = d.correlation_id)))
                 OR d.caller_number IN (SELECT number FROM numbers WHERE tenant_id = ?1)
                 OR d.callee_number IN (SELECT number FROM numbers WHERE tenant_id = ?1)",
        )?
        .query_map([tenant_id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    delete_durations(conn, &durations)?;
    let call_records = delete_records(conn, "tenant_id = ?1", [tenant_id])? as i64;
    // The tenant's usage lines name its numbers: they go, with their sums (all of them zero
    // now that the tenant's records are gone).
    conn.prepare_cached("DELETE FROM usage_sums WHERE tenant_id = ?1")?
        .execute([tenant_id])?;
    conn.prepare_cached("DELETE FROM usage_lines WHERE tenant_id = ?1")?
        .execute([tenant_id])?;

    // Assigned numbers are unassigned (their carriers see an UNASSIGNED event); then no number
    // of the tenant holds a SIP URI or user id.
    let assigned: Vec<String> = conn
        .prepare_cached("SELECT number FROM numbers WHERE tenant_id = ?1 AND state = ?2")?
        .query_map(params![tenant_id, NumberState::Assigned.code()], |r| {
            r.get(0)
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut appended = false;
    for number in &assigned {
        let (_, changed) = numbers::unassign(conn, number, tenant_id)?;
        appended |= changed;
    }
    conn.prepare_cached(
        "UPDATE numbers SET sip_uri = NULL, user_id = NULL, assignment_type = NULL,
                            assign_time = NULL
         WHERE tenant_id = ?1 AND (sip_uri IS NOT NULL OR user_id IS NOT NULL)",
    )?
    .execute([tenant_id])?;
    // Past events keep what happened (assigned, to what kind of assignee) but not to whom.
    let number_events = conn
        .prepare_cached(
            "UPDATE number_events
                SET snapshot = json_set(snapshot, '$.assignment.sip_uri', '',
                                                  '$.assignment.user_id', '')
              WHERE json_extract(snapshot, '$.tenant_id') = ?1
                AND json_type(snapshot, '$.assignment') = 'object'
                AND (json_extract(snapshot, '$.assignment.sip_uri') != ''
                     OR json_extract(snapshot, '$.assignment.user_id') != '')",
        )?
        .execute([tenant_id])? as i64;
    // Recorded answers to request ids may hold the tenant's numbers and SIP URIs: they go too
    // (a retry of an earlier write then runs again rather than answer from them).
    conn.execute("DELETE FROM request_ids", [])?;
    Ok((
        EraseCounts {
            call_records,
            call_durations: durations.len() as i64,
            numbers: assigned.len() as i64,
            number_events,
        },
        appended,
    ))
}

/// Appends audit events.
pub fn append_audit(conn: &Connection, events: &[AuditEvent]) -> StoreResult<()> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO audit_events (time, key_id, carrier_id, role, rpc, resource_kind,
                                   item_count, outcome, source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for e in events {
        insert.execute(params![
            e.time,
            e.key_id,
            e.carrier_id,
            e.role,
            e.rpc,
            e.resource_kind,
            e.item_count,
            e.outcome,
            e.source
        ])?;
    }
    Ok(())
}

/// A page of audit events, newest first (ids only grow with time: the writer assigns them in
/// commit order and times come from one clock).
pub fn list_audit(
    conn: &Connection,
    f: &AuditFilter,
    before: Option<i64>,
    limit: usize,
) -> StoreResult<(Vec<AuditEvent>, bool)> {
    let sql = "SELECT id, time, key_id, carrier_id, role, rpc, resource_kind, item_count, outcome,
                      source
                 FROM audit_events
                WHERE (?1 IS NULL OR id < ?1)
                  AND (?2 IS NULL OR key_id = ?2)
                  AND (?3 IS NULL OR carrier_id = ?3)
                  AND (?4 IS NULL OR rpc = ?4)
                  AND (?5 IS NULL OR time >= ?5)
                  AND (?6 IS NULL OR time < ?6)
                ORDER BY id DESC LIMIT ?7";
    let params = params![
        before,
        f.key_id,
        f.carrier_id,
        f.rpc,
        f.start,
        f.end,
        rows::fetch(limit)
    ];
    query::page(conn, sql, params, rows::audit_event, limit)
}

//! Retention, erasure and the audit trail (the port of `sqlite::privacy` and of the SQLite
//! store's `purge_expired` and `erase_tenant`).
//!
//! Purges delete in chunks of [`PURGE_CHUNK`] rows, one transaction each, so that a large
//! purge never holds row locks for long. Erasure is one transaction: all or nothing.
//!
//! Unlike SQLite's `secure_delete`, PostgreSQL does not overwrite a deleted row at once: the
//! row version stays in its data page (and in the WAL) until VACUUM, run by autovacuum,
//! reclaims the page and later writes reuse it. Physical removal from the data files is
//! therefore VACUUM's job, and the operator documentation says so; nothing more is done in the
//! transaction after the deletes.

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::Row;

use super::pool::Db;
use super::pool::PgResult;
use super::query;
use super::{numbers, requests};
use crate::domain::CallRecord;
use crate::domain::{
    AuditEvent, AuditFilter, EraseCounts, Micros, NumberState, PhoneNumber, PurgeCounts,
    RetentionPolicy, now_micros,
};
use crate::store::CallRecordCursor;
use crate::store::StoreError;
use crate::store::StoreResult;
use crate::store::retention::{Expiring, PURGE_CHUNK};
use crate::store::{rows, rules};

/// A day count as stored (BIGINT) back to the policy's type.
fn days(value: i64) -> PgResult<i32> {
    Ok(i32::try_from(value)
        .map_err(|_| StoreError::Internal(format!("the retention policy holds {value} days")))?)
}

/// The policy in force.
pub async fn policy(db: &impl GenericClient) -> PgResult<RetentionPolicy> {
    let stmt = db
        .prepare_cached(
            "SELECT call_record_days, call_duration_days, released_number_days, audit_event_days,
                    update_time
               FROM retention_policy WHERE id = 1",
        )
        .await?;
    let Some(r) = db.query_opt(&stmt, &[]).await? else {
        return Ok(RetentionPolicy::default());
    };
    Ok(RetentionPolicy {
        call_record_days: days(r.get(0))?,
        call_duration_days: days(r.get(1))?,
        released_number_days: days(r.get(2))?,
        audit_event_days: days(r.get(3))?,
        update_time: Some(r.get(4)),
    })
}

/// Replaces the policy.
pub async fn set_policy(tx: &Transaction<'_>, p: &RetentionPolicy) -> PgResult<RetentionPolicy> {
    let now = now_micros();
    tx.execute(
        "INSERT INTO retention_policy (id, call_record_days, call_duration_days,
                                       released_number_days, audit_event_days, update_time)
         VALUES (1, $1, $2, $3, $4, $5)
         ON CONFLICT (id) DO UPDATE SET
             call_record_days = excluded.call_record_days,
             call_duration_days = excluded.call_duration_days,
             released_number_days = excluded.released_number_days,
             audit_event_days = excluded.audit_event_days,
             update_time = excluded.update_time",
        &[
            &i64::from(p.call_record_days),
            &i64::from(p.call_duration_days),
            &i64::from(p.released_number_days),
            &i64::from(p.audit_event_days),
            &now,
        ],
    )
    .await?;
    Ok(RetentionPolicy {
        update_time: Some(now),
        ..*p
    })
}

/// Deletes what the policy no longer allows as of `now`, a chunk per transaction. A request
/// id is looked up first and recorded last, not in one transaction with the deletes: running a
/// purge twice is harmless.
pub async fn purge_expired(store: &Db, now: Micros) -> StoreResult<PurgeCounts> {
    let request = crate::store::request::take_request();
    if let Some(key) = &request {
        let recorded: Option<PurgeCounts> =
            transaction!(store, |tx| requests::replay(tx, key).await)?;
        if let Some(counts) = recorded {
            return Ok(counts);
        }
    }
    let policy = store.read(async |db| policy(db).await).await?;
    let mut counts = PurgeCounts::default();
    for kind in Expiring::ALL {
        let cutoff = kind.cutoff(&policy, now);
        loop {
            let (rows, secondary) = transaction!(store, |tx| purge_chunk(tx, kind, cutoff).await)?;
            rules::count_purged(&mut counts, kind, rows, secondary);
            if rows < PURGE_CHUNK {
                break;
            }
        }
    }
    transaction!(store, |tx| async {
        if let Some(key) = &request {
            // A concurrent purge under the same id recorded first: answer as it did.
            if let Some(recorded) = requests::replay(tx, key).await? {
                return Ok(recorded);
            }
        }
        requests::purge(tx, now).await?;
        if let Some(key) = &request {
            requests::record(tx, key, &counts).await?;
        }
        Ok(counts)
    }
    .await)
}

/// Re-pairs what deleted records (with their row ids) and reports (rows of `id, carrier_id,
/// record_id, call_id, correlation_id`) were part of, announces the change, and takes the
/// records out of the quality aggregates.
async fn repair_deleted(
    tx: &Transaction<'_>,
    records: &[(CallRecord, CallRecordCursor)],
    reports: &[tokio_postgres::Row],
) -> PgResult<()> {
    let mut touched = super::pairing::Touched::default();
    let mut quality = crate::store::quality::Changes::default();
    for (r, (_, id)) in records {
        touched.deleted_record(*id, &r.carrier_id, &r.call_id, &r.correlation_id);
        quality.record(&r.carrier_id, r, -1);
    }
    for r in reports {
        touched.deleted_report(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
    }
    if super::pairing::repair(tx, &touched).await? {
        super::listen::notify(tx, super::listen::Channel::Reconciliation).await?;
    }
    super::quality::apply(tx, quality).await
}

/// Deletes up to [`PURGE_CHUNK`] rows of `kind` older than `cutoff`; returns (rows, secondary
/// rows) deleted: for reports their history rows, for released numbers their events. Each
/// delete checks the age again on the row it deletes, so a row that a concurrent write made
/// young again (a revised record, a number provisioned again) stays.
async fn purge_chunk(tx: &Transaction<'_>, kind: Expiring, cutoff: Micros) -> PgResult<(i64, i64)> {
    Ok(match kind {
        Expiring::CallRecords => {
            let sql = format!(
                "DELETE FROM call_records WHERE id IN
                   (SELECT id FROM call_records WHERE start_time < $1 LIMIT $2)
                   AND start_time < $1
                 RETURNING {}, id",
                super::calls::columns()
            );
            let gone =
                query::all(tx, &sql, &[&cutoff, &PURGE_CHUNK], rows::call_record_listed).await?;
            repair_deleted(tx, &gone, &[]).await?;
            (count(gone.len()), 0)
        }
        Expiring::CallDurations => {
            let stmt = tx
                .prepare_cached(
                    "DELETE FROM call_durations WHERE id IN
                       (SELECT id FROM call_durations WHERE start_time < $1 LIMIT $2)
                       AND start_time < $1
                     RETURNING id, carrier_id, record_id, call_id, correlation_id",
                )
                .await?;
            let gone = tx.query(&stmt, &[&cutoff, &PURGE_CHUNK]).await?;
            repair_deleted(tx, &[], &gone).await?;
            let ids: Vec<i64> = gone.iter().map(|r| r.get(0)).collect();
            let history = delete_history(tx, &ids).await?;
            (count(ids.len()), history)
        }
        Expiring::ReleasedNumbers => {
            // Locked, and checked again once locked: a number provisioned again meanwhile
            // is no longer released and stays.
            let stmt = tx
                .prepare_cached(
                    "SELECT number, carrier_id FROM numbers
                      WHERE state = $1 AND update_time < $2
                      ORDER BY carrier_id, number LIMIT $3 FOR UPDATE",
                )
                .await?;
            let rows = tx
                .query(
                    &stmt,
                    &[
                        &i64::from(NumberState::Released.code()),
                        &cutoff,
                        &PURGE_CHUNK,
                    ],
                )
                .await?;
            let (gone, carriers): (Vec<String>, Vec<String>) = rows
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
                .unzip();
            if gone.is_empty() {
                return Ok((0, 0));
            }
            // The events of each number under the carrier that released it (as on SQLite).
            let events = tx
                .prepare_cached(
                    "DELETE FROM number_events e
                      USING unnest($1::TEXT[], $2::TEXT[]) AS g(number, carrier_id)
                      WHERE e.carrier_id = g.carrier_id
                        AND (e.snapshot::jsonb ->> 'number') = g.number",
                )
                .await?;
            let events = tx.execute(&events, &[&gone, &carriers]).await?;
            // Only the released rows found: another carrier's row of the number stays.
            let numbers = tx
                .prepare_cached(
                    "DELETE FROM numbers n
                      USING unnest($1::TEXT[], $2::TEXT[]) AS g(number, carrier_id)
                      WHERE n.carrier_id = g.carrier_id AND n.number = g.number",
                )
                .await?;
            tx.execute(&numbers, &[&gone, &carriers]).await?;
            // Counted the rows found (and locked), as the SQLite backend does. With a chunk
            // shorter than PURGE_CHUNK because rows changed while waiting for their locks,
            // the purge stops early for this kind; the next purge takes the rest.
            (count(rows.len()), count(events))
        }
        Expiring::AuditEvents => {
            let stmt = tx
                .prepare_cached(
                    "DELETE FROM audit_events WHERE id IN
                       (SELECT id FROM audit_events WHERE time < $1 LIMIT $2)",
                )
                .await?;
            (count(tx.execute(&stmt, &[&cutoff, &PURGE_CHUNK]).await?), 0)
        }
        Expiring::ReconciliationRemovals => {
            // Each carrier's floor moves to the last removal purged.
            let stmt = tx
                .prepare_cached(
                    "WITH gone AS (
                         DELETE FROM recon_removed WHERE (carrier_id, sequence) IN
                           (SELECT carrier_id, sequence FROM recon_removed
                             WHERE remove_time < $1 LIMIT $2)
                         RETURNING carrier_id, sequence),
                     floors AS (
                         UPDATE carrier_heads AS h SET recon_floor = greatest(h.recon_floor, g.s)
                           FROM (SELECT carrier_id, max(sequence) AS s FROM gone
                                  GROUP BY carrier_id) g
                          WHERE h.carrier_id = g.carrier_id)
                     SELECT count(*) FROM gone",
                )
                .await?;
            let removals: i64 = tx.query_one(&stmt, &[&cutoff, &PURGE_CHUNK]).await?.get(0);
            // With the last chunk, the lines left with no call (one pass over the sums).
            let lines = if removals < PURGE_CHUNK {
                tx.execute(
                    "DELETE FROM usage_lines l
                      WHERE NOT EXISTS (SELECT 1 FROM usage_sums s WHERE s.line_id = l.id)",
                    &[],
                )
                .await?
            } else {
                0
            };
            (removals, count(lines))
        }
    })
}

fn count(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// Deletes the history of deleted reports; returns how many rows. A separate statement after
/// the reports' delete, so it sees history rows committed while that delete waited for a lock
/// (and none can be added after: the reports are gone).
async fn delete_history(tx: &Transaction<'_>, ids: &[i64]) -> PgResult<i64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let stmt = tx
        .prepare_cached("DELETE FROM call_duration_history WHERE duration_id = ANY($1)")
        .await?;
    Ok(count(tx.execute(&stmt, &[&ids]).await?))
}

/// Erases a tenant's personal data: the duration reports that match its calls or name its
/// numbers, its call records, the assignments of its numbers (assigned numbers are unassigned,
/// one UNASSIGNED event each), the assignees in past events, and every recorded request-id
/// outcome (they may hold its numbers and SIP URIs; a retry of an earlier write then runs
/// again).
///
/// The deleted and overwritten row versions stay in the data files until VACUUM (autovacuum)
/// reclaims them; that physical removal is PostgreSQL's, as the operator documentation says,
/// and nothing more is done here after the deletes.
pub async fn erase_tenant(tx: &Transaction<'_>, tenant_id: &str) -> PgResult<EraseCounts> {
    // Locks in the order every writer takes them (numbers, then carriers' heads, then call
    // records), so an erasure never deadlocks with an upload or an ingest: all the tenant's
    // numbers first, so none is assigned meanwhile.
    tx.execute(
        "SELECT number FROM numbers WHERE tenant_id = $1 ORDER BY number FOR UPDATE",
        &[&tenant_id],
    )
    .await?;
    // Assigned numbers are unassigned (their carriers see an UNASSIGNED event, announced by
    // `unassign_tenant`); then no number of the tenant holds a SIP URI or user id.
    let numbers = numbers::unassign_tenant(tx, tenant_id).await?;
    tx.execute(
        "UPDATE numbers SET sip_uri = NULL, user_id = NULL, assignment_type = NULL,
                            assign_time = NULL
         WHERE tenant_id = $1 AND (sip_uri IS NOT NULL OR user_id IS NOT NULL)",
        &[&tenant_id],
    )
    .await?;

    // Reports first, while the records they match are still there.
    let stmt = tx
        .prepare_cached(
            "DELETE FROM call_durations d
              WHERE EXISTS (SELECT 1 FROM call_records r
                             WHERE r.tenant_id = $1 AND r.carrier_id = d.carrier_id
                               AND (r.call_id = d.call_id
                                    OR (d.correlation_id != '' AND r.correlation_id = d.correlation_id)))
                 OR d.caller_number IN (SELECT number FROM numbers WHERE tenant_id = $1)
                 OR d.callee_number IN (SELECT number FROM numbers WHERE tenant_id = $1)
             RETURNING d.id, d.carrier_id, d.record_id, d.call_id, d.correlation_id",
        )
        .await?;
    let reports = tx.query(&stmt, &[&tenant_id]).await?;
    let durations: Vec<i64> = reports.iter().map(|r| r.get(0)).collect();
    delete_history(tx, &durations).await?;
    let sql = format!(
        "DELETE FROM call_records WHERE tenant_id = $1 RETURNING {}, id",
        super::calls::columns()
    );
    let records = query::all(tx, &sql, &[&tenant_id], rows::call_record_listed).await?;
    let call_records = count(records.len());
    repair_deleted(tx, &records, &reports).await?;
    // The tenant's usage lines name its numbers: they go, with their sums (all of them zero
    // now that the tenant's records are gone).
    tx.execute("DELETE FROM usage_sums WHERE tenant_id = $1", &[&tenant_id])
        .await?;
    tx.execute(
        "DELETE FROM usage_lines WHERE tenant_id = $1",
        &[&tenant_id],
    )
    .await?;

    // Past events keep what happened (assigned, to what kind of assignee) but not to whom.
    // Rewritten here rather than with jsonb_set, so the snapshot stays the text the SQLite
    // backend writes.
    let stmt = tx
        .prepare_cached(
            "SELECT carrier_id, sequence, snapshot FROM number_events
              WHERE (snapshot::jsonb ->> 'tenant_id') = $1
                AND jsonb_typeof(snapshot::jsonb -> 'assignment') = 'object'
                AND ((snapshot::jsonb #>> '{assignment,sip_uri}') != ''
                     OR (snapshot::jsonb #>> '{assignment,user_id}') != '')
              FOR UPDATE",
        )
        .await?;
    let rows = tx.query(&stmt, &[&tenant_id]).await?;
    let (mut carriers, mut sequences, mut snapshots) = (Vec::new(), Vec::new(), Vec::new());
    for r in &rows {
        let (carrier_id, sequence, snapshot) = scrubbed(r)?;
        carriers.push(carrier_id);
        sequences.push(sequence);
        snapshots.push(snapshot);
    }
    if !rows.is_empty() {
        let stmt = tx
            .prepare_cached(
                "UPDATE number_events AS e SET snapshot = u.snapshot
                   FROM unnest($1::TEXT[], $2::BIGINT[], $3::TEXT[]) AS u(carrier_id, sequence, snapshot)
                  WHERE e.carrier_id = u.carrier_id AND e.sequence = u.sequence",
            )
            .await?;
        tx.execute(&stmt, &[&carriers, &sequences, &snapshots])
            .await?;
    }

    tx.execute("DELETE FROM request_ids", &[]).await?;
    Ok(EraseCounts {
        call_records,
        call_durations: count(durations.len()),
        numbers,
        number_events: count(rows.len()),
    })
}

/// An event row's key and its snapshot without the assignee's SIP URI and user id.
fn scrubbed(r: &Row) -> PgResult<(String, i64, String)> {
    let (carrier_id, sequence, snapshot): (String, i64, String) = (r.get(0), r.get(1), r.get(2));
    let mut n: PhoneNumber = serde_json::from_str(&snapshot)
        .map_err(|e| StoreError::Internal(format!("event {sequence}: {e}")))?;
    if let Some(a) = &mut n.assignment {
        a.sip_uri.clear();
        a.user_id.clear();
    }
    let snapshot = serde_json::to_string(&n).map_err(|e| StoreError::Internal(e.to_string()))?;
    Ok((carrier_id, sequence, snapshot))
}

/// Appends audit events (ids in the order given).
pub async fn append_audit(tx: &Transaction<'_>, events: &[AuditEvent]) -> PgResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut time = Vec::with_capacity(events.len());
    let mut key_id = Vec::with_capacity(events.len());
    let mut carrier_id = Vec::with_capacity(events.len());
    let mut role = Vec::with_capacity(events.len());
    let mut rpc = Vec::with_capacity(events.len());
    let mut resource_kind = Vec::with_capacity(events.len());
    let mut item_count = Vec::with_capacity(events.len());
    let mut outcome = Vec::with_capacity(events.len());
    let mut source = Vec::with_capacity(events.len());
    for e in events {
        time.push(e.time);
        key_id.push(e.key_id.as_str());
        carrier_id.push(e.carrier_id.as_str());
        role.push(e.role.as_str());
        rpc.push(e.rpc.as_str());
        resource_kind.push(e.resource_kind.as_str());
        item_count.push(e.item_count);
        outcome.push(e.outcome.as_str());
        source.push(e.source.as_str());
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO audit_events (time, key_id, carrier_id, role, rpc, resource_kind,
                                       item_count, outcome, source)
             SELECT time, key_id, carrier_id, role, rpc, resource_kind, item_count, outcome,
                    source
               FROM unnest($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                           $6::TEXT[], $7::BIGINT[], $8::TEXT[], $9::TEXT[])
                    WITH ORDINALITY AS e(time, key_id, carrier_id, role, rpc, resource_kind,
                                         item_count, outcome, source, ord)
              ORDER BY ord",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &time,
            &key_id,
            &carrier_id,
            &role,
            &rpc,
            &resource_kind,
            &item_count,
            &outcome,
            &source,
        ],
    )
    .await?;
    Ok(())
}

/// A page of audit events, newest (highest id) first, and whether more follow.
///
/// Ids come from an identity column, drawn when a row is inserted rather than when it commits:
/// with concurrent writers an event may become visible after one with a higher id, so a reader
/// paging with `before` while events are being written can miss it (the SQLite backend's
/// single writer assigns ids in commit order).
pub async fn list_audit(
    db: &impl GenericClient,
    f: &AuditFilter,
    before: Option<i64>,
    limit: usize,
) -> PgResult<(Vec<AuditEvent>, bool)> {
    let stmt = db
        .prepare_cached(
            "SELECT id, time, key_id, carrier_id, role, rpc, resource_kind, item_count, outcome,
                    source
               FROM audit_events
              WHERE ($1::BIGINT IS NULL OR id < $1)
                AND ($2::TEXT IS NULL OR key_id = $2)
                AND ($3::TEXT IS NULL OR carrier_id = $3)
                AND ($4::TEXT IS NULL OR rpc = $4)
                AND ($5::BIGINT IS NULL OR time >= $5)
                AND ($6::BIGINT IS NULL OR time < $6)
              ORDER BY id DESC LIMIT $7",
        )
        .await?;
    let found = db
        .query(
            &stmt,
            &[
                &before,
                &f.key_id,
                &f.carrier_id,
                &f.rpc,
                &f.start,
                &f.end,
                &rows::fetch(limit),
            ],
        )
        .await?;
    Ok(rows::limited(
        query::decode_all(&found, rows::audit_event)?,
        limit,
    ))
}

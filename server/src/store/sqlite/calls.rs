//! Call records: ingestion (ownership, create / revise / duplicate / stale), reads, the feed, and
//! the quality aggregates built (at migration) or recomputed (the reference) from them.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::pairing::{self, Touched};
use super::quality;
use super::query;
use crate::domain::{
    CallRecord, CallRecordFilter, DestinationContext, IngestOutcome, QualityMetric, Refusal,
    now_micros,
};
use crate::store::pairing::RecordFact;
use crate::store::rules::{self, OwnerFact, OwnerQuestion};
use crate::store::{CallRecordCursor, KeyedPage, StoreResult};
use crate::store::{rows, sql};

pub(super) const COLUMNS: &str = "call_id, carrier_id, feed_sequence, version, content_hash, correlation_id, \
    tenant_id, call_type, direction, caller_number, callee_number, user_sip_uri, invite_time, \
    start_time, end_time, duration_us, final_sip_code, final_sip_phrase, q850_cause, successful, \
    destination_context, usage_country_code, trunk_fqdn, media_streams, quality, poor_due_to, \
    update_time";

/// Writes `r` as row `id` (a new row when `id` is `None`).
///
/// A new row is a plain INSERT: its unique keys are checked before anything is written, so
/// SQLite keeps no journal for the statement. A revision replaces its row, which deletes
/// before it inserts, so that statement is journalled (a fifth of the writer's time when every
/// row was written that way: perf, R1 at 300,000).
pub(super) fn put(conn: &Connection, id: Option<i64>, r: &CallRecord) -> StoreResult<()> {
    let streams = crate::store::media::encode(&r.media_streams);
    let verb = match id {
        Some(_) => "INSERT OR REPLACE",
        None => "INSERT",
    };
    conn.prepare_cached(&format!(
        "{verb} INTO call_records (id, {COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
         ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28)"
    ))?
    .execute(params![
        id,
        r.call_id,
        r.carrier_id,
        r.feed_sequence,
        r.version,
        r.content_hash,
        r.correlation_id,
        r.tenant_id,
        r.call_type.code(),
        r.direction.code(),
        r.caller_number,
        r.callee_number,
        r.user_sip_uri,
        r.invite_time,
        r.start_time,
        r.end_time,
        r.duration_us,
        r.final_sip_code,
        r.final_sip_phrase,
        r.q850_cause,
        r.successful,
        r.destination_context.map(DestinationContext::code),
        r.usage_country_code,
        r.trunk_fqdn,
        streams,
        r.quality.code(),
        QualityMetric::to_mask(&r.poor_due_to),
        r.update_time
    ])?;
    Ok(())
}

/// Per-job memo of carrier checks and next feed sequences.
#[derive(Default)]
struct Ingest {
    /// Carrier id → exists.
    carriers: HashMap<String, bool>,
    /// Carrier id → the last feed sequence used.
    sequences: HashMap<String, i64>,
}

impl Ingest {
    fn carrier_exists(&mut self, conn: &Connection, carrier_id: &str) -> StoreResult<bool> {
        if let Some(known) = self.carriers.get(carrier_id) {
            return Ok(*known);
        }
        let exists = super::carriers::exists(conn, carrier_id)?;
        self.carriers.insert(carrier_id.to_owned(), exists);
        Ok(exists)
    }

    fn next_sequence(&mut self, conn: &Connection, carrier_id: &str) -> StoreResult<i64> {
        let last = match self.sequences.get(carrier_id) {
            Some(last) => *last,
            None => conn
                .prepare_cached(
                    "SELECT coalesce((SELECT call_record_seq FROM carrier_heads WHERE carrier_id = ?1), 0)",
                )?
                .query_row([carrier_id], |r| r.get(0))?,
        };
        self.sequences.insert(carrier_id.to_owned(), last + 1);
        Ok(last + 1)
    }

    /// The owner of a record, or why it has none.
    fn owner(&mut self, conn: &Connection, r: &CallRecord) -> StoreResult<Result<String, Refusal>> {
        let fact = match rules::owner_question(r) {
            OwnerQuestion::CarrierExists(carrier_id) => {
                OwnerFact::CarrierExists(self.carrier_exists(conn, carrier_id)?)
            }
            OwnerQuestion::NumberHolder(number) => {
                let sql = "SELECT carrier_id, state, update_time FROM numbers WHERE number = ?1";
                let rows = query::all(conn, sql, [number], rows::number_row)?;
                OwnerFact::NumberHolder(rules::number_holder(rows))
            }
        };
        Ok(rules::call_owner(r, fact))
    }
}

/// Ingests each record independently.
pub fn ingest(conn: &Connection, records: &[CallRecord]) -> StoreResult<Vec<IngestOutcome>> {
    let mut memo = Ingest::default();
    let mut touched = Touched::default();
    let mut quality = crate::store::quality::Changes::default();
    let mut outcomes = Vec::with_capacity(records.len());
    let now = now_micros();
    for r in records {
        let carrier_id = match memo.owner(conn, r)? {
            Ok(carrier_id) => carrier_id,
            Err(reason) => {
                outcomes.push(IngestOutcome::Rejected(reason));
                continue;
            }
        };
        let stored: Option<(i64, i64, i64, String, String)> = conn
            .prepare_cached(
                "SELECT id, version, content_hash, carrier_id, correlation_id FROM call_records
                  WHERE call_id = ?1",
            )?
            .query_row([&r.call_id], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })
            .optional()?;
        let refusal = rules::ingest_refusal(
            stored
                .as_ref()
                .map(|(_, version, hash, owner, _)| (*version, *hash, owner.as_str())),
            r,
        );
        let outcome = match refusal {
            Some(refusal) => refusal,
            None => {
                // The input stays as it came: the job may run again (see `actor::run_group`).
                let mut r = r.clone();
                r.carrier_id = carrier_id.clone();
                r.feed_sequence = memo.next_sequence(conn, &carrier_id)?;
                r.update_time = now;
                let id = stored.as_ref().map(|s| s.0);
                if let Some((id, _, _, owner, _)) = &stored {
                    let sql = format!("SELECT {COLUMNS} FROM call_records WHERE id = ?1");
                    if let Some(old) = query::first(conn, &sql, [id], rows::call_record)? {
                        quality.record(owner, &old, -1);
                    }
                }
                put(conn, id, &r)?;
                quality.record(&carrier_id, &r, 1);
                if let Some((id, _, _, owner, correlation_id)) = &stored {
                    touched.note_old(owner, &r.call_id, correlation_id);
                    if *correlation_id != r.correlation_id {
                        touched.refreshed_record(*id);
                    }
                }
                touched.note(&carrier_id, &r.call_id, &r.correlation_id);
                let fact = RecordFact {
                    id: id.unwrap_or_else(|| conn.last_insert_rowid()),
                    call_id: r.call_id.clone(),
                    correlation_id: r.correlation_id.clone(),
                    start_time: r.start_time,
                    duration_us: r.duration_us,
                };
                let line = (
                    r.tenant_id.clone(),
                    r.tenant_number().to_owned(),
                    r.direction.code().into(),
                );
                touched.wrote_record(&carrier_id, fact, line);
                if id.is_some() {
                    IngestOutcome::Revised(carrier_id)
                } else {
                    IngestOutcome::Created(carrier_id)
                }
            }
        };
        outcomes.push(outcome);
    }
    // The carriers' heads move past every sequence drawn, and never back: a sequence stays
    // used even when retention or erasure deletes its record later.
    let mut head = conn.prepare_cached(
        "INSERT INTO carrier_heads (carrier_id, call_record_seq) VALUES (?1, ?2)
         ON CONFLICT (carrier_id) DO UPDATE SET call_record_seq = excluded.call_record_seq",
    )?;
    for (carrier_id, last) in &memo.sequences {
        head.execute(params![carrier_id, last])?;
    }
    pairing::repair(conn, &touched)?;
    super::quality::apply(conn, quality)?;
    Ok(outcomes)
}

/// One record of a carrier.
pub fn get(conn: &Connection, carrier_id: &str, call_id: &str) -> StoreResult<Option<CallRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM call_records WHERE call_id = ?1 AND carrier_id = ?2");
    query::first(conn, &sql, [call_id, carrier_id], rows::call_record)
}

/// A page of a carrier's records by (start time, id). Only the filters that are set become SQL
/// conditions, so the planner can use the (carrier_id, start_time) index for the time window.
pub fn list(
    conn: &Connection,
    carrier_id: &str,
    f: &CallRecordFilter,
    after: Option<CallRecordCursor>,
    limit: usize,
) -> StoreResult<KeyedPage<CallRecord, CallRecordCursor>> {
    use rusqlite::types::Value;
    let mut sql = format!("SELECT {COLUMNS}, id FROM call_records WHERE carrier_id = ?");
    let mut args: Vec<Value> = vec![Value::Text(carrier_id.to_owned())];
    for (clause, values) in sql::call_record_conditions(f, after) {
        sql.push_str(" AND ");
        sql.push_str(clause);
        args.extend(values.into_iter().map(|v| match v {
            sql::Bound::Int(i) => Value::Integer(i),
            sql::Bound::Text(t) => Value::Text(t),
        }));
    }
    sql.push_str(" ORDER BY start_time, id LIMIT ?");
    args.push(Value::Integer(rows::fetch(limit)));
    let params = rusqlite::params_from_iter(args.iter());
    query::page(conn, &sql, params, rows::call_record_listed, limit)
}

/// A carrier's feed after `after`.
pub fn feed(
    conn: &Connection,
    carrier_id: &str,
    after: i64,
    limit: usize,
) -> StoreResult<Vec<CallRecord>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM call_records WHERE carrier_id = ?1 AND feed_sequence > ?2
         ORDER BY feed_sequence LIMIT ?3"
    );
    let params = params![carrier_id, after, limit as i64];
    query::all(conn, &sql, params, rows::call_record)
}

/// The carrier's last feed sequence (0 before its first record).
pub fn head(conn: &Connection, carrier_id: &str) -> StoreResult<i64> {
    let sql = "SELECT call_record_seq FROM carrier_heads WHERE carrier_id = ?1";
    Ok(query::first(conn, sql, [carrier_id], rows::int)?.unwrap_or(0))
}

/// The question answered from the records themselves, every record of the period read and
/// aggregated: the reference (see [`quality::recomputed`]).
pub fn quality_reference(
    conn: &Connection,
    q: &crate::domain::QualityQuery,
) -> StoreResult<Vec<crate::store::quality::QualityRow>> {
    let carriers: Vec<String> = match &q.carrier_id {
        Some(c) => vec![c.clone()],
        None => conn
            .prepare_cached("SELECT carrier_id FROM carriers")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?,
    };
    let mut changes = crate::store::quality::Changes::default();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM call_records INDEXED BY call_records_by_start
          WHERE carrier_id = ?1 AND start_time >= ?2 AND start_time < ?3"
    ))?;
    let hour = crate::store::pairing::HOUR_US;
    for carrier_id in &carriers {
        let mut rows = stmt.query(params![carrier_id, q.start_hour * hour, q.end_hour * hour])?;
        while let Some(row) = rows.next()? {
            changes.record(carrier_id, &rows::call_record(row)?, 1);
        }
    }
    Ok(crate::store::quality::recomputed(q, changes)?)
}

/// Builds every carrier's cells (empty before) from the stored records: the migration that
/// adds them runs it once, logging each carrier.
pub(super) fn build_quality(conn: &Connection) -> StoreResult<()> {
    let carriers: Vec<String> = conn
        .prepare("SELECT DISTINCT carrier_id FROM call_records")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let total = carriers.len();
    for (n, carrier_id) in carriers.iter().enumerate() {
        let started = std::time::Instant::now();
        let mut changes = crate::store::quality::Changes::default();
        let mut records = 0_u64;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM call_records WHERE carrier_id = ?1"
        ))?;
        let mut rows = stmt.query([carrier_id])?;
        while let Some(row) = rows.next()? {
            let record = rows::call_record(row)?;
            changes.record(carrier_id, &record, 1);
            records += 1;
        }
        quality::apply(conn, changes)?;
        tracing::info!(
            carrier = %carrier_id,
            records,
            took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            done = n + 1,
            of = total,
            "quality aggregates built for a carrier"
        );
    }
    Ok(())
}

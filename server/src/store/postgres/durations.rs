//! Duration reports (the port of `sqlite::durations`' report and list).
//!
//! A batch is stored set-based: one lookup of the stored reports, the outcomes decided in
//! memory in batch order (a later report of the batch sees what an earlier one wrote, as on
//! SQLite), then one INSERT of the new reports, one UPDATE of the corrected ones and one INSERT
//! of the replaced contents into `call_duration_history`. A correction's UPDATE only applies to
//! the correction count it was decided against; a concurrent writer that got there first makes
//! the transaction run again ([`PgError::Conflict`], or the unique index on a new report).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use deadpool_postgres::{GenericClient, Transaction};

use super::pool::{PgError, PgResult};
use super::query;
use crate::domain::{CallDuration, DurationOutcome, DurationReport, Micros, now_micros};
use crate::store::KeyedPage;
use crate::store::{rows, rules};

const COLUMNS: &str = "record_id, call_id, correlation_id, caller_number, callee_number, start_time, \
    duration_us, carrier_id, corrections, create_time, update_time";

/// What the batch knows of one record id: as stored, then as each report leaves it.
struct Slot {
    /// The stored row's id; `None` for a report this batch creates.
    id: Option<i64>,
    /// The stored row's correction count.
    stored_corrections: i64,
    /// The current content and correction count.
    content: DurationReport,
    corrections: i64,
    /// Contents this batch replaced, with their correction numbers.
    replaced: Vec<(i64, DurationReport)>,
}

/// Report contents as column arrays.
#[derive(Default)]
struct Reports<'a> {
    record_id: Vec<&'a str>,
    call_id: Vec<&'a str>,
    correlation_id: Vec<&'a str>,
    caller_number: Vec<&'a str>,
    callee_number: Vec<&'a str>,
    start_time: Vec<i64>,
    duration_us: Vec<i64>,
    corrections: Vec<i64>,
}

impl<'a> Reports<'a> {
    fn push(&mut self, r: &'a DurationReport, corrections: i64) {
        self.record_id.push(&r.record_id);
        self.call_id.push(&r.call_id);
        self.correlation_id.push(&r.correlation_id);
        self.caller_number.push(&r.caller_number);
        self.callee_number.push(&r.callee_number);
        self.start_time.push(r.start_time);
        self.duration_us.push(r.duration_us);
        self.corrections.push(corrections);
    }
}

/// Stores each report independently: new, duplicate, or correction (history kept).
pub async fn report(
    tx: &Transaction<'_>,
    carrier_id: &str,
    reports: &[DurationReport],
) -> PgResult<Vec<DurationOutcome>> {
    let now = now_micros();
    let record_ids: Vec<&str> = reports.iter().map(|r| r.record_id.as_str()).collect();
    let stmt = tx
        .prepare_cached(
            "SELECT record_id, call_id, correlation_id, caller_number, callee_number, start_time,
                    duration_us, id, corrections
               FROM call_durations WHERE carrier_id = $1 AND record_id = ANY($2)",
        )
        .await?;
    let stored = tx.query(&stmt, &[&carrier_id, &record_ids]).await?;
    let mut slots: HashMap<String, Slot> = query::decode_all(&stored, |row| {
        let corrections: i64 = row.col(8)?;
        let slot = Slot {
            id: Some(row.col(7)?),
            stored_corrections: corrections,
            content: rows::duration_report(row, 0)?,
            corrections,
            replaced: Vec::new(),
        };
        Ok((slot.content.record_id.clone(), slot))
    })?
    .into_iter()
    .collect();

    let mut outcomes = Vec::with_capacity(reports.len());
    // Record ids in first-seen order of those this batch changes.
    let mut changed: Vec<&str> = Vec::new();
    for r in reports {
        let outcome = rules::duration_outcome(slots.get(&r.record_id).map(|s| &s.content), r);
        match slots.entry(r.record_id.clone()) {
            Entry::Vacant(e) => {
                changed.push(&r.record_id);
                e.insert(Slot {
                    id: None,
                    stored_corrections: 0,
                    content: r.clone(),
                    corrections: 0,
                    replaced: Vec::new(),
                });
            }
            Entry::Occupied(_) if outcome == DurationOutcome::Unchanged => {}
            Entry::Occupied(mut e) => {
                let slot = e.get_mut();
                if slot.id.is_some() && slot.replaced.is_empty() {
                    changed.push(&r.record_id);
                }
                slot.corrections += 1;
                let old = std::mem::replace(&mut slot.content, r.clone());
                slot.replaced.push((slot.corrections, old));
            }
        }
        outcomes.push(outcome);
    }
    if changed.is_empty() {
        return Ok(outcomes);
    }

    let mut inserts = Reports::default();
    let mut updates = Reports::default();
    let mut update_ids: Vec<i64> = Vec::new();
    let mut update_old: Vec<i64> = Vec::new();
    for record_id in &changed {
        let Some(slot) = slots.get(*record_id) else {
            continue;
        };
        match slot.id {
            None => inserts.push(&slot.content, slot.corrections),
            Some(id) => {
                update_ids.push(id);
                update_old.push(slot.stored_corrections);
                updates.push(&slot.content, slot.corrections);
            }
        }
    }
    // Record id → row id, for the history of reports created and corrected in this batch.
    let mut ids: HashMap<String, i64> = HashMap::new();
    if !inserts.record_id.is_empty() {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO call_durations (record_id, call_id, correlation_id, caller_number,
                   callee_number, start_time, duration_us, corrections, carrier_id, create_time,
                   update_time)
                 SELECT u.*, $9, $10, $10
                   FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                               $6::BIGINT[], $7::BIGINT[], $8::BIGINT[]) AS u
                 RETURNING record_id, id",
            )
            .await?;
        for row in tx
            .query(
                &stmt,
                &[
                    &inserts.record_id,
                    &inserts.call_id,
                    &inserts.correlation_id,
                    &inserts.caller_number,
                    &inserts.callee_number,
                    &inserts.start_time,
                    &inserts.duration_us,
                    &inserts.corrections,
                    &carrier_id,
                    &now,
                ],
            )
            .await?
        {
            ids.insert(row.get(0), row.get(1));
        }
    }
    if !update_ids.is_empty() {
        let stmt = tx
            .prepare_cached(
                "UPDATE call_durations AS d SET call_id = u.call_id,
                   correlation_id = u.correlation_id, caller_number = u.caller_number,
                   callee_number = u.callee_number, start_time = u.start_time,
                   duration_us = u.duration_us, corrections = u.corrections, update_time = $10
                   FROM unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                               $6::TEXT[], $7::BIGINT[], $8::BIGINT[], $9::BIGINT[])
                        AS u(id, old_corrections, call_id, correlation_id, caller_number,
                             callee_number, start_time, duration_us, corrections)
                  WHERE d.id = u.id AND d.corrections = u.old_corrections",
            )
            .await?;
        let updated = tx
            .execute(
                &stmt,
                &[
                    &update_ids,
                    &update_old,
                    &updates.call_id,
                    &updates.correlation_id,
                    &updates.caller_number,
                    &updates.callee_number,
                    &updates.start_time,
                    &updates.duration_us,
                    &updates.corrections,
                    &now,
                ],
            )
            .await?;
        if updated != update_ids.len() as u64 {
            // A concurrent writer corrected (or removed) a report since it was read.
            return Err(PgError::Conflict);
        }
    }

    // The replaced contents.
    let mut history_ids: Vec<i64> = Vec::new();
    let mut corrections: Vec<i64> = Vec::new();
    let mut old = Reports::default();
    for record_id in &changed {
        let Some(slot) = slots.get(*record_id) else {
            continue;
        };
        let Some(id) = slot.id.or_else(|| ids.get(*record_id).copied()) else {
            continue;
        };
        for (correction, content) in &slot.replaced {
            history_ids.push(id);
            corrections.push(*correction);
            old.push(content, *correction);
        }
    }
    if !history_ids.is_empty() {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO call_duration_history (duration_id, correction, call_id,
                   correlation_id, caller_number, callee_number, start_time, duration_us,
                   replaced_time)
                 SELECT u.*, $9
                   FROM unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                               $6::TEXT[], $7::BIGINT[], $8::BIGINT[]) AS u",
            )
            .await?;
        tx.execute(
            &stmt,
            &[
                &history_ids,
                &corrections,
                &old.call_id,
                &old.correlation_id,
                &old.caller_number,
                &old.callee_number,
                &old.start_time,
                &old.duration_us,
                &now,
            ],
        )
        .await?;
    }
    // The pairing state: the changed reports' keys as they were and as they are.
    let mut touched = super::pairing::Touched::default();
    for record_id in &changed {
        let Some(slot) = slots.get(*record_id) else {
            continue;
        };
        let now = &slot.content;
        touched.note(carrier_id, &now.call_id, &now.correlation_id);
        if let (Some(id), Some((_, stored))) = (slot.id, slot.replaced.first()) {
            touched.note_old(carrier_id, &stored.call_id, &stored.correlation_id);
            if (&stored.call_id, &stored.correlation_id) != (&now.call_id, &now.correlation_id) {
                touched.refreshed_report(id);
            }
        }
    }
    if super::pairing::repair(tx, &touched).await? {
        super::listen::notify(tx, super::listen::Channel::Reconciliation).await?;
    }
    Ok(outcomes)
}

/// A page of a carrier's reports by (start time, id).
pub async fn list(
    db: &impl GenericClient,
    carrier_id: &str,
    from: Option<Micros>,
    to: Option<Micros>,
    after: Option<(Micros, i64)>,
    limit: usize,
) -> PgResult<KeyedPage<CallDuration, (Micros, i64)>> {
    let from = from.unwrap_or(i64::MIN);
    let to = to.unwrap_or(i64::MAX);
    let limit_plus_one = rows::fetch(limit);
    // Two statements rather than `$n IS NULL OR ...`, so that the cursor is an index bound.
    let found = match after {
        None => {
            let stmt = db
                .prepare_cached(&format!(
                    "SELECT {COLUMNS}, id FROM call_durations
                     WHERE carrier_id = $1 AND start_time >= $2 AND start_time < $3
                     ORDER BY start_time, id LIMIT $4"
                ))
                .await?;
            db.query(&stmt, &[&carrier_id, &from, &to, &limit_plus_one])
                .await?
        }
        Some((after_start, after_id)) => {
            let stmt = db
                .prepare_cached(&format!(
                    "SELECT {COLUMNS}, id FROM call_durations
                     WHERE carrier_id = $1 AND start_time >= $2 AND start_time < $3
                       AND (start_time, id) > ($4, $5)
                     ORDER BY start_time, id LIMIT $6"
                ))
                .await?;
            db.query(
                &stmt,
                &[
                    &carrier_id,
                    &from,
                    &to,
                    &after_start,
                    &after_id,
                    &limit_plus_one,
                ],
            )
            .await?
        }
    };
    let items = query::decode_all(&found, rows::call_duration_listed)?;
    Ok(rows::limited(items, limit))
}

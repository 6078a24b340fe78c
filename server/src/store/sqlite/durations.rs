//! Carriers' duration reports: stored (new, duplicate or correction) and listed.

use super::pairing::{self, Touched};
use std::sync::LazyLock;

use rusqlite::types::ToSql;
use rusqlite::{Connection, named_params};

use super::query;
use crate::domain::{CallDuration, DurationOutcome, DurationReport, Micros, now_micros};
use crate::store::{KeyedPage, StoreResult};
use crate::store::{rows, rules};

const COLUMNS: &str = "record_id, call_id, correlation_id, caller_number, callee_number, start_time, \
    duration_us, carrier_id, corrections, create_time, update_time";

/// A carrier's stored report by record id, with its row id (written once, not per report).
static STORED: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {COLUMNS}, id FROM call_durations WHERE carrier_id = ?1 AND record_id = ?2")
});

/// A new report (no correction yet).
static INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO call_durations ({COLUMNS}) VALUES (:record_id, :call_id, :correlation_id,
           :caller_number, :callee_number, :start_time, :duration_us, :carrier_id, 0, :now, :now)"
    )
});

/// A report's content as named parameters: `:call_id, :correlation_id, :caller_number,
/// :callee_number, :start_time, :duration_us`.
fn content(r: &DurationReport) -> [(&'static str, &dyn ToSql); 6] {
    [
        (":call_id", &r.call_id),
        (":correlation_id", &r.correlation_id),
        (":caller_number", &r.caller_number),
        (":callee_number", &r.callee_number),
        (":start_time", &r.start_time),
        (":duration_us", &r.duration_us),
    ]
}

/// Runs `sql` with `named` and the content of `r` as parameters.
fn execute_with(
    conn: &Connection,
    sql: &str,
    named: &[(&str, &dyn ToSql)],
    r: &DurationReport,
) -> StoreResult<()> {
    let params = [named, &content(r)[..]].concat();
    conn.prepare_cached(sql)?.execute(params.as_slice())?;
    Ok(())
}

/// Inserts a new report (no correction yet).
pub(super) fn insert(
    conn: &Connection,
    carrier_id: &str,
    r: &DurationReport,
    now: i64,
) -> StoreResult<()> {
    let named: [(&str, &dyn ToSql); 3] = [
        (":record_id", &r.record_id),
        (":carrier_id", &carrier_id),
        (":now", &now),
    ];
    execute_with(conn, &INSERT, &named, r)
}

/// Stores each report independently: new, duplicate, or correction (history kept).
pub fn report(
    conn: &Connection,
    carrier_id: &str,
    reports: &[DurationReport],
) -> StoreResult<Vec<DurationOutcome>> {
    let now = now_micros();
    let mut touched = Touched::default();
    let mut outcomes = Vec::with_capacity(reports.len());
    for r in reports {
        let stored = query::first(
            conn,
            &STORED,
            [carrier_id, &r.record_id],
            rows::call_duration_listed,
        )?;
        let outcome = rules::duration_outcome(stored.as_ref().map(|(old, _)| &old.report), r);
        if outcome != DurationOutcome::Unchanged {
            touched.note(carrier_id, &r.call_id, &r.correlation_id);
        }
        match stored {
            None => insert(conn, carrier_id, r, now)?,
            Some(_) if outcome == DurationOutcome::Unchanged => {}
            Some((old, (_, id))) => {
                touched.note_old(carrier_id, &old.report.call_id, &old.report.correlation_id);
                if (&old.report.call_id, &old.report.correlation_id)
                    != (&r.call_id, &r.correlation_id)
                {
                    touched.refreshed_report(id);
                }
                let correction = old.corrections + 1;
                execute_with(
                    conn,
                    "INSERT INTO call_duration_history (duration_id, correction, call_id, correlation_id,
                       caller_number, callee_number, start_time, duration_us, replaced_time)
                     VALUES (:id, :correction, :call_id, :correlation_id, :caller_number,
                       :callee_number, :start_time, :duration_us, :now)",
                    &[(":id", &id), (":correction", &correction), (":now", &now)],
                    &old.report,
                )?;
                execute_with(
                    conn,
                    "UPDATE call_durations SET call_id = :call_id, correlation_id = :correlation_id,
                       caller_number = :caller_number, callee_number = :callee_number,
                       start_time = :start_time, duration_us = :duration_us,
                       corrections = corrections + 1, update_time = :now
                     WHERE id = :id",
                    &[(":id", &id), (":now", &now)],
                    r,
                )?;
            }
        }
        outcomes.push(outcome);
    }
    pairing::repair(conn, &touched)?;
    Ok(outcomes)
}

/// A page of a carrier's reports by (start time, id).
pub fn list(
    conn: &Connection,
    carrier_id: &str,
    from: Option<Micros>,
    to: Option<Micros>,
    after: Option<(Micros, i64)>,
    limit: usize,
) -> StoreResult<KeyedPage<CallDuration, (Micros, i64)>> {
    let (after_start, after_id) = after.unzip();
    let sql = format!(
        "SELECT {COLUMNS}, id FROM call_durations
         WHERE carrier_id = :c AND start_time >= :from AND start_time < :to
           AND (:after_start IS NULL OR (start_time, id) > (:after_start, :after_id))
         ORDER BY start_time, id LIMIT :limit"
    );
    let params = named_params! {
        ":c": carrier_id,
        ":from": from.unwrap_or(i64::MIN),
        ":to": to.unwrap_or(i64::MAX),
        ":after_start": after_start,
        ":after_id": after_id,
        ":limit": rows::fetch(limit),
    };
    query::page(conn, &sql, params, rows::call_duration_listed, limit)
}

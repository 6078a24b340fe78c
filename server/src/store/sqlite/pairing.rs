//! The pairing state (`recon_items`), kept in the transaction of every write that can change
//! it: a write notes the call ids and correlation ids of the rows it wrote or deleted, old and
//! new ([`Touched`]), and before it commits [`repair`] reads the closed set of records and
//! reports those ids reach, pairs it again (`store::pairing`) and replaces the items of those
//! rows. A correlation-id group is re-paired only when a write touched it, never the period.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rusqlite::{Connection, params};

use crate::store::StoreResult;
use crate::store::pairing::{HOUR_US, Item, Pairing, RecordFact, ReportFact};

/// What a write touched, per carrier: call ids and correlation ids (empty ones are dropped),
/// and the rows it deleted.
#[derive(Debug, Default)]
pub struct Touched {
    /// Carrier → (call ids, correlation ids).
    keys: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>,
    /// Records deleted: their items go.
    deleted_records: Vec<i64>,
    /// Reports deleted: their items go.
    deleted_reports: Vec<i64>,
}

impl Touched {
    /// Notes a record or report of `carrier_id` with `call_id` and `correlation_id` (as it was,
    /// or as it is now: note both when a write changes them).
    pub fn note(&mut self, carrier_id: &str, call_id: &str, correlation_id: &str) {
        let (calls, correlations) = self.keys.entry(carrier_id.to_owned()).or_default();
        if !call_id.is_empty() {
            calls.insert(call_id.to_owned());
        }
        if !correlation_id.is_empty() {
            correlations.insert(correlation_id.to_owned());
        }
    }

    /// Notes a deleted record (and its keys).
    pub fn deleted_record(
        &mut self,
        id: i64,
        carrier_id: &str,
        call_id: &str,
        correlation_id: &str,
    ) {
        self.deleted_records.push(id);
        self.note(carrier_id, call_id, correlation_id);
    }

    /// Notes a deleted report (and its keys).
    pub fn deleted_report(
        &mut self,
        id: i64,
        carrier_id: &str,
        call_id: &str,
        correlation_id: &str,
    ) {
        self.deleted_reports.push(id);
        self.note(carrier_id, call_id, correlation_id);
    }
}

/// A JSON array of `values`, for `IN (SELECT value FROM json_each(?))`.
fn json_list<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    serde_json::to_string(&values.into_iter().collect::<Vec<_>>()).unwrap_or_else(|_| "[]".into())
}

/// A JSON array of ids.
fn json_ids(ids: impl IntoIterator<Item = i64>) -> String {
    serde_json::to_string(&ids.into_iter().collect::<Vec<_>>()).unwrap_or_else(|_| "[]".into())
}

/// What an item adds to its hour's row of `recon_hours`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct HourSums {
    /// Records.
    platform_count: i64,
    /// Their durations.
    platform_us: i64,
    /// Pairs.
    paired_count: i64,
    /// Their reports' durations.
    paired_carrier_us: i64,
    /// Reports alone.
    lone_count: i64,
    /// Their durations.
    lone_us: i64,
}

/// The changes a write makes to the aggregates, applied once at the end of [`repair`].
#[derive(Debug, Default)]
struct Deltas {
    /// (carrier, hour) → change.
    hours: HashMap<(String, i64), HourSums>,
    /// (carrier, hour, class) → change in pairs.
    classes: HashMap<(String, i64, i64), i64>,
}

impl Deltas {
    /// Adds (`sign` 1) or takes away (`sign` -1) an item's contribution.
    fn count(&mut self, carrier_id: &str, item: &Item, sign: i64) {
        let hour = item.period_time.div_euclid(HOUR_US);
        let sums = self.hours.entry((carrier_id.to_owned(), hour)).or_default();
        if let Some(p) = item.platform_us {
            sums.platform_count += sign;
            sums.platform_us += sign * p;
        }
        match (item.platform_us, item.carrier_us, item.difference_class()) {
            (Some(_), Some(c), Some(class)) => {
                sums.paired_count += sign;
                sums.paired_carrier_us += sign * c;
                *self
                    .classes
                    .entry((carrier_id.to_owned(), hour, class))
                    .or_default() += sign;
            }
            (None, Some(c), _) => {
                sums.lone_count += sign;
                sums.lone_us += sign * c;
            }
            _ => {}
        }
    }

    /// Writes the changes (rows that come to nothing are kept: a later write may fill them).
    fn apply(self, conn: &Connection) -> StoreResult<()> {
        let mut hours = conn.prepare_cached(
            "INSERT INTO recon_hours (carrier_id, hour, platform_count, platform_us, paired_count,
                                      paired_carrier_us, lone_count, lone_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (carrier_id, hour) DO UPDATE SET
                 platform_count = platform_count + excluded.platform_count,
                 platform_us = platform_us + excluded.platform_us,
                 paired_count = paired_count + excluded.paired_count,
                 paired_carrier_us = paired_carrier_us + excluded.paired_carrier_us,
                 lone_count = lone_count + excluded.lone_count,
                 lone_us = lone_us + excluded.lone_us",
        )?;
        for ((carrier_id, hour), d) in self.hours {
            if d == HourSums::default() {
                continue;
            }
            hours.execute(params![
                carrier_id,
                hour,
                d.platform_count,
                d.platform_us,
                d.paired_count,
                d.paired_carrier_us,
                d.lone_count,
                d.lone_us
            ])?;
        }
        let mut classes = conn.prepare_cached(
            "INSERT INTO recon_classes (carrier_id, hour, diff_class, pairs) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (carrier_id, hour, diff_class) DO UPDATE SET pairs = pairs + excluded.pairs",
        )?;
        for ((carrier_id, hour, class), n) in self.classes {
            if n != 0 {
                classes.execute(params![carrier_id, hour, class, n])?;
            }
        }
        Ok(())
    }
}

/// Re-pairs everything `touched` reaches and replaces those rows' items, keeping the hour
/// aggregates in step.
pub fn repair(conn: &Connection, touched: &Touched) -> StoreResult<()> {
    let mut deltas = Deltas::default();
    delete_items(
        conn,
        touched.deleted_records.iter().copied(),
        touched.deleted_reports.iter().copied(),
        &mut deltas,
    )?;
    for (carrier_id, (calls, correlations)) in &touched.keys {
        repair_carrier(conn, carrier_id, calls, correlations, &mut deltas)?;
    }
    deltas.apply(conn)
}

/// Deletes the items of these records and reports (two statements: each probes its own
/// unique index, where one with `OR` would scan the table).
fn delete_items(
    conn: &Connection,
    records: impl IntoIterator<Item = i64>,
    reports: impl IntoIterator<Item = i64>,
    deltas: &mut Deltas,
) -> StoreResult<()> {
    for (sql, ids) in [
        (
            "DELETE FROM recon_items WHERE record_id IN (SELECT value FROM json_each(?1))
             RETURNING carrier_id, record_id, report_id, period_time, platform_us, carrier_us",
            json_ids(records),
        ),
        (
            "DELETE FROM recon_items WHERE report_id IN (SELECT value FROM json_each(?1))
             RETURNING carrier_id, record_id, report_id, period_time, platform_us, carrier_us",
            json_ids(reports),
        ),
    ] {
        let mut stmt = conn.prepare_cached(sql)?;
        let gone = stmt.query_map([ids], |r| Ok((r.get::<_, String>(0)?, item_at(r, 1)?)))?;
        for row in gone {
            let (carrier_id, item) = row?;
            deltas.count(&carrier_id, &item, -1);
        }
    }
    Ok(())
}

/// The item in columns `at..at + 5` of `r`: `record_id, report_id, period_time, platform_us,
/// carrier_us`.
fn item_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Item> {
    Ok(Item {
        record: r.get(at)?,
        report: r.get(at + 1)?,
        period_time: r.get(at + 2)?,
        platform_us: r.get(at + 3)?,
        carrier_us: r.get(at + 4)?,
    })
}

/// A carrier's records with one of a list of call ids. Each statement here names the index it
/// must probe (`INDEXED BY`, or a unary `+` that keeps the carrier's own index out): with an
/// `IN` list the planner may otherwise pick the carrier's index and scan all of its rows.
const RECORDS_BY_CALL: &str = "SELECT id, call_id, correlation_id, start_time, duration_us
      FROM call_records
     WHERE call_id IN (SELECT value FROM json_each(?2)) AND +carrier_id = ?1";
/// A carrier's records with one of a list of correlation ids.
const RECORDS_BY_CORRELATION: &str = "SELECT id, call_id, correlation_id, start_time, duration_us
      FROM call_records INDEXED BY call_records_by_correlation
     WHERE carrier_id = ?1 AND correlation_id IN (SELECT value FROM json_each(?2))";
/// A carrier's reports with one of a list of call ids.
const REPORTS_BY_CALL: &str = "SELECT id, call_id, correlation_id, start_time, duration_us,
           update_time, record_id
      FROM call_durations INDEXED BY call_durations_by_call
     WHERE carrier_id = ?1 AND call_id IN (SELECT value FROM json_each(?2))";
/// A carrier's reports with one of a list of correlation ids.
const REPORTS_BY_CORRELATION: &str = "SELECT id, call_id, correlation_id, start_time, duration_us,
           update_time, record_id
      FROM call_durations INDEXED BY call_durations_by_correlation
     WHERE carrier_id = ?1 AND correlation_id IN (SELECT value FROM json_each(?2))";

/// Runs one of the statements above for `carrier_id` and `keys` (nothing for no keys), handing
/// each row, read by `read`, to `each`.
fn fetch<'k, T>(
    conn: &Connection,
    sql: &str,
    carrier_id: &str,
    keys: impl Iterator<Item = &'k String>,
    read: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    mut each: impl FnMut(T),
) -> StoreResult<()> {
    let mut keys = keys.map(String::as_str).peekable();
    if keys.peek().is_none() {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(sql)?;
    for row in stmt.query_map(params![carrier_id, json_list(keys)], read)? {
        each(row?);
    }
    Ok(())
}

/// A record's facts, from the columns of [`RECORDS_BY_CALL`].
fn record_fact(r: &rusqlite::Row<'_>) -> rusqlite::Result<RecordFact> {
    Ok(RecordFact {
        id: r.get(0)?,
        call_id: r.get(1)?,
        correlation_id: r.get(2)?,
        start_time: r.get(3)?,
        duration_us: r.get(4)?,
    })
}

/// A report's facts, from the columns of [`REPORTS_BY_CALL`].
fn report_fact(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReportFact> {
    Ok(ReportFact {
        id: r.get(0)?,
        call_id: r.get(1)?,
        correlation_id: r.get(2)?,
        start_time: r.get(3)?,
        duration_us: r.get(4)?,
        update_time: r.get(5)?,
        record_id: r.get(6)?,
    })
}

/// Re-pairs one carrier's touched keys.
fn repair_carrier(
    conn: &Connection,
    carrier_id: &str,
    calls: &BTreeSet<String>,
    correlations: &BTreeSet<String>,
    deltas: &mut Deltas,
) -> StoreResult<()> {
    let mut records: HashMap<i64, RecordFact> = HashMap::new();
    let mut reports: HashMap<i64, ReportFact> = HashMap::new();
    // The rows carrying a touched call id.
    fetch(
        conn,
        RECORDS_BY_CALL,
        carrier_id,
        calls.iter(),
        record_fact,
        |r| {
            records.insert(r.id, r);
        },
    )?;
    fetch(
        conn,
        REPORTS_BY_CALL,
        carrier_id,
        calls.iter(),
        report_fact,
        |d| {
            reports.insert(d.id, d);
        },
    )?;
    // The correlation ids widen to theirs: such a row may enter or leave stage 2
    // (`Pairing::closure_of`). Then every row of those correlation ids.
    let mut widened: BTreeSet<&str> = correlations.iter().map(String::as_str).collect();
    widened.extend(records.values().map(|r| r.correlation_id.as_str()));
    widened.extend(reports.values().map(|d| d.correlation_id.as_str()));
    widened.remove("");
    let widened: Vec<String> = widened.into_iter().map(str::to_owned).collect();
    let mut more_records = Vec::new();
    fetch(
        conn,
        RECORDS_BY_CORRELATION,
        carrier_id,
        widened.iter(),
        record_fact,
        |r| {
            more_records.push(r);
        },
    )?;
    let mut more_reports = Vec::new();
    fetch(
        conn,
        REPORTS_BY_CORRELATION,
        carrier_id,
        widened.iter(),
        report_fact,
        |d| {
            more_reports.push(d);
        },
    )?;
    for r in more_records {
        records.entry(r.id).or_insert(r);
    }
    for d in more_reports {
        reports.entry(d.id).or_insert(d);
    }
    // The records those reports name, then the reports naming any of the records: both in
    // stage 1, so nothing further is reached. Call ids already read are not read again.
    let have: BTreeSet<&str> = records.values().map(|r| r.call_id.as_str()).collect();
    let named: BTreeSet<String> = reports
        .values()
        .map(|d| d.call_id.as_str())
        .filter(|c| !c.is_empty() && !calls.contains(*c) && !have.contains(c))
        .map(str::to_owned)
        .collect();
    let mut named_records = Vec::new();
    fetch(
        conn,
        RECORDS_BY_CALL,
        carrier_id,
        named.iter(),
        record_fact,
        |r| {
            named_records.push(r);
        },
    )?;
    for r in named_records {
        records.entry(r.id).or_insert(r);
    }
    let naming: BTreeSet<String> = records
        .values()
        .map(|r| r.call_id.as_str())
        .filter(|c| !calls.contains(*c))
        .map(str::to_owned)
        .collect();
    let mut naming_reports = Vec::new();
    fetch(
        conn,
        REPORTS_BY_CALL,
        carrier_id,
        naming.iter(),
        report_fact,
        |d| {
            naming_reports.push(d);
        },
    )?;
    for d in naming_reports {
        reports.entry(d.id).or_insert(d);
    }
    let records: Vec<RecordFact> = records.into_values().collect();
    let reports: Vec<ReportFact> = reports.into_values().collect();
    let pairing = Pairing::of(&records, &reports);
    delete_items(
        conn,
        records.iter().map(|r| r.id),
        reports.iter().map(|d| d.id),
        deltas,
    )?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO recon_items (carrier_id, record_id, report_id, kind, item_key, period_time,
                                  platform_us, carrier_us, diff_us, diff_class)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for item in pairing.items {
        deltas.count(carrier_id, &item, 1);
        insert.execute(params![
            carrier_id,
            item.record,
            item.report,
            item.kind().code(),
            item.key(),
            item.period_time,
            item.platform_us,
            item.carrier_us,
            item.difference_us(),
            item.difference_class()
        ])?;
    }
    Ok(())
}

/// Builds every carrier's pairing state (empty before) from the stored records and reports:
/// the items by the set-based rules, then their difference classes and the hour aggregates.
/// The migration that adds the state runs it once, logging each carrier.
pub(super) fn build(conn: &Connection) -> StoreResult<()> {
    let carriers: Vec<String> = conn
        .prepare("SELECT carrier_id FROM call_records UNION SELECT carrier_id FROM call_durations")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let total = carriers.len();
    for (n, carrier_id) in carriers.iter().enumerate() {
        let started = std::time::Instant::now();
        let items = super::reconcile::reference_items(conn, carrier_id)?;
        let mut deltas = Deltas::default();
        let mut classed =
            conn.prepare_cached("UPDATE recon_items SET diff_class = ?2 WHERE id = ?1")?;
        let mut read = conn.prepare(
            "SELECT id, record_id, report_id, period_time, platform_us, carrier_us
               FROM recon_items WHERE carrier_id = ?1",
        )?;
        let rows = read.query_map([carrier_id], |r| Ok((r.get::<_, i64>(0)?, item_at(r, 1)?)))?;
        for row in rows {
            let (id, item) = row?;
            if let Some(class) = item.difference_class() {
                classed.execute(params![id, class])?;
            }
            deltas.count(carrier_id, &item, 1);
        }
        deltas.apply(conn)?;
        tracing::info!(
            carrier = %carrier_id,
            items,
            took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            done = n + 1,
            of = total,
            "reconciliation state built for a carrier"
        );
    }
    Ok(())
}

/// Every item of `carrier_id` as stored, in [`Pairing`]'s order (for the tests that hold the
/// state to a pairing of every fact).
pub fn items(conn: &Connection, carrier_id: &str) -> StoreResult<Vec<Item>> {
    let mut stmt = conn.prepare_cached(
        "SELECT record_id, report_id, period_time, platform_us, carrier_us FROM recon_items
          WHERE carrier_id = ?1
          ORDER BY record_id IS NULL, record_id, report_id",
    )?;
    let items = stmt
        .query_map([carrier_id], |r| item_at(r, 0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(items)
}

/// Every record and report of `carrier_id` as stored, as pairing reads them (for the tests
/// that hold the state to a pairing of every fact).
pub fn facts(
    conn: &Connection,
    carrier_id: &str,
) -> StoreResult<(Vec<RecordFact>, Vec<ReportFact>)> {
    let records = conn
        .prepare(
            "SELECT id, call_id, correlation_id, start_time, duration_us FROM call_records
              WHERE carrier_id = ?1",
        )?
        .query_map([carrier_id], record_fact)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let reports = conn
        .prepare(
            "SELECT id, call_id, correlation_id, start_time, duration_us, update_time, record_id
               FROM call_durations WHERE carrier_id = ?1",
        )?
        .query_map([carrier_id], report_fact)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((records, reports))
}

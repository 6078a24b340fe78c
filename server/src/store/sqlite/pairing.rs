//! The pairing state (`recon_items`), kept in the transaction of every write that can change
//! it: a write notes the call ids and correlation ids of the rows it wrote or deleted, old and
//! new ([`Touched`]), and before it commits [`repair`] reads the closed set of records and
//! reports those ids reach, pairs it again (`store::pairing`) and compares the result with the
//! items stored for those rows: an entry (a record's item, or a lone report's) that changed is
//! written again at the next position of its carrier's reconciliation feed, one that is gone
//! leaves a row in `recon_removed` at its own position, and one that did not change is left as
//! it is. The hour aggregates and the tenants' usage sums follow every item written or removed.
//! A correlation-id group is re-paired only when a write touched it, never the period.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::StoreResult;
use crate::store::pairing::{DAY_US, HOUR_US, Item, Pairing, RecordFact, ReportFact};

/// What a write touched, per carrier: call ids and correlation ids (empty ones are dropped),
/// the rows it deleted, and the rows whose ids changed under an unchanged pairing.
#[derive(Debug, Default)]
pub struct Touched {
    /// Carrier → (call ids, correlation ids).
    keys: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>,
    /// Records deleted, with their call ids: their entries go.
    deleted_records: HashMap<i64, String>,
    /// Reports deleted, with the carrier's record ids: their entries go.
    deleted_reports: HashMap<i64, String>,
    /// Records and reports whose call id or correlation id changed: their entries are written
    /// again even when their pairing did not change, so a follower sees the new ids.
    refreshed_records: HashSet<i64>,
    /// As `refreshed_records`, for reports.
    refreshed_reports: HashSet<i64>,
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

    /// Notes that record `id`'s correlation id changed.
    pub fn refreshed_record(&mut self, id: i64) {
        self.refreshed_records.insert(id);
    }

    /// Notes that report `id`'s call id or correlation id changed.
    pub fn refreshed_report(&mut self, id: i64) {
        self.refreshed_reports.insert(id);
    }

    /// Notes a deleted record (and its keys).
    pub fn deleted_record(
        &mut self,
        id: i64,
        carrier_id: &str,
        call_id: &str,
        correlation_id: &str,
    ) {
        self.deleted_records.insert(id, call_id.to_owned());
        self.note(carrier_id, call_id, correlation_id);
    }

    /// Notes a deleted report (its carrier's `record_id`, and its keys).
    pub fn deleted_report(
        &mut self,
        id: i64,
        carrier_id: &str,
        record_id: &str,
        call_id: &str,
        correlation_id: &str,
    ) {
        self.deleted_reports.insert(id, record_id.to_owned());
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

/// An entry of a carrier's reconciliation feed: a record's item (with the report paired with
/// it, if any), or a lone report's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entry {
    /// The item of the record with this row id.
    Record(i64),
    /// The item of the report with this row id, paired with no record.
    Report(i64),
}

impl Entry {
    /// The entry an item is.
    fn of(item: &Item) -> Entry {
        match item.record {
            Some(record) => Entry::Record(record),
            None => Entry::Report(item.report.unwrap_or_default()),
        }
    }

    /// Its code in `recon_removed.entry`.
    pub fn code(self) -> i64 {
        match self {
            Entry::Record(_) => 1,
            Entry::Report(_) => 2,
        }
    }
}

/// A record's usage line: the tenant, the tenant-side number, the direction.
type Line = (String, String, i64);

/// An item as stored.
#[derive(Debug)]
struct Stored {
    /// The row id.
    id: i64,
    /// Its carrier.
    carrier_id: String,
    /// The item.
    item: Item,
    /// Its record's usage line.
    line_id: Option<i64>,
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

/// What an item with a record adds to its line's usage in one hour or day.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct UsageSums {
    /// Calls.
    calls: i64,
    /// Those whose duration is the carrier's report.
    operator_calls: i64,
    /// The durations usage counts: the report's where paired, else the platform's.
    total_us: i64,
}

/// The level of `usage_sums` rows per UTC hour.
const LEVEL_HOUR: i64 = 0;
/// The level of `usage_sums` rows per UTC day.
const LEVEL_DAY: i64 = 1;

/// The changes a write makes to the aggregates, applied once at the end of [`repair`].
#[derive(Debug, Default)]
struct Deltas {
    /// (carrier, hour) → change.
    hours: HashMap<(String, i64), HourSums>,
    /// (carrier, hour, class) → change in pairs.
    classes: HashMap<(String, i64, i64), i64>,
    /// (line, level, bucket) → change.
    usage: HashMap<(i64, i64, i64), UsageSums>,
}

impl Deltas {
    /// Adds (`sign` 1) or takes away (`sign` -1) an item's contribution.
    fn count(&mut self, carrier_id: &str, item: &Item, line_id: Option<i64>, sign: i64) {
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
        if let (Some(line), Some(p)) = (line_id, item.platform_us) {
            let day = item.period_time.div_euclid(DAY_US);
            for key in [(line, LEVEL_HOUR, hour), (line, LEVEL_DAY, day)] {
                let u = self.usage.entry(key).or_default();
                u.calls += sign;
                u.operator_calls += sign * i64::from(item.carrier_us.is_some());
                u.total_us += sign * item.carrier_us.unwrap_or(p);
            }
        }
    }

    /// Writes the changes (hour rows that come to nothing are kept: a later write may fill
    /// them; usage rows that come to no call are deleted).
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
        let mut usage = conn.prepare_cached(
            "INSERT INTO usage_sums (line_id, level, bucket, calls, operator_calls, total_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (line_id, level, bucket) DO UPDATE SET
                 calls = calls + excluded.calls,
                 operator_calls = operator_calls + excluded.operator_calls,
                 total_us = total_us + excluded.total_us",
        )?;
        let mut emptied = conn.prepare_cached(
            "DELETE FROM usage_sums WHERE line_id = ?1 AND level = ?2 AND bucket = ?3 AND calls = 0",
        )?;
        for ((line, level, bucket), u) in self.usage {
            if u == UsageSums::default() {
                continue;
            }
            usage.execute(params![
                line,
                level,
                bucket,
                u.calls,
                u.operator_calls,
                u.total_us
            ])?;
            if u.calls < 0 {
                emptied.execute(params![line, level, bucket])?;
            }
        }
        Ok(())
    }
}

/// The positions drawn in a write: each carrier's last, written back to `carrier_heads` at the
/// end of [`repair`].
#[derive(Debug, Default)]
struct Positions {
    /// Carrier → its last position drawn.
    heads: BTreeMap<String, i64>,
}

impl Positions {
    /// The carrier's next position.
    fn next(&mut self, conn: &Connection, carrier_id: &str) -> StoreResult<i64> {
        let head = match self.heads.get_mut(carrier_id) {
            Some(head) => head,
            None => {
                let stored = head(conn, carrier_id)?;
                self.heads.entry(carrier_id.to_owned()).or_insert(stored)
            }
        };
        *head += 1;
        Ok(*head)
    }

    /// Moves the carriers' heads past every position drawn.
    fn save(self, conn: &Connection) -> StoreResult<()> {
        let mut head = conn.prepare_cached(
            "INSERT INTO carrier_heads (carrier_id, recon_seq) VALUES (?1, ?2)
             ON CONFLICT (carrier_id) DO UPDATE SET recon_seq = excluded.recon_seq",
        )?;
        for (carrier_id, last) in self.heads {
            head.execute(params![carrier_id, last])?;
        }
        Ok(())
    }
}

/// The carrier's last reconciliation feed position (0 before its first change).
pub fn head(conn: &Connection, carrier_id: &str) -> StoreResult<i64> {
    Ok(heads(conn, carrier_id)?.0)
}

/// The carrier's last reconciliation feed position, and the last position of a removal that
/// retention purged (a follower behind it has missed removals: it must replay from 0).
pub fn heads(conn: &Connection, carrier_id: &str) -> StoreResult<(i64, i64)> {
    Ok(conn
        .prepare_cached("SELECT recon_seq, recon_floor FROM carrier_heads WHERE carrier_id = ?1")?
        .query_row([carrier_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((0, 0)))
}

/// The ids of usage lines, looked up or created once per write.
#[derive(Debug, Default)]
struct Lines {
    /// Line → id.
    ids: HashMap<Line, i64>,
}

impl Lines {
    /// The id of `line`, created if new.
    fn id(&mut self, conn: &Connection, line: &Line) -> StoreResult<i64> {
        if let Some(id) = self.ids.get(line) {
            return Ok(*id);
        }
        let (tenant_id, number, direction) = line;
        let found: Option<i64> = conn
            .prepare_cached(
                "SELECT id FROM usage_lines WHERE tenant_id = ?1 AND number = ?2 AND direction = ?3",
            )?
            .query_row(params![tenant_id, number, direction], |r| r.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => conn
                .prepare_cached(
                    "INSERT INTO usage_lines (tenant_id, number, direction) VALUES (?1, ?2, ?3)
                     RETURNING id",
                )?
                .query_row(params![tenant_id, number, direction], |r| r.get(0))?,
        };
        self.ids.insert(line.clone(), id);
        Ok(id)
    }
}

/// One carrier's closed set of touched rows: its records with their usage lines, and its
/// reports.
#[derive(Debug, Default)]
struct ClosedSet {
    /// Records by row id.
    records: HashMap<i64, (RecordFact, Line)>,
    /// Reports by row id.
    reports: HashMap<i64, ReportFact>,
}

/// Re-pairs everything `touched` reaches, writes the entries that changed at new positions of
/// their carriers' feeds and records the ones gone, keeping the aggregates in step; whether
/// any entry changed.
pub fn repair(conn: &Connection, touched: &Touched) -> StoreResult<bool> {
    let mut lines = Lines::default();
    // The pairing of each carrier's closed set, by entry.
    let mut new: BTreeMap<(String, Entry), (Item, Option<i64>)> = BTreeMap::new();
    let mut record_keys: HashMap<i64, String> = touched.deleted_records.clone();
    let mut report_keys: HashMap<i64, String> = touched.deleted_reports.clone();
    for (carrier_id, (calls, correlations)) in &touched.keys {
        let set = closed_set(conn, carrier_id, calls, correlations)?;
        let facts: Vec<RecordFact> = set.records.values().map(|(r, _)| r.clone()).collect();
        let reports: Vec<ReportFact> = set.reports.values().cloned().collect();
        for item in Pairing::of(&facts, &reports).items {
            let line_id = match item.record.and_then(|r| set.records.get(&r)) {
                Some((_, line)) => Some(lines.id(conn, line)?),
                None => None,
            };
            new.insert((carrier_id.clone(), Entry::of(&item)), (item, line_id));
        }
        record_keys.extend(set.records.into_iter().map(|(id, (r, _))| (id, r.call_id)));
        report_keys.extend(set.reports.into_iter().map(|(id, d)| (id, d.record_id)));
    }
    // What is stored for every row of those sets, and for the rows deleted.
    let old = stored_items(
        conn,
        record_keys.keys().copied(),
        report_keys.keys().copied(),
    )?;
    let refreshed = |item: &Item| {
        item.record
            .is_some_and(|r| touched.refreshed_records.contains(&r))
            || item
                .report
                .is_some_and(|d| touched.refreshed_reports.contains(&d))
    };
    let unchanged = |old: &Stored, (item, line_id): &(Item, Option<i64>)| {
        old.item == *item && old.line_id == *line_id && !refreshed(item)
    };
    let mut deltas = Deltas::default();
    let mut positions = Positions::default();
    let mut changed = false;
    let now = crate::domain::now_micros();
    let mut delete = conn.prepare_cached("DELETE FROM recon_items WHERE id = ?1")?;
    let mut removed = conn.prepare_cached(
        "INSERT INTO recon_removed (carrier_id, sequence, entry, entry_key, period_time,
                                    remove_time)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (key, stored) in &old {
        let kept = new.get(key);
        if kept.is_some_and(|n| unchanged(stored, n)) {
            continue;
        }
        changed = true;
        delete.execute([stored.id])?;
        deltas.count(&stored.carrier_id, &stored.item, stored.line_id, -1);
        if kept.is_none() {
            let entry_key = match key.1 {
                Entry::Record(id) => entry_key(conn, &record_keys, id, RECORD_KEY)?,
                Entry::Report(id) => entry_key(conn, &report_keys, id, REPORT_KEY)?,
            };
            let sequence = positions.next(conn, &key.0)?;
            removed.execute(params![
                key.0,
                sequence,
                key.1.code(),
                entry_key,
                stored.item.period_time,
                now
            ])?;
        }
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO recon_items (carrier_id, record_id, report_id, kind, item_key, period_time,
                                  platform_us, carrier_us, diff_us, diff_class, line_id, sequence)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    for (key, pair) in &new {
        if old.get(key).is_some_and(|stored| unchanged(stored, pair)) {
            continue;
        }
        changed = true;
        let (item, line_id) = pair;
        let carrier_id = &key.0;
        deltas.count(carrier_id, item, *line_id, 1);
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
            item.difference_class(),
            line_id,
            positions.next(conn, carrier_id)?
        ])?;
    }
    deltas.apply(conn)?;
    positions.save(conn)?;
    Ok(changed)
}

/// A record's call id by row id, for a record no longer in the sets read.
const RECORD_KEY: &str = "SELECT call_id FROM call_records WHERE id = ?1";
/// A report's record id by row id, for a report no longer in the sets read.
const REPORT_KEY: &str = "SELECT record_id FROM call_durations WHERE id = ?1";

/// The key of a removed entry: from the rows read or deleted, else read by `sql`.
fn entry_key(
    conn: &Connection,
    known: &HashMap<i64, String>,
    id: i64,
    sql: &str,
) -> StoreResult<String> {
    if let Some(key) = known.get(&id) {
        return Ok(key.clone());
    }
    Ok(conn
        .prepare_cached(sql)?
        .query_row([id], |r| r.get(0))
        .optional()?
        .unwrap_or_default())
}

/// The stored items of these records and reports, by carrier and entry (two statements: each
/// probes its own unique index, where one with `OR` would scan the table).
fn stored_items(
    conn: &Connection,
    records: impl IntoIterator<Item = i64>,
    reports: impl IntoIterator<Item = i64>,
) -> StoreResult<BTreeMap<(String, Entry), Stored>> {
    let mut found = BTreeMap::new();
    for (sql, ids) in [
        (
            "SELECT id, carrier_id, line_id, record_id, report_id, period_time, platform_us,
                    carrier_us
               FROM recon_items WHERE record_id IN (SELECT value FROM json_each(?1))",
            json_ids(records),
        ),
        (
            "SELECT id, carrier_id, line_id, record_id, report_id, period_time, platform_us,
                    carrier_us
               FROM recon_items WHERE report_id IN (SELECT value FROM json_each(?1))",
            json_ids(reports),
        ),
    ] {
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map([ids], |r| {
            Ok(Stored {
                id: r.get(0)?,
                carrier_id: r.get(1)?,
                line_id: r.get(2)?,
                item: item_at(r, 3)?,
            })
        })?;
        for row in rows {
            let stored = row?;
            found.insert((stored.carrier_id.clone(), Entry::of(&stored.item)), stored);
        }
    }
    Ok(found)
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

/// The columns a record is read with: its facts, then its usage line's.
const RECORD_COLUMNS: &str = "id, call_id, correlation_id, start_time, duration_us, tenant_id,
    CASE direction WHEN 1 THEN callee_number ELSE caller_number END, direction";

/// A carrier's records with one of a list of call ids. Each statement here names the index it
/// must probe (`INDEXED BY`, or a unary `+` that keeps the carrier's own index out): with an
/// `IN` list the planner may otherwise pick the carrier's index and scan all of its rows.
const RECORDS_BY_CALL: &str = "FROM call_records
     WHERE call_id IN (SELECT value FROM json_each(?2)) AND +carrier_id = ?1";
/// A carrier's records with one of a list of correlation ids.
const RECORDS_BY_CORRELATION: &str = "FROM call_records INDEXED BY call_records_by_correlation
     WHERE carrier_id = ?1 AND correlation_id IN (SELECT value FROM json_each(?2))";
/// The columns a report is read with.
const REPORT_COLUMNS: &str = "id, call_id, correlation_id, start_time, duration_us, update_time,
    record_id";
/// A carrier's reports with one of a list of call ids.
const REPORTS_BY_CALL: &str = "FROM call_durations INDEXED BY call_durations_by_call
     WHERE carrier_id = ?1 AND call_id IN (SELECT value FROM json_each(?2))";
/// A carrier's reports with one of a list of correlation ids.
const REPORTS_BY_CORRELATION: &str = "FROM call_durations INDEXED BY call_durations_by_correlation
     WHERE carrier_id = ?1 AND correlation_id IN (SELECT value FROM json_each(?2))";

/// Runs `SELECT columns` with one of the conditions above for `carrier_id` and `keys` (nothing
/// for no keys), handing each row, read by `read`, to `each`.
fn fetch<'k, T>(
    conn: &Connection,
    (columns, condition): (&str, &str),
    carrier_id: &str,
    keys: impl Iterator<Item = &'k String>,
    read: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    mut each: impl FnMut(T),
) -> StoreResult<()> {
    let mut keys = keys.map(String::as_str).peekable();
    if keys.peek().is_none() {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(&format!("SELECT {columns} {condition}"))?;
    for row in stmt.query_map(params![carrier_id, json_list(keys)], read)? {
        each(row?);
    }
    Ok(())
}

/// A record's facts, from the first columns of [`RECORD_COLUMNS`].
fn record_fact(r: &rusqlite::Row<'_>) -> rusqlite::Result<RecordFact> {
    Ok(RecordFact {
        id: r.get(0)?,
        call_id: r.get(1)?,
        correlation_id: r.get(2)?,
        start_time: r.get(3)?,
        duration_us: r.get(4)?,
    })
}

/// A record's facts and usage line, from [`RECORD_COLUMNS`].
fn record_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(RecordFact, Line)> {
    Ok((record_fact(r)?, (r.get(5)?, r.get(6)?, r.get(7)?)))
}

/// A report's facts, from [`REPORT_COLUMNS`].
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

/// The closed set of one carrier's touched keys: the rows carrying a touched call id, widened
/// to every row of their correlation ids, then the records their reports name and the reports
/// naming any of the records (both in stage 1, so nothing further is reached). No call id is
/// read twice.
fn closed_set(
    conn: &Connection,
    carrier_id: &str,
    calls: &BTreeSet<String>,
    correlations: &BTreeSet<String>,
) -> StoreResult<ClosedSet> {
    let mut set = ClosedSet::default();
    let records = (RECORD_COLUMNS, RECORDS_BY_CALL);
    let reports = (REPORT_COLUMNS, REPORTS_BY_CALL);
    let add_record = |r: (RecordFact, Line), set: &mut ClosedSet| {
        set.records.entry(r.0.id).or_insert(r);
    };
    let mut found = Vec::new();
    fetch(conn, records, carrier_id, calls.iter(), record_row, |r| {
        found.push(r)
    })?;
    let mut found_reports = Vec::new();
    fetch(conn, reports, carrier_id, calls.iter(), report_fact, |d| {
        found_reports.push(d)
    })?;
    // The correlation ids widen to theirs: such a row may enter or leave stage 2
    // (`Pairing::closure_of`). Then every row of those correlation ids.
    let mut widened: BTreeSet<String> = correlations.clone();
    widened.extend(found.iter().map(|(r, _)| r.correlation_id.clone()));
    widened.extend(found_reports.iter().map(|d| d.correlation_id.clone()));
    widened.remove("");
    fetch(
        conn,
        (RECORD_COLUMNS, RECORDS_BY_CORRELATION),
        carrier_id,
        widened.iter(),
        record_row,
        |r| found.push(r),
    )?;
    fetch(
        conn,
        (REPORT_COLUMNS, REPORTS_BY_CORRELATION),
        carrier_id,
        widened.iter(),
        report_fact,
        |d| found_reports.push(d),
    )?;
    for r in found.drain(..) {
        add_record(r, &mut set);
    }
    for d in found_reports.drain(..) {
        set.reports.entry(d.id).or_insert(d);
    }
    let have: BTreeSet<&str> = set
        .records
        .values()
        .map(|(r, _)| r.call_id.as_str())
        .collect();
    let named: BTreeSet<String> = set
        .reports
        .values()
        .map(|d| d.call_id.as_str())
        .filter(|c| !c.is_empty() && !calls.contains(*c) && !have.contains(c))
        .map(str::to_owned)
        .collect();
    fetch(conn, records, carrier_id, named.iter(), record_row, |r| {
        found.push(r)
    })?;
    for r in found.drain(..) {
        add_record(r, &mut set);
    }
    let naming: BTreeSet<String> = set
        .records
        .values()
        .map(|(r, _)| r.call_id.as_str())
        .filter(|c| !calls.contains(*c))
        .map(str::to_owned)
        .collect();
    fetch(conn, reports, carrier_id, naming.iter(), report_fact, |d| {
        found_reports.push(d)
    })?;
    for d in found_reports {
        set.reports.entry(d.id).or_insert(d);
    }
    Ok(set)
}

/// Builds every carrier's pairing state (empty before) from the stored records and reports:
/// the items by the set-based rules, then their difference classes, usage lines and feed
/// positions (in time order), the hour aggregates and the usage sums. The migration that adds
/// the state runs it once, logging each carrier.
pub(super) fn build(conn: &Connection) -> StoreResult<()> {
    let carriers: Vec<String> = conn
        .prepare("SELECT carrier_id FROM call_records UNION SELECT carrier_id FROM call_durations")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let total = carriers.len();
    let mut lines = Lines::default();
    for (n, carrier_id) in carriers.iter().enumerate() {
        let started = std::time::Instant::now();
        let items = super::reconcile::reference_items(conn, carrier_id)?;
        let mut deltas = Deltas::default();
        let mut positions = Positions::default();
        let mut update = conn.prepare_cached(
            "UPDATE recon_items SET diff_class = ?2, line_id = ?3, sequence = ?4 WHERE id = ?1",
        )?;
        let mut read = conn.prepare(
            "SELECT i.id, i.record_id, i.report_id, i.period_time, i.platform_us, i.carrier_us,
                    r.tenant_id,
                    CASE r.direction WHEN 1 THEN r.callee_number ELSE r.caller_number END,
                    r.direction
               FROM recon_items i LEFT JOIN call_records r ON r.id = i.record_id
              WHERE i.carrier_id = ?1
              ORDER BY i.period_time, i.kind, i.item_key",
        )?;
        let rows = read.query_map([carrier_id], |r| {
            let line: Option<Line> = match r.get::<_, Option<String>>(6)? {
                Some(tenant) => Some((tenant, r.get(7)?, r.get(8)?)),
                None => None,
            };
            Ok((r.get::<_, i64>(0)?, item_at(r, 1)?, line))
        })?;
        for row in rows {
            let (id, item, line) = row?;
            let line_id = match &line {
                Some(line) => Some(lines.id(conn, line)?),
                None => None,
            };
            let sequence = positions.next(conn, carrier_id)?;
            update.execute(params![id, item.difference_class(), line_id, sequence])?;
            deltas.count(carrier_id, &item, line_id, 1);
        }
        deltas.apply(conn)?;
        positions.save(conn)?;
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
        .prepare(&format!(
            "SELECT {RECORD_COLUMNS} FROM call_records WHERE carrier_id = ?1"
        ))?
        .query_map([carrier_id], record_fact)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let reports = conn
        .prepare(&format!(
            "SELECT {REPORT_COLUMNS} FROM call_durations WHERE carrier_id = ?1"
        ))?
        .query_map([carrier_id], report_fact)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((records, reports))
}

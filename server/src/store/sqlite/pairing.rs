//! The pairing state (`recon_items`, `recon_removed`, the aggregates beside them) on SQLite:
//! the reads and writes of [`crate::store::repair`], which decides what a write changes. The
//! SQLite writer is one thread, so a write's re-pairing never races another's.

use std::collections::{BTreeMap, HashMap, HashSet};

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::StoreResult;
use crate::store::pairing::{Item, RecordFact, ReportFact};
pub use crate::store::repair::Touched;
use crate::store::repair::{self, ClosedSet, Deltas, Entry, Keys, Line, Plan, Stored};

/// A JSON array of `values`, for `IN (SELECT value FROM json_each(?))`.
fn json_list<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    serde_json::to_string(&values.into_iter().collect::<Vec<_>>()).unwrap_or_else(|_| "[]".into())
}

/// A JSON array of ids.
fn json_ids(ids: impl IntoIterator<Item = i64>) -> String {
    serde_json::to_string(&ids.into_iter().collect::<Vec<_>>()).unwrap_or_else(|_| "[]".into())
}

/// Re-pairs everything `touched` reaches and writes what changed (see [`repair::plan`]);
/// whether any entry changed.
pub fn repair(conn: &Connection, touched: &Touched) -> StoreResult<bool> {
    if touched.is_empty() {
        return Ok(false);
    }
    let mut lines = Lines::default();
    let mut new: BTreeMap<(String, Entry), (Item, Option<i64>)> = BTreeMap::new();
    let mut keys = Keys::deleted(touched);
    // What is stored for the rows read: those of each set's first step read with it.
    let mut old = BTreeMap::new();
    let mut read: (HashSet<i64>, HashSet<i64>) = Default::default();
    for (carrier_id, keyed) in touched.carriers() {
        let (set, first) = closed_set(conn, carrier_id, keyed)?;
        read.0.extend(first.records);
        read.1.extend(first.reports);
        old.extend(first.old);
        for item in set.pairing().items {
            let line_id = match item.record.and_then(|r| set.records.get(&r)) {
                Some((_, line)) => Some(lines.id(conn, line)?),
                None => None,
            };
            new.insert((carrier_id.clone(), Entry::of(&item)), (item, line_id));
        }
        keys.add(&set);
    }
    // And for every other row of those sets, and for the rows deleted.
    old.extend(stored_items(
        conn,
        keys.records
            .keys()
            .copied()
            .filter(|id| !read.0.contains(id)),
        keys.reports
            .keys()
            .copied()
            .filter(|id| !read.1.contains(id)),
    )?);
    let mut heads = BTreeMap::new();
    for carrier_id in repair::carriers(&old, &new) {
        heads.insert(carrier_id.to_owned(), head(conn, carrier_id)?);
    }
    let plan = repair::plan(&old, &new, touched, &heads);
    write_plan(conn, &plan, &keys)?;
    Ok(plan.changed())
}

/// Writes a plan: deletes, removals (with their keys), inserts, aggregates, heads.
fn write_plan(conn: &Connection, plan: &Plan, keys: &Keys) -> StoreResult<()> {
    let mut delete = conn.prepare_cached("DELETE FROM recon_items WHERE id = ?1")?;
    for id in &plan.deletes {
        delete.execute([id])?;
    }
    let now = crate::domain::now_micros();
    let mut removed = conn.prepare_cached(
        "INSERT INTO recon_removed (carrier_id, sequence, entry, entry_key, period_time,
                                    remove_time)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for r in &plan.removals {
        let key = match keys.of(r.entry) {
            Some(key) => key.to_owned(),
            None => entry_key(conn, r.entry)?,
        };
        removed.execute(params![
            r.carrier_id,
            r.sequence,
            r.entry.code(),
            key,
            r.period_time,
            now
        ])?;
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO recon_items (carrier_id, record_id, report_id, kind, item_key, period_time,
                                  platform_us, carrier_us, diff_us, diff_class, line_id, sequence,
                                  stage)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    for i in &plan.inserts {
        let item = &i.item;
        insert.execute(params![
            i.carrier_id,
            item.record,
            item.report,
            item.kind().code(),
            item.key(),
            item.period_time,
            item.platform_us,
            item.carrier_us,
            item.difference_us(),
            item.difference_class(),
            i.line_id,
            i.sequence,
            item.stage
        ])?;
    }
    apply_deltas(conn, &plan.deltas)?;
    save_heads(conn, &plan.heads)
}

/// The key of a removed entry whose row was neither read nor deleted by the write (a record
/// moved to another carrier, say): read by row id.
fn entry_key(conn: &Connection, entry: Entry) -> StoreResult<String> {
    let (sql, id) = match entry {
        Entry::Record(id) => ("SELECT call_id FROM call_records WHERE id = ?1", id),
        Entry::Report(id) => ("SELECT record_id FROM call_durations WHERE id = ?1", id),
    };
    Ok(conn
        .prepare_cached(sql)?
        .query_row([id], |r| r.get(0))
        .optional()?
        .unwrap_or_default())
}

/// Writes the aggregates' changes (hour rows that come to nothing are kept: a later write may
/// fill them; usage rows that come to no call are deleted).
fn apply_deltas(conn: &Connection, deltas: &Deltas) -> StoreResult<()> {
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
    for ((carrier_id, hour), d) in &deltas.hours {
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
    for ((carrier_id, hour, class), n) in &deltas.classes {
        classes.execute(params![carrier_id, hour, class, n])?;
    }
    // The rows are keyed by tenant first: each line's tenant.
    let tenants: HashMap<i64, String> = conn
        .prepare_cached(
            "SELECT id, tenant_id FROM usage_lines WHERE id IN (SELECT value FROM json_each(?1))",
        )?
        .query_map(
            [json_ids(deltas.usage.keys().map(|(line, _, _)| *line))],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .collect::<rusqlite::Result<_>>()?;
    let mut usage = conn.prepare_cached(
        "INSERT INTO usage_sums (tenant_id, level, bucket, line_id, calls, operator_calls,
                                 total_us)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (tenant_id, level, bucket, line_id) DO UPDATE SET
             calls = calls + excluded.calls,
             operator_calls = operator_calls + excluded.operator_calls,
             total_us = total_us + excluded.total_us",
    )?;
    let mut emptied = conn.prepare_cached(
        "DELETE FROM usage_sums
          WHERE tenant_id = ?1 AND level = ?2 AND bucket = ?3 AND line_id = ?4 AND calls = 0",
    )?;
    for ((tenant_id, level, bucket, line), u) in deltas.usage_rows(&tenants) {
        usage.execute(params![
            tenant_id,
            level,
            bucket,
            line,
            u.calls,
            u.operator_calls,
            u.total_us
        ])?;
        if u.calls < 0 {
            emptied.execute(params![tenant_id, level, bucket, line])?;
        }
    }
    Ok(())
}

/// Moves the carriers' heads to the last positions drawn.
fn save_heads(conn: &Connection, heads: &BTreeMap<String, i64>) -> StoreResult<()> {
    let mut head = conn.prepare_cached(
        "INSERT INTO carrier_heads (carrier_id, recon_seq) VALUES (?1, ?2)
         ON CONFLICT (carrier_id) DO UPDATE SET recon_seq = excluded.recon_seq",
    )?;
    for (carrier_id, last) in heads {
        head.execute(params![carrier_id, last])?;
    }
    Ok(())
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
                    carrier_us, stage
               FROM recon_items WHERE record_id IN (SELECT value FROM json_each(?1))",
            json_ids(records),
        ),
        (
            "SELECT id, carrier_id, line_id, record_id, report_id, period_time, platform_us,
                    carrier_us, stage
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

/// The rows of a closed set's first step, and what was stored for them.
struct FirstStep {
    /// The items stored for them, by carrier and entry.
    old: BTreeMap<(String, Entry), Stored>,
    /// The records' row ids.
    records: Vec<i64>,
    /// The reports' row ids.
    reports: Vec<i64>,
}

/// One carrier's closed set of touched keys, in [`ClosedSet`]'s four steps. Each lookup
/// skips the rows already in the set by row id, which the index holds: a row read once is not
/// read from the table again.
fn closed_set(
    conn: &Connection,
    carrier_id: &str,
    keyed: &repair::Keyed,
) -> StoreResult<(ClosedSet, FirstStep)> {
    let records = |set: &ClosedSet, sql: &str, keys: &[&String]| {
        let have = json_ids(set.records.keys().copied());
        fetch(
            conn,
            (RECORD_COLUMNS, sql),
            carrier_id,
            keys,
            &have,
            record_row,
        )
    };
    let reports = |set: &ClosedSet, sql: &str, keys: &[&String]| {
        let have = json_ids(set.reports.keys().copied());
        fetch(
            conn,
            (REPORT_COLUMNS, sql),
            carrier_id,
            keys,
            &have,
            report_fact,
        )
    };
    let calls: Vec<&String> = keyed.calls.iter().collect();
    let mut set = ClosedSet::default();
    // The records this write stored are taken as stored: only the others are read.
    set.add_records(keyed.written_records());
    set.add_records(records(&set, RECORDS_BY_CALL, &keyed.unwritten_calls())?);
    set.add_reports(reports(&set, REPORTS_BY_CALL, &calls)?);
    // What step 1's rows were before the write decides which groups to read.
    let first = FirstStep {
        old: stored_items(
            conn,
            set.records.keys().copied(),
            set.reports.keys().copied(),
        )?,
        records: set.records.keys().copied().collect(),
        reports: set.reports.keys().copied().collect(),
    };
    let widened = set.widened(keyed, &first.old, carrier_id);
    let widened: Vec<&String> = widened.iter().collect();
    set.add_records(records(&set, RECORDS_BY_CORRELATION, &widened)?);
    set.add_reports(reports(&set, REPORTS_BY_CORRELATION, &widened)?);
    let called = &keyed.calls;
    let named = set.named(called);
    set.add_records(records(
        &set,
        RECORDS_BY_CALL,
        &named.iter().collect::<Vec<_>>(),
    )?);
    let naming = set.naming(called);
    set.add_reports(reports(
        &set,
        REPORTS_BY_CALL,
        &naming.iter().collect::<Vec<_>>(),
    )?);
    Ok((set, first))
}

/// The item in columns `at..at + 6` of `r`: `record_id, report_id, period_time, platform_us,
/// carrier_us, stage`.
fn item_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Item> {
    Ok(Item {
        record: r.get(at)?,
        report: r.get(at + 1)?,
        period_time: r.get(at + 2)?,
        platform_us: r.get(at + 3)?,
        carrier_us: r.get(at + 4)?,
        stage: r.get(at + 5)?,
    })
}

/// The columns a record is read with: its facts, then its usage line's.
const RECORD_COLUMNS: &str = "id, call_id, correlation_id, start_time, duration_us, tenant_id,
    CASE direction WHEN 1 THEN callee_number ELSE caller_number END, direction";

/// A carrier's records with one of a list of call ids. Each statement here names the index it
/// must probe (`INDEXED BY`, or a unary `+` that keeps the carrier's own index out): with an
/// `IN` list the planner may otherwise pick the carrier's index and scan all of its rows.
const RECORDS_BY_CALL: &str = "FROM call_records
     WHERE call_id IN (SELECT value FROM json_each(?2)) AND +carrier_id = ?1
       AND id NOT IN (SELECT value FROM json_each(?3))";
/// A carrier's records with one of a list of correlation ids.
const RECORDS_BY_CORRELATION: &str = "FROM call_records INDEXED BY call_records_by_correlation
     WHERE carrier_id = ?1 AND correlation_id IN (SELECT value FROM json_each(?2))
       AND id NOT IN (SELECT value FROM json_each(?3))";
/// The columns a report is read with.
const REPORT_COLUMNS: &str = "id, call_id, correlation_id, start_time, duration_us, update_time,
    record_id";
/// A carrier's reports with one of a list of call ids.
const REPORTS_BY_CALL: &str = "FROM call_durations INDEXED BY call_durations_by_call
     WHERE carrier_id = ?1 AND call_id IN (SELECT value FROM json_each(?2))
       AND id NOT IN (SELECT value FROM json_each(?3))";
/// A carrier's reports with one of a list of correlation ids.
const REPORTS_BY_CORRELATION: &str = "FROM call_durations INDEXED BY call_durations_by_correlation
     WHERE carrier_id = ?1 AND correlation_id IN (SELECT value FROM json_each(?2))
       AND id NOT IN (SELECT value FROM json_each(?3))";

/// Runs `SELECT columns` with one of the conditions above for `carrier_id` and `keys`, but not
/// the row ids of `skip` (a JSON array), each row read by `read`; nothing for no keys.
fn fetch<T>(
    conn: &Connection,
    (columns, condition): (&str, &str),
    carrier_id: &str,
    keys: &[&String],
    skip: &str,
    read: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Vec<T>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(&format!("SELECT {columns} {condition}"))?;
    let keys = json_list(keys.iter().map(|k| k.as_str()));
    let rows = stmt
        .query_map(params![carrier_id, keys, skip], read)?
        .collect::<rusqlite::Result<Vec<T>>>()?;
    Ok(rows)
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
        let mut sequence = head(conn, carrier_id)?;
        let mut update = conn.prepare_cached(
            "UPDATE recon_items SET diff_class = ?2, line_id = ?3, sequence = ?4 WHERE id = ?1",
        )?;
        let mut read = conn.prepare(
            "SELECT i.id, i.record_id, i.report_id, i.period_time, i.platform_us, i.carrier_us,
                    i.stage, r.tenant_id,
                    CASE r.direction WHEN 1 THEN r.callee_number ELSE r.caller_number END,
                    r.direction
               FROM recon_items i LEFT JOIN call_records r ON r.id = i.record_id
              WHERE i.carrier_id = ?1
              ORDER BY i.period_time, i.kind, i.item_key",
        )?;
        let rows = read.query_map([carrier_id], |r| {
            let line: Option<Line> = match r.get::<_, Option<String>>(7)? {
                Some(tenant) => Some((tenant, r.get(8)?, r.get(9)?)),
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
            sequence += 1;
            update.execute(params![id, item.difference_class(), line_id, sequence])?;
            deltas.count(carrier_id, &item, line_id, 1);
        }
        apply_deltas(conn, &deltas.trimmed())?;
        save_heads(conn, &BTreeMap::from([(carrier_id.clone(), sequence)]))?;
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
        "SELECT record_id, report_id, period_time, platform_us, carrier_us, stage FROM recon_items
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

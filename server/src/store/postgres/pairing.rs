//! The pairing state (`recon_items`, `recon_removed`, the aggregates beside them) on
//! PostgreSQL: the reads and writes of [`crate::store::repair`], which decides what a write
//! changes (the port of `sqlite::pairing`).
//!
//! Several replicas write at once, so a write takes the row locks of its carriers' heads
//! (`carrier_heads`, in carrier order) *before* it reads the rows it re-pairs: two writes
//! touching one carrier re-pair one after the other, and under READ COMMITTED each statement
//! of the second sees what the first committed. The feed positions are drawn under the same
//! locks, so a carrier's feed appends in commit order. The aggregates' rows are written in key
//! order ([`crate::store::repair::Deltas`]), so writers of different carriers that share a
//! usage line never wait on each other in a circle (and PostgreSQL's deadlock detection plus
//! the transaction's retry cover what is left).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use deadpool_postgres::GenericClient;

use super::pool::PgResult;
use crate::store::pairing::{Item, RecordFact, ReportFact};
pub use crate::store::repair::Touched;
use crate::store::repair::{self, ClosedSet, Deltas, Entry, Keys, Line, Plan, Stored};

/// Re-pairs everything `touched` reaches and writes what changed (see [`repair::plan`]);
/// whether any entry changed.
pub async fn repair(db: &impl GenericClient, touched: &Touched) -> PgResult<bool> {
    if touched.is_empty() {
        return Ok(false);
    }
    let touched_carriers: Vec<(&String, &repair::Keyed)> = touched.carriers().collect();
    let carriers: Vec<&str> = touched_carriers.iter().map(|(c, _)| c.as_str()).collect();
    let mut heads = lock_heads(db, &carriers).await?;
    let mut sets = Vec::new();
    let mut keys = Keys::deleted(touched);
    // What is stored for the rows read: those of each set's first step read with it.
    let mut old = BTreeMap::new();
    let mut read = Keys::default();
    for (carrier_id, keyed) in touched_carriers {
        let (set, first) = closed_set(db, carrier_id, keyed).await?;
        keys.add(&set);
        read.records.extend(first.keys.records);
        read.reports.extend(first.keys.reports);
        old.extend(first.old);
        sets.push((carrier_id, set));
    }
    let wanted: BTreeSet<Line> = sets
        .iter()
        .flat_map(|(_, set)| set.records.values().map(|(_, line)| line.clone()))
        .collect();
    let lines = line_ids(db, &wanted).await?;
    let mut new: BTreeMap<(String, Entry), (Item, Option<i64>)> = BTreeMap::new();
    for (carrier_id, set) in &sets {
        for item in set.pairing().items {
            let line_id = item
                .record
                .and_then(|r| set.records.get(&r))
                .and_then(|(_, line)| lines.get(line).copied());
            new.insert(((*carrier_id).clone(), Entry::of(&item)), (item, line_id));
        }
    }
    // And for every other row of those sets, and for the rows deleted.
    let rest = Keys {
        records: keys
            .records
            .iter()
            .filter(|(id, _)| !read.records.contains_key(id))
            .map(|(id, key)| (*id, key.clone()))
            .collect(),
        reports: keys
            .reports
            .iter()
            .filter(|(id, _)| !read.reports.contains_key(id))
            .map(|(id, key)| (*id, key.clone()))
            .collect(),
    };
    old.extend(stored_items(db, &rest).await?);
    // A stored item of a carrier the write did not name (not expected: a write notes the
    // carriers of every row it moves) is locked too before it is changed.
    let unlocked: Vec<&str> = repair::carriers(&old, &new)
        .into_iter()
        .filter(|c| !heads.contains_key(*c))
        .collect();
    if !unlocked.is_empty() {
        heads.extend(lock_heads(db, &unlocked).await?);
    }
    let plan = repair::plan(&old, &new, touched, &heads);
    write_plan(db, &plan, &keys).await?;
    Ok(plan.changed())
}

/// Locks the heads of `carriers` (creating missing ones), in carrier order; their positions.
pub(super) async fn lock_heads(
    db: &impl GenericClient,
    carriers: &[&str],
) -> PgResult<BTreeMap<String, i64>> {
    let stmt = db
        .prepare_cached(
            "INSERT INTO carrier_heads AS h (carrier_id)
             SELECT c FROM unnest($1::TEXT[]) AS u(c) ORDER BY c
             ON CONFLICT (carrier_id) DO UPDATE SET recon_seq = h.recon_seq
             RETURNING carrier_id, recon_seq",
        )
        .await?;
    Ok(db
        .query(&stmt, &[&carriers])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// The carrier's last reconciliation feed position and its floor (see
/// `sqlite::pairing::heads`).
pub async fn heads(db: &impl GenericClient, carrier_id: &str) -> PgResult<(i64, i64)> {
    let stmt = db
        .prepare_cached("SELECT recon_seq, recon_floor FROM carrier_heads WHERE carrier_id = $1")
        .await?;
    Ok(db
        .query_opt(&stmt, &[&carrier_id])
        .await?
        .map_or((0, 0), |r| (r.get(0), r.get(1))))
}

/// Writes a plan: deletes, removals (with their keys), inserts, aggregates, heads; each as one
/// statement over arrays.
async fn write_plan(db: &impl GenericClient, plan: &Plan, keys: &Keys) -> PgResult<()> {
    if !plan.deletes.is_empty() {
        let stmt = db
            .prepare_cached("DELETE FROM recon_items WHERE id = ANY($1)")
            .await?;
        db.execute(&stmt, &[&plan.deletes]).await?;
    }
    if !plan.removals.is_empty() {
        let mut entry_keys = Vec::with_capacity(plan.removals.len());
        for r in &plan.removals {
            entry_keys.push(match keys.of(r.entry) {
                Some(key) => key.to_owned(),
                None => entry_key(db, r.entry).await?,
            });
        }
        let carriers: Vec<&str> = plan
            .removals
            .iter()
            .map(|r| r.carrier_id.as_str())
            .collect();
        let sequences: Vec<i64> = plan.removals.iter().map(|r| r.sequence).collect();
        let entries: Vec<i64> = plan.removals.iter().map(|r| r.entry.code()).collect();
        let times: Vec<i64> = plan.removals.iter().map(|r| r.period_time).collect();
        let stmt = db
            .prepare_cached(
                "INSERT INTO recon_removed (carrier_id, sequence, entry, entry_key, period_time,
                                            remove_time)
                 SELECT u.*, $6 FROM unnest($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::TEXT[],
                                            $5::BIGINT[]) AS u",
            )
            .await?;
        let now = crate::domain::now_micros();
        db.execute(
            &stmt,
            &[&carriers, &sequences, &entries, &entry_keys, &times, &now],
        )
        .await?;
    }
    if !plan.inserts.is_empty() {
        let column = |f: fn(&repair::Insert) -> Option<i64>| -> Vec<Option<i64>> {
            plan.inserts.iter().map(f).collect()
        };
        let carriers: Vec<&str> = plan.inserts.iter().map(|i| i.carrier_id.as_str()).collect();
        let columns = [
            column(|i| i.item.record),
            column(|i| i.item.report),
            column(|i| Some(i64::from(i.item.kind().code()))),
            column(|i| Some(i.item.key())),
            column(|i| Some(i.item.period_time)),
            column(|i| i.item.platform_us),
            column(|i| i.item.carrier_us),
            column(|i| i.item.difference_us()),
            column(|i| i.item.difference_class()),
            column(|i| i.line_id),
            column(|i| Some(i.sequence)),
            column(|i| Some(i.item.stage)),
        ];
        let stmt = db
            .prepare_cached(
                "INSERT INTO recon_items (carrier_id, record_id, report_id, kind, item_key,
                                          period_time, platform_us, carrier_us, diff_us,
                                          diff_class, line_id, sequence, stage)
                 SELECT * FROM unnest($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[],
                                      $5::BIGINT[], $6::BIGINT[], $7::BIGINT[], $8::BIGINT[],
                                      $9::BIGINT[], $10::BIGINT[], $11::BIGINT[], $12::BIGINT[],
                                      $13::BIGINT[])",
            )
            .await?;
        let [c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12] = &columns;
        db.execute(
            &stmt,
            &[&carriers, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12],
        )
        .await?;
    }
    apply_deltas(db, &plan.deltas).await?;
    if !plan.heads.is_empty() {
        let (carriers, last): (Vec<&str>, Vec<i64>) =
            plan.heads.iter().map(|(c, s)| (c.as_str(), *s)).unzip();
        let stmt = db
            .prepare_cached(
                "UPDATE carrier_heads AS h SET recon_seq = u.s
                   FROM unnest($1::TEXT[], $2::BIGINT[]) AS u(c, s) WHERE h.carrier_id = u.c",
            )
            .await?;
        db.execute(&stmt, &[&carriers, &last]).await?;
    }
    Ok(())
}

/// The key of a removed entry whose row was neither read nor deleted by the write: read by row
/// id.
async fn entry_key(db: &impl GenericClient, entry: Entry) -> PgResult<String> {
    let (sql, id) = match entry {
        Entry::Record(id) => ("SELECT call_id FROM call_records WHERE id = $1", id),
        Entry::Report(id) => ("SELECT record_id FROM call_durations WHERE id = $1", id),
    };
    let stmt = db.prepare_cached(sql).await?;
    Ok(db
        .query_opt(&stmt, &[&id])
        .await?
        .map(|r| r.get(0))
        .unwrap_or_default())
}

/// Writes the aggregates' changes, each table in one statement, rows in key order (hour rows
/// that come to nothing are kept; usage rows that come to no call are deleted).
async fn apply_deltas(db: &impl GenericClient, deltas: &Deltas) -> PgResult<()> {
    if !deltas.hours.is_empty() {
        let mut c = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for ((carrier_id, hour), d) in &deltas.hours {
            c.0.push(carrier_id.as_str());
            c.1.push(*hour);
            c.2.push(d.platform_count);
            c.3.push(d.platform_us);
            c.4.push(d.paired_count);
            c.5.push(d.paired_carrier_us);
            c.6.push(d.lone_count);
            c.7.push(d.lone_us);
        }
        let stmt = db
            .prepare_cached(
                "INSERT INTO recon_hours AS h (carrier_id, hour, platform_count, platform_us,
                                               paired_count, paired_carrier_us, lone_count, lone_us)
                 SELECT * FROM unnest($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[],
                                      $5::BIGINT[], $6::BIGINT[], $7::BIGINT[], $8::BIGINT[])
                 ON CONFLICT (carrier_id, hour) DO UPDATE SET
                     platform_count = h.platform_count + excluded.platform_count,
                     platform_us = h.platform_us + excluded.platform_us,
                     paired_count = h.paired_count + excluded.paired_count,
                     paired_carrier_us = h.paired_carrier_us + excluded.paired_carrier_us,
                     lone_count = h.lone_count + excluded.lone_count,
                     lone_us = h.lone_us + excluded.lone_us",
            )
            .await?;
        db.execute(&stmt, &[&c.0, &c.1, &c.2, &c.3, &c.4, &c.5, &c.6, &c.7])
            .await?;
    }
    if !deltas.classes.is_empty() {
        let (mut carriers, mut hours, mut classes, mut pairs) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((carrier_id, hour, class), n) in &deltas.classes {
            carriers.push(carrier_id.as_str());
            hours.push(*hour);
            classes.push(*class);
            pairs.push(*n);
        }
        let stmt = db
            .prepare_cached(
                "INSERT INTO recon_classes AS k (carrier_id, hour, diff_class, pairs)
                 SELECT * FROM unnest($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[])
                 ON CONFLICT (carrier_id, hour, diff_class) DO UPDATE
                   SET pairs = k.pairs + excluded.pairs",
            )
            .await?;
        db.execute(&stmt, &[&carriers, &hours, &classes, &pairs])
            .await?;
    }
    if !deltas.usage.is_empty() {
        // Rows are keyed by tenant first: each line's tenant, then the rows in key order.
        let line_ids: Vec<i64> = deltas.usage.keys().map(|(line, _, _)| *line).collect();
        let stmt = db
            .prepare_cached("SELECT id, tenant_id FROM usage_lines WHERE id = ANY($1)")
            .await?;
        let tenants: HashMap<i64, String> = db
            .query(&stmt, &[&line_ids])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let rows = deltas.usage_rows(&tenants);
        let mut c = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for ((tenant, level, bucket, line), u) in &rows {
            c.0.push(tenant.as_str());
            c.1.push(*level);
            c.2.push(*bucket);
            c.3.push(*line);
            c.4.push(u.calls);
            c.5.push(u.operator_calls);
            c.6.push(u.total_us);
        }
        let stmt = db
            .prepare_cached(
                "INSERT INTO usage_sums AS s (tenant_id, level, bucket, line_id, calls,
                                              operator_calls, total_us)
                 SELECT * FROM unnest($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[],
                                      $5::BIGINT[], $6::BIGINT[], $7::BIGINT[])
                 ON CONFLICT (tenant_id, level, bucket, line_id) DO UPDATE SET
                     calls = s.calls + excluded.calls,
                     operator_calls = s.operator_calls + excluded.operator_calls,
                     total_us = s.total_us + excluded.total_us",
            )
            .await?;
        db.execute(&stmt, &[&c.0, &c.1, &c.2, &c.3, &c.4, &c.5, &c.6])
            .await?;
        let stmt = db
            .prepare_cached(
                "DELETE FROM usage_sums
                  WHERE (tenant_id, level, bucket, line_id) IN
                        (SELECT * FROM unnest($1::TEXT[], $2::BIGINT[], $3::BIGINT[],
                                              $4::BIGINT[]))
                    AND calls = 0",
            )
            .await?;
        db.execute(&stmt, &[&c.0, &c.1, &c.2, &c.3]).await?;
    }
    Ok(())
}

/// The ids of `lines`, created where new (in key order, so that concurrent writers creating
/// the same lines wait for each other in one order).
async fn line_ids(db: &impl GenericClient, lines: &BTreeSet<Line>) -> PgResult<HashMap<Line, i64>> {
    if lines.is_empty() {
        return Ok(HashMap::new());
    }
    let tenants: Vec<&str> = lines.iter().map(|l| l.0.as_str()).collect();
    let numbers: Vec<&str> = lines.iter().map(|l| l.1.as_str()).collect();
    let directions: Vec<i64> = lines.iter().map(|l| l.2).collect();
    let stmt = db
        .prepare_cached(
            "INSERT INTO usage_lines (tenant_id, number, direction)
             SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[])
             ON CONFLICT DO NOTHING",
        )
        .await?;
    db.execute(&stmt, &[&tenants, &numbers, &directions])
        .await?;
    let stmt = db
        .prepare_cached(
            "SELECT l.id, l.tenant_id, l.number, l.direction
               FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[]) AS u(t, n, d)
               JOIN usage_lines l ON l.tenant_id = u.t AND l.number = u.n AND l.direction = u.d",
        )
        .await?;
    Ok(db
        .query(&stmt, &[&tenants, &numbers, &directions])
        .await?
        .iter()
        .map(|r| ((r.get(1), r.get(2), r.get(3)), r.get(0)))
        .collect())
}

/// The stored items of the rows of `keys` (read, or deleted), by carrier and entry.
async fn stored_items(
    db: &impl GenericClient,
    keys: &Keys,
) -> PgResult<BTreeMap<(String, Entry), Stored>> {
    let records: Vec<i64> = keys.records.keys().copied().collect();
    let reports: Vec<i64> = keys.reports.keys().copied().collect();
    let stmt = db
        .prepare_cached(
            "SELECT id, carrier_id, line_id, record_id, report_id, period_time, platform_us,
                    carrier_us, stage
               FROM recon_items WHERE record_id = ANY($1)
             UNION
             SELECT id, carrier_id, line_id, record_id, report_id, period_time, platform_us,
                    carrier_us, stage
               FROM recon_items WHERE report_id = ANY($2)",
        )
        .await?;
    let mut found = BTreeMap::new();
    for r in db.query(&stmt, &[&records, &reports]).await? {
        let stored = Stored {
            id: r.get(0),
            carrier_id: r.get(1),
            line_id: r.get(2),
            item: Item {
                record: r.get(3),
                report: r.get(4),
                period_time: r.get(5),
                platform_us: r.get(6),
                carrier_us: r.get(7),
                stage: r.get(8),
            },
        };
        found.insert((stored.carrier_id.clone(), Entry::of(&stored.item)), stored);
    }
    Ok(found)
}

/// The columns a record is read with: its facts, then its usage line's.
const RECORD_COLUMNS: &str = "id, call_id, correlation_id, start_time, duration_us, tenant_id,
    CASE direction WHEN 1 THEN callee_number ELSE caller_number END, direction";
/// The columns a report is read with.
const REPORT_COLUMNS: &str = "id, call_id, correlation_id, start_time, duration_us, update_time,
    record_id";

/// The rows of a closed set's first step, and what was stored for them.
struct FirstStep {
    /// Their row ids (with their keys).
    keys: Keys,
    /// The items stored for them, by carrier and entry.
    old: BTreeMap<(String, Entry), Stored>,
}

/// The closed set of one carrier's touched keys, in [`ClosedSet`]'s four steps; each lookup
/// skips the rows already in the set.
async fn closed_set(
    db: &impl GenericClient,
    carrier_id: &str,
    keyed: &repair::Keyed,
) -> PgResult<(ClosedSet, FirstStep)> {
    let calls = &keyed.calls;
    let records = (RECORD_COLUMNS, "call_records");
    let reports = (REPORT_COLUMNS, "call_durations");
    let mut set = ClosedSet::default();
    let called: Vec<&str> = calls.iter().map(String::as_str).collect();
    set.add_records(
        fetch(
            db,
            records,
            carrier_id,
            "call_id",
            &called,
            &set.record_ids(),
            record_row,
        )
        .await?,
    );
    set.add_reports(
        fetch(
            db,
            reports,
            carrier_id,
            "call_id",
            &called,
            &set.report_ids(),
            report_fact,
        )
        .await?,
    );
    // What step 1's rows were before the write decides which groups to read.
    let mut keys = Keys::default();
    keys.add(&set);
    let first = FirstStep {
        old: stored_items(db, &keys).await?,
        keys,
    };
    let widened = set.widened(keyed, &first.old, carrier_id);
    let widened: Vec<&str> = widened.iter().map(String::as_str).collect();
    set.add_records(
        fetch(
            db,
            records,
            carrier_id,
            "correlation_id",
            &widened,
            &set.record_ids(),
            record_row,
        )
        .await?,
    );
    set.add_reports(
        fetch(
            db,
            reports,
            carrier_id,
            "correlation_id",
            &widened,
            &set.report_ids(),
            report_fact,
        )
        .await?,
    );
    let named = set.named(calls);
    let named: Vec<&str> = named.iter().map(String::as_str).collect();
    set.add_records(
        fetch(
            db,
            records,
            carrier_id,
            "call_id",
            &named,
            &set.record_ids(),
            record_row,
        )
        .await?,
    );
    let naming = set.naming(calls);
    let naming: Vec<&str> = naming.iter().map(String::as_str).collect();
    set.add_reports(
        fetch(
            db,
            reports,
            carrier_id,
            "call_id",
            &naming,
            &set.report_ids(),
            report_fact,
        )
        .await?,
    );
    Ok((set, first))
}

/// The carrier's rows of `table` (read as `columns` by `read`) whose `column` (`call_id` or
/// `correlation_id`) is one of `keys`, but not those of row ids `skip`; nothing for no keys.
async fn fetch<T>(
    db: &impl GenericClient,
    (columns, table): (&str, &str),
    carrier_id: &str,
    column: &str,
    keys: &[&str],
    skip: &[i64],
    read: fn(&tokio_postgres::Row) -> T,
) -> PgResult<Vec<T>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let stmt = db
        .prepare_cached(&format!(
            "SELECT {columns} FROM {table}
              WHERE carrier_id = $1 AND {column} = ANY($2) AND NOT (id = ANY($3))"
        ))
        .await?;
    Ok(db
        .query(&stmt, &[&carrier_id, &keys, &skip])
        .await?
        .iter()
        .map(read)
        .collect())
}

/// A record's facts and usage line from [`RECORD_COLUMNS`].
fn record_row(r: &tokio_postgres::Row) -> (RecordFact, Line) {
    (
        RecordFact {
            id: r.get(0),
            call_id: r.get(1),
            correlation_id: r.get(2),
            start_time: r.get(3),
            duration_us: r.get(4),
        },
        (r.get(5), r.get(6), r.get(7)),
    )
}

/// A report's facts from [`REPORT_COLUMNS`].
fn report_fact(r: &tokio_postgres::Row) -> ReportFact {
    ReportFact {
        id: r.get(0),
        call_id: r.get(1),
        correlation_id: r.get(2),
        start_time: r.get(3),
        duration_us: r.get(4),
        update_time: r.get(5),
        record_id: r.get(6),
    }
}

/// Builds every carrier's pairing state (empty before) from the stored records and reports:
/// the items by the set-based rules, then, read back in time order in chunks, their difference
/// classes, usage lines and feed positions, the hour aggregates and the usage sums. The
/// migration that adds the state runs it once, logging each carrier.
pub async fn build(db: &impl GenericClient) -> PgResult<()> {
    let carriers: Vec<String> = db
        .query(
            "SELECT carrier_id FROM call_records UNION SELECT carrier_id FROM call_durations
              ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let total = carriers.len();
    for (n, carrier_id) in carriers.iter().enumerate() {
        let started = std::time::Instant::now();
        let items = super::reconcile::reference_items(db, carrier_id).await?;
        let mut deltas = Deltas::default();
        let mut sequence = 0i64;
        let mut after = (i64::MIN, 0i64, 0i64);
        loop {
            let rows = db
                .query(
                    "SELECT i.id, i.record_id, i.report_id, i.period_time, i.platform_us,
                            i.carrier_us, r.tenant_id,
                            CASE r.direction WHEN 1 THEN r.callee_number ELSE r.caller_number END,
                            r.direction, i.kind, i.item_key, i.stage
                       FROM recon_items i LEFT JOIN call_records r ON r.id = i.record_id
                      WHERE i.carrier_id = $1
                        AND (i.period_time, i.kind, i.item_key) > ($2, $3, $4)
                      ORDER BY i.period_time, i.kind, i.item_key LIMIT 10000",
                    &[carrier_id, &after.0, &after.1, &after.2],
                )
                .await?;
            let Some(last) = rows.last() else {
                break;
            };
            after = (last.get(3), last.get(9), last.get(10));
            let wanted: BTreeSet<Line> = rows
                .iter()
                .filter_map(|r| {
                    let tenant: Option<String> = r.get(6);
                    Some((tenant?, r.get(7), r.get(8)))
                })
                .collect();
            let lines = line_ids(db, &wanted).await?;
            let (mut ids, mut classes, mut line_of, mut positions) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for r in &rows {
                let item = Item {
                    record: r.get(1),
                    report: r.get(2),
                    period_time: r.get(3),
                    platform_us: r.get(4),
                    carrier_us: r.get(5),
                    stage: r.get(11),
                };
                let tenant: Option<String> = r.get(6);
                let line_id = tenant.and_then(|t| lines.get(&(t, r.get(7), r.get(8))).copied());
                sequence += 1;
                ids.push(r.get::<_, i64>(0));
                classes.push(item.difference_class());
                line_of.push(line_id);
                positions.push(sequence);
                deltas.count(carrier_id, &item, line_id, 1);
            }
            db.execute(
                "UPDATE recon_items AS i SET diff_class = u.c, line_id = u.l, sequence = u.s
                   FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[])
                        AS u(id, c, l, s)
                  WHERE i.id = u.id",
                &[&ids, &classes, &line_of, &positions],
            )
            .await?;
        }
        apply_deltas(db, &deltas.trimmed()).await?;
        db.execute(
            "INSERT INTO carrier_heads AS h (carrier_id, recon_seq) VALUES ($1, $2)
             ON CONFLICT (carrier_id) DO UPDATE SET recon_seq = excluded.recon_seq",
            &[carrier_id, &sequence],
        )
        .await?;
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

/// Every item of `carrier_id` as stored, in [`crate::store::pairing::Pairing`]'s order (for the
/// tests that hold the state to a pairing of every fact).
pub async fn items(db: &impl GenericClient, carrier_id: &str) -> PgResult<Vec<Item>> {
    Ok(db
        .query(
            "SELECT record_id, report_id, period_time, platform_us, carrier_us, stage
               FROM recon_items WHERE carrier_id = $1
              ORDER BY record_id IS NULL, record_id, report_id",
            &[&carrier_id],
        )
        .await?
        .iter()
        .map(|r| Item {
            record: r.get(0),
            report: r.get(1),
            period_time: r.get(2),
            platform_us: r.get(3),
            carrier_us: r.get(4),
            stage: r.get(5),
        })
        .collect())
}

/// Every record and report of `carrier_id` as stored, as pairing reads them (for the tests
/// that hold the state to a pairing of every fact).
pub async fn facts(
    db: &impl GenericClient,
    carrier_id: &str,
) -> PgResult<(Vec<RecordFact>, Vec<ReportFact>)> {
    let records = db
        .query(
            &format!("SELECT {RECORD_COLUMNS} FROM call_records WHERE carrier_id = $1"),
            &[&carrier_id],
        )
        .await?
        .iter()
        .map(|r| record_row(r).0)
        .collect();
    let reports = db
        .query(
            &format!("SELECT {REPORT_COLUMNS} FROM call_durations WHERE carrier_id = $1"),
            &[&carrier_id],
        )
        .await?
        .iter()
        .map(report_fact)
        .collect();
    Ok((records, reports))
}

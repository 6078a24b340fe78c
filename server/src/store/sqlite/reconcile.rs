//! Reconciliation and tenant usage.
//!
//! Set-based SQL run inside SQLite, never rows loaded into memory and matched in Rust. The
//! matching rules (see `reconciliation.proto`) are written once, in [`pairs_cte`], and shared by
//! the summary, the discrepancy listing and usage, so the three always agree.

use std::collections::HashMap;

use rusqlite::{Connection, named_params, params};

use super::query;
use crate::domain::{
    Discrepancy, DiscrepancyCursor, DiscrepancyKind, Micros, ReconciliationChange,
    ReconciliationSummary, UsageGrouping, UsageRow,
};
use crate::store::sql::Scope;
use crate::store::state;
use crate::store::{KeyedPage, StoreResult};
use crate::store::{StoreError, rows};

/// The matching rules as CTEs, ending in `pairs(did, rid)`: one row per matched (report, platform
/// record), one to one. Inputs: `:s`, `:e` (the period), and `:c` or `:t` (the scope).
///
/// - `pw`: the platform records of the period; `dw`: the reports of the period (carrier scope).
/// - `dr`: each report of the period with the record its call_id names (NULL if none); `pd`:
///   each record of the period with the reports naming its call_id (NULL if none). Each side is
///   looked up in the other's index once, and both stages reuse the result (1M × 1M: about 40%
///   faster than separate lookups per stage).
/// - Stage 1 (`s1`): a report whose call_id names one of the carrier's records matches it;
///   among several, the latest `update_time` (then greatest `record_id`) wins. The records are
///   those of the period and those outside it that a report of the period names.
/// - Stage 2 (`cids`, `rc`, `dc`): records and reports with no call-id match and the same
///   correlation id pair by rank in start-time order. `CROSS JOIN` keeps `cids` (a few
///   percent of the period) as the outer loop, searching the correlation indexes: without it,
///   SQLite 3.53's planner scans the whole correlation index for the window's order and probes
///   `cids`, which made the summary 1.9× slower than the same query on SQLite 3.40 (R8).
fn pairs_cte(scope: Scope) -> String {
    let (pw_where, dw_where) = match scope {
        Scope::Carrier => (
            "carrier_id = :c",
            "carrier_id = :c AND start_time >= :s AND start_time < :e",
        ),
        Scope::Tenant => ("tenant_id = :t", "0"),
    };
    format!(
        "WITH
        pw AS MATERIALIZED (
            SELECT id, carrier_id, call_id, correlation_id, start_time, duration_us, direction,
                   caller_number, callee_number
            FROM call_records WHERE {pw_where} AND start_time >= :s AND start_time < :e),
        dw AS MATERIALIZED (
            SELECT id, carrier_id, call_id, correlation_id FROM call_durations WHERE {dw_where}),
        dr AS MATERIALIZED (
            SELECT dw.id AS did, dw.carrier_id, dw.correlation_id, r.id AS rid,
                   r.start_time AS rstart
              FROM dw LEFT JOIN call_records r
                ON dw.call_id != '' AND r.call_id = dw.call_id AND r.carrier_id = dw.carrier_id),
        pd AS MATERIALIZED (
            SELECT pw.id AS rid, pw.carrier_id, pw.correlation_id, d.id AS did, d.update_time,
                   d.record_id
              FROM pw LEFT JOIN call_durations d
                ON d.carrier_id = pw.carrier_id AND d.call_id = pw.call_id),
        s1 AS MATERIALIZED (
            SELECT did, rid,
                   row_number() OVER (PARTITION BY rid ORDER BY update_time DESC, record_id DESC) AS rn
              FROM (SELECT did, rid, update_time, record_id FROM pd WHERE did IS NOT NULL
                    UNION ALL
                    SELECT d.id, x.rid, d.update_time, d.record_id
                      FROM (SELECT DISTINCT rid FROM dr
                             WHERE rid IS NOT NULL AND NOT (rstart >= :s AND rstart < :e)) x
                      JOIN call_records r ON r.id = x.rid
                      JOIN call_durations d
                        ON d.carrier_id = r.carrier_id AND d.call_id = r.call_id)),
        cids AS MATERIALIZED (
            SELECT carrier_id, correlation_id FROM pd WHERE did IS NULL AND correlation_id != ''
            UNION
            SELECT carrier_id, correlation_id FROM dr WHERE rid IS NULL AND correlation_id != ''),
        rc AS MATERIALIZED (
            SELECT r.id, r.carrier_id, r.correlation_id,
                   row_number() OVER (PARTITION BY r.carrier_id, r.correlation_id ORDER BY r.start_time, r.id) AS k
              FROM cids CROSS JOIN call_records r
                ON r.carrier_id = cids.carrier_id AND r.correlation_id = cids.correlation_id
             WHERE NOT EXISTS (
                 SELECT 1 FROM call_durations d WHERE d.carrier_id = r.carrier_id AND d.call_id = r.call_id)),
        dc AS MATERIALIZED (
            SELECT d.id, d.carrier_id, d.correlation_id,
                   row_number() OVER (PARTITION BY d.carrier_id, d.correlation_id ORDER BY d.start_time, d.id) AS k
              FROM cids CROSS JOIN call_durations d
                ON d.carrier_id = cids.carrier_id AND d.correlation_id = cids.correlation_id
             WHERE NOT EXISTS (
                 SELECT 1 FROM call_records r WHERE r.call_id = d.call_id AND r.carrier_id = d.carrier_id)),
        pairs AS MATERIALIZED (
            SELECT did, rid, 1 AS st FROM s1 WHERE rn = 1
            UNION ALL
            SELECT dc.id, rc.id, 2 FROM rc JOIN dc
              ON dc.carrier_id = rc.carrier_id AND dc.correlation_id = rc.correlation_id AND dc.k = rc.k)"
    )
}

/// A summary query: the carrier, the period's start and end, the tolerance (µs).
pub(super) type SummaryQuery =
    fn(&Connection, &str, Micros, Micros, i64) -> StoreResult<ReconciliationSummary>;

/// A discrepancy-page query: as [`SummaryQuery`], then the kind, the cursor and the page size.
pub(super) type DiscrepancyQuery = fn(
    &Connection,
    &str,
    Micros,
    Micros,
    i64,
    Option<DiscrepancyKind>,
    Option<DiscrepancyCursor>,
    usize,
) -> StoreResult<KeyedPage<Discrepancy, DiscrepancyCursor>>;

/// The summary of one carrier's period, from the pairing state: the whole hours of the period
/// from the hour aggregates (the pairs of the tolerance's own difference class read one by
/// one), the parts of an hour at either edge from the items. Exact for any period and any
/// tolerance.
pub fn summary(
    conn: &Connection,
    carrier_id: &str,
    s: Micros,
    e: Micros,
    tol: i64,
) -> StoreResult<ReconciliationSummary> {
    let hour = crate::store::pairing::HOUR_US;
    let Some((h0, h1)) = state::whole(s, e, hour) else {
        return Ok(items_summary(conn, carrier_id, s, e, tol)?.into());
    };
    let mut counts = items_summary(conn, carrier_id, s, h0 * hour, tol)?;
    state::add(
        &mut counts,
        items_summary(conn, carrier_id, h1 * hour, e, tol)?,
    );
    let sums: [i64; 6] = query::first(
        conn,
        "SELECT coalesce(sum(platform_count), 0), coalesce(sum(platform_us), 0),
                coalesce(sum(paired_count), 0), coalesce(sum(paired_carrier_us), 0),
                coalesce(sum(lone_count), 0), coalesce(sum(lone_us), 0)
           FROM recon_hours WHERE carrier_id = ?1 AND hour >= ?2 AND hour < ?3",
        params![carrier_id, h0, h1],
        |r: &dyn rows::Row| {
            Ok([
                r.col(0)?,
                r.col(1)?,
                r.col(2)?,
                r.col(3)?,
                r.col(4)?,
                r.col(5)?,
            ])
        },
    )?
    .unwrap_or_default();
    let class = crate::store::pairing::difference_class(tol);
    let beyond: i64 = query::first(
        conn,
        "SELECT coalesce(sum(pairs), 0) FROM recon_classes
          WHERE carrier_id = ?1 AND hour >= ?2 AND hour < ?3 AND diff_class > ?4",
        params![carrier_id, h0, h1, class],
        |r: &dyn rows::Row| r.col(0),
    )?
    .unwrap_or_default();
    let at_edge: i64 = query::first(
        conn,
        "SELECT count(*) FROM recon_items INDEXED BY recon_items_by_class
          WHERE carrier_id = ?1 AND kind = 1 AND diff_class = ?2
            AND period_time >= ?3 AND period_time < ?4 AND diff_us > ?5",
        params![carrier_id, class, h0 * hour, h1 * hour, tol],
        |r: &dyn rows::Row| r.col(0),
    )?
    .unwrap_or_default();
    state::add(&mut counts, state::whole_hours(sums, beyond, at_edge));
    Ok(counts.into())
}

/// The summary counts of the items of `[s, e)` read one by one: one range of the items'
/// index, which covers every column read.
fn items_summary(
    conn: &Connection,
    carrier_id: &str,
    s: Micros,
    e: Micros,
    tol: i64,
) -> StoreResult<rows::SummaryCounts> {
    let sql = "SELECT count(platform_us), coalesce(sum(platform_us), 0),
                      count(*) FILTER (WHERE kind = 1 AND diff_us <= :tol),
                      count(*) FILTER (WHERE kind = 1 AND diff_us > :tol),
                      coalesce(sum(carrier_us) FILTER (WHERE kind = 1), 0),
                      count(*) FILTER (WHERE kind = 3),
                      coalesce(sum(carrier_us) FILTER (WHERE kind = 3), 0)
                 FROM recon_items INDEXED BY recon_items_by_time
                WHERE carrier_id = :c AND period_time >= :s AND period_time < :e";
    let params = named_params! {":c": carrier_id, ":s": s, ":e": e, ":tol": tol};
    query::first(conn, sql, params, rows::summary_counts)?
        .ok_or_else(|| StoreError::Internal("the summary query returned no row".into()))
}

/// A page of discrepancies by (start time, kind, row id), from the pairing state: a keyset
/// range of the items' index from the cursor, skipping the pairs that agree, so page N costs
/// what page 1 costs.
#[allow(clippy::too_many_arguments)]
pub fn discrepancies(
    conn: &Connection,
    carrier_id: &str,
    s: Micros,
    e: Micros,
    tol: i64,
    kind: Option<DiscrepancyKind>,
    after: Option<DiscrepancyCursor>,
    limit: usize,
) -> StoreResult<KeyedPage<Discrepancy, DiscrepancyCursor>> {
    let sql = "SELECT i.kind, i.period_time, i.item_key,
                      coalesce(p.call_id, d.call_id), coalesce(p.correlation_id, d.correlation_id),
                      coalesce(d.record_id, ''), coalesce(p.caller_number, d.caller_number),
                      coalesce(p.callee_number, d.callee_number), i.platform_us, i.carrier_us
                 FROM recon_items i INDEXED BY recon_items_by_time
                 LEFT JOIN call_records p ON p.id = i.record_id
                 LEFT JOIN call_durations d ON d.id = i.report_id
                WHERE i.carrier_id = :c AND i.period_time >= :from AND i.period_time < :e
                  AND (i.kind <> 1 OR i.diff_us > :tol)
                  AND (:kind IS NULL OR i.kind = :kind)
                  AND (:a_start IS NULL
                       OR (i.period_time, i.kind, i.item_key) > (:a_start, :a_kind, :a_key))
                ORDER BY i.period_time, i.kind, i.item_key LIMIT :limit";
    let (a_start, a_kind, a_key) = match after {
        Some((s, k, id)) => (Some(s), Some(k), Some(id)),
        None => (None, None, None),
    };
    // The index range starts at the cursor's time, not the period's: the row-value condition
    // alone is only a filter, and left to it a page would walk every item before its cursor
    // (page 80 of 80 took 11 times page 1).
    let from = a_start.map_or(s, |a| a.max(s));
    let params = named_params! {
        ":c": carrier_id, ":from": from, ":e": e, ":tol": tol,
        ":kind": kind.map(DiscrepancyKind::code), ":a_start": a_start, ":a_kind": a_kind,
        ":a_key": a_key, ":limit": rows::fetch(limit),
    };
    query::page(conn, sql, params, rows::discrepancy, limit)
}

/// A carrier's reconciliation feed after position `after`, in order, at most `limit`: the
/// entries whose last change is later (each as it now stands) and the entries removed later.
pub fn changes_after(
    conn: &Connection,
    carrier_id: &str,
    after: i64,
    limit: usize,
) -> StoreResult<Vec<ReconciliationChange>> {
    let sql = "SELECT * FROM (
                 SELECT i.sequence, CASE WHEN i.record_id IS NULL THEN 2 ELSE 1 END, 0,
                        coalesce(p.call_id, d.call_id), coalesce(p.correlation_id, d.correlation_id),
                        coalesce(d.record_id, ''), i.period_time, i.platform_us, i.carrier_us
                   FROM recon_items i INDEXED BY recon_items_feed
                   LEFT JOIN call_records p ON p.id = i.record_id
                   LEFT JOIN call_durations d ON d.id = i.report_id
                  WHERE i.carrier_id = ?1 AND i.sequence > ?2
                  ORDER BY i.sequence LIMIT ?3)
               UNION ALL
               SELECT * FROM (
                 SELECT sequence, entry, 1, CASE entry WHEN 1 THEN entry_key ELSE '' END, '',
                        CASE entry WHEN 2 THEN entry_key ELSE '' END, period_time, NULL, NULL
                   FROM recon_removed WHERE carrier_id = ?1 AND sequence > ?2
                  ORDER BY sequence LIMIT ?3)
               ORDER BY 1 LIMIT ?3";
    query::all(
        conn,
        sql,
        params![carrier_id, after, limit as i64],
        rows::reconciliation_change,
    )
}

/// Inserts `carrier_id`'s pairing items (`recon_items`, without their difference classes and
/// usage lines, at negative placeholder positions) as the set-based rules pair its stored
/// records and reports; how many. The migration that adds the pairing state builds it with
/// this, once.
pub(super) fn reference_items(conn: &Connection, carrier_id: &str) -> rusqlite::Result<usize> {
    let sql = format!(
        "INSERT INTO recon_items (carrier_id, record_id, report_id, kind, item_key, period_time,
                                  platform_us, carrier_us, diff_us, stage, sequence)
        {},
        paired AS MATERIALIZED (SELECT did FROM pairs)
        SELECT *, -row_number() OVER () FROM (
        SELECT :c, p.id, pairs.did, CASE WHEN pairs.did IS NULL THEN 2 ELSE 1 END, p.id,
               p.start_time, p.duration_us, d.duration_us, abs(p.duration_us - d.duration_us),
               coalesce(pairs.st, 0)
          FROM pw p LEFT JOIN pairs ON pairs.rid = p.id LEFT JOIN call_durations d ON d.id = pairs.did
        UNION ALL
        SELECT :c, NULL, d.id, 3, d.id, d.start_time, NULL, d.duration_us, NULL, 0
          FROM call_durations d
         WHERE d.carrier_id = :c AND d.id NOT IN (SELECT did FROM paired))",
        pairs_cte(Scope::Carrier)
    );
    conn.execute(
        &sql,
        named_params! {":c": carrier_id, ":s": i64::MIN, ":e": i64::MAX},
    )
}

/// The query behind [`summary`]: named parameters `:c` (the carrier), `:s` and `:e` (the
/// period, microseconds) and `:tol` (the tolerance, microseconds); one row of seven counts and
/// sums. Public so that `ocx-bench` can run the very same text in the sqlite3 shell (R8).
pub fn summary_sql() -> String {
    format!(
        "{},
        m AS MATERIALIZED (
            SELECT p.duration_us AS pdur, d.duration_us AS ddur
              FROM pairs JOIN pw p ON p.id = pairs.rid JOIN call_durations d ON d.id = pairs.did),
        um AS MATERIALIZED (
            SELECT d.duration_us FROM dw JOIN call_durations d ON d.id = dw.id
             WHERE dw.id NOT IN (SELECT did FROM pairs))
        SELECT (SELECT count(*) FROM pw), (SELECT coalesce(sum(duration_us), 0) FROM pw),
               (SELECT count(*) FROM m WHERE abs(pdur - ddur) <= :tol),
               (SELECT count(*) FROM m WHERE abs(pdur - ddur) > :tol),
               (SELECT coalesce(sum(ddur), 0) FROM m),
               (SELECT count(*) FROM um), (SELECT coalesce(sum(duration_us), 0) FROM um)",
        pairs_cte(Scope::Carrier)
    )
}

/// The summary of one carrier's period by the set-based rules (the reference the pairing
/// state is held to).
pub fn reference_summary(
    conn: &Connection,
    carrier_id: &str,
    s: Micros,
    e: Micros,
    tol: i64,
) -> StoreResult<ReconciliationSummary> {
    let params = named_params! {":c": carrier_id, ":s": s, ":e": e, ":tol": tol};
    let counts = query::first(conn, &summary_sql(), params, rows::summary_counts)?
        .ok_or_else(|| StoreError::Internal("the summary query returned no row".into()))?;
    Ok(counts.into())
}

/// A page of discrepancies by (start time, kind, row id), by the set-based rules (the
/// reference the pairing state is held to).
#[allow(clippy::too_many_arguments)]
pub fn reference_discrepancies(
    conn: &Connection,
    carrier_id: &str,
    s: Micros,
    e: Micros,
    tol: i64,
    kind: Option<DiscrepancyKind>,
    after: Option<DiscrepancyCursor>,
    limit: usize,
) -> StoreResult<KeyedPage<Discrepancy, DiscrepancyCursor>> {
    let sql = format!(
        "{},
        disc AS (
            SELECT 1 AS kind, p.start_time, p.id AS key, p.call_id, p.correlation_id, d.record_id,
                   p.caller_number, p.callee_number, p.duration_us AS pdur, d.duration_us AS ddur
              FROM pairs JOIN pw p ON p.id = pairs.rid JOIN call_durations d ON d.id = pairs.did
             WHERE abs(p.duration_us - d.duration_us) > :tol
            UNION ALL
            SELECT 2, p.start_time, p.id, p.call_id, p.correlation_id, '', p.caller_number,
                   p.callee_number, p.duration_us, NULL
              FROM pw p WHERE p.id NOT IN (SELECT rid FROM pairs)
            UNION ALL
            SELECT 3, d.start_time, d.id, d.call_id, d.correlation_id, d.record_id, d.caller_number,
                   d.callee_number, NULL, d.duration_us
              FROM dw JOIN call_durations d ON d.id = dw.id WHERE dw.id NOT IN (SELECT did FROM pairs))
        SELECT kind, start_time, key, call_id, correlation_id, record_id, caller_number, callee_number, pdur, ddur
          FROM disc
         WHERE (:kind IS NULL OR kind = :kind)
           AND (:a_start IS NULL OR (start_time, kind, key) > (:a_start, :a_kind, :a_key))
         ORDER BY start_time, kind, key LIMIT :limit",
        pairs_cte(Scope::Carrier)
    );
    let (a_start, a_kind, a_key) = match after {
        Some((s, k, id)) => (Some(s), Some(k), Some(id)),
        None => (None, None, None),
    };
    let params = named_params! {
        ":c": carrier_id, ":s": s, ":e": e, ":tol": tol, ":kind": kind.map(DiscrepancyKind::code),
        ":a_start": a_start, ":a_kind": a_kind, ":a_key": a_key, ":limit": rows::fetch(limit),
    };
    query::page(conn, &sql, params, rows::discrepancy, limit)
}

/// A usage query: the tenant, the period's start and end, the grouping.
pub(super) type UsageQuery =
    fn(&Connection, &str, Micros, Micros, UsageGrouping) -> StoreResult<Vec<UsageRow>>;

/// A tenant's usage from the pairing state: each call's duration is its paired report's, else
/// the platform's. The whole days of the period come from the day sums of the tenant's lines,
/// the whole hours at either edge from their hour sums, and the parts of an hour at either
/// edge from the items of the tenant's records: a few hundred rows per line whatever the
/// period, exact for any instants.
pub fn usage(
    conn: &Connection,
    tenant_id: &str,
    s: Micros,
    e: Micros,
    grouping: UsageGrouping,
) -> StoreResult<Vec<UsageRow>> {
    let lines: HashMap<i64, (String, i64)> = conn
        .prepare_cached("SELECT id, number, direction FROM usage_lines WHERE tenant_id = ?1")?
        .query_map([tenant_id], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?
        .collect::<rusqlite::Result<_>>()?;
    let mut usage = state::Usage::new(grouping, lines);
    let cuts = state::Cuts::of(s, e);
    // By day: the tenant's totals, one row per hour or day. By number: each line's rows,
    // summed in the database per line.
    let (mut sums, above) = match grouping {
        UsageGrouping::Day => (
            conn.prepare_cached(
                "SELECT 0, bucket, calls, operator_calls, total_us FROM usage_sums
                  WHERE tenant_id = ?1 AND level = ?2 AND bucket >= ?3 AND bucket < ?4
                    AND line_id = 0",
            )?,
            crate::store::repair::LEVEL_TOTALS,
        ),
        UsageGrouping::NumberAndDirection => (
            conn.prepare_cached(
                "SELECT line_id, min(bucket), sum(calls), sum(operator_calls), sum(total_us)
                   FROM usage_sums
                  WHERE tenant_id = ?1 AND level = ?2 AND bucket >= ?3 AND bucket < ?4
                  GROUP BY line_id",
            )?,
            0,
        ),
    };
    for (level, unit, first, last) in cuts.sums {
        let rows = sums.query_map(params![tenant_id, level + above, first, last], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, i64>(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
            ))
        })?;
        for row in rows {
            let (line, bucket, calls, operator, total) = row?;
            usage.add(line, bucket * unit, calls, operator, total);
        }
    }
    let mut items = conn.prepare_cached(
        "SELECT i.line_id, i.period_time, i.carrier_us IS NOT NULL,
                coalesce(i.carrier_us, i.platform_us)
           FROM call_records r INDEXED BY call_records_by_tenant
           JOIN recon_items i ON i.record_id = r.id
          WHERE r.tenant_id = ?1 AND r.start_time >= ?2 AND r.start_time < ?3",
    )?;
    for (s, e) in cuts.edges {
        let rows = items.query_map(params![tenant_id, s, e], |r| {
            Ok((r.get::<_, Option<i64>>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        for row in rows {
            let (line, time, operator, total) = row?;
            if let Some(line) = line {
                usage.add(line, time, 1, operator, total);
            }
        }
    }
    Ok(usage.rows())
}

/// A tenant's usage by the set-based rules (the reference the usage sums are held to): each
/// call's duration is its matched report's, else the platform's.
pub fn reference_usage(
    conn: &Connection,
    tenant_id: &str,
    s: Micros,
    e: Micros,
    grouping: UsageGrouping,
) -> StoreResult<Vec<UsageRow>> {
    let key = match grouping {
        UsageGrouping::Day => "date(start_time / 1000000, 'unixepoch') AS k1, '' AS k2, 0 AS k3",
        UsageGrouping::NumberAndDirection => {
            "'' AS k1, CASE direction WHEN 1 THEN callee_number ELSE caller_number END AS k2, direction AS k3"
        }
    };
    let sql = format!(
        "{},
        u AS (
            SELECT p.start_time, p.direction, p.caller_number, p.callee_number,
                   coalesce(d.duration_us, p.duration_us) AS dur, d.id IS NOT NULL AS operator
              FROM pw p LEFT JOIN pairs ON pairs.rid = p.id LEFT JOIN call_durations d ON d.id = pairs.did)
        SELECT k1, k2, k3, count(*), sum(dur), sum(operator)
          FROM (SELECT {key}, dur, operator FROM u)
         GROUP BY k1, k2, k3 ORDER BY k1, k2, k3",
        pairs_cte(Scope::Tenant)
    );
    let params = named_params! {":t": tenant_id, ":s": s, ":e": e};
    let rows = query::all(conn, &sql, params, rows::usage_row)?;
    Ok(rows)
}

//! Reconciliation and tenant usage (the port of `sqlite::reconcile`'s set-based SQL).
//!
//! The same matching rules as the SQLite backend, written once in [`pairs_cte`] and shared by
//! the summary, the discrepancy listing and usage, run inside PostgreSQL. Where the SQLite text
//! leans on SQLite's behaviour, this one says so explicitly:
//! - text that orders (the tie-break on `record_id`, the number in usage) is compared with
//!   `COLLATE "C"`, byte order, as SQLite's default `BINARY` collation does, whatever the
//!   database's collation;
//! - sums are cast back to `BIGINT` (PostgreSQL's `sum(bigint)` is `numeric`);
//! - "not among the pairs" is `NOT EXISTS`, an anti-join: `NOT IN (subquery)` is only hashed
//!   when the planner thinks the subquery fits in `work_mem`, and is otherwise re-scanned for
//!   every row (quadratic over a million pairs).
//! - the statements are prepared afresh for each call, never `prepare_cached`: PostgreSQL
//!   plans a cached statement generically (without the parameters' values) after five runs,
//!   and the generic plan, which guesses a small period, nests loops over index probes. On
//!   1,000,000 records the summary then ran for minutes instead of about ten seconds.
//!   Planning takes a few milliseconds, nothing beside the query.
//! - the big call-id joins (`dr`, `pd`) read the tables themselves, not a materialized CTE, so
//!   the planner has their statistics and can hash (a CTE has none: it then prices a hash join
//!   as if every row fell into a few buckets and sorts both sides for a merge join instead).
//!   The reports' durations ride along into `pairs`, so nothing looks a report up again by id.

use deadpool_postgres::GenericClient;

use super::pool::PgResult;
use super::query;
use crate::domain::{
    Discrepancy, DiscrepancyCursor, DiscrepancyKind, Micros, ReconciliationChange,
    ReconciliationPeriod, ReconciliationSummary, UsageGrouping, UsageRow,
};
use crate::store::KeyedPage;
use crate::store::rows;
use crate::store::sql::Scope;
use crate::store::state;

/// The matching rules as CTEs, ending in `pairs(did, rid, ddur)`: one row per matched (report,
/// platform record), one to one, with the report's duration. Parameters: `$1` (the carrier or
/// the tenant, see [`Scope`]), `$2` and `$3` (the period, microseconds). The stages are those
/// of `sqlite::reconcile::pairs_cte`:
///
/// - `pw`: the platform records of the period.
/// - `dr`: each report of the period (carrier scope; none for a tenant) with the record its
///   call_id names (NULL if none); it stands for the SQLite text's `dw` too. `pd`: each record
///   of the period with the reports naming its call_id (NULL if none).
/// - Stage 1 (`s1`): a report whose call_id names one of the carrier's records matches it;
///   among several, the latest `update_time` (then greatest `record_id`, in byte order) wins.
///   The records are those of the period and those outside it that a report of the period
///   names. `DISTINCT ON` keeps the winner of each record (the SQLite text's `row_number() = 1`).
/// - Stage 2 (`cids`, `rc`, `dc`): records and reports with no call-id match and the same
///   correlation id pair by rank in start-time order.
fn pairs_cte(scope: Scope) -> String {
    let (pw_where, dr_where) = match scope {
        Scope::Carrier => (
            "carrier_id = $1",
            "d.carrier_id = $1 AND d.start_time >= $2 AND d.start_time < $3",
        ),
        Scope::Tenant => ("tenant_id = $1", "false"),
    };
    format!(
        "WITH
        pw AS MATERIALIZED (
            SELECT id, carrier_id, call_id, correlation_id, start_time, duration_us, direction,
                   caller_number, callee_number
              FROM call_records WHERE {pw_where} AND start_time >= $2 AND start_time < $3),
        dr AS MATERIALIZED (
            SELECT d.id AS did, d.carrier_id, d.correlation_id, d.duration_us, r.id AS rid,
                   r.start_time AS rstart
              FROM call_durations d LEFT JOIN call_records r
                ON d.call_id <> '' AND r.call_id = d.call_id AND r.carrier_id = d.carrier_id
             WHERE {dr_where}),
        pd AS MATERIALIZED (
            SELECT r.id AS rid, r.carrier_id, r.correlation_id, d.id AS did, d.update_time,
                   d.record_id, d.duration_us
              FROM call_records r LEFT JOIN call_durations d
                ON d.carrier_id = r.carrier_id AND d.call_id = r.call_id
             WHERE r.{pw_where} AND r.start_time >= $2 AND r.start_time < $3),
        s1 AS MATERIALIZED (
            SELECT DISTINCT ON (rid) did, rid, ddur
              FROM (SELECT did, rid, update_time, record_id, duration_us AS ddur
                      FROM pd WHERE did IS NOT NULL
                    UNION ALL
                    SELECT d.id, x.rid, d.update_time, d.record_id, d.duration_us
                      FROM (SELECT DISTINCT rid FROM dr
                             WHERE rid IS NOT NULL AND NOT (rstart >= $2 AND rstart < $3)) x
                      JOIN call_records r ON r.id = x.rid
                      JOIN call_durations d
                        ON d.carrier_id = r.carrier_id AND d.call_id = r.call_id) c
             ORDER BY rid, update_time DESC, record_id COLLATE \"C\" DESC),
        cids AS MATERIALIZED (
            SELECT carrier_id, correlation_id FROM pd WHERE did IS NULL AND correlation_id <> ''
            UNION
            SELECT carrier_id, correlation_id FROM dr WHERE rid IS NULL AND correlation_id <> ''),
        rc AS MATERIALIZED (
            SELECT r.id, r.carrier_id, r.correlation_id,
                   row_number() OVER (PARTITION BY r.carrier_id, r.correlation_id
                                      ORDER BY r.start_time, r.id) AS k
              FROM cids JOIN call_records r
                ON r.carrier_id = cids.carrier_id AND r.correlation_id = cids.correlation_id
             WHERE NOT EXISTS (
                 SELECT 1 FROM call_durations d
                  WHERE d.carrier_id = r.carrier_id AND d.call_id = r.call_id)),
        dc AS MATERIALIZED (
            SELECT d.id, d.carrier_id, d.correlation_id, d.duration_us,
                   row_number() OVER (PARTITION BY d.carrier_id, d.correlation_id
                                      ORDER BY d.start_time, d.id) AS k
              FROM cids JOIN call_durations d
                ON d.carrier_id = cids.carrier_id AND d.correlation_id = cids.correlation_id
             WHERE NOT EXISTS (
                 SELECT 1 FROM call_records r
                  WHERE r.call_id = d.call_id AND r.carrier_id = d.carrier_id)),
        pairs AS MATERIALIZED (
            SELECT did, rid, ddur, 1 AS st FROM s1
            UNION ALL
            SELECT dc.id, rc.id, dc.duration_us, 2 FROM rc JOIN dc
              ON dc.carrier_id = rc.carrier_id AND dc.correlation_id = rc.correlation_id
             AND dc.k = rc.k)"
    )
}

/// The query behind [`reference_summary`]: `$1` the carrier, `$2` and `$3` the period (microseconds),
/// `$4` the tolerance (microseconds); one row of seven counts and sums, as
/// `sqlite::reconcile::summary_sql`.
pub fn summary_sql() -> String {
    format!(
        "{},
        m AS MATERIALIZED (
            SELECT p.duration_us AS pdur, pairs.ddur FROM pairs JOIN pw p ON p.id = pairs.rid),
        um AS MATERIALIZED (
            SELECT dr.duration_us FROM dr
             WHERE NOT EXISTS (SELECT 1 FROM pairs WHERE pairs.did = dr.did))
        SELECT (SELECT count(*) FROM pw),
               (SELECT coalesce(sum(duration_us), 0)::BIGINT FROM pw),
               (SELECT count(*) FROM m WHERE abs(pdur - ddur) <= $4),
               (SELECT count(*) FROM m WHERE abs(pdur - ddur) > $4),
               (SELECT coalesce(sum(ddur), 0)::BIGINT FROM m),
               (SELECT count(*) FROM um),
               (SELECT coalesce(sum(duration_us), 0)::BIGINT FROM um)",
        pairs_cte(Scope::Carrier)
    )
}

/// The summary of one carrier's period by the set-based rules (the reference the pairing state
/// is held to).
pub async fn reference_summary(
    db: &impl GenericClient,
    carrier_id: &str,
    start: Micros,
    end: Micros,
    tolerance_us: Micros,
) -> PgResult<ReconciliationSummary> {
    let row = db
        .query_one(
            summary_sql().as_str(),
            &[&carrier_id, &start, &end, &tolerance_us],
        )
        .await?;
    Ok(rows::summary_counts(&row)?.into())
}

/// The query behind [`reference_discrepancies`]: `$1`..`$4` as [`summary_sql`], `$5` the kind code (or
/// NULL for all), `$6`..`$8` the cursor (start time, kind code, row id; NULL for the first
/// page), `$9` the row limit.
fn discrepancies_sql() -> String {
    format!(
        "{},
        disc AS (
            SELECT 1 AS kind, p.start_time, p.id AS key, p.call_id, p.correlation_id, d.record_id,
                   p.caller_number, p.callee_number, p.duration_us AS pdur, d.duration_us AS ddur
              FROM pairs JOIN pw p ON p.id = pairs.rid JOIN call_durations d ON d.id = pairs.did
             WHERE abs(p.duration_us - pairs.ddur) > $4
            UNION ALL
            SELECT 2, p.start_time, p.id, p.call_id, p.correlation_id, '', p.caller_number,
                   p.callee_number, p.duration_us, NULL
              FROM pw p WHERE NOT EXISTS (SELECT 1 FROM pairs WHERE pairs.rid = p.id)
            UNION ALL
            SELECT 3, d.start_time, d.id, d.call_id, d.correlation_id, d.record_id,
                   d.caller_number, d.callee_number, NULL, d.duration_us
              FROM dr JOIN call_durations d ON d.id = dr.did
             WHERE NOT EXISTS (SELECT 1 FROM pairs WHERE pairs.did = dr.did))
        SELECT kind, start_time, key, call_id, correlation_id, record_id, caller_number,
               callee_number, pdur, ddur
          FROM disc
         WHERE ($5::BIGINT IS NULL OR kind = $5::BIGINT)
           AND ($6::BIGINT IS NULL
                OR (start_time, kind, key) > ($6::BIGINT, $7::BIGINT, $8::BIGINT))
         ORDER BY start_time, kind, key LIMIT $9",
        pairs_cte(Scope::Carrier)
    )
}

/// A page of discrepancies by (start time, kind, row id), by the set-based rules (the
/// reference).
pub async fn reference_discrepancies(
    db: &impl GenericClient,
    p: &ReconciliationPeriod,
    kind: Option<DiscrepancyKind>,
    after: Option<DiscrepancyCursor>,
    limit: usize,
) -> PgResult<KeyedPage<Discrepancy, DiscrepancyCursor>> {
    let (carrier_id, start, end, tolerance_us) = (&p.carrier_id, p.start, p.end, p.tolerance_us);
    let kind = kind.map(|k| i64::from(k.code()));
    let (a_start, a_kind, a_key) = match after {
        Some((s, k, id)) => (Some(s), Some(i64::from(k)), Some(id)),
        None => (None, None, None),
    };
    let found = db
        .query(
            discrepancies_sql().as_str(),
            &[
                &carrier_id,
                &start,
                &end,
                &tolerance_us,
                &kind,
                &a_start,
                &a_kind,
                &a_key,
                &rows::fetch(limit),
            ],
        )
        .await?;
    let page = query::decode_all(&found, rows::discrepancy)?;
    Ok(rows::limited(page, limit))
}

/// The query behind [`reference_usage`]: `$1` the tenant, `$2` and `$3` the period. Each call's
/// duration is its matched report's, else the platform's. Days are UTC days of the start time
/// truncated to whole seconds (SQLite's `date(start_time / 1000000, 'unixepoch')`); grouped by
/// day number and formatted per group, which orders as the `YYYY-MM-DD` text does.
fn usage_sql(grouping: UsageGrouping) -> String {
    let (key, select) = match grouping {
        UsageGrouping::Day => (
            "floor((start_time / 1000000)::FLOAT8 / 86400)::BIGINT AS k1, '' AS k2, 0::BIGINT AS k3",
            "to_char(DATE '1970-01-01' + k1::INTEGER, 'YYYY-MM-DD')",
        ),
        UsageGrouping::NumberAndDirection => (
            "0::BIGINT AS k1, \
             (CASE direction WHEN 1 THEN callee_number ELSE caller_number END) COLLATE \"C\" AS k2, \
             direction AS k3",
            "''",
        ),
    };
    format!(
        "{},
        u AS (
            SELECT p.start_time, p.direction, p.caller_number, p.callee_number,
                   coalesce(pairs.ddur, p.duration_us) AS dur, pairs.did IS NOT NULL AS operator
              FROM pw p LEFT JOIN pairs ON pairs.rid = p.id)
        SELECT {select}, k2, k3, count(*), sum(dur)::BIGINT, count(*) FILTER (WHERE operator)
          FROM (SELECT {key}, dur, operator FROM u) g
         GROUP BY k1, k2, k3 ORDER BY k1, k2, k3",
        pairs_cte(Scope::Tenant)
    )
}

/// A tenant's usage by the set-based rules (the reference): each call's duration is its
/// matched report's, else the platform's.
pub async fn reference_usage(
    db: &impl GenericClient,
    tenant_id: &str,
    start: Micros,
    end: Micros,
    grouping: UsageGrouping,
) -> PgResult<Vec<UsageRow>> {
    let found = db
        .query(usage_sql(grouping).as_str(), &[&tenant_id, &start, &end])
        .await?;
    query::decode_all(&found, rows::usage_row)
}

/// Inserts `carrier_id`'s pairing items (without their difference classes and usage lines, at
/// negative placeholder positions) as the set-based rules pair its stored records and reports;
/// how many. The migration that adds the pairing state builds it with this, once.
pub async fn reference_items(db: &impl GenericClient, carrier_id: &str) -> PgResult<u64> {
    let sql = format!(
        "{},
        items AS (
            SELECT p.id AS rid, pairs.did, CASE WHEN pairs.did IS NULL THEN 2 ELSE 1 END AS kind,
                   p.id AS key, p.start_time, p.duration_us AS pdur, pairs.ddur,
                   coalesce(pairs.st, 0) AS st
              FROM pw p LEFT JOIN pairs ON pairs.rid = p.id
            UNION ALL
            SELECT NULL, d.id, 3, d.id, d.start_time, NULL, d.duration_us, 0
              FROM call_durations d
             WHERE d.carrier_id = $1
               AND NOT EXISTS (SELECT 1 FROM pairs WHERE pairs.did = d.id))
        INSERT INTO recon_items (carrier_id, record_id, report_id, kind, item_key, period_time,
                                 platform_us, carrier_us, diff_us, stage, sequence)
        SELECT $1, rid, did, kind, key, start_time, pdur, ddur, abs(pdur - ddur), st,
               -row_number() OVER ()
          FROM items",
        pairs_cte(Scope::Carrier)
    );
    Ok(db
        .execute(sql.as_str(), &[&carrier_id, &i64::MIN, &i64::MAX])
        .await?)
}

/// The summary of one carrier's period, from the pairing state (as
/// `sqlite::reconcile::summary`): the whole hours from the hour aggregates (the pairs of the
/// tolerance's own difference class counted one by one), the parts of an hour at either edge
/// from the items. Exact for any period and any tolerance.
pub async fn summary(
    db: &impl GenericClient,
    carrier_id: &str,
    s: Micros,
    e: Micros,
    tol: i64,
) -> PgResult<ReconciliationSummary> {
    let hour = crate::store::pairing::HOUR_US;
    let Some((h0, h1)) = state::whole(s, e, hour) else {
        return Ok(items_summary(db, carrier_id, s, e, tol).await?.into());
    };
    let mut counts = items_summary(db, carrier_id, s, h0 * hour, tol).await?;
    state::add(
        &mut counts,
        items_summary(db, carrier_id, h1 * hour, e, tol).await?,
    );
    let stmt = db
        .prepare_cached(
            "SELECT coalesce(sum(platform_count), 0)::BIGINT, coalesce(sum(platform_us), 0)::BIGINT,
                    coalesce(sum(paired_count), 0)::BIGINT,
                    coalesce(sum(paired_carrier_us), 0)::BIGINT,
                    coalesce(sum(lone_count), 0)::BIGINT, coalesce(sum(lone_us), 0)::BIGINT
               FROM recon_hours WHERE carrier_id = $1 AND hour >= $2 AND hour < $3",
        )
        .await?;
    let row = db.query_one(&stmt, &[&carrier_id, &h0, &h1]).await?;
    let sums = [
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
    ];
    let class = crate::store::pairing::difference_class(tol);
    let stmt = db
        .prepare_cached(
            "SELECT coalesce(sum(pairs), 0)::BIGINT FROM recon_classes
              WHERE carrier_id = $1 AND hour >= $2 AND hour < $3 AND diff_class > $4",
        )
        .await?;
    let beyond: i64 = db
        .query_one(&stmt, &[&carrier_id, &h0, &h1, &class])
        .await?
        .get(0);
    let stmt = db
        .prepare_cached(
            "SELECT count(*) FROM recon_items
              WHERE carrier_id = $1 AND kind = 1 AND diff_class = $2
                AND period_time >= $3 AND period_time < $4 AND diff_us > $5",
        )
        .await?;
    let at_edge: i64 = db
        .query_one(
            &stmt,
            &[&carrier_id, &class, &(h0 * hour), &(h1 * hour), &tol],
        )
        .await?
        .get(0);
    state::add(&mut counts, state::whole_hours(sums, beyond, at_edge));
    Ok(counts.into())
}

/// The summary counts of the items of `[s, e)` read one by one (one range of the items' index).
async fn items_summary(
    db: &impl GenericClient,
    carrier_id: &str,
    s: Micros,
    e: Micros,
    tol: i64,
) -> PgResult<rows::SummaryCounts> {
    let stmt = db
        .prepare_cached(
            "SELECT count(platform_us), coalesce(sum(platform_us), 0)::BIGINT,
                    count(*) FILTER (WHERE kind = 1 AND diff_us <= $4),
                    count(*) FILTER (WHERE kind = 1 AND diff_us > $4),
                    coalesce(sum(carrier_us) FILTER (WHERE kind = 1), 0)::BIGINT,
                    count(*) FILTER (WHERE kind = 3),
                    coalesce(sum(carrier_us) FILTER (WHERE kind = 3), 0)::BIGINT
               FROM recon_items
              WHERE carrier_id = $1 AND period_time >= $2 AND period_time < $3",
        )
        .await?;
    let row = db.query_one(&stmt, &[&carrier_id, &s, &e, &tol]).await?;
    Ok(rows::summary_counts(&row)?)
}

/// A page of discrepancies by (start time, kind, row id), from the pairing state: a keyset
/// range of the items' index from the cursor, skipping the pairs that agree.
pub async fn discrepancies(
    db: &impl GenericClient,
    p: &ReconciliationPeriod,
    kind: Option<DiscrepancyKind>,
    after: Option<DiscrepancyCursor>,
    limit: usize,
) -> PgResult<KeyedPage<Discrepancy, DiscrepancyCursor>> {
    let (carrier_id, s, e, tol) = (&p.carrier_id, p.start, p.end, p.tolerance_us);
    let kind = kind.map(|k| i64::from(k.code()));
    let (a_start, a_kind, a_key) = match after {
        Some((s, k, id)) => (s, i64::from(k), id),
        None => (s, i64::MIN, i64::MIN),
    };
    // The cursor is a row-value bound of the index (for the first page, the period's start).
    let stmt = db
        .prepare_cached(
            "SELECT i.kind, i.period_time, i.item_key,
                    coalesce(p.call_id, d.call_id), coalesce(p.correlation_id, d.correlation_id),
                    coalesce(d.record_id, ''), coalesce(p.caller_number, d.caller_number),
                    coalesce(p.callee_number, d.callee_number), i.platform_us, i.carrier_us
               FROM recon_items i
               LEFT JOIN call_records p ON p.id = i.record_id
               LEFT JOIN call_durations d ON d.id = i.report_id
              WHERE i.carrier_id = $1 AND i.period_time >= $2 AND i.period_time < $3
                AND (i.period_time, i.kind, i.item_key) > ($6, $7, $8)
                AND (i.kind <> 1 OR i.diff_us > $4)
                AND ($5::BIGINT IS NULL OR i.kind = $5::BIGINT)
              ORDER BY i.period_time, i.kind, i.item_key LIMIT $9",
        )
        .await?;
    let found = db
        .query(
            &stmt,
            &[
                &carrier_id,
                &s,
                &e,
                &tol,
                &kind,
                &a_start,
                &a_kind,
                &a_key,
                &rows::fetch(limit),
            ],
        )
        .await?;
    let page = query::decode_all(&found, rows::discrepancy)?;
    Ok(rows::limited(page, limit))
}

/// A tenant's usage from the pairing state (as `sqlite::reconcile::usage`).
pub async fn usage(
    db: &impl GenericClient,
    tenant_id: &str,
    s: Micros,
    e: Micros,
    grouping: UsageGrouping,
) -> PgResult<Vec<UsageRow>> {
    let stmt = db
        .prepare_cached("SELECT id, number, direction FROM usage_lines WHERE tenant_id = $1")
        .await?;
    let lines = db
        .query(&stmt, &[&tenant_id])
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let mut usage = state::Usage::new(grouping, lines);
    let cuts = state::Cuts::of(s, e);
    // By day: the tenant's totals, one row per hour or day. By number: each line's rows,
    // summed in the database per line (as on SQLite).
    let (stmt, above) = match grouping {
        UsageGrouping::Day => (
            db.prepare_cached(
                "SELECT 0::BIGINT, bucket, calls, operator_calls, total_us FROM usage_sums
                  WHERE tenant_id = $1 AND level = $2 AND bucket >= $3 AND bucket < $4
                    AND line_id = 0",
            )
            .await?,
            crate::store::repair::LEVEL_TOTALS,
        ),
        UsageGrouping::NumberAndDirection => (
            db.prepare_cached(
                "SELECT line_id, min(bucket), sum(calls)::BIGINT, sum(operator_calls)::BIGINT,
                        sum(total_us)::BIGINT
                   FROM usage_sums
                  WHERE tenant_id = $1 AND level = $2 AND bucket >= $3 AND bucket < $4
                  GROUP BY line_id",
            )
            .await?,
            0,
        ),
    };
    for (level, unit, first, last) in cuts.sums {
        for r in db
            .query(&stmt, &[&tenant_id, &(level + above), &first, &last])
            .await?
        {
            let bucket: i64 = r.get(1);
            usage.add(r.get(0), bucket * unit, r.get(2), r.get(3), r.get(4));
        }
    }
    let stmt = db
        .prepare_cached(
            "SELECT i.line_id, i.period_time, CASE WHEN i.carrier_us IS NULL THEN 0 ELSE 1 END::BIGINT,
                    coalesce(i.carrier_us, i.platform_us)
               FROM call_records r JOIN recon_items i ON i.record_id = r.id
              WHERE r.tenant_id = $1 AND r.start_time >= $2 AND r.start_time < $3",
        )
        .await?;
    for (s, e) in cuts.edges {
        for r in db.query(&stmt, &[&tenant_id, &s, &e]).await? {
            if let Some(line) = r.get::<_, Option<i64>>(0) {
                usage.add(line, r.get(1), 1, r.get(2), r.get(3));
            }
        }
    }
    Ok(usage.rows())
}

/// A carrier's reconciliation feed after position `after`, in order, at most `limit` (as
/// `sqlite::reconcile::changes_after`).
pub async fn changes_after(
    db: &impl GenericClient,
    carrier_id: &str,
    after: i64,
    limit: usize,
) -> PgResult<Vec<ReconciliationChange>> {
    let sql = "SELECT * FROM (
                 (SELECT i.sequence, CASE WHEN i.record_id IS NULL THEN 2 ELSE 1 END::BIGINT,
                         0::BIGINT, coalesce(p.call_id, d.call_id),
                         coalesce(p.correlation_id, d.correlation_id), coalesce(d.record_id, ''),
                         i.period_time, i.platform_us, i.carrier_us
                    FROM recon_items i
                    LEFT JOIN call_records p ON p.id = i.record_id
                    LEFT JOIN call_durations d ON d.id = i.report_id
                   WHERE i.carrier_id = $1 AND i.sequence > $2
                   ORDER BY i.sequence LIMIT $3)
                 UNION ALL
                 (SELECT sequence, entry, 1::BIGINT,
                         CASE entry WHEN 1 THEN entry_key ELSE '' END, '',
                         CASE entry WHEN 2 THEN entry_key ELSE '' END, period_time,
                         NULL::BIGINT, NULL::BIGINT
                    FROM recon_removed WHERE carrier_id = $1 AND sequence > $2
                   ORDER BY sequence LIMIT $3)) c
               ORDER BY 1 LIMIT $3";
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    query::all(
        db,
        sql,
        &[&carrier_id, &after, &limit],
        rows::reconciliation_change,
    )
    .await
}

//! Conformance checks for duration reports, reconciliation and usage.
//!
//! One data set, built through the store, covers every rule of the matching (see
//! `reconciliation.proto`): pairs by call id (the latest report wins; a correction counts),
//! pairs by correlation id in start-time order (ranks counted over all time, not only the
//! period), the tolerance on both sides of its edge, records and reports outside the period,
//! a pair whose record lies outside the period, and another carrier whose records and reports
//! share correlation ids and call ids with the first and must change nothing.

use std::future::Future;
use std::sync::Arc;

use super::{T1, T2, carrier, record, upload};
use ocx_server::domain::{
    CallDirection, CallRecord, Discrepancy, DiscrepancyCursor, DiscrepancyKind, DurationOutcome,
    DurationReport, IngestOutcome, Micros, ReconciliationPeriod, ReconciliationSummary,
    UsageGrouping, UsageRow,
};
use ocx_server::store::Store;

/// Runs this module's checks, each on a fresh store.
pub async fn run_all<F, Fut>(fresh: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    reconciliation_and_usage(fresh().await).await;
    empty_period_is_all_zeros(fresh().await).await;
}

const SEC: Micros = 1_000_000;
const DAY: Micros = 86_400 * SEC;
/// 2024-03-01T00:00:00Z: the period is this day and the next.
const T0: Micros = 1_709_251_200 * SEC;
const TOL: Micros = SEC;

/// Acme's numbers (tenant T1, tenant T2) and bravo's (tenant T1).
const ACME_T1: &str = "+4411";
const ACME_T2: &str = "+4412";
const BRAVO_T1: &str = "+4421";
/// The far end of every platform call, and the numbers every report carries.
const FAR: &str = "+3399";
const REPORT_CALLER: &str = "+3397";
const REPORT_CALLEE: &str = "+3396";

/// A platform record: `at` and `dur` in microseconds from [`T0`]; the tenant's side is
/// `number` (the carrier owning it owns the record).
fn rec(
    call_id: &str,
    correlation_id: &str,
    number: &str,
    direction: CallDirection,
    at: Micros,
    dur: Micros,
) -> CallRecord {
    let (caller, callee) = match direction {
        CallDirection::Inbound => (FAR, number),
        CallDirection::Outbound => (number, FAR),
    };
    let tenant = if number == ACME_T2 { T2 } else { T1 };
    CallRecord {
        correlation_id: correlation_id.into(),
        tenant_id: tenant.into(),
        direction,
        caller_number: caller.into(),
        callee_number: callee.into(),
        start_time: T0 + at,
        end_time: T0 + at + dur,
        duration_us: dur,
        ..record(call_id, 1, number)
    }
}

/// A carrier's report: `at` in microseconds from [`T0`].
fn rep(
    record_id: &str,
    call_id: &str,
    correlation_id: &str,
    at: Micros,
    dur: Micros,
) -> DurationReport {
    DurationReport {
        record_id: record_id.into(),
        call_id: call_id.into(),
        correlation_id: correlation_id.into(),
        caller_number: REPORT_CALLER.into(),
        callee_number: REPORT_CALLEE.into(),
        start_time: T0 + at,
        duration_us: dur,
    }
}

async fn report(
    store: &dyn Store,
    carrier_id: &str,
    reports: Vec<DurationReport>,
) -> Vec<DurationOutcome> {
    store
        .report_call_durations(carrier_id, reports)
        .await
        .expect("report durations")
}

/// Builds the data set (see the module doc and the comments on each item).
async fn build(store: &dyn Store) {
    use CallDirection::{Inbound, Outbound};
    carrier(store, "acme").await;
    carrier(store, "bravo").await;
    store
        .upload_numbers("acme", vec![upload(ACME_T1, T1), upload(ACME_T2, T2)])
        .await
        .expect("upload acme");
    store
        .upload_numbers("bravo", vec![upload(BRAVO_T1, T1)])
        .await
        .expect("upload bravo");
    let records = vec![
        // Paired by call id: exact; off by exactly the tolerance; beyond it (after correction).
        rec("a1", "", ACME_T1, Inbound, 100 * SEC, 60 * SEC),
        rec("a2", "", ACME_T1, Outbound, 200 * SEC, 60 * SEC),
        rec("a3", "", ACME_T1, Inbound, 300 * SEC, 60 * SEC),
        // No report from acme (bravo names its call id): missing on carrier.
        rec("a4", "", ACME_T2, Inbound, 500 * SEC, 30 * SEC),
        // Two reports name it: the later one wins, the other is missing on platform.
        rec("a5", "", ACME_T1, Inbound, 500 * SEC, 40 * SEC),
        // Paired by correlation id only.
        rec("a6", "k6", ACME_T1, Inbound, DAY + 100 * SEC, 20 * SEC),
        // Two records and two reports on one correlation id: paired in start order.
        rec("a7", "k78", ACME_T2, Outbound, DAY + 200 * SEC, 10 * SEC),
        rec("a8", "k78", ACME_T2, Outbound, DAY + 250 * SEC, 20 * SEC),
        // a10 is paired by call id, so its correlation id's report is no candidate for a11.
        rec("a10", "k10", ACME_T1, Inbound, DAY + 300 * SEC, 50 * SEC),
        rec("a11", "k10", ACME_T1, Inbound, DAY + 310 * SEC, 5 * SEC),
        // In the period; its report starts after the period ends and still counts.
        rec("a12", "", ACME_T1, Inbound, 2 * DAY - 10 * SEC, 30 * SEC),
        // Correlation ranks run over all time: bx1 (before the period) takes rx1, ax2 rx2.
        rec("bx1", "kx", ACME_T2, Inbound, -200 * SEC, 7 * SEC),
        rec("ax2", "kx", ACME_T2, Inbound, DAY + 400 * SEC, 9 * SEC),
        // Outside the period: paired, unreported, and paired with a report of the period.
        rec("b1", "", ACME_T1, Inbound, -100 * SEC, 60 * SEC),
        rec("b2", "", ACME_T1, Inbound, 2 * DAY + 100 * SEC, 60 * SEC),
        rec("b3", "", ACME_T1, Inbound, -50 * SEC, 60 * SEC),
        // Bravo's: shares acme's correlation id k6 (and no report of bravo's pairs with it).
        rec("z1", "k6", BRAVO_T1, Inbound, 150 * SEC, 33 * SEC),
    ];
    let out = store
        .ingest_call_records(records)
        .await
        .expect("ingest records");
    let owners: Vec<&str> = out
        .iter()
        .map(|o| match o {
            IngestOutcome::Created(c) => c.as_str(),
            other => panic!("ingest: {other:?}"),
        })
        .collect();
    assert_eq!(owners.iter().filter(|c| **c == "acme").count(), 16);
    assert_eq!(owners.last(), Some(&"bravo"));

    let created = report(
        store,
        "acme",
        vec![
            rep("r1", "a1", "", 100 * SEC, 60 * SEC),
            rep("r2", "a2", "", 200 * SEC, 61 * SEC),
            rep("r3", "a3", "", 300 * SEC, 60 * SEC),
            rep("r5a", "a5", "", 500 * SEC, 40 * SEC),
            rep("r6", "", "k6", DAY + 101 * SEC, 20 * SEC),
            // Reported before r7 although it starts later: ranks follow start times.
            rep("r8", "", "k78", DAY + 260 * SEC, 20 * SEC),
        ],
    )
    .await;
    assert!(created.iter().all(|o| *o == DurationOutcome::Created));
    // One commit each from here on, so that update times and ids follow this order.
    let singles = [
        rep("r7", "", "k78", DAY + 210 * SEC, 10 * SEC),
        rep("r5b", "a5", "", 500 * SEC, 45 * SEC),
        rep("r10", "a10", "k10", DAY + 300 * SEC, 50 * SEC),
        rep("r12", "a12", "", 2 * DAY + SEC, 30 * SEC),
        rep("rx1", "", "kx", -190 * SEC, 7 * SEC),
        rep("rx2", "", "kx", DAY + 410 * SEC, 9 * SEC),
        rep("rb1", "b1", "", -100 * SEC, 60 * SEC),
        rep("rb3", "b3", "", 50 * SEC, 99 * SEC),
        // Reports of calls the platform does not have (three at one start time).
        rep("rg", "ghost", "", 600 * SEC, 15 * SEC),
        rep("ro", "", "k-orphan", 600 * SEC, 25 * SEC),
        rep("ro2", "", "k-orphan2", 600 * SEC, 35 * SEC),
        rep("rlate", "", "k-late", 2 * DAY + 200 * SEC, 11 * SEC),
    ];
    for r in singles {
        assert_eq!(
            report(store, "acme", vec![r]).await,
            [DurationOutcome::Created]
        );
    }
    // r3 corrected to just beyond the tolerance.
    assert_eq!(
        report(
            store,
            "acme",
            vec![rep("r3", "a3", "", 300 * SEC, 61 * SEC + 1)]
        )
        .await,
        [DurationOutcome::Corrected]
    );
    // Bravo's reports: one on acme's correlation id k78, one naming acme's call a4.
    let bravo = report(
        store,
        "bravo",
        vec![
            rep("q1", "", "k78", DAY + 220 * SEC, 10 * SEC),
            rep("q2", "a4", "", 500 * SEC, 30 * SEC),
        ],
    )
    .await;
    assert!(bravo.iter().all(|o| *o == DurationOutcome::Created));
}

fn period(carrier_id: &str, start: Micros, end: Micros) -> ReconciliationPeriod {
    ReconciliationPeriod {
        carrier_id: carrier_id.into(),
        start,
        end,
        tolerance_us: TOL,
    }
}

fn platform_side(
    kind: DiscrepancyKind,
    call_id: &str,
    correlation_id: &str,
    record_id: &str,
    at: Micros,
    (caller, callee): (&str, &str),
    (pdur, ddur): (Micros, Option<Micros>),
) -> Discrepancy {
    Discrepancy {
        kind,
        call_id: call_id.into(),
        correlation_id: correlation_id.into(),
        record_id: record_id.into(),
        start_time: T0 + at,
        caller_number: caller.into(),
        callee_number: callee.into(),
        platform_duration_us: Some(pdur),
        carrier_duration_us: ddur,
    }
}

fn missing_on_platform(
    record_id: &str,
    call_id: &str,
    correlation_id: &str,
    at: Micros,
    dur: Micros,
) -> Discrepancy {
    Discrepancy {
        kind: DiscrepancyKind::MissingOnPlatform,
        call_id: call_id.into(),
        correlation_id: correlation_id.into(),
        record_id: record_id.into(),
        start_time: T0 + at,
        caller_number: REPORT_CALLER.into(),
        callee_number: REPORT_CALLEE.into(),
        platform_duration_us: None,
        carrier_duration_us: Some(dur),
    }
}

/// Every page of a listing with `limit` items a page, checking that each page resumes after
/// the previous one's last cursor and that `more` is set on all pages but the last.
async fn all_pages(
    store: &dyn Store,
    p: &ReconciliationPeriod,
    kind: Option<DiscrepancyKind>,
    limit: usize,
) -> Vec<Vec<Discrepancy>> {
    let mut pages = Vec::new();
    let mut after: Option<DiscrepancyCursor> = None;
    loop {
        let (rows, more) = store
            .list_discrepancies(p.clone(), kind, after, limit)
            .await
            .expect("discrepancies");
        assert!(rows.len() <= limit);
        for (d, cursor) in &rows {
            assert_eq!(cursor.0, d.start_time);
            assert_eq!(cursor.1, d.kind.code());
        }
        after = rows.last().map(|(_, c)| *c);
        pages.push(rows.into_iter().map(|(d, _)| d).collect::<Vec<_>>());
        assert!(pages.len() < 100, "paging does not end");
        if !more {
            break;
        }
    }
    pages
}

fn usage_row(
    day: &str,
    number: &str,
    direction: Option<CallDirection>,
    calls: i64,
    duration_us: Micros,
    operator_count: i64,
) -> UsageRow {
    UsageRow {
        day: day.into(),
        number: number.into(),
        direction,
        calls,
        duration_us,
        operator_count,
    }
}

/// Summary, discrepancies (pages, kinds, cursors) and usage on the data set of [`build`].
async fn reconciliation_and_usage(store: Arc<dyn Store>) {
    use DiscrepancyKind::{Mismatched, MissingOnCarrier, MissingOnPlatform};
    let store = store.as_ref();
    build(store).await;
    let whole = period("acme", T0, T0 + 2 * DAY);

    // Platform: a1..a8, a10..a12, ax2 (12 records, 394 s). Pairs: a1, a2, a6, a7, a8, a10,
    // a12, ax2 within the tolerance; a3 (61 s + 1 µs for 60 s) and a5 (45 s, r5b, for 40 s)
    // beyond it; a4 and a11 unreported. Reports of the period nobody pairs: r5a, rg, ro, ro2.
    let summary = store
        .reconciliation_summary(whole.clone())
        .await
        .expect("summary");
    let paired_us = (60 + 61 + 45 + 20 + 10 + 20 + 50 + 30 + 9) * SEC + 61 * SEC + 1;
    assert_eq!(
        summary,
        ReconciliationSummary {
            platform_count: 12,
            platform_duration_us: 394 * SEC,
            carrier_count: 14,
            carrier_duration_us: paired_us + (40 + 15 + 25 + 35) * SEC,
            matched: 8,
            mismatched: 2,
            missing_on_carrier: 2,
            missing_on_platform: 4,
        }
    );

    // The start is inclusive, the end exclusive: a4 and a5 (and r5a, r5b) at +500 s are in,
    // the reports at +600 s are out.
    let narrow = store
        .reconciliation_summary(period("acme", T0 + 500 * SEC, T0 + 600 * SEC))
        .await
        .expect("narrow summary");
    assert_eq!(
        narrow,
        ReconciliationSummary {
            platform_count: 2,
            platform_duration_us: 70 * SEC,
            carrier_count: 2,
            carrier_duration_us: 85 * SEC,
            matched: 0,
            mismatched: 1,
            missing_on_carrier: 1,
            missing_on_platform: 1,
        }
    );

    // Bravo sees only its own: z1 unreported, q1 and q2 pair with nothing of bravo's.
    let bravo = store
        .reconciliation_summary(period("bravo", T0, T0 + 2 * DAY))
        .await
        .expect("bravo summary");
    assert_eq!(
        bravo,
        ReconciliationSummary {
            platform_count: 1,
            platform_duration_us: 33 * SEC,
            carrier_count: 2,
            carrier_duration_us: 40 * SEC,
            matched: 0,
            mismatched: 0,
            missing_on_carrier: 1,
            missing_on_platform: 2,
        }
    );

    // Discrepancies by (start time, kind, row): at +500 s a mismatch, then a missing record,
    // then a missing report; three missing reports at +600 s in arrival order.
    let expected = vec![
        platform_side(
            Mismatched,
            "a3",
            "",
            "r3",
            300 * SEC,
            (FAR, ACME_T1),
            (60 * SEC, Some(61 * SEC + 1)),
        ),
        platform_side(
            Mismatched,
            "a5",
            "",
            "r5b",
            500 * SEC,
            (FAR, ACME_T1),
            (40 * SEC, Some(45 * SEC)),
        ),
        platform_side(
            MissingOnCarrier,
            "a4",
            "",
            "",
            500 * SEC,
            (FAR, ACME_T2),
            (30 * SEC, None),
        ),
        missing_on_platform("r5a", "a5", "", 500 * SEC, 40 * SEC),
        missing_on_platform("rg", "ghost", "", 600 * SEC, 15 * SEC),
        missing_on_platform("ro", "", "k-orphan", 600 * SEC, 25 * SEC),
        missing_on_platform("ro2", "", "k-orphan2", 600 * SEC, 35 * SEC),
        platform_side(
            MissingOnCarrier,
            "a11",
            "k10",
            "",
            DAY + 310 * SEC,
            (FAR, ACME_T1),
            (5 * SEC, None),
        ),
    ];
    let (all, more) = store
        .list_discrepancies(whole.clone(), None, None, 100)
        .await
        .expect("discrepancies");
    assert!(!more);
    assert_eq!(
        all.into_iter().map(|(d, _)| d).collect::<Vec<_>>(),
        expected
    );
    // Pages of two: each boundary is a different tie (kind at +500 s, row id at +600 s).
    let pages = all_pages(store, &whole, None, 2).await;
    assert_eq!(
        pages,
        expected.chunks(2).map(<[_]>::to_vec).collect::<Vec<_>>()
    );
    for (kind, limit) in [
        (MissingOnPlatform, 2),
        (Mismatched, 2),
        (MissingOnCarrier, 1),
    ] {
        let of_kind: Vec<Discrepancy> = expected
            .iter()
            .filter(|d| d.kind == kind)
            .cloned()
            .collect();
        let pages = all_pages(store, &whole, Some(kind), limit).await;
        assert_eq!(pages.concat(), of_kind, "{kind:?}");
        assert_eq!(pages.len(), of_kind.len().div_ceil(limit), "{kind:?}");
    }
    // A page resumes strictly after its cursor, whatever the cursor's row.
    let (tail, more) = store
        .list_discrepancies(
            whole.clone(),
            None,
            Some((T0 + 500 * SEC, 2, i64::MAX)),
            100,
        )
        .await
        .expect("discrepancies after a cursor");
    assert!(!more);
    let tail: Vec<Discrepancy> = tail.into_iter().map(|(d, _)| d).collect();
    assert_eq!(tail, expected[3..]);

    // Usage: each call's duration is its paired report's (even beyond the tolerance), else
    // the platform's; a tenant's calls count whatever their carrier.
    let usage = |tenant: &'static str, grouping| async move {
        store
            .tenant_usage(tenant, (T0, T0 + 2 * DAY), grouping)
            .await
            .expect("usage")
    };
    // T1, day 1: a1 60, a2 61, a3 61+, a5 45 (all reported), z1 33 (bravo, unreported).
    // Day 2: a6 20, a10 50, a12 30 (reported), a11 5.
    assert_eq!(
        usage(T1, UsageGrouping::Day).await,
        [
            usage_row("2024-03-01", "", None, 5, 260 * SEC + 1, 4),
            usage_row("2024-03-02", "", None, 4, 105 * SEC, 3),
        ]
    );
    assert_eq!(
        usage(T1, UsageGrouping::NumberAndDirection).await,
        [
            usage_row(
                "",
                ACME_T1,
                Some(CallDirection::Inbound),
                7,
                271 * SEC + 1,
                6
            ),
            usage_row("", ACME_T1, Some(CallDirection::Outbound), 1, 61 * SEC, 1),
            usage_row("", BRAVO_T1, Some(CallDirection::Inbound), 1, 33 * SEC, 0),
        ]
    );
    // T2: a4 30 (unreported) on day 1; a7 10, a8 20, ax2 9 on day 2 (bx1 is before).
    assert_eq!(
        usage(T2, UsageGrouping::Day).await,
        [
            usage_row("2024-03-01", "", None, 1, 30 * SEC, 0),
            usage_row("2024-03-02", "", None, 3, 39 * SEC, 3),
        ]
    );
    assert_eq!(
        usage(T2, UsageGrouping::NumberAndDirection).await,
        [
            usage_row("", ACME_T2, Some(CallDirection::Inbound), 2, 39 * SEC, 1),
            usage_row("", ACME_T2, Some(CallDirection::Outbound), 2, 30 * SEC, 2),
        ]
    );
}

/// Nothing in the period: zeros, no discrepancies, no usage rows.
async fn empty_period_is_all_zeros(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    let p = period("acme", T0, T0 + DAY);
    let summary = store
        .reconciliation_summary(p.clone())
        .await
        .expect("summary");
    assert_eq!(summary, ReconciliationSummary::default());
    let (rows, more) = store
        .list_discrepancies(p, None, None, 10)
        .await
        .expect("discrepancies");
    assert!(rows.is_empty() && !more);
    for grouping in [UsageGrouping::Day, UsageGrouping::NumberAndDirection] {
        let rows = store
            .tenant_usage(T1, (T0, T0 + DAY), grouping)
            .await
            .expect("usage");
        assert!(rows.is_empty());
    }
}

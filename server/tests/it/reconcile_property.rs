//! Property test of reconciliation: for random sets of platform records and carrier reports,
//! the summary's buckets add up and agree with a small in-test model of the matching rules
//! (call id first, latest report wins; then correlation id, paired in start-time order; the
//! period by the platform's start, or the report's own when unmatched), and the discrepancy
//! listing agrees with the summary; and the pairing function that live reconciliation keeps
//! state with (`store::pairing`), run on the facts as stored, pairs exactly as the model does and
//! gives the query's summary. Each case is a carrier of its own in one SQLite store.
//! Deterministic: proptest starts from a fixed seed (`PROPTEST_RNG_SEED` picks another), and a
//! failure is shrunk to a small set of records and reports before it is printed.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ocx_server::domain::{
    CallDirection, CallRecord, CallType, Carrier, Discrepancy, DiscrepancyCursor, DiscrepancyKind,
    DurationReport, QualityVerdict, ReconciliationChange, ReconciliationEntry,
    ReconciliationPeriod, ReconciliationSummary, UsageGrouping, UsageRow, now_micros,
};
use ocx_server::store::pairing::{Item, Pairing, RecordFact, ReportFact};
use ocx_server::store::postgres::{PgOptions, PgStore};
use ocx_server::store::sqlite::SqliteStore;
use ocx_server::store::{KeyedPage, Store};
use ocx_testkit::postgres::TestPostgres;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{RngAlgorithm, RngSeed, TestRunner, contextualize_config};

const SEC: i64 = 1_000_000;
const TOL: i64 = SEC;

/// `cases` cases from a fixed seed (unless `PROPTEST_RNG_SEED` names another, or
/// `PROPTEST_CASES` another count), writing no `proptest-regressions/` file into the repository.
fn config(cases: u32) -> ProptestConfig {
    contextualize_config(ProptestConfig {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x0C5E_ED00),
        // Much faster than the default ChaCha in a debug build; as deterministic.
        rng_algorithm: RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    })
}

/// A platform record, as far as reconciliation reads it.
#[derive(Debug, Clone)]
struct Rec {
    /// `c0`, `c1`, ... by position (prefixed by the carrier when stored).
    call_id: String,
    /// Empty, or `k0` to `k3`.
    correlation_id: String,
    /// Microseconds.
    start: i64,
    /// Microseconds.
    dur: i64,
}

/// A carrier's duration report, as far as reconciliation reads it.
#[derive(Debug, Clone)]
struct Rep {
    /// `r0`, `r1`, ... in sending order.
    record_id: String,
    /// A record's, one no record has (`nope…`), or empty.
    call_id: String,
    /// Empty, or `k0` to `k3` (never empty when the call id is).
    correlation_id: String,
    /// Microseconds.
    start: i64,
    /// Microseconds.
    dur: i64,
}

/// One case: platform records, carrier reports in the order they are sent, and the period.
#[derive(Debug, Clone)]
struct Scenario {
    /// Ingested together, first.
    records: Vec<Rec>,
    /// Sent one per commit, in order, after the records.
    reports: Vec<Rep>,
    /// Start (included) and end (excluded), microseconds.
    period: (i64, i64),
}

/// How a report is made, drawn before the records it may point at are known.
#[derive(Debug, Clone)]
struct ReportPlan {
    /// The record it is about, if there are any.
    target: Index,
    /// 0: the target's call id (none without a target); 1: a call id no record has; 2: none.
    call: u8,
    /// Its correlation id, possibly empty.
    correlation_id: String,
    /// The correlation id `k0`..`k3` used when it would otherwise carry no id at all.
    fallback: u8,
    /// 0: the target's duration; 1: exactly the tolerance more (matched); 2: one microsecond
    /// beyond (mismatched); 3: `any_dur`.
    dur: u8,
    /// Seconds, below 300.
    any_dur: i64,
    /// Whether it starts when its target does (otherwise at `any_start`).
    same_start: bool,
    /// Seconds, below 100.
    any_start: i64,
}

/// A correlation id: none a third of the time, otherwise one of four, so groups form.
fn correlation_id() -> impl Strategy<Value = String> {
    (0..3u8, 0..4u8).prop_map(|(none, k)| {
        if none == 0 {
            String::new()
        } else {
            format!("k{k}")
        }
    })
}

/// Any [`ReportPlan`], each choice as likely.
fn report_plan() -> impl Strategy<Value = ReportPlan> {
    (
        any::<Index>(),
        0..3u8,
        correlation_id(),
        0..4u8,
        0..4u8,
        0..300i64,
        any::<bool>(),
        0..100i64,
    )
        .prop_map(
            |(target, call, correlation_id, fallback, dur, any_dur, same_start, any_start)| {
                ReportPlan {
                    target,
                    call,
                    correlation_id,
                    fallback,
                    dur,
                    any_dur,
                    same_start,
                    any_start,
                }
            },
        )
}

/// Up to 13 records and 13 reports, starting within 100 s and lasting up to 300 s; reports
/// point at records by call id, by correlation id or not at all, with durations equal, at the
/// tolerance, just beyond it, or anything; and a period of 1 to 100 s.
fn scenario() -> impl Strategy<Value = Scenario> {
    (
        vec((correlation_id(), 0..100i64, 0..300i64), 0..14),
        vec(report_plan(), 0..14),
        0..100i64,
        0..100i64,
    )
        .prop_map(|(records, plans, a, b)| {
            let records: Vec<Rec> = records
                .into_iter()
                .enumerate()
                .map(|(i, (correlation_id, start, dur))| Rec {
                    call_id: format!("c{i}"),
                    correlation_id,
                    start: start * SEC,
                    dur: dur * SEC,
                })
                .collect();
            let reports = plans
                .into_iter()
                .enumerate()
                .map(|(j, plan)| report(&records, j, plan))
                .collect();
            let period = (a.min(b) * SEC, a.max(b) * SEC + SEC);
            Scenario {
                records,
                reports,
                period,
            }
        })
}

/// The `j`th report, made as `plan` says.
fn report(records: &[Rec], j: usize, plan: ReportPlan) -> Rep {
    let target = (!records.is_empty()).then(|| plan.target.get(records));
    let call_id = match (plan.call, target) {
        (0, Some(t)) => t.call_id.clone(),
        (1, _) => format!("nope{j}"),
        _ => String::new(),
    };
    let mut correlation_id = plan.correlation_id;
    if call_id.is_empty() && correlation_id.is_empty() {
        correlation_id = format!("k{}", plan.fallback);
    }
    let base = target.map_or(60 * SEC, |t| t.dur);
    let dur = match plan.dur {
        0 => base,
        1 => base + TOL,     // exactly at the tolerance: matched
        2 => base + TOL + 1, // just beyond: mismatched
        _ => plan.any_dur * SEC,
    };
    let start = match (target, plan.same_start) {
        (Some(t), true) => t.start,
        _ => plan.any_start * SEC,
    };
    Rep {
        record_id: format!("r{j}"),
        call_id,
        correlation_id,
        start,
        dur,
    }
}

fn platform_record(carrier: &str, r: &Rec) -> CallRecord {
    CallRecord {
        call_id: r.call_id.clone(),
        correlation_id: r.correlation_id.clone(),
        version: 1,
        carrier_id: carrier.into(),
        tenant_id: "00000001-0000-4000-8000-000000000001".into(),
        call_type: CallType::UserOut,
        direction: CallDirection::Outbound,
        caller_number: "+441".into(),
        callee_number: "+332".into(),
        user_sip_uri: String::new(),
        invite_time: None,
        start_time: r.start,
        end_time: r.start + r.dur,
        duration_us: r.dur,
        final_sip_code: 200,
        final_sip_phrase: String::new(),
        q850_cause: 16,
        successful: true,
        destination_context: None,
        usage_country_code: String::new(),
        trunk_fqdn: String::new(),
        media_streams: Vec::new(),
        quality: QualityVerdict::Unclassified,
        poor_due_to: Vec::new(),
        content_hash: 1,
        feed_sequence: 0,
        update_time: 0,
    }
}

/// The rules, the simple way. Reports are in insertion order, which is also their update order.
fn model(records: &[Rec], reports: &[Rep], (s, e): (i64, i64)) -> ReconciliationSummary {
    let in_period = |t: i64| t >= s && t < e;
    let pair_of_record = model_pairs(records, reports);
    let paired_reports: HashSet<usize> = pair_of_record.values().copied().collect();
    let mut m = ReconciliationSummary::default();
    for (ri, r) in records
        .iter()
        .enumerate()
        .filter(|(_, r)| in_period(r.start))
    {
        m.platform_count += 1;
        m.platform_duration_us += r.dur;
        match pair_of_record.get(&ri) {
            Some(&di) => {
                m.carrier_count += 1;
                m.carrier_duration_us += reports[di].dur;
                if (reports[di].dur - r.dur).abs() <= TOL {
                    m.matched += 1;
                } else {
                    m.mismatched += 1;
                }
            }
            None => m.missing_on_carrier += 1,
        }
    }
    for (di, d) in reports.iter().enumerate() {
        if !paired_reports.contains(&di) && in_period(d.start) {
            m.missing_on_platform += 1;
            m.carrier_count += 1;
            m.carrier_duration_us += d.dur;
        }
    }
    m
}

/// The model's pairs: record index → report index.
fn model_pairs(records: &[Rec], reports: &[Rep]) -> BTreeMap<usize, usize> {
    let record_calls: HashSet<&str> = records.iter().map(|r| r.call_id.as_str()).collect();
    let report_calls: HashSet<&str> = reports.iter().map(|d| d.call_id.as_str()).collect();
    let mut pair_of_record: BTreeMap<usize, usize> = BTreeMap::new(); // record index -> report index
    // Stage 1: by call id; the latest (last inserted) report wins.
    for (ri, r) in records.iter().enumerate() {
        if let Some(di) = reports.iter().rposition(|d| d.call_id == r.call_id) {
            pair_of_record.insert(ri, di);
        }
    }
    // Stage 2: by correlation id, in start order (then insertion order), among the rest.
    let mut groups: BTreeMap<&str, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
    for (ri, r) in records.iter().enumerate() {
        if !r.correlation_id.is_empty() && !report_calls.contains(r.call_id.as_str()) {
            groups.entry(&r.correlation_id).or_default().0.push(ri);
        }
    }
    for (di, d) in reports.iter().enumerate() {
        if !d.correlation_id.is_empty() && !record_calls.contains(d.call_id.as_str()) {
            groups.entry(&d.correlation_id).or_default().1.push(di);
        }
    }
    for (_, (mut rs, mut ds)) in groups {
        rs.sort_by_key(|&i| (records[i].start, i));
        ds.sort_by_key(|&i| (reports[i].start, i));
        for (ri, di) in rs.into_iter().zip(ds) {
            pair_of_record.insert(ri, di);
        }
    }
    pair_of_record
}

/// The carrier's records and reports as stored, as `pairing` reads them (a second connection
/// to the store's file).
fn facts(db: &Path, carrier: &str) -> (Vec<RecordFact>, Vec<ReportFact>) {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open");
    ocx_server::store::sqlite::pairing::facts(&conn, carrier).expect("facts")
}

/// The pairing of the stored facts against the model's: the same pairs (by call id and the
/// carrier's record id), and the same summary as the store's set-based query.
fn check_pairing(
    db: &Path,
    carrier: &str,
    scenario: &Scenario,
    summary: &ReconciliationSummary,
) -> Result<(), TestCaseError> {
    let (records, reports) = facts(db, carrier);
    let pairing = Pairing::of(&records, &reports);
    let call_of: BTreeMap<i64, &str> = records.iter().map(|r| (r.id, r.call_id.as_str())).collect();
    let report_of: BTreeMap<i64, &str> = reports
        .iter()
        .map(|d| (d.id, d.record_id.as_str()))
        .collect();
    let got: BTreeMap<&str, &str> = pairing
        .items
        .iter()
        .filter_map(|i| Some((call_of[&i.record?], report_of[&i.report?])))
        .collect();
    let expected: BTreeMap<&str, &str> = model_pairs(&scenario.records, &scenario.reports)
        .into_iter()
        .map(|(ri, di)| {
            (
                scenario.records[ri].call_id.as_str(),
                scenario.reports[di].record_id.as_str(),
            )
        })
        .collect();
    prop_assert_eq!(got, expected, "the pairing disagrees with the model");
    prop_assert_eq!(
        pairing.items.len(),
        records.len() + reports.len()
            - pairing
                .items
                .iter()
                .filter(|i| i.record.is_some() && i.report.is_some())
                .count(),
        "each record once, each report once"
    );
    let (s, e) = scenario.period;
    let mut from_items = ReconciliationSummary::default();
    for item in pairing
        .items
        .iter()
        .filter(|i| i.period_time >= s && i.period_time < e)
    {
        item.count_into(&mut from_items, TOL);
    }
    prop_assert_eq!(
        &from_items,
        summary,
        "the pairing's summary disagrees with the query"
    );
    Ok(())
}

/// `scenario` with its call ids prefixed by `carrier`, so that no two cases share one in the
/// store (an empty id stays empty).
fn of_carrier(carrier: &str, scenario: Scenario) -> Scenario {
    let prefix = |id: String| {
        if id.is_empty() {
            id
        } else {
            format!("{carrier}-{id}")
        }
    };
    Scenario {
        records: scenario
            .records
            .into_iter()
            .map(|r| Rec {
                call_id: prefix(r.call_id),
                ..r
            })
            .collect(),
        reports: scenario
            .reports
            .into_iter()
            .map(|d| Rep {
                call_id: prefix(d.call_id),
                ..d
            })
            .collect(),
        period: scenario.period,
    }
}

/// Stores `scenario` as `carrier` (a new one) and checks the summary and the discrepancy
/// listing.
async fn check(
    store: &dyn Store,
    db: &Path,
    carrier: &str,
    scenario: &Scenario,
) -> Result<(), TestCaseError> {
    let Scenario {
        records,
        reports,
        period,
    } = scenario;
    store
        .create_carrier(Carrier {
            carrier_id: carrier.into(),
            display_name: "p".into(),
            create_time: now_micros(),
        })
        .await
        .expect("carrier");
    let recs = records
        .iter()
        .map(|r| platform_record(carrier, r))
        .collect::<Vec<_>>();
    if !recs.is_empty() {
        store.ingest_call_records(recs).await.expect("ingest");
    }
    // One report per commit, so update times follow insertion order as the model assumes.
    for d in reports {
        let report = DurationReport {
            record_id: d.record_id.clone(),
            call_id: d.call_id.clone(),
            correlation_id: d.correlation_id.clone(),
            caller_number: "+441".into(),
            callee_number: "+332".into(),
            start_time: d.start,
            duration_us: d.dur,
        };
        store
            .report_call_durations(carrier, vec![report])
            .await
            .expect("report");
        std::thread::yield_now();
    }
    let p = ReconciliationPeriod {
        carrier_id: carrier.into(),
        start: period.0,
        end: period.1,
        tolerance_us: TOL,
    };
    let got = store
        .reconciliation_summary(p.clone())
        .await
        .expect("summary");
    let expected = model(records, reports, *period);
    prop_assert_eq!(&got, &expected, "the summary disagrees with the model");
    check_pairing(db, carrier, scenario, &got)?;
    prop_assert_eq!(
        got.matched + got.mismatched + got.missing_on_carrier,
        got.platform_count,
        "platform buckets"
    );
    prop_assert_eq!(
        got.matched + got.mismatched + got.missing_on_platform,
        got.carrier_count,
        "carrier buckets"
    );
    // The discrepancy listing agrees with the summary.
    let (rows, more) = store
        .list_discrepancies(p, None, None, 1000)
        .await
        .expect("discrepancies");
    prop_assert!(!more);
    let count = |k: DiscrepancyKind| rows.iter().filter(|(d, _)| d.kind == k).count() as i64;
    prop_assert_eq!(count(DiscrepancyKind::Mismatched), got.mismatched);
    prop_assert_eq!(
        count(DiscrepancyKind::MissingOnCarrier),
        got.missing_on_carrier
    );
    prop_assert_eq!(
        count(DiscrepancyKind::MissingOnPlatform),
        got.missing_on_platform
    );
    Ok(())
}

/// The runner is driven by hand rather than by `proptest!`: the store is opened once and each
/// case (each shrinking step too) is a new carrier in it, as a store per case made the test
/// take two and a half times as long. Proptest bodies are synchronous, so each case runs on
/// the test's tokio runtime with `block_on`.
#[test]
fn summary_buckets_add_up_and_agree_with_the_model() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("p.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).expect("store"));
    let cases = AtomicU64::new(0);
    let mut runner = TestRunner::new(config(150));
    let result = runner.run(&scenario(), |scenario| {
        let carrier = format!("p{:03}", cases.fetch_add(1, Ordering::Relaxed));
        let scenario = of_carrier(&carrier, scenario);
        runtime.block_on(check(store.as_ref(), &db, &carrier, &scenario))
    });
    if let Err(e) = result {
        panic!("{e}\n{runner}");
    }
}

/// One write of the interleaved-operations property.
#[derive(Debug, Clone)]
enum Op {
    /// Ingest record `c{n}` at `version`: new, or a revision when it exists (another
    /// correlation id, start, duration, tenant or line), or stale when the version is not
    /// higher. `line` picks the direction (even: inbound) and the tenant's number.
    Record {
        n: u8,
        version: i64,
        correlation_id: String,
        start: i64,
        dur: i64,
        tenant: u8,
        line: u8,
    },
    /// Report `r{n}`: new, a correction (another call id, correlation id, start or duration)
    /// or a resend of the same content.
    Report {
        n: u8,
        call: Option<u8>,
        correlation_id: String,
        start: i64,
        dur: i64,
    },
    /// Purge what started before `day` (records and reports alike).
    Purge { day: i64 },
    /// Erase tenant `t{tenant}`.
    Erase { tenant: u8 },
    /// Change only the correlation id of record `c{n}` (a revision) or, with `report`, only
    /// the correlation id of report `r{n}` (a correction), where it exists: the pairing may
    /// stay as it was, but the entry's ids change.
    Rekey {
        n: u8,
        report: bool,
        correlation_id: String,
    },
}

/// Any [`Op`], mostly records and reports.
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..8u8, 1..4i64, correlation_id(), 0..10i64, 0..300i64, 0..2u8, 0..4u8).prop_map(
            |(n, version, correlation_id, start, dur, tenant, line)| Op::Record {
                n, version, correlation_id, start, dur, tenant, line
            }
        ),
        4 => (0..8u8, proptest::option::of(0..10u8), correlation_id(), 0..10i64, 0..300i64)
            .prop_map(|(n, call, correlation_id, start, dur)| Op::Report {
                n, call, correlation_id, start, dur
            }),
        1 => (0..11i64).prop_map(|day| Op::Purge { day }),
        1 => (0..2u8).prop_map(|tenant| Op::Erase { tenant }),
        2 => (0..8u8, any::<bool>(), correlation_id()).prop_map(|(n, report, correlation_id)| {
            Op::Rekey { n, report, correlation_id }
        }),
    ]
}

/// Runs `ops` as carrier `carrier` (a new one), its times from `base` on, and after each one
/// holds the stored pairing state to a pairing of every stored fact.
/// A question asked after a write: a period (from the case's base, in tenths of a day, plus
/// up to 30 minutes, either way round: so periods start and end at whole days, hours and
/// neither), a tolerance in seconds, a page size, and the size of the follower's reads.
type Question = ((i64, i64), (i64, i64), i64, usize, usize);

/// Any [`Question`].
fn question() -> impl Strategy<Value = Question> {
    let instant = (0..11i64, prop_oneof![Just(0i64), 0..1800i64]);
    (instant.clone(), instant, 0..300i64, 1..6usize, 1..4usize)
}

/// A follower's view of the reconciliation feed: entry and key → the entry as last sent.
type View = BTreeMap<(ReconciliationEntry, String), ReconciliationChange>;

/// Reads the feed after `*last` in reads of `size`, applying each change to `view`; checks
/// that positions only grow. A follower behind the carrier's floor (retention forgot removals
/// after its position) replays from the start, as the server tells it to.
async fn follow(
    store: &dyn Store,
    carrier: &str,
    last: &mut i64,
    size: usize,
    view: &mut View,
) -> Result<(), TestCaseError> {
    let (head, floor) = store.reconciliation_head(carrier).await.expect("head");
    prop_assert!(*last <= head, "the follower is past the head");
    if *last < floor {
        (*last, *view) = (0, View::new());
    }
    loop {
        let changes = store
            .reconciliation_changes_after(carrier, *last, size)
            .await
            .expect("changes");
        if changes.is_empty() {
            return Ok(());
        }
        for change in changes {
            prop_assert!(change.sequence > *last, "positions go back: {:?}", change);
            *last = change.sequence;
            let key = match change.entry {
                ReconciliationEntry::Record => change.call_id.clone(),
                ReconciliationEntry::Report => change.record_id.clone(),
            };
            if change.removed {
                view.remove(&(change.entry, key));
            } else {
                view.insert((change.entry, key), change);
            }
        }
    }
}

/// What a follower's view must be: every item of a pairing of every fact, as its entry.
fn expected_view(records: &[RecordFact], reports: &[ReportFact]) -> View {
    let record = |id: i64| records.iter().find(|r| r.id == id).expect("record");
    let report = |id: i64| reports.iter().find(|d| d.id == id).expect("report");
    Pairing::of(records, reports)
        .items
        .into_iter()
        .map(|item| {
            let d = item.report.map(report);
            let (entry, key, call_id, correlation_id) = match item.record.map(record) {
                Some(r) => (
                    ReconciliationEntry::Record,
                    r.call_id.clone(),
                    r.call_id.clone(),
                    r.correlation_id.clone(),
                ),
                None => {
                    let d = d.expect("a lone report");
                    (
                        ReconciliationEntry::Report,
                        d.record_id.clone(),
                        d.call_id.clone(),
                        d.correlation_id.clone(),
                    )
                }
            };
            let change = ReconciliationChange {
                sequence: 0,
                entry,
                removed: false,
                call_id,
                correlation_id,
                record_id: d.map(|d| d.record_id.clone()).unwrap_or_default(),
                start_time: item.period_time,
                platform_duration_us: item.platform_us,
                carrier_duration_us: item.carrier_us,
            };
            ((entry, key), change)
        })
        .collect()
}

/// A view without its positions, to compare with [`expected_view`].
fn unpositioned(view: &View) -> View {
    view.iter()
        .map(|(k, c)| {
            (
                k.clone(),
                ReconciliationChange {
                    sequence: 0,
                    ..c.clone()
                },
            )
        })
        .collect()
}

async fn follow_ops(
    backend: Backend<'_>,
    carrier: &str,
    base: i64,
    ops: &[(Op, Question)],
) -> Result<(), TestCaseError> {
    const DAY: i64 = 86_400 * SEC;
    let store = backend.store();
    store
        .create_carrier(Carrier {
            carrier_id: carrier.into(),
            display_name: "p".into(),
            create_time: now_micros(),
        })
        .await
        .expect("carrier");
    let tenant = |t: u8| format!("{:08x}-0000-4000-8000-{:012x}", base / DAY, t);
    let (mut last, mut view) = (0, View::new());
    // The last content sent of each report, by n (a purge or erasure may have deleted it: sent
    // again, it is new).
    let mut sent: BTreeMap<u8, DurationReport> = BTreeMap::new();
    for (step, (op, question)) in ops.iter().enumerate() {
        match op {
            Op::Record {
                n,
                version,
                correlation_id,
                start,
                dur,
                tenant: t,
                line,
            } => {
                let rec = Rec {
                    call_id: format!("{carrier}-c{n}"),
                    correlation_id: correlation_id.clone(),
                    start: base + start * DAY / 10,
                    dur: dur * SEC,
                };
                let mut record = platform_record(carrier, &rec);
                record.version = *version;
                record.tenant_id = tenant(*t);
                record.content_hash = *version * 1000 + i64::from(*t) * 10 + i64::from(*line);
                record.direction = if line % 2 == 0 {
                    CallDirection::Inbound
                } else {
                    CallDirection::Outbound
                };
                record.caller_number = format!("+4420{line}");
                record.callee_number = format!("+3310{}", line / 2);
                store
                    .ingest_call_records(vec![record])
                    .await
                    .expect("ingest");
            }
            Op::Report {
                n,
                call,
                correlation_id,
                start,
                dur,
            } => {
                let call_id = match call {
                    Some(c) => format!("{carrier}-c{c}"),
                    None => String::new(),
                };
                let mut correlation_id = correlation_id.clone();
                if call_id.is_empty() && correlation_id.is_empty() {
                    correlation_id = "k0".into();
                }
                let report = DurationReport {
                    record_id: format!("r{n}"),
                    call_id,
                    correlation_id,
                    caller_number: "+441".into(),
                    callee_number: "+332".into(),
                    start_time: base + start * DAY / 10,
                    duration_us: dur * SEC,
                };
                sent.insert(*n, report.clone());
                store
                    .report_call_durations(carrier, vec![report])
                    .await
                    .expect("report");
            }
            Op::Rekey {
                n,
                report: false,
                correlation_id,
            } => {
                let call_id = format!("{carrier}-c{n}");
                if let Some(mut record) =
                    store.get_call_record(carrier, &call_id).await.expect("get")
                {
                    record.version += 1;
                    record.content_hash += 1;
                    record.correlation_id = correlation_id.clone();
                    store
                        .ingest_call_records(vec![record])
                        .await
                        .expect("ingest");
                }
            }
            Op::Rekey {
                n,
                report: true,
                correlation_id,
            } => {
                if let Some(report) = sent.get_mut(n)
                    && !(report.call_id.is_empty() && correlation_id.is_empty())
                {
                    report.correlation_id = correlation_id.clone();
                    store
                        .report_call_durations(carrier, vec![report.clone()])
                        .await
                        .expect("report");
                }
            }
            Op::Purge { day } => {
                // One day of retention, measured from `now` one day after the cutoff.
                store
                    .set_retention_policy(ocx_server::domain::RetentionPolicy {
                        call_record_days: 1,
                        call_duration_days: 1,
                        released_number_days: 1,
                        audit_event_days: 3650,
                        update_time: None,
                    })
                    .await
                    .expect("policy");
                store
                    .purge_expired(base + day * DAY / 10 + DAY)
                    .await
                    .expect("purge");
            }
            Op::Erase { tenant: t } => {
                store.erase_tenant(&tenant(*t)).await.expect("erase");
            }
        }
        let (records, reports) = backend.facts(carrier).await;
        let expected = Pairing::of(&records, &reports).items;
        let stored = backend.items(carrier).await;
        prop_assert_eq!(
            stored,
            expected,
            "after step {} ({:?}) the stored pairing differs from a pairing of every fact",
            step,
            op
        );
        // A follower of the feed, reading on from where it was, sees every entry as it now
        // is; so does one that replays the feed from the start.
        let (a, b, tol, page, reads) = *question;
        follow(store, carrier, &mut last, reads, &mut view).await?;
        let expected = expected_view(&records, &reports);
        prop_assert_eq!(
            &unpositioned(&view),
            &expected,
            "after step {} ({:?}) the follower's view differs from the pairing",
            step,
            op
        );
        let mut replayed = View::new();
        follow(store, carrier, &mut 0, 1000, &mut replayed).await?;
        prop_assert_eq!(&replayed, &view, "after step {} a replay differs", step);
        // The answers from the state equal the set-based reference, for this step's question.
        let instant = |(tenths, seconds): (i64, i64)| base + tenths * DAY / 10 + seconds * SEC;
        let (s, e) = (instant(a).min(instant(b)), instant(a).max(instant(b)) + 1);
        for t in 0..2 {
            for grouping in [UsageGrouping::Day, UsageGrouping::NumberAndDirection] {
                let live = store
                    .tenant_usage(&tenant(t), (s, e), grouping)
                    .await
                    .expect("usage");
                let reference = backend.reference_usage(&tenant(t), (s, e), grouping).await;
                prop_assert_eq!(
                    &live,
                    &reference,
                    "after step {} the usage of tenant {} by {:?} differs",
                    step,
                    t,
                    grouping
                );
            }
        }
        let p = ReconciliationPeriod {
            carrier_id: carrier.into(),
            start: s,
            end: e,
            tolerance_us: tol * SEC,
        };
        let live = store
            .reconciliation_summary(p.clone())
            .await
            .expect("summary");
        let reference = backend.reference_summary(p.clone()).await;
        prop_assert_eq!(&live, &reference, "after step {} the summary differs", step);
        let (mut after_live, mut after_ref) = (None, None);
        loop {
            let (live, more_live) = store
                .list_discrepancies(p.clone(), None, after_live, page)
                .await
                .expect("page");
            let (reference, more_ref) = backend
                .reference_discrepancies(p.clone(), after_ref, page)
                .await;
            prop_assert_eq!(&live, &reference, "after step {} a page differs", step);
            prop_assert_eq!(more_live, more_ref);
            if !more_live {
                break;
            }
            after_live = live.last().map(|(_, k)| *k);
            after_ref = reference.last().map(|(_, k)| *k);
        }
    }
    Ok(())
}

/// The pairing state kept at write time equals, after every write of a random sequence of
/// ingests, revisions, reports, corrections, resends, purges and erasures, the pairing of
/// every stored fact (no write re-pairs too little); and the summary and every discrepancy
/// page answered from it, for a random period, tolerance and page size, equal the set-based
/// reference.
#[test]
fn the_pairing_state_follows_every_write() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("p.db")).expect("store");
    run_ops(&runtime, Backend::Sqlite(&store), 100);
}

/// The same property on PostgreSQL (in a fresh schema of the database `OCX_TEST_POSTGRES`
/// names; without it the test says so and passes, except under `CI=true`).
#[test]
fn the_pairing_state_follows_every_write_on_postgres() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let Some(server) = TestPostgres::from_env() else {
        return;
    };
    let store = runtime.block_on(async {
        let url = server.fresh_schema("pairing_property").await;
        PgStore::connect(&url, PgOptions::default())
            .await
            .expect("connect")
    });
    run_ops(&runtime, Backend::Postgres(&store), 40);
}

/// Runs `cases` random sequences of operations, each as a new carrier of `backend`.
fn run_ops(runtime: &tokio::runtime::Runtime, backend: Backend<'_>, cases: u32) {
    let counter = AtomicU64::new(0);
    let mut runner = TestRunner::new(config(cases));
    let result = runner.run(&vec((op(), question()), 1..40), |ops| {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let carrier = format!("w{n:03}");
        // Each case later than the last, so a purge reaches only earlier cases' data.
        let base = 1_700_000_000 * SEC + i64::try_from(n).expect("small") * 30 * 86_400 * SEC;
        runtime.block_on(follow_ops(backend, &carrier, base, &ops))
    });
    if let Err(e) = result {
        panic!("{e}\n{runner}");
    }
}

/// A store with its reference queries and its pairing state laid open, on either backend.
#[derive(Clone, Copy)]
enum Backend<'a> {
    Sqlite(&'a SqliteStore),
    Postgres(&'a PgStore),
}

impl<'a> Backend<'a> {
    /// The store.
    fn store(self) -> &'a dyn Store {
        match self {
            Backend::Sqlite(s) => s,
            Backend::Postgres(s) => s,
        }
    }

    /// The carrier's records and reports as pairing reads them.
    async fn facts(self, carrier: &str) -> (Vec<RecordFact>, Vec<ReportFact>) {
        match self {
            Backend::Sqlite(s) => s.pairing_facts(carrier).await,
            Backend::Postgres(s) => s.pairing_facts(carrier).await,
        }
        .expect("facts")
    }

    /// The carrier's pairing state.
    async fn items(self, carrier: &str) -> Vec<Item> {
        match self {
            Backend::Sqlite(s) => s.pairing_items(carrier).await,
            Backend::Postgres(s) => s.pairing_items(carrier).await,
        }
        .expect("items")
    }

    /// The summary by the set-based rules.
    async fn reference_summary(self, p: ReconciliationPeriod) -> ReconciliationSummary {
        match self {
            Backend::Sqlite(s) => s.reference_summary(p).await,
            Backend::Postgres(s) => s.reference_summary(p).await,
        }
        .expect("reference summary")
    }

    /// A discrepancy page by the set-based rules.
    async fn reference_discrepancies(
        self,
        p: ReconciliationPeriod,
        after: Option<DiscrepancyCursor>,
        page: usize,
    ) -> KeyedPage<Discrepancy, DiscrepancyCursor> {
        match self {
            Backend::Sqlite(s) => s.reference_discrepancies(p, None, after, page).await,
            Backend::Postgres(s) => s.reference_discrepancies(p, None, after, page).await,
        }
        .expect("reference page")
    }

    /// Usage by the set-based rules.
    async fn reference_usage(
        self,
        tenant: &str,
        window: (i64, i64),
        grouping: UsageGrouping,
    ) -> Vec<UsageRow> {
        match self {
            Backend::Sqlite(s) => s.reference_usage(tenant, window, grouping).await,
            Backend::Postgres(s) => s.reference_usage(tenant, window, grouping).await,
        }
        .expect("reference usage")
    }
}

/// Upgrade in place on PostgreSQL: a database at the schema before the pairing state (version
/// 3: the state's tables and columns dropped from one written by this code) builds the state
/// when it migrates, and the state is a pairing of every fact; summary, every discrepancy page
/// and usage equal the reference, and the feed from 0 holds every entry. (SQLite's upgrade is
/// tested on a database the previous release wrote: `tests/tests/it/migration.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_builds_the_pairing_state_when_it_migrates() {
    const DAY: i64 = 86_400 * SEC;
    let Some(server) = TestPostgres::from_env() else {
        return;
    };
    let url = server.fresh_schema("pairing_build").await;
    let store = PgStore::connect(&url, PgOptions::default())
        .await
        .expect("connect");
    let carrier = "build-tel";
    store
        .create_carrier(Carrier {
            carrier_id: carrier.into(),
            display_name: "b".into(),
            create_time: now_micros(),
        })
        .await
        .expect("carrier");
    let base = 1_700_000_000 * SEC;
    let tenants = [
        "00000001-0000-4000-8000-000000000001",
        "00000002-0000-4000-8000-000000000002",
    ];
    let records: Vec<CallRecord> = (0..120i64)
        .map(|n| {
            let rec = Rec {
                call_id: format!("b{n}"),
                correlation_id: if n % 3 == 0 {
                    String::new()
                } else {
                    format!("k{}", n % 7)
                },
                start: base + n * DAY / 24,
                dur: (60 + n % 11) * SEC,
            };
            let mut r = platform_record(carrier, &rec);
            r.tenant_id = tenants[(n % 2) as usize].into();
            r.direction = if n % 4 == 0 {
                CallDirection::Inbound
            } else {
                CallDirection::Outbound
            };
            r
        })
        .collect();
    store.ingest_call_records(records).await.expect("ingest");
    let reports: Vec<DurationReport> = (0..110i64)
        .filter(|n| n % 9 != 8)
        .map(|n| DurationReport {
            record_id: format!("r{n}"),
            call_id: if n % 2 == 0 {
                format!("b{n}")
            } else {
                String::new()
            },
            correlation_id: if n % 2 == 0 {
                String::new()
            } else {
                format!("k{}", n % 7)
            },
            caller_number: "+441".into(),
            callee_number: "+332".into(),
            start_time: base + n * DAY / 24,
            duration_us: (60 + n % 5) * SEC,
        })
        .collect();
    store
        .report_call_durations(carrier, reports)
        .await
        .expect("report");
    drop(store);
    // Back to version 3: no pairing state.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute(
            "DROP TABLE recon_items, recon_removed, recon_hours, recon_classes, usage_lines,
                        usage_sums, quality_groups, quality_cells;
             ALTER TABLE carrier_heads DROP COLUMN recon_seq, DROP COLUMN recon_floor;
             DELETE FROM ocx_schema_version WHERE version >= 4;",
        )
        .await
        .expect("back to version 3");
    let store = PgStore::connect(&url, PgOptions::default())
        .await
        .expect("migrates and builds");
    let backend = Backend::Postgres(&store);
    let (records, reports) = backend.facts(carrier).await;
    assert_eq!(
        backend.items(carrier).await,
        Pairing::of(&records, &reports).items,
        "the state built differs from a pairing of every fact"
    );
    let mut view = View::new();
    let mut last = 0;
    follow(&store, carrier, &mut last, 7, &mut view)
        .await
        .expect("follow");
    assert_eq!(unpositioned(&view), expected_view(&records, &reports));
    for (s, e, tol) in [
        (base, base + 10 * DAY, SEC),
        (base + DAY / 3, base + 3 * DAY + 7, 3 * SEC),
    ] {
        let p = ReconciliationPeriod {
            carrier_id: carrier.into(),
            start: s,
            end: e,
            tolerance_us: tol,
        };
        assert_eq!(
            store
                .reconciliation_summary(p.clone())
                .await
                .expect("summary"),
            backend.reference_summary(p.clone()).await
        );
        let (mut after, mut after_ref) = (None, None);
        loop {
            let (page, more) = store
                .list_discrepancies(p.clone(), None, after, 13)
                .await
                .expect("page");
            let (reference, _) = backend
                .reference_discrepancies(p.clone(), after_ref, 13)
                .await;
            assert_eq!(page, reference);
            if !more {
                break;
            }
            after = page.last().map(|(_, k)| *k);
            after_ref = reference.last().map(|(_, k)| *k);
        }
        for tenant in tenants {
            for grouping in [UsageGrouping::Day, UsageGrouping::NumberAndDirection] {
                assert_eq!(
                    store
                        .tenant_usage(tenant, (s, e), grouping)
                        .await
                        .expect("usage"),
                    backend.reference_usage(tenant, (s, e), grouping).await
                );
            }
        }
    }
}

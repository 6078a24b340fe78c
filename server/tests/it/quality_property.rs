//! Property test of the quality aggregates: after every step of a random sequence of ingests
//! (new records, revisions that move a call to another hour, group or verdict, resends, stale
//! versions, several versions of a call in one batch), retention purges and tenant erasures,
//! GetQualitySummary's answer for a random question (period on whole hours, bucket, grouping,
//! filter) equals the same question answered from aggregates recomputed from the records the
//! store holds at that moment (read back through the store). On SQLite and on PostgreSQL.
//! Deterministic: proptest starts from a fixed seed (`PROPTEST_RNG_SEED` picks another).

use std::sync::atomic::{AtomicU64, Ordering};

use ocx_server::convert_quality::quality_row;
use ocx_server::domain::{
    CallDirection, CallRecord, CallRecordFilter, CallType, Carrier, DestinationContext,
    MediaStream, QualityBucket, QualityDimension, QualityFilter, QualityQuery, RetentionPolicy,
    now_micros,
};
use ocx_server::store::Store;
use ocx_server::store::pairing::HOUR_US;
use ocx_server::store::postgres::{PgOptions, PgStore};
use ocx_server::store::quality::{Changes, recomputed};
use ocx_server::store::sqlite::SqliteStore;
use ocx_testkit::postgres::TestPostgres;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, RngSeed, TestRunner, contextualize_config};

const DAY_US: i64 = 24 * HOUR_US;
const TRUNKS: [&str; 3] = ["", "sbc1.example", "sbc2.example"];
const CODECS: [&str; 3] = ["", "SILK", "OPUS"];
const COUNTRIES: [&str; 2] = ["GB", "FR"];

/// One media stream: each metric measured or not.
#[derive(Debug, Clone)]
struct StreamPlan {
    codec: u8,
    jitter_ms: Option<i64>,
    loss: Option<f64>,
    rtt_ms: Option<i64>,
    degradation: Option<f64>,
    concealed: Option<f64>,
    mos: Option<f64>,
}

fn stream_plan() -> impl Strategy<Value = StreamPlan> {
    (
        0..3u8,
        proptest::option::of(0..80i64),
        proptest::option::of(prop_oneof![Just(0.0), 0.0..0.3f64]),
        proptest::option::of(0..900i64),
        proptest::option::of(0.0..2.0f64),
        proptest::option::of(0.0..0.2f64),
        proptest::option::of(1.0..5.0f64),
    )
        .prop_map(
            |(codec, jitter_ms, loss, rtt_ms, degradation, concealed, mos)| StreamPlan {
                codec,
                jitter_ms,
                loss,
                rtt_ms,
                degradation,
                concealed,
                mos,
            },
        )
}

/// What a record is made of (its call id and version come from the step).
#[derive(Debug, Clone)]
struct RecordPlan {
    /// Hours after the case's start, and minutes into the hour.
    hour: i64,
    minute: i64,
    trunk: u8,
    country: u8,
    context: u8,
    /// Inbound or outbound user call, or a conference dial-in.
    kind: u8,
    /// 0: answered; 1: busy (a user failure); 2: 503 (the network's); 3: cancelled, no cause.
    outcome: u8,
    secs: i64,
    /// Seconds from the INVITE to the answer; none at 0.
    pdd: i64,
    streams: Vec<StreamPlan>,
    tenant: u8,
}

fn record_plan() -> impl Strategy<Value = RecordPlan> {
    (
        (0..60i64, 0..60i64, 0..3u8, 0..2u8, 0..3u8, 0..3u8),
        (0..4u8, 0..600i64, 0..9i64, vec(stream_plan(), 0..3), 0..2u8),
    )
        .prop_map(
            |(
                (hour, minute, trunk, country, context, kind),
                (outcome, secs, pdd, streams, tenant),
            )| RecordPlan {
                hour,
                minute,
                trunk,
                country,
                context,
                kind,
                outcome,
                secs,
                pdd,
                streams,
                tenant,
            },
        )
}

/// One step of a case.
#[derive(Debug, Clone)]
enum Op {
    /// Ingest one batch: records `c{n}` at `version` (a record twice in a batch is a revision
    /// within the batch).
    Ingest(Vec<(u8, i64, RecordPlan)>),
    /// Purge the records that started before hour `hour` of the case.
    Purge { hour: i64 },
    /// Erase tenant `t{tenant}`.
    Erase { tenant: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => vec((0..10u8, 1..4i64, record_plan()), 1..4).prop_map(Op::Ingest),
        1 => (0..60i64).prop_map(|hour| Op::Purge { hour }),
        1 => (0..2u8).prop_map(|tenant| Op::Erase { tenant }),
    ]
}

/// A question: period (hours of the case, either way round), bucket, grouping (dimension
/// codes, duplicates dropped), filter choices.
type Question = (
    (i64, i64),
    u8,
    Vec<i32>,
    (Option<u8>, Option<u8>, Option<u8>),
);

fn question() -> impl Strategy<Value = Question> {
    (
        (0..61i64, 0..61i64),
        0..3u8,
        vec(1..7i32, 0..4),
        (
            proptest::option::of(0..3u8),
            proptest::option::of(0..3u8),
            proptest::option::of(0..3u8),
        ),
    )
}

/// The record of `plan` as call `call_id` of `carrier`, at `version`, from `base`.
fn record(
    carrier: &str,
    call_id: String,
    version: i64,
    plan: &RecordPlan,
    base: i64,
) -> CallRecord {
    let start = base + plan.hour * HOUR_US + plan.minute * 60_000_000;
    let (call_type, direction) = match plan.kind {
        0 => (CallType::UserIn, CallDirection::Inbound),
        1 => (CallType::UserOut, CallDirection::Outbound),
        _ => (CallType::ConferenceIn, CallDirection::Inbound),
    };
    let answered = plan.outcome == 0;
    let (sip, q850) = match plan.outcome {
        0 => (200, 16),
        1 => (486, 17),
        2 => (503, 34),
        _ => (487, 0),
    };
    let media_streams: Vec<MediaStream> = if answered {
        plan.streams
            .iter()
            .map(|s| MediaStream {
                codec: CODECS[usize::from(s.codec)].into(),
                average_jitter_us: s.jitter_ms.map(|v| v * 1000),
                average_packet_loss_rate: s.loss,
                average_round_trip_us: s.rtt_ms.map(|v| v * 1000),
                average_audio_degradation: s.degradation,
                average_ratio_of_concealed_samples: s.concealed,
                mos: s.mos,
                ..MediaStream::default()
            })
            .collect()
    } else {
        Vec::new()
    };
    let (quality, poor_due_to) = ocx_server::quality::classify(&media_streams);
    let duration_us = if answered { plan.secs * 1_000_000 } else { 0 };
    CallRecord {
        call_id,
        correlation_id: String::new(),
        version,
        carrier_id: carrier.into(),
        tenant_id: format!("{:08x}-0000-4000-8000-{:012x}", base / DAY_US, plan.tenant),
        call_type,
        direction,
        caller_number: "+442079460001".into(),
        callee_number: "+33142685300".into(),
        user_sip_uri: String::new(),
        invite_time: (plan.pdd > 0).then(|| start - plan.pdd * 1_000_000),
        start_time: start,
        end_time: start + duration_us,
        duration_us,
        final_sip_code: sip,
        final_sip_phrase: String::new(),
        q850_cause: q850,
        successful: answered,
        destination_context: DestinationContext::from_code(i32::from(plan.context)),
        usage_country_code: COUNTRIES[usize::from(plan.country)].into(),
        trunk_fqdn: TRUNKS[usize::from(plan.trunk)].into(),
        media_streams,
        quality,
        poor_due_to,
        // Distinct for distinct content: a resend of the same plan at the same version is a
        // duplicate, another plan at the same version stale.
        content_hash: {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            format!("{plan:?}").hash(&mut h);
            h.finish() as i64
        },
        feed_sequence: 0,
        update_time: 0,
    }
}

/// The question as the store takes it.
fn query(
    carrier: &str,
    base_hour: i64,
    (period, bucket, group, filter): &Question,
) -> QualityQuery {
    let (a, b) = period;
    let (start, end) = (base_hour + a.min(b), base_hour + a.max(b) + 1);
    let mut group_by = Vec::new();
    for code in group {
        let d = QualityDimension::from_code(*code).expect("a dimension");
        if !group_by.contains(&d) {
            group_by.push(d);
        }
    }
    let (trunk, codec, context) = *filter;
    QualityQuery {
        carrier_id: Some(carrier.into()),
        start_hour: start,
        end_hour: end,
        bucket: match bucket {
            0 => QualityBucket::Whole,
            1 => QualityBucket::Hour,
            _ => QualityBucket::Day,
        },
        group_by,
        filter: QualityFilter {
            trunk_fqdns: trunk
                .map(|t| vec![TRUNKS[usize::from(t)].to_owned()])
                .unwrap_or_default(),
            codecs: codec
                .map(|c| vec![CODECS[usize::from(c)].to_owned()])
                .unwrap_or_default(),
            destination_contexts: context
                .and_then(|c| DestinationContext::from_code(i32::from(c)))
                .into_iter()
                .collect(),
            ..QualityFilter::default()
        },
    }
}

/// Every record the store holds for `carrier`, read back page by page.
async fn stored_records(store: &dyn Store, carrier: &str) -> Vec<CallRecord> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let (page, more) = store
            .list_call_records(carrier, CallRecordFilter::default(), after, 100)
            .await
            .expect("list");
        after = page.last().map(|(_, k)| *k);
        all.extend(page.into_iter().map(|(r, _)| r));
        if !more {
            return all;
        }
    }
}

/// Runs `ops` as a new carrier; after each step holds the store's answer to the step's
/// question to the recomputed one.
async fn run_case(
    store: &dyn Store,
    carrier: &str,
    base: i64,
    ops: &[(Op, Question)],
) -> Result<(), TestCaseError> {
    store
        .create_carrier(Carrier {
            carrier_id: carrier.into(),
            display_name: "q".into(),
            create_time: now_micros(),
        })
        .await
        .expect("carrier");
    for (step, (op, question)) in ops.iter().enumerate() {
        match op {
            Op::Ingest(batch) => {
                let records = batch
                    .iter()
                    .map(|(n, version, plan)| {
                        record(carrier, format!("{carrier}-c{n}"), *version, plan, base)
                    })
                    .collect();
                store.ingest_call_records(records).await.expect("ingest");
            }
            Op::Purge { hour } => {
                // One day of retention, `now` one day after the cutoff.
                store
                    .set_retention_policy(RetentionPolicy {
                        call_record_days: 1,
                        call_duration_days: 1,
                        released_number_days: 1,
                        audit_event_days: 3650,
                        update_time: None,
                    })
                    .await
                    .expect("policy");
                store
                    .purge_expired(base + hour * HOUR_US + DAY_US)
                    .await
                    .expect("purge");
            }
            Op::Erase { tenant } => {
                let tenant_id = format!("{:08x}-0000-4000-8000-{:012x}", base / DAY_US, tenant);
                store.erase_tenant(&tenant_id).await.expect("erase");
            }
        }
        let q = query(carrier, base / HOUR_US, question);
        let answered: Vec<_> = store
            .quality_summary(q.clone())
            .await
            .expect("summary")
            .into_iter()
            .map(quality_row)
            .collect();
        let mut changes = Changes::default();
        for r in stored_records(store, carrier).await {
            changes.record(carrier, &r, 1);
        }
        let expected: Vec<_> = recomputed(&q, changes)
            .expect("rows")
            .into_iter()
            .map(quality_row)
            .collect();
        prop_assert_eq!(
            answered,
            expected,
            "after step {} ({:?}), question {:?}",
            step,
            op,
            q
        );
    }
    Ok(())
}

/// `cases` cases from a fixed seed, each a new carrier of `store`, a month after the last (so
/// a purge reaches only earlier cases' records).
fn run(runtime: &tokio::runtime::Runtime, store: &dyn Store, cases: u32) {
    let counter = AtomicU64::new(0);
    let config = contextualize_config(ProptestConfig {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x0C5E_ED17),
        rng_algorithm: RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    });
    let mut runner = TestRunner::new(config);
    let result = runner.run(&vec((op(), question()), 1..25), |ops| {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let carrier = format!("q{n:03}");
        // Cases start on a day at 07:00 UTC, so periods cross midnight.
        let base =
            1_700_006_400_000_000 + i64::try_from(n).expect("small") * 30 * DAY_US + 7 * HOUR_US;
        runtime.block_on(run_case(store, &carrier, base, &ops))
    });
    if let Err(e) = result {
        panic!("{e}\n{runner}");
    }
}

/// A runtime for the store's async calls.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn the_quality_aggregates_follow_every_write() {
    let runtime = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("q.db")).expect("store");
    run(&runtime, &store, 60);
}

/// The same property on PostgreSQL (in a fresh schema of the database `OCX_TEST_POSTGRES`
/// names; without it the test says so and passes, except under `CI=true`).
#[test]
fn the_quality_aggregates_follow_every_write_on_postgres() {
    let runtime = runtime();
    let Some(server) = TestPostgres::from_env() else {
        return;
    };
    let store = runtime.block_on(async {
        let url = server.fresh_schema("quality_property").await;
        PgStore::connect(&url, PgOptions::default())
            .await
            .expect("connect")
    });
    run(&runtime, &store, 25);
}

/// Questions over `hours` hours from `base_hour` that the built aggregates must answer as the
/// records do: every bucket, with and without groups, and one filter.
fn build_questions(carrier: &str, base_hour: i64, hours: i64) -> Vec<QualityQuery> {
    let mut questions = Vec::new();
    for (period, bucket, group) in [
        ((0, hours - 1), 0, vec![]),
        ((0, hours - 1), 1, vec![1]),
        ((3, hours - 2), 2, vec![1, 6, 3]),
        ((5, 40), 2, vec![4, 5, 2]),
    ] {
        questions.push(query(
            carrier,
            base_hour,
            &(period, bucket, group, (None, None, None)),
        ));
    }
    questions.push(query(
        carrier,
        base_hour,
        &((0, hours - 1), 2, vec![6], (Some(1), None, Some(1))),
    ));
    questions
}

/// Holds `store`'s answers to [`build_questions`] to the ones recomputed from its records.
async fn holds_to_the_records(
    store: &dyn Store,
    reference: impl AsyncFn(QualityQuery) -> Vec<ocx_server::store::quality::QualityRow>,
    questions: Vec<QualityQuery>,
) {
    let rows = |r: Vec<ocx_server::store::quality::QualityRow>| -> Vec<_> {
        r.into_iter().map(quality_row).collect()
    };
    for q in questions {
        let built = store.quality_summary(q.clone()).await.expect("summary");
        assert!(
            !built.is_empty() || q.filter != QualityFilter::default(),
            "{q:?} found calls"
        );
        assert_eq!(rows(built), rows(reference(q.clone()).await), "{q:?}");
    }
}

/// A database written by the release before the quality aggregates (the migration fixture,
/// made by `scripts/make-migration-fixture.sh`) opens on this code, which builds them in its
/// migration: every answer equals the one recomputed from its records.
#[test]
fn sqlite_builds_the_quality_aggregates_when_it_migrates() {
    let runtime = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/pre-pairing/ocx.db"
    );
    std::fs::copy(fixture, dir.path().join("ocx.db")).expect("copy the fixture");
    let store = SqliteStore::open(&dir.path().join("ocx.db")).expect("migrates and builds");
    runtime.block_on(async {
        let first = stored_records(&store, "fixture-tel").await;
        let start = first.iter().map(|r| r.start_time).min().expect("records");
        let end = first.iter().map(|r| r.start_time).max().expect("records");
        let hours = (end - start) / HOUR_US + 2;
        holds_to_the_records(
            &store,
            async |q| store.reference_quality(q).await.expect("reference"),
            build_questions("fixture-tel", start.div_euclid(HOUR_US), hours),
        )
        .await;
    });
}

/// The same on PostgreSQL: records ingested, the schema taken back to before the aggregates
/// (version 4), opened again: the migration builds them.
#[test]
fn postgres_builds_the_quality_aggregates_when_it_migrates() {
    let runtime = runtime();
    let Some(server) = TestPostgres::from_env() else {
        return;
    };
    runtime.block_on(async {
        let url = server.fresh_schema("quality_build").await;
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
        let base = 1_700_006_400_000_000 + 7 * HOUR_US;
        let mut runner = TestRunner::new(ProptestConfig {
            rng_seed: RngSeed::Fixed(17),
            ..ProptestConfig::default()
        });
        let plans = proptest::strategy::ValueTree::current(
            &vec(record_plan(), 300)
                .new_tree(&mut runner)
                .expect("plans"),
        );
        let records: Vec<CallRecord> = plans
            .iter()
            .enumerate()
            .map(|(n, plan)| record(carrier, format!("b{n}"), 1, plan, base))
            .collect();
        store.ingest_call_records(records).await.expect("ingest");
        drop(store);
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        client
            .batch_execute(
                "DROP TABLE quality_groups, quality_cells;
                 DELETE FROM ocx_schema_version WHERE version = 5;",
            )
            .await
            .expect("back to version 4");
        let store = PgStore::connect(&url, PgOptions::default())
            .await
            .expect("migrates and builds");
        holds_to_the_records(
            &store,
            async |q| store.reference_quality(q).await.expect("reference"),
            build_questions(carrier, base / HOUR_US, 61),
        )
        .await;
    });
}

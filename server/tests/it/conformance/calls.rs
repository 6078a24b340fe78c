//! Conformance checks for call records (ingest outcomes, ownership, listings, the feed under
//! concurrency, stored content) and for carriers' duration reports (outcomes and listings;
//! reconciliation is checked in `durations`).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use super::{T1, T2, carrier, record, upload, words};
use ocx_server::domain::{
    CallDirection, CallRecord, CallRecordFilter, CallType, DestinationContext, DurationOutcome,
    DurationReport, IngestOutcome, MediaStream, QualityMetric, QualityVerdict, Refusal,
    StreamDirection,
};
use ocx_server::store::Store;

/// Runs this module's checks, each on a fresh store.
pub async fn run_all<F, Fut>(fresh: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    outcomes_follow_earlier_records_of_the_batch(fresh().await).await;
    revisions_and_duplicates_in_one_batch_and_across_batches(fresh().await).await;
    list_pages_resume_without_repeats_or_gaps(fresh().await).await;
    feed_after_and_limit(fresh().await).await;
    concurrent_ingest_keeps_each_feed_gapless(fresh().await).await;
    one_call_id_ingested_concurrently(fresh().await).await;
    ownership_by_name_and_by_number(fresh().await).await;
    stored_content_round_trips(fresh().await).await;
    duration_report_outcomes(fresh().await).await;
    duration_listing_window_and_pages(fresh().await).await;
    one_duration_reported_concurrently(fresh().await).await;
}

/// [`record`] owned by `carrier_id` by name (no number needed).
fn named(call_id: &str, version: i64, carrier_id: &str) -> CallRecord {
    CallRecord {
        carrier_id: carrier_id.into(),
        ..record(call_id, version, "+449")
    }
}

fn ingested(out: &[IngestOutcome]) -> usize {
    out.iter()
        .filter(|o| matches!(o, IngestOutcome::Created(_) | IngestOutcome::Revised(_)))
        .count()
}

/// Several records of one call id in one batch: each sees what the earlier ones wrote, and
/// every write takes the next feed sequence (the replaced one leaves the feed).
async fn outcomes_follow_earlier_records_of_the_batch(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    carrier(store.as_ref(), "bravo").await;
    let mut other_content = named("a", 2, "acme");
    other_content.content_hash = 1;
    let out = store
        .ingest_call_records(vec![
            named("a", 1, "acme"),
            named("a", 1, "acme"),
            named("a", 2, "acme"),
            named("a", 1, "acme"),
            other_content,
            named("b", 1, "acme"),
            named("a", 3, "acme"),
            named("a", 3, "bravo"),
        ])
        .await
        .expect("ingest");
    assert_eq!(out[0], IngestOutcome::Created("acme".into()));
    assert_eq!(out[1], IngestOutcome::Unchanged("acme".into()));
    assert_eq!(out[2], IngestOutcome::Revised("acme".into()));
    assert!(
        matches!(&out[3], IngestOutcome::Rejected(r) if *r == Refusal::OlderVersion { version: 1, stored: 2 } && words(r) == "stale: version 1 is older than the stored version 2"),
        "{:?}",
        out[3]
    );
    assert!(
        matches!(&out[4], IngestOutcome::Rejected(r) if *r == Refusal::VersionConflict { version: 2 } && words(r).starts_with("stale: version 2 is stored with other content")),
        "{:?}",
        out[4]
    );
    assert_eq!(out[5], IngestOutcome::Created("acme".into()));
    assert_eq!(out[6], IngestOutcome::Revised("acme".into()));
    // Unchanged answers with the stored owner, not the one this record names.
    assert_eq!(out[7], IngestOutcome::Unchanged("acme".into()));
    assert_eq!(out.len(), 8);
    let feed = store
        .call_records_after("acme", 0, 100)
        .await
        .expect("feed");
    let got: Vec<(i64, &str, i64)> = feed
        .iter()
        .map(|r| (r.feed_sequence, r.call_id.as_str(), r.version))
        .collect();
    assert_eq!(got, [(3, "b", 1), (4, "a", 3)]);
    assert_eq!(store.call_record_head("acme").await.expect("head"), 4);
    assert!(
        store
            .call_records_after("bravo", 0, 100)
            .await
            .expect("feed")
            .is_empty()
    );
    // The next batch continues after the last sequence drawn.
    let out = store
        .ingest_call_records(vec![named("c", 1, "acme"), named("b", 2, "acme")])
        .await
        .expect("ingest");
    assert_eq!(ingested(&out), 2);
    let feed = store
        .call_records_after("acme", 4, 100)
        .await
        .expect("feed");
    let got: Vec<(i64, &str)> = feed
        .iter()
        .map(|r| (r.feed_sequence, r.call_id.as_str()))
        .collect();
    assert_eq!(got, [(5, "c"), (6, "b")]);
    // A batch that writes nothing draws no sequence.
    let out = store
        .ingest_call_records(vec![named("c", 1, "acme"), named("b", 1, "acme")])
        .await
        .expect("ingest");
    assert_eq!(ingested(&out), 0);
    let out = store
        .ingest_call_records(vec![named("d", 1, "acme")])
        .await
        .expect("ingest");
    assert_eq!(out, [IngestOutcome::Created("acme".into())]);
    let feed = store
        .call_records_after("acme", 6, 100)
        .await
        .expect("feed");
    assert_eq!(
        feed.iter().map(|r| r.feed_sequence).collect::<Vec<_>>(),
        [7]
    );
}

/// A revision followed by its exact duplicate in one batch, two revisions in one batch, and
/// the same across consecutive batches: answered item by item, in order.
async fn revisions_and_duplicates_in_one_batch_and_across_batches(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    let acme = || "acme".to_owned();
    let out = store
        .ingest_call_records(vec![named("a", 1, "acme")])
        .await
        .expect("ingest");
    assert_eq!(out, [IngestOutcome::Created(acme())]);
    let out = store
        .ingest_call_records(vec![named("a", 2, "acme"), named("a", 2, "acme")])
        .await
        .expect("ingest");
    assert_eq!(
        out,
        [
            IngestOutcome::Revised(acme()),
            IngestOutcome::Unchanged(acme())
        ]
    );
    let out = store
        .ingest_call_records(vec![named("a", 3, "acme"), named("a", 4, "acme")])
        .await
        .expect("ingest");
    assert_eq!(
        out,
        [
            IngestOutcome::Revised(acme()),
            IngestOutcome::Revised(acme())
        ]
    );
    // The next batch: a duplicate of the last version, then one more revision.
    let out = store
        .ingest_call_records(vec![named("a", 4, "acme"), named("a", 5, "acme")])
        .await
        .expect("ingest");
    assert_eq!(
        out,
        [
            IngestOutcome::Unchanged(acme()),
            IngestOutcome::Revised(acme())
        ]
    );
    let stored = store
        .get_call_record("acme", "a")
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(stored.version, 5);
    // Every write drew a feed sequence; the record sits at the last one.
    let feed = store
        .call_records_after("acme", 0, 100)
        .await
        .expect("feed");
    let got: Vec<(i64, i64)> = feed.iter().map(|r| (r.feed_sequence, r.version)).collect();
    assert_eq!(got, [(5, 5)]);
}

/// One of 30 listed records, varied so that every filter selects some and not others.
fn varied(i: usize, start_time: i64) -> CallRecord {
    let mut r = named(&format!("call-{i:02}"), 1, "acme");
    r.start_time = start_time;
    r.end_time = start_time + 1_000_000;
    r.tenant_id = if i.is_multiple_of(2) { T1 } else { T2 }.into();
    if i.is_multiple_of(3) {
        r.direction = CallDirection::Outbound;
        r.call_type = CallType::UserOut;
        r.caller_number = format!("+4420{}", i % 4);
        r.callee_number = "+33100".into();
    } else {
        r.callee_number = format!("+4420{}", i % 4);
    }
    if i.is_multiple_of(5) {
        r.call_type = CallType::Transfer;
    }
    r.quality = if i.is_multiple_of(4) {
        QualityVerdict::Good
    } else {
        QualityVerdict::Unclassified
    };
    r
}

/// Lists `filter` in pages of `limit`, checking each page's cursor and `more`.
async fn all_pages(
    store: &dyn Store,
    carrier_id: &str,
    filter: &CallRecordFilter,
    limit: usize,
) -> Vec<String> {
    let mut after = None;
    let mut seen = Vec::new();
    loop {
        let (items, more) = store
            .list_call_records(carrier_id, filter.clone(), after, limit)
            .await
            .expect("list");
        assert!(items.len() <= limit);
        assert!(
            !more || items.len() == limit,
            "a short page says more follow"
        );
        for (r, (start, _)) in &items {
            assert_eq!(*start, r.start_time, "the cursor's start time");
            assert_eq!(r.carrier_id, carrier_id);
        }
        seen.extend(items.iter().map(|(r, _)| r.call_id.clone()));
        if !more {
            break;
        }
        after = items.last().map(|(_, key)| *key);
    }
    seen
}

/// Listings by (start time, insertion order): pages of every size give each matching record
/// once, in order, under every filter; a revision keeps its place among equal start times; a
/// cursor resumes after records written since.
async fn list_pages_resume_without_repeats_or_gaps(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    carrier(store.as_ref(), "bravo").await;
    // Ingest order (a permutation), start times in ties of three: the tie-breaker is the
    // insertion order, not the call id.
    let order: Vec<usize> = (0..30).map(|k| (k * 7) % 30).collect();
    let start = |i: usize| 1_000_000_000 + (i / 3) as i64 * 60_000_000;
    // The model: (call id, start time, insertion position, record).
    let mut model: Vec<(CallRecord, usize)> = Vec::new();
    for batch in order.chunks(10) {
        let records: Vec<CallRecord> = batch.iter().map(|&i| varied(i, start(i))).collect();
        for r in &records {
            model.push((r.clone(), model.len()));
        }
        let out = store.ingest_call_records(records).await.expect("ingest");
        assert_eq!(ingested(&out), 10);
    }
    // Another carrier's records at the same times never show.
    let others: Vec<CallRecord> = (0..5)
        .map(|i| {
            let mut r = varied(i, start(i));
            r.call_id = format!("bravo-{i}");
            r.carrier_id = "bravo".into();
            r
        })
        .collect();
    store.ingest_call_records(others).await.expect("ingest");
    // Revisions: one keeps its start time (and its place), one moves to a later minute.
    let mut kept = varied(order[1], start(order[1]));
    kept.version = 2;
    kept.content_hash = 2;
    let mut moved = varied(order[2], start(order[2]) + 7 * 60_000_000);
    moved.version = 2;
    moved.content_hash = 2;
    let out = store
        .ingest_call_records(vec![kept.clone(), moved.clone()])
        .await
        .expect("revise");
    assert_eq!(ingested(&out), 2);
    for r in [kept, moved] {
        if let Some(m) = model.iter_mut().find(|(m, _)| m.call_id == r.call_id) {
            m.0 = r;
        }
    }

    let expected = |model: &[(CallRecord, usize)], f: &CallRecordFilter| -> Vec<String> {
        let mut rows: Vec<&(CallRecord, usize)> = model
            .iter()
            .filter(|(r, _)| {
                f.from.is_none_or(|from| r.start_time >= from)
                    && f.to.is_none_or(|to| r.start_time < to)
                    && f.tenant_id.as_ref().is_none_or(|t| r.tenant_id == *t)
                    && f.number
                        .as_ref()
                        .is_none_or(|n| r.caller_number == *n || r.callee_number == *n)
                    && f.direction.is_none_or(|d| r.direction == d)
                    && f.call_type.is_none_or(|t| r.call_type == t)
                    && f.quality.is_none_or(|q| r.quality == q)
            })
            .collect();
        rows.sort_by_key(|(r, pos)| (r.start_time, *pos));
        rows.iter().map(|(r, _)| r.call_id.clone()).collect()
    };
    let filters = [
        CallRecordFilter::default(),
        CallRecordFilter {
            from: Some(start(6)),
            to: Some(start(21)),
            ..CallRecordFilter::default()
        },
        CallRecordFilter {
            from: Some(start(6) + 1),
            ..CallRecordFilter::default()
        },
        CallRecordFilter {
            to: Some(start(6)),
            ..CallRecordFilter::default()
        },
        CallRecordFilter {
            tenant_id: Some(T2.into()),
            ..CallRecordFilter::default()
        },
        CallRecordFilter {
            number: Some("+44201".into()),
            ..CallRecordFilter::default()
        },
        CallRecordFilter {
            number: Some("+33100".into()),
            direction: Some(CallDirection::Inbound),
            ..CallRecordFilter::default()
        },
        CallRecordFilter {
            direction: Some(CallDirection::Outbound),
            ..CallRecordFilter::default()
        },
        CallRecordFilter {
            call_type: Some(CallType::Transfer),
            ..CallRecordFilter::default()
        },
        CallRecordFilter {
            quality: Some(QualityVerdict::Good),
            tenant_id: Some(T1.into()),
            from: Some(start(3)),
            ..CallRecordFilter::default()
        },
        CallRecordFilter {
            tenant_id: Some("00000009-0000-4000-8000-000000000009".into()),
            ..CallRecordFilter::default()
        },
    ];
    for f in &filters {
        let want = expected(&model, f);
        for limit in [1, 4, 7, 100] {
            assert_eq!(
                all_pages(store.as_ref(), "acme", f, limit).await,
                want,
                "{f:?}, pages of {limit}"
            );
        }
    }
    assert_eq!(
        all_pages(store.as_ref(), "bravo", &CallRecordFilter::default(), 2)
            .await
            .len(),
        5
    );

    // A cursor taken before new records resumes after its key: a record that sorts before it
    // is not served, one after it is.
    let all = CallRecordFilter::default();
    let (first, more) = store
        .list_call_records("acme", all.clone(), None, 10)
        .await
        .expect("list");
    assert!(more);
    let cursor = first.last().map(|(_, key)| *key);
    let mut early = varied(3, start(0));
    early.call_id = "early".into();
    let mut late = varied(4, start(29));
    late.call_id = "late".into();
    store
        .ingest_call_records(vec![early.clone(), late.clone()])
        .await
        .expect("ingest");
    model.push((early, model.len()));
    model.push((late, model.len()));
    let mut rest = Vec::new();
    let mut after = cursor;
    loop {
        let (items, more) = store
            .list_call_records("acme", all.clone(), after, 6)
            .await
            .expect("list");
        rest.extend(items.iter().map(|(r, _)| r.call_id.clone()));
        if !more {
            break;
        }
        after = items.last().map(|(_, key)| *key);
    }
    let want = expected(&model, &all);
    let served: Vec<String> = first.iter().map(|(r, _)| r.call_id.clone()).collect();
    let skip = want
        .iter()
        .position(|c| Some(c) == served.last())
        .map_or(0, |p| p + 1);
    assert_eq!(rest, want[skip..].to_vec());
    assert!(rest.contains(&"late".to_owned()));
    assert!(!rest.contains(&"early".to_owned()));
}

/// The feed: `after` is exclusive, `limit` caps, each carrier's sequences start at 1.
async fn feed_after_and_limit(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    carrier(store.as_ref(), "bravo").await;
    carrier(store.as_ref(), "charlie").await;
    let records: Vec<CallRecord> = (0..13)
        .map(|i| {
            let owner = if i % 4 == 3 { "bravo" } else { "acme" };
            named(&format!("f{i:02}"), 1, owner)
        })
        .collect();
    let out = store.ingest_call_records(records).await.expect("ingest");
    assert_eq!(ingested(&out), 13);
    let acme: Vec<String> = (0..13)
        .filter(|i| i % 4 != 3)
        .map(|i| format!("f{i:02}"))
        .collect();
    let feed = store
        .call_records_after("acme", 0, 100)
        .await
        .expect("feed");
    assert_eq!(
        feed.iter().map(|r| r.feed_sequence).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(
        feed.iter().map(|r| r.call_id.clone()).collect::<Vec<_>>(),
        acme
    );
    let page = store.call_records_after("acme", 3, 4).await.expect("feed");
    assert_eq!(
        page.iter().map(|r| r.feed_sequence).collect::<Vec<_>>(),
        [4, 5, 6, 7]
    );
    assert_eq!(
        page.iter().map(|r| r.call_id.clone()).collect::<Vec<_>>(),
        acme[3..7].to_vec()
    );
    assert!(
        store
            .call_records_after("acme", 10, 5)
            .await
            .expect("feed")
            .is_empty()
    );
    assert!(
        store
            .call_records_after("acme", 0, 0)
            .await
            .expect("feed")
            .is_empty()
    );
    let bravo = store
        .call_records_after("bravo", 1, 10)
        .await
        .expect("feed");
    assert_eq!(
        bravo
            .iter()
            .map(|r| (r.feed_sequence, r.call_id.as_str()))
            .collect::<Vec<_>>(),
        [(2, "f07"), (3, "f11")]
    );
    assert!(bravo.iter().all(|r| r.carrier_id == "bravo"));
    assert_eq!(store.call_record_head("acme").await.expect("head"), 10);
    assert_eq!(store.call_record_head("bravo").await.expect("head"), 3);
    assert_eq!(store.call_record_head("charlie").await.expect("head"), 0);
    assert!(
        store
            .call_records_after("charlie", 0, 10)
            .await
            .expect("feed")
            .is_empty()
    );
}

/// Writers ingesting batches that mix two carriers (in either order) at once: each carrier's
/// feed is exactly 1..=n, every record once; a reader following the feeds meanwhile never sees
/// a later sequence before an earlier one.
async fn concurrent_ingest_keeps_each_feed_gapless(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    carrier(store.as_ref(), "bravo").await;
    const WRITERS: usize = 8;
    const BATCHES: usize = 10;
    // 5 records a batch: 3 for the first carrier, 2 for the second; half the writers start
    // with each, so each carrier gets 200.
    let per_carrier = (WRITERS * BATCHES * 5 / 2) as i64;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let store = Arc::clone(&store);
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut heads = [0i64; 2];
            loop {
                let finished = done.load(std::sync::atomic::Ordering::Acquire);
                for (k, who) in ["acme", "bravo"].into_iter().enumerate() {
                    let feed = store
                        .call_records_after(who, heads[k], 1000)
                        .await
                        .expect("feed");
                    for r in &feed {
                        heads[k] += 1;
                        assert_eq!(r.feed_sequence, heads[k], "{who}: a sequence was skipped");
                    }
                }
                if finished {
                    break heads;
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let (first, second) = if w.is_multiple_of(2) {
                ("acme", "bravo")
            } else {
                ("bravo", "acme")
            };
            for b in 0..BATCHES {
                let batch: Vec<CallRecord> = (0..5usize)
                    .map(|i| {
                        let who = if i.is_multiple_of(2) { first } else { second };
                        named(&format!("w{w}-b{b}-{i}"), 1, who)
                    })
                    .collect();
                let out = store.ingest_call_records(batch).await.expect("ingest");
                assert!(out.iter().all(|o| matches!(o, IngestOutcome::Created(_))));
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let heads = reader.await.expect("reader");
    assert_eq!(heads, [per_carrier, per_carrier]);
    for who in ["acme", "bravo"] {
        let feed = store.call_records_after(who, 0, 1000).await.expect("feed");
        let seqs: Vec<i64> = feed.iter().map(|r| r.feed_sequence).collect();
        assert_eq!(seqs, (1..=per_carrier).collect::<Vec<_>>(), "{who}");
        let ids: HashSet<&str> = feed.iter().map(|r| r.call_id.as_str()).collect();
        assert_eq!(ids.len() as i64, per_carrier, "{who}: a record twice");
        assert!(feed.iter().all(|r| r.carrier_id == who));
        assert_eq!(
            store.call_record_head(who).await.expect("head"),
            per_carrier
        );
        // Each writer's records of this carrier appear in the order it ingested them.
        let mut last: HashMap<&str, &str> = HashMap::new();
        for r in &feed {
            let writer = r.call_id.split('-').next().unwrap_or_default();
            if let Some(prev) = last.insert(writer, r.call_id.as_str()) {
                assert!(
                    prev < r.call_id.as_str(),
                    "{who}: {prev} after {}",
                    r.call_id
                );
            }
        }
    }
}

/// One call id from many tasks at once: the same record is created once and unchanged for the
/// rest; versions racing each other end at the highest, every write in the feed's head.
async fn one_call_id_ingested_concurrently(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store
                .ingest_call_records(vec![named("same", 1, "acme")])
                .await
                .expect("ingest")
        }));
    }
    let mut created = 0;
    for t in tasks {
        let out = t.await.expect("task");
        match &out[..] {
            [IngestOutcome::Created(c)] => {
                assert_eq!(c, "acme");
                created += 1;
            }
            [IngestOutcome::Unchanged(c)] => assert_eq!(c, "acme"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created, 1);
    let feed = store
        .call_records_after("acme", 0, 100)
        .await
        .expect("feed");
    assert_eq!(feed.len(), 1);
    assert_eq!(feed[0].feed_sequence, 1);

    // Versions 1..=8 of another call, each sent by its own task in a batch with a record of
    // its own; six rounds, since a lost update shows only in some interleavings. (Eight
    // tasks: each commit can make at most each other task run its transaction again.)
    let mut head = 1;
    for round in 0..6 {
        let race = format!("race-{round}");
        let mut tasks = Vec::new();
        for v in (1..=8).rev() {
            let store = Arc::clone(&store);
            let race = race.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .ingest_call_records(vec![
                        named(&race, v, "acme"),
                        named(&format!("{race}-own-{v:02}"), 1, "acme"),
                    ])
                    .await
                    .expect("ingest")
            }));
        }
        let mut writes = 0;
        let mut created = 0;
        for t in tasks {
            let out = t.await.expect("task");
            assert_eq!(out[1], IngestOutcome::Created("acme".into()));
            match &out[0] {
                IngestOutcome::Created(_) => created += 1,
                IngestOutcome::Revised(_) => {}
                IngestOutcome::Rejected(r) => {
                    assert!(words(r).starts_with("stale: version"), "{r:?}");
                    continue;
                }
                other => panic!("unexpected {other:?}"),
            }
            writes += 1;
        }
        assert_eq!(created, 1);
        let stored = store
            .get_call_record("acme", &race)
            .await
            .expect("get")
            .expect("stored");
        assert_eq!(
            stored.version, 8,
            "{race}: a lower version overwrote a higher one"
        );
        // Every write drew a sequence: the 8 own records and the race's writes.
        head += 8 + writes;
        assert_eq!(store.call_record_head("acme").await.expect("head"), head);
        let feed = store
            .call_records_after("acme", 0, 100)
            .await
            .expect("feed");
        assert_eq!(feed.len(), 1 + 9 * (round + 1));
        // The last transaction's own record holds the last sequence drawn.
        assert_eq!(feed.last().map(|r| r.feed_sequence), Some(head));
        assert!(
            feed.windows(2)
                .all(|w| w[0].feed_sequence < w[1].feed_sequence)
        );
    }
}

/// Ownership: a named carrier wins over the number's owner, an unknown carrier or an unowned
/// number is rejected, the tenant-side number depends on the direction; no carrier sees
/// another's records by get, list or feed.
async fn ownership_by_name_and_by_number(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    carrier(store.as_ref(), "bravo").await;
    store
        .upload_numbers("acme", vec![upload("+441", T1)])
        .await
        .expect("upload");
    store
        .upload_numbers("bravo", vec![upload("+442", T1)])
        .await
        .expect("upload");
    let mut outbound = record("out", 1, "+33100");
    outbound.direction = CallDirection::Outbound;
    outbound.caller_number = "+442".into();
    let mut outbound_unowned = record("out-unowned", 1, "+441");
    outbound_unowned.direction = CallDirection::Outbound;
    outbound_unowned.caller_number = "+33100".into();
    let out = store
        .ingest_call_records(vec![
            record("by-number", 1, "+441"),
            CallRecord {
                carrier_id: "bravo".into(),
                ..record("by-name", 1, "+441")
            },
            CallRecord {
                carrier_id: "zulu".into(),
                ..record("unknown-carrier", 1, "+441")
            },
            record("unowned", 1, "+449"),
            outbound,
            outbound_unowned,
        ])
        .await
        .expect("ingest");
    assert_eq!(out[0], IngestOutcome::Created("acme".into()));
    assert_eq!(out[1], IngestOutcome::Created("bravo".into()));
    let rejected = |o: &IngestOutcome| match o {
        IngestOutcome::Rejected(r) => words(r),
        other => panic!("not rejected: {other:?}"),
    };
    assert_eq!(
        out[2],
        IngestOutcome::Rejected(Refusal::UnknownCarrier {
            carrier_id: "zulu".into()
        })
    );
    assert_eq!(rejected(&out[2]), "carrier \"zulu\" does not exist");
    assert_eq!(
        rejected(&out[3]),
        "the tenant's number on this call (callee +449) belongs to no carrier; provision it or set carrier_id"
    );
    assert_eq!(out[4], IngestOutcome::Created("bravo".into()));
    assert_eq!(
        out[5],
        IngestOutcome::Rejected(Refusal::NoCarrierForNumber {
            direction: CallDirection::Outbound,
            number: "+33100".into()
        })
    );
    assert_eq!(
        rejected(&out[5]),
        "the tenant's number on this call (caller +33100) belongs to no carrier; provision it or set carrier_id"
    );
    for (who, mine, theirs) in [
        ("acme", vec!["by-number"], vec!["by-name", "out"]),
        ("bravo", vec!["by-name", "out"], vec!["by-number"]),
    ] {
        for call_id in &mine {
            let r = store.get_call_record(who, call_id).await.expect("get");
            assert_eq!(r.map(|r| r.carrier_id), Some(who.to_owned()));
        }
        for call_id in &theirs {
            assert!(
                store
                    .get_call_record(who, call_id)
                    .await
                    .expect("get")
                    .is_none(),
                "{who} sees {call_id}"
            );
        }
        let (listed, _) = store
            .list_call_records(who, CallRecordFilter::default(), None, 100)
            .await
            .expect("list");
        let listed: Vec<&str> = listed.iter().map(|(r, _)| r.call_id.as_str()).collect();
        assert_eq!(listed, mine, "{who}");
        let feed = store.call_records_after(who, 0, 100).await.expect("feed");
        let fed: Vec<&str> = feed.iter().map(|r| r.call_id.as_str()).collect();
        assert_eq!(fed, mine, "{who}");
    }
    for call_id in ["unknown-carrier", "unowned", "out-unowned"] {
        for who in ["acme", "bravo", "zulu"] {
            assert!(
                store
                    .get_call_record(who, call_id)
                    .await
                    .expect("get")
                    .is_none()
            );
        }
    }
}

/// A record with every field set (media streams with measured and missing values) comes back
/// from get, list and feed as it was sent, with its owner, sequence and store time.
async fn stored_content_round_trips(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    let stream = |i: i64| MediaStream {
        direction: (i % 2 == 0).then_some(StreamDirection::CalleeToCaller),
        codec: format!("codec-{i}"),
        average_jitter_us: Some(i * 1000),
        max_jitter_us: None,
        average_packet_loss_rate: Some(0.0),
        max_packet_loss_rate: Some(0.125),
        average_round_trip_us: Some(0),
        max_round_trip_us: None,
        average_audio_degradation: None,
        average_ratio_of_concealed_samples: Some(1.0),
        mos: Some(4.3),
        mos_estimated: i % 3 == 0,
    };
    let full = CallRecord {
        call_id: "full".into(),
        correlation_id: "sip-call-id@sbc".into(),
        version: 3,
        carrier_id: "acme".into(),
        tenant_id: T2.into(),
        call_type: CallType::VoiceAppOut,
        direction: CallDirection::Outbound,
        caller_number: "+4420123".into(),
        callee_number: "+33100200".into(),
        user_sip_uri: "sip:user@example.com".into(),
        invite_time: Some(1_699_999_999_000_000),
        start_time: 1_700_000_000_000_000,
        end_time: 1_700_000_061_500_000,
        duration_us: 61_500_000,
        final_sip_code: 487,
        final_sip_phrase: "Request Terminated".into(),
        q850_cause: 127,
        successful: false,
        destination_context: Some(DestinationContext::International),
        usage_country_code: "GB".into(),
        trunk_fqdn: "sbc.example.net".into(),
        media_streams: (0..3).map(stream).collect(),
        quality: QualityVerdict::Poor,
        poor_due_to: vec![QualityMetric::RoundTripTime, QualityMetric::Jitter],
        content_hash: -8_070_450_532_247_928_832,
        feed_sequence: 0,
        update_time: 0,
    };
    let bare = CallRecord {
        invite_time: None,
        destination_context: None,
        media_streams: Vec::new(),
        poor_due_to: Vec::new(),
        ..named("bare", 1, "acme")
    };
    let out = store
        .ingest_call_records(vec![full.clone(), bare.clone()])
        .await
        .expect("ingest");
    assert_eq!(ingested(&out), 2);
    for (sent, seq) in [(full, 1), (bare, 2)] {
        let got = store
            .get_call_record("acme", &sent.call_id)
            .await
            .expect("get")
            .expect("stored");
        assert!(got.update_time > 0);
        let want = CallRecord {
            feed_sequence: seq,
            update_time: got.update_time,
            ..sent.clone()
        };
        assert_eq!(got, want);
        let (listed, _) = store
            .list_call_records(
                "acme",
                CallRecordFilter {
                    from: Some(sent.start_time),
                    to: Some(sent.start_time + 1),
                    ..CallRecordFilter::default()
                },
                None,
                10,
            )
            .await
            .expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, want);
        let fed = store
            .call_records_after("acme", seq - 1, 1)
            .await
            .expect("feed");
        assert_eq!(fed, [want]);
    }
}

/// A report for duration checks.
fn duration(record_id: &str, start_time: i64, duration_us: i64) -> DurationReport {
    DurationReport {
        record_id: record_id.into(),
        call_id: format!("call-{record_id}"),
        correlation_id: String::new(),
        caller_number: "+33100".into(),
        callee_number: "+441".into(),
        start_time,
        duration_us,
    }
}

/// Reports: new, duplicate or correction, in batch order; record ids are per carrier.
async fn duration_report_outcomes(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    carrier(store.as_ref(), "bravo").await;
    let r1 = duration("r1", 1_000, 60_000_000);
    let r2 = duration("r2", 2_000, 30_000_000);
    let mut r1b = r1.clone();
    r1b.duration_us += 1;
    let mut r1c = r1b.clone();
    r1c.correlation_id = "corr".into();
    r1c.call_id = String::new();
    let out = store
        .report_call_durations(
            "acme",
            vec![r1.clone(), r2.clone(), r1.clone(), r1b.clone()],
        )
        .await
        .expect("report");
    use DurationOutcome::{Corrected, Created, Unchanged};
    assert_eq!(out, [Created, Created, Unchanged, Corrected]);
    let out = store
        .report_call_durations(
            "acme",
            vec![r1b.clone(), r2.clone(), r1c.clone(), r1.clone(), r1.clone()],
        )
        .await
        .expect("report");
    assert_eq!(out, [Unchanged, Unchanged, Corrected, Corrected, Unchanged]);
    // The same record id from another carrier is that carrier's own report.
    let out = store
        .report_call_durations("bravo", vec![r1c.clone()])
        .await
        .expect("report");
    assert_eq!(out, [Created]);
    let (items, more) = store
        .list_call_durations("acme", (None, None), None, 10)
        .await
        .expect("list");
    assert!(!more);
    let got: Vec<(&DurationReport, i32, &str)> = items
        .iter()
        .map(|(d, _)| (&d.report, d.corrections, d.carrier_id.as_str()))
        .collect();
    assert_eq!(got, [(&r1, 3, "acme"), (&r2, 0, "acme")]);
    let first = &items[0].0;
    assert!(first.create_time <= first.update_time);
    assert_eq!(items[1].0.create_time, items[1].0.update_time);
    let (items, _) = store
        .list_call_durations("bravo", (None, None), None, 10)
        .await
        .expect("list");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].0.report, r1c);
    assert_eq!(items[0].0.corrections, 0);
    assert_eq!(items[0].0.carrier_id, "bravo");
}

/// Listing by (start time, insertion order): the window is [from, to), pages resume after
/// their cursor, a correction keeps its place among equal start times or moves with its new
/// start time.
async fn duration_listing_window_and_pages(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    carrier(store.as_ref(), "bravo").await;
    // 20 reports in ties of four start times, reported in a scrambled order.
    let order: Vec<i64> = (0..20).map(|k| (k * 9) % 20).collect();
    let start = |i: i64| 10_000 + (i / 4) * 1_000;
    let mut model: Vec<(DurationReport, usize)> = Vec::new();
    for batch in order.chunks(7) {
        let reports: Vec<DurationReport> = batch
            .iter()
            .map(|&i| duration(&format!("d{i:02}"), start(i), i))
            .collect();
        for r in &reports {
            model.push((r.clone(), model.len()));
        }
        store
            .report_call_durations("acme", reports)
            .await
            .expect("report");
    }
    store
        .report_call_durations("bravo", vec![duration("d00", start(0), 1)])
        .await
        .expect("report");
    // Corrections: one keeps its start time, one moves.
    let kept = duration("d05", start(5), 555);
    let moved = duration("d06", start(19) + 1, 666);
    let out = store
        .report_call_durations("acme", vec![kept.clone(), moved.clone()])
        .await
        .expect("correct");
    assert_eq!(
        out,
        [DurationOutcome::Corrected, DurationOutcome::Corrected]
    );
    for r in [kept, moved] {
        if let Some(m) = model.iter_mut().find(|(m, _)| m.record_id == r.record_id) {
            m.0 = r;
        }
    }
    for window in [
        (None, None),
        (Some(start(4)), Some(start(16))),
        (Some(start(4) + 1), None),
        (None, Some(start(8))),
        (Some(start(19) + 1), Some(start(19) + 2)),
        (Some(start(8)), Some(start(8))),
    ] {
        let mut want: Vec<&(DurationReport, usize)> = model
            .iter()
            .filter(|(r, _)| {
                window.0.is_none_or(|from| r.start_time >= from)
                    && window.1.is_none_or(|to| r.start_time < to)
            })
            .collect();
        want.sort_by_key(|(r, pos)| (r.start_time, *pos));
        let want: Vec<String> = want.iter().map(|(r, _)| r.record_id.clone()).collect();
        for limit in [1, 3, 50] {
            let mut after = None;
            let mut seen = Vec::new();
            loop {
                let (items, more) = store
                    .list_call_durations("acme", window, after, limit)
                    .await
                    .expect("list");
                assert!(items.len() <= limit);
                for (d, (start, _)) in &items {
                    assert_eq!(*start, d.report.start_time);
                    assert_eq!(d.carrier_id, "acme");
                }
                seen.extend(items.iter().map(|(d, _)| d.report.record_id.clone()));
                if !more {
                    break;
                }
                after = items.last().map(|(_, key)| *key);
            }
            assert_eq!(seen, want, "{window:?}, pages of {limit}");
        }
    }
}

/// One record id reported with different content by many tasks at once: created once, every
/// other report a correction (each counted) or a duplicate.
async fn one_duration_reported_concurrently(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    let mut tasks = Vec::new();
    for k in 0..8i64 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            // Two tasks send each content.
            let r = duration("same", 1_000, 1 + k / 2);
            store
                .report_call_durations("acme", vec![r])
                .await
                .expect("report")
        }));
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        let out = t.await.expect("task");
        assert_eq!(out.len(), 1);
        *counts.entry(format!("{:?}", out[0])).or_default() += 1;
    }
    assert_eq!(counts.get("Created"), Some(&1), "{counts:?}");
    let corrected = counts.get("Corrected").copied().unwrap_or_default();
    assert!(corrected >= 3, "{counts:?}");
    let (items, _) = store
        .list_call_durations("acme", (None, None), None, 10)
        .await
        .expect("list");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].0.corrections as usize, corrected);
}

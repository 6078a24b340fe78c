//! Two `ocx-server` replicas on one PostgreSQL database (named by `OCX_TEST_POSTGRES`; see
//! `store_postgres.rs`), written through both at once, with a number-event watcher and a
//! call-record feed on each. Replica B is killed with SIGKILL mid-stream; its clients move to
//! replica A, as a load balancer would move them, resuming after the last sequence they saw and
//! resending what B had not acknowledged. Then:
//! - the database holds every record and report once, and every acknowledged one;
//! - the carrier's number-event and feed sequences are 1..=n, without a gap;
//! - each watcher and each feed (B's continued on A) saw exactly the database's sequence,
//!   each entry once, in order;
//! - a request id used on one replica is honoured on the other; a key created on one replica
//!   works on the other, and one revoked on the other stops working on the first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::OCX_SERVER;
use futures_util::{Stream, StreamExt, TryStreamExt, stream};
use ocx_client::{Client, pb};
use ocx_testkit::postgres::TestPostgres;
use ocx_testkit::process::{Proc, key};
use ocx_testkit::sample::{CallRecordGenerator, Line, report_for};
use ocx_testkit::seed_carrier;
use tokio::sync::{oneshot, watch};
use tonic::Code;

const TENANT: &str = "1b2c3d4e-0000-4000-8000-000000000009";
const CARRIER: &str = "twin-tel";
/// Numbers on the carrier; each replica assigns its own third, and both the last third.
const NUMBERS: u32 = 30;
/// Records per ingest batch, and batches per replica.
const BATCH: usize = 40;
const BATCHES: usize = 12;
/// B is killed after this many of its ingest batches were acknowledged, and this many number
/// changes made through it.
const KILL_AFTER: usize = 4;
const CHANGES_BEFORE_KILL: usize = 20;
/// The longest any wait in this test may take.
const BOUND: Duration = Duration::from_secs(60);

/// What one follower saw: (sequence, number or call id), in order.
pub(crate) type Seen = Vec<(i64, String)>;

/// Follows `feed` until it has yielded `target` (once the target is known) or `stop` fires;
/// returns what it saw.
pub(crate) fn collect<T: Send + 'static>(
    feed: impl Stream<Item = ocx_client::Result<T>> + Send + 'static,
    entry: fn(&T) -> (i64, String),
    mut target: watch::Receiver<i64>,
    stop: Option<oneshot::Receiver<()>>,
) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut feed = Box::pin(feed);
        let mut seen: Seen = Vec::new();
        let mut stop = stop;
        loop {
            if seen.last().map_or(0, |s| s.0) >= *target.borrow() {
                return seen;
            }
            tokio::select! {
                item = feed.next() => match item {
                    Some(Ok(item)) => seen.push(entry(&item)),
                    Some(Err(e)) => panic!("a follower failed: {e:?}"),
                    None => return seen,
                },
                _ = target.changed() => {}
                _ = async { stop.as_mut().expect("stop").await }, if stop.is_some() => return seen,
            }
        }
    })
}

pub(crate) fn event_entry(e: &pb::NumberEvent) -> (i64, String) {
    let number = e.phone_number.as_ref().map(|n| n.number.clone());
    (e.sequence, number.unwrap_or_default())
}

pub(crate) fn record_entry(r: &pb::CallRecord) -> (i64, String) {
    (r.feed_sequence, r.call_id.clone())
}

/// Calls `attempt` until it succeeds, while it fails with `code`, for at most [`BOUND`]:
/// for what reaches the other replica by notification.
async fn eventually<T, F, Fut>(what: &str, code: Code, attempt: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ocx_client::Result<T>>,
{
    let started = Instant::now();
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(e) if e.code() == Some(code) && started.elapsed() < BOUND => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{what}: {e:?}"),
        }
    }
}

/// Assigns and unassigns each of `numbers` `rounds` times through `platform`; stops at the
/// first failure (its replica was killed). Returns how many calls succeeded, and publishes the
/// count as it goes.
async fn churn(
    platform: Client,
    numbers: Vec<String>,
    rounds: usize,
    progress: watch::Sender<usize>,
) -> usize {
    let mut done = 0;
    for round in 0..rounds {
        for number in &numbers {
            let assigned = platform
                .assign_number(pb::AssignNumberRequest {
                    number: number.clone(),
                    tenant_id: TENANT.into(),
                    assignment_type: pb::AssignmentType::User.into(),
                    sip_uri: format!("sip:user{round}@twin.example"),
                    ..Default::default()
                })
                .await;
            if assigned.is_err() {
                return done;
            }
            done += 1;
            progress.send_replace(done);
            if platform.unassign_number(number, TENANT).await.is_err() {
                return done;
            }
            done += 1;
            progress.send_replace(done);
        }
    }
    done
}

/// Ingests `batches` through `platform`; returns the indexes acknowledged and how many records
/// those acknowledgements said were created. After `kill_after` acknowledgements it tells
/// `killed` and keeps reading until the stream fails.
async fn ingest(
    platform: Client,
    batches: impl Stream<Item = Vec<pb::CallRecord>> + Send + 'static,
    mut kill: Option<(usize, oneshot::Sender<()>)>,
) -> (BTreeSet<usize>, i32) {
    let mut acks = Box::pin(platform.ingest_call_records(batches).await.expect("ingest"));
    let (mut acked, mut created) = (BTreeSet::new(), 0);
    while let Some(ack) = acks.next().await {
        let Ok(ack) = ack else { break };
        assert_eq!(ack.rejected_count, 0, "{ack:?}");
        acked.insert((ack.batch_id - 1) as usize);
        created += ack.created_count;
        if kill
            .as_ref()
            .is_some_and(|(after, _)| acked.len() >= *after)
            && let Some((_, tell)) = kill.take()
        {
            let _ = tell.send(());
        }
    }
    (acked, created)
}

/// Uploads duration reports through `carrier`; returns the indexes acknowledged.
async fn report(carrier: Client, batches: Vec<Vec<pb::CallDurationReport>>) -> BTreeSet<usize> {
    let mut acks = Box::pin(
        carrier
            .upload_call_durations(CARRIER, stream::iter(batches))
            .await
            .expect("upload"),
    );
    let mut acked = BTreeSet::new();
    while let Some(Ok(ack)) = acks.next().await {
        assert_eq!(ack.rejected_count, 0, "{ack:?}");
        acked.insert((ack.batch_id - 1) as usize);
    }
    acked
}

pub(crate) fn reports_for(batch: &[pb::CallRecord]) -> Vec<pb::CallDurationReport> {
    batch
        .iter()
        .map(|r| report_for(r, format!("report-{}", r.call_id)))
        .collect()
}

/// A carrier's number events as the database holds them: (sequence, number), for [`stored`].
pub(crate) const STORED_EVENTS: &str = "SELECT sequence, number FROM number_events e
   CROSS JOIN LATERAL (SELECT (e.snapshot::jsonb)->>'number' AS number) n
  WHERE carrier_id = $1 ORDER BY sequence";
/// A carrier's call-record feed as the database holds it: (sequence, call id), for [`stored`].
pub(crate) const STORED_RECORDS: &str =
    "SELECT feed_sequence, call_id FROM call_records WHERE carrier_id = $1 ORDER BY feed_sequence";

/// `carrier`'s rows as the database holds them: (sequence, key) in sequence order.
pub(crate) async fn stored(url: &str, sql: &str, carrier: &str) -> Seen {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(connection);
    client
        .query(sql, &[&carrier])
        .await
        .expect("query")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

pub(crate) fn assert_gapless(what: &str, seen: &Seen) {
    let sequences: Vec<i64> = seen.iter().map(|s| s.0).collect();
    let expected: Vec<i64> = (1..=seen.len() as i64).collect();
    assert_eq!(sequences, expected, "{what}: sequences 1..=n without a gap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_serve_as_one_and_survive_a_sigkill() {
    let Some(pg) = TestPostgres::from_env() else {
        return;
    };
    let url = pg.fresh_schema("replicas").await;
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let args = ["--database", url.as_str()];
    let (_replica_a, endpoint_a, _) = OCX_SERVER.start_configured(dir_a.path(), &args, &[]);
    let platform_key = key(&dir_a.path().join("platform.key"));
    let (replica_b, endpoint_b, _) = OCX_SERVER.start_configured(dir_b.path(), &args, &[]);
    let mut replica_b: Option<Proc> = Some(replica_b);
    assert!(
        !dir_b.path().join("platform.key").exists(),
        "the second replica found the first one's platform key and made none"
    );
    let platform_a = Client::connect(endpoint_a, &platform_key)
        .await
        .expect("connect A");
    let platform_b = Client::connect(endpoint_b, &platform_key)
        .await
        .expect("connect B");

    // A carrier key made through A works on B once B's cache heard of it.
    let (carrier_key, numbers) =
        seed_carrier(&platform_a, CARRIER, TENANT, "+4420794", NUMBERS).await;
    let carrier_a = platform_a.with_key(&carrier_key).expect("client");
    let carrier_b = platform_b.with_key(&carrier_key).expect("client");
    eventually("a key made on A, used on B", Code::Unauthenticated, || {
        carrier_b.get_number(CARRIER, &numbers[0])
    })
    .await;
    // A key revoked through B stops working on A.
    let spare = platform_a
        .create_api_key(pb::CreateApiKeyRequest {
            role: pb::ApiKeyRole::Carrier.into(),
            carrier_id: CARRIER.into(),
            display_name: "spare".into(),
            request_id: String::new(),
        })
        .await
        .expect("spare key");
    let spare_on_a = platform_a.with_key(&spare.secret).expect("client");
    spare_on_a
        .get_number(CARRIER, &numbers[0])
        .await
        .expect("the spare key works on A");
    let spare_id = spare
        .api_key
        .as_ref()
        .map(|k| k.key_id.clone())
        .expect("key id");
    eventually(
        "revoking on B a key made on A",
        Code::Unauthenticated,
        || platform_b.revoke_api_key(&spare_id),
    )
    .await;
    let started = Instant::now();
    loop {
        match spare_on_a.get_number(CARRIER, &numbers[0]).await {
            Err(e) if e.code() == Some(Code::Unauthenticated) => break,
            _ if started.elapsed() < BOUND => tokio::time::sleep(Duration::from_millis(10)).await,
            other => panic!("a key revoked on B still works on A: {other:?}"),
        }
    }

    // A request id used on A is honoured on B: the same answer, nothing written twice.
    let assign = pb::AssignNumberRequest {
        number: numbers[0].clone(),
        tenant_id: TENANT.into(),
        assignment_type: pb::AssignmentType::User.into(),
        sip_uri: "sip:first@twin.example".into(),
        request_id: ocx_client::new_request_id(),
        ..Default::default()
    };
    let first = platform_a
        .assign_number(assign.clone())
        .await
        .expect("assign on A");
    let retry = platform_b
        .assign_number(assign)
        .await
        .expect("the retry on B");
    assert_eq!(first, retry, "the retry on B answers as A did");
    assert_eq!(first.version, 2);
    platform_a
        .unassign_number(&numbers[0], TENANT)
        .await
        .expect("unassign");

    // Watchers and feeds on both replicas, from the start.
    let (target_events, events_target) = watch::channel(i64::MAX);
    let (target_records, records_target) = watch::channel(i64::MAX);
    let (stop_b_events, stop_events) = oneshot::channel();
    let (stop_b_records, stop_records) = oneshot::channel();
    let events_a = collect(
        carrier_a.follow_number_events(CARRIER, 0),
        event_entry,
        events_target.clone(),
        None,
    );
    let records_a = collect(
        carrier_a.follow_call_records(CARRIER, 0),
        record_entry,
        records_target.clone(),
        None,
    );
    let events_b = collect(
        carrier_b.follow_number_events(CARRIER, 0),
        event_entry,
        events_target.clone(),
        Some(stop_events),
    );
    let records_b = collect(
        carrier_b.follow_call_records(CARRIER, 0),
        record_entry,
        records_target.clone(),
        Some(stop_records),
    );

    // Writes through both at once: call records (a third of them sent to both), duration
    // reports, and number assignments (the last third of the numbers through both).
    let lines = Line::all(TENANT, &numbers);
    let mut generator = CallRecordGenerator::new(9, lines, 1_790_000_000);
    let mut batch =
        || -> Vec<pb::CallRecord> { (0..BATCH).map(|_| generator.next_record()).collect() };
    let shared: Vec<Vec<pb::CallRecord>> = (0..BATCHES / 3).map(|_| batch()).collect();
    let via_a: Vec<Vec<pb::CallRecord>> = (0..BATCHES - shared.len())
        .map(|_| batch())
        .chain(shared.clone())
        .collect();
    let via_b: Vec<Vec<pb::CallRecord>> = shared
        .iter()
        .cloned()
        .chain((0..BATCHES - shared.len()).map(|_| batch()))
        .collect();
    let reports_a: Vec<_> = via_a.iter().map(|b| reports_for(b)).collect();
    let reports_b: Vec<_> = via_b.iter().map(|b| reports_for(b)).collect();
    let third = (NUMBERS / 3) as usize;
    let (kill_tx, kill_rx) = oneshot::channel();
    let ingest_a = tokio::spawn(ingest(
        platform_a.clone(),
        stream::iter(via_a.clone()),
        None,
    ));
    // B's batches go out as the test releases them: KILL_AFTER first, two more just before
    // the kill (in flight when it comes), the rest never.
    let (release_b, released_b) = tokio::sync::mpsc::unbounded_channel();
    for batch in &via_b[..KILL_AFTER] {
        release_b.send(batch.clone()).expect("release");
    }
    let ingest_b = tokio::spawn(ingest(
        platform_b.clone(),
        tokio_stream::wrappers::UnboundedReceiverStream::new(released_b),
        Some((KILL_AFTER, kill_tx)),
    ));
    let report_a = tokio::spawn(report(carrier_a.clone(), reports_a.clone()));
    let report_b = tokio::spawn(report(carrier_b.clone(), reports_b.clone()));
    let churn_a = tokio::spawn(churn(
        platform_a.clone(),
        numbers[1..third]
            .iter()
            .chain(&numbers[2 * third..])
            .cloned()
            .collect(),
        3,
        watch::channel(0).0,
    ));
    let (progress_b, mut changes_b) = watch::channel(0);
    let churn_b = tokio::spawn(churn(
        platform_b.clone(),
        numbers[third..].to_vec(),
        1000,
        progress_b,
    ));

    // SIGKILL B in the middle of its streams.
    tokio::time::timeout(BOUND, kill_rx)
        .await
        .expect("B acknowledged batches")
        .expect("B's ingest told");
    tokio::time::timeout(BOUND, changes_b.wait_for(|n| *n >= CHANGES_BEFORE_KILL))
        .await
        .expect("B made number changes")
        .expect("B's changes");
    for batch in &via_b[KILL_AFTER..KILL_AFTER + 2] {
        release_b.send(batch.clone()).expect("release");
    }
    let mut b = replica_b.take().expect("B");
    b.0.kill().expect("SIGKILL B");
    b.0.wait().expect("reap B");
    let (acked_b, _) = ingest_b.await.expect("B's ingest");
    assert!(acked_b.len() >= KILL_AFTER);
    assert!(
        acked_b.len() < BATCHES,
        "B was killed before it acknowledged everything"
    );
    let reported_b = report_b.await.expect("B's reports");
    let churned_b = churn_b.await.expect("B's assignments");
    assert!(
        churned_b >= CHANGES_BEFORE_KILL,
        "B made number changes before it died"
    );

    // B's clients move to A: the feeds resume after the last sequence they saw, and the
    // writers resend everything (ingest and reports are idempotent; what B acknowledged must
    // come back unchanged).
    let _ = stop_b_events.send(());
    let _ = stop_b_records.send(());
    let mut events_b = events_b.await.expect("B's watcher");
    let mut records_b = records_b.await.expect("B's feed");
    let events_b_more = collect(
        carrier_a.follow_number_events(CARRIER, events_b.last().map_or(0, |s| s.0)),
        event_entry,
        events_target,
        None,
    );
    let records_b_more = collect(
        carrier_a.follow_call_records(CARRIER, records_b.last().map_or(0, |s| s.0)),
        record_entry,
        records_target,
        None,
    );
    let acked_again: Vec<Vec<pb::CallRecord>> = acked_b.iter().map(|i| via_b[*i].clone()).collect();
    let (_, created_again) = ingest(platform_a.clone(), stream::iter(acked_again), None).await;
    assert_eq!(
        created_again, 0,
        "what B acknowledged is stored: resending it creates nothing"
    );
    let unacked: Vec<Vec<pb::CallRecord>> = (0..via_b.len())
        .filter(|i| !acked_b.contains(i))
        .map(|i| via_b[i].clone())
        .collect();
    let resent = ingest(platform_a.clone(), stream::iter(unacked.clone()), None).await;
    assert_eq!(
        resent.0.len(),
        unacked.len(),
        "A takes B's unacknowledged batches"
    );
    let unreported: Vec<_> = (0..reports_b.len())
        .filter(|i| !reported_b.contains(i))
        .map(|i| reports_b[i].clone())
        .collect();
    assert_eq!(
        report(carrier_a.clone(), unreported.clone()).await.len(),
        unreported.len()
    );
    let (acked_a, _) = ingest_a.await.expect("A's ingest");
    assert_eq!(acked_a.len(), via_a.len(), "A acknowledged all its batches");
    assert_eq!(report_a.await.expect("A's reports").len(), reports_a.len());
    churn_a.await.expect("A's assignments");

    // Every write is done: the database's heads are the followers' targets.
    let events = stored(&url, STORED_EVENTS, CARRIER).await;
    let records = stored(&url, STORED_RECORDS, CARRIER).await;
    eprintln!(
        "{} number events, {} feed entries; B acknowledged {} of {BATCHES} ingest batches and {} \
         number changes before SIGKILL; B's watcher had seen {} events, its feed {} records",
        events.len(),
        records.len(),
        acked_b.len(),
        churned_b,
        events_b.len(),
        records_b.len()
    );
    assert_gapless("number events in the database", &events);
    assert_gapless("the call-record feed in the database", &records);
    let _ = target_events.send(events.len() as i64);
    let _ = target_records.send(records.len() as i64);
    let within = |task: tokio::task::JoinHandle<Seen>| async move {
        tokio::time::timeout(BOUND, task)
            .await
            .expect("a follower reached the head")
            .expect("follower")
    };
    let events_a = within(events_a).await;
    let records_a = within(records_a).await;
    events_b.extend(within(events_b_more).await);
    records_b.extend(within(records_b_more).await);
    // Number events carry the number; compare sequences and numbers both.
    for (what, seen) in [
        ("A's watcher", &events_a),
        ("B's watcher, then A", &events_b),
    ] {
        assert_eq!(
            seen, &events,
            "{what} saw exactly the database's events, once each, in order"
        );
    }
    for (what, seen) in [("A's feed", &records_a), ("B's feed, then A", &records_b)] {
        assert_eq!(
            seen, &records,
            "{what} saw exactly the database's feed, once each, in order"
        );
    }

    // Every record and report sent is stored once.
    let call_ids: BTreeMap<String, usize> = records.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.1.clone()).or_default() += 1;
        m
    });
    let sent: BTreeSet<String> = via_a
        .iter()
        .chain(&via_b)
        .flatten()
        .map(|r| r.call_id.clone())
        .collect();
    assert_eq!(call_ids.keys().cloned().collect::<BTreeSet<_>>(), sent);
    assert!(call_ids.values().all(|n| *n == 1), "each call stored once");
    let report_ids: Vec<String> = carrier_a
        .call_durations(pb::ListCallDurationsRequest {
            carrier_id: CARRIER.into(),
            page_size: 1000,
            ..Default::default()
        })
        .map_ok(|d| d.record_id)
        .try_collect()
        .await
        .expect("list reports");
    let unique: BTreeSet<String> = report_ids.iter().cloned().collect();
    assert_eq!(unique.len(), report_ids.len(), "each report stored once");
    assert_eq!(
        unique,
        sent.iter()
            .map(|c| format!("report-{c}"))
            .collect::<BTreeSet<_>>()
    );
}

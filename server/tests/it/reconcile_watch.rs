//! WatchReconciliation end to end, on both backends: writers (the platform ingesting and
//! revising records, the carrier reporting and correcting durations, a tenant erased midway)
//! run while a follower reads the feed and disconnects at random moments, resuming each time
//! from the last sequence it applied; another follows through the SDK's resuming follower. No
//! change arrives twice or out of order, and once the follower has seen a change committed
//! after every write, its view equals a replay from 0 and holds exactly the calls that
//! ListDiscrepancies lists, with the summary's matched count.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use ocx_client::{Client, ReconciliationView, pb};
use ocx_server::store::Store;
use ocx_server::store::postgres::{PgOptions, PgStore};
use ocx_server::store::sqlite::SqliteStore;
use ocx_testkit::postgres::TestPostgres;
use ocx_testkit::{at, call, carrier, consent, ingest, provision, report, tenant};

/// Start of the calls (2024-03-01T00:00:00Z).
const T0: i64 = 1_709_251_200;
/// Record batches the platform ingests (each 40 records, some revising earlier ones).
const BATCHES: usize = 30;
/// The watch's tolerance: 1 s.
const TOLERANCE_US: i64 = 1_000_000;

/// A small deterministic generator (the test needs no crate for it).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Serves `store` on a loopback port; its platform key, endpoint and the stop switch.
async fn serve(
    store: Arc<dyn Store>,
) -> (
    String,
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let key = ocx_server::bootstrap::ensure_platform_key(store.as_ref(), None)
        .await
        .expect("bootstrap")
        .expect("a fresh store has no platform key");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let config = ocx_server::Config {
        limits: ocx_server::limits::Limits {
            rate_per_second: 1e9,
            rate_burst: 1e9,
            address_rate_per_second: 1e9,
            address_rate_burst: 1e9,
            ..Default::default()
        },
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(ocx_server::run_with(listener, store, config, async move {
        let _ = stopped.await;
    }));
    (key, endpoint, stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_disconnects_at_random_sees_every_change_once_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("ocx.db")).expect("store");
    follow_while_writing(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_disconnects_at_random_sees_every_change_once_postgres() {
    let Some(server) = TestPostgres::from_env() else {
        return;
    };
    let url = server.fresh_schema("reconcile_watch").await;
    let store = PgStore::connect(&url, PgOptions::default())
        .await
        .expect("connect");
    follow_while_writing(Arc::new(store)).await;
}

/// A follower's entry key: whose entry, and its key.
type Key = (i32, String);

/// The comparable content of an entry: state, call id, correlation id, record id, start time
/// (seconds), platform and carrier durations (µs).
type Content = (i32, String, String, String, i64, Option<i64>, Option<i64>);

fn micros(d: &Option<prost_types::Duration>) -> Option<i64> {
    d.as_ref()
        .map(|d| d.seconds * 1_000_000 + i64::from(d.nanos) / 1000)
}

fn content(c: &pb::ReconciliationChange) -> Content {
    (
        c.state,
        c.call_id.clone(),
        c.correlation_id.clone(),
        c.record_id.clone(),
        c.start_time.as_ref().map_or(0, |t| t.seconds),
        micros(&c.platform_duration),
        micros(&c.carrier_duration),
    )
}

/// A view as comparable contents.
fn contents(view: &ReconciliationView) -> BTreeMap<Key, Content> {
    view.entries()
        .map(|c| {
            let key = if c.entry() == pb::ReconciliationEntry::CarrierReport {
                c.record_id.clone()
            } else {
                c.call_id.clone()
            };
            ((c.entry, key), content(c))
        })
        .collect()
}

async fn follow_while_writing(store: Arc<dyn Store>) {
    let (key, endpoint, stop, task) = serve(store).await;
    let platform = Client::connect(endpoint, key).await.expect("connect");
    let acme = carrier(&platform, "watch-tel").await;
    let (t1, t2) = (tenant(71), tenant(72));
    consent(&platform, "watch-tel", &t1).await;
    consent(&platform, "watch-tel", &t2).await;
    let (n1, n2) = ("+442079461001".to_owned(), "+442079462002".to_owned());
    provision(&acme.client, &t1, std::slice::from_ref(&n1)).await;
    provision(&acme.client, &t2, std::slice::from_ref(&n2)).await;

    // The resuming follower of the SDK, from 0, for the whole run.
    let sdk_view = {
        let client = acme.client.clone();
        tokio::spawn(async move {
            let mut view = ReconciliationView::new();
            let mut changes = std::pin::pin!(client.follow_reconciliation("", 0, None));
            while let Some(change) = changes.next().await {
                let change = change.expect("the SDK follower failed");
                let sentinel = change.call_id == "sentinel";
                view.apply(change);
                if sentinel {
                    return view;
                }
            }
            panic!("the SDK follower ended");
        })
    };

    // The platform: batches of records, later batches revising some earlier calls (another
    // duration, another correlation id); tenant 2's calls too.
    let records = {
        let platform = platform.clone();
        let (t1, t2, n1, n2) = (t1.clone(), t2.clone(), n1.clone(), n2.clone());
        tokio::spawn(async move {
            let mut rng = Lcg(7);
            // Call n (tenant 2's every fifth), lasting `seconds`, with correlation id `k`.
            let record = |n: usize, seconds: i64, k: u64| {
                let (t, number) = if n.is_multiple_of(5) {
                    (&t2, &n2)
                } else {
                    (&t1, &n1)
                };
                let start = T0 + n as i64 * 60;
                let mut r = call(
                    &format!("c{n}"),
                    pb::CallDirection::Outbound,
                    number,
                    "+33142685300",
                    t,
                    start,
                );
                r.correlation_id = format!("k{k}");
                r.end_time = at(start + seconds);
                r.duration = Some(prost_types::Duration { seconds, nanos: 0 });
                r
            };
            for b in 0..BATCHES {
                let mut batch: Vec<pb::CallRecord> = (0..40)
                    .map(|i| b * 40 + i)
                    .map(|n| record(n, 60, n as u64 % 97))
                    .collect();
                if b > 0 {
                    // A revision of an earlier call: another duration and correlation id.
                    let n = rng.below((b * 40) as u64) as usize;
                    let k = rng.below(97);
                    let mut r = record(n, 30 + rng.below(60) as i64, k);
                    r.version = 2 + b as i64;
                    batch.push(r);
                }
                let ack = ingest(&platform, batch).await;
                assert!(
                    ack.results
                        .iter()
                        .all(|r| r.status != pb::ItemStatus::Rejected as i32)
                );
            }
        })
    };
    // The carrier: reports by call id or by correlation id, some off by more than the
    // tolerance, some for calls the platform never had, and corrections moving a report to
    // another call.
    let reports = {
        let client = acme.client.clone();
        tokio::spawn(async move {
            let mut rng = Lcg(11);
            for b in 0..BATCHES {
                let mut batch = Vec::new();
                for i in 0..30 {
                    let n = (b * 40 + i) as i64;
                    let duration = 60_000_000 + [0, 500_000, 3_000_000][rng.below(3) as usize];
                    let by_call = rng.below(3) > 0;
                    let (call_id, correlation_id) = if n % 13 == 0 {
                        (String::new(), format!("unknown-{n}"))
                    } else if by_call {
                        (format!("c{n}"), String::new())
                    } else {
                        (String::new(), format!("k{}", n % 97))
                    };
                    batch.push(report(
                        &format!("r{n}"),
                        &call_id,
                        &correlation_id,
                        T0 + n * 60,
                        duration,
                    ));
                }
                if b > 1 {
                    // A correction: an earlier report now names another call.
                    let n = rng.below((b * 40) as u64 - 40) as i64;
                    let moved = rng.below((b * 40) as u64);
                    batch.push(report(
                        &format!("r{n}"),
                        &format!("c{moved}"),
                        "",
                        T0 + moved as i64 * 60,
                        61_000_000,
                    ));
                }
                client
                    .report_call_durations("", batch)
                    .await
                    .expect("report");
            }
        })
    };
    // Tenant 2 erased once its last record is in, while the carrier still reports.
    let erase = {
        let platform = platform.clone();
        let t2 = t2.clone();
        tokio::spawn(async move {
            records.await.expect("records");
            platform.erase_tenant_data(&t2).await.expect("erase");
        })
    };

    // The follower that disconnects: each connection reads a random number of changes (or
    // until the sentinel), then is dropped; the next resumes after the last sequence applied.
    let follower = {
        let client = acme.client.clone();
        tokio::spawn(async move {
            let mut rng = Lcg(3);
            let mut view = ReconciliationView::new();
            let (mut connections, mut applied) = (0, 0);
            loop {
                connections += 1;
                let request = pb::WatchReconciliationRequest {
                    carrier_id: String::new(),
                    after_sequence: view.last_sequence(),
                    tolerance: None,
                };
                let mut stream = client
                    .watch_reconciliation(request)
                    .await
                    .expect("open the watch");
                // Disconnects after this many changes, dropping the rest of that message: the
                // next connection resumes after the last change applied.
                let mut take = 1 + rng.below(40);
                'connection: loop {
                    let Some(message) = stream.next().await else {
                        panic!("the watch ended");
                    };
                    let message = message.expect("the watch failed");
                    assert!(!message.changes.is_empty(), "an empty message");
                    for change in message.changes {
                        assert!(
                            change.sequence > view.last_sequence(),
                            "sequence {} after {}: a repeat or out of order",
                            change.sequence,
                            view.last_sequence()
                        );
                        let sentinel = change.call_id == "sentinel";
                        view.apply(change);
                        applied += 1;
                        if sentinel {
                            return (view, connections, applied);
                        }
                        take -= 1;
                        if take == 0 {
                            break 'connection;
                        }
                    }
                }
            }
        })
    };

    reports.await.expect("reports");
    erase.await.expect("erase");
    // The sentinel: a record committed after every other write, so a follower that has seen
    // it has seen everything before it.
    let sentinel = call(
        "sentinel",
        pb::CallDirection::Outbound,
        &n1,
        "+33142685300",
        &t1,
        T0,
    );
    ingest(&platform, vec![sentinel]).await;
    let (view, connections, applied) = follower.await.expect("follower");
    let sdk_view = sdk_view.await.expect("sdk follower");
    assert!(
        connections > 3,
        "the follower reconnected only {connections} times"
    );

    // A replay from 0 gives the same view; so does the SDK's follower.
    let mut replay = ReconciliationView::new();
    {
        let mut changes = std::pin::pin!(acme.client.follow_reconciliation("", 0, None));
        while let Some(change) = changes.next().await {
            let change = change.expect("replay");
            let sentinel = change.call_id == "sentinel";
            replay.apply(change);
            if sentinel {
                break;
            }
        }
    }
    assert_eq!(
        contents(&view),
        contents(&replay),
        "the follower differs from a replay"
    );
    assert_eq!(
        contents(&view),
        contents(&sdk_view),
        "the SDK follower differs"
    );
    assert!(
        applied > contents(&view).len(),
        "no change was superseded or removed: the test wrote too little"
    );

    // The view's disagreements are what ListDiscrepancies lists over every period.
    let listed: Vec<pb::Discrepancy> = {
        let all = acme.client.discrepancies(pb::ListDiscrepanciesRequest {
            start_time: at(T0 - 86_400),
            end_time: at(T0 + 30 * 86_400),
            tolerance: Some(prost_types::Duration {
                seconds: TOLERANCE_US / 1_000_000,
                nanos: 0,
            }),
            ..Default::default()
        });
        futures_util::TryStreamExt::try_collect(all)
            .await
            .expect("discrepancies")
    };
    let state_of = |kind: i32| match pb::DiscrepancyKind::try_from(kind) {
        Ok(pb::DiscrepancyKind::Mismatched) => pb::ReconciliationState::Mismatched,
        Ok(pb::DiscrepancyKind::MissingOnCarrier) => pb::ReconciliationState::MissingOnCarrier,
        _ => pb::ReconciliationState::MissingOnPlatform,
    };
    let mut expected: Vec<Content> = listed
        .iter()
        .map(|d| {
            (
                state_of(d.kind) as i32,
                d.call_id.clone(),
                d.correlation_id.clone(),
                d.record_id.clone(),
                d.start_time.as_ref().map_or(0, |t| t.seconds),
                micros(&d.platform_duration),
                micros(&d.carrier_duration),
            )
        })
        .collect();
    let mut seen: Vec<Content> = view.discrepancies().map(content).collect();
    expected.sort();
    seen.sort();
    assert!(
        !seen.is_empty(),
        "no discrepancy at all: the test planted none"
    );
    assert_eq!(
        seen, expected,
        "the follower's disagreements differ from ListDiscrepancies"
    );
    let summary = acme
        .client
        .get_reconciliation_summary(pb::GetReconciliationSummaryRequest {
            start_time: at(T0 - 86_400),
            end_time: at(T0 + 30 * 86_400),
            ..Default::default()
        })
        .await
        .expect("summary");
    let matched = view
        .entries()
        .filter(|c| c.state() == pb::ReconciliationState::Matched)
        .count();
    assert_eq!(matched as i64, summary.matched_count);
    // Tenant 2's records are gone from the view: erased after the last of them was ingested.
    let tenant_2 = |c: &pb::ReconciliationChange| {
        c.entry() == pb::ReconciliationEntry::PlatformRecord
            && c.call_id[1..]
                .parse::<usize>()
                .is_ok_and(|n: usize| n.is_multiple_of(5))
    };
    assert!(
        !view.entries().any(tenant_2),
        "an erased tenant's record is still in the view"
    );

    // Live: a follower that has caught up hears of a report's disagreement as soon as it is
    // committed (the report's commit wakes it; nothing else is written meanwhile). It has seen
    // a record ingested first, so it is waiting for the next commit when the report lands.
    let mut live = std::pin::pin!(acme.client.follow_reconciliation(
        "",
        view.last_sequence(),
        None
    ));
    let mut wake = call(
        "wake",
        pb::CallDirection::Outbound,
        &n1,
        "+33142685300",
        &t1,
        T0,
    );
    wake.correlation_id = "wake@sbc".into();
    ingest(&platform, vec![wake]).await;
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), live.next())
        .await
        .expect("the record's change did not arrive")
        .expect("the follower ended")
        .expect("the follower failed");
    assert_eq!(first.call_id, "wake");
    acme.client
        .report_call_durations("", vec![report("late", "sentinel", "", T0, 99_000_000)])
        .await
        .expect("report");
    let change = tokio::time::timeout(std::time::Duration::from_secs(30), live.next())
        .await
        .expect("the report's change did not arrive")
        .expect("the follower ended")
        .expect("the follower failed");
    assert_eq!(
        (
            change.call_id.as_str(),
            change.record_id.as_str(),
            change.state()
        ),
        ("sentinel", "late", pb::ReconciliationState::Mismatched)
    );

    let _ = stop.send(());
    task.await.expect("join").expect("server");
}

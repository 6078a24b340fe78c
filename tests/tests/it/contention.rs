//! A bounded contention soak: writers (two ingest streams, a duration uploader, number uploads
//! and releases) and readers (pages, point reads, a feed follower, reconciliation summaries)
//! at once. No call fails: SQLite's BUSY never reaches a client. The write-ahead log stays
//! bounded while much more than its bound is written: checkpoints keep up under load.

use futures_util::{StreamExt, TryStreamExt, stream};
use ocx_client::{DurationUploader, pb};
use ocx_testkit::sample::{CallRecordGenerator, Line};
use ocx_testkit::{TestServer, carrier, consent, numbers, provision, tenant};

/// Records per ingest stream (two streams).
const RECORDS: usize = 30_000;
/// The WAL may not grow past this: the writer restarts it past 4 MiB when readers let it, and
/// past 16 MiB waits for them; one more group commit can land meanwhile.
const WAL_BOUND: u64 = 24 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_and_readers_together_never_see_busy_and_the_wal_stays_bounded() {
    let server = TestServer::start_with(ocx_server::Config {
        limits: ocx_server::limits::Limits {
            rate_per_second: 1e9,
            rate_burst: 1e9,
            address_rate_per_second: 1e9,
            address_rate_burst: 1e9,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let platform = server.platform().await;
    let a = carrier(&platform, "soak-tel").await;
    let t = tenant(1);
    consent(&platform, "soak-tel", &t).await;
    let lines_numbers = numbers("+4420797", 0, 50);
    provision(&a.client, &t, &lines_numbers).await;
    let lines: Vec<Line> = Line::all(&t, &lines_numbers);
    let wal = server.db_path.with_extension("db-wal");
    let wal_size = move || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);

    // Writers. Each ingest acknowledgement also samples the WAL's size.
    let ingest = |seed: u64| {
        let (platform, lines, wal_size) = (platform.clone(), lines.clone(), wal_size.clone());
        tokio::spawn(async move {
            let records: Vec<Vec<pb::CallRecord>> = {
                let mut generator = CallRecordGenerator::new(seed, lines, 1_790_000_000);
                (0..RECORDS / 200)
                    .map(|_| (0..200).map(|_| generator.next_record()).collect())
                    .collect()
            };
            let acks = platform
                .ingest_call_records(stream::iter(records))
                .await
                .expect("open ingest");
            let mut acks = std::pin::pin!(acks);
            let (mut created, mut max_wal) = (0, 0);
            while let Some(ack) = acks.next().await {
                created += ack.expect("an ingest batch failed").created_count;
                max_wal = max_wal.max(wal_size());
            }
            assert_eq!(created as usize, RECORDS);
            max_wal
        })
    };
    let ingests = [ingest(1), ingest(2)];
    let uploads = {
        let client = a.client.clone();
        let reports: Vec<((), Vec<pb::CallDurationReport>)> = (0..20)
            .map(|b| {
                let batch = (0..250)
                    .map(|i| {
                        ocx_testkit::report(
                            &format!("soak-{b}-{i}"),
                            "",
                            &format!("corr-{b}-{i}"),
                            1_790_000_000 + i,
                            60_000_000,
                        )
                    })
                    .collect();
                ((), batch)
            })
            .collect();
        tokio::spawn(async move {
            DurationUploader::new(&client, "")
                .run(stream::iter(reports), |(), _| {})
                .await
                .expect("duration upload")
        })
    };
    let churn = {
        let client = a.client.clone();
        let t = t.clone();
        tokio::spawn(async move {
            for round in 0..30 {
                let extra = numbers("+4420798", round * 10, 10);
                provision(&client, &t, &extra).await;
                let released = client
                    .release_numbers(pb::ReleaseNumbersRequest {
                        request_id: String::new(),
                        carrier_id: String::new(),
                        numbers: extra,
                    })
                    .await
                    .expect("release");
                assert_eq!(released.results.len(), 10);
            }
        })
    };

    // Readers, until the writers are done.
    let (done_tx, done) = tokio::sync::watch::channel(false);
    let reader = |kind: u32| {
        let (client, lines_numbers, mut done) =
            (a.client.clone(), lines_numbers.clone(), done.clone());
        tokio::spawn(async move {
            let mut reads = 0_u32;
            while !*done.borrow_and_update() {
                match kind {
                    0 => {
                        let n = &lines_numbers[reads as usize % lines_numbers.len()];
                        client.get_number("", n).await.expect("get number");
                    }
                    1 => {
                        client
                            .list_call_records(pb::ListCallRecordsRequest {
                                page_size: 500,
                                ..Default::default()
                            })
                            .await
                            .expect("list call records");
                    }
                    _ => {
                        client
                            .get_reconciliation_summary(pb::GetReconciliationSummaryRequest {
                                start_time: ocx_testkit::at(1_789_990_000),
                                end_time: ocx_testkit::at(1_789_990_000 + 360 * 86_400),
                                ..Default::default()
                            })
                            .await
                            .expect("reconciliation summary");
                    }
                }
                reads += 1;
            }
            reads
        })
    };
    let readers = [reader(0), reader(0), reader(1), reader(2)];
    let follower = {
        let feed = a.client.follow_call_records("", 0);
        tokio::spawn(async move {
            feed.take(2 * RECORDS)
                .map_ok(|r| r.feed_sequence)
                .try_collect::<Vec<i64>>()
                .await
                .expect("the feed")
        })
    };

    let mut max_wal = 0;
    for ingest in ingests {
        max_wal = max_wal.max(ingest.await.expect("ingest task"));
    }
    let uploaded = uploads.await.expect("upload task");
    churn.await.expect("churn task");
    done_tx.send(true).expect("stop readers");
    let mut reads = 0;
    for reader in readers {
        reads += reader.await.expect("reader task");
    }
    let sequences = follower.await.expect("follower task");

    assert_eq!(uploaded.created, 5000);
    assert_eq!(
        sequences,
        (1..=2 * RECORDS as i64).collect::<Vec<_>>(),
        "the feed saw every record once, in order"
    );
    let db_size = std::fs::metadata(&server.db_path).expect("db").len();
    eprintln!(
        "{reads} reads alongside the writes; database {} KiB, largest WAL seen {} KiB",
        db_size >> 10,
        max_wal >> 10
    );
    assert!(
        db_size > WAL_BOUND,
        "the soak must write more than the WAL bound for the bound to mean anything"
    );
    assert!(
        max_wal <= WAL_BOUND,
        "the WAL grew to {max_wal} bytes, past {WAL_BOUND}"
    );
}

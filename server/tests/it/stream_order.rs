//! One upload stream whose batches carry several versions of the same calls (and duplicates,
//! within a batch and across batches) is answered item by item in batch order, as if each
//! batch were sent alone, on SQLite and on PostgreSQL (where batches of one stream commit side
//! by side, so a later revision could otherwise overtake an earlier one and make it stale).

use crate::OCX_SERVER;
use futures_util::{TryStreamExt, stream};
use ocx_client::{Client, pb};
use ocx_testkit::postgres::TestPostgres;
use ocx_testkit::process::key;
use ocx_testkit::{TestServer, call, carrier, report, tenant};

const CARRIER: &str = "order-tel";
/// Batches in the stream: more than the batches a stream keeps in flight (8).
const BATCHES: i64 = 12;

/// Batch `i` (from 1): version `i` of calls o-1 and o-2 and an exact duplicate of o-1's.
fn batch(i: i64) -> Vec<pb::CallRecord> {
    let version = |id: &str| {
        let mut r = call(
            id,
            pb::CallDirection::Outbound,
            "+442079460001",
            "+33142685300",
            &tenant(1),
            1_790_000_000,
        );
        r.carrier_id = CARRIER.into();
        r.version = i;
        r.final_sip_phrase = format!("version {i}");
        r
    };
    vec![version("o-1"), version("o-2"), version("o-1")]
}

/// Sends the batches on one stream, reports on another, and checks every answer.
async fn answers_follow_batch_order(platform: &Client) {
    carrier(platform, CARRIER).await;
    let acks: Vec<pb::IngestCallRecordsResponse> = platform
        .ingest_call_records(stream::iter((1..=BATCHES).map(batch)))
        .await
        .expect("open")
        .try_collect()
        .await
        .expect("every batch acknowledged");
    let (created, revised, unchanged) = (
        pb::ItemStatus::Created as i32,
        pb::ItemStatus::Revised as i32,
        pb::ItemStatus::Unchanged as i32,
    );
    for (i, ack) in acks.iter().enumerate() {
        let statuses: Vec<i32> = ack.results.iter().map(|r| r.status).collect();
        let first = if i == 0 { created } else { revised };
        assert_eq!(
            statuses,
            [first, first, unchanged],
            "batch {}: {:?}",
            i + 1,
            ack.results
        );
    }
    assert_eq!(acks.len() as i64, BATCHES);
    let stored = platform
        .get_call_record(CARRIER, "o-1")
        .await
        .expect("stored");
    assert_eq!(stored.version, BATCHES);

    // Duration reports: each batch corrects the same record ids.
    let reports = (1..=BATCHES).map(|i| {
        vec![
            report("r-1", "o-1", "", 1_790_000_000, i * 1_000_000),
            report("r-1", "o-1", "", 1_790_000_000, i * 1_000_000),
        ]
    });
    let results: Vec<Vec<i32>> = platform
        .upload_call_durations(CARRIER, stream::iter(reports))
        .await
        .expect("open")
        .map_ok(|ack| ack.results.iter().map(|r| r.status).collect())
        .try_collect()
        .await
        .expect("every batch acknowledged");
    let corrected = pb::ItemStatus::Corrected as i32;
    for (i, statuses) in results.iter().enumerate() {
        let first = if i == 0 { created } else { corrected };
        assert_eq!(statuses, &[first, unchanged], "report batch {}", i + 1);
    }
}

#[tokio::test]
async fn sqlite_answers_a_streams_versions_in_batch_order() {
    let server = TestServer::start().await;
    answers_follow_batch_order(&server.platform().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_answers_a_streams_versions_in_batch_order() {
    let Some(pg) = TestPostgres::from_env() else {
        return;
    };
    let url = pg.fresh_schema("order").await;
    let dir = tempfile::tempdir().expect("dir");
    let (_server, endpoint, _) =
        OCX_SERVER.start_configured(dir.path(), &["--database", url.as_str()], &[]);
    let platform = Client::connect(endpoint, key(&dir.path().join("platform.key")))
        .await
        .expect("connect");
    answers_follow_batch_order(&platform).await;
}

//! Graceful shutdown of the real binary on SIGTERM, with a feed follower, a call-record ingest
//! and a duration uploader running. The process exits by itself, well within its shutdown
//! timeout. The ingest stream ends with UNAVAILABLE. Nothing acknowledged is lost. When the
//! server starts again on the same port, the SDK's follower and uploader carry on by
//! themselves: every record reaches the follower exactly once, in order and without gaps, and
//! every report is stored once.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::OCX_SERVER;
use futures_util::StreamExt;
use ocx_client::{Client, DurationUploader, pb};
use ocx_testkit::process::{key, sigterm_and_wait};
use ocx_testkit::sample::{CallRecordGenerator, Line, report_for};
use ocx_testkit::{call_ids, seed_carrier};
use tonic::Code;

const TENANT: &str = "1b2c3d4e-0000-4000-8000-000000000003";
const CARRIER: &str = "term-tel";
/// Bounds the waits below, so that a hang fails the test instead of stalling it.
const BOUND: Duration = Duration::from_secs(60);

/// `n` generated records in batches of 100.
fn batches(lines: &[Line], seed: u64, n: usize) -> Vec<Vec<pb::CallRecord>> {
    let records: Vec<pb::CallRecord> =
        CallRecordGenerator::new(seed, lines.to_vec(), 1_790_000_000)
            .take(n)
            .collect();
    records.chunks(100).map(<[_]>::to_vec).collect()
}

#[tokio::test]
async fn sigterm_drains_and_clients_resume_after_the_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, endpoint) = OCX_SERVER.start(dir.path(), false);
    let port = endpoint.rsplit(':').next().expect("port").to_owned();
    let platform = Client::connect(endpoint.clone(), key(&dir.path().join("platform.key")))
        .await
        .expect("connect");
    let (carrier_key, numbers) = seed_carrier(&platform, CARRIER, TENANT, "+4420796", 20).await;
    let carrier = platform.with_key(carrier_key).expect("carrier client");
    let lines: Vec<Line> = Line::all(TENANT, &numbers);

    // The carrier follows the feed from the start, through the restart; what it gets comes
    // here.
    let (delivered_tx, mut delivered) = tokio::sync::mpsc::unbounded_channel();
    let follower = {
        let feed = carrier.follow_call_records("", 0);
        tokio::spawn(async move {
            let mut feed = std::pin::pin!(feed);
            while let Some(record) = feed.next().await {
                let record = record.expect("the follower never gives up on UNAVAILABLE");
                if delivered_tx.send(record).is_err() {
                    return;
                }
            }
        })
    };

    // The carrier uploads duration reports through a channel: five batches before the signal,
    // five after the restart.
    let (reports_tx, reports_rx) = tokio::sync::mpsc::channel(16);
    let uploader = {
        let carrier = carrier.clone();
        tokio::spawn(async move {
            DurationUploader::new(&carrier, "")
                .run(
                    tokio_stream::wrappers::ReceiverStream::new(reports_rx),
                    |(), _| {},
                )
                .await
        })
    };
    let report_batches: Vec<Vec<pb::CallDurationReport>> = batches(&lines, 5, 1000)
        .into_iter()
        .enumerate()
        .map(|(b, batch)| {
            batch
                .into_iter()
                .enumerate()
                .map(|(i, r)| report_for(&r, format!("term-{b}-{i}")))
                .collect()
        })
        .collect();
    for batch in &report_batches[..5] {
        reports_tx.send(((), batch.clone())).await.expect("queue");
    }

    // The platform ingests call records on one stream that never runs dry: only the server's
    // shutdown ends it.
    let mut generator = CallRecordGenerator::new(9, lines.clone(), 1_790_000_000);
    let sent: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let endless = {
        let sent = Arc::clone(&sent);
        futures_util::stream::iter(std::iter::from_fn(move || {
            let batch: Vec<pb::CallRecord> = (0..100).map(|_| generator.next_record()).collect();
            sent.lock()
                .expect("sent")
                .push(batch.iter().map(|r| r.call_id.clone()).collect());
            Some(batch)
        }))
    };
    let mut acks = Box::pin(platform.ingest_call_records(endless).await.expect("ingest"));
    let mut acknowledged = BTreeSet::new();
    let record_ack = |acknowledged: &mut BTreeSet<String>, ack: pb::IngestCallRecordsResponse| {
        assert_eq!(ack.rejected_count, 0);
        acknowledged.extend(sent.lock().expect("sent")[(ack.batch_id - 1) as usize].clone());
    };
    for _ in 0..10 {
        record_ack(
            &mut acknowledged,
            acks.next().await.expect("ack").expect("ack"),
        );
    }

    // SIGTERM, as a service manager sends it; the process should exit by itself.
    let exit = tokio::spawn(sigterm_and_wait(server, BOUND));
    let ended = loop {
        match tokio::time::timeout(BOUND, acks.next())
            .await
            .expect("the ingest ends")
        {
            Some(Ok(ack)) => record_ack(&mut acknowledged, ack),
            Some(Err(e)) => break Some(e),
            None => break None,
        }
    };
    let ended = ended.expect("the ingest stream ends with a status, not as if complete");
    assert_eq!(ended.code(), Some(Code::Unavailable), "{ended:?}");
    drop(acks);
    let (status, took) = exit.await.expect("join");
    assert!(status.success(), "a graceful exit is a success: {status}");
    assert!(
        took < Duration::from_secs(30),
        "exited {took:?} after SIGTERM, past the 30 s shutdown timeout"
    );
    eprintln!(
        "exited {took:?} after SIGTERM; {} records acknowledged",
        acknowledged.len()
    );

    // Start again on the same port; the clients reconnect on their own.
    let (_server, endpoint, _log) =
        OCX_SERVER.start_configured(dir.path(), &["--listen", &format!("127.0.0.1:{port}")], &[]);
    let platform = Client::connect(endpoint, key(&dir.path().join("platform.key")))
        .await
        .expect("reconnect");
    for batch in &report_batches[5..] {
        reports_tx.send(((), batch.clone())).await.expect("queue");
    }
    drop(reports_tx);
    let totals = tokio::time::timeout(BOUND, uploader)
        .await
        .expect("the uploader finishes")
        .expect("join")
        .expect("the uploader resumed across the restart");
    assert_eq!(totals.rejected, 0);
    assert_eq!(totals.created + totals.unchanged, 1000, "{totals:?}");
    let stored_reports = platform
        .list_call_durations(pb::ListCallDurationsRequest {
            carrier_id: CARRIER.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("reports");
    assert_eq!(
        stored_reports.call_durations.len(),
        1000,
        "each report once"
    );

    // Every acknowledged record is stored, once.
    let stored = call_ids(&platform, CARRIER).await;
    let unique: BTreeSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "a record stored twice");
    for id in &acknowledged {
        assert!(unique.contains(id), "acknowledged record {id} lost");
    }

    // The follower gets every stored record exactly once, in feed order, without a gap.
    let mut sequences = Vec::new();
    while sequences.len() < stored.len() {
        let record = tokio::time::timeout(BOUND, delivered.recv())
            .await
            .expect("the follower caught up after the restart")
            .expect("the follower is running");
        sequences.push(record.feed_sequence);
    }
    follower.abort();
    let expected: Vec<i64> = (1..=stored.len() as i64).collect();
    assert_eq!(sequences, expected, "gapless and in order, each once");
}

/// A stream the client never ends (here a reflection stream, as a debugging tool might hold
/// open) cannot keep the process alive past `--shutdown-timeout`: it exits, with status 1 to
/// say the drain was cut short.
#[tokio::test]
async fn a_stream_held_open_cannot_keep_the_process_past_its_shutdown_timeout() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, server_reflection_request};

    let dir = tempfile::tempdir().expect("temp dir");
    let (server, endpoint, log) =
        OCX_SERVER.start_configured(dir.path(), &["--shutdown-timeout", "1s"], &[]);
    let channel = tonic::transport::Endpoint::from_shared(endpoint)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let (requests, rx) = tokio::sync::mpsc::channel(1);
    requests
        .send(ServerReflectionRequest {
            host: String::new(),
            message_request: Some(server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        })
        .await
        .expect("queue");
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("reflection stream")
        .into_inner();
    answers
        .message()
        .await
        .expect("an answer")
        .expect("the stream is open");

    let (status, took) = sigterm_and_wait(server, BOUND).await;
    assert_eq!(status.code(), Some(1), "the drain was cut short: {status}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "exited {took:?} after SIGTERM with a 1 s shutdown timeout"
    );
    drop(requests);
    let lines = log.join().expect("log");
    assert!(
        lines.iter().any(|l| l.contains("shutdown timeout")),
        "the log says why"
    );
}

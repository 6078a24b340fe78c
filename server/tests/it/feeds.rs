//! Bounded memory for the feeds and the upload streams of the real binary:
//!
//! - a feed holds at most `--feed-buffer-bytes` for a client that reads nothing, so fifty such
//!   clients cost the server about fifty budgets, not fifty replays (the process's RSS);
//! - a feed whose client takes nothing for `--stall-timeout` is ended: the client, reading
//!   again, gets what was already on its way and then UNAVAILABLE, and the SDK's followers
//!   (call records and number events) resume after it with no gap and no repeat;
//! - the budget only paces a client that reads: under a tiny budget every record and event
//!   arrives once, in sequence order;
//! - an upload under a tiny `--upload-buffer-bytes` stores every record once and acknowledges
//!   every batch in order.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::OCX_SERVER;
use futures_util::{StreamExt, TryStreamExt, stream};
use ocx_client::{Client, pb};
use ocx_testkit::process::key;
use ocx_testkit::sample::{CallRecordGenerator, Line};
use ocx_testkit::{call_ids, seed_carrier, tenant};
use tonic::Code;

/// Bounds every wait below, so that a hang fails the test instead of stalling it.
const BOUND: Duration = Duration::from_secs(120);

/// Scrapes `name` until `done` holds for it (bounded by [`BOUND`]); its value then.
async fn wait_for_metric(addr: &str, name: &str, done: impl Fn(f64) -> bool) -> f64 {
    ocx_testkit::metrics::wait_for(addr, name, BOUND, |v| done(v.unwrap_or(0.0)))
        .await
        .unwrap_or(0.0)
}

/// The resident set of process `pid`, bytes (`VmRSS` in `/proc/PID/status`).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// A client that reads almost nothing by itself: HTTP/2 lets the server send it 16 KiB per
/// stream until the application takes some, so a stream it does not poll stops the server's
/// sending (as a stalled or abusive client would) instead of being buffered here.
async fn non_reader(endpoint: &str, key: &str) -> Client {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .initial_stream_window_size(Some(16 * 1024))
        .initial_connection_window_size(Some(1024 * 1024))
        .connect()
        .await
        .expect("connect");
    Client::from_channel(channel, key).expect("client")
}

/// The platform client of a server started from `dir`.
async fn platform(endpoint: &str, dir: &std::path::Path) -> Client {
    Client::connect(endpoint.to_owned(), key(&dir.join("platform.key")))
        .await
        .expect("connect")
}

/// `n` generated call records on `numbers` of `tenant` (about 430 bytes each, encoded, like
/// the benchmark's).
fn records(seed: u64, tenant: &str, numbers: &[String], n: usize) -> Vec<pb::CallRecord> {
    CallRecordGenerator::new(seed, Line::all(tenant, numbers), 1_790_000_000)
        .take(n)
        .collect()
}

/// Ingests `records` in batches of `batch` on one stream; checks that every batch is
/// acknowledged, in order, with every record created.
async fn ingest_all(platform: &Client, records: Vec<pb::CallRecord>, batch: usize) {
    let batches: Vec<Vec<pb::CallRecord>> = records.chunks(batch).map(<[_]>::to_vec).collect();
    let sizes: Vec<i32> = batches.iter().map(|b| b.len() as i32).collect();
    let acks: Vec<pb::IngestCallRecordsResponse> = platform
        .ingest_call_records(stream::iter(batches))
        .await
        .expect("open ingest")
        .try_collect()
        .await
        .expect("every batch acknowledged");
    let got: Vec<(i64, i32)> = acks.iter().map(|a| (a.batch_id, a.created_count)).collect();
    let want: Vec<(i64, i32)> = (1..).zip(sizes).collect();
    assert_eq!(
        got, want,
        "acknowledged in batch order, every record created"
    );
}

/// Whether `sequences` are exactly `1..=n` for their length `n`: no gap, no repeat, in order.
fn contiguous_from_one(sequences: &[i64]) -> bool {
    sequences.iter().copied().eq(1..=sequences.len() as i64)
}

/// The budget each feed gets in [`fifty_readers_that_read_nothing_cost_about_their_budgets`].
const BUDGET: u64 = 256 * 1024;
/// What one stalled feed may cost the server: its queue is at most a budget of *encoded*
/// bytes, but holds the messages as protobuf structs (strings, vectors, media streams), which
/// take about 2.6 times their encoded size here, so 3 budgets; and 256 KiB for the rest: the
/// few records read and not yet queued, the message hyper has taken off the queue and h2 holds
/// (at most a quarter of the budget), tonic's encoding buffer, the stream's HTTP/2 and task
/// state, and the allocator's slack. Measured: about 790 KiB a reader at a 256 KiB budget
/// (2.6 MiB at the default 1 MiB); 6.9 MB before feeds had a budget.
const COST_PER_FEED: u64 = 3 * BUDGET + 256 * 1024;
/// Readers in [`fifty_readers_that_read_nothing_cost_about_their_budgets`].
const READERS: u64 = 50;

/// The measurement (50 readers that read nothing, 30,000 records on 4 keys: +343 MB,
/// 6.9 MB a reader, before feeds had a byte budget), as a bound: the server grows by less than
/// 50 × [`COST_PER_FEED`] = 50 MiB with a budget of 256 KiB, where the old feeds, each holding
/// 16 messages of 256 records, a read of 1024 and a read ahead of 1024, grew it by 335 MiB
/// (this test run against the binary before the change).
#[tokio::test]
async fn fifty_readers_that_read_nothing_cost_about_their_budgets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let budget = BUDGET.to_string();
    let (server, endpoint, metrics, _log) = OCX_SERVER.start_with_metrics(
        dir.path(),
        // No stall closes during the measurement.
        &["--feed-buffer-bytes", &budget, "--stall-timeout", "1h"],
        &[],
    );
    let pid = server.0.id();
    let platform = platform(&endpoint, dir.path()).await;

    // 4 carriers, 7,500 records each.
    let mut carriers = Vec::new();
    for n in 0..4u32 {
        let (secret, numbers) = seed_carrier(
            &platform,
            &format!("still-tel-{n}"),
            &tenant(n + 1),
            &format!("+4420795{n}"),
            20,
        )
        .await;
        ingest_all(
            &platform,
            records(u64::from(n), &tenant(n + 1), &numbers, 7_500),
            500,
        )
        .await;
        carriers.push(secret);
    }
    // Each carrier's feed read through once by a reader that keeps up, so the store's caches
    // and the allocator are warm before the baseline.
    for secret in &carriers {
        let reader = platform.with_key(secret.clone()).expect("client");
        let feed = reader.stream_call_records("", 0).await.expect("open");
        let read: Vec<pb::CallRecord> = feed.take(7_500).try_collect().await.expect("replay");
        let sequences: Vec<i64> = read.iter().map(|r| r.feed_sequence).collect();
        assert!(contiguous_from_one(&sequences), "the whole feed, in order");
    }
    let before = rss_bytes(pid);

    // 50 readers (13 on each of the first two keys, 12 on the others, over one connection
    // per key) open the feed from the start and read nothing.
    let mut clients = Vec::new();
    for secret in &carriers {
        clients.push(non_reader(&endpoint, secret).await);
    }
    let mut feeds = Vec::new();
    for n in 0..READERS as usize {
        let feed = clients[n % clients.len()]
            .stream_call_records("", 0)
            .await
            .expect("open");
        feeds.push(feed);
    }
    // Until every feed's buffer is about full (each at least half its budget: a full queue
    // lacks less than one message, and messages are smaller than half the budget here).
    let buffered = wait_for_metric(&metrics, "ocx_feed_buffered_bytes", |bytes| {
        bytes >= (READERS * BUDGET / 2) as f64
    })
    .await;
    assert!(
        buffered <= (READERS * BUDGET) as f64,
        "no feed holds more than its budget: {buffered} bytes buffered"
    );
    let after = rss_bytes(pid);
    let growth = after.saturating_sub(before);
    let bound = READERS * COST_PER_FEED;
    eprintln!(
        "RSS {} MiB before the readers, {} MiB with {READERS} stalled readers: +{:.1} MiB \
         ({:.0} KiB a reader; bound {} MiB); {buffered} bytes buffered",
        before >> 20,
        after >> 20,
        growth as f64 / f64::from(1 << 20),
        growth as f64 / 1024.0 / READERS as f64,
        bound >> 20
    );
    assert!(
        growth < bound,
        "the server grew by {growth} bytes with {READERS} stalled readers; bound {bound}"
    );
    drop(feeds);
}

/// A reader that stops reading is cut off after the stall timeout: when it reads again it gets
/// what the server had already sent, then UNAVAILABLE telling it to reconnect with its last
/// `feed_sequence`, and the buffered messages were freed at the stall. The SDK's followers,
/// stalled the same way, resume after it: every record and event once, in order.
#[tokio::test]
async fn a_stalled_feed_ends_with_unavailable_and_followers_resume_without_gap_or_repeat() {
    const RECORDS: usize = 3_000;
    const NUMBERS: u32 = 1_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, endpoint, metrics, _log) = OCX_SERVER.start_with_metrics(
        dir.path(),
        &["--stall-timeout", "1s", "--feed-buffer-bytes", "4096"],
        &[],
    );
    let platform = platform(&endpoint, dir.path()).await;
    let tenant = tenant(7);
    let (secret, numbers) = seed_carrier(&platform, "slow-tel", &tenant, "+4420796", NUMBERS).await;
    ingest_all(&platform, records(7, &tenant, &numbers, RECORDS), 500).await;
    let slow = non_reader(&endpoint, &secret).await;
    let stalled = "ocx_feeds_stalled_total";

    // A raw feed: the first record, then nothing read until the server has ended the feed.
    let mut feed = Box::pin(slow.stream_call_records("", 0).await.expect("open"));
    let first = feed.next().await.expect("a record").expect("a record");
    let mut sequences = vec![first.feed_sequence];
    wait_for_metric(&metrics, stalled, |n| n >= 1.0).await;
    let buffered = wait_for_metric(&metrics, "ocx_feed_buffered_bytes", |_| true).await;
    assert_eq!(buffered, 0.0, "the stalled feed's messages were freed");
    let ending = loop {
        match feed.next().await {
            Some(Ok(record)) => sequences.push(record.feed_sequence),
            Some(Err(error)) => break error,
            None => panic!("the stalled feed ended without a status"),
        }
    };
    assert_eq!(ending.code(), Some(Code::Unavailable), "{ending}");
    assert!(
        ending
            .to_string()
            .contains("reconnect with your last feed_sequence"),
        "{ending}"
    );
    assert!(
        contiguous_from_one(&sequences),
        "what was on its way came in order"
    );
    assert!(
        sequences.len() < RECORDS,
        "the feed was cut off before the end ({} records)",
        sequences.len()
    );
    drop(feed);

    // The call-record follower, stalled the same way after its first record, resumes.
    let mut follower = Box::pin(slow.follow_call_records("", 0));
    let mut sequences = Vec::new();
    let first = follower.next().await.expect("a record").expect("a record");
    sequences.push(first.feed_sequence);
    wait_for_metric(&metrics, stalled, |n| n >= 2.0).await;
    let rest = tokio::time::timeout(BOUND, follower.take(RECORDS - 1).try_collect::<Vec<_>>())
        .await
        .expect("the follower resumed")
        .expect("no error");
    sequences.extend(rest.iter().map(|r| r.feed_sequence));
    assert_eq!(sequences.len(), RECORDS);
    assert!(contiguous_from_one(&sequences), "no gap, no repeat");

    // The number-event follower too (1,000 events of ~150 bytes against a 4 KiB budget).
    let mut follower = Box::pin(slow.follow_number_events("", 0));
    let mut sequences = Vec::new();
    let first = follower.next().await.expect("an event").expect("an event");
    sequences.push(first.sequence);
    wait_for_metric(&metrics, stalled, |n| n >= 3.0).await;
    let rest = tokio::time::timeout(
        BOUND,
        follower.take(NUMBERS as usize - 1).try_collect::<Vec<_>>(),
    )
    .await
    .expect("the follower resumed")
    .expect("no error");
    sequences.extend(rest.iter().map(|e| e.sequence));
    assert!(contiguous_from_one(&sequences), "no gap, no repeat");
}

/// The byte budget paces each reader and drops nothing: under a 4 KiB budget (smaller than
/// one message, which then goes alone) a reader gets every record once, in sequence order,
/// the replay and then live ones, and every number event likewise.
#[tokio::test]
async fn a_reader_gets_everything_once_in_order_under_a_tiny_feed_budget() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, endpoint, _log) =
        OCX_SERVER.start_configured(dir.path(), &["--feed-buffer-bytes", "4096"], &[]);
    let platform = platform(&endpoint, dir.path()).await;
    let tenant = tenant(8);
    let (secret, numbers) = seed_carrier(&platform, "tiny-tel", &tenant, "+4420797", 300).await;
    let all = records(8, &tenant, &numbers, 2_100);
    ingest_all(&platform, all[..2_000].to_vec(), 500).await;
    let carrier = platform.with_key(secret).expect("client");

    let mut feed = Box::pin(carrier.stream_call_records("", 0).await.expect("open"));
    let mut read: Vec<pb::CallRecord> =
        (&mut feed).take(2_000).try_collect().await.expect("replay");
    ingest_all(&platform, all[2_000..].to_vec(), 50).await;
    let live: Vec<pb::CallRecord> =
        tokio::time::timeout(BOUND, (&mut feed).take(100).try_collect::<Vec<_>>())
            .await
            .expect("live records arrive")
            .expect("live");
    read.extend(live);
    let sequences: Vec<i64> = read.iter().map(|r| r.feed_sequence).collect();
    assert_eq!(sequences.len(), 2_100);
    assert!(
        contiguous_from_one(&sequences),
        "every record once, in order"
    );
    let sent: BTreeSet<&str> = all.iter().map(|r| r.call_id.as_str()).collect();
    let got: BTreeSet<&str> = read.iter().map(|r| r.call_id.as_str()).collect();
    assert_eq!(got, sent);

    let events: Vec<pb::NumberEvent> = carrier
        .watch_number_events("", 0)
        .await
        .expect("watch")
        .take(300)
        .try_collect()
        .await
        .expect("events");
    let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    assert!(
        contiguous_from_one(&sequences),
        "every event once, in order"
    );
}

/// An upload whose buffer holds less than one batch still goes through, one batch at a time:
/// every record stored once, every batch acknowledged in order (call records and duration
/// reports).
#[tokio::test]
async fn an_upload_under_a_tiny_upload_budget_stores_everything_once_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, endpoint, _log) =
        OCX_SERVER.start_configured(dir.path(), &["--upload-buffer-bytes", "1024"], &[]);
    let platform = platform(&endpoint, dir.path()).await;
    let tenant = tenant(9);
    let (secret, numbers) = seed_carrier(&platform, "drip-tel", &tenant, "+4420798", 20).await;
    let all = records(9, &tenant, &numbers, 3_000);
    ingest_all(&platform, all.clone(), 100).await;
    let stored: Vec<String> = call_ids(&platform, "drip-tel").await;
    assert_eq!(stored.len(), all.len(), "each record stored once");
    let sent: BTreeSet<&str> = all.iter().map(|r| r.call_id.as_str()).collect();
    let got: BTreeSet<&str> = stored.iter().map(String::as_str).collect();
    assert_eq!(got, sent);

    let carrier = platform.with_key(secret).expect("client");
    let reports: Vec<pb::CallDurationReport> = all[..1_000]
        .iter()
        .enumerate()
        .map(|(n, r)| ocx_testkit::sample::report_for(r, format!("r-{n}")))
        .collect();
    let batches: Vec<Vec<pb::CallDurationReport>> =
        reports.chunks(100).map(<[_]>::to_vec).collect();
    let acks: Vec<pb::UploadCallDurationsResponse> = carrier
        .upload_call_durations("", stream::iter(batches))
        .await
        .expect("open upload")
        .try_collect()
        .await
        .expect("every batch acknowledged");
    let got: Vec<(i64, i32)> = acks.iter().map(|a| (a.batch_id, a.created_count)).collect();
    let want: Vec<(i64, i32)> = (1..=10).map(|n| (n, 100)).collect();
    assert_eq!(got, want, "acknowledged in order, each report created once");
}

//! Limits against careless and hostile clients, on the real binary: streams capped per key, per
//! carrier and for the server; calls refused before a key is accepted summed per address and
//! minute instead of stored one row each; a client address over its rate turned away before
//! its key is looked at; one carrier's long reads held to its share while another's are served.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use ocx_client::{Client, pb};
use ocx_testkit::fixtures;
use ocx_testkit::process::key;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::OCX_SERVER;

/// A request carrying `secret` as its bearer key.
fn with_key<T>(message: T, secret: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {secret}").parse().expect("ascii key"),
    );
    request
}

/// A channel to `endpoint`.
async fn channel(endpoint: &str) -> Channel {
    Channel::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

/// Opens a WatchNumberEvents feed with `secret` (acting for `carrier`); the open stream, or the
/// refusal.
async fn open_feed(
    channel: &Channel,
    secret: &str,
    carrier: &str,
) -> Result<tonic::Streaming<pb::WatchNumberEventsResponse>, tonic::Status> {
    let mut stub = pb::number_service_client::NumberServiceClient::new(channel.clone());
    let request = pb::WatchNumberEventsRequest {
        carrier_id: carrier.to_owned(),
        after_sequence: 0,
    };
    stub.watch_number_events(with_key(request, secret))
        .await
        .map(tonic::Response::into_inner)
}

/// Opens feeds until one opens, for at most 10 s: a stream the client dropped frees its slots
/// when the server sees it reset, a moment later.
async fn open_when_freed(
    channel: &Channel,
    secret: &str,
    carrier: &str,
) -> tonic::Streaming<pb::WatchNumberEventsResponse> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match open_feed(channel, secret, carrier).await {
            Ok(feed) => return feed,
            Err(status) if tokio::time::Instant::now() < deadline => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                tokio::task::yield_now().await;
            }
            Err(status) => panic!("no slot came back: {status:?}"),
        }
    }
}

#[tokio::test]
async fn streams_are_capped_per_key_per_carrier_and_for_the_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, endpoint, _) = OCX_SERVER.start_configured(
        dir.path(),
        &[
            "--max-streams-per-key",
            "2",
            "--max-streams-per-carrier",
            "3",
            "--max-streams",
            "5",
        ],
        &[],
    );
    let platform_key = key(&dir.path().join("platform.key"));
    let platform = Client::connect(endpoint.clone(), platform_key.clone())
        .await
        .expect("platform");
    let a1 = fixtures::carrier(&platform, "carrier-a").await.secret;
    let a2 = platform
        .create_api_key(pb::CreateApiKeyRequest {
            role: pb::ApiKeyRole::Carrier as i32,
            carrier_id: "carrier-a".into(),
            display_name: "second".into(),
            ..Default::default()
        })
        .await
        .expect("second key")
        .secret;
    let b = fixtures::carrier(&platform, "carrier-b").await.secret;
    let channel = channel(&endpoint).await;

    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(
            open_feed(&channel, &a1, "")
                .await
                .expect("within the key's 2"),
        );
    }
    let refused = open_feed(&channel, &a1, "")
        .await
        .expect_err("a key's third");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(
        refused.message(),
        "this key has 2 streams open, the most a key may have; close one first"
    );
    // Another key of the same carrier: the carrier's third is let through, not its fourth.
    open.push(
        open_feed(&channel, &a2, "")
            .await
            .expect("the carrier's third"),
    );
    let refused = open_feed(&channel, &a2, "")
        .await
        .expect_err("the carrier's fourth");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused
            .message()
            .starts_with("this carrier's keys have 3 streams open"),
        "{}",
        refused.message()
    );
    // Another carrier fills the server's five.
    for _ in 0..2 {
        open.push(open_feed(&channel, &b, "").await.expect("carrier b"));
    }
    let refused = open_feed(&channel, &platform_key, "carrier-b")
        .await
        .expect_err("the server's sixth");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused
            .message()
            .starts_with("the server has 5 streams open"),
        "{}",
        refused.message()
    );
    let retry = refused.get_details_retry_info().expect("RetryInfo");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));
    // Refusals hold nothing: a unary call still goes through, and a closed stream makes room.
    platform
        .list_carriers(pb::ListCarriersRequest::default())
        .await
        .expect("unary calls are not streams");
    drop(open.remove(0));
    let _again = open_when_freed(&channel, &platform_key, "carrier-b").await;
}

/// `n` calls of GetNumber with `secret`, `concurrency` at a time over one channel; their codes.
async fn get_numbers(channel: &Channel, secret: &str, n: usize, concurrency: usize) -> Vec<Code> {
    let stub = pb::number_service_client::NumberServiceClient::new(channel.clone());
    futures_util::stream::iter(0..n)
        .map(|_| {
            let mut stub = stub.clone();
            async move {
                let request = pb::GetNumberRequest {
                    number: "+14255550100".into(),
                    ..Default::default()
                };
                match stub.get_number(with_key(request, secret)).await {
                    Ok(_) => Code::Ok,
                    Err(status) => status.code(),
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

#[tokio::test]
async fn twenty_thousand_calls_with_a_junk_key_add_a_few_summed_audit_events() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The address limit is set out of the way: this test is about what unauthenticated
    // refusals cost, the next one about the address limit.
    let (_server, endpoint, _) = OCX_SERVER.start_configured(
        dir.path(),
        &[
            "--address-rate",
            "1000000000",
            "--address-burst",
            "1000000000",
        ],
        &[],
    );
    let platform_key = key(&dir.path().join("platform.key"));
    let platform = Client::connect(endpoint.clone(), platform_key)
        .await
        .expect("platform");
    let db = dir.path().join("ocx.db");
    let rows_before = audit_rows(&db);

    let junk = format!("ocx_00000000000000ab_{}", "0".repeat(64));
    let channel = channel(&endpoint).await;
    let codes = get_numbers(&channel, &junk, 20_000, 64).await;
    assert_eq!(tally(&codes), [(Code::Unauthenticated, 20_000)]);
    let codes = get_numbers(&channel, "not-a-key", 100, 8).await;
    assert_eq!(tally(&codes), [(Code::Unauthenticated, 100)]);

    // The listing writes the sums so far: one per claimed key id, address, method and minute.
    let events: Vec<pb::AuditEvent> = platform
        .audit_events(pb::ListAuditEventsRequest {
            rpc: "ocx.v1.NumberService/GetNumber".into(),
            ..Default::default()
        })
        .map(|e| e.expect("audit event"))
        .collect()
        .await;
    let refused: i64 = events.iter().map(|e| e.item_count).sum();
    assert_eq!(refused, 20_100, "every refusal is counted: {events:#?}");
    assert!(
        events.len() <= 6,
        "a handful of sums (2 keys × the minutes the run spans), not a row each: {events:#?}"
    );
    for e in &events {
        assert_eq!(e.outcome, "UNAUTHENTICATED");
        assert_eq!(e.source, "127.0.0.1");
        assert_eq!(e.role, "");
        assert!(
            e.key_id == "00000000000000ab" || e.key_id.is_empty(),
            "{e:?}"
        );
    }
    let added = audit_rows(&db) - rows_before;
    println!(
        "20,100 refused calls: {} summed events, {added} audit rows added",
        events.len()
    );
    assert!(
        added <= 10,
        "20,100 refusals added {added} audit rows (the listing and the setup add a few)"
    );
}

/// How many of `codes` are each code.
fn tally(codes: &[Code]) -> Vec<(Code, usize)> {
    let mut tally: Vec<(Code, usize)> = Vec::new();
    for code in codes {
        match tally.iter_mut().find(|(c, _)| c == code) {
            Some((_, n)) => *n += 1,
            None => tally.push((*code, 1)),
        }
    }
    tally
}

/// The rows of the audit table of the SQLite file at `db`.
fn audit_rows(db: &std::path::Path) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the database");
    conn.query_row("SELECT count(*) FROM audit_events", [], |r| r.get(0))
        .expect("count")
}

#[tokio::test]
async fn an_address_over_its_rate_is_turned_away_before_its_key_is_looked_at() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, endpoint, _) = OCX_SERVER.start_configured(
        dir.path(),
        &["--demo", "--address-rate", "20", "--address-burst", "50"],
        &[],
    );
    let carrier_key = key(&dir.path().join("demo-carrier.key"));
    let channel = channel(&endpoint).await;
    // The burst, then refusals: with a junk key and with a good one alike.
    let codes = get_numbers(&channel, "junk", 200, 1).await;
    let limited = codes
        .iter()
        .filter(|c| **c == Code::ResourceExhausted)
        .count();
    let unauthenticated = codes
        .iter()
        .filter(|c| **c == Code::Unauthenticated)
        .count();
    assert_eq!(limited + unauthenticated, 200, "{codes:?}");
    // The burst of 50 and what 20/s refill while the 200 calls take (well under 2 s).
    assert!(
        (50..=90).contains(&unauthenticated),
        "the burst, then refusals: {unauthenticated} of 200 got as far as the key"
    );
    let mut stub = pb::number_service_client::NumberServiceClient::new(channel.clone());
    let request = pb::GetNumberRequest {
        number: "+14255550100".into(),
        ..Default::default()
    };
    let refused = stub
        .get_number(with_key(request, &carrier_key))
        .await
        .expect_err("the address is over its rate, whatever the key");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused
            .message()
            .starts_with("this client address is over its request rate; retry in "),
        "{}",
        refused.message()
    );
    let wait = refused
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    assert!(
        wait <= Duration::from_millis(50),
        "one call at 20/s: {wait:?}"
    );
}

/// A summary call in flight, with whose it is.
type Summary = std::pin::Pin<
    Box<dyn std::future::Future<Output = (&'static str, Result<(), tonic::Status>)> + Send>,
>;

#[tokio::test]
async fn one_carriers_long_reads_are_held_to_its_share_and_another_carrier_is_served() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, endpoint, _) =
        OCX_SERVER.start_configured(dir.path(), &["--long-reads-per-carrier", "1"], &[]);
    let platform = Client::connect(endpoint.clone(), key(&dir.path().join("platform.key")))
        .await
        .expect("platform");
    // Carrier a's period holds enough calls that its summaries take a while; b's is small.
    let now = fixtures::now_secs();
    let mut secrets = Vec::new();
    for (carrier, prefix, calls) in [
        ("carrier-a", "+1425555", 20_000u32),
        ("carrier-b", "+1425556", 10),
    ] {
        let tenant = fixtures::tenant(calls);
        let (secret, numbers) =
            fixtures::seed_carrier(&platform, carrier, &tenant, prefix, 1).await;
        let records: Vec<pb::CallRecord> = (0..calls)
            .map(|i| {
                fixtures::call(
                    &format!("{carrier}-{i}"),
                    pb::CallDirection::Outbound,
                    &numbers[0],
                    "+442079460001",
                    &tenant,
                    now - 3600 + i64::from(i % 3000),
                )
            })
            .collect();
        for batch in records.chunks(1000) {
            fixtures::ingest(&platform, batch.to_vec()).await;
        }
        secrets.push(secret);
    }
    let channel = channel(&endpoint).await;
    let summary = |secret: String| {
        let mut stub =
            pb::reconciliation_service_client::ReconciliationServiceClient::new(channel.clone());
        async move {
            let request = pb::GetReconciliationSummaryRequest {
                start_time: fixtures::at(now - 7200),
                end_time: fixtures::at(now),
                ..Default::default()
            };
            stub.get_reconciliation_summary(with_key(request, &secret))
                .await
                .map(|_| ())
        }
    };
    // Rounds of eight of a's summaries at once, with one of b's among them, until a has been
    // held to its share (its eight overlap: the first holds its one long read for as long as
    // a summary of 20,000 calls takes).
    let mut over_share = None;
    for _round in 0..20 {
        let mut calls: FuturesUnordered<Summary> = FuturesUnordered::new();
        for _ in 0..8 {
            let call = summary(secrets[0].clone());
            calls.push(Box::pin(async move { ("a", call.await) }));
        }
        let b = summary(secrets[1].clone());
        calls.push(Box::pin(async move { ("b", b.await) }));
        let mut a_ok = 0;
        while let Some((who, result)) = calls.next().await {
            match (who, result) {
                ("b", result) => result.expect("carrier b is never held up by a's share"),
                (_, Ok(())) => a_ok += 1,
                (_, Err(status)) => {
                    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                    over_share = Some(status);
                }
            }
        }
        assert!(a_ok >= 1, "a's share is served");
        if over_share.is_some() {
            break;
        }
    }
    let status = over_share.expect("a was held to its share in 20 rounds");
    assert_eq!(
        status.message(),
        "this carrier has 1 long reads (reconciliation, usage, listings) running, its share; \
         retry when one has finished"
    );
    let retry = status.get_details_retry_info().expect("RetryInfo");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));
}

/// An HTTP/2 frame: its 9-byte header and `payload`.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .expect("small frame")
        .to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK literal header field without indexing, with a new name (RFC 7541 6.2.2); names and
/// values here are shorter than 127 bytes.
fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut field = vec![0x00, u8::try_from(name.len()).expect("short")];
    field.extend_from_slice(name.as_bytes());
    field.push(u8::try_from(value.len()).expect("short"));
    field.extend_from_slice(value.as_bytes());
    field
}

#[tokio::test]
async fn a_client_that_ignores_the_stream_limit_of_its_connection_is_refused_past_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, endpoint, _) = OCX_SERVER.start_configured(
        dir.path(),
        &["--demo", "--max-concurrent-streams", "2"],
        &[],
    );
    let carrier_key = key(&dir.path().join("demo-carrier.key"));
    let addr = endpoint.trim_start_matches("http://").to_owned();
    // HTTP/2 by hand, as a client that ignores the server's SETTINGS would speak it.
    let mut tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    tcp.write_all(&frame(0x4, 0, 0, &[]))
        .await
        .expect("settings");
    // Five calls opened at once (HEADERS without END_STREAM: each waits for its body).
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http (HPACK static table)
    block.extend(literal(":path", "/ocx.v1.NumberService/WatchNumberEvents"));
    block.extend(literal(":authority", "localhost"));
    block.extend(literal("content-type", "application/grpc"));
    block.extend(literal("te", "trailers"));
    block.extend(literal("authorization", &format!("Bearer {carrier_key}")));
    let streams = [1u32, 3, 5, 7, 9];
    for id in streams {
        tcp.write_all(&frame(0x1, 0x4, id, &block))
            .await
            .expect("headers");
    }
    // Read frames until every stream past the second has been reset, for at most 10 s.
    let mut refused = Vec::new();
    let mut advertised = None;
    let read = async {
        loop {
            let mut header = [0u8; 9];
            tcp.read_exact(&mut header).await.expect("a frame");
            let len =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let mut payload = vec![0u8; len];
            tcp.read_exact(&mut payload).await.expect("its payload");
            let stream =
                u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            match header[3] {
                // SETTINGS (not an ACK): MAX_CONCURRENT_STREAMS is setting 0x3.
                0x4 if header[4] & 0x1 == 0 => {
                    for s in payload.chunks_exact(6) {
                        if u16::from_be_bytes([s[0], s[1]]) == 0x3 {
                            advertised = Some(u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
                        }
                    }
                }
                // RST_STREAM with its error code.
                0x3 => {
                    let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    refused.push((stream, code));
                    if refused.len() == 3 {
                        return;
                    }
                }
                // GOAWAY: the server gave up on the connection.
                0x7 => panic!("GOAWAY: {payload:?}"),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the calls past the limit are reset");
    assert_eq!(advertised, Some(2));
    refused.sort_unstable();
    // REFUSED_STREAM (0x7): the client may retry those calls, none of them was started.
    assert_eq!(refused, [(5, 0x7), (7, 0x7), (9, 0x7)]);
}

/// Every limit: its name in `ocx_limit{limit=...}`, its flag, a value other than its default
/// for the flag, and what the gauge then reads.
const LIMITS: &[(&str, &str, &str, f64)] = &[
    (
        "max_message_bytes",
        "--max-message-bytes",
        "2000000",
        2_000_000.0,
    ),
    ("max_batch_items", "--max-batch", "500", 500.0),
    ("max_page_size", "--max-page-size", "400", 400.0),
    ("rate_per_second", "--rate", "300", 300.0),
    ("rate_burst", "--burst", "600", 600.0),
    ("max_streams_per_key", "--max-streams-per-key", "7", 7.0),
    (
        "default_deadline_seconds",
        "--default-deadline",
        "45s",
        45.0,
    ),
    (
        "max_concurrent_streams",
        "--max-concurrent-streams",
        "77",
        77.0,
    ),
    (
        "max_streams_per_carrier",
        "--max-streams-per-carrier",
        "33",
        33.0,
    ),
    ("max_streams", "--max-streams", "333", 333.0),
    (
        "feed_buffer_bytes",
        "--feed-buffer-bytes",
        "65536",
        65_536.0,
    ),
    (
        "upload_buffer_bytes",
        "--upload-buffer-bytes",
        "3000000",
        3_000_000.0,
    ),
    ("stall_timeout_seconds", "--stall-timeout", "90s", 90.0),
    ("max_connections", "--max-connections", "50", 50.0),
    (
        "handshake_timeout_seconds",
        "--handshake-timeout",
        "7s",
        7.0,
    ),
    ("idle_timeout_seconds", "--idle-timeout", "9m", 540.0),
    ("address_rate_per_second", "--address-rate", "4000", 4000.0),
    ("address_rate_burst", "--address-burst", "8000", 8000.0),
    (
        "long_reads_per_carrier",
        "--long-reads-per-carrier",
        "3",
        3.0,
    ),
];

#[tokio::test]
async fn every_limit_is_a_flag_a_readme_row_and_a_gauge_of_the_value_given() {
    let names: Vec<&str> = ocx_server::limits::Limits::default()
        .named()
        .iter()
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(
        names,
        LIMITS.iter().map(|l| l.0).collect::<Vec<_>>(),
        "a limit was added: give it a row here"
    );
    let help = std::process::Command::new(OCX_SERVER.0)
        .arg("--help")
        .output()
        .expect("--help");
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README");
    for (_, flag, _, _) in LIMITS {
        assert!(
            help.contains(&format!("{flag} <")),
            "{flag} is not in --help"
        );
        assert!(
            readme
                .lines()
                .any(|l| l.starts_with("| `") && l.contains(&format!("`{flag}`"))),
            "{flag} has no row in the README's table"
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let args: Vec<&str> = LIMITS
        .iter()
        .flat_map(|(_, flag, value, _)| [*flag, *value])
        .collect();
    let (_server, _, metrics, _) = OCX_SERVER.start_with_metrics(dir.path(), &args, &[]);
    let text = ocx_testkit::metrics::scrape(&metrics).await;
    for (name, flag, _, expected) in LIMITS {
        let series = format!("ocx_limit{{limit=\"{name}\"}}");
        assert_eq!(
            ocx_testkit::metrics::sample(&text, &series),
            Some(*expected),
            "{flag} did not reach {series}"
        );
    }
}

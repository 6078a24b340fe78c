//! The configurable limits: request rate, open streams, message size, batch and page sizes.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use ocx_client::pb;
use ocx_server::Config;
use ocx_server::limits::Limits;
use ocx_testkit::{TestServer, carrier, consent, item, numbers, provision, tenant};
use tonic::Code;

fn config(limits: Limits) -> Config {
    Config {
        limits,
        purge_interval: None,
        ..Config::default()
    }
}

#[tokio::test]
async fn a_key_over_its_rate_is_told_when_to_retry_and_other_keys_are_not_slowed() {
    let server = TestServer::start_with(config(Limits {
        rate_per_second: 0.5,
        rate_burst: 3.0,
        ..Limits::default()
    }))
    .await;
    let platform = server.platform().await;
    platform
        .create_carrier("acme-tel", "Acme")
        .await
        .expect("1");
    let key = platform
        .create_api_key(pb::CreateApiKeyRequest {
            request_id: String::new(),
            role: pb::ApiKeyRole::Carrier as i32,
            carrier_id: "acme-tel".into(),
            display_name: String::new(),
        })
        .await
        .expect("2");
    platform.list_carriers(Default::default()).await.expect("3");
    // A client that will not wait is told at once.
    let impatient = platform.clone().with_retry_budget(Duration::ZERO);
    let err = impatient
        .list_carriers(Default::default())
        .await
        .expect_err("4th call in the same instant");
    assert_eq!(err.code(), Some(Code::ResourceExhausted));
    assert!(err.to_string().contains("retry in"), "{err}");
    // The retry delay is also machine-readable (google.rpc.RetryInfo).
    let mut raw = pb::admin_service_client::AdminServiceClient::new(
        tonic::transport::Endpoint::from_shared(server.endpoint())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect"),
    );
    let mut request = tonic::Request::new(pb::ListCarriersRequest::default());
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", server.platform_key)
            .parse()
            .expect("header"),
    );
    let status = raw.list_carriers(request).await.expect_err("still over");
    let retry = tonic_types::StatusExt::get_details_retry_info(&status).expect("RetryInfo");
    let delay = retry.retry_delay.expect("delay");
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(2),
        "{delay:?}"
    );
    // Another key has its own bucket.
    let acme = server.client_with_key(&key.secret);
    acme.list_numbers(Default::default())
        .await
        .expect("acme is not slowed");
    // Within its retry budget the SDK waits what the server says and sends the read again.
    let waited = std::time::Instant::now();
    platform
        .list_carriers(Default::default())
        .await
        .expect("sent again after the wait the server named");
    assert!(waited.elapsed() >= Duration::from_millis(100), "it waited");
}

#[tokio::test]
async fn the_sdk_waits_out_a_carriers_share_of_the_long_reads() {
    let server = TestServer::start_with(config(Limits {
        long_reads_per_carrier: 1,
        ..Limits::default()
    }))
    .await;
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    let request = pb::GetReconciliationSummaryRequest {
        start_time: ocx_testkit::at(1_789_990_000),
        end_time: ocx_testkit::at(1_789_990_000 + 86_400),
        ..Default::default()
    };
    // Eight at once with a share of one: the server refuses the ones over the share with a
    // retry hint, and the SDK sends them again after it; every one is answered. Rounds until
    // the audit trail shows the server did refuse some (the eight overlap: each holds the
    // share while its query runs).
    let refused = |events: &[pb::AuditEvent]| {
        events
            .iter()
            .filter(|e| e.outcome == "RESOURCE_EXHAUSTED")
            .count()
    };
    for round in 0..20 {
        let calls = (0..8).map(|_| {
            let (client, request) = (a.client.clone(), request.clone());
            async move { client.get_reconciliation_summary(request).await.map(|_| ()) }
        });
        for (i, result) in futures_util::future::join_all(calls)
            .await
            .iter()
            .enumerate()
        {
            assert!(result.is_ok(), "round {round}, call {i}: {result:?}");
        }
        let events: Vec<pb::AuditEvent> = platform
            .audit_events(pb::ListAuditEventsRequest {
                carrier_id: "acme-tel".into(),
                rpc: "ocx.v1.ReconciliationService/GetReconciliationSummary".into(),
                ..Default::default()
            })
            .try_collect()
            .await
            .expect("audit");
        if refused(&events) > 0 {
            return;
        }
    }
    panic!("the server never refused a summary over the share in 20 rounds of 8");
}

#[tokio::test]
async fn a_key_may_hold_only_so_many_streams_open() {
    let server = TestServer::start_with(config(Limits {
        max_streams_per_key: 2,
        ..Limits::default()
    }))
    .await;
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    let b = carrier(&platform, "bravo-tel").await;
    let _first = a.client.watch_number_events("", 0).await.expect("first");
    let _second = a.client.stream_call_records("", 0).await;
    let third = a.client.watch_number_events("", 0).await;
    let err = third.map(|_| ()).expect_err("third stream");
    assert_eq!(err.code(), Some(Code::ResourceExhausted));
    assert!(err.to_string().contains("streams"), "{err}");
    // Unary calls and other keys are not affected.
    a.client
        .list_numbers(Default::default())
        .await
        .expect("unary");
    let _bravo = b
        .client
        .watch_number_events("", 0)
        .await
        .expect("bravo's own");
}

#[tokio::test]
async fn batches_pages_and_messages_have_configured_limits() {
    let server = TestServer::start_with(config(Limits {
        max_batch_items: 10,
        max_page_size: 5,
        max_message_bytes: 4096,
        ..Limits::default()
    }))
    .await;
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    consent(&platform, "acme-tel", &tenant(1)).await;
    let eleven: Vec<pb::NumberUpload> = numbers("+4420794", 0, 11)
        .iter()
        .map(|n| item(n, &tenant(1)))
        .collect();
    let err = a
        .client
        .upload_numbers(pb::UploadNumbersRequest {
            request_id: String::new(),
            carrier_id: String::new(),
            numbers: eleven,
        })
        .await
        .expect_err("over the batch limit");
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    assert_eq!(err.violations()[0].field, "numbers");
    assert!(
        err.violations()[0].description.contains("limit of 10"),
        "{err:?}"
    );
    provision(&a.client, &tenant(1), &numbers("+4420794", 0, 10)).await;
    let page = a
        .client
        .list_numbers(pb::ListNumbersRequest {
            page_size: 0,
            ..Default::default()
        })
        .await
        .expect("default page");
    assert_eq!(
        page.phone_numbers.len(),
        5,
        "the default page is capped by the maximum"
    );
    // Above the maximum is clamped (AIP-158), and the rest is still reachable by token.
    let first = a
        .client
        .list_numbers(pb::ListNumbersRequest {
            page_size: 6,
            ..Default::default()
        })
        .await
        .expect("over the page limit is clamped");
    assert_eq!(first.phone_numbers.len(), 5);
    let second = a
        .client
        .list_numbers(pb::ListNumbersRequest {
            page_size: i32::MAX,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .expect("second page");
    assert_eq!(second.phone_numbers.len(), 5);
    assert!(second.next_page_token.is_empty());
    let mut seen: Vec<_> = first
        .phone_numbers
        .iter()
        .chain(&second.phone_numbers)
        .map(|n| n.number.clone())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen.len(),
        10,
        "ten distinct numbers over two clamped pages"
    );
    // A request larger than the message limit is refused whole.
    let err = a
        .client
        .upload_numbers(pb::UploadNumbersRequest {
            request_id: String::new(),
            carrier_id: String::new(),
            numbers: vec![pb::NumberUpload {
                number: "+442079460099".into(),
                tenant_id: tenant(1),
                civic_address_id: "x".repeat(8000),
                ..Default::default()
            }],
        })
        .await
        .expect_err("over the message limit");
    assert_eq!(err.code(), Some(Code::OutOfRange), "{err:?}");

    // On a stream the same limit ends the stream with the same code, after acknowledging the
    // batches before it; an empty batch is refused like an oversized one.
    let record = |id: &str, padding: usize| {
        let mut r = ocx_testkit::call(
            id,
            pb::CallDirection::Outbound,
            "+442079460000",
            "+33142685300",
            &tenant(1),
            1_000,
        );
        r.trunk_fqdn = "x".repeat(padding);
        r
    };
    let acks: Vec<_> = platform
        .ingest_call_records(futures_util::stream::iter(vec![
            vec![record("small", 0)],
            vec![record("big", 8000)],
        ]))
        .await
        .expect("opens")
        .collect()
        .await;
    assert_eq!(acks.len(), 2, "{acks:?}");
    assert_eq!(acks[0].as_ref().expect("first batch").batch_id, 1);
    let err = acks[1].as_ref().expect_err("the oversized batch");
    assert_eq!(err.code(), Some(Code::OutOfRange), "{err:?}");
    let acks: Vec<_> = platform
        .ingest_call_records(futures_util::stream::iter(vec![Vec::new()]))
        .await
        .expect("opens")
        .collect()
        .await;
    let err = acks[0].as_ref().expect_err("empty batch");
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err:?}");
}

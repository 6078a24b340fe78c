//! A caller's deadline interrupts the database query working for it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream;
use ocx_api::pb;
use ocx_client::Client;
use ocx_server::store::sqlite::SqliteStore;
use ocx_testkit::sample::{CallRecordGenerator, Line};
use pb::platform_service_client::PlatformServiceClient;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_deadline_interrupts_the_running_query() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("ocx.db")).expect("store");
    let key = ocx_server::bootstrap::ensure_platform_key(&store, None)
        .await
        .expect("bootstrap")
        .expect("key");
    let mut interrupted = store.interrupted_reads();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ocx_server::run(listener, Arc::new(store), async move {
        let _ = stopped.await;
    }));

    // Enough calls that reconciling them takes far longer than the deadline below.
    let platform = Client::connect(endpoint.clone(), key.clone())
        .await
        .expect("connect");
    platform
        .create_carrier("acme-tel", "Acme")
        .await
        .expect("carrier");
    platform
        .grant_consent(pb::GrantConsentRequest {
            carrier_id: "acme-tel".into(),
            tenant_id: TENANT.into(),
            status: pb::ConsentStatus::Active as i32,
            ..Default::default()
        })
        .await
        .expect("consent");
    let lines: Vec<Line> = (0..10)
        .map(|i| Line {
            tenant_id: TENANT.into(),
            number: format!("+44207946{i:04}"),
        })
        .collect();
    platform
        .upload_numbers(pb::UploadNumbersRequest {
            request_id: String::new(),
            carrier_id: "acme-tel".into(),
            numbers: lines
                .iter()
                .map(|l| pb::NumberUpload {
                    number: l.number.clone(),
                    tenant_id: TENANT.into(),
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .expect("numbers");
    let mut generator = CallRecordGenerator::new(7, lines, 1_700_000_000);
    let batches: Vec<Vec<pb::CallRecord>> = (0..30)
        .map(|_| (0..1000).map(|_| generator.next_record()).collect())
        .collect();
    let records: Vec<pb::CallRecord> = batches.iter().flatten().cloned().collect();
    let acks = platform
        .ingest_call_records(stream::iter(batches))
        .await
        .expect("ingest");
    let acks: Vec<_> = futures_util::StreamExt::collect(acks).await;
    assert_eq!(acks.len(), 30);
    // And a report for each, matched by correlation id only (the costlier matching stage).
    let reports: Vec<((), Vec<pb::CallDurationReport>)> = batches_of_reports(&records);
    ocx_client::DurationUploader::new(&platform, "acme-tel")
        .run(stream::iter(reports), |(), _| {})
        .await
        .expect("reports");

    // The tenant's usage (which reconciles the tenant's calls with the set-based query, still
    // seconds over this many calls in a debug build; the reconciliation summary answers from
    // the pairing state, in milliseconds) with a 30 ms deadline: the caller hears of the
    // deadline, and the server interrupts the query rather than finish it for nobody.
    let channel = tonic::transport::Endpoint::from_shared(endpoint)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let usage = pb::GetTenantUsageRequest {
        tenant_id: TENANT.into(),
        start_time: Some(prost_types::Timestamp {
            seconds: 1_699_000_000,
            nanos: 0,
        }),
        end_time: Some(prost_types::Timestamp {
            seconds: 1_702_000_000,
            nanos: 0,
        }),
        grouping: pb::UsageGrouping::Day as i32,
    };
    let mut request = tonic::Request::new(usage.clone());
    request.set_timeout(Duration::from_millis(30));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("header"),
    );
    let before = *interrupted.borrow_and_update();
    let status = PlatformServiceClient::new(channel)
        .get_tenant_usage(request)
        .await
        .expect_err("deadline");
    assert!(
        matches!(
            status.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{status:?}"
    );
    // A bound, not a synchronisation: the change itself is what is awaited.
    tokio::time::timeout(Duration::from_secs(30), interrupted.changed())
        .await
        .expect("the query was interrupted")
        .expect("store alive");
    assert_eq!(*interrupted.borrow(), before + 1);

    // Without a deadline the same query completes.
    let usage = platform.get_tenant_usage(usage).await.expect("usage");
    let calls: i64 = usage.rows.iter().map(|r| r.call_count).sum();
    assert_eq!(calls, 30_000);

    let _ = stop.send(());
    server.await.expect("join").expect("server");
}

/// One report per record, by correlation id only, a second longer than the platform's.
fn batches_of_reports(records: &[pb::CallRecord]) -> Vec<((), Vec<pb::CallDurationReport>)> {
    records
        .chunks(1000)
        .map(|chunk| {
            let reports = chunk
                .iter()
                .map(|r| pb::CallDurationReport {
                    record_id: format!("r-{}", r.call_id),
                    call_id: String::new(),
                    correlation_id: r.correlation_id.clone(),
                    caller_number: r.caller_number.clone(),
                    callee_number: r.callee_number.clone(),
                    start_time: r.start_time,
                    duration: r.duration.map(|mut d| {
                        d.seconds += 1;
                        d
                    }),
                })
                .collect();
            ((), reports)
        })
        .collect()
}

//! A caller's deadline interrupts the database query working for it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream;
use ocx_api::pb;
use ocx_client::Client;
use ocx_server::store::sqlite::SqliteStore;
use ocx_testkit::sample::{CallRecordGenerator, Line};
use pb::call_record_service_client::CallRecordServiceClient;

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

    // Enough calls that scanning them takes far longer than the deadline below.
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
    let batches: Vec<Vec<pb::CallRecord>> = (0..100)
        .map(|_| (0..1000).map(|_| generator.next_record()).collect())
        .collect();
    let records: Vec<pb::CallRecord> = batches.iter().flatten().cloned().collect();
    let acks = platform
        .ingest_call_records(stream::iter(batches))
        .await
        .expect("ingest");
    let acks: Vec<_> = futures_util::StreamExt::collect(acks).await;
    assert_eq!(acks.len(), 100);
    // A listing of the carrier's calls of one number that none of them has: nothing serves
    // that filter but a scan of every record (there is no index by number), about 60 ms over
    // 100,000 records in a debug build here, beside a 20 ms deadline. The caller hears of the deadline, and the
    // server interrupts the query rather than finish it for nobody. (Reconciliation and usage,
    // which were slow enough for this once, now answer from the pairing state in
    // milliseconds.)
    let channel = tonic::transport::Endpoint::from_shared(endpoint)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let listing = pb::ListCallRecordsRequest {
        carrier_id: "acme-tel".into(),
        number: "+15550100000".into(),
        page_size: 1000,
        ..Default::default()
    };
    let mut request = tonic::Request::new(listing.clone());
    request.set_timeout(Duration::from_millis(20));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("header"),
    );
    let before = *interrupted.borrow_and_update();
    let status = CallRecordServiceClient::new(channel)
        .list_call_records(request)
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

    // Without a deadline the same query completes: no record has the number.
    let started = std::time::Instant::now();
    let page = platform.list_call_records(listing).await.expect("listing");
    eprintln!(
        "the listing took {:?} without a deadline",
        started.elapsed()
    );
    assert!(page.call_records.is_empty());
    assert!(page.next_page_token.is_empty());
    assert_eq!(records.len(), 100_000);

    let _ = stop.send(());
    server.await.expect("join").expect("server");
}

//! Durability under a crash: records acknowledged by `IngestCallRecords` are all there after the
//! server process is killed with SIGKILL (no graceful shutdown) and started again, and sending
//! everything again adds nothing.

use std::collections::{BTreeMap, BTreeSet};

use crate::OCX_SERVER;
use futures_util::{StreamExt, TryStreamExt};
use ocx_client::{Client, pb};
use ocx_testkit::process::key;
use ocx_testkit::sample::{CallRecordGenerator, Line};

const TENANT: &str = "1b2c3d4e-0000-4000-8000-000000000001";

#[tokio::test]
async fn acknowledged_records_survive_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut server, endpoint) = OCX_SERVER.start(dir.path(), false);
    let platform = Client::connect(endpoint.clone(), key(&dir.path().join("platform.key")))
        .await
        .expect("connect");
    platform
        .create_carrier("crash-tel", "Crash Telecom")
        .await
        .expect("carrier");
    platform
        .grant_consent(pb::GrantConsentRequest {
            carrier_id: "crash-tel".into(),
            tenant_id: TENANT.into(),
            ..Default::default()
        })
        .await
        .expect("consent");
    let numbers: Vec<String> = (0..50).map(|i| format!("+4420794{i:05}")).collect();
    let uploads = numbers
        .iter()
        .map(|n| pb::NumberUpload {
            number: n.clone(),
            tenant_id: TENANT.into(),
            ..Default::default()
        })
        .collect();
    let up = platform
        .upload_numbers(pb::UploadNumbersRequest {
            request_id: String::new(),
            carrier_id: "crash-tel".into(),
            numbers: uploads,
        })
        .await
        .expect("numbers");
    assert_eq!(up.created_count, 50);

    // 40 batches of 250 on one stream; kill the process as soon as 20 are acknowledged, while
    // later batches are still in flight.
    let lines = Line::all(TENANT, &numbers);
    let records: Vec<pb::CallRecord> = CallRecordGenerator::new(7, lines, 1_790_000_000)
        .take(10_000)
        .collect();
    let batches: Vec<Vec<pb::CallRecord>> = records.chunks(250).map(<[_]>::to_vec).collect();
    let mut acks = Box::pin(
        platform
            .ingest_call_records(futures_util::stream::iter(batches.clone()))
            .await
            .expect("ingest"),
    );
    let mut acknowledged: BTreeMap<String, i64> = BTreeMap::new();
    let mut acked_batches = 0;
    while let Some(ack) = acks.next().await {
        let ack = ack.expect("ack");
        assert_eq!(
            ack.rejected_count,
            0,
            "{:?}",
            ack.results.iter().find(|r| !r.reason.is_empty())
        );
        let batch = &batches[(ack.batch_id - 1) as usize];
        for (r, result) in batch.iter().zip(&ack.results) {
            assert_eq!(result.call_id, r.call_id);
            acknowledged.insert(r.call_id.clone(), r.version);
        }
        acked_batches += 1;
        if acked_batches == 20 {
            server.0.kill().expect("SIGKILL");
            server.0.wait().expect("reap");
            break;
        }
    }
    drop(acks);
    assert_eq!(acknowledged.len(), 5_000);

    // Restart on the same directory: every acknowledged record is there, exactly once.
    let (_server, endpoint) = OCX_SERVER.start(dir.path(), false);
    let platform = Client::connect(endpoint, key(&dir.path().join("platform.key")))
        .await
        .expect("reconnect");
    let req = pb::ListCallRecordsRequest {
        carrier_id: "crash-tel".into(),
        page_size: 1000,
        ..Default::default()
    };
    let stored: Vec<pb::CallRecord> = platform
        .call_records(req.clone())
        .try_collect()
        .await
        .expect("list");
    let ids: BTreeSet<&str> = stored.iter().map(|r| r.call_id.as_str()).collect();
    assert_eq!(ids.len(), stored.len(), "a record is stored twice");
    for id in acknowledged.keys() {
        assert!(
            ids.contains(id.as_str()),
            "acknowledged record {id} lost in the crash"
        );
    }
    let report = |stored: usize| {
        format!(
            "{stored} stored after the crash, {} acknowledged",
            acknowledged.len()
        )
    };
    eprintln!("{}", report(stored.len()));

    // Sending everything again (all 40 batches) creates only what was never stored, duplicates the rest.
    let acks: Vec<pb::IngestCallRecordsResponse> = platform
        .ingest_call_records(futures_util::stream::iter(batches))
        .await
        .expect("ingest")
        .try_collect()
        .await
        .expect("acks");
    let created: i32 = acks.iter().map(|a| a.created_count).sum();
    let unchanged: i32 = acks.iter().map(|a| a.unchanged_count).sum();
    assert_eq!(unchanged as usize, stored.len());
    assert_eq!(created as usize + stored.len(), records.len());
    let after: Vec<pb::CallRecord> = platform
        .call_records(req)
        .try_collect()
        .await
        .expect("list");
    assert_eq!(after.len(), records.len());
}

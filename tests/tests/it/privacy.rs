//! Retention, erasure and the audit trail, end to end through the SDK.

use futures_util::{StreamExt, TryStreamExt};
use ocx_client::pb;
use ocx_testkit::{
    TestServer, call, carrier, consent, ingest, now_secs, provision, report, tenant,
};
use tonic::Code;

use pb::CallDirection::Outbound;

const ACME: &str = "+442079460001";
const FAR: &str = "+33142685300";

#[tokio::test]
async fn retention_policy_is_validated_and_purges_what_aged_out() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    consent(&platform, "acme-tel", &tenant(1)).await;
    provision(&a.client, &tenant(1), &[ACME.into()]).await;

    let defaults = platform.get_retention_policy().await.expect("policy");
    assert_eq!(
        (
            defaults.call_record_days,
            defaults.call_duration_days,
            defaults.released_number_days,
            defaults.audit_event_days
        ),
        (90, 90, 30, 365)
    );
    assert!(
        defaults.update_time.is_none(),
        "the defaults were never set"
    );

    let bad = pb::RetentionPolicy {
        call_record_days: 0,
        call_duration_days: 3651,
        released_number_days: 30,
        audit_event_days: 10,
        update_time: None,
    };
    let err = platform
        .set_retention_policy(bad)
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    let fields: Vec<&str> = err.violations().iter().map(|v| v.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "policy.call_record_days",
            "policy.call_duration_days",
            "policy.audit_event_days"
        ]
    );
    let denied = a.client.get_retention_policy().await.expect_err("carrier");
    assert_eq!(denied.code(), Some(Code::PermissionDenied));

    // Calls and reports from 40 days ago and from an hour ago.
    let (old, recent) = (now_secs() - 40 * 86_400, now_secs() - 3_600);
    let t1 = tenant(1);
    ingest(
        &platform,
        vec![
            call("old-1", Outbound, ACME, FAR, &t1, old),
            call("old-2", Outbound, ACME, FAR, &t1, old + 60),
            call("new-1", Outbound, ACME, FAR, &t1, recent),
        ],
    )
    .await;
    a.client
        .report_call_durations(
            "",
            vec![
                report("r-old", "old-1", "", old, 60_000_000),
                report("r-new", "new-1", "", recent, 60_000_000),
            ],
        )
        .await
        .expect("report");

    // Under the defaults nothing is old enough.
    let none = platform.purge_expired_data().await.expect("purge");
    assert_eq!((none.call_records, none.call_durations), (0, 0));

    let policy = pb::RetentionPolicy {
        call_record_days: 30,
        call_duration_days: 30,
        released_number_days: 30,
        audit_event_days: 365,
        update_time: None,
    };
    let set = platform.set_retention_policy(policy).await.expect("set");
    assert!(set.update_time.is_some());
    assert_eq!(
        platform
            .get_retention_policy()
            .await
            .expect("policy")
            .call_record_days,
        30
    );
    let purged = platform.purge_expired_data().await.expect("purge");
    assert_eq!((purged.call_records, purged.call_durations), (2, 1));
    let left: Vec<String> = a
        .client
        .call_records(Default::default())
        .map(|r| r.expect("record").call_id)
        .collect()
        .await;
    assert_eq!(left, ["new-1"]);
    let reports: Vec<pb::CallDuration> = a
        .client
        .call_durations(Default::default())
        .try_collect()
        .await
        .expect("reports");
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].record_id, "r-new");
    let again = platform.purge_expired_data().await.expect("purge");
    assert_eq!((again.call_records, again.call_durations), (0, 0));
}

/// Whether `needle` occurs in the database file or its write-ahead log.
fn in_files(db: &std::path::Path, needle: &str) -> bool {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    [db.to_path_buf(), std::path::PathBuf::from(wal)]
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .any(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

#[tokio::test]
async fn erasure_removes_a_tenants_personal_data_from_the_files_and_tells_watchers() {
    const SIP: &str = "sip:canary-7f3a91@contoso.example";
    const USER: &str = "canary-user-5d2e";
    const CANARY: &str = "+15550199731";
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    let (t1, t2) = (tenant(1), tenant(2));
    consent(&platform, "acme-tel", &t1).await;
    consent(&platform, "acme-tel", &t2).await;
    let keep = "+442079460002";
    provision(&a.client, &t1, &[ACME.into()]).await;
    provision(&a.client, &t2, &[keep.into()]).await;
    platform
        .assign_number(pb::AssignNumberRequest {
            request_id: String::new(),
            number: ACME.into(),
            tenant_id: t1.clone(),
            assignment_type: pb::AssignmentType::User as i32,
            sip_uri: SIP.into(),
            user_id: USER.into(),
        })
        .await
        .expect("assign");
    let start = now_secs() - 3_600;
    ingest(
        &platform,
        vec![
            call("t1-a", Outbound, ACME, CANARY, &t1, start),
            call("t1-b", Outbound, ACME, CANARY, &t1, start + 60),
            call("t2-a", Outbound, keep, FAR, &t2, start),
        ],
    )
    .await;
    let mut canary_report = report("r-t1", "", "t1-b@sbc.example", start + 60, 60_000_000);
    canary_report.callee_number = CANARY.into();
    let mut other_tenant = report("r-t2", "t2-a", "", start, 60_000_000);
    other_tenant.caller_number = keep.into();
    a.client
        .report_call_durations(
            "",
            vec![
                report("r-t1a", "t1-a", "", start, 60_000_000),
                canary_report,
                other_tenant,
            ],
        )
        .await
        .expect("report");
    for needle in [SIP, USER, CANARY] {
        assert!(
            in_files(&server.db_path, needle),
            "{needle} is stored before the erasure"
        );
    }
    let head = a
        .client
        .list_numbers(Default::default())
        .await
        .expect("numbers")
        .total_size;
    assert_eq!(head, 2);
    let mut events = Box::pin(a.client.follow_number_events("", 3));

    let erased = platform.erase_tenant_data(&t1).await.expect("erase");
    assert_eq!(
        (
            erased.call_records,
            erased.call_durations,
            erased.numbers,
            erased.number_events
        ),
        (2, 2, 1, 1)
    );
    // The carrier watching sees the number lose its assignment.
    let event = events.next().await.expect("an event").expect("ok");
    assert_eq!(event.r#type, pb::NumberEventType::Unassigned as i32);
    let number = event.phone_number.expect("snapshot");
    assert_eq!(number.number, ACME);
    assert!(number.sip_uri.is_empty() && number.user_id.is_empty());
    // The earlier ASSIGNED event no longer names the assignee.
    let history: Vec<pb::NumberEvent> = a
        .client
        .watch_number_events("", 0)
        .await
        .expect("watch")
        .take(4)
        .try_collect()
        .await
        .expect("history");
    assert!(history.iter().all(|e| {
        e.phone_number
            .as_ref()
            .is_some_and(|n| n.sip_uri.is_empty() && n.user_id.is_empty())
    }));

    // The other tenant is untouched; the erased one has nothing left.
    let left: Vec<String> = a
        .client
        .call_records(Default::default())
        .map(|r| r.expect("record").call_id)
        .collect()
        .await;
    assert_eq!(left, ["t2-a"]);
    let reports: Vec<pb::CallDuration> = a
        .client
        .call_durations(Default::default())
        .try_collect()
        .await
        .expect("reports");
    assert_eq!(
        reports
            .iter()
            .map(|d| d.record_id.as_str())
            .collect::<Vec<_>>(),
        ["r-t2"]
    );
    for needle in [SIP, USER, CANARY] {
        assert!(
            !in_files(&server.db_path, needle),
            "{needle} must leave no trace in the database or its log"
        );
    }
    // Erasing again finds nothing; a bad tenant id is a field violation.
    let again = platform.erase_tenant_data(&t1).await.expect("erase");
    assert_eq!((again.call_records, again.numbers), (0, 0));
    let err = platform
        .erase_tenant_data("acme")
        .await
        .expect_err("bad id");
    assert_eq!(err.violations()[0].field, "tenant_id");
    let denied = a.client.erase_tenant_data(&t2).await.expect_err("carrier");
    assert_eq!(denied.code(), Some(Code::PermissionDenied));
}

#[tokio::test]
async fn every_call_is_audited_with_its_outcome_and_no_personal_data() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    let b = carrier(&platform, "bravo-tel").await;
    consent(&platform, "acme-tel", &tenant(1)).await;
    provision(
        &a.client,
        &tenant(1),
        &[ACME.into(), "+442079460002".into()],
    )
    .await;
    a.client
        .list_numbers(Default::default())
        .await
        .expect("read");
    a.client.get_number("", ACME).await.expect("read one");
    let denied = a.client.list_carriers(Default::default()).await;
    assert_eq!(
        denied.expect_err("denied").code(),
        Some(Code::PermissionDenied)
    );
    let not_theirs = b.client.get_number("", ACME).await;
    assert_eq!(not_theirs.expect_err("hidden").code(), Some(Code::NotFound));
    let unknown = format!("ocx_00000000000000ab_{}", "0".repeat(64));
    let stranger = server.client_with_key(&unknown);
    let refused = stranger.list_numbers(Default::default()).await;
    assert_eq!(
        refused.expect_err("unknown").code(),
        Some(Code::Unauthenticated)
    );

    let mine: Vec<pb::AuditEvent> = platform
        .audit_events(pb::ListAuditEventsRequest {
            carrier_id: "acme-tel".into(),
            ..Default::default()
        })
        .try_collect()
        .await
        .expect("audit");
    let seen: Vec<(&str, &str, i64, &str)> = mine
        .iter()
        .map(|e| {
            (
                e.rpc.as_str(),
                e.resource_kind.as_str(),
                e.item_count,
                e.outcome.as_str(),
            )
        })
        .collect();
    // Newest first.
    assert_eq!(
        seen,
        [
            (
                "ocx.v1.AdminService/ListCarriers",
                "carrier",
                0,
                "PERMISSION_DENIED"
            ),
            ("ocx.v1.NumberService/GetNumber", "number", 1, "OK"),
            ("ocx.v1.NumberService/ListNumbers", "number", 2, "OK"),
            ("ocx.v1.NumberService/UploadNumbers", "number", 2, "OK"),
        ],
        "{mine:#?}"
    );
    assert!(
        mine.iter()
            .all(|e| e.key_id == a.key_id && e.role == "carrier")
    );
    let theirs = platform
        .list_audit_events(pb::ListAuditEventsRequest {
            key_id: b.key_id.clone(),
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(theirs.audit_events.len(), 1);
    assert_eq!(theirs.audit_events[0].outcome, "NOT_FOUND");
    // The stranger's attempt is kept with the key id it claimed, never the secret.
    let strangers = platform
        .list_audit_events(pb::ListAuditEventsRequest {
            key_id: "00000000000000ab".into(),
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(strangers.audit_events.len(), 1);
    assert_eq!(strangers.audit_events[0].outcome, "UNAUTHENTICATED");
    assert_eq!(strangers.audit_events[0].role, "");
    // Filters by method and time window, and paging.
    let uploads = platform
        .list_audit_events(pb::ListAuditEventsRequest {
            rpc: "ocx.v1.NumberService/UploadNumbers".into(),
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(uploads.audit_events.len(), 1);
    let future = platform
        .list_audit_events(pb::ListAuditEventsRequest {
            start_time: Some(prost_types::Timestamp {
                seconds: now_secs() + 3_600,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .expect("audit");
    assert!(future.audit_events.is_empty());
    let paged: Vec<pb::AuditEvent> = platform
        .audit_events(pb::ListAuditEventsRequest {
            page_size: 2,
            ..Default::default()
        })
        .try_collect()
        .await
        .expect("audit");
    let ids: Vec<i64> = paged.iter().map(|e| e.id).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable_by(|x, y| y.cmp(x));
    sorted.dedup();
    assert_eq!(ids, sorted, "newest first, each once");
    // No phone number appears in any event.
    for e in &paged {
        let text = format!("{e:?}");
        assert!(!text.contains("+4420"), "{text}");
    }

    // A stream is audited when it ends, with the items it carried.
    let batches = vec![
        vec![
            report("s-1", "c-1", "", 1_000, 1),
            report("s-2", "c-2", "", 1_000, 1),
        ],
        vec![report("s-3", "c-3", "", 1_000, 1)],
    ];
    let acks: Vec<pb::UploadCallDurationsResponse> = a
        .client
        .upload_call_durations("", futures_util::stream::iter(batches))
        .await
        .expect("upload")
        .try_collect()
        .await
        .expect("acks");
    assert_eq!(acks.len(), 2);
    let uploads = platform
        .list_audit_events(pb::ListAuditEventsRequest {
            rpc: "ocx.v1.CallDurationService/UploadCallDurations".into(),
            ..Default::default()
        })
        .await
        .expect("audit");
    let streamed: Vec<(i64, &str)> = uploads
        .audit_events
        .iter()
        .map(|e| (e.item_count, e.outcome.as_str()))
        .collect();
    assert_eq!(streamed, [(3, "OK")]);
}

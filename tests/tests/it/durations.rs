//! Call durations, reconciliation and tenant usage end to end.

use futures_util::TryStreamExt;
use ocx_client::pb;
use ocx_testkit::{TestServer, at, call, carrier, consent, ingest, provision, report, tenant};
use prost_types::Duration;
use tonic::Code;

use pb::CallDirection::{Inbound, Outbound};
use pb::ItemStatus::{Corrected, Created, Rejected, Unchanged};

const ACME: &str = "+442079460001";
const FAR: &str = "+33142685300";

fn statuses(results: &[pb::CallDurationResult]) -> Vec<pb::ItemStatus> {
    results
        .iter()
        .map(|r| pb::ItemStatus::try_from(r.status).expect("status"))
        .collect()
}

fn secs(d: &Option<Duration>) -> f64 {
    d.as_ref()
        .map_or(-1.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

#[tokio::test]
async fn report_results_corrections_and_rejections() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let mut negative = report("r-neg", "c-1", "", 1_000, 0);
    negative.duration = Some(Duration {
        seconds: -5,
        nanos: 0,
    });
    let mut bad_numbers = report("r-num", "c-1", "", 1_000, 1);
    bad_numbers.caller_number = "0207".into();
    bad_numbers.callee_number = "".into();
    let batch = vec![
        report("r-1", "c-1", "", 1_000, 60_000_000), // 0 created
        report("r-2", "", "sip-call-2@sbc", 1_100, 30_000_000), // 1 created (correlation only)
        negative,                                    // 2 negative duration
        report("r-abs", "c-1", "", 1_000, 25 * 3600 * 1_000_000), // 3 absurd duration
        report("r-fut", "c-1", "", now + 3600, 1),   // 4 start in the future
        bad_numbers,                                 // 5 bad numbers
        report("r-noid", "", "", 1_000, 1),          // 6 no id to match on
        report("", "c-9", "", 1_000, 1),             // 7 no record id
    ];
    let response = a
        .client
        .report_call_durations("", batch)
        .await
        .expect("report");
    assert_eq!(
        statuses(&response.results),
        [
            Created, Created, Rejected, Rejected, Rejected, Rejected, Rejected, Rejected
        ]
    );
    let fields: Vec<Vec<&str>> = response
        .results
        .iter()
        .map(|r| r.violations.iter().map(|v| v.field.as_str()).collect())
        .collect();
    assert_eq!(fields[2], ["durations[2].duration"]);
    assert_eq!(fields[3], ["durations[3].duration"]);
    assert_eq!(fields[4], ["durations[4].start_time"]);
    assert_eq!(
        fields[5],
        ["durations[5].caller_number", "durations[5].callee_number"]
    );
    assert_eq!(fields[6], ["durations[6].call_id"]);
    assert_eq!(fields[7], ["durations[7].record_id"]);
    assert!(
        response.results[3].reason.contains("24 hours"),
        "{}",
        response.results[3].reason
    );
    assert!(
        response.results[4].reason.contains("future"),
        "{}",
        response.results[4].reason
    );

    // Same record id and content: unchanged; other duration: corrected, latest wins.
    let again = a
        .client
        .report_call_durations(
            "",
            vec![
                report("r-1", "c-1", "", 1_000, 60_000_000),
                report("r-2", "", "sip-call-2@sbc", 1_100, 31_500_000),
            ],
        )
        .await
        .expect("again");
    assert_eq!(statuses(&again.results), [Unchanged, Corrected]);
    assert_eq!((again.unchanged_count, again.corrected_count), (1, 1));
    let listed: Vec<pb::CallDuration> = a
        .client
        .call_durations(Default::default())
        .try_collect()
        .await
        .expect("list");
    assert_eq!(
        listed
            .iter()
            .map(|d| d.record_id.as_str())
            .collect::<Vec<_>>(),
        ["r-1", "r-2"]
    );
    assert_eq!(listed[1].corrections, 1);
    assert_eq!(secs(&listed[1].duration), 31.5);
    assert_eq!(listed[0].corrections, 0);

    // The stream: one acknowledgement per batch, in order, with the same results.
    let batches = vec![
        vec![
            report("s-1", "c-10", "", 2_000, 10_000_000),
            report("s-2", "c-11", "", 2_001, 11_000_000),
        ],
        vec![
            report("s-1", "c-10", "", 2_000, 10_000_000),
            report("s-3", "", "", 2_002, 1),
        ],
        vec![report("s-2", "c-11", "", 2_001, 12_000_000)],
    ];
    let acks: Vec<pb::UploadCallDurationsResponse> = a
        .client
        .upload_call_durations("", futures_util::stream::iter(batches))
        .await
        .expect("upload")
        .try_collect()
        .await
        .expect("acks");
    assert_eq!(
        acks.iter().map(|a| a.batch_id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(statuses(&acks[0].results), [Created, Created]);
    assert_eq!(statuses(&acks[1].results), [Unchanged, Rejected]);
    assert_eq!(statuses(&acks[2].results), [Corrected]);

    // Limits and scope.
    let too_many: Vec<_> = (0..1001)
        .map(|i| report(&format!("x{i}"), "c", "", 1, 1))
        .collect();
    let err = a
        .client
        .report_call_durations("", too_many)
        .await
        .expect_err("over the limit");
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    assert!(err.violations()[0].description.contains("1000"));
    assert_eq!(
        a.client
            .report_call_durations("bravo-tel", vec![report("z", "c", "", 1, 1)])
            .await
            .expect_err("other")
            .code(),
        Some(Code::PermissionDenied)
    );
}

/// Acme with a tenant number, and a second carrier.
async fn setup(
    server: &TestServer,
) -> (
    ocx_client::Client,
    ocx_testkit::CarrierFixture,
    ocx_testkit::CarrierFixture,
) {
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    let b = carrier(&platform, "bravo-tel").await;
    consent(&platform, "acme-tel", &tenant(1)).await;
    consent(&platform, "bravo-tel", &tenant(2)).await;
    provision(&a.client, &tenant(1), &[ACME.into()]).await;
    provision(&b.client, &tenant(2), &["+12065550100".into()]).await;
    (platform, a, b)
}

fn with_corr(mut r: pb::CallRecord, correlation: &str, duration_secs: i64) -> pb::CallRecord {
    r.correlation_id = correlation.into();
    let start = r.start_time.as_ref().map_or(0, |t| t.seconds);
    r.end_time = at(start + duration_secs);
    r.duration = Some(Duration {
        seconds: duration_secs,
        nanos: 0,
    });
    r
}

#[tokio::test]
async fn reconciliation_buckets_matching_keys_and_boundaries() {
    let server = TestServer::start().await;
    let (platform, a, b) = setup(&server).await;
    let t1 = tenant(1);
    // Period [10_000, 20_000).
    let records = vec![
        with_corr(
            call("p-exact", Outbound, ACME, FAR, &t1, 10_000),
            "k-exact",
            100,
        ), // at the start edge: in
        with_corr(call("p-tol", Outbound, ACME, FAR, &t1, 11_000), "", 100), // diff == tolerance: matched
        with_corr(call("p-over", Outbound, ACME, FAR, &t1, 12_000), "", 100), // diff > tolerance: mismatched
        with_corr(
            call("p-corr", Inbound, ACME, FAR, &t1, 13_000),
            "sip-13",
            200,
        ), // matched by correlation id
        with_corr(call("p-miss", Inbound, ACME, FAR, &t1, 14_000), "", 50),   // missing on carrier
        with_corr(call("p-dup", Outbound, ACME, FAR, &t1, 15_000), "", 70), // two reports: latest wins
        with_corr(call("p-end", Outbound, ACME, FAR, &t1, 20_000), "", 10), // at the end edge: out
        with_corr(call("p-late", Outbound, ACME, FAR, &t1, 19_999), "", 40), // in; its report starts after the end
    ];
    let ack = ingest(&platform, records).await;
    assert_eq!(ack.created_count, 8);
    let reports = vec![
        report("r-exact", "p-exact", "", 10_000, 100_000_000),
        report("r-tol", "p-tol", "", 11_000, 101_000_000),
        report("r-over", "p-over", "", 12_000, 101_000_001),
        report("r-corr", "", "sip-13", 13_001, 200_000_000),
        report("r-dup-old", "p-dup", "", 15_000, 10_000_000),
        report("r-orphan", "", "sip-nowhere", 16_000, 33_000_000), // missing on platform
        report("r-outside", "", "sip-outside", 25_000, 5_000_000), // not in the period at all
        report("r-late", "p-late", "", 20_005, 40_000_000),        // belongs to p-late's period
    ];
    a.client
        .report_call_durations("", reports)
        .await
        .expect("report");
    // The newer report for p-dup arrives later and wins.
    a.client
        .report_call_durations(
            "",
            vec![report("r-dup-new", "p-dup", "", 15_000, 70_000_000)],
        )
        .await
        .expect("report");

    let req = pb::GetReconciliationSummaryRequest {
        carrier_id: String::new(),
        start_time: at(10_000),
        end_time: at(20_000),
        tolerance: None,
    };
    let s = a
        .client
        .get_reconciliation_summary(req.clone())
        .await
        .expect("summary");
    assert_eq!(s.platform_count, 7, "p-end is outside [start, end)");
    assert_eq!(secs(&s.platform_duration), 660.0);
    assert_eq!(s.matched_count, 5, "exact, tol, corr, dup (new wins), late");
    assert_eq!(s.mismatched_count, 1);
    assert_eq!(s.missing_on_carrier_count, 1);
    assert_eq!(
        s.missing_on_platform_count, 2,
        "the orphan and the losing duplicate"
    );
    assert_eq!(s.carrier_count, 8);
    assert_eq!(
        s.matched_count + s.mismatched_count + s.missing_on_carrier_count,
        s.platform_count
    );
    assert_eq!(
        s.matched_count + s.mismatched_count + s.missing_on_platform_count,
        s.carrier_count
    );
    assert!(
        (s.agreement_rate - 5.0 / 9.0).abs() < 1e-9,
        "{}",
        s.agreement_rate
    );
    assert_eq!(secs(&s.tolerance), 1.0, "default tolerance");

    // A looser tolerance moves p-over to matched.
    let mut loose = req.clone();
    loose.tolerance = Some(Duration {
        seconds: 2,
        nanos: 0,
    });
    let s2 = a
        .client
        .get_reconciliation_summary(loose)
        .await
        .expect("summary");
    assert_eq!((s2.matched_count, s2.mismatched_count), (6, 0));

    // Discrepancies: with both durations, paged.
    let all: Vec<pb::Discrepancy> = a
        .client
        .discrepancies(pb::ListDiscrepanciesRequest {
            start_time: at(10_000),
            end_time: at(20_000),
            page_size: 1,
            ..Default::default()
        })
        .try_collect()
        .await
        .expect("discrepancies");
    let kinds: Vec<(pb::DiscrepancyKind, &str, &str)> = all
        .iter()
        .map(|d| {
            (
                pb::DiscrepancyKind::try_from(d.kind).expect("kind"),
                d.call_id.as_str(),
                d.record_id.as_str(),
            )
        })
        .collect();
    use pb::DiscrepancyKind::{Mismatched, MissingOnCarrier, MissingOnPlatform};
    assert_eq!(
        kinds,
        [
            (Mismatched, "p-over", "r-over"),
            (MissingOnCarrier, "p-miss", ""),
            (MissingOnPlatform, "p-dup", "r-dup-old"),
            (MissingOnPlatform, "", "r-orphan"),
        ]
    );
    assert_eq!(
        (
            secs(&all[0].platform_duration),
            secs(&all[0].carrier_duration)
        ),
        (100.0, 101.000001)
    );
    assert!(all[1].carrier_duration.is_none() && all[3].platform_duration.is_none());
    let only_missing = a
        .client
        .list_discrepancies(pb::ListDiscrepanciesRequest {
            start_time: at(10_000),
            end_time: at(20_000),
            kind: MissingOnCarrier as i32,
            ..Default::default()
        })
        .await
        .expect("filtered");
    assert_eq!(only_missing.discrepancies.len(), 1);

    // Isolation: bravo's report naming acme's call does not match it, and acme's numbers are
    // untouched by it.
    b.client
        .report_call_durations("", vec![report("b-1", "p-miss", "", 14_000, 50_000_000)])
        .await
        .expect("bravo");
    let again = a
        .client
        .get_reconciliation_summary(req.clone())
        .await
        .expect("summary");
    assert_eq!(again, s);
    let theirs = b
        .client
        .get_reconciliation_summary(req)
        .await
        .expect("bravo summary");
    assert_eq!(
        (theirs.platform_count, theirs.missing_on_platform_count),
        (0, 1)
    );
    assert!(
        b.client
            .call_durations(Default::default())
            .try_collect::<Vec<_>>()
            .await
            .expect("list")
            .iter()
            .all(|d| d.carrier_id == "bravo-tel")
    );
    let err = b
        .client
        .get_reconciliation_summary(pb::GetReconciliationSummaryRequest {
            carrier_id: "acme-tel".into(),
            start_time: at(1),
            end_time: at(2),
            tolerance: None,
        })
        .await
        .expect_err("denied");
    assert_eq!(err.code(), Some(Code::PermissionDenied));
    let platform_view = platform
        .get_reconciliation_summary(pb::GetReconciliationSummaryRequest {
            carrier_id: "acme-tel".into(),
            start_time: at(10_000),
            end_time: at(20_000),
            tolerance: None,
        })
        .await
        .expect("platform names the carrier");
    assert_eq!(platform_view.matched_count, 5);

    // Invalid periods.
    let err = a
        .client
        .get_reconciliation_summary(pb::GetReconciliationSummaryRequest {
            carrier_id: String::new(),
            start_time: at(5),
            end_time: at(5),
            tolerance: Some(Duration {
                seconds: -1,
                nanos: 0,
            }),
        })
        .await
        .expect_err("invalid");
    let fields: Vec<_> = err.violations().iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["end_time", "tolerance"]);
}

#[tokio::test]
async fn tenant_usage_prefers_the_carriers_duration_and_says_so() {
    let server = TestServer::start().await;
    let (platform, a, _) = setup(&server).await;
    let t1 = tenant(1);
    const DAY: i64 = 86_400;
    let d0 = 20_000 * DAY; // a UTC midnight
    let records = vec![
        with_corr(call("u-1", Outbound, ACME, FAR, &t1, d0 + 100), "", 60), // reported: 90 s
        with_corr(call("u-2", Outbound, ACME, FAR, &t1, d0 + 200), "", 30), // not reported
        with_corr(
            call("u-3", Inbound, ACME, FAR, &t1, d0 + DAY + 5),
            "sip-u3",
            45,
        ), // reported by correlation: 50 s
        with_corr(call("u-4", Inbound, ACME, FAR, &t1, d0 + DAY + 9), "", 20), // reported: 25 s
        with_corr(call("u-5", Inbound, ACME, FAR, &t1, d0 + 3 * DAY), "", 99), // outside the period
    ];
    ingest(&platform, records).await;
    a.client
        .report_call_durations(
            "",
            vec![
                report("r-1", "u-1", "", d0 + 100, 90_000_000),
                report("r-3", "", "sip-u3", d0 + DAY + 5, 50_000_000),
                report("r-4", "u-4", "", d0 + DAY + 9, 25_000_000),
            ],
        )
        .await
        .expect("report");
    let by_day = platform
        .get_tenant_usage(pb::GetTenantUsageRequest {
            tenant_id: t1.clone(),
            start_time: at(d0),
            end_time: at(d0 + 2 * DAY),
            grouping: pb::UsageGrouping::Day as i32,
        })
        .await
        .expect("usage");
    let rows: Vec<(String, i64, f64, i32, i64, i64)> = by_day
        .rows
        .iter()
        .map(|r| {
            (
                r.day.clone(),
                r.call_count,
                secs(&r.total_duration),
                r.source,
                r.operator_count,
                r.platform_count,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                "2024-10-04".to_owned(),
                2,
                120.0,
                pb::DurationSource::Mixed as i32,
                1,
                1
            ),
            (
                "2024-10-05".to_owned(),
                2,
                75.0,
                pb::DurationSource::Operator as i32,
                2,
                0
            ),
        ]
    );
    assert_eq!(
        (by_day.call_count, secs(&by_day.total_duration)),
        (4, 195.0)
    );

    let by_number = platform
        .get_tenant_usage(pb::GetTenantUsageRequest {
            tenant_id: t1.clone(),
            start_time: at(d0),
            end_time: at(d0 + 2 * DAY),
            grouping: pb::UsageGrouping::NumberAndDirection as i32,
        })
        .await
        .expect("usage");
    let rows: Vec<(String, i32, i64, f64, i32)> = by_number
        .rows
        .iter()
        .map(|r| {
            (
                r.number.clone(),
                r.direction,
                r.call_count,
                secs(&r.total_duration),
                r.source,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                ACME.to_owned(),
                Inbound as i32,
                2,
                75.0,
                pb::DurationSource::Operator as i32
            ),
            (
                ACME.to_owned(),
                Outbound as i32,
                2,
                120.0,
                pb::DurationSource::Mixed as i32
            ),
        ]
    );
    // Platform-only when nothing was reported.
    let platform_only = platform
        .get_tenant_usage(pb::GetTenantUsageRequest {
            tenant_id: t1.clone(),
            start_time: at(d0 + 3 * DAY),
            end_time: at(d0 + 4 * DAY),
            grouping: pb::UsageGrouping::Day as i32,
        })
        .await
        .expect("usage");
    assert_eq!(
        platform_only.rows[0].source,
        pb::DurationSource::Platform as i32
    );
    // Carrier keys may not read usage; the grouping is required.
    let err = a
        .client
        .get_tenant_usage(pb::GetTenantUsageRequest {
            tenant_id: t1.clone(),
            start_time: at(1),
            end_time: at(2),
            grouping: 1,
        })
        .await
        .expect_err("carrier");
    assert_eq!(err.code(), Some(Code::PermissionDenied));
    let err = platform
        .get_tenant_usage(pb::GetTenantUsageRequest {
            tenant_id: t1,
            start_time: at(1),
            end_time: at(2),
            grouping: 0,
        })
        .await
        .expect_err("grouping");
    assert_eq!(err.violations()[0].field, "grouping");
}

/// The uploader against a real server that restarts mid-upload: acknowledgements keep coming
/// while the input stalls, the upload survives the restart (batches that were in flight are
/// sent again on a new stream), and every report is stored exactly once. That a batch left
/// unacknowledged by a broken stream is sent again, in order, is checked deterministically
/// against a scripted server in the SDK's own tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uploader_survives_a_server_restart_and_stores_everything_once() {
    const BATCHES: usize = 30;
    let mut server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    let (batches_tx, batches_rx) =
        tokio::sync::mpsc::channel::<(usize, Vec<pb::CallDurationReport>)>(1);
    let (acked_tx, mut acked_rx) =
        tokio::sync::mpsc::unbounded_channel::<(usize, pb::UploadCallDurationsResponse)>();
    let uploader = ocx_client::DurationUploader::new(&a.client, "");
    let batches = futures_util::stream::unfold(batches_rx, |mut rx| async move {
        rx.recv().await.map(|b| (b, rx))
    });
    let upload = tokio::spawn(async move {
        uploader
            .run(batches, move |tag, ack| {
                let _ = acked_tx.send((tag, ack.clone()));
            })
            .await
    });
    let batch = |n: usize| -> Vec<pb::CallDurationReport> {
        (0..100)
            .map(|i| {
                report(
                    &format!("b{n}-{i}"),
                    &format!("c{n}-{i}"),
                    "",
                    1_000 + i,
                    1_000_000,
                )
            })
            .collect()
    };
    // Three batches, then the input stalls: their acknowledgements must still arrive.
    for n in 0..3 {
        batches_tx
            .send((n, batch(n)))
            .await
            .expect("uploader reads");
    }
    for n in 0..3 {
        assert_eq!(acked_rx.recv().await.expect("ack").0, n);
    }
    // The rest flows while the server restarts.
    let producer = tokio::spawn(async move {
        for n in 3..BATCHES {
            batches_tx
                .send((n, batch(n)))
                .await
                .expect("uploader reads");
        }
    });
    server.restart().await;
    producer.await.expect("join");
    let totals = upload.await.expect("join").expect("uploaded");
    let mut tags = Vec::new();
    while let Some((tag, ack)) = acked_rx.recv().await {
        assert_eq!(ack.created_count + ack.unchanged_count, 100, "{ack:?}");
        tags.push(tag);
    }
    assert_eq!(
        tags,
        (3..BATCHES).collect::<Vec<_>>(),
        "each batch acknowledged once, in order"
    );
    assert!(totals.reconnects >= 1, "{totals:?}");
    assert_eq!(
        (totals.batches, totals.reports, totals.rejected),
        (BATCHES as u64, BATCHES as u64 * 100, 0)
    );
    let stored: Vec<pb::CallDuration> = a
        .client
        .call_durations(Default::default())
        .try_collect()
        .await
        .expect("list");
    assert_eq!(stored.len(), BATCHES * 100, "every report stored once");
}

//! The contract's loose ends, each answered one way everywhere: time ranges, the
//! authorization scheme, units of durations, the time rule for calls and reports.

use ocx_client::pb;
use ocx_testkit::{
    TestServer, at, call, carrier, consent, ingest, now_secs, provision, report, tenant,
};
use tonic::Code;

/// The field violations of a refusal that must be INVALID_ARGUMENT.
fn fields(result: Result<impl std::fmt::Debug, ocx_client::Error>) -> Vec<(String, String)> {
    let err = result.expect_err("refused");
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err:?}");
    err.violations()
        .iter()
        .map(|v| (v.field.clone(), v.description.clone()))
        .collect()
}

#[tokio::test]
async fn every_list_refuses_a_time_range_that_ends_before_it_starts() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "range-tel").await;
    let (early, late) = (at(1_800_000_000), at(1_800_000_001));

    let records = a
        .client
        .list_call_records(pb::ListCallRecordsRequest {
            start_time_from: late,
            start_time_to: early,
            ..Default::default()
        })
        .await;
    let durations = a
        .client
        .list_call_durations(pb::ListCallDurationsRequest {
            start_time_from: late,
            start_time_to: early,
            ..Default::default()
        })
        .await;
    let audit = platform
        .list_audit_events(pb::ListAuditEventsRequest {
            start_time: late,
            end_time: early,
            ..Default::default()
        })
        .await;
    let to_before_from = vec![(
        "start_time_to".to_owned(),
        "start_time_to is before start_time_from".to_owned(),
    )];
    assert_eq!(fields(records), to_before_from);
    assert_eq!(fields(durations), to_before_from);
    assert_eq!(
        fields(audit),
        [(
            "end_time".to_owned(),
            "end_time is before start_time".to_owned()
        )]
    );

    // A range that starts and ends at one instant is valid, and empty, on each.
    let empty = a
        .client
        .list_call_records(pb::ListCallRecordsRequest {
            start_time_from: early,
            start_time_to: early,
            ..Default::default()
        })
        .await
        .expect("an empty range");
    assert!(empty.call_records.is_empty());
    let empty = a
        .client
        .list_call_durations(pb::ListCallDurationsRequest {
            start_time_from: early,
            start_time_to: early,
            ..Default::default()
        })
        .await
        .expect("an empty range");
    assert!(empty.call_durations.is_empty());
    let empty = platform
        .list_audit_events(pb::ListAuditEventsRequest {
            start_time: early,
            end_time: early,
            ..Default::default()
        })
        .await
        .expect("an empty range");
    assert!(empty.audit_events.is_empty());
}

#[tokio::test]
async fn the_authorization_scheme_is_read_in_any_case() {
    let server = TestServer::start().await;
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let list_carriers = |value: String| {
        let channel = channel.clone();
        async move {
            let mut admin = pb::admin_service_client::AdminServiceClient::with_interceptor(
                channel,
                move |mut request: tonic::Request<()>| {
                    let value = value.parse().expect("ascii");
                    request.metadata_mut().insert("authorization", value);
                    Ok(request)
                },
            );
            admin
                .list_carriers(pb::ListCarriersRequest::default())
                .await
                .map(drop)
        }
    };
    let key = &server.platform_key;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        list_carriers(format!("{scheme} {key}"))
            .await
            .unwrap_or_else(|e| panic!("{scheme}: {e:?}"));
    }
    list_carriers(format!("Bearer   {key}  "))
        .await
        .expect("spaces around the token");
    for value in [format!("Basic {key}"), format!("Bearer{key}"), key.clone()] {
        let refused = list_carriers(value.clone()).await.expect_err(&value);
        assert_eq!(refused.code(), Code::Unauthenticated, "{value}");
    }
}

#[tokio::test]
async fn a_call_that_starts_in_the_future_is_refused_on_both_sides_alike() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "future-tel").await;
    let t = tenant(1);
    consent(&platform, "future-tel", &t).await;
    let number = "+442079460001";
    provision(&a.client, &t, &[number.to_owned()]).await;
    let now = now_secs();
    let month_ahead = now + 30 * 86_400;
    // Four minutes ahead is clock drift: accepted on both sides.
    let (drift, future) = (now + 4 * 60, month_ahead);
    let record = |id: &str, start: i64| {
        call(
            id,
            pb::CallDirection::Outbound,
            number,
            "+33142685300",
            &t,
            start,
        )
    };
    let ack = ingest(
        &platform,
        vec![record("drift", drift), record("future", future)],
    )
    .await;
    let statuses: Vec<i32> = ack.results.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            pb::ItemStatus::Created as i32,
            pb::ItemStatus::Rejected as i32
        ]
    );
    let record_refusal: Vec<(String, String)> = ack.results[1]
        .violations
        .iter()
        .map(|v| (v.field.clone(), v.description.clone()))
        .collect();

    let reports = a
        .client
        .report_call_durations(
            "",
            vec![
                report("r-drift", "drift", "", drift, 60_000_000),
                report("r-future", "future", "", future, 60_000_000),
            ],
        )
        .await
        .expect("reports");
    let statuses: Vec<i32> = reports.results.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            pb::ItemStatus::Created as i32,
            pb::ItemStatus::Rejected as i32
        ]
    );
    let report_refusal: Vec<(String, String)> = reports.results[1]
        .violations
        .iter()
        .map(|v| (v.field.clone(), v.description.clone()))
        .collect();
    // One rule, one wording, each at its own path.
    let start_time_ahead =
        "start_time is in the future (more than 5 minutes ahead of the server's clock)";
    assert_eq!(
        record_refusal,
        [(
            "call_records[1].start_time".to_owned(),
            start_time_ahead.to_owned()
        )]
    );
    assert_eq!(
        report_refusal,
        [(
            "durations[1].start_time".to_owned(),
            start_time_ahead.to_owned()
        )]
    );
    // The refused call is in no list.
    let listed: Vec<String> = a
        .client
        .list_call_records(pb::ListCallRecordsRequest::default())
        .await
        .expect("list")
        .call_records
        .into_iter()
        .map(|r| r.call_id)
        .collect();
    assert_eq!(listed, ["drift"]);
}

#[tokio::test]
async fn durations_are_judged_exactly_and_kept_to_the_microsecond() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "micro-tel").await;
    let t = tenant(1);
    consent(&platform, "micro-tel", &t).await;
    let number = "+442079460002";
    provision(&a.client, &t, &[number.to_owned()]).await;
    let start = now_secs() - 3_600;
    let duration = |seconds: i64, nanos: i32| Some(prost_types::Duration { seconds, nanos });

    // A tolerance is echoed as the tolerance used, so it must be whole microseconds and at
    // most 1 hour, judged on its exact value.
    let summary = |tolerance: Option<prost_types::Duration>| {
        a.client
            .get_reconciliation_summary(pb::GetReconciliationSummaryRequest {
                start_time: at(start - 60),
                end_time: at(start + 60),
                tolerance,
                ..Default::default()
            })
    };
    for (seconds, nanos) in [(3_600, 1), (3_600, 999), (0, 1), (0, 999), (1, 500)] {
        let refused = fields(summary(duration(seconds, nanos)).await);
        assert_eq!(refused.len(), 1, "{seconds} s {nanos} ns: {refused:?}");
        assert_eq!(refused[0].0, "tolerance", "{seconds} s {nanos} ns");
    }
    for (seconds, nanos) in [(3_600, 0), (0, 1_000), (0, 0), (2, 123_456_000)] {
        let used = summary(duration(seconds, nanos))
            .await
            .unwrap_or_else(|e| panic!("{seconds} s {nanos} ns: {e:?}"))
            .tolerance;
        assert_eq!(used, duration(seconds, nanos), "echoed exactly");
    }

    // A call record's duration: over 7 days by a nanosecond is refused; below a microsecond
    // is dropped, as documented (durations are kept to the microsecond).
    let mut over = call(
        "over",
        pb::CallDirection::Outbound,
        number,
        "+33142685300",
        &t,
        start,
    );
    over.duration = duration(7 * 86_400, 1);
    let mut fine = call(
        "fine",
        pb::CallDirection::Outbound,
        number,
        "+33142685300",
        &t,
        start,
    );
    fine.duration = duration(60, 1_500);
    let ack = ingest(&platform, vec![over, fine]).await;
    assert_eq!(ack.results[0].status, pb::ItemStatus::Rejected as i32);
    assert_eq!(
        ack.results[0].violations[0].field,
        "call_records[0].duration"
    );
    assert_eq!(ack.results[1].status, pb::ItemStatus::Created as i32);
    let stored = a
        .client
        .get_call_record("", "fine")
        .await
        .expect("stored")
        .duration;
    assert_eq!(stored, duration(60, 1_000));

    // A report's duration: over 24 hours by a nanosecond is refused.
    let mut over = report("r-over", "fine", "", start, 0);
    over.duration = duration(86_400, 1);
    let answer = a
        .client
        .report_call_durations("", vec![over])
        .await
        .expect("report");
    assert_eq!(answer.results[0].status, pb::ItemStatus::Rejected as i32);
    assert_eq!(
        answer.results[0].violations[0].field,
        "durations[0].duration"
    );
}

#[tokio::test]
async fn each_carrier_sees_its_own_history_of_a_number_and_nothing_of_anothers() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "first-tel").await;
    let b = carrier(&platform, "second-tel").await;
    let t = tenant(1);
    consent(&platform, "first-tel", &t).await;
    consent(&platform, "second-tel", &t).await;
    let number = "+442079460077".to_owned();
    provision(&a.client, &t, std::slice::from_ref(&number)).await;
    a.client
        .release_numbers(pb::ReleaseNumbersRequest {
            numbers: vec![number.clone()],
            ..Default::default()
        })
        .await
        .expect("release");
    provision(&b.client, &t, std::slice::from_ref(&number)).await;

    // A still reads its released number (until retention purges it), not B's.
    let mine = a.client.get_number("", &number).await.expect("A's number");
    assert_eq!(mine.state, pb::NumberState::Released as i32);
    assert_eq!(mine.version, 2);
    // B's history starts at 1: nothing tells it the number was held elsewhere.
    let theirs = b.client.get_number("", &number).await.expect("B's number");
    assert_eq!(
        (theirs.state, theirs.version),
        (pb::NumberState::Provisioned as i32, 1)
    );
    // The platform assigns the holder's.
    let assigned = platform
        .assign_number(pb::AssignNumberRequest {
            number: number.clone(),
            tenant_id: t.clone(),
            assignment_type: pb::AssignmentType::User as i32,
            sip_uri: "sip:ann@contoso.example".into(),
            user_id: "ann".into(),
            ..Default::default()
        })
        .await
        .expect("assign");
    assert_eq!(assigned.carrier_id, "second-tel");
    let still = a.client.get_number("", &number).await.expect("A's number");
    assert_eq!(still, mine, "A's row does not move with B's");
    // A cannot take it back while B holds it, and is not told who does.
    let refused = a
        .client
        .upload_numbers(pb::UploadNumbersRequest {
            numbers: vec![ocx_testkit::item(&number, &t)],
            ..Default::default()
        })
        .await
        .expect("upload");
    assert_eq!(refused.results[0].status, pb::ItemStatus::Rejected as i32);
    assert!(!refused.results[0].reason.contains("second-tel"));
}

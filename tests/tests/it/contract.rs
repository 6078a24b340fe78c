//! The contract's loose ends, each answered one way everywhere: time ranges, the
//! authorization scheme, units of durations, the time rule for calls and reports.

use ocx_client::pb;
use ocx_testkit::{TestServer, at, carrier};
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

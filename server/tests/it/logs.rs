//! The server's log through a whole scenario, at debug level, holds none of the scenario's
//! phone numbers, SIP URIs or keys; and the migration that builds the pairing state logs it.

use crate::OCX_SERVER;
use futures_util::{StreamExt, stream};
use ocx_client::{Client, pb};
use ocx_testkit::process::key;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const NUMBER: &str = "+442079463817";
const FAR_END: &str = "+14255550172";
const SIP: &str = "sip:logcanary@contoso.example";

#[tokio::test]
async fn no_phone_number_sip_uri_or_key_reaches_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, endpoint, log) = OCX_SERVER.start_logged(dir.path(), false, "debug");
    let platform_key = key(&dir.path().join("platform.key"));
    let platform = Client::connect(endpoint.clone(), platform_key.clone())
        .await
        .expect("connect");
    platform
        .create_carrier("acme-tel", "Acme")
        .await
        .expect("carrier");
    let created = platform
        .create_api_key(pb::CreateApiKeyRequest {
            request_id: String::new(),
            role: pb::ApiKeyRole::Carrier as i32,
            carrier_id: "acme-tel".into(),
            display_name: "ops".into(),
        })
        .await
        .expect("key");
    let carrier = platform.with_key(created.secret.clone()).expect("client");
    platform
        .grant_consent(pb::GrantConsentRequest {
            carrier_id: "acme-tel".into(),
            tenant_id: TENANT.into(),
            status: pb::ConsentStatus::Active as i32,
            ..Default::default()
        })
        .await
        .expect("consent");
    let upload = |number: &str| pb::NumberUpload {
        number: number.into(),
        tenant_id: TENANT.into(),
        ..Default::default()
    };
    // One valid number and one invalid, whose value the error quotes back to the caller.
    carrier
        .upload_numbers(pb::UploadNumbersRequest {
            request_id: String::new(),
            carrier_id: String::new(),
            numbers: vec![upload(NUMBER), upload("+44 20 7946 3818")],
        })
        .await
        .expect("upload");
    platform
        .assign_number(pb::AssignNumberRequest {
            request_id: String::new(),
            number: NUMBER.into(),
            tenant_id: TENANT.into(),
            assignment_type: pb::AssignmentType::User as i32,
            sip_uri: SIP.into(),
            user_id: String::new(),
        })
        .await
        .expect("assign");
    let bad_sip = platform
        .assign_number(pb::AssignNumberRequest {
            request_id: String::new(),
            number: NUMBER.into(),
            tenant_id: TENANT.into(),
            assignment_type: pb::AssignmentType::User as i32,
            sip_uri: "sip:logcanary2@".into(),
            user_id: String::new(),
        })
        .await;
    assert!(bad_sip.is_err());
    let record = pb::CallRecord {
        call_id: "log-call-1".into(),
        correlation_id: "log-corr-1@sbc".into(),
        version: 1,
        tenant_id: TENANT.into(),
        call_type: pb::CallType::UserOut as i32,
        direction: pb::CallDirection::Outbound as i32,
        caller_number: NUMBER.into(),
        callee_number: FAR_END.into(),
        start_time: Some(prost_types::Timestamp {
            seconds: 1_790_000_000,
            nanos: 0,
        }),
        end_time: Some(prost_types::Timestamp {
            seconds: 1_790_000_060,
            nanos: 0,
        }),
        final_sip_code: 200,
        successful: true,
        ..Default::default()
    };
    let acks: Vec<_> = platform
        .ingest_call_records(stream::iter(vec![vec![record]]))
        .await
        .expect("ingest")
        .collect()
        .await;
    assert!(acks.iter().all(Result::is_ok));
    carrier
        .report_call_durations(
            "",
            vec![pb::CallDurationReport {
                record_id: "r1".into(),
                call_id: "log-call-1".into(),
                caller_number: NUMBER.into(),
                callee_number: FAR_END.into(),
                start_time: Some(prost_types::Timestamp {
                    seconds: 1_790_000_000,
                    nanos: 0,
                }),
                duration: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
                ..Default::default()
            }],
        )
        .await
        .expect("report");
    carrier.get_number("", NUMBER).await.expect("get");
    carrier
        .get_call_record("", "log-call-1")
        .await
        .expect("record");
    let _ = carrier.get_number("", "+442079463819").await;
    let wrong = format!("ocx_00000000000000cd_{}", "1".repeat(64));
    let _ = platform
        .with_key(wrong.clone())
        .expect("client")
        .list_carriers(Default::default())
        .await;
    // A GetNumber whose number field is not UTF-8 (a phone number's digits, then a byte no
    // string holds): refused and logged, without the bytes.
    let mut undecodable = vec![0x12, 0x0e];
    undecodable.extend_from_slice(b"+4420794638");
    undecodable.extend_from_slice(&[0xC3, 0x28, b'2']);
    let refused = ocx_testkit::raw::RawClient::new(&endpoint, &created.secret)
        .unary("/ocx.v1.NumberService/GetNumber", undecodable)
        .await
        .expect_err("not a request");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    platform.erase_tenant_data(TENANT).await.expect("erase");
    drop(server);
    let log = log.join().expect("log").join("\n");
    assert!(log.contains("serving"), "the log was captured: {log}");
    assert!(
        log.contains("a request could not be decoded") && log.contains("ocx.v1.GetNumberRequest"),
        "an undecodable request is logged with its type: {log}"
    );
    for secret in [
        NUMBER,
        "7946 3818",
        "+442079463819",
        "+4420794638",
        FAR_END,
        SIP,
        "logcanary",
        &platform_key,
        &created.secret,
        &wrong,
    ] {
        assert!(!log.contains(secret), "{secret:?} is in the log:\n{log}");
    }
}

/// A database of the release before the pairing state (the migration test's fixture) opened by
/// the binary: the migration builds the state and says so, carrier by carrier, before the
/// server listens.
#[tokio::test]
async fn the_migration_that_builds_the_pairing_state_logs_each_carrier() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/pre-pairing/ocx.db");
    std::fs::copy(&fixture, dir.path().join("ocx.db")).expect("copy the fixture");
    let (_server, _endpoint, lines) = OCX_SERVER.start_watched(&[], dir.path(), &[], &[]);
    let line =
        ocx_testkit::process::wait_for_line(&lines, std::time::Duration::from_secs(30), |l| {
            l.contains("reconciliation state built for a carrier")
        })
        .expect("no log line of the state being built");
    // The fixture's one carrier: 1,500 records, and the reports paired with none.
    for part in ["carrier=fixture-tel", "items=1536", "done=1 of=1"] {
        assert!(line.contains(part), "{part} not in: {line}");
    }
}

//! Durability: what was acknowledged is there after a restart on the same database file.

use futures_util::{StreamExt, TryStreamExt};
use ocx_client::pb;
use ocx_testkit::{TestServer, carrier, consent, numbers, provision, tenant};

#[tokio::test]
async fn a_restarted_server_finds_all_acknowledged_data() {
    let mut server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    consent(&platform, "acme-tel", &tenant(1)).await;
    let ns = numbers("+4420794", 0, 250);
    provision(&a.client, &tenant(1), &ns).await;
    platform
        .assign_number(pb::AssignNumberRequest {
            request_id: String::new(),
            number: ns[7].clone(),
            tenant_id: tenant(1),
            assignment_type: pb::AssignmentType::Conference as i32,
            sip_uri: "sip:bridge@contoso.com".into(),
            user_id: String::new(),
        })
        .await
        .expect("assign");
    let revoked = platform
        .create_api_key(pb::CreateApiKeyRequest {
            request_id: String::new(),
            role: pb::ApiKeyRole::Carrier as i32,
            carrier_id: "acme-tel".into(),
            display_name: String::new(),
        })
        .await
        .expect("key");
    platform
        .revoke_api_key(&revoked.api_key.as_ref().expect("meta").key_id)
        .await
        .expect("revoke");

    server.restart().await;

    // Keys survive: the carrier key still works; the revoked one still does not.
    let listed: Vec<pb::PhoneNumber> = a
        .client
        .numbers(Default::default())
        .try_collect()
        .await
        .expect("list after restart");
    assert_eq!(
        listed.iter().map(|n| n.number.clone()).collect::<Vec<_>>(),
        ns
    );
    let stale = platform.with_key(revoked.secret).expect("client");
    assert_eq!(
        stale
            .list_consents(Default::default())
            .await
            .expect_err("revoked")
            .code(),
        Some(tonic::Code::Unauthenticated)
    );
    let n = a.client.get_number("", &ns[7]).await.expect("get");
    assert_eq!(
        (n.state, n.sip_uri.as_str(), n.version),
        (
            pb::NumberState::Assigned as i32,
            "sip:bridge@contoso.com",
            2
        )
    );
    let consents = a
        .client
        .list_consents(Default::default())
        .await
        .expect("consents");
    assert_eq!(consents.consents.len(), 1);
    let carriers = platform
        .list_carriers(Default::default())
        .await
        .expect("carriers");
    assert_eq!(carriers.total_size, 1);
    let events: Vec<pb::NumberEvent> = a
        .client
        .watch_number_events("", 249)
        .await
        .expect("watch")
        .take(2)
        .try_collect()
        .await
        .expect("events");
    assert_eq!(
        events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [250, 251]
    );
    // The sequence continues without a gap after the restart.
    provision(&a.client, &tenant(1), &numbers("+4420795", 0, 1)).await;
    let next: Vec<pb::NumberEvent> = a
        .client
        .watch_number_events("", 251)
        .await
        .expect("watch")
        .take(1)
        .try_collect()
        .await
        .expect("next");
    assert_eq!(next[0].sequence, 252);
}

/// A graceful stop with writes in flight: health turns NOT_SERVING for every service, each
/// write either answers or fails with UNAVAILABLE (retryable; never another error, never a
/// hang), and every write that was answered is there after the restart.
#[tokio::test]
async fn a_graceful_stop_turns_health_off_and_loses_no_answered_write() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    let mut server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "drain-tel").await;
    consent(&platform, "drain-tel", &tenant(9)).await;

    // Watch the number service's health from before the stop.
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut watch = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: "ocx.v1.NumberService".into(),
        })
        .await
        .expect("health watch")
        .into_inner();
    let first = watch.next().await.expect("a status").expect("status");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    // Forty uploads of ten numbers each, in flight when the stop comes. Not retried: the
    // server is not coming back before they are all answered, and each must answer or fail
    // with UNAVAILABLE, not wait out the SDK's retry budget.
    let no_retries = a
        .client
        .clone()
        .with_retry_budget(std::time::Duration::ZERO);
    let uploads: Vec<_> = (0..40)
        .map(|i| {
            let client = no_retries.clone();
            let batch = numbers("+4420795", i * 10, 10);
            tokio::spawn(async move {
                let outcome = client
                    .upload_numbers(pb::UploadNumbersRequest {
                        carrier_id: String::new(),
                        numbers: batch
                            .iter()
                            .map(|n| ocx_testkit::item(n, &tenant(9)))
                            .collect(),
                        request_id: String::new(),
                    })
                    .await;
                (batch, outcome)
            })
        })
        .collect();
    let stopping = tokio::spawn(async move {
        server.stop().await;
        server
    });
    let status = watch
        .next()
        .await
        .expect("a status on stop")
        .expect("status");
    assert_eq!(status.status, ServingStatus::NotServing as i32);
    assert!(
        watch.next().await.is_none(),
        "the watch ends, so it does not hold the shutdown open"
    );
    let mut server = tokio::time::timeout(std::time::Duration::from_secs(60), stopping)
        .await
        .expect("the graceful stop finishes")
        .expect("stop");

    let mut answered = Vec::new();
    for upload in uploads {
        let (batch, outcome) = upload.await.expect("task");
        match outcome {
            Ok(response) => {
                assert_eq!(response.created_count, 10);
                answered.extend(batch);
            }
            Err(e) => assert_eq!(e.code(), Some(tonic::Code::Unavailable), "{e:?}"),
        }
    }
    server.restart().await;
    let platform = server.platform().await;
    let stored: std::collections::BTreeSet<String> = platform
        .numbers(pb::ListNumbersRequest {
            carrier_id: "drain-tel".into(),
            page_size: 1000,
            ..Default::default()
        })
        .map_ok(|n| n.number)
        .try_collect()
        .await
        .expect("list");
    for number in &answered {
        assert!(stored.contains(number), "answered write {number} lost");
    }
    eprintln!("{} of 400 numbers answered before the stop", answered.len());
}

/// A write sent while the server is down is retried (same request id) until the server is back,
/// within the SDK's retry budget; with no budget it fails at once with UNAVAILABLE.
#[tokio::test]
async fn the_sdk_retries_a_write_across_a_restart_within_its_budget() {
    let mut server = TestServer::start().await;
    let platform = server.platform().await;
    carrier(&platform, "retry-tel").await;
    server.stop().await;

    let grant = || pb::GrantConsentRequest {
        carrier_id: "retry-tel".into(),
        tenant_id: tenant(3),
        status: pb::ConsentStatus::Active as i32,
        ..Default::default()
    };
    let no_budget = platform
        .clone()
        .with_retry_budget(std::time::Duration::ZERO)
        .grant_consent(grant())
        .await
        .expect_err("the server is down");
    assert_eq!(
        no_budget.code(),
        Some(tonic::Code::Unavailable),
        "{no_budget:?}"
    );

    // Sent while the server is down; it comes back while the SDK retries.
    let write = tokio::spawn({
        let (platform, request) = (platform.clone(), grant());
        async move { platform.grant_consent(request).await }
    });
    server.restart().await;
    let consent = write
        .await
        .expect("task")
        .expect("retried until the server was back");
    assert_eq!(consent.tenant_id, tenant(3));
}

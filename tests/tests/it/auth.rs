//! Authentication and authorization rules, and the admin service, end to end.

use ocx_client::pb;
use ocx_testkit::{TestServer, carrier, consent, tenant};
use tonic::Code;

fn code<T: std::fmt::Debug>(r: Result<T, ocx_client::Error>) -> Code {
    r.expect_err("expected an error").code().expect("a status")
}

#[tokio::test]
async fn missing_malformed_unknown_and_revoked_keys_are_unauthenticated() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let c = carrier(&platform, "acme-tel").await;

    // Missing: an empty key sends no usable header.
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint())
        .expect("endpoint")
        .connect_lazy();
    let mut raw = pb::number_service_client::NumberServiceClient::new(channel);
    let status = raw
        .list_numbers(pb::ListNumbersRequest::default())
        .await
        .expect_err("no key");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("authorization"),
        "{}",
        status.message()
    );

    // Malformed and unknown.
    for key in [
        "not-a-key",
        "ocx_0123_4567",
        &format!("ocx_{}_{}", "0".repeat(16), "0".repeat(64)),
    ] {
        let client = server.client_with_key(key);
        assert_eq!(
            code(client.list_numbers(pb::ListNumbersRequest::default()).await),
            Code::Unauthenticated,
            "{key}"
        );
    }
    // The right key id with a wrong secret.
    let forged = server.client_with_key(&format!("ocx_{}_{}", c.key_id, "a".repeat(64)));
    assert_eq!(
        code(forged.list_numbers(pb::ListNumbersRequest::default()).await),
        Code::Unauthenticated
    );

    // Valid, then revoked: the next call fails.
    c.client
        .list_numbers(pb::ListNumbersRequest::default())
        .await
        .expect("valid key works");
    let revoked = platform.revoke_api_key(&c.key_id).await.expect("revoke");
    assert!(revoked.revoke_time.is_some());
    assert_eq!(
        code(
            c.client
                .list_numbers(pb::ListNumbersRequest::default())
                .await
        ),
        Code::Unauthenticated
    );
    // Revoking twice is harmless; an unknown key id is NOT_FOUND.
    platform
        .revoke_api_key(&c.key_id)
        .await
        .expect("revoke again");
    assert_eq!(
        code(platform.revoke_api_key("ffffffffffffffff").await),
        Code::NotFound
    );
}

#[tokio::test]
async fn carrier_keys_cannot_call_platform_or_admin_methods() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let c = carrier(&platform, "acme-tel").await;
    let k = &c.client;
    let t = tenant(1);
    assert_eq!(
        code(k.create_carrier("evil-tel", "Evil").await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(k.list_carriers(Default::default()).await),
        Code::PermissionDenied
    );
    let key_req = pb::CreateApiKeyRequest {
        role: pb::ApiKeyRole::Platform as i32,
        ..Default::default()
    };
    assert_eq!(
        code(k.create_api_key(key_req).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(k.revoke_api_key(&c.key_id).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(k.list_api_keys(Default::default()).await),
        Code::PermissionDenied
    );
    let grant = pb::GrantConsentRequest {
        carrier_id: c.carrier_id.clone(),
        tenant_id: t.clone(),
        ..Default::default()
    };
    assert_eq!(code(k.grant_consent(grant).await), Code::PermissionDenied);
    assert_eq!(
        code(k.revoke_consent(&c.carrier_id, &t).await),
        Code::PermissionDenied
    );
    let assign = pb::AssignNumberRequest {
        request_id: String::new(),
        number: "+442079460001".into(),
        tenant_id: t.clone(),
        assignment_type: pb::AssignmentType::User as i32,
        sip_uri: "sip:a@b.com".into(),
        user_id: String::new(),
    };
    assert_eq!(code(k.assign_number(assign).await), Code::PermissionDenied);
    assert_eq!(
        code(k.unassign_number("+442079460001", &t).await),
        Code::PermissionDenied
    );
    // And the carrier key still works for its own methods.
    k.list_consents(Default::default())
        .await
        .expect("own consents");
}

#[tokio::test]
async fn carrier_naming_another_carrier_is_permission_denied_and_platform_must_name_one() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    carrier(&platform, "bravo-tel").await;
    let other = pb::ListNumbersRequest {
        carrier_id: "bravo-tel".into(),
        ..Default::default()
    };
    assert_eq!(
        code(a.client.list_numbers(other.clone()).await),
        Code::PermissionDenied
    );
    let own = pb::ListNumbersRequest {
        carrier_id: "acme-tel".into(),
        ..Default::default()
    };
    a.client
        .list_numbers(own)
        .await
        .expect("naming itself is fine");
    assert_eq!(
        code(
            a.client
                .watch_number_events("bravo-tel", 0)
                .await
                .map(|_| ())
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(a.client.get_number("bravo-tel", "+442079460001").await),
        Code::PermissionDenied
    );

    // Platform: carrier_id is required and must exist.
    let err = platform
        .list_numbers(Default::default())
        .await
        .expect_err("platform must name a carrier");
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    assert_eq!(err.violations()[0].field, "carrier_id");
    let ghost = pb::ListNumbersRequest {
        carrier_id: "ghost-tel".into(),
        ..Default::default()
    };
    assert_eq!(code(platform.list_numbers(ghost).await), Code::NotFound);
    platform
        .list_numbers(other)
        .await
        .expect("platform reads any carrier");
}

#[tokio::test]
async fn admin_carriers_and_keys() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    for id in ["charlie-tel", "alpha-tel", "bravo-tel"] {
        let created = platform.create_carrier(id, "Name").await.expect("create");
        assert_eq!(created.carrier_id, id);
        assert!(created.create_time.is_some());
    }
    assert_eq!(
        code(platform.create_carrier("alpha-tel", "Again").await),
        Code::AlreadyExists
    );
    let bad = platform
        .create_carrier("Bad_Id", "")
        .await
        .expect_err("invalid");
    let fields: Vec<&str> = bad.violations().iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["carrier_id", "display_name"]);

    // Paging through carriers two at a time, in id order.
    let first = platform
        .list_carriers(pb::ListCarriersRequest {
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .expect("page 1");
    assert_eq!(first.total_size, 3);
    let ids: Vec<_> = first
        .carriers
        .iter()
        .map(|c| c.carrier_id.as_str())
        .collect();
    assert_eq!(ids, ["alpha-tel", "bravo-tel"]);
    let second = platform
        .list_carriers(pb::ListCarriersRequest {
            page_size: 2,
            page_token: first.next_page_token,
        })
        .await
        .expect("page 2");
    assert_eq!(second.carriers.len(), 1);
    assert_eq!(second.carriers[0].carrier_id, "charlie-tel");
    assert!(second.next_page_token.is_empty());

    // Keys: secret once, listed without it, last use recorded, carrier must exist.
    let created = platform
        .create_api_key(pb::CreateApiKeyRequest {
            request_id: String::new(),
            role: pb::ApiKeyRole::Carrier as i32,
            carrier_id: "alpha-tel".into(),
            display_name: "billing".into(),
        })
        .await
        .expect("create key");
    let meta = created.api_key.clone().expect("meta");
    assert!(created.secret.starts_with(&format!("ocx_{}_", meta.key_id)));
    let listed = platform
        .list_api_keys(pb::ListApiKeysRequest {
            carrier_id: "alpha-tel".into(),
            ..Default::default()
        })
        .await
        .expect("list keys");
    assert_eq!(listed.api_keys.len(), 1);
    assert!(
        listed.api_keys[0].last_use_time.is_none(),
        "unused key has no last use"
    );
    assert!(
        !format!("{listed:?}").contains(&created.secret[20..]),
        "secret must never be listed"
    );

    let alpha = platform.with_key(created.secret).expect("client");
    alpha
        .list_consents(Default::default())
        .await
        .expect("use the key");
    let listed = platform
        .list_api_keys(pb::ListApiKeysRequest {
            carrier_id: "alpha-tel".into(),
            ..Default::default()
        })
        .await
        .expect("list keys");
    let used = listed.api_keys[0].last_use_time.expect("last use recorded");
    assert!(used.seconds >= meta.create_time.expect("create time").seconds);

    let ghost = pb::CreateApiKeyRequest {
        role: pb::ApiKeyRole::Carrier as i32,
        carrier_id: "ghost-tel".into(),
        ..Default::default()
    };
    assert_eq!(code(platform.create_api_key(ghost).await), Code::NotFound);
    let unknown_role = platform
        .create_api_key(pb::CreateApiKeyRequest {
            role: 9,
            ..Default::default()
        })
        .await
        .expect_err("bad role");
    assert_eq!(unknown_role.code(), Some(Code::InvalidArgument));
    assert_eq!(unknown_role.violations()[0].field, "role");

    // A second platform key works like the first.
    let p2 = platform
        .create_api_key(pb::CreateApiKeyRequest {
            role: pb::ApiKeyRole::Platform as i32,
            ..Default::default()
        })
        .await
        .expect("platform key");
    let p2 = platform.with_key(p2.secret).expect("client");
    p2.list_carriers(Default::default())
        .await
        .expect("second platform key");
}

#[tokio::test]
async fn consents_grant_list_revoke() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    let b = carrier(&platform, "bravo-tel").await;
    let granted = platform
        .grant_consent(pb::GrantConsentRequest {
            request_id: String::new(),
            carrier_id: "acme-tel".into(),
            tenant_id: tenant(1).to_uppercase(),
            consented_countries: vec!["US".into(), "GB".into()],
            contact: Some(pb::Contact {
                full_name: "Ada".into(),
                email: "ada@contoso.com".into(),
                ..Default::default()
            }),
            status: 0,
        })
        .await
        .expect("grant");
    assert_eq!(
        granted.tenant_id,
        tenant(1),
        "tenant ids are stored lower case"
    );
    assert_eq!(granted.status, pb::ConsentStatus::Active as i32);
    assert_eq!(granted.consented_countries, ["GB", "US"]);
    consent(&platform, "acme-tel", &tenant(2)).await;
    consent(&platform, "bravo-tel", &tenant(3)).await;

    let mine = a
        .client
        .list_consents(Default::default())
        .await
        .expect("list");
    let tenants: Vec<_> = mine.consents.iter().map(|c| c.tenant_id.clone()).collect();
    assert_eq!(
        tenants,
        [tenant(1), tenant(2)],
        "a carrier sees only its own consents"
    );
    let theirs = b
        .client
        .list_consents(Default::default())
        .await
        .expect("list");
    assert_eq!(theirs.consents.len(), 1);

    let removed = platform
        .revoke_consent("acme-tel", &tenant(2))
        .await
        .expect("revoke");
    assert_eq!(removed.status, pb::ConsentStatus::Removed as i32);
    let active = a
        .client
        .list_consents(pb::ListConsentsRequest {
            status: pb::ConsentStatus::Active as i32,
            ..Default::default()
        })
        .await
        .expect("filter");
    assert_eq!(active.consents.len(), 1);
    assert_eq!(active.total_size, 1);
    assert_eq!(
        code(platform.revoke_consent("acme-tel", &tenant(9)).await),
        Code::NotFound
    );

    // Invalid input: every violation at once.
    let err = platform
        .grant_consent(pb::GrantConsentRequest {
            request_id: String::new(),
            carrier_id: "acme-tel".into(),
            tenant_id: String::new(),
            consented_countries: vec!["gb".into()],
            contact: None,
            status: 42,
        })
        .await
        .expect_err("invalid");
    let fields: Vec<_> = err.violations().iter().map(|v| v.field.clone()).collect();
    assert_eq!(fields, ["tenant_id", "status", "consented_countries[0]"]);
    assert_eq!(
        code(
            platform
                .grant_consent(pb::GrantConsentRequest {
                    carrier_id: "ghost-tel".into(),
                    tenant_id: tenant(1),
                    ..Default::default()
                })
                .await
        ),
        Code::NotFound
    );
}

#[tokio::test]
async fn health_and_reflection_need_no_key() {
    let server = TestServer::start().await;
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "ocx.v1.NumberService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflect")
        .into_inner();
    let response = stream
        .message()
        .await
        .expect("message")
        .expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "ocx.v1.AdminService",
        "ocx.v1.ConsentService",
        "ocx.v1.NumberService",
        "ocx.v1.PlatformService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }

    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
    let mut alpha = AlphaClient::new(channel);
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut stream = alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflect v1alpha")
        .into_inner();
    assert!(stream.message().await.expect("message").is_some());
}

#[tokio::test]
async fn revoking_a_key_ends_the_streams_it_opened() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    consent(&platform, "acme-tel", &tenant(1)).await;
    ocx_testkit::provision(&a.client, &tenant(1), &["+442079460001".into()]).await;
    let mut watch = Box::pin(a.client.watch_number_events("", 0).await.expect("watch"));
    let mut feed = Box::pin(a.client.stream_call_records("", 0).await.expect("feed"));
    use futures_util::StreamExt;
    assert_eq!(watch.next().await.expect("event").expect("ok").sequence, 1);

    platform.revoke_api_key(&a.key_id).await.expect("revoke");
    // The next commit wakes both streams; they must end instead of delivering.
    platform
        .upload_numbers(pb::UploadNumbersRequest {
            request_id: String::new(),
            carrier_id: "acme-tel".into(),
            numbers: vec![ocx_testkit::item("+442079460002", &tenant(1))],
        })
        .await
        .expect("platform upload");
    ocx_testkit::ingest(
        &platform,
        vec![ocx_testkit::call(
            "c1",
            pb::CallDirection::Inbound,
            "+442079460001",
            "+33142685300",
            &tenant(1),
            10,
        )],
    )
    .await;
    let err = watch.next().await.expect("an item").expect_err("revoked");
    assert_eq!(err.code(), Some(Code::Unauthenticated));
    let err = feed.next().await.expect("an item").expect_err("revoked");
    assert_eq!(err.code(), Some(Code::Unauthenticated));
}

#[tokio::test]
async fn oversized_input_is_invalid_argument_with_a_short_message() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    let huge = format!("+{}", "9".repeat(20_000));
    let err = a.client.get_number("", &huge).await.expect_err("invalid");
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    assert!(
        err.to_string().len() < 400,
        "the message quotes a bounded part of the value: {} bytes",
        err.to_string().len()
    );
    let err = platform
        .revoke_api_key(&"x".repeat(10_000))
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    let err = a
        .client
        .get_call_record("", &"c".repeat(20_000))
        .await
        .expect_err("missing");
    assert_eq!(err.code(), Some(Code::NotFound));
    assert!(err.to_string().len() < 400);
}

//! Request ids (AIP-155): a retried write answers like the first attempt and changes nothing,
//! also when 50 retries race and across a restart; the same id for a different request is
//! ALREADY_EXISTS; ids are per API key; a malformed id is INVALID_ARGUMENT.

use ocx_client::pb;
use ocx_testkit::{TestServer, carrier, consent, item, numbers, provision, tenant};
use tonic::Code;

const ID: &str = "4f3c1a2b-8d9e-4f60-a1b2-c3d4e5f60718";

fn upload(numbers: &[String], tenant: &str, request_id: &str) -> pb::UploadNumbersRequest {
    pb::UploadNumbersRequest {
        carrier_id: String::new(),
        numbers: numbers.iter().map(|n| item(n, tenant)).collect(),
        request_id: request_id.into(),
    }
}

#[tokio::test]
async fn a_retry_answers_like_the_first_attempt_and_changes_nothing() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "idem-tel").await;
    let t = tenant(1);
    consent(&platform, "idem-tel", &t).await;
    let batch = numbers("+4420791", 0, 5);

    let first = a
        .client
        .upload_numbers(upload(&batch, &t, ID))
        .await
        .expect("first");
    assert_eq!(first.created_count, 5);
    let retry = a
        .client
        .upload_numbers(upload(&batch, &t, ID))
        .await
        .expect("retry");
    assert_eq!(
        retry, first,
        "the retry gets the first answer, created and all"
    );

    // Without the id, the same upload is a new request: everything is unchanged.
    let again = a
        .client
        .upload_numbers(upload(&batch, &t, ""))
        .await
        .expect("again");
    assert_eq!(again.unchanged_count, 5);

    // The same id for something else is refused, and does nothing.
    let other = numbers("+4420791", 100, 1);
    let err = a
        .client
        .upload_numbers(upload(&other, &t, ID))
        .await
        .expect_err("a reused id");
    assert_eq!(err.code(), Some(Code::AlreadyExists), "{err:?}");
    assert!(err.to_string().contains("different request"), "{err}");
    let listed = a
        .client
        .list_numbers(pb::ListNumbersRequest::default())
        .await
        .expect("list");
    assert_eq!(
        listed.phone_numbers.len(),
        5,
        "the refused request stored nothing"
    );

    // Ids belong to the API key: another key of the same carrier may use the same one.
    let key = platform
        .create_api_key(pb::CreateApiKeyRequest {
            role: pb::ApiKeyRole::Carrier.into(),
            carrier_id: "idem-tel".into(),
            display_name: "second".into(),
            request_id: String::new(),
        })
        .await
        .expect("second key");
    let b = platform.with_key(key.secret).expect("client");
    let theirs = b
        .upload_numbers(upload(&batch, &t, ID))
        .await
        .expect("other key");
    assert_eq!(theirs.unchanged_count, 5);

    // Not a UUID.
    let err = a
        .client
        .upload_numbers(upload(&batch, &t, "retry-1"))
        .await
        .expect_err("not a uuid");
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    assert_eq!(err.violations()[0].field, "request_id");
}

#[tokio::test]
async fn fifty_concurrent_retries_have_one_effect_and_one_answer() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "race-tel").await;
    let t = tenant(2);
    consent(&platform, "race-tel", &t).await;
    let number = numbers("+4420792", 0, 1);
    provision(&a.client, &t, &number).await;
    let before = a.client.get_number("", &number[0]).await.expect("number");

    let assign = pb::AssignNumberRequest {
        number: number[0].clone(),
        tenant_id: t.clone(),
        assignment_type: pb::AssignmentType::User.into(),
        sip_uri: "sip:race@contoso.example".into(),
        user_id: "race-user".into(),
        request_id: ID.into(),
    };
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let (platform, assign) = (platform.clone(), assign.clone());
            tokio::spawn(async move { platform.assign_number(assign).await })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.expect("task").expect("assigned"));
    }
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "50 retries, one answer"
    );
    let after = a.client.get_number("", &number[0]).await.expect("number");
    assert_eq!(after.version, before.version + 1, "one effect");
    assert_eq!(answers[0].version, after.version);

    // 50 concurrent uploads of one batch under one id: each answer says created.
    let batch = numbers("+4420792", 100, 5);
    let uploads: Vec<_> = (0..50)
        .map(|_| {
            let (client, request) = (a.client.clone(), upload(&batch, &t, ID));
            tokio::spawn(async move { client.upload_numbers(request).await })
        })
        .collect();
    for upload in uploads {
        let answer = upload.await.expect("task").expect("uploaded");
        assert_eq!(answer.created_count, 5, "{answer:?}");
    }
}

#[tokio::test]
async fn request_ids_are_honoured_across_a_restart() {
    let mut server = TestServer::start().await;
    let platform = server.platform().await;
    let first = platform
        .grant_consent(pb::GrantConsentRequest {
            carrier_id: "restart-tel".into(),
            tenant_id: tenant(3),
            request_id: ID.into(),
            ..Default::default()
        })
        .await;
    // No such carrier yet: errors are not recorded, so the same id works once it exists.
    assert_eq!(first.expect_err("no carrier").code(), Some(Code::NotFound));
    platform
        .create_carrier("restart-tel", "Restart")
        .await
        .expect("carrier");
    let grant = pb::GrantConsentRequest {
        carrier_id: "restart-tel".into(),
        tenant_id: tenant(3),
        request_id: ID.into(),
        ..Default::default()
    };
    let first = platform
        .grant_consent(grant.clone())
        .await
        .expect("granted");

    server.restart().await;
    let platform = server.platform().await;
    let retry = platform.grant_consent(grant.clone()).await.expect("retry");
    assert_eq!(retry, first, "the first answer, after a restart");
    let err = platform
        .grant_consent(pb::GrantConsentRequest {
            status: pb::ConsentStatus::Suspended.into(),
            ..grant
        })
        .await
        .expect_err("same id, other request");
    assert_eq!(err.code(), Some(Code::AlreadyExists));
}

#[tokio::test]
async fn a_retried_create_api_key_names_the_key_it_created() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    platform
        .create_carrier("key-tel", "Key")
        .await
        .expect("carrier");
    let request = pb::CreateApiKeyRequest {
        role: pb::ApiKeyRole::Carrier.into(),
        carrier_id: "key-tel".into(),
        display_name: "once".into(),
        request_id: ID.into(),
    };
    let created = platform
        .create_api_key(request.clone())
        .await
        .expect("created");
    let key_id = created.api_key.expect("metadata").key_id;
    let err = platform
        .create_api_key(request)
        .await
        .expect_err("the secret is not shown twice");
    assert_eq!(err.code(), Some(Code::AlreadyExists));
    assert!(err.to_string().contains(&key_id), "{err}");
    let keys = platform
        .list_api_keys(pb::ListApiKeysRequest {
            carrier_id: "key-tel".into(),
            ..Default::default()
        })
        .await
        .expect("keys");
    assert_eq!(keys.api_keys.len(), 1, "no second key");
}

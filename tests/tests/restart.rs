//! Durability: what was acknowledged is there after a restart on the same database file.

use futures_util::{StreamExt, TryStreamExt};
use ocx_client::pb;
use ocx_e2e::{TestServer, carrier, consent, numbers, provision, tenant};

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

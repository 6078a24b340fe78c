//! The real `ocx-server` binary: first start writes the platform key (mode 0600), `--demo`
//! seeds data a newcomer can call at once, and a second start on the same directory keeps
//! everything and issues no new platform key.

use crate::OCX_SERVER;
use ocx_client::{Client, pb};
use ocx_testkit::process::key;

#[tokio::test]
async fn demo_start_writes_private_keys_and_serves_the_demo_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, endpoint) = OCX_SERVER.start(dir.path(), true);
    let platform_key = dir.path().join("platform.key");
    let carrier_key = dir.path().join("demo-carrier.key");
    #[cfg(unix)]
    for file in [&platform_key, &carrier_key] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file)
            .expect("key file")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{} must be private", file.display());
    }

    let carrier = Client::connect(endpoint.clone(), key(&carrier_key))
        .await
        .expect("connect");
    let numbers = carrier
        .list_numbers(pb::ListNumbersRequest::default())
        .await
        .expect("list");
    assert_eq!(numbers.total_size, 26);
    let assigned: Vec<_> = numbers
        .phone_numbers
        .iter()
        .filter(|n| !n.sip_uri.is_empty())
        .collect();
    assert_eq!(assigned.len(), 5);
    assert_eq!(
        carrier
            .list_consents(Default::default())
            .await
            .expect("consents")
            .consents
            .len(),
        2
    );
    let platform = Client::connect(endpoint, key(&platform_key))
        .await
        .expect("connect");
    let carriers = platform
        .list_carriers(Default::default())
        .await
        .expect("carriers");
    assert_eq!(carriers.carriers[0].carrier_id, "demo-carrier");
    drop(server);

    // Second start: same keys work, no new platform key, demo not seeded twice.
    let first_platform_key = key(&platform_key);
    let (_server, endpoint) = OCX_SERVER.start(dir.path(), true);
    assert_eq!(key(&platform_key), first_platform_key);
    let platform = Client::connect(endpoint, first_platform_key)
        .await
        .expect("connect");
    let keys = platform
        .list_api_keys(Default::default())
        .await
        .expect("keys");
    assert_eq!(
        keys.total_size, 2,
        "one platform key and one demo carrier key"
    );
    let numbers = platform
        .list_numbers(pb::ListNumbersRequest {
            carrier_id: "demo-carrier".into(),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(numbers.total_size, 26);
}

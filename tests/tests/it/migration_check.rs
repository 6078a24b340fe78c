//! The migration check: see `migration`.

use ocx_client::pb;
use ocx_testkit::TestServer;

use crate::migration::{CARRIER, answers, fixture_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_previous_release_opens_and_answers_the_same() {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
    std::fs::copy(fixture_dir().join("ocx.db"), dir.path().join("ocx.db")).expect("copy fixture");
    let key = std::fs::read_to_string(fixture_dir().join("platform.key")).expect("key");
    // Opening the file runs the migrations: the pairing state is built here, once.
    let server = TestServer::open_in(dir, ocx_server::Config::default(), key.trim()).await;
    let platform = server.platform().await;
    let created = platform
        .create_api_key(pb::CreateApiKeyRequest {
            role: pb::ApiKeyRole::Carrier.into(),
            carrier_id: CARRIER.into(),
            display_name: "after the upgrade".into(),
            ..Default::default()
        })
        .await
        .expect("carrier key");
    let carrier = platform.with_key(created.secret).expect("carrier client");
    let expected = std::fs::read_to_string(fixture_dir().join("answers.txt")).expect("answers");
    let expected: Vec<&str> = expected.lines().collect();
    let got = answers(&carrier, &platform).await;
    assert_eq!(got.len(), expected.len(), "another number of answers");
    for (got, expected) in got.iter().zip(&expected) {
        assert_eq!(got, expected);
    }
    for kind in ["summary", "discrepancy", "usage"] {
        assert!(
            expected.iter().any(|a| a.starts_with(kind)),
            "the fixture has no {kind} answer"
        );
    }
}

//! The store conformance suite against the PostgreSQL backend, each check in a fresh schema of
//! the database named by `OCX_TEST_POSTGRES` (`.ci/run` starts a throwaway cluster and sets
//! it; `scripts/pg-cluster.sh` does the same by hand). Without the variable the test says so
//! and passes, except under `CI=true`, where it fails.

use std::sync::Arc;

use ocx_server::store::Store;
use ocx_server::store::postgres::testing::TestPostgres;
use ocx_server::store::postgres::{PgOptions, PgStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_store_conformance_suite() {
    let Some(server) = TestPostgres::from_env() else {
        return;
    };
    let counter = std::sync::atomic::AtomicUsize::new(0);
    ocx_server::store::conformance::run_all(|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let server = server.clone();
        async move {
            let url = server.fresh_schema(&format!("conformance_{n}")).await;
            Arc::new(
                PgStore::connect(&url, PgOptions::default())
                    .await
                    .expect("connect"),
            ) as Arc<dyn Store>
        }
    })
    .await;
}

/// A value PostgreSQL cannot hold (a NUL character in text) that reaches a query is the
/// caller's error, INVALID_ARGUMENT, not INTERNAL; and the message carries no database text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_is_invalid_argument() {
    let Some(server) = TestPostgres::from_env() else {
        return;
    };
    let url = server.fresh_schema("nul").await;
    let store = PgStore::connect(&url, PgOptions::default())
        .await
        .expect("connect");
    match store.get_call_record("acme", "call\0id").await {
        Err(ocx_server::store::StoreError::InvalidArgument(message)) => {
            assert!(message.contains("SQLSTATE 22"), "{message}");
            assert!(!message.contains("call"), "{message}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    // The store still serves.
    assert!(
        store
            .get_call_record("acme", "call-id")
            .await
            .expect("get")
            .is_none()
    );
}

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

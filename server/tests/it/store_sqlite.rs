//! The store conformance suite against the SQLite backend, each check on a fresh temp file.

use std::sync::Arc;

use ocx_server::store::Store;
use ocx_server::store::sqlite::SqliteStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_the_store_conformance_suite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let counter = std::sync::atomic::AtomicUsize::new(0);
    crate::conformance::run_all(|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.path().join(format!("store-{n}.db"));
        async move { Arc::new(SqliteStore::open(&path).expect("open")) as Arc<dyn Store> }
    })
    .await;
}

//! The store conformance suite against the PostgreSQL backend, each check in a fresh schema of
//! the database named by `OCX_TEST_POSTGRES` (`.ci/run` starts a throwaway cluster and sets
//! it; `scripts/pg-cluster.sh` does the same by hand). Without the variable the test says so
//! and passes, except under `CI=true`, where it fails.

use std::sync::Arc;

use ocx_server::store::Store;
use ocx_server::store::postgres::{PgOptions, PgStore};
use ocx_testkit::postgres::TestPostgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_store_conformance_suite() {
    let Some(server) = TestPostgres::from_env() else {
        return;
    };
    let counter = std::sync::atomic::AtomicUsize::new(0);
    crate::conformance::run_all(|| {
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

/// Two replicas (two stores on one database) answer the same request id at the same moment:
/// whichever commits first, the other answers with its recorded outcome, never with the
/// refusal its twin's write caused (here: ALREADY_EXISTS for the carrier the twin created).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_id_raced_on_two_replicas_gets_one_answer() {
    use ocx_server::domain::Carrier;
    use ocx_server::store::request::{RequestKey, with_request};
    let Some(server) = TestPostgres::from_env() else {
        return;
    };
    let url = server.fresh_schema("twins").await;
    let a = Arc::new(
        PgStore::connect(&url, PgOptions::default())
            .await
            .expect("a"),
    );
    let b = Arc::new(
        PgStore::connect(&url, PgOptions::default())
            .await
            .expect("b"),
    );
    for round in 0..40 {
        let key = RequestKey {
            key_id: "platform-key".into(),
            request_id: format!("00000000-0000-4000-8000-{round:012}"),
            rpc: "CreateCarrier",
            fingerprint: [round as u8; 32],
        };
        let carrier = Carrier {
            carrier_id: format!("twin-{round}"),
            display_name: "Twin".into(),
            create_time: 1,
        };
        let on = |store: Arc<PgStore>| {
            let (key, carrier) = (key.clone(), carrier.clone());
            tokio::spawn(
                async move { with_request(Some(key), store.create_carrier(carrier)).await },
            )
        };
        let (first, second) = (on(Arc::clone(&a)), on(Arc::clone(&b)));
        let first = first.await.expect("task").expect("first answer");
        let second = second.await.expect("task").expect("second answer");
        assert_eq!(first, second, "round {round}: one answer for both");
        assert_eq!(first.carrier_id, carrier.carrier_id);
    }
    let page = a.list_carriers(None, 100).await.expect("list");
    assert_eq!(page.total, 40, "each round created its carrier once");
}

/// A read whose caller stops waiting (a deadline, a client gone) is cancelled in PostgreSQL,
/// not left running: here the read waits on a table lock another session holds, the caller
/// gives up after 200 ms, and the waiting query disappears from `pg_stat_activity` while the
/// lock is still held. The store keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_read_is_cancelled() {
    let Some(server) = TestPostgres::from_env() else {
        return;
    };
    let url = server.fresh_schema("abandoned").await;
    let store = PgStore::connect(&url, PgOptions::default())
        .await
        .expect("connect");
    let (mut locker, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let lock = locker.transaction().await.expect("begin");
    lock.batch_execute("LOCK TABLE carriers IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");

    let waiting = "SELECT count(*) FROM pg_stat_activity
                    WHERE wait_event_type = 'Lock' AND query LIKE '%FROM carriers%'";
    let (observer, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let count = || async {
        let n: i64 = observer
            .query_one(waiting, &[])
            .await
            .expect("count")
            .get(0);
        n
    };
    let gave_up = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        store.get_carrier("acme"),
    )
    .await;
    assert!(gave_up.is_err(), "the read waits on the lock");
    // The cancellation is sent as the read is dropped; it lands within a bounded time.
    let started = std::time::Instant::now();
    while count().await > 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the abandoned read is still waiting in PostgreSQL"
        );
        tokio::task::yield_now().await;
    }
    lock.rollback().await.expect("unlock");
    assert!(store.get_carrier("acme").await.expect("read").is_none());
}

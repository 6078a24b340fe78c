//! Test support: a PostgreSQL server named by `OCX_TEST_POSTGRES`, and a fresh, empty schema
//! in it for each store a test opens (so tests share one throwaway cluster without seeing each
//! other's rows).

use std::sync::atomic::{AtomicU64, Ordering};

use tokio_postgres::NoTls;

/// The variable that names the test server: a `postgres://` URL of a database the tests may
/// create schemas in.
pub const ENV: &str = "OCX_TEST_POSTGRES";

/// A PostgreSQL server for tests.
#[derive(Debug, Clone)]
pub struct TestPostgres {
    url: String,
}

impl TestPostgres {
    /// The server at `url`.
    pub fn new(url: String) -> TestPostgres {
        TestPostgres { url }
    }

    /// The server named by [`ENV`]. Without it: under `CI=true` a panic (CI must run the
    /// PostgreSQL tests), elsewhere `None` and a line saying the test did not run.
    pub fn from_env() -> Option<TestPostgres> {
        match std::env::var(ENV) {
            Ok(url) if !url.is_empty() => Some(TestPostgres { url }),
            _ => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "{ENV} is not set: .ci/run starts a PostgreSQL cluster and sets it"
                );
                eprintln!(
                    "{ENV} is not set: the PostgreSQL test did not run \
                     (eval \"$(scripts/pg-cluster.sh start)\" starts a throwaway cluster)"
                );
                None
            }
        }
    }

    /// Creates an empty schema (its name starts with `prefix`, then this process's id and a
    /// counter) and returns a URL whose connections use it.
    pub async fn fresh_schema(&self, prefix: &str) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let schema = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        )
        .to_lowercase()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to {ENV}={}: {e}", self.url));
        let connection = tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ))
            .await
            .unwrap_or_else(|e| panic!("creating schema {schema}: {e}"));
        drop(client);
        let _ = connection.await;
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-csearch_path%3D{schema}", self.url)
    }
}

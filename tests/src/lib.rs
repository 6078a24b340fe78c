//! # ocx-e2e
//!
//! Helpers for the end-to-end tests in `tests/`: a real OCX server (the same `run` the binary
//! calls) on a loopback port over a temp-file SQLite database, and SDK clients for the platform
//! and for carriers.
//!
//! ## Layout
//! - [`TestServer`]: start, stop, and restart a server on the same database file.
//! - [`Fixture`] helpers: carriers with keys, tenants with consent, numbers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ocx_client::{Client, pb};
use ocx_server::store::sqlite::SqliteStore;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The platform key (the bootstrap key of its database).
    pub platform_key: String,
    /// The database file.
    pub db_path: PathBuf,
    /// Keeps the temp dir alive for the server's lifetime (and across restarts).
    dir: Arc<tempfile::TempDir>,
    /// The configuration it runs with (kept across restarts).
    config: ocx_server::Config,
    /// Fires the graceful shutdown.
    stop: Option<oneshot::Sender<()>>,
    /// The serving task.
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

async fn serve(
    db_path: &Path,
    addr: SocketAddr,
    config: ocx_server::Config,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    JoinHandle<anyhow::Result<()>>,
) {
    let store = SqliteStore::open(db_path).expect("open store");
    let listener = TcpListener::bind(addr).await.expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(ocx_server::run_with(
        listener,
        Arc::new(store),
        config,
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop, task)
}

impl TestServer {
    /// A fresh database in a temp dir, served on `127.0.0.1:0` with the default configuration.
    pub async fn start() -> TestServer {
        TestServer::start_with(ocx_server::Config::default()).await
    }

    /// A fresh database in a temp dir, served on `127.0.0.1:0` with `config`.
    pub async fn start_with(config: ocx_server::Config) -> TestServer {
        TestServer::start_in(Arc::new(tempfile::tempdir().expect("temp dir")), config).await
    }

    /// A fresh database in `dir` (e.g. one the test mounted a small filesystem on), served on
    /// `127.0.0.1:0` with `config`.
    pub async fn start_in(dir: Arc<tempfile::TempDir>, config: ocx_server::Config) -> TestServer {
        let db_path = dir.path().join("ocx.db");
        let store = SqliteStore::open(&db_path).expect("open store");
        let platform_key = ocx_server::bootstrap::ensure_platform_key(&store, None)
            .await
            .expect("bootstrap")
            .expect("a fresh database has no platform key");
        drop(store);
        let (addr, stop, task) = serve(
            &db_path,
            "127.0.0.1:0".parse().expect("addr"),
            config.clone(),
        )
        .await;
        TestServer {
            addr,
            platform_key,
            db_path,
            dir,
            config,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `http://addr`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client with the platform key.
    pub async fn platform(&self) -> Client {
        Client::connect(self.endpoint(), self.platform_key.clone())
            .await
            .expect("connect")
    }

    /// A client with any key (or garbage) on a lazy channel.
    pub fn client_with_key(&self, key: &str) -> Client {
        let channel = tonic::transport::Endpoint::from_shared(self.endpoint())
            .expect("endpoint")
            .connect_lazy();
        Client::from_channel(channel, key).expect("client")
    }

    /// Shuts the server down gracefully and waits for it.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server run");
        }
    }

    /// Stops the server and starts a new one on the same database file and the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        let (addr, stop, task) = serve(&self.db_path, self.addr, self.config.clone()).await;
        assert_eq!(addr, self.addr);
        self.stop = Some(stop);
        self.task = Some(task);
    }

    /// The temp dir holding the database.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A deterministic tenant GUID for test `n`.
pub fn tenant(n: u32) -> String {
    format!("{n:08x}-0000-4000-8000-{n:012x}")
}

/// A carrier, its key's client, and a consenting tenant.
pub struct CarrierFixture {
    /// The carrier id.
    pub carrier_id: String,
    /// A client with the carrier's key.
    pub client: Client,
    /// The carrier's key id.
    pub key_id: String,
}

/// Creates a carrier and a carrier key for it.
pub async fn carrier(platform: &Client, carrier_id: &str) -> CarrierFixture {
    platform
        .create_carrier(carrier_id, &format!("{carrier_id} Ltd"))
        .await
        .expect("create carrier");
    let key = platform
        .create_api_key(pb::CreateApiKeyRequest {
            request_id: String::new(),
            role: pb::ApiKeyRole::Carrier as i32,
            carrier_id: carrier_id.into(),
            display_name: "tests".into(),
        })
        .await
        .expect("create key");
    let client = platform.with_key(key.secret).expect("client with key");
    let key_id = key.api_key.expect("key metadata").key_id;
    CarrierFixture {
        carrier_id: carrier_id.into(),
        client,
        key_id,
    }
}

/// Grants an active consent from `tenant` to `carrier_id` (any country).
pub async fn consent(platform: &Client, carrier_id: &str, tenant: &str) -> pb::Consent {
    platform
        .grant_consent(pb::GrantConsentRequest {
            carrier_id: carrier_id.into(),
            tenant_id: tenant.into(),
            ..Default::default()
        })
        .await
        .expect("grant consent")
}

/// An upload item with defaults.
pub fn item(number: &str, tenant: &str) -> pb::NumberUpload {
    pb::NumberUpload {
        number: number.into(),
        tenant_id: tenant.into(),
        ..Default::default()
    }
}

/// Uploads `numbers` to `tenant` and asserts each was created.
pub async fn provision(client: &Client, tenant: &str, numbers: &[String]) {
    let response = client
        .upload_numbers(pb::UploadNumbersRequest {
            request_id: String::new(),
            carrier_id: String::new(),
            numbers: numbers.iter().map(|n| item(n, tenant)).collect(),
        })
        .await
        .expect("upload");
    assert_eq!(
        response.created_count as usize,
        numbers.len(),
        "{response:?}"
    );
}

/// `count` numbers `+44 20 7946 xxxx` style from `start`.
pub fn numbers(prefix: &str, start: u32, count: u32) -> Vec<String> {
    (start..start + count)
        .map(|i| format!("{prefix}{i:06}"))
        .collect()
}

/// A valid call record: `direction` decides which of `tenant_number` / `far_end` is the caller.
pub fn call(
    call_id: &str,
    direction: pb::CallDirection,
    tenant_number: &str,
    far_end: &str,
    tenant: &str,
    start_secs: i64,
) -> pb::CallRecord {
    let (caller, callee, call_type) = match direction {
        pb::CallDirection::Inbound => (far_end, tenant_number, pb::CallType::UserIn),
        _ => (tenant_number, far_end, pb::CallType::UserOut),
    };
    pb::CallRecord {
        call_id: call_id.into(),
        correlation_id: format!("{call_id}@sbc.example"),
        version: 1,
        tenant_id: tenant.into(),
        call_type: call_type as i32,
        direction: direction as i32,
        caller_number: caller.into(),
        callee_number: callee.into(),
        start_time: Some(prost_types::Timestamp {
            seconds: start_secs,
            nanos: 0,
        }),
        end_time: Some(prost_types::Timestamp {
            seconds: start_secs + 60,
            nanos: 0,
        }),
        final_sip_code: 200,
        final_sip_phrase: "OK".into(),
        q850_cause: 16,
        successful: true,
        ..Default::default()
    }
}

/// Ingests `records` as one batch and returns its acknowledgement.
pub async fn ingest(
    platform: &Client,
    records: Vec<pb::CallRecord>,
) -> pb::IngestCallRecordsResponse {
    use futures_util::StreamExt;
    let acks = platform
        .ingest_call_records(futures_util::stream::iter([records]))
        .await
        .expect("open ingest");
    let mut acks = Box::pin(acks);
    let ack = acks
        .next()
        .await
        .expect("one acknowledgement")
        .expect("acknowledged");
    assert!(
        acks.next().await.is_none(),
        "exactly one acknowledgement per batch"
    );
    ack
}

/// A duration report for `call_id` (may be empty) / `correlation_id`, starting at `start_secs`.
pub fn report(
    record_id: &str,
    call_id: &str,
    correlation_id: &str,
    start_secs: i64,
    duration_micros: i64,
) -> pb::CallDurationReport {
    pb::CallDurationReport {
        record_id: record_id.into(),
        call_id: call_id.into(),
        correlation_id: correlation_id.into(),
        caller_number: "+442079460001".into(),
        callee_number: "+33142685300".into(),
        start_time: Some(prost_types::Timestamp {
            seconds: start_secs,
            nanos: 0,
        }),
        duration: Some(prost_types::Duration {
            seconds: duration_micros.div_euclid(1_000_000),
            nanos: (duration_micros.rem_euclid(1_000_000) * 1000) as i32,
        }),
    }
}

/// A timestamp at `secs`.
pub fn at(secs: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: secs,
        nanos: 0,
    })
}

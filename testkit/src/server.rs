//! A real OCX server in this process (the same `run` the binary calls) on a loopback port over
//! a temp-file SQLite database: start, stop, restart on the same file and port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ocx_client::Client;
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
        TestServer::start_seeded(dir, config, false).await
    }

    /// A fresh database with the demo data (`--demo`: the demo carrier, its tenants, numbers,
    /// calls and reports; its key in `dir()/demo-carrier.key`), served on `127.0.0.1:0`.
    pub async fn start_demo() -> TestServer {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        TestServer::start_seeded(dir, ocx_server::Config::default(), true).await
    }

    /// A fresh database in `dir`, with the demo data if `demo`, served with `config`.
    async fn start_seeded(
        dir: Arc<tempfile::TempDir>,
        config: ocx_server::Config,
        demo: bool,
    ) -> TestServer {
        let db_path = dir.path().join("ocx.db");
        let store = SqliteStore::open(&db_path).expect("open store");
        let platform_key = ocx_server::bootstrap::ensure_platform_key(&store, None)
            .await
            .expect("bootstrap")
            .expect("a fresh database has no platform key");
        if demo {
            ocx_server::bootstrap::seed_demo(&store, dir.path())
                .await
                .expect("demo data");
        }
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

    /// The database `dir/ocx.db` as it is (a fixture, say), whose platform key is
    /// `platform_key`, served on `127.0.0.1:0` with `config`: opening it runs the migrations.
    pub async fn open_in(
        dir: Arc<tempfile::TempDir>,
        config: ocx_server::Config,
        platform_key: &str,
    ) -> TestServer {
        let db_path = dir.path().join("ocx.db");
        let (addr, stop, task) = serve(
            &db_path,
            "127.0.0.1:0".parse().expect("addr"),
            config.clone(),
        )
        .await;
        TestServer {
            addr,
            platform_key: platform_key.to_owned(),
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

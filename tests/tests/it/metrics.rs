//! The Prometheus endpoint: scraped after a scenario, it counts what happened.

use std::sync::Arc;

use ocx_client::{Client, pb};
use ocx_server::store::sqlite::SqliteStore;
use ocx_testkit::{call, carrier, consent, ingest, numbers, provision, tenant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET /metrics` over plain HTTP/1.1; the body.
pub(crate) async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: ocx\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// The value of the sample `name` whose labels include every `labels` pair.
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.split(['{', ' '])
                .next()
                .is_some_and(|metric| metric == name)
        })
        .find(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// A server on loopback with its metrics endpoint, on a fresh SQLite file.
pub(crate) struct MetricsServer {
    /// The gRPC endpoint.
    pub endpoint: String,
    /// The platform key.
    pub key: String,
    /// Where `/metrics` is served.
    pub metrics_addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl MetricsServer {
    pub(crate) async fn start() -> MetricsServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("ocx.db")).expect("store");
        let key = ocx_server::bootstrap::ensure_platform_key(&store, None)
            .await
            .expect("bootstrap")
            .expect("key");
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let (endpoint, metrics_addr) = (
            format!("http://{}", grpc.local_addr().expect("addr")),
            metrics.local_addr().expect("addr"),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(ocx_server::run_with_metrics(
            grpc,
            Some(metrics),
            Arc::new(store),
            ocx_server::Config::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        MetricsServer {
            endpoint,
            key,
            metrics_addr,
            stop,
            server,
            _dir: dir,
        }
    }

    /// Stops the server; it must stop cleanly.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        self.server.await.expect("join").expect("server");
    }
}

#[tokio::test]
async fn a_scrape_after_a_scenario_counts_calls_rows_streams_and_bytes() {
    let server = MetricsServer::start().await;
    let (endpoint, key, metrics_addr) = (
        server.endpoint.clone(),
        server.key.clone(),
        server.metrics_addr,
    );
    let platform = Client::connect(endpoint.clone(), key)
        .await
        .expect("connect");
    let a = carrier(&platform, "acme-tel").await;
    consent(&platform, "acme-tel", &tenant(1)).await;
    let ns = numbers("+4420794", 0, 3);
    provision(&a.client, &tenant(1), &ns).await;
    a.client.get_number("", &ns[0]).await.expect("found");
    let missing = a.client.get_number("", "+442079469999").await;
    assert!(missing.is_err());
    let records: Vec<pb::CallRecord> = (0..5)
        .map(|i| {
            call(
                &format!("m-{i}"),
                pb::CallDirection::Outbound,
                &ns[0],
                "+33142685300",
                &tenant(1),
                1_000 + i,
            )
        })
        .collect();
    ingest(&platform, records.clone()).await;
    ingest(&platform, records).await; // all unchanged: no rows stored
    let _watch = a.client.watch_number_events("", 0).await.expect("watch");
    // Bytes that are no GetNumberRequest (field number 0): refused, and counted as such.
    let undecodable = ocx_testkit::raw::RawClient::new(&endpoint, &a.secret)
        .unary("/ocx.v1.NumberService/GetNumber", vec![0, 0])
        .await
        .expect_err("not a request");
    assert_eq!(undecodable.code(), tonic::Code::InvalidArgument);

    let text = scrape(metrics_addr).await;
    let get = [("service", "ocx.v1.NumberService"), ("method", "GetNumber")];
    assert_eq!(
        sample(
            &text,
            "ocx_grpc_requests_total",
            &[get[0], get[1], ("code", "OK")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "ocx_grpc_requests_total",
            &[get[0], get[1], ("code", "NOT_FOUND")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "ocx_grpc_requests_total",
            &[get[0], get[1], ("code", "INVALID_ARGUMENT")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "ocx_grpc_latency_seconds_count", &get),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "ocx_rows_ingested_total", &[("kind", "call_record")]),
        Some(5.0)
    );
    assert_eq!(
        sample(&text, "ocx_rows_ingested_total", &[("kind", "number")]),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "ocx_open_streams",
            &[("method", "WatchNumberEvents")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "ocx_grpc_requests_total",
            &[("method", "IngestCallRecords"), ("code", "OK")]
        ),
        Some(2.0),
        "each ingest stream is counted when it ends"
    );
    // The limits the server runs with, by name.
    assert_eq!(
        sample(&text, "ocx_limit", &[("limit", "max_concurrent_streams")]),
        Some(200.0)
    );
    assert_eq!(
        sample(&text, "ocx_limit", &[("limit", "max_batch_items")]),
        Some(1000.0)
    );
    let bytes = sample(&text, "ocx_database_bytes", &[]).expect("database size");
    assert!(bytes > 10_000.0, "{bytes}");

    drop(_watch);
    server.stop().await;
}

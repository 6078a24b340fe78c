//! TLS and mutual TLS: the server's certificate from files' contents, clients checked against
//! a client CA. The tests make their own certificate authorities.

use std::sync::Arc;

use ocx_client::{Client, TlsOptions};
use ocx_server::store::sqlite::SqliteStore;
use ocx_server::{Config, TlsConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A certificate authority for tests.
struct Ca {
    /// Its certificate, PEM.
    pem: String,
    /// What signs the certificates it issues.
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names`, and its key, both PEM.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }
}

/// A server with `tls` on a loopback port; returns its https endpoint, the platform key, and
/// the stop handle.
async fn serve(
    tls: TlsConfig,
) -> (
    String,
    String,
    tokio::sync::oneshot::Sender<()>,
    tempfile::TempDir,
) {
    let config = Config {
        tls: Some(tls),
        ..Config::default()
    };
    serve_config(config, None).await
}

/// [`serve`] with a whole `config`, and metrics on `metrics` if given.
async fn serve_config(
    config: Config,
    metrics: Option<tokio::net::TcpListener>,
) -> (
    String,
    String,
    tokio::sync::oneshot::Sender<()>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("ocx.db")).expect("store");
    let key = ocx_server::bootstrap::ensure_platform_key(&store, None)
        .await
        .expect("bootstrap")
        .expect("key");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ocx_server::run_with_metrics(
        listener,
        metrics,
        Arc::new(store),
        config,
        async move {
            let _ = stopped.await;
        },
    ));
    (format!("https://localhost:{port}"), key, stop, dir)
}

/// Whether a client with `tls` can make a call.
async fn call_works(endpoint: &str, key: &str, tls: Option<TlsOptions>) -> Result<(), String> {
    let client = Client::connect_tls(endpoint.to_owned(), key.to_owned(), tls)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    client
        .list_carriers(Default::default())
        .await
        .map(|_| ())
        .map_err(|e| format!("call: {e}"))
}

#[tokio::test]
async fn tls_serves_clients_that_trust_the_ca_and_refuses_plaintext() {
    let ca = Ca::new("OCX test CA");
    let (cert, key) = ca.issue(&["localhost"]);
    let (endpoint, platform, _stop, _dir) = serve(TlsConfig {
        cert_pem: cert.into_bytes(),
        key_pem: key.into_bytes(),
        client_ca_pem: None,
    })
    .await;
    let trusting = TlsOptions {
        ca_pem: Some(ca.pem.clone().into_bytes()),
        ..TlsOptions::default()
    };
    call_works(&endpoint, &platform, Some(trusting))
        .await
        .expect("TLS client");
    let plaintext = endpoint.replace("https://", "http://");
    assert!(
        call_works(&plaintext, &platform, None).await.is_err(),
        "plaintext is refused"
    );
    let other = Ca::new("Another CA");
    let wrong_trust = TlsOptions {
        ca_pem: Some(other.pem.into_bytes()),
        ..TlsOptions::default()
    };
    assert!(
        call_works(&endpoint, &platform, Some(wrong_trust))
            .await
            .is_err(),
        "a server certificate from an untrusted CA is refused"
    );
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let server_ca = Ca::new("OCX server CA");
    let client_ca = Ca::new("OCX client CA");
    let (cert, key) = server_ca.issue(&["localhost"]);
    let (endpoint, platform, _stop, _dir) = serve(TlsConfig {
        cert_pem: cert.into_bytes(),
        key_pem: key.into_bytes(),
        client_ca_pem: Some(client_ca.pem.clone().into_bytes()),
    })
    .await;
    let options = |identity: Option<(String, String)>| TlsOptions {
        ca_pem: Some(server_ca.pem.clone().into_bytes()),
        identity: identity.map(|(c, k)| (c.into_bytes(), k.into_bytes())),
        domain: None,
    };
    let carrier_cert = client_ca.issue(&["acme-tel.carrier.example"]);
    call_works(&endpoint, &platform, Some(options(Some(carrier_cert))))
        .await
        .expect("a client certificate from the client CA is accepted");
    let without = call_works(&endpoint, &platform, Some(options(None))).await;
    assert!(
        without.is_err(),
        "no client certificate: refused at the handshake"
    );
    let stranger_ca = Ca::new("Somebody else's CA");
    let stranger = stranger_ca.issue(&["mallory.example"]);
    let refused = call_works(&endpoint, &platform, Some(options(Some(stranger)))).await;
    assert!(
        refused.is_err(),
        "a certificate from another CA is refused: {refused:?}"
    );
}

/// The value of the sample whose name and labels are exactly `series`, in a scrape of
/// `metrics`.
async fn scraped(metrics: std::net::SocketAddr, series: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(metrics)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: ocx\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("response");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test]
async fn under_tls_calls_count_on_their_connection_so_it_is_closed_as_idle_not_as_silent() {
    let ca = Ca::new("OCX test CA");
    let (cert, key) = ca.issue(&["localhost"]);
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let metrics_addr = metrics.local_addr().expect("addr");
    let mut config = Config {
        tls: Some(TlsConfig {
            cert_pem: cert.into_bytes(),
            key_pem: key.into_bytes(),
            client_ca_pem: None,
        }),
        ..Config::default()
    };
    // A connection whose calls went unseen (its state not found in a TLS request's
    // extensions, or the TLS handshake's reads not passing through the connection) would be
    // closed at the handshake deadline instead, or not at all.
    config.limits.handshake_timeout = std::time::Duration::from_secs(5);
    config.limits.idle_timeout = std::time::Duration::from_secs(1);
    let (endpoint, platform, _stop, _dir) = serve_config(config, Some(metrics)).await;
    let tls = TlsOptions {
        ca_pem: Some(ca.pem.clone().into_bytes()),
        ..TlsOptions::default()
    };
    let client = Client::connect_tls(endpoint, platform, Some(tls))
        .await
        .expect("connect");
    client
        .list_carriers(Default::default())
        .await
        .expect("a call");
    let idle = "ocx_connections_closed_total{reason=\"idle_timeout\"}";
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while scraped(metrics_addr, idle).await != Some(1.0) {
        assert!(
            std::time::Instant::now() < until,
            "the TLS connection was not closed as idle"
        );
        // Polling an observable value: each scrape is a round trip to the server.
        tokio::task::yield_now().await;
    }
    let handshake = "ocx_connections_closed_total{reason=\"handshake_timeout\"}";
    assert_eq!(scraped(metrics_addr, handshake).await, Some(0.0));
    client
        .list_carriers(Default::default())
        .await
        .expect("the next call, on a new connection");
}

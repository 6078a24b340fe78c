//! # ocx-server
//!
//! The OCX gRPC server: carriers and the platform, their consents, keys, numbers, call records
//! and duration reports, stored in an embedded SQLite file or in PostgreSQL shared by replicas.
//!
//! ## Layout
//! - [`run`]: serves every service on a listener the caller bound, until `shutdown` resolves.
//! - [`service`]: one module per gRPC service; thin handlers.
//! - [`auth`]: API keys, their cache, the [`auth::Principal`].
//! - [`rpcs`]: every RPC of the contract, once: who may call it, whether it streams, its
//!   audit resource kind.
//! - [`gate`]: the layer every OCX call passes: authentication, rate limits, roles (from
//!   [`rpcs`]), stream limits, deadlines, the audit event ([`audit`]); [`limits`]: the
//!   configurable limits.
//! - [`conn`]: accepting connections: the connection cap, the handshake and idle timeouts,
//!   no spinning at the open-file limit; what a request knows of its connection.
//! - [`web`]: gRPC-Web and HTTP/1.1 on the same listener, CORS for listed browser origins.
//! - [`retention`]: the purge, on demand and periodic; [`metrics`]: Prometheus metrics;
//!   [`health`]: the health service; [`shutdown`]: the signal every long task waits on.
//! - [`database`]: `--database`, the SQLite file or a PostgreSQL URL, opened as a store.
//! - [`store`]: the storage interface ([`store::Store`]), the decisions and row decoding both
//!   backends share, and the two backends ([`store::sqlite`], [`store::postgres`]).
//! - [`domain`]: the types the store speaks; [`convert`], [`convert_calls`] and
//!   [`convert_durations`]: wire ↔ domain at the edge.
//! - [`quality`]: the Call Quality Dashboard verdict and the E-model MOS estimate.
//! - [`error`]: store errors and refusals → gRPC statuses and words; field violations.
//! - [`paging`]: page sizes and page tokens.
//! - [`bootstrap`]: the first platform key, and the demo data.

pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod conn;
pub mod convert;
pub mod convert_calls;
pub mod convert_durations;
pub mod convert_quality;
pub mod database;
pub mod domain;
pub mod error;
pub mod gate;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod paging;
pub mod quality;
pub mod retention;
pub mod rpcs;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod web;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ocx_api::pb::admin_service_server::AdminServiceServer;
use ocx_api::pb::call_duration_service_server::CallDurationServiceServer;
use ocx_api::pb::call_record_service_server::CallRecordServiceServer;
use ocx_api::pb::consent_service_server::ConsentServiceServer;
use ocx_api::pb::number_service_server::NumberServiceServer;
use ocx_api::pb::platform_service_server::PlatformServiceServer;
use ocx_api::pb::reconciliation_service_server::ReconciliationServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::server::NamedService;
use tonic_health::ServingStatus;

use crate::auth::KeyCache;
use crate::service::Ctx;
use crate::store::Store;

/// How often in-memory key last-use times are written to the store.
const KEY_USE_FLUSH: Duration = Duration::from_secs(60);

/// How a server runs: its limits and housekeeping. `Config::default()` is what
/// `ocx-server` runs with when given no flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// Message, batch, page, rate, stream and deadline limits.
    pub limits: limits::Limits,
    /// How often expired data is purged; `None`: only on demand.
    pub purge_interval: Option<Duration>,
    /// TLS (and, with a client CA, mutual TLS); `None`: plaintext, for local use.
    pub tls: Option<TlsConfig>,
    /// Where to serve Prometheus metrics; `None`: not at all. (Tests that bind their own port
    /// pass a listener to [`run_with_metrics`] instead.)
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Browser origins (`https://noc.example`) allowed to call over gRPC-Web; none by
    /// default (see [`web`]).
    pub cors_origins: Vec<String>,
}

/// The server's TLS material, PEM-encoded.
#[derive(Clone)]
pub struct TlsConfig {
    /// The server's certificate chain.
    pub cert_pem: Vec<u8>,
    /// The server's private key.
    pub key_pem: Vec<u8>,
    /// When set, clients must present a certificate issued by this CA (mutual TLS); a client
    /// without one fails at the handshake.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TlsConfig")
            .field("mutual", &self.client_ca_pem.is_some())
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: limits::Limits::default(),
            purge_interval: Some(Duration::from_secs(3600)),
            tls: None,
            metrics_listen: None,
            cors_origins: Vec::new(),
        }
    }
}

/// [`run_with`] the default [`Config`].
pub async fn run(
    listener: TcpListener,
    store: Arc<dyn Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with(listener, store, Config::default(), shutdown).await
}

/// Serves OCX on `listener` until `shutdown` resolves, then stops accepting calls, ends open
/// streams with UNAVAILABLE, lets in-flight unary calls finish, and returns once the audit
/// events of every call are appended.
pub async fn run_with(
    listener: TcpListener,
    store: Arc<dyn Store>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    run_with_metrics(listener, metrics_listener, store, config, shutdown).await
}

/// [`run_with`], serving metrics on `metrics_listener` if given.
pub async fn run_with_metrics(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    store: Arc<dyn Store>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = Arc::new(metrics::Metrics::new());
    metrics.limits(&config.limits);
    // Subscribed before the load: a key changed elsewhere while it runs is reloaded after.
    let key_changes = store.api_key_signal();
    let keys = Arc::new(KeyCache::load(store.as_ref()).await?);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (audit_log, appender) = audit::AuditLog::start(Arc::clone(&store));
    let ctx = Ctx {
        store: Arc::clone(&store),
        keys: Arc::clone(&keys),
        shutdown: shutdown_rx,
        limits: config.limits,
        audit: audit_log.clone(),
        metrics: Arc::clone(&metrics),
    };

    let (health, health_service) = health::health();
    let services = [
        "",
        <AdminServiceServer<service::admin::Admin> as NamedService>::NAME,
        <ConsentServiceServer<service::consent::Consents> as NamedService>::NAME,
        <CallRecordServiceServer<service::call_records::CallRecords> as NamedService>::NAME,
        <NumberServiceServer<service::numbers::Numbers> as NamedService>::NAME,
        <PlatformServiceServer<service::platform::Platform> as NamedService>::NAME,
        <CallDurationServiceServer<service::durations::Durations> as NamedService>::NAME,
        <ReconciliationServiceServer<service::reconciliation::Reconciliation> as NamedService>::NAME,
    ];
    for name in services {
        health
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ocx_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let gate = gate::Gate::new(
        Arc::clone(&keys),
        audit_log,
        &config.limits,
        Arc::clone(&metrics),
    );
    let metrics_server = metrics_listener.map(|listener| {
        tokio::spawn(metrics::serve(
            listener,
            Arc::clone(&metrics),
            Arc::clone(&store),
            ctx.shutdown.clone(),
        ))
    });
    let flusher = tokio::spawn(flush_key_uses(
        Arc::clone(&keys),
        Arc::clone(&store),
        ctx.shutdown.clone(),
    ));
    let key_follower = tokio::spawn(follow_key_changes(
        Arc::clone(&keys),
        Arc::clone(&store),
        key_changes,
        ctx.shutdown.clone(),
    ));
    let purger = config.purge_interval.map(|interval| {
        tokio::spawn(retention::purge_periodically(
            Arc::clone(&store),
            interval,
            ctx.shutdown.clone(),
        ))
    });
    let addr = listener.local_addr()?;
    let transport = match &config.tls {
        None => "plaintext",
        Some(TlsConfig {
            client_ca_pem: None,
            ..
        }) => "tls",
        Some(_) => "mutual tls",
    };
    let incoming = conn::Incoming::new(listener, &config.limits, Arc::clone(&metrics));
    tracing::info!(%addr, transport, "serving");

    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down");
        for name in services {
            health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        let _ = shutdown_tx.send(true);
    };
    let max = config.limits.max_message_bytes;
    macro_rules! sized {
        ($server:expr) => {
            $server
                .max_decoding_message_size(max)
                .max_encoding_message_size(max)
        };
    }
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        let mut server_tls = tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem),
        );
        if let Some(ca) = &tls.client_ca_pem {
            server_tls = server_tls.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        builder = builder.tls_config(server_tls)?;
    }
    builder
        // Keepalives find half-dead peers, so their streams (and tasks) end.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(config.limits.max_concurrent_streams))
        // gRPC-Web over HTTP/1.1 too (see `web`); gRPC itself needs HTTP/2 as before.
        .accept_http1(true)
        // Outermost first: every request counts as a call on its connection (preflights
        // too, so a browser's connection in use is not closed as idle), CORS answers
        // preflights, gRPC-Web becomes gRPC, then the gate.
        .layer(conn::CallTracking)
        .layer(web::cors(&config.cors_origins))
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(gate)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(sized!(AdminServiceServer::new(service::admin::Admin {
            ctx: ctx.clone()
        })))
        .add_service(sized!(ConsentServiceServer::new(
            service::consent::Consents { ctx: ctx.clone() }
        )))
        .add_service(sized!(NumberServiceServer::new(
            service::numbers::Numbers { ctx: ctx.clone() }
        )))
        .add_service(sized!(CallRecordServiceServer::new(
            service::call_records::CallRecords { ctx: ctx.clone() }
        )))
        .add_service(sized!(CallDurationServiceServer::new(
            service::durations::Durations { ctx: ctx.clone() }
        )))
        .add_service(sized!(ReconciliationServiceServer::new(
            service::reconciliation::Reconciliation { ctx: ctx.clone() }
        )))
        .add_service(sized!(PlatformServiceServer::new(
            service::platform::Platform { ctx }
        )))
        // Our own accept loop (see `conn`): the connection cap, the handshake and idle
        // timeouts, TCP_NODELAY and keepalive, and no spinning on a failed accept.
        .serve_with_incoming_shutdown(incoming, signal)
        .await?;
    flusher.await?;
    key_follower.await?;
    if let Some(purger) = purger {
        purger.await?;
    }
    if let Some(metrics_server) = metrics_server {
        metrics_server.await?;
    }
    // The gate (and its audit queue) went with the server: the appender drains and ends.
    appender.await?;
    Ok(())
}

/// Reloads the key cache whenever the store says keys changed elsewhere (another replica);
/// ends at shutdown, or at once for a store that never signals (SQLite).
async fn follow_key_changes(
    keys: Arc<KeyCache>,
    store: Arc<dyn Store>,
    mut changes: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = crate::shutdown::stopping(&mut shutdown) => return,
        }
        // A failed reload is tried again (a revoked key must not stay valid here), with a
        // pause that grows to 5 s; a change meanwhile is covered by the same reload.
        let mut pause = Duration::from_millis(100);
        while let Err(e) = keys.reload(store.as_ref()).await {
            tracing::warn!(error = %e, "could not reload API keys after a change on another replica; retrying");
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = crate::shutdown::stopping(&mut shutdown) => return,
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }
}

/// Writes key last-use times periodically and once more at shutdown.
async fn flush_key_uses(
    keys: Arc<KeyCache>,
    store: Arc<dyn Store>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(KEY_USE_FLUSH);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            () = crate::shutdown::stopping(&mut shutdown) => true,
        };
        if let Err(e) = keys.flush_uses(store.as_ref()).await {
            tracing::warn!(error = %e, "could not record API key use");
        }
        if stopping {
            return;
        }
    }
}

//! Prometheus metrics, served on their own port (`--metrics-listen`; off unless configured):
//! requests by service, method and code; latency histograms; rows stored by ingest; open
//! streams; connections (open, accepted, refused at the cap, closed by the server, accept
//! errors); the bytes the feeds hold for their readers and the feeds ended for stalling; the
//! entries the feeds send and how old they are when sent (the feeds' lag); the database's size.
//! `deploy/grafana/ocx.json` charts them.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::store::Store;

/// The `reason` of a connection closed because it had not started a call in time.
pub const CLOSED_HANDSHAKE: &str = "handshake_timeout";
/// The `reason` of a connection closed because no call was open on it for too long.
pub const CLOSED_IDLE: &str = "idle_timeout";

/// A finished call's labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// e.g. `ocx.v1.NumberService`.
    pub service: String,
    /// e.g. `GetNumber`.
    pub method: String,
    /// The gRPC code name, e.g. `OK`.
    pub code: String,
}

/// A method's labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// e.g. `ocx.v1.NumberService`.
    pub service: String,
    /// e.g. `WatchNumberEvents`.
    pub method: String,
}

/// What was stored.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `call_record`, `call_duration` or `number`.
    pub kind: String,
}

/// A feed's labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeedLabels {
    /// [`Feed::label`]: `call_records`, `number_events` or `reconciliation`.
    pub feed: String,
}

/// The server's feeds, as the metrics name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// `StreamCallRecords`.
    CallRecords = 0,
    /// `WatchNumberEvents`.
    NumberEvents = 1,
    /// `WatchReconciliation`.
    Reconciliation = 2,
}

impl Feed {
    /// Every feed, each at its own index.
    pub const ALL: [Feed; 3] = [Feed::CallRecords, Feed::NumberEvents, Feed::Reconciliation];

    /// The `feed` label.
    pub fn label(self) -> &'static str {
        match self {
            Feed::CallRecords => "call_records",
            Feed::NumberEvents => "number_events",
            Feed::Reconciliation => "reconciliation",
        }
    }
}

/// A configured limit's labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// e.g. `max_concurrent_streams` (see `Limits::named`).
    pub limit: String,
}

/// Why the server closed a connection.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `handshake_timeout` or `idle_timeout`.
    pub reason: String,
}

/// Every metric the server keeps.
pub struct Metrics {
    /// The registry they are encoded from.
    registry: Registry,
    /// Calls answered, by service, method and code.
    requests: Family<CallLabels, Counter>,
    /// Seconds to answer (for streams: to open), by service and method.
    latency: Family<MethodLabels, Histogram>,
    /// Rows created or changed by ingest, uploads and reports, by kind.
    rows: Family<KindLabels, Counter>,
    /// Streams open now, by service and method.
    streams: Family<MethodLabels, Gauge>,
    /// Bytes of the database file and its write-ahead log, read at each scrape.
    database_bytes: Gauge,
    /// Encoded bytes of feed messages read from the store and not yet taken by their clients,
    /// all feeds together: what slow readers cost the server (each feed holds at most
    /// `--feed-buffer-bytes`).
    feed_buffered_bytes: Gauge,
    /// Feeds ended because their client took nothing for `--stall-timeout`.
    feeds_stalled: Counter,
    /// Per feed, in [`Feed::ALL`]'s order: the entries it sent (`ocx_feed_entries_sent`), and
    /// for each message it sent, seconds from when its newest entry was stored to the sending
    /// (`ocx_feed_lag_seconds`): near zero for a follower that keeps up, the time it is behind
    /// for one that replays or lags. Call records and number events only: a reconciliation
    /// entry carries no time of its own. Resolved from their families once, so counting a
    /// message looks nothing up.
    feeds: [(Counter, Option<Histogram>); 3],
    /// The limits the server runs with, by name.
    limits: Family<LimitLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Connections open now (each holds one of the cap's permits).
    connections_open: Gauge,
    /// Connections accepted and served (refused ones not included).
    connections_accepted: Counter,
    /// Connections closed as soon as they were accepted because the cap was full.
    connections_refused: Counter,
    /// Connections the server closed, by reason (`handshake_timeout`, `idle_timeout`).
    connections_closed: Family<ReasonLabels, Counter>,
    /// Failed accepts (e.g. the open-file limit reached).
    accept_errors: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// `package.Service/Method` → (`package.Service`, `Method`).
fn split(rpc: &str) -> (String, String) {
    let (service, method) = rpc.split_once('/').unwrap_or((rpc, ""));
    (service.to_owned(), method.to_owned())
}

impl Metrics {
    /// A fresh set, registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ocx");
        let requests = Family::<CallLabels, Counter>::default();
        let latency = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            // 0.5 ms to ~33 s.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0005, 2.0, 17,
            ))
        });
        let rows = Family::<KindLabels, Counter>::default();
        let streams = Family::<MethodLabels, Gauge>::default();
        let database_bytes = Gauge::default();
        let feed_buffered_bytes = Gauge::default();
        let feeds_stalled = Counter::default();
        let feed_entries = Family::<FeedLabels, Counter>::default();
        let feed_lag = Family::<FeedLabels, Histogram>::new_with_constructor(|| {
            // 1 ms to ~9 hours.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 2.0, 25,
            ))
        });
        let limits = Family::<LimitLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "grpc_requests",
            "gRPC calls answered, by service, method and status code",
            requests.clone(),
        );
        registry.register(
            "grpc_latency_seconds",
            "Time to answer a call (for a stream: to open it), by service and method",
            latency.clone(),
        );
        registry.register(
            "rows_ingested",
            "Rows created or changed by ingest, uploads and reports, by kind",
            rows.clone(),
        );
        registry.register(
            "open_streams",
            "Streams open now, by service and method",
            streams.clone(),
        );
        registry.register(
            "database_bytes",
            "Bytes of the database file and its write-ahead log",
            database_bytes.clone(),
        );
        registry.register(
            "feed_buffered_bytes",
            "Bytes of feed messages waiting for their clients to take them, all feeds together",
            feed_buffered_bytes.clone(),
        );
        registry.register(
            "feeds_stalled",
            "Feeds ended with UNAVAILABLE because their client took nothing for the stall timeout",
            feeds_stalled.clone(),
        );
        registry.register(
            "feed_entries_sent",
            "Entries sent on feeds (call records, number events, reconciliation changes), by feed",
            feed_entries.clone(),
        );
        registry.register(
            "feed_lag_seconds",
            "For each feed message: seconds from its newest entry's storing to its sending, by feed (call records and number events)",
            feed_lag.clone(),
        );
        registry.register(
            "limit",
            "The limits the server runs with, by name (the settings of the README's limits table)",
            limits.clone(),
        );
        let connections_open = Gauge::default();
        let connections_accepted = Counter::default();
        let connections_refused = Counter::default();
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        let accept_errors = Counter::default();
        registry.register(
            "connections_open",
            "Connections open now",
            connections_open.clone(),
        );
        registry.register(
            "connections_accepted",
            "Connections accepted and served",
            connections_accepted.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed as soon as accepted because --max-connections were open",
            connections_refused.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections the server closed, by reason (handshake_timeout, idle_timeout)",
            connections_closed.clone(),
        );
        registry.register(
            "accept_errors",
            "Failed accepts of a connection (for example at the open-file limit)",
            accept_errors.clone(),
        );
        // Both reasons and every feed appear from the start, at 0, so a rate over them is
        // defined.
        for reason in [CLOSED_HANDSHAKE, CLOSED_IDLE] {
            let _ = connections_closed.get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            });
        }
        let feeds = Feed::ALL.map(|feed| {
            let labels = FeedLabels {
                feed: feed.label().to_owned(),
            };
            let entries = feed_entries.get_or_create(&labels).clone();
            let lag =
                (feed != Feed::Reconciliation).then(|| feed_lag.get_or_create(&labels).clone());
            (entries, lag)
        });
        Metrics {
            registry,
            requests,
            latency,
            rows,
            streams,
            database_bytes,
            feed_buffered_bytes,
            feeds_stalled,
            feeds,
            limits,
            connections_open,
            connections_accepted,
            connections_refused,
            connections_closed,
            accept_errors,
        }
    }

    /// Publishes the limits the server runs with.
    pub fn limits(&self, limits: &crate::limits::Limits) {
        for (name, value) in limits.named() {
            self.limits
                .get_or_create(&LimitLabels {
                    limit: name.to_owned(),
                })
                .set(value);
        }
    }

    /// Counts an answered call and its latency.
    pub fn call(&self, rpc: &str, code: &str, elapsed: Duration) {
        let (service, method) = split(rpc);
        self.latency
            .get_or_create(&MethodLabels {
                service: service.clone(),
                method: method.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&CallLabels {
                service,
                method,
                code: code.to_owned(),
            })
            .inc();
    }

    /// Counts rows stored.
    pub fn rows(&self, kind: &str, n: usize) {
        self.rows
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc_by(n as u64);
    }

    /// One more (`+1`) or one fewer (`-1`) open stream of `rpc`.
    pub fn stream(&self, rpc: &str, delta: i64) {
        let (service, method) = split(rpc);
        self.streams
            .get_or_create(&MethodLabels { service, method })
            .inc_by(delta);
    }

    /// A connection accepted (and now open).
    pub fn connection_opened(&self) {
        self.connections_accepted.inc();
        self.connections_open.inc();
    }

    /// An accepted connection ended (closed by either side).
    pub fn connection_ended(&self) {
        self.connections_open.dec();
    }

    /// A connection closed at once because the cap was full.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// A connection closed by the server for `reason` ([`CLOSED_HANDSHAKE`], [`CLOSED_IDLE`]).
    pub fn connection_closed(&self, reason: &str) {
        self.connections_closed
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// A failed accept.
    pub fn accept_error(&self) {
        self.accept_errors.inc();
    }

    /// `delta` more (or, negative, fewer) bytes held by feeds for their clients.
    pub fn feed_buffered(&self, delta: i64) {
        self.feed_buffered_bytes.inc_by(delta);
    }

    /// Counts a feed ended for stalling.
    pub fn feed_stalled(&self) {
        self.feeds_stalled.inc();
    }

    /// Counts `entries` sent in one message of `feed`, whose newest entry was stored at
    /// `newest_stored` (µs since the epoch), if entries of that feed carry the time.
    pub fn feed_sent(
        &self,
        feed: Feed,
        entries: usize,
        newest_stored: Option<crate::domain::Micros>,
    ) {
        let (sent, lag) = &self.feeds[feed as usize];
        sent.inc_by(entries as u64);
        if let (Some(lag), Some(stored)) = (lag, newest_stored) {
            let age_us = crate::domain::now_micros().saturating_sub(stored).max(0);
            lag.observe(age_us as f64 / 1e6);
        }
    }

    /// The text exposition, with the database size read now.
    pub fn encode(&self, store: &dyn Store) -> String {
        if let Some(bytes) = store.size_bytes() {
            self.database_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Serves `GET /metrics` (any path, in fact) over HTTP/1.1 on `listener` until shutdown.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics");
    }
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = crate::shutdown::stopping(&mut shutdown) => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let (metrics, store) = (Arc::clone(&metrics), Arc::clone(&store));
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_request| {
                let body = metrics.encode(store.as_ref());
                async move {
                    let response = hyper::Response::builder()
                        .header(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )
                        .body(Full::new(bytes::Bytes::from(body)))
                        .unwrap_or_default();
                    Ok::<_, Infallible>(response)
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

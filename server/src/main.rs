//! The `ocx-server` binary: settings (flags, then environment variables, then an optional TOML
//! file, then defaults), tracing, open the store, bind, call `run_with`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::builder::TypedValueParser;
use clap::{Parser, Subcommand};
use std::time::Duration;

use ocx_server::bootstrap;
use ocx_server::database::Database;
use ocx_server::limits::Limits;
use ocx_server::store::postgres::PgOptions;
use ocx_server::{Config, TlsConfig};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// mimalloc instead of the system allocator: a feed replay allocates and frees a dozen strings
/// per record across threads, and glibc's malloc was a fifth of its CPU; with mimalloc replay
/// is about 30% faster (`ocx-bench ingest`, R7). Transparent huge pages are off for it
/// (`no_thp`), which keeps the peak RSS of a 1,000,000-record ingest where it was.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// OCX, the Operator Connect Exchange server.
///
/// Every setting is global: it is taken before and after the subcommand alike
/// (`ocx-server --rate 5` and `ocx-server serve --rate 5`).
#[derive(Parser)]
#[command(version, about, args_override_self = true)]
struct Cli {
    /// A TOML file of settings: keys are the long flag names (`max-batch = 500` or
    /// `max_batch = 500`); flags and environment variables win over it.
    #[arg(long, env = "OCX_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Log format: human-readable text, or one JSON object per line. The level comes from
    /// RUST_LOG (default info).
    #[arg(long, env = "OCX_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9090). Off unless set.
    #[arg(long, env = "OCX_METRICS_LISTEN", global = true)]
    metrics_listen: Option<SocketAddr>,
    /// Export OpenTelemetry traces, OTLP over gRPC, to this collector (e.g.
    /// http://127.0.0.1:4317): a span per call, joined to the caller's trace by its
    /// `traceparent` metadata, with the store's transactions and commits under it. Off unless
    /// set.
    #[arg(long, env = "OCX_OTLP_ENDPOINT", global = true)]
    otlp_endpoint: Option<String>,
    /// Address to listen on.
    #[arg(
        long,
        env = "OCX_LISTEN",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    listen: SocketAddr,
    /// Directory for the database and the key files the server writes.
    #[arg(long, env = "OCX_DATA_DIR", default_value = "ocx-data", global = true)]
    data_dir: PathBuf,
    /// The database: a SQLite file (a path or sqlite://PATH) [default: <data-dir>/ocx.db], or
    /// a PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE) shared by several
    /// replicas.
    #[arg(long, env = "OCX_DATABASE", global = true)]
    database: Option<String>,
    /// Connections each replica keeps to PostgreSQL (ignored for SQLite).
    #[arg(long, env = "OCX_PG_POOL_SIZE", default_value_t = PgOptions::default().pool_size, global = true)]
    pg_pool_size: usize,
    /// Seed a demo carrier, tenants and numbers, and write its key to <data-dir>/demo-carrier.key.
    #[arg(long, env = "OCX_DEMO", global = true)]
    demo: bool,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key. Without it: plaintext.
    #[arg(long, env = "OCX_TLS_CERT", requires = "tls_key", global = true)]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "OCX_TLS_KEY", requires = "tls_cert", global = true)]
    tls_key: Option<PathBuf>,
    /// Require client certificates issued by this CA (PEM): mutual TLS.
    #[arg(long, env = "OCX_TLS_CLIENT_CA", requires = "tls_cert", global = true)]
    tls_client_ca: Option<PathBuf>,
    /// Largest request or response message, bytes.
    #[arg(long, env = "OCX_MAX_MESSAGE_BYTES", default_value_t = Limits::default().max_message_bytes, global = true)]
    max_message_bytes: usize,
    /// Most items in one batch (uploads, releases, reports, ingest batches).
    #[arg(long, env = "OCX_MAX_BATCH", default_value_t = Limits::default().max_batch_items,
          value_parser = clap::value_parser!(u16).range(1..=10_000).map(usize::from), global = true)]
    max_batch: usize,
    /// Largest page of a listing; a larger `page_size` is served as this.
    #[arg(long, env = "OCX_MAX_PAGE_SIZE", default_value_t = Limits::default().max_page_size,
          value_parser = clap::value_parser!(u16).range(1..=10_000).map(usize::from), global = true)]
    max_page_size: usize,
    /// Sustained requests per second per API key (a stream counts once).
    #[arg(long, env = "OCX_RATE", default_value_t = Limits::default().rate_per_second,
          value_parser = positive_rate, global = true)]
    rate: f64,
    /// Requests a key may make at once above the sustained rate.
    #[arg(long, env = "OCX_BURST", default_value_t = Limits::default().rate_burst,
          value_parser = whole_burst, global = true)]
    burst: f64,
    /// Streams one API key may hold open at once.
    #[arg(long, env = "OCX_MAX_STREAMS_PER_KEY", default_value_t = Limits::default().max_streams_per_key,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize), global = true)]
    max_streams_per_key: usize,
    /// Calls one HTTP/2 connection may have open at once (advertised to clients as
    /// SETTINGS_MAX_CONCURRENT_STREAMS; a client that opens more waits).
    #[arg(long, env = "OCX_MAX_CONCURRENT_STREAMS", default_value_t = Limits::default().max_concurrent_streams,
          value_parser = clap::value_parser!(u32).range(1..), global = true)]
    max_concurrent_streams: u32,
    /// Streams the keys of one carrier may hold open at once, together.
    #[arg(long, env = "OCX_MAX_STREAMS_PER_CARRIER", default_value_t = Limits::default().max_streams_per_carrier,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize), global = true)]
    max_streams_per_carrier: usize,
    /// Streams the server holds open at once, every key together.
    #[arg(long, env = "OCX_MAX_STREAMS", default_value_t = Limits::default().max_streams,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize), global = true)]
    max_streams: usize,
    /// Bytes a feed holds for its reader (messages read but not yet taken by the client).
    #[arg(long, env = "OCX_FEED_BUFFER_BYTES", default_value_t = Limits::default().feed_buffer_bytes,
          value_parser = clap::value_parser!(u32).range(1024..).map(|v| v as usize), global = true)]
    feed_buffer_bytes: usize,
    /// Bytes of batches an upload stream holds read but not yet committed.
    #[arg(long, env = "OCX_UPLOAD_BUFFER_BYTES", default_value_t = Limits::default().upload_buffer_bytes,
          value_parser = clap::value_parser!(u32).range(1024..).map(|v| v as usize), global = true)]
    upload_buffer_bytes: usize,
    /// A feed whose client takes nothing for this long is ended with UNAVAILABLE (e.g. 60s).
    #[arg(long, env = "OCX_STALL_TIMEOUT", default_value = "60s", value_parser = timeout, global = true)]
    stall_timeout: Duration,
    /// Connections the server holds open at once; one more is closed when accepted.
    #[arg(long, env = "OCX_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize), global = true)]
    max_connections: usize,
    /// A new connection must finish TLS and the HTTP/2 preface and start a call within this
    /// time, or it is closed (e.g. 20s).
    #[arg(long, env = "OCX_HANDSHAKE_TIMEOUT", default_value = "20s", value_parser = timeout, global = true)]
    handshake_timeout: Duration,
    /// A connection with no call open for this long is closed (e.g. 5m).
    #[arg(long, env = "OCX_IDLE_TIMEOUT", default_value = "5m", value_parser = timeout, global = true)]
    idle_timeout: Duration,
    /// Sustained calls per second from one client address, counted before authentication.
    #[arg(long, env = "OCX_ADDRESS_RATE", default_value_t = Limits::default().address_rate_per_second,
          value_parser = positive_rate, global = true)]
    address_rate: f64,
    /// Calls one client address may make at once above its sustained rate.
    #[arg(long, env = "OCX_ADDRESS_BURST", default_value_t = Limits::default().address_rate_burst,
          value_parser = whole_burst, global = true)]
    address_burst: f64,
    /// Long reads (reconciliation, usage, listings) one carrier may have running at once.
    #[arg(long, env = "OCX_LONG_READS_PER_CARRIER", default_value_t = Limits::default().long_reads_per_carrier,
          value_parser = clap::value_parser!(u16).range(1..).map(usize::from), global = true)]
    long_reads_per_carrier: usize,
    /// Longest a unary call may run when the caller sets no deadline (e.g. 2m, 30s).
    #[arg(long, env = "OCX_DEFAULT_DEADLINE", default_value = "2m", value_parser = humantime::parse_duration, global = true)]
    default_deadline: Duration,
    /// How often expired data is purged (e.g. 1h, 15m); 0 purges only on demand.
    #[arg(long, env = "OCX_PURGE_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration, global = true)]
    purge_interval: Duration,
    /// After SIGTERM or Ctrl-C: how long in-flight calls may take to finish before the process
    /// exits anyway (e.g. 30s). Writes already acknowledged are durable either way.
    #[arg(long, env = "OCX_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    shutdown_timeout: Duration,
    /// A browser origin allowed to call over gRPC-Web (e.g. https://noc.carrier.example);
    /// repeat, or separate with commas. None by default: gRPC-Web clients that are not
    /// browsers need none.
    #[arg(long = "cors-origin", env = "OCX_CORS_ORIGINS", value_delimiter = ',',
          value_parser = cors_origin, global = true)]
    cors_origins: Vec<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Raises the soft open-file limit to the hard one, and logs both. Every connection, stream
/// and database file takes a descriptor, and the common default soft limit (1,024) is reached
/// long before memory is: past it, new clients cannot connect.
fn raise_open_file_limit() {
    let before = rlimit::Resource::NOFILE.get().map(|(soft, _)| soft);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(now) => {
            let before = before.map_or_else(|e| e.to_string(), |b| b.to_string());
            tracing::info!(
                before,
                now,
                "open-file limit (soft) raised to the hard limit"
            );
        }
        Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
    }
}

/// A timeout flag (`--stall-timeout`, `--handshake-timeout`, `--idle-timeout`): a duration
/// from 1 s to a year. Zero is refused rather than read as "off": it would close every
/// connection, or end every feed, at once.
fn timeout(value: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(365 * 24 * 60 * 60) {
        return Err("a timeout is from 1s to 365d".to_owned());
    }
    Ok(d)
}

/// `--cors-origin`: `scheme://host[:port]`, as browsers send it.
fn cors_origin(value: &str) -> Result<String, String> {
    if ocx_server::web::is_origin(value) {
        Ok(value.to_owned())
    } else {
        Err("an origin is http(s)://host[:port], with no path and no wildcard".to_owned())
    }
}

impl Cli {
    /// The server configuration the flags describe; reads the TLS files.
    fn config(&self) -> anyhow::Result<Config> {
        let read = |path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsConfig {
                cert_pem: read(cert)?,
                key_pem: read(key)?,
                client_ca_pem: self.tls_client_ca.as_ref().map(read).transpose()?,
            }),
            _ => None,
        };
        Ok(Config {
            limits: Limits {
                max_message_bytes: self.max_message_bytes,
                max_batch_items: self.max_batch,
                max_page_size: self.max_page_size,
                rate_per_second: self.rate,
                rate_burst: self.burst,
                max_streams_per_key: self.max_streams_per_key,
                default_deadline: self.default_deadline,
                max_concurrent_streams: self.max_concurrent_streams,
                max_streams_per_carrier: self.max_streams_per_carrier,
                max_streams: self.max_streams,
                feed_buffer_bytes: self.feed_buffer_bytes,
                upload_buffer_bytes: self.upload_buffer_bytes,
                stall_timeout: self.stall_timeout,
                max_connections: self.max_connections,
                handshake_timeout: self.handshake_timeout,
                idle_timeout: self.idle_timeout,
                address_rate_per_second: self.address_rate,
                address_rate_burst: self.address_burst,
                long_reads_per_carrier: self.long_reads_per_carrier,
            },
            purge_interval: (!self.purge_interval.is_zero()).then_some(self.purge_interval),
            tls,
            metrics_listen: self.metrics_listen,
            cors_origins: self.cors_origins.clone(),
        })
    }
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The command line with the settings of the `--config` TOML file added in front of it, for
/// each setting that neither a flag nor its environment variable gives, so that flags win
/// over environment variables, which win over the file, which wins over the defaults.
fn settings() -> anyhow::Result<Cli> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = Cli::parse_from(&args);
    let Some(path) = cli.config.clone() else {
        return Ok(cli);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the settings file {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let command = <Cli as clap::CommandFactory>::command();
    let mut from_file: Vec<std::ffi::OsString> = Vec::new();
    for (key, value) in &table {
        let name = key.replace('_', "-");
        let Some(arg) = command
            .get_arguments()
            .find(|a| a.get_long() == Some(name.as_str()) && name != "config")
        else {
            anyhow::bail!(
                "{}: unknown setting {key:?}; the settings are the long flags of `ocx-server --help`",
                path.display()
            );
        };
        if arg
            .get_env()
            .is_some_and(|env| std::env::var_os(env).is_some())
        {
            continue;
        }
        let value = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(true) => {
                from_file.push(format!("--{name}").into());
                continue;
            }
            toml::Value::Boolean(false) => continue,
            other => anyhow::bail!(
                "{}: setting {key:?} must be a string, number or boolean, not {}",
                path.display(),
                other.type_str()
            ),
        };
        from_file.push(format!("--{name}").into());
        from_file.push(value.into());
    }
    // The file's settings first: a flag given on the command line comes later and wins.
    let mut merged = vec![args[0].clone()];
    merged.extend(from_file);
    merged.extend(args[1..].iter().cloned());
    Ok(Cli::try_parse_from(merged)?)
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// Create the database and the first platform key (<data-dir>/platform.key), then exit.
    Init,
    /// Copy the database to a new file while the server runs (consistent as of the moment the
    /// copy begins; checked with SQLite's integrity check). Restore: stop the server, replace
    /// the database file with the copy (and remove its -wal and -shm files), start it again.
    Backup {
        /// The file to write; it must not exist.
        #[arg(long)]
        to: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = settings()?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let log = match cli.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().boxed(),
    };
    // The log takes what RUST_LOG lets through; the traces take the calls' spans whatever it
    // says (see `telemetry`).
    let (traces_layer, traces) = match cli.otlp_endpoint.as_deref() {
        Some(endpoint) => {
            let (layer, traces) = ocx_server::telemetry::layer(endpoint)
                .with_context(|| format!("starting the trace exporter to {endpoint}"))?;
            (Some(layer), Some(traces))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(log.with_filter(filter))
        .with(traces_layer)
        .init();
    if let Some(endpoint) = cli.otlp_endpoint.as_deref() {
        tracing::info!(endpoint, "exporting traces");
    }
    let config = cli.config()?;
    raise_open_file_limit();
    std::fs::create_dir_all(&cli.data_dir)
        .with_context(|| format!("creating {}", cli.data_dir.display()))?;
    let database = Database::parse(cli.database.as_deref(), &cli.data_dir);
    if let Some(Command::Backup { to }) = &cli.command {
        let Database::Sqlite(db_path) = database else {
            anyhow::bail!(
                "`backup` copies the embedded SQLite database; back up PostgreSQL with its own \
                 tools (pg_dump, base backups, or your provider's snapshots)"
            );
        };
        // Not through SqliteStore::open: a backup never writes to (or migrates) the database.
        let (from, dest) = (db_path.clone(), to.clone());
        let summary = tokio::task::spawn_blocking(move || {
            ocx_server::store::sqlite::backup::backup(&from, &dest)
        })
        .await??;
        println!(
            "backup of {} written to {}: {} bytes, {} call records, {} duration reports, {} numbers; integrity check ok",
            db_path.display(),
            to.display(),
            summary.bytes,
            summary.call_records,
            summary.call_durations,
            summary.numbers
        );
        return Ok(());
    }
    let options = PgOptions {
        pool_size: cli.pg_pool_size,
    };
    let store = database
        .open(options)
        .await
        .with_context(|| format!("opening {database}"))?;
    tracing::info!(database = %database, "database open");
    match bootstrap::bootstrap_platform_key(store.as_ref(), &cli.data_dir).await? {
        Some(path) => {
            tracing::info!(path = %path.display(), "first platform key written (shown nowhere else)")
        }
        None => tracing::debug!("a platform key already exists"),
    }
    if matches!(cli.command, Some(Command::Init)) {
        return Ok(());
    }
    if cli.demo {
        bootstrap::seed_demo(store.as_ref(), &cli.data_dir).await?;
    }
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    // SIGTERM (what service managers and container runtimes send) or Ctrl-C starts a graceful
    // shutdown: health turns NOT_SERVING, new calls are refused, streams end with UNAVAILABLE
    // (the SDK's followers and uploaders resume by themselves), in-flight unary calls and
    // pending writes finish. If that takes longer than --shutdown-timeout, the process exits
    // anyway.
    let (signalled_tx, mut signalled) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        termination().await;
        let _ = signalled_tx.send(true);
    });
    let mut on_signal = signalled.clone();
    let shutdown = async move {
        let _ = on_signal.wait_for(|s| *s).await;
    };
    let timeout = cli.shutdown_timeout;
    let deadline = async move {
        let _ = signalled.wait_for(|s| *s).await;
        tokio::time::sleep(timeout).await;
    };
    let served = tokio::select! {
        served = ocx_server::run_with(listener, store, config, shutdown) => {
            tracing::info!("stopped");
            served
        }
        () = deadline => {
            tracing::warn!(timeout = ?timeout, "calls still running after the shutdown timeout; exiting");
            std::process::exit(1);
        }
    };
    // Every span ended: send the last ones before the process exits.
    if let Some(traces) = traces {
        let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
    }
    served
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `--rate`: a finite number of requests per second above 0 (0 would refuse every key for good
/// once its burst is spent).
fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate: give requests per second above 0, e.g. 1000 or 0.5"
        )),
    }
}

/// `--burst`: at least one request.
fn whole_burst(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(b) if b.is_finite() && b >= 1.0 => Ok(b),
        _ => Err(format!("{s:?} is not a burst: give 1 or more requests")),
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;

    #[test]
    fn every_setting_is_taken_after_each_subcommand_too() {
        let mut command = <Cli as clap::CommandFactory>::command();
        command.build();
        let settings: Vec<&str> = command
            .get_arguments()
            .filter_map(clap::Arg::get_long)
            .filter(|long| !["help", "version"].contains(long))
            .collect();
        assert!(settings.len() >= 20, "{settings:?}");
        for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
            for setting in &settings {
                assert!(
                    sub.get_arguments().any(|a| a.get_long() == Some(setting)),
                    "ocx-server {} does not take --{setting}",
                    sub.get_name()
                );
            }
        }
    }
}

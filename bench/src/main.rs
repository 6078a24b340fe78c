//! `ocx-bench`: measures OCX as a carrier and the platform would use it: a real `ocx-server`
//! (this same binary, re-run as `ocx-bench serve`, so that its memory is its own) on a
//! temporary SQLite database, driven through the SDK over loopback, each figure next to the
//! limit it is compared with, measured in the same run (docs/BENCHMARKS.md has the method).
//!
//! Run it in release: `cargo run --release -p ocx-bench -- all` (about 15 minutes on two
//! cores), or `all --small` (seconds: what CI runs so the benchmark keeps working).

mod figures;
mod ingest;
mod latency;
mod postgres;
mod reconcile;
mod requests;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use ocx_api::pb;
use ocx_client::Client;
use ocx_sample::{CallRecordGenerator, Line};
use ocx_server::store::sqlite::Durability;

use crate::figures::{Figure, print_table};

/// The allocator `ocx-server` uses (see its main.rs), here for `serve` and, so that the limits
/// are measured alike, for the rest of the benchmark too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The benchmark's tenant.
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// The benchmark's carrier.
const CARRIER: &str = "bench-tel";
/// Generator seed: the same records every run.
const SEED: u64 = 20_261_123;
/// 2025-01-01T00:00:00Z: the first call's start.
const START: i64 = 1_735_689_600;
/// Tenant numbers the calls are spread over.
const NUMBERS: u32 = 100;
/// Records (and reports) per batch.
const BATCH: usize = 1000;

/// OCX benchmarks.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every figure, in one table: `ingest`, `requests`, `latency` and `reconcile` in turn.
    All {
        /// The small mode CI runs: 5,000 records, 2,000 requests, 2 s of feed latency at
        /// 1,000 records/s, one run per query. Its figures only show that the benchmark works.
        #[arg(long)]
        small: bool,
    },
    /// R1: call-record ingest over `IngestCallRecords` (durable acknowledgements) against the
    /// same records inserted by rusqlite directly into the same schema; the cost of durability
    /// (the same ingest with `synchronous=NORMAL`); R7: the feed replayed to a client against a
    /// prepared SELECT over the same rows; R2: duration reports over `UploadCallDurations`
    /// against the store's INSERT run directly; the server's peak memory during the ingest.
    Ingest {
        /// Records to ingest.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
    },
    /// R5: `GetNumber` requests/s at CONCURRENCY calls in flight, against the health service's
    /// `Check` (a tonic unary method that does nothing) on the same server and connection,
    /// driven by the same load generator.
    Requests {
        /// Requests per round (each method runs three rounds, alternating).
        #[arg(long, default_value_t = 50_000)]
        requests: u64,
        /// Calls in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// Feed latency: records ingested at a steady rate while a carrier follows
    /// `StreamCallRecords`; for each record, the time from its batch's acknowledgement at the
    /// platform to its delivery at the carrier.
    Latency {
        /// Records per second to ingest.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// How long to ingest, seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Reconciliation and usage over N platform records and about as many carrier reports; R8:
    /// `GetReconciliationSummary` against the same query in the sqlite3 shell on a copy.
    Reconcile {
        /// Platform call records to ingest.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Times to run each query (the table shows the fastest and the median).
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// Keep the database in this directory (created; must not hold one already) instead of
        /// a temporary one, e.g. to run other queries on it afterwards.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
    /// Replays CARRIER's whole feed from a running server (for profiling the server with
    /// `perf record -p`); prints the rate.
    #[command(hide = true)]
    Replay {
        /// The server, e.g. `http://127.0.0.1:50051`.
        #[arg(long)]
        endpoint: String,
        /// A platform key.
        #[arg(long)]
        key: String,
        /// Records to read.
        #[arg(long)]
        records: u64,
    },
    /// The same figures with the server on PostgreSQL (a fresh schema of DATABASE for each
    /// server), and how ingest scales from one replica to two, and the feed's latency across
    /// replicas (ingested through one, delivered by the other).
    Postgres {
        /// A PostgreSQL URL the benchmark may create schemas in (e.g. what
        /// `scripts/pg-cluster.sh start` exports as OCX_TEST_POSTGRES).
        #[arg(long, env = "OCX_TEST_POSTGRES")]
        database: String,
        /// The small mode, as for `all`.
        #[arg(long)]
        small: bool,
    },
    /// Serve on a loopback port over DATABASE; prints `ADDRESS PLATFORM_KEY` on its first line.
    #[command(hide = true)]
    Serve {
        /// The SQLite file, or a PostgreSQL URL.
        #[arg(long)]
        database: String,
        /// How commits wait for the disk.
        #[arg(long, value_enum, default_value_t = Synchronous::Full)]
        synchronous: Synchronous,
    },
}

/// SQLite's `synchronous` setting for the served database.
#[derive(Clone, Copy, ValueEnum)]
enum Synchronous {
    /// What OCX always uses.
    Full,
    /// Only to measure what `full` costs.
    Normal,
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let figures = match Cli::parse().command {
        Cmd::Serve {
            database,
            synchronous,
        } => return runtime.block_on(serve(&database, synchronous)),
        Cmd::Replay {
            endpoint,
            key,
            records,
        } => {
            return runtime.block_on(async {
                let platform = Client::connect(endpoint, key).await?;
                let took = ingest::replay(&platform, records).await?;
                println!("{:.0} records/s", records as f64 / took.as_secs_f64());
                Ok(())
            });
        }
        Cmd::All { small } => runtime.block_on(all(&Backend::Sqlite, small))?,
        Cmd::Postgres { database, small } => {
            let backend = Backend::Postgres(database);
            runtime.block_on(async {
                let mut figures = all(&backend, small).await?;
                figures.extend(postgres::replicas(&backend, small).await?);
                anyhow::Ok(figures)
            })?
        }
        Cmd::Ingest { records } => runtime.block_on(ingest::run(&Backend::Sqlite, records))?,
        Cmd::Requests {
            requests,
            concurrency,
        } => runtime.block_on(requests::run(
            &Backend::Sqlite,
            requests.max(1),
            concurrency.max(1),
        ))?,
        Cmd::Latency { rate, seconds } => runtime.block_on(latency::run(
            &Backend::Sqlite,
            rate.max(100),
            seconds.max(1),
        ))?,
        Cmd::Reconcile {
            records,
            runs,
            keep,
        } => runtime.block_on(reconcile::run(&Backend::Sqlite, records, runs.max(1), keep))?,
    };
    print_table(&figures);
    Ok(())
}

/// Every figure on `backend`: see [`Cmd::All`].
async fn all(backend: &Backend, small: bool) -> anyhow::Result<Vec<Figure>> {
    let (records, requests, (rate, seconds), runs) = if small {
        (5_000, 2_000, (1_000, 2), 1)
    } else {
        (1_000_000, 50_000, (10_000, 10), 3)
    };
    let mut figures = ingest::run(backend, records).await?;
    figures.extend(requests::run(backend, requests, 64).await?);
    figures.extend(latency::run(backend, rate, seconds).await?);
    figures.extend(reconcile::run(backend, records, runs, None).await?);
    Ok(figures)
}

/// The server half: open, bootstrap a platform key, bind, say where, serve until killed. The
/// request rate limit is lifted (the benchmark is one key at full speed); every other limit
/// and layer is the server's default.
async fn serve(database: &str, synchronous: Synchronous) -> anyhow::Result<()> {
    let durability = match synchronous {
        Synchronous::Full => Durability::Full,
        Synchronous::Normal => Durability::Normal,
    };
    let store: Arc<dyn ocx_server::store::Store> =
        match ocx_server::database::Database::parse(Some(database), Path::new(".")) {
            ocx_server::database::Database::Sqlite(path) => Arc::new(
                ocx_server::store::sqlite::SqliteStore::open_with(&path, durability)?,
            ),
            ocx_server::database::Database::Postgres(url) => Arc::new(
                ocx_server::store::postgres::PgStore::connect(&url, Default::default()).await?,
            ),
        };
    // A fresh database gets its bootstrap key; a kept one (`reconcile --keep`), or a second
    // replica's, another.
    let key = match ocx_server::bootstrap::ensure_platform_key(store.as_ref(), None).await? {
        Some(key) => key,
        None => {
            let issued = ocx_server::auth::issue_key(
                ocx_server::domain::Role::Platform,
                None,
                "bench".into(),
            );
            store.insert_api_key(issued.record).await?;
            issued.token
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{} {key}", listener.local_addr()?)?;
    out.flush()?;
    drop(out);
    let config = ocx_server::Config {
        limits: ocx_server::limits::Limits {
            rate_per_second: 1e12,
            rate_burst: 1e12,
            ..Default::default()
        },
        ..Default::default()
    };
    ocx_server::run_with(listener, store, config, std::future::pending()).await
}

/// Where the benchmark's servers keep their data.
pub enum Backend {
    /// A SQLite file in a temporary directory (each module picks the path).
    Sqlite,
    /// PostgreSQL: a URL the benchmark creates a fresh schema in for each server.
    Postgres(String),
}

impl Backend {
    fn is_postgres(&self) -> bool {
        matches!(self, Backend::Postgres(_))
    }

    /// What a server is given as `--database`: `sqlite_file`, or a fresh PostgreSQL schema.
    async fn database(&self, sqlite_file: &Path) -> String {
        match self {
            Backend::Sqlite => sqlite_file.display().to_string(),
            Backend::Postgres(url) => {
                ocx_testkit::postgres::TestPostgres::new(url.clone())
                    .fresh_schema("bench")
                    .await
            }
        }
    }

    /// A line for the table's names: `` or ` on PostgreSQL`.
    fn suffix(&self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres(_) => " [PostgreSQL]",
        }
    }
}

/// The server process, killed when dropped.
struct Server {
    child: Child,
    endpoint: String,
    platform_key: String,
    /// What it was given as `--database`: another replica can be started on it.
    database: String,
}

impl Server {
    /// A server on `backend` (`sqlite_file` for SQLite) with `synchronous=FULL`, as OCX
    /// always runs.
    async fn start(backend: &Backend, sqlite_file: &Path) -> anyhow::Result<Server> {
        Server::start_with(&backend.database(sqlite_file).await, "full")
    }

    /// Another server on the same database (a replica, for PostgreSQL).
    fn replica(&self) -> anyhow::Result<Server> {
        Server::start_with(&self.database, "full")
    }

    /// A server on `database` with `synchronous` (`full` or `normal`; SQLite only).
    fn start_with(database: &str, synchronous: &str) -> anyhow::Result<Server> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("serve")
            .arg("--database")
            .arg(database)
            .args(["--synchronous", synchronous])
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some((addr, key)) = line.trim().split_once(' ') else {
            bail!("the server did not start: {line:?}");
        };
        Ok(Server {
            endpoint: format!("http://{addr}"),
            platform_key: key.to_owned(),
            database: database.to_owned(),
            child,
        })
    }

    /// The process id.
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size so far (`VmHWM`), in MiB.
    fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The tenant's numbers.
fn lines() -> Vec<Line> {
    (0..NUMBERS)
        .map(|i| Line {
            tenant_id: TENANT.to_owned(),
            number: format!("+4420794{i:05}"),
        })
        .collect()
}

/// The generated records, in batches.
fn record_batches(records: u64) -> impl Iterator<Item = Vec<pb::CallRecord>> {
    let mut generator = CallRecordGenerator::new(SEED, lines(), START);
    let mut left = records;
    std::iter::from_fn(move || {
        let n = left.min(BATCH as u64);
        left -= n;
        (n > 0).then(|| (0..n).map(|_| generator.next_record()).collect())
    })
}

/// A carrier with its key, a consenting tenant and the tenant's numbers; returns the platform
/// and carrier clients.
async fn setup(server: &Server) -> anyhow::Result<(Client, Client)> {
    let platform = Client::connect(server.endpoint.clone(), server.platform_key.clone()).await?;
    platform.create_carrier(CARRIER, "Bench").await?;
    let created = platform
        .create_api_key(pb::CreateApiKeyRequest {
            request_id: String::new(),
            role: pb::ApiKeyRole::Carrier.into(),
            carrier_id: CARRIER.to_owned(),
            display_name: "bench".to_owned(),
        })
        .await?;
    let carrier = platform.with_key(created.secret)?;
    platform
        .grant_consent(pb::GrantConsentRequest {
            carrier_id: CARRIER.to_owned(),
            tenant_id: TENANT.to_owned(),
            status: pb::ConsentStatus::Active.into(),
            ..Default::default()
        })
        .await?;
    let uploads = lines()
        .into_iter()
        .map(|l| pb::NumberUpload {
            number: l.number,
            tenant_id: l.tenant_id,
            ..Default::default()
        })
        .collect();
    carrier
        .upload_numbers(pb::UploadNumbersRequest {
            request_id: String::new(),
            carrier_id: String::new(),
            numbers: uploads,
        })
        .await?;
    Ok((platform, carrier))
}

fn timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

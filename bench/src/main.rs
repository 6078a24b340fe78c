//! `ocx-bench`: measures OCX as a carrier and the platform would use it: a real `ocx-server`
//! (this same binary, re-run as `ocx-bench serve`, so that its memory is its own) on a
//! temporary SQLite database, driven through the SDK over loopback, each figure next to the
//! limit it is compared with, measured in the same run (docs/BENCHMARKS.md has the method).
//!
//! Run it in release: `cargo run --release -p ocx-bench -- all` (about 15 minutes on two
//! cores), or `all --small` (seconds: what CI runs so the benchmark keeps working).

mod fairness;
mod figures;
mod harness;
mod ingest;
mod latency;
mod postgres;
mod quality;
mod reconcile;
mod requests;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use ocx_client::Client;
use ocx_server::store::sqlite::Durability;

use crate::figures::{Figure, print_table};
use crate::harness::Backend;

/// The allocator `ocx-server` uses (see its main.rs), here for `serve` and, so that the limits
/// are measured alike, for the rest of the benchmark too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// OCX benchmarks.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every figure, in one table: `ingest`, `requests`, `latency`, `reconcile` and `quality`
    /// in turn.
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
        /// Run on PostgreSQL instead, in a fresh schema of this database URL.
        #[arg(long)]
        database: Option<String>,
    },
    /// Call quality analytics: RECORDS call records over 30 days ingested (with the quality
    /// aggregates kept), then `GetQualitySummary` over the 30 days by day grouped by trunk
    /// (target: under 50 ms), and beside it the same answer recomputed from the records.
    Quality {
        /// Call records to ingest.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Times to run the query (the table shows the fastest, and the median).
        #[arg(long, default_value_t = 5)]
        runs: u32,
        /// Run on PostgreSQL instead, in a fresh schema of this database URL.
        #[arg(long)]
        database: Option<String>,
    },
    /// Fairness on long reads: carrier B's small reconciliation summary alone, and beside
    /// carrier A's eight summary loops over RECORDS calls, with the server's per-carrier share of
    /// the long reads and without one.
    Fairness {
        /// Carrier A's calls.
        #[arg(long, default_value_t = 200_000)]
        records: u64,
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
        /// Long reads one carrier may have running at once (the server's default if unset).
        #[arg(long)]
        long_reads_per_carrier: Option<usize>,
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
            long_reads_per_carrier,
        } => return runtime.block_on(serve(&database, synchronous, long_reads_per_carrier)),
        Cmd::Quality {
            records,
            runs,
            database,
        } => {
            let backend = database.map_or(Backend::Sqlite, Backend::Postgres);
            runtime.block_on(quality::run(&backend, records.max(1), runs.max(1)))?
        }
        Cmd::Fairness { records } => runtime.block_on(fairness::run(records.max(1000)))?,
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
            database,
        } => {
            let backend = database.map_or(Backend::Sqlite, Backend::Postgres);
            runtime.block_on(reconcile::run(&backend, records, runs.max(1), keep))?
        }
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
    figures.extend(quality::run(backend, records, runs.max(3)).await?);
    Ok(figures)
}

/// The server half: open, bootstrap a platform key, bind, say where, serve until killed. The
/// request rate limit is lifted (the benchmark is one key at full speed); every other limit
/// and layer is the server's default.
async fn serve(
    database: &str,
    synchronous: Synchronous,
    long_reads_per_carrier: Option<usize>,
) -> anyhow::Result<()> {
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
            address_rate_per_second: 1e12,
            address_rate_burst: 1e12,
            long_reads_per_carrier: long_reads_per_carrier
                .unwrap_or(ocx_server::limits::Limits::default().long_reads_per_carrier),
            ..Default::default()
        },
        ..Default::default()
    };
    ocx_server::run_with(listener, store, config, std::future::pending()).await
}

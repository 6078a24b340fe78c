//! What every measurement shares: the benchmark's tenant, carrier and seeded records, the
//! server under measurement (a child process, or an in-process one for PostgreSQL), and the
//! carrier set up on it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use ocx_api::pb;
use ocx_client::Client;
use ocx_sample::{CallRecordGenerator, Line};

/// The benchmark's tenant.
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// The benchmark's carrier.
pub const CARRIER: &str = "bench-tel";
/// Generator seed: the same records every run.
pub const SEED: u64 = 20_261_123;
/// 2025-01-01T00:00:00Z: the first call's start.
pub const START: i64 = 1_735_689_600;
/// Tenant numbers the calls are spread over.
pub const NUMBERS: u32 = 100;
/// Records (and reports) per batch.
pub const BATCH: usize = 1000;

/// Where the benchmark's servers keep their data.
pub enum Backend {
    /// A SQLite file in a temporary directory (each module picks the path).
    Sqlite,
    /// PostgreSQL: a URL the benchmark creates a fresh schema in for each server.
    Postgres(String),
}

impl Backend {
    pub fn is_postgres(&self) -> bool {
        matches!(self, Backend::Postgres(_))
    }

    /// What a server is given as `--database`: `sqlite_file`, or a fresh PostgreSQL schema.
    pub async fn database(&self, sqlite_file: &Path) -> String {
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
    pub fn suffix(&self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres(_) => " [PostgreSQL]",
        }
    }
}

/// The server process, killed when dropped.
pub struct Server {
    /// The `ocx-bench serve` process, killed on drop.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The platform key of its database.
    pub platform_key: String,
    /// What it was given as `--database`: another replica can be started on it.
    pub database: String,
}

impl Server {
    /// A server on `backend` (`sqlite_file` for SQLite) with `synchronous=FULL`, as OCX
    /// always runs.
    pub async fn start(backend: &Backend, sqlite_file: &Path) -> anyhow::Result<Server> {
        Server::start_with(&backend.database(sqlite_file).await, "full")
    }

    /// Another server on the same database (a replica, for PostgreSQL).
    pub fn replica(&self) -> anyhow::Result<Server> {
        Server::start_with(&self.database, "full")
    }

    /// A server on `database` with `synchronous` (`full` or `normal`; SQLite only).
    pub fn start_with(database: &str, synchronous: &str) -> anyhow::Result<Server> {
        Server::spawn(database, synchronous, None)
    }

    /// A SQLite server allowing `share` long reads per carrier (the default if `None`).
    pub fn start_with_share(sqlite_file: &Path, share: Option<usize>) -> anyhow::Result<Server> {
        Server::spawn(&sqlite_file.display().to_string(), "full", share)
    }

    /// Spawns `ocx-bench serve` and reads its address and key.
    fn spawn(database: &str, synchronous: &str, share: Option<usize>) -> anyhow::Result<Server> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("serve")
            .arg("--database")
            .arg(database)
            .args(["--synchronous", synchronous]);
        if let Some(share) = share {
            command
                .arg("--long-reads-per-carrier")
                .arg(share.to_string());
        }
        let mut child = command.stdout(Stdio::piped()).spawn()?;
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
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size so far (`VmHWM`), in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
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
pub fn lines() -> Vec<Line> {
    (0..NUMBERS)
        .map(|i| Line {
            tenant_id: TENANT.to_owned(),
            number: format!("+4420794{i:05}"),
        })
        .collect()
}

/// Seconds between calls on average: 30 (the generator's default) up to 1,000,000 records,
/// closer above, so that any run spans under a year (reconciliation and usage answer periods
/// of at most 366 days): 10,000,000 records are 3 s apart.
fn mean_gap_secs(records: u64) -> f64 {
    (30_000_000.0 / records.max(1) as f64).min(30.0)
}

/// The generated records, in batches.
pub fn record_batches(records: u64) -> impl Iterator<Item = Vec<pb::CallRecord>> {
    let generator =
        CallRecordGenerator::new(SEED, lines(), START).with_mean_gap_secs(mean_gap_secs(records));
    batches(generator, records)
}

/// `records` generated records spread over `span_secs` from [`START`], with the generator's
/// incidents (a trunk degrading for a few hours), in batches: for `ocx-bench quality`.
pub fn record_batches_over(
    records: u64,
    span_secs: f64,
) -> impl Iterator<Item = Vec<pb::CallRecord>> {
    let generator = CallRecordGenerator::new(SEED, lines(), START)
        .with_mean_gap_secs(span_secs / records.max(1) as f64)
        .with_incidents();
    batches(generator, records)
}

/// The first `records` of `generator`, in batches of [`BATCH`].
fn batches(
    mut generator: CallRecordGenerator,
    records: u64,
) -> impl Iterator<Item = Vec<pb::CallRecord>> {
    let mut left = records;
    std::iter::from_fn(move || {
        let n = left.min(BATCH as u64);
        left -= n;
        (n > 0).then(|| (0..n).map(|_| generator.next_record()).collect())
    })
}

/// A carrier with its key, a consenting tenant and the tenant's numbers; returns the platform
/// and carrier clients.
pub async fn setup(server: &Server) -> anyhow::Result<(Client, Client)> {
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

pub fn timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

//! `ocx-bench`: measures OCX as a carrier and the platform would use it: a real `ocx-server`
//! (this same binary, re-run as `ocx-bench serve`, so that its memory is its own) on a
//! temporary SQLite database, driven through the SDK over loopback.
//!
//! `ocx-bench reconcile --records N` ingests N generated call records, uploads the carrier's
//! reports for them (about N: 2% of calls unreported, 5% a few seconds off, 1% reports of calls
//! the platform never had, a tenth matched by correlation id only), then times
//! `GetReconciliationSummary`, the first page of `ListDiscrepancies` and `GetTenantUsage` over
//! the whole period, checks the summary against the counts it planted, and reports the
//! server's peak resident memory.
//!
//! Run it in release: `cargo run --release -p ocx-bench -- reconcile --records 1000000`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures_util::{StreamExt, stream};
use ocx_api::pb;
use ocx_api::sample::{CallRecordGenerator, Line};
use ocx_client::{Client, DurationUploader};

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
    /// Reconciliation and usage over N platform records and about as many carrier reports.
    Reconcile {
        /// Platform call records to ingest.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Times to run each query (the table shows the fastest and the median).
        #[arg(long, default_value_t = 5)]
        runs: u32,
        /// Keep the database in this directory (created; must not hold one already) instead of
        /// a temporary one, e.g. to run the same queries in the sqlite3 shell afterwards.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
    /// R1: call-record ingest over `IngestCallRecords` (durable acknowledgements) against the
    /// same records inserted by rusqlite directly into the same schema; R7: the feed replayed
    /// to a client against a prepared SELECT over the same rows; and the server's peak memory
    /// during the ingest.
    Ingest {
        /// Records to ingest.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
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
    /// Serve on a loopback port over DATABASE; prints `ADDRESS PLATFORM_KEY` on its first line.
    #[command(hide = true)]
    Serve {
        /// The SQLite file.
        #[arg(long)]
        database: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    match Cli::parse().command {
        Cmd::Serve { database } => runtime.block_on(serve(&database)),
        Cmd::Reconcile {
            records,
            runs,
            keep,
        } => runtime.block_on(reconcile(records, runs.max(1), keep)),
        Cmd::Ingest { records } => runtime.block_on(ingest(records)),
        Cmd::Latency { rate, seconds } => runtime.block_on(latency(rate.max(100), seconds.max(1))),
    }
}

/// The server half: open, bootstrap a platform key, bind, say where, serve until killed.
async fn serve(database: &Path) -> anyhow::Result<()> {
    let store = ocx_server::store::sqlite::SqliteStore::open(database)?;
    let key = ocx_server::bootstrap::ensure_platform_key(&store, None)
        .await?
        .context("a fresh database has no platform key")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{} {key}", listener.local_addr()?)?;
    out.flush()?;
    drop(out);
    ocx_server::run(listener, Arc::new(store), std::future::pending()).await
}

/// The server process, killed when dropped.
struct Server {
    child: Child,
    endpoint: String,
    platform_key: String,
}

impl Server {
    fn start(database: &Path) -> anyhow::Result<Server> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("serve")
            .arg("--database")
            .arg(database)
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
            child,
        })
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

/// What the carrier's reports should reconcile to.
#[derive(Debug, Default, PartialEq)]
struct Planted {
    platform: i64,
    reports: i64,
    mismatched: i64,
    missing_on_carrier: i64,
    missing_on_platform: i64,
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

/// One report per generated record (by call id), in batches of [`BATCH`], for R2.
fn report_batches(records: u64) -> Vec<((), Vec<pb::CallDurationReport>)> {
    let mut batches = Vec::new();
    let mut batch = Vec::with_capacity(BATCH);
    for (i, r) in record_batches(records).flatten().enumerate() {
        batch.push(pb::CallDurationReport {
            record_id: format!("r2-{i}"),
            call_id: r.call_id,
            correlation_id: r.correlation_id,
            caller_number: r.caller_number,
            callee_number: r.callee_number,
            start_time: r.start_time,
            duration: Some(r.duration.unwrap_or_default()),
        });
        if batch.len() >= BATCH {
            batches.push(((), std::mem::take(&mut batch)));
        }
    }
    if !batch.is_empty() {
        batches.push(((), batch));
    }
    batches
}

/// The carrier's report(s) for record `i`, counted into `planted`.
fn reports_for(i: u64, r: &pb::CallRecord, planted: &mut Planted) -> Vec<pb::CallDurationReport> {
    planted.platform += 1;
    if i.is_multiple_of(50) {
        planted.missing_on_carrier += 1;
        return Vec::new();
    }
    let mut duration = r.duration.unwrap_or_default();
    if i % 20 == 3 {
        duration.seconds += 3;
        planted.mismatched += 1;
    }
    let mut out = vec![pb::CallDurationReport {
        record_id: format!("bench-{i}"),
        call_id: if i % 10 == 1 {
            String::new()
        } else {
            r.call_id.clone()
        },
        correlation_id: r.correlation_id.clone(),
        caller_number: r.caller_number.clone(),
        callee_number: r.callee_number.clone(),
        start_time: r.start_time,
        duration: Some(duration),
    }];
    if i % 100 == 7 {
        planted.missing_on_platform += 1;
        out.push(pb::CallDurationReport {
            record_id: format!("bench-orphan-{i}"),
            correlation_id: format!("orphan-{i}@sbc.bench.example"),
            ..out[0].clone()
        });
        out[1].call_id.clear();
    }
    planted.reports += out.len() as i64;
    out
}

async fn reconcile(records: u64, runs: u32, keep: Option<PathBuf>) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = match keep {
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            if dir.join("bench.db").exists() {
                bail!("{} already holds a bench.db", dir.display());
            }
            dir
        }
        None => temp.path().to_owned(),
    };
    let database = dir.join("bench.db");
    let server = Server::start(&database)?;
    let (platform, carrier) = setup(&server).await?;

    eprintln!("ingesting {records} call records ...");
    let started = Instant::now();
    let acks = platform
        .ingest_call_records(stream::iter(record_batches(records)))
        .await?;
    let mut acks = std::pin::pin!(acks);
    let (mut created, mut last_start) = (0_i64, START);
    while let Some(ack) = acks.next().await {
        created += i64::from(ack?.created_count);
    }
    let ingest = started.elapsed();
    if created != records as i64 {
        bail!("{created} of {records} records were created");
    }

    eprintln!("uploading the carrier's reports ...");
    let mut planted = Planted::default();
    let mut batch = Vec::with_capacity(BATCH);
    let mut batches = Vec::new();
    for (i, record) in record_batches(records).flatten().enumerate() {
        last_start = last_start.max(record.start_time.map_or(0, |t| t.seconds));
        batch.extend(reports_for(i as u64, &record, &mut planted));
        // A record brings up to two reports: leave room for them.
        if batch.len() + 2 > BATCH {
            batches.push(((), std::mem::take(&mut batch)));
        }
    }
    if !batch.is_empty() {
        batches.push(((), batch));
    }
    let started = Instant::now();
    let totals = DurationUploader::new(&carrier, "")
        .run(stream::iter(batches), |(), _| {})
        .await?;
    let upload = started.elapsed();
    if totals.created != planted.reports as u64 {
        bail!(
            "{} of {} reports were created",
            totals.created,
            planted.reports
        );
    }

    let period = (START, last_start + 1);
    let summary_request = pb::GetReconciliationSummaryRequest {
        carrier_id: String::new(),
        start_time: Some(timestamp(period.0)),
        end_time: Some(timestamp(period.1)),
        tolerance: None,
    };
    let (summary_times, summary) = timed(runs, || {
        let (carrier, request) = (carrier.clone(), summary_request.clone());
        async move { carrier.get_reconciliation_summary(request).await }
    })
    .await?;
    let got = Planted {
        platform: summary.platform_count,
        reports: summary.carrier_count,
        mismatched: summary.mismatched_count,
        missing_on_carrier: summary.missing_on_carrier_count,
        missing_on_platform: summary.missing_on_platform_count,
    };
    if got != planted {
        bail!("the summary {got:?} differs from what was planted {planted:?}");
    }
    let discrepancy_request = pb::ListDiscrepanciesRequest {
        start_time: Some(timestamp(period.0)),
        end_time: Some(timestamp(period.1)),
        page_size: 1000,
        ..Default::default()
    };
    let (page_times, page) = timed(runs, || {
        let (carrier, request) = (carrier.clone(), discrepancy_request.clone());
        async move { carrier.list_discrepancies(request).await }
    })
    .await?;
    let usage_request = pb::GetTenantUsageRequest {
        tenant_id: TENANT.to_owned(),
        start_time: Some(timestamp(period.0)),
        end_time: Some(timestamp(period.1)),
        grouping: pb::UsageGrouping::Day.into(),
    };
    let (usage_times, usage) = timed(runs, || {
        let (platform, request) = (platform.clone(), usage_request.clone());
        async move { platform.get_tenant_usage(request).await }
    })
    .await?;
    if usage.call_count != planted.platform {
        bail!(
            "usage counted {} calls of {}",
            usage.call_count,
            planted.platform
        );
    }
    let peak = server.peak_rss_mib();
    let db_mib = std::fs::metadata(&database)
        .map(|m| m.len() as f64 / (1 << 20) as f64)
        .unwrap_or(0.0);

    let rate = |n: f64, d: Duration| n / d.as_secs_f64();
    println!("platform records        {records}");
    println!(
        "carrier reports         {} (matched {}, mismatched {}, missing on carrier {}, missing on platform {}) — as planted",
        planted.reports,
        summary.matched_count,
        summary.mismatched_count,
        summary.missing_on_carrier_count,
        summary.missing_on_platform_count
    );
    println!(
        "record ingest           {:.1} s, {:.0} records/s",
        ingest.as_secs_f64(),
        rate(records as f64, ingest)
    );
    println!(
        "report upload           {:.1} s, {:.0} reports/s",
        upload.as_secs_f64(),
        rate(planted.reports as f64, upload)
    );
    println!("GetReconciliationSummary {}", spread(&summary_times));
    println!(
        "ListDiscrepancies (1st page of {}) {}",
        page.discrepancies.len(),
        spread(&page_times)
    );
    println!(
        "GetTenantUsage by day ({} rows) {}",
        usage.rows.len(),
        spread(&usage_times)
    );
    println!("database file           {db_mib:.0} MiB");
    match peak {
        Some(mib) => println!("server peak RSS         {mib:.0} MiB"),
        None => println!("server peak RSS         unknown (no /proc)"),
    }
    Ok(())
}

/// A carrier with its key, a consenting tenant and the tenant's numbers; returns the platform
/// and carrier clients.
async fn setup(server: &Server) -> anyhow::Result<(Client, Client)> {
    let platform = Client::connect(server.endpoint.clone(), server.platform_key.clone()).await?;
    platform.create_carrier(CARRIER, "Bench").await?;
    let created = platform
        .create_api_key(pb::CreateApiKeyRequest {
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
            carrier_id: String::new(),
            numbers: uploads,
        })
        .await?;
    Ok((platform, carrier))
}

/// Runs `call` `runs` times; returns each time and the last result.
async fn timed<F, Fut, T>(runs: u32, call: F) -> anyhow::Result<(Vec<Duration>, T)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ocx_client::Result<T>>,
{
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let started = Instant::now();
        last = Some(call().await?);
        times.push(started.elapsed());
    }
    times.sort();
    Ok((times, last.context("at least one run")?))
}

/// `fastest 1.23 s, median 1.30 s (5 runs)`.
fn spread(times: &[Duration]) -> String {
    let (fastest, median) = (times[0], times[times.len() / 2]);
    format!(
        "fastest {:.3} s, median {:.3} s ({} runs)",
        fastest.as_secs_f64(),
        median.as_secs_f64(),
        times.len()
    )
}

fn timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

/// R1 and the server's peak memory: see [`Cmd::Ingest`].
async fn ingest(records: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("ocx.db"))?;
    let (platform, _carrier) = setup(&server).await?;
    eprintln!("ingesting {records} call records through OCX ...");
    let started = Instant::now();
    let acks = platform
        .ingest_call_records(stream::iter(record_batches(records)))
        .await?;
    let mut acks = std::pin::pin!(acks);
    let mut created = 0_i64;
    while let Some(ack) = acks.next().await {
        created += i64::from(ack?.created_count);
    }
    let ocx = started.elapsed();
    if created != records as i64 {
        bail!("{created} of {records} records were created");
    }
    let peak = server.peak_rss_mib();

    // R7: the whole feed replayed to a client, against iterating the same rows with a prepared
    // SELECT (every column read) on a read-only connection to the same file.
    eprintln!("replaying the feed ...");
    let started = Instant::now();
    // Boxed so that dropping it ends the stream (and the server's feed task) at once.
    let mut feed = Box::pin(platform.stream_call_records(CARRIER, 0).await?);
    let mut replayed = 0_u64;
    while replayed < records {
        match feed.next().await {
            Some(record) => {
                record?;
                replayed += 1;
            }
            None => bail!("the feed ended after {replayed} of {records} records"),
        }
    }
    let replay = started.elapsed();
    drop(feed);
    let database = dir.path().join("ocx.db");
    let select = tokio::task::spawn_blocking(move || -> anyhow::Result<(Duration, u64)> {
        let conn = rusqlite::Connection::open_with_flags(
            &database,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        conn.pragma_update(None, "cache_size", -65536)?;
        let started = Instant::now();
        let mut statement = conn.prepare(
            "SELECT * FROM call_records WHERE carrier_id = ?1 AND feed_sequence > ?2
             ORDER BY feed_sequence",
        )?;
        let mut rows = statement.query(rusqlite::params![CARRIER, 0])?;
        let mut n = 0_u64;
        while let Some(row) = rows.next()? {
            let columns = row.as_ref().column_count();
            for i in 0..columns {
                let _ = row.get_ref(i)?;
            }
            n += 1;
        }
        Ok((started.elapsed(), n))
    })
    .await??;
    if select.1 != records {
        bail!("the SELECT read {} of {records} rows", select.1);
    }

    // R2: the carrier's duration reports for those calls over `UploadCallDurations`.
    eprintln!("uploading duration reports through OCX ...");
    let reports = report_batches(records);
    let report_count: usize = reports.iter().map(|(_, b)| b.len()).sum();
    let started = Instant::now();
    let totals = DurationUploader::new(&platform, CARRIER)
        .run(stream::iter(reports.clone()), |(), _| {})
        .await?;
    let upload = started.elapsed();
    if totals.created != report_count as u64 {
        bail!("{} of {report_count} reports were created", totals.created);
    }
    drop(server);

    eprintln!("inserting the same records with rusqlite directly ...");
    let mut domain: Vec<Vec<ocx_server::domain::CallRecord>> = Vec::new();
    for batch in record_batches(records) {
        let converted = batch
            .iter()
            .map(|r| ocx_server::convert_calls::call_record_in(r, "r"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|v| anyhow::anyhow!("a generated record is invalid: {:?}", v.into_pairs()))?;
        domain.push(converted);
    }
    let baseline_path = dir.path().join("baseline.db");
    let baseline = tokio::task::spawn_blocking(move || -> anyhow::Result<Duration> {
        let conn = ocx_server::store::sqlite::baseline::open(&baseline_path)?;
        let started = Instant::now();
        let mut sequence = 1;
        for batch in &mut domain {
            ocx_server::store::sqlite::baseline::insert_call_records(
                &conn, batch, CARRIER, sequence,
            )?;
            sequence += batch.len() as i64;
        }
        Ok(started.elapsed())
    })
    .await??;
    let mut converted = Vec::new();
    for (_, batch) in &reports {
        let batch = batch
            .iter()
            .map(|r| ocx_server::convert_durations::report_in(r, "r"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|v| anyhow::anyhow!("a generated report is invalid: {:?}", v.into_pairs()))?;
        converted.push(batch);
    }
    let durations_path = dir.path().join("baseline.db");
    let report_baseline = tokio::task::spawn_blocking(move || -> anyhow::Result<Duration> {
        let conn = ocx_server::store::sqlite::baseline::open(&durations_path)?;
        let started = Instant::now();
        for batch in &converted {
            ocx_server::store::sqlite::baseline::insert_call_durations(&conn, batch, CARRIER)?;
        }
        Ok(started.elapsed())
    })
    .await??;

    let (ocx_rate, limit_rate) = (
        records as f64 / ocx.as_secs_f64(),
        records as f64 / baseline.as_secs_f64(),
    );
    println!("| figure | OCX | limit | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| R1 call-record ingest ({records} records) | {ocx_rate:.0} records/s | {limit_rate:.0} records/s | {:.2} | >= 0.7 |",
        ocx_rate / limit_rate
    );
    let (upload_rate, insert_rate) = (
        report_count as f64 / upload.as_secs_f64(),
        report_count as f64 / report_baseline.as_secs_f64(),
    );
    println!(
        "| R2 duration ingest ({report_count} reports) | {upload_rate:.0} reports/s | {insert_rate:.0} reports/s | {:.2} | >= 0.7 |",
        upload_rate / insert_rate
    );
    let (replay_rate, select_rate) = (
        records as f64 / replay.as_secs_f64(),
        records as f64 / select.0.as_secs_f64(),
    );
    println!(
        "| R7 StreamCallRecords replay ({records} records) | {replay_rate:.0} records/s | {select_rate:.0} records/s | {:.2} | >= 0.6 |",
        replay_rate / select_rate
    );
    match peak {
        Some(mib) => {
            println!("| server peak RSS during the ingest | {mib:.0} MiB | | | < 150 MiB |")
        }
        None => {
            println!("| server peak RSS during the ingest | unknown (no /proc) | | | < 150 MiB |")
        }
    }
    Ok(())
}

/// Feed latency: see [`Cmd::Latency`].
async fn latency(rate: u64, seconds: u64) -> anyhow::Result<()> {
    const PER_BATCH: u64 = 100;
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("ocx.db"))?;
    let (platform, carrier) = setup(&server).await?;
    let total = rate * seconds;
    let batches: Vec<Vec<pb::CallRecord>> = record_batches(total)
        .flatten()
        .collect::<Vec<_>>()
        .chunks(PER_BATCH as usize)
        .map(<[pb::CallRecord]>::to_vec)
        .collect();
    let batch_of: std::collections::HashMap<String, usize> = batches
        .iter()
        .enumerate()
        .flat_map(|(i, b)| b.iter().map(move |r| (r.call_id.clone(), i)))
        .collect();

    // The carrier follows the feed from the start, noting when each record arrives.
    let mut feed = Box::pin(carrier.stream_call_records("", 0).await?);
    let follower = tokio::spawn(async move {
        let mut arrivals = Vec::with_capacity(total as usize);
        while (arrivals.len() as u64) < total {
            match feed.next().await {
                Some(Ok(record)) => arrivals.push((record.call_id, Instant::now())),
                _ => break,
            }
        }
        arrivals
    });

    // The platform sends a batch every PER_BATCH / rate seconds and notes each acknowledgement.
    eprintln!("ingesting {total} records at {rate}/s while a carrier follows the feed ...");
    let interval = Duration::from_secs_f64(PER_BATCH as f64 / rate as f64);
    let paced = stream::unfold(
        (batches.into_iter(), tokio::time::interval(interval)),
        |(mut batches, mut tick)| async move {
            tick.tick().await;
            batches.next().map(|b| (b, (batches, tick)))
        },
    );
    let started = Instant::now();
    let acks = platform.ingest_call_records(paced).await?;
    let mut acks = std::pin::pin!(acks);
    let mut acked_at = Vec::new();
    while let Some(ack) = acks.next().await {
        ack?;
        acked_at.push(Instant::now());
    }
    let achieved = total as f64 / started.elapsed().as_secs_f64();
    let arrivals = tokio::time::timeout(Duration::from_secs(60), follower).await??;
    if arrivals.len() as u64 != total {
        bail!("the feed delivered {} of {total} records", arrivals.len());
    }
    let mut latencies: Vec<Duration> = arrivals
        .iter()
        .filter_map(|(call_id, at)| {
            let acked = acked_at.get(*batch_of.get(call_id)?)?;
            // A record can reach the carrier before the platform reads its acknowledgement.
            Some(at.saturating_duration_since(*acked))
        })
        .collect();
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!("| figure | value | target |");
    println!("|---|---|---|");
    println!(
        "| feed latency at {achieved:.0} records/s ({total} records): p50 / p99 / max | {:.1} / {:.1} / {:.1} ms | p99 < 50 ms |",
        pick(0.5).as_secs_f64() * 1000.0,
        pick(0.99).as_secs_f64() * 1000.0,
        pick(1.0).as_secs_f64() * 1000.0
    );
    drop(server);
    Ok(())
}

//! Reconciliation and usage, and R8: see `Cmd::Reconcile`.
//!
//! N generated call records, the carrier's reports for them (about N: 2% of calls unreported,
//! 5% a few seconds off, 1% reports of calls the platform never had, a tenth matched by
//! correlation id only), then `GetReconciliationSummary`, the first page of `ListDiscrepancies`
//! and `GetTenantUsage` over the whole period, the summary checked against the counts planted;
//! R8 compares the summary with the same query text run in the sqlite3 shell on a copy.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{StreamExt, stream};
use ocx_api::pb;
use ocx_client::DurationUploader;

use crate::figures::{Figure, Target, human};
use crate::harness::{
    BATCH, Backend, CARRIER, START, Server, TENANT, record_batches, setup, timestamp,
};

/// What the carrier's reports should reconcile to.
#[derive(Debug, Default, PartialEq)]
struct Planted {
    platform: i64,
    reports: i64,
    mismatched: i64,
    missing_on_carrier: i64,
    missing_on_platform: i64,
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

pub async fn run(
    backend: &Backend,
    records: u64,
    runs: u32,
    keep: Option<PathBuf>,
) -> anyhow::Result<Vec<Figure>> {
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
    let server = Server::start(backend, &database).await?;
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
    // Every page's token, to time the middle page and the last as the first: keyset pages
    // cost the same wherever they start.
    let mut tokens = vec![String::new()];
    let mut listed = page.discrepancies.len();
    let mut next = page.next_page_token.clone();
    while !next.is_empty() {
        tokens.push(next.clone());
        let more = carrier
            .list_discrepancies(pb::ListDiscrepanciesRequest {
                page_token: next,
                ..discrepancy_request.clone()
            })
            .await?;
        listed += more.discrepancies.len();
        next = more.next_page_token;
    }
    let planted_discrepancies =
        planted.mismatched + planted.missing_on_carrier + planted.missing_on_platform;
    if listed as i64 != planted_discrepancies {
        bail!("the pages listed {listed} discrepancies of {planted_discrepancies}");
    }
    let page_at = |n: usize| {
        let request = pb::ListDiscrepanciesRequest {
            page_token: tokens[n].clone(),
            ..discrepancy_request.clone()
        };
        let carrier = carrier.clone();
        async move {
            timed(runs, || {
                let (carrier, request) = (carrier.clone(), request.clone());
                async move { carrier.list_discrepancies(request).await }
            })
            .await
        }
    };
    let pages = tokens.len();
    let (middle_times, _) = page_at(pages / 2).await?;
    let (last_times, _) = page_at(pages - 1).await?;
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
    let server_database = server.database.clone();
    let size = match std::fs::metadata(&database) {
        Ok(m) => format!("; database {:.0} MiB", m.len() as f64 / (1 << 20) as f64),
        Err(_) => String::new(),
    };
    eprintln!(
        "{records} platform records, {} carrier reports (matched {}, mismatched {}, missing on carrier {}, missing on platform {}), as planted{size}",
        planted.reports,
        summary.matched_count,
        summary.mismatched_count,
        summary.missing_on_carrier_count,
        summary.missing_on_platform_count
    );

    eprintln!("GetReconciliationSummary: {}", spread(&summary_times));
    eprintln!("ListDiscrepancies first page: {}", spread(&page_times));
    eprintln!(
        "ListDiscrepancies page {} of {pages}: {}",
        pages / 2 + 1,
        spread(&middle_times)
    );
    eprintln!(
        "ListDiscrepancies page {pages} of {pages}: {}",
        spread(&last_times)
    );
    eprintln!("GetTenantUsage: {}", spread(&usage_times));

    // R8's limit on PostgreSQL: the same query run directly, alternating with the server's
    // (the server's first runs warmed the cache for both).
    let mut summary_times = summary_times;
    let direct = match backend {
        Backend::Sqlite => None,
        Backend::Postgres(_) => {
            let (direct, served) = direct_summary(&server_database, &summary, period, runs, || {
                let (carrier, request) = (carrier.clone(), summary_request.clone());
                async move { carrier.get_reconciliation_summary(request).await }
            })
            .await?;
            summary_times[0] = summary_times[0].min(served);
            Some(direct)
        }
    };
    // R8's limit on SQLite: the same query text in the sqlite3 shell, on a copy of the files
    // taken while the server is idle.
    drop(server);
    let shell = match (backend, direct) {
        (Backend::Sqlite, _) => shell_summary(&dir, &summary, period, runs)?,
        (Backend::Postgres(_), direct) => direct,
    };

    let per_second = |n: f64, d: Duration| n / d.as_secs_f64();
    let mut figures = vec![
        Figure::info(
            format!("record ingest before reconciliation ({records} records)"),
            format!("{} records/s", human(per_second(records as f64, ingest))),
        ),
        Figure::info(
            format!("report upload ({} reports)", planted.reports),
            format!(
                "{} reports/s",
                human(per_second(planted.reports as f64, upload))
            ),
        ),
    ];
    let summary_name = format!(
        "R8 GetReconciliationSummary, {records} records × {} reports (fastest of {runs})",
        planted.reports
    );
    figures.push(match shell {
        Some((shell_time, version)) => {
            let mut f = Figure::ratio(
                summary_name,
                summary_times[0].as_secs_f64(),
                shell_time.as_secs_f64(),
                "s",
                Target::RatioAtMost(1.1),
            );
            f.limit = format!("{:.2} s {version}", shell_time.as_secs_f64());
            f
        }
        None if backend.is_postgres() => Figure::info(
            summary_name,
            format!("{:.2} s", summary_times[0].as_secs_f64()),
        ),
        None => Figure::info(
            summary_name + " (no sqlite3 on PATH: limit not measured)",
            format!("{:.2} s", summary_times[0].as_secs_f64()),
        ),
    });
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let within = |name: String, d: Duration, limit: f64| {
        Figure::value(
            name,
            format!("{:.1} ms", ms(d)),
            ms(d),
            Target::Below(limit, "ms"),
        )
    };
    figures.push(within(
        format!("GetReconciliationSummary (fastest of {runs})"),
        summary_times[0],
        50.0,
    ));
    figures.push(within(
        format!(
            "ListDiscrepancies, first page of {} (fastest)",
            page.discrepancies.len()
        ),
        page_times[0],
        30.0,
    ));
    figures.push(within(
        format!(
            "ListDiscrepancies, page {} of {pages} (fastest)",
            pages / 2 + 1
        ),
        middle_times[0],
        30.0,
    ));
    figures.push(within(
        format!("ListDiscrepancies, page {pages} of {pages} (fastest)"),
        last_times[0],
        30.0,
    ));
    figures.push(within(
        format!("GetTenantUsage by day, {} rows (fastest)", usage.rows.len()),
        usage_times[0],
        50.0,
    ));
    if let Some(mib) = peak {
        figures.push(Figure::value(
            "server peak RSS during reconciliation",
            format!("{mib:.0} MiB"),
            mib,
            Target::Below(150.0, "MiB"),
        ));
    }
    Ok(figures
        .into_iter()
        .map(|f| f.named(backend.suffix()))
        .collect())
}

/// R8's limit on PostgreSQL: the server's summary query text
/// (`ocx_server::store::postgres::summary_sql()`) with the same parameters, run `runs` times
/// over one plain tokio-postgres connection, each run after one of the server's (`served`);
/// the fastest of each, and the version. Checks its counts against the server's.
async fn direct_summary<F, Fut>(
    url: &str,
    summary: &pb::ReconciliationSummary,
    period: (i64, i64),
    runs: u32,
    served: F,
) -> anyhow::Result<((Duration, String), Duration)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ocx_client::Result<pb::ReconciliationSummary>>,
{
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let version: String = client.query_one("SHOW server_version", &[]).await?.get(0);
    let sql = ocx_server::store::postgres::summary_sql();
    let (start, end, tolerance) = (period.0 * 1_000_000, period.1 * 1_000_000, 1_000_000_i64);
    eprintln!("running the same summary query directly on PostgreSQL {version} ...");
    let (mut best, mut best_served) = (Duration::MAX, Duration::MAX);
    for _ in 0..runs {
        let started = Instant::now();
        served().await?;
        best_served = best_served.min(started.elapsed());
        let started = Instant::now();
        let row = client
            .query_one(sql.as_str(), &[&CARRIER, &start, &end, &tolerance])
            .await?;
        best = best.min(started.elapsed());
        let (platform, matched, mismatched): (i64, i64, i64) = (row.get(0), row.get(2), row.get(3));
        if (platform, matched, mismatched)
            != (
                summary.platform_count,
                summary.matched_count,
                summary.mismatched_count,
            )
        {
            bail!(
                "the direct query counted {platform}, {matched}, {mismatched}: not the server's summary"
            );
        }
    }
    Ok((
        (best, format!("run directly on PostgreSQL {version}")),
        best_served,
    ))
}

/// Runs the server's summary query `runs` times in the sqlite3 shell on a copy of the
/// database; the fastest time and the shell's SQLite version, or `None` without a shell.
/// Checks the shell's counts against the server's.
fn shell_summary(
    dir: &Path,
    summary: &pb::ReconciliationSummary,
    period: (i64, i64),
    runs: u32,
) -> anyhow::Result<Option<(Duration, String)>> {
    let Ok(version) = Command::new("sqlite3").arg("--version").output() else {
        eprintln!("no sqlite3 shell on PATH: R8's limit is not measured");
        return Ok(None);
    };
    let version = String::from_utf8_lossy(&version.stdout)
        .split_whitespace()
        .next()
        .map_or_else(
            || "in the sqlite3 shell".to_owned(),
            |v| format!("in the sqlite3 shell {v}"),
        );
    let copy = dir.join("copy.db");
    std::fs::copy(dir.join("bench.db"), &copy)?;
    if dir.join("bench.db-wal").exists() {
        std::fs::copy(dir.join("bench.db-wal"), dir.join("copy.db-wal"))?;
    }
    let tolerance_us = 1_000_000; // the default tolerance, 1 s
    let script = format!(
        ".parameter set :c '{CARRIER}'\n.parameter set :s {}\n.parameter set :e {}\n.parameter set :tol {tolerance_us}\n{};\n",
        period.0 * 1_000_000,
        period.1 * 1_000_000,
        ocx_server::store::sqlite::summary_sql()
    );
    // Kept beside the database (see `--keep`) to rerun by hand: `sqlite3 copy.db < r8.sql`.
    std::fs::write(dir.join("r8.sql"), &script)?;
    eprintln!("running the same summary query {version} ...");
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let started = Instant::now();
        let mut child = Command::new("sqlite3")
            .arg(&copy)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("sqlite3 stdin")?
            .write_all(script.as_bytes())?;
        let output = child.wait_with_output()?;
        best = best.min(started.elapsed());
        let text = String::from_utf8_lossy(&output.stdout);
        let counts: Vec<i64> = text
            .trim()
            .split('|')
            .filter_map(|x| x.parse().ok())
            .collect();
        if !output.status.success() || counts.len() != 7 {
            bail!(
                "the sqlite3 shell failed: {} {}",
                text,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        if counts[0] != summary.platform_count
            || counts[2] != summary.matched_count
            || counts[3] != summary.mismatched_count
        {
            bail!("the sqlite3 shell counted {counts:?}, the server {summary:?}");
        }
    }
    Ok(Some((best, version)))
}

/// Runs `call` `runs` times; returns each time and the last result.
pub async fn timed<F, Fut, T, E>(runs: u32, call: F) -> anyhow::Result<(Vec<Duration>, T)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
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

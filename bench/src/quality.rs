//! Call quality analytics: see `Cmd::Quality`.
//!
//! N generated call records over 30 days (with the generator's incidents), ingested through
//! OCX; then `GetQualitySummary` over the 30 days by UTC day grouped by trunk, as a carrier
//! asks it, checked to count every call; and beside it the reference: the same answer
//! recomputed from the records themselves (every record of the period read and aggregated by
//! the same rules), as the store's `reference_quality` does, on the same database after the
//! server stopped.

use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{StreamExt, stream};
use ocx_api::pb;

use crate::figures::{Figure, Target, human};
use crate::harness::{Backend, CARRIER, START, Server, record_batches_over, setup, timestamp};
use crate::reconcile::timed;

/// The period: 30 days.
const DAYS: i64 = 30;

pub async fn run(backend: &Backend, records: u64, runs: u32) -> anyhow::Result<Vec<Figure>> {
    let temp = tempfile::tempdir()?;
    let database = temp.path().join("bench.db");
    let server = Server::start(backend, &database).await?;
    let (platform, carrier) = setup(&server).await?;

    eprintln!("ingesting {records} call records over {DAYS} days ...");
    // Spread over 29 days, so that the last calls (the gaps are random) still fall in the 30.
    let span = ((DAYS - 1) * 86_400) as f64;
    let started = Instant::now();
    let acks = platform
        .ingest_call_records(stream::iter(record_batches_over(records, span)))
        .await?;
    let mut acks = std::pin::pin!(acks);
    let mut created = 0_i64;
    while let Some(ack) = acks.next().await {
        created += i64::from(ack?.created_count);
    }
    let ingest = started.elapsed();
    if created != records as i64 {
        bail!("{created} of {records} records were created");
    }

    let request = pb::GetQualitySummaryRequest {
        carrier_id: String::new(),
        start_time: Some(timestamp(START)),
        end_time: Some(timestamp(START + DAYS * 86_400)),
        bucket: pb::TimeBucket::Day as i32,
        group_by: vec![pb::QualityDimension::TrunkFqdn as i32],
        filter: None,
    };
    eprintln!("GetQualitySummary, {runs} runs ...");
    let (times, rows) = timed(runs, || carrier.quality_summary(request.clone())).await?;
    let counted: i64 = rows.iter().map(|r| r.calls).sum();
    if counted != records as i64 {
        bail!("the summary counted {counted} calls of {records}");
    }
    let peak = server.peak_rss_mib();
    let url = server.database.clone();
    drop(server);

    eprintln!("the reference: the same question recomputed from the records ...");
    let query = ocx_server::domain::QualityQuery {
        carrier_id: Some(CARRIER.to_owned()),
        start_hour: START / 3600,
        end_hour: (START + DAYS * 86_400) / 3600,
        bucket: ocx_server::domain::QualityBucket::Day,
        group_by: vec![ocx_server::domain::QualityDimension::TrunkFqdn],
        filter: Default::default(),
    };
    let (reference_times, reference) = match backend {
        Backend::Sqlite => {
            let store = ocx_server::store::sqlite::SqliteStore::open(&database)?;
            timed(runs.min(3), || store.reference_quality(query.clone())).await?
        }
        Backend::Postgres(_) => {
            let options = ocx_server::store::postgres::PgOptions::default();
            let store = ocx_server::store::postgres::PgStore::connect(&url, options).await?;
            timed(runs.min(3), || store.reference_quality(query.clone())).await?
        }
    };
    let reference: Vec<pb::QualitySummaryRow> = reference
        .into_iter()
        .map(ocx_server::convert_quality::quality_row)
        .collect();
    if reference != rows {
        bail!("the summary differs from the one recomputed from the records");
    }

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let db = if backend.is_postgres() {
        " [PostgreSQL]"
    } else {
        ""
    };
    let fastest = times[0];
    let mut figures = vec![
        Figure::info(
            format!("record ingest with the quality aggregates ({records} records){db}"),
            format!("{} records/s", human(records as f64 / ingest.as_secs_f64())),
        ),
        Figure::value(
            format!(
                "GetQualitySummary, {DAYS} days by day grouped by trunk, {} rows (fastest of {runs}; median {:.1} ms){db}",
                rows.len(),
                ms(times[times.len() / 2])
            ),
            format!("{:.1} ms", ms(fastest)),
            ms(fastest),
            Target::Below(50.0, "ms"),
        ),
        Figure::info(
            format!(
                "the same recomputed from the {records} records (fastest of {}){db}",
                reference_times.len()
            ),
            format!("{:.0} ms", ms(reference_times[0])),
        ),
    ];
    if let Some(mib) = peak {
        figures.push(Figure::info(
            format!("server peak RSS during ingest and queries{db}"),
            format!("{mib:.0} MiB"),
        ));
    }
    Ok(figures)
}

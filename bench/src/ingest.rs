//! R1, R2, R7, the cost of durability and the server's peak memory: see `Cmd::Ingest`.

use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{StreamExt, stream};
use ocx_api::pb;
use ocx_client::{Client, DurationUploader};

use crate::figures::{Figure, Target};
use crate::harness::{BATCH, Backend, CARRIER, Server, record_batches, setup};

/// Times R7 runs each side, alternating; the fastest of each counts (a replay takes well under
/// a second per 100,000 records, so one run is at the mercy of whatever else the machine does).
const REPLAYS: u32 = 3;

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

/// Ingests the generated records over one `IngestCallRecords` stream, timed from opening the
/// stream to the last acknowledgement; checks every record was created.
pub async fn ingest_records(platform: &Client, records: u64) -> anyhow::Result<Duration> {
    ingest_batches(platform, record_batches(records).collect()).await
}

/// Ingests `batches` over one `IngestCallRecords` stream, timed from opening the stream to the
/// last acknowledgement; checks every record was created.
async fn ingest_batches(
    platform: &Client,
    batches: Vec<Vec<pb::CallRecord>>,
) -> anyhow::Result<Duration> {
    let records: usize = batches.iter().map(Vec::len).sum();
    let started = Instant::now();
    let acks = platform.ingest_call_records(stream::iter(batches)).await?;
    let mut acks = std::pin::pin!(acks);
    let mut created = 0_i64;
    while let Some(ack) = acks.next().await {
        created += i64::from(ack?.created_count);
    }
    let elapsed = started.elapsed();
    if created != records as i64 {
        bail!("{created} of {records} records were created");
    }
    Ok(elapsed)
}

/// Batches per turn of the interleaved runs (100,000 records or reports).
const TURN: usize = 100;

/// Who runs in one turn of R1 and the cost of durability.
#[derive(Clone, Copy)]
enum Side {
    /// OCX, as it runs (`synchronous=FULL`).
    Ocx,
    /// OCX on a server that does not sync at each commit.
    Normal,
    /// rusqlite straight into the same schema.
    Limit,
}

/// R1 and the cost of durability: the same records through OCX, through OCX without a sync at
/// each commit, and by rusqlite straight into the schema at `baseline`, in turns of [`TURN`]
/// batches each, the order rotating from turn to turn. Run one after the other, the three
/// ingests took minutes apart, and this machine's disk and neighbours drifted between them
/// (R2, which this issue's changes do not touch, ranged 0.63–0.99 in consecutive runs);
/// in turns, each side meets the same conditions, on databases of the same size. The time
/// each side took in all: OCX, OCX without syncs, the limit.
async fn r1_in_turns(
    ocx: &Client,
    normal: &Client,
    baseline: std::path::PathBuf,
    records: u64,
) -> anyhow::Result<(Duration, Duration, Duration)> {
    let batches: Vec<Vec<pb::CallRecord>> = record_batches(records).collect();
    let mut domain = converted(batches.iter(), |r| {
        ocx_server::convert_calls::call_record_in(r, "r")
    })?
    .into_iter();
    let mut conn = Some(ocx_server::store::sqlite::baseline::open(&baseline)?);
    let (mut took, mut sequence) = ([Duration::ZERO; 3], 1_i64);
    for (turn, slice) in batches.chunks(TURN).enumerate() {
        let mut part: Vec<_> = domain.by_ref().take(slice.len()).collect();
        for k in 0..3 {
            match [Side::Ocx, Side::Normal, Side::Limit][(turn + k) % 3] {
                Side::Ocx => took[0] += ingest_batches(ocx, slice.to_vec()).await?,
                Side::Normal => took[1] += ingest_batches(normal, slice.to_vec()).await?,
                Side::Limit => {
                    let (c, mut batches) = (conn.take(), std::mem::take(&mut part));
                    let (c, elapsed, next) = tokio::task::spawn_blocking(move || {
                        let c = c.ok_or_else(|| anyhow::anyhow!("no baseline connection"))?;
                        let started = Instant::now();
                        let mut sequence = sequence;
                        for batch in &mut batches {
                            ocx_server::store::sqlite::baseline::insert_call_records(
                                &c, batch, CARRIER, sequence,
                            )?;
                            sequence += batch.len() as i64;
                        }
                        anyhow::Ok((c, started.elapsed(), sequence))
                    })
                    .await??;
                    (conn, took[2], sequence) = (Some(c), took[2] + elapsed, next);
                }
            }
        }
    }
    Ok((took[0], took[1], took[2]))
}

/// R2: the reports through OCX's `UploadCallDurations` and by the store's INSERT straight into
/// the schema at `baseline` (which holds the records), in turns of [`TURN`] batches, the order
/// alternating (see [`r1_in_turns`]). The time each side took in all: OCX, the limit.
async fn r2_in_turns(
    platform: &Client,
    baseline: std::path::PathBuf,
    reports: &[((), Vec<pb::CallDurationReport>)],
) -> anyhow::Result<(Duration, Duration)> {
    let mut domain = converted(reports.iter().map(|(_, b)| b), |r| {
        ocx_server::convert_durations::report_in(r, "r")
    })?
    .into_iter();
    let mut conn = Some(ocx_server::store::sqlite::baseline::open(&baseline)?);
    let mut took = [Duration::ZERO; 2];
    for (turn, slice) in reports.chunks(TURN).enumerate() {
        let mut part: Vec<_> = domain.by_ref().take(slice.len()).collect();
        for k in 0..2 {
            if (turn + k) % 2 == 0 {
                let count: usize = slice.iter().map(|(_, b)| b.len()).sum();
                let started = Instant::now();
                let totals = DurationUploader::new(platform, CARRIER)
                    .run(stream::iter(slice.to_vec()), |(), _| {})
                    .await?;
                took[0] += started.elapsed();
                if totals.created != count as u64 {
                    bail!("{} of {count} reports were created", totals.created);
                }
            } else {
                let (c, batches) = (conn.take(), std::mem::take(&mut part));
                let (c, elapsed) = tokio::task::spawn_blocking(move || {
                    let c = c.ok_or_else(|| anyhow::anyhow!("no baseline connection"))?;
                    let started = Instant::now();
                    for batch in &batches {
                        ocx_server::store::sqlite::baseline::insert_call_durations(
                            &c, batch, CARRIER,
                        )?;
                    }
                    anyhow::Ok((c, started.elapsed()))
                })
                .await??;
                (conn, took[1]) = (Some(c), took[1] + elapsed);
            }
        }
    }
    Ok((took[0], took[1]))
}

/// R7: the fastest of [`REPLAYS`] replays of the feed, and of the prepared SELECT over the same
/// rows, alternating.
async fn replays(
    backend: &Backend,
    server: &Server,
    platform: &Client,
    database: &std::path::Path,
    records: u64,
) -> anyhow::Result<(Duration, Duration)> {
    eprintln!("replaying the feed, {REPLAYS} times each way ...");
    let (mut replayed, mut selected) = (Duration::MAX, Duration::MAX);
    for _ in 0..REPLAYS {
        replayed = replayed.min(replay(platform, records).await?);
        let select = match backend {
            Backend::Sqlite => {
                let path = database.to_owned();
                tokio::task::spawn_blocking(move || select_all(&path, records)).await??
            }
            Backend::Postgres(_) => select_all_postgres(&server.database, records).await?,
        };
        selected = selected.min(select);
    }
    Ok((replayed, selected))
}

/// The whole feed replayed to a client over `StreamCallRecords`.
pub async fn replay(platform: &Client, records: u64) -> anyhow::Result<Duration> {
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
    Ok(started.elapsed())
}

/// R7's limit: the same rows iterated with a prepared SELECT (every column read) on a read-only
/// connection to the same file, in feed order.
fn select_all(database: &std::path::Path, records: u64) -> anyhow::Result<Duration> {
    let conn = rusqlite::Connection::open_with_flags(
        database,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
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
    let elapsed = started.elapsed();
    if n != records {
        bail!("the SELECT read {n} of {records} rows");
    }
    Ok(elapsed)
}

/// R7's limit on PostgreSQL: the same rows read with one SELECT (every column) over one
/// tokio-postgres connection, in feed order, streamed.
async fn select_all_postgres(url: &str, records: u64) -> anyhow::Result<Duration> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let started = Instant::now();
    let rows = client
        .query_raw(
            "SELECT * FROM call_records WHERE carrier_id = $1 AND feed_sequence > $2
             ORDER BY feed_sequence",
            [
                &CARRIER as &(dyn tokio_postgres::types::ToSql + Sync),
                &0_i64,
            ],
        )
        .await?;
    let mut rows = std::pin::pin!(rows);
    let mut n = 0_u64;
    while let Some(row) = rows.next().await {
        let row = row?;
        // Every column decoded to its Rust type, as the server's conversion does.
        use tokio_postgres::types::Type;
        for (i, column) in row.columns().iter().enumerate() {
            match *column.type_() {
                Type::INT8 => drop(row.try_get::<_, Option<i64>>(i)?),
                Type::BOOL => drop(row.try_get::<_, Option<bool>>(i)?),
                Type::BYTEA => drop(row.try_get::<_, Option<Vec<u8>>>(i)?),
                _ => drop(row.try_get::<_, Option<String>>(i)?),
            }
        }
        n += 1;
    }
    let elapsed = started.elapsed();
    if n != records {
        bail!("the SELECT read {n} of {records} rows");
    }
    Ok(elapsed)
}

/// The ingest figures on PostgreSQL: OCX's rates (the SQLite table's limits are SQLite's own),
/// R7 against a plain SELECT, the server's memory.
fn postgres_figures(
    records: u64,
    ingest: Duration,
    reports: usize,
    upload: Duration,
    (replayed, selected): (Duration, Duration),
    peak: Option<f64>,
) -> Vec<Figure> {
    let per_second = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    let mut figures = vec![
        Figure::info(
            format!("R1 call-record ingest ({records} records) [PostgreSQL]"),
            format!(
                "{} records/s",
                crate::figures::human(per_second(records, ingest))
            ),
        ),
        Figure::info(
            format!("R2 duration ingest ({reports} reports) [PostgreSQL]"),
            format!(
                "{} reports/s",
                crate::figures::human(per_second(reports as u64, upload))
            ),
        ),
        Figure::ratio(
            format!(
                "R7 StreamCallRecords replay ({records} records, fastest of {REPLAYS}) [PostgreSQL; limit: one SELECT]"
            ),
            per_second(records, replayed),
            per_second(records, selected),
            "records/s",
            Target::None,
        ),
    ];
    if let Some(mib) = peak {
        figures.push(Figure::info(
            "server peak RSS during ingest and replay [PostgreSQL]",
            format!("{mib:.0} MiB"),
        ));
    }
    figures
}

/// The batches in the store's domain types, converted before the limit's clock starts.
fn converted<I, O, B: AsRef<[I]>>(
    batches: impl Iterator<Item = B>,
    convert: impl Fn(&I) -> Result<O, ocx_server::error::Violations>,
) -> anyhow::Result<Vec<Vec<O>>> {
    batches
        .map(|batch| {
            batch
                .as_ref()
                .iter()
                .map(&convert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|v| anyhow::anyhow!("a generated item is invalid: {:?}", v.into_pairs()))
        })
        .collect()
}

pub async fn run(backend: &Backend, records: u64) -> anyhow::Result<Vec<Figure>> {
    let dir = tempfile::tempdir()?;
    let database = dir.path().join("ocx.db");
    let server = Server::start(backend, &database).await?;
    let (platform, _carrier) = setup(&server).await?;
    let reports = report_batches(records);
    let report_count: usize = reports.iter().map(|(_, b)| b.len()).sum();
    if backend.is_postgres() {
        eprintln!("ingesting {records} call records through OCX ...");
        let ocx = ingest_records(&platform, records).await?;
        let replays = replays(backend, &server, &platform, &database, records).await?;
        eprintln!("uploading duration reports through OCX ...");
        let started = Instant::now();
        let totals = DurationUploader::new(&platform, CARRIER)
            .run(stream::iter(reports.clone()), |(), _| {})
            .await?;
        let upload = started.elapsed();
        if totals.created != report_count as u64 {
            bail!("{} of {report_count} reports were created", totals.created);
        }
        let peak = server.peak_rss_mib();
        return Ok(postgres_figures(
            records,
            ocx,
            report_count,
            upload,
            replays,
            peak,
        ));
    }

    let normal_server = Server::start_with(
        &dir.path().join("normal.db").display().to_string(),
        "normal",
    )?;
    let (normal_platform, _) = setup(&normal_server).await?;
    let baseline_path = dir.path().join("baseline.db");
    eprintln!(
        "ingesting {records} call records through OCX, through OCX with synchronous=NORMAL, \
         and with rusqlite directly, in turns of {} ...",
        TURN * BATCH
    );
    let (ocx, normal, baseline) =
        r1_in_turns(&platform, &normal_platform, baseline_path.clone(), records).await?;
    let peak = server.peak_rss_mib();
    drop(normal_server);

    let (replayed, selected) = replays(backend, &server, &platform, &database, records).await?;

    // R2: the carrier's duration reports for those calls over `UploadCallDurations`.
    eprintln!(
        "uploading duration reports through OCX and inserting them directly, in turns of {} ...",
        TURN * BATCH
    );
    let (upload, report_baseline) = r2_in_turns(&platform, baseline_path, &reports).await?;
    drop(server);

    let per_second = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    let mut figures = vec![
        Figure::ratio(
            format!("R1 call-record ingest ({records} records)"),
            per_second(records, ocx),
            per_second(records, baseline),
            "records/s",
            Target::RatioAtLeast(0.7),
        ),
        Figure::ratio(
            format!("R2 duration ingest ({report_count} reports)"),
            per_second(report_count as u64, upload),
            per_second(report_count as u64, report_baseline),
            "reports/s",
            Target::RatioAtLeast(0.7),
        ),
        Figure::ratio(
            format!("R7 StreamCallRecords replay ({records} records, fastest of {REPLAYS})"),
            per_second(records, replayed),
            per_second(records, selected),
            "records/s",
            Target::RatioAtLeast(0.6),
        ),
        Figure::ratio(
            "cost of durability: ingest with synchronous=FULL ÷ NORMAL",
            per_second(records, ocx),
            per_second(records, normal),
            "records/s",
            Target::RatioAtLeast(0.9),
        ),
    ];
    figures.push(match peak {
        Some(mib) => Figure::value(
            "server peak RSS during the ingest",
            format!("{mib:.0} MiB"),
            mib,
            Target::Below(150.0, "MiB"),
        ),
        None => Figure::info(
            "server peak RSS during the ingest",
            "unknown (no /proc)".into(),
        ),
    });
    Ok(figures)
}

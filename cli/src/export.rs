//! `ocx calls export`: every record of a time window, page after page, written as CSV or JSON
//! lines as the pages arrive (memory stays flat however large the window).
//!
//! A file is written beside its destination as `<FILE>.part` and renamed when complete, so an
//! interrupted export never leaves a truncated file that looks finished.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::pin::pin;

use anyhow::Context;
use futures_util::{Stream, StreamExt};
use indicatif::ProgressBar;
use ocx_client::{Client, pb};

use clap::{Args, ValueEnum};

use crate::output::{self, CALL_RECORD_COLUMNS, Render, call_record_csv_row};

/// `ocx calls export` flags.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Records that started at or after this time (RFC 3339 UTC).
    #[arg(long, value_parser = crate::values::rfc3339)]
    pub since: prost_types::Timestamp,
    /// Records that started before this time (RFC 3339 UTC).
    #[arg(long, value_parser = crate::values::rfc3339)]
    pub until: prost_types::Timestamp,
    /// The carrier (required with a platform key).
    #[arg(long, value_parser = crate::values::carrier_id)]
    pub carrier: Option<String>,
    /// The file format.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Write to this file (replaced only once the export is complete) instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `--format` of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// Runs the export; the progress spinner (if shown) is cleared at the end and replaced by one
/// summary line on stderr.
pub async fn export(client: &Client, args: ExportArgs) -> anyhow::Result<()> {
    let key = |t: &prost_types::Timestamp| (t.seconds, t.nanos);
    if key(&args.until) <= key(&args.since) {
        anyhow::bail!("--until must be later than --since");
    }
    let request = pb::ListCallRecordsRequest {
        carrier_id: args.carrier.unwrap_or_default(),
        start_time_from: Some(args.since),
        start_time_to: Some(args.until),
        page_size: ocx_api::MAX_PAGE_SIZE as i32,
        ..Default::default()
    };
    let records = client.call_records(request);
    let bar = output::progress("records exported", None, args.out.is_none());
    let result = match &args.out {
        None => write_all(records, args.format, BufWriter::new(io::stdout()), &bar).await,
        Some(path) => to_file(records, args.format, path, &bar).await,
    };
    bar.finish_and_clear();
    let count = result?;
    if !bar.is_hidden() {
        let place = args
            .out
            .as_ref()
            .map_or_else(String::new, |p| format!(" to {}", p.display()));
        eprintln!("exported {count} records{place}");
    }
    Ok(())
}

/// Writes to `<path>.part`, then renames it to `path`; removes the part file on failure.
async fn to_file(
    records: impl Stream<Item = ocx_client::Result<pb::CallRecord>>,
    format: ExportFormat,
    path: &Path,
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    let mut part = PathBuf::from(path);
    part.as_mut_os_string().push(".part");
    let file = File::create(&part).with_context(|| format!("creating {}", part.display()))?;
    let result = write_all(records, format, BufWriter::new(file), bar)
        .await
        .and_then(|count| {
            fs::rename(&part, path)
                .with_context(|| format!("renaming {} to {}", part.display(), path.display()))?;
            Ok(count)
        });
    if result.is_err() {
        // Best effort: the export already failed, and that is the error worth reporting.
        let _ = fs::remove_file(&part);
    }
    result
}

/// Writes every record in `format`, ticking `bar`; returns how many were written. A failed
/// listing is returned after the records before it were written.
async fn write_all<W: Write>(
    records: impl Stream<Item = ocx_client::Result<pb::CallRecord>>,
    format: ExportFormat,
    out: W,
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    let mut records = pin!(records);
    let mut count = 0;
    match format {
        ExportFormat::Csv => {
            let mut writer = csv::Writer::from_writer(out);
            writer
                .write_record(CALL_RECORD_COLUMNS)
                .map_err(csv_error)?;
            while let Some(record) = records.next().await {
                writer
                    .write_record(call_record_csv_row(&record?))
                    .map_err(csv_error)?;
                count += 1;
                bar.inc(1);
            }
            writer.flush()?;
        }
        ExportFormat::Jsonl => {
            let mut out = out;
            while let Some(record) = records.next().await {
                writeln!(out, "{}", record?.json())?;
                count += 1;
                bar.inc(1);
            }
            out.flush()?;
        }
    }
    Ok(count)
}

/// A CSV error as an `io::Error` when it is one, so that a closed pipe is recognised as such.
fn csv_error(error: csv::Error) -> anyhow::Error {
    match error.into_kind() {
        csv::ErrorKind::Io(error) => error.into(),
        other => anyhow::anyhow!("writing CSV: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(call_id: &str) -> pb::CallRecord {
        pb::CallRecord {
            call_id: call_id.into(),
            version: 2,
            call_type: pb::CallType::UserIn.into(),
            direction: pb::CallDirection::Inbound.into(),
            caller_number: "+14155550100".into(),
            callee_number: "+442079460001".into(),
            final_sip_phrase: "OK, \"fine\"".into(),
            start_time: Some(prost_types::Timestamp {
                seconds: 1_714_521_600,
                nanos: 0,
            }),
            duration: Some(prost_types::Duration {
                seconds: 61,
                nanos: 500_000_000,
            }),
            quality: pb::QualityVerdict::Poor.into(),
            poor_due_to: vec![
                pb::QualityMetric::RoundTripTime.into(),
                pb::QualityMetric::Jitter.into(),
            ],
            media_streams: vec![pb::MediaStream {
                codec: "OPUS".into(),
                average_jitter: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 31_000_000,
                }),
                ..Default::default()
            }],
            feed_sequence: 7,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn csv_has_the_flat_columns() {
        let records = futures_util::stream::iter([Ok(record("a")), Ok(record("b"))]);
        let mut out = Vec::new();
        let count = write_all(records, ExportFormat::Csv, &mut out, &ProgressBar::hidden())
            .await
            .expect("writes");
        assert_eq!(count, 2);
        let text = String::from_utf8(out).expect("utf-8");
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader.headers().expect("header").clone();
        assert_eq!(headers.iter().collect::<Vec<_>>(), CALL_RECORD_COLUMNS);
        let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
        assert_eq!(rows.len(), 2);
        let cell = |name: &str| {
            let i = CALL_RECORD_COLUMNS
                .iter()
                .position(|c| *c == name)
                .expect("column");
            rows[0][i].to_owned()
        };
        assert_eq!(cell("call_id"), "a");
        assert_eq!(cell("call_type"), "user_in");
        assert_eq!(cell("direction"), "inbound");
        assert_eq!(cell("start_time"), "2024-05-01T00:00:00Z");
        assert_eq!(cell("invite_time"), "");
        assert_eq!(cell("duration_seconds"), "61.5");
        assert_eq!(cell("final_sip_phrase"), "OK, \"fine\"");
        assert_eq!(cell("quality"), "poor");
        assert_eq!(cell("poor_due_to"), "round_trip_time;jitter");
        assert_eq!(cell("destination_context"), "");
        assert_eq!(cell("feed_sequence"), "7");
    }

    #[tokio::test]
    async fn jsonl_adds_media_streams_and_stops_at_an_error() {
        let error = ocx_client::Error::Config("boom".into());
        let records = futures_util::stream::iter([Ok(record("a")), Err(error), Ok(record("c"))]);
        let mut out = Vec::new();
        let result = write_all(
            records,
            ExportFormat::Jsonl,
            &mut out,
            &ProgressBar::hidden(),
        )
        .await;
        assert!(result.is_err());
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 1, "only the record before the error");
        assert_eq!(lines[0]["call_id"], "a");
        assert_eq!(lines[0]["poor_due_to"][1], "jitter");
        assert_eq!(lines[0]["duration_seconds"], 61.5);
        assert_eq!(lines[0]["media_streams"][0]["average_jitter_ms"], 31.0);
        assert_eq!(lines[0]["media_streams"][0]["mos"], serde_json::Value::Null);
        for column in CALL_RECORD_COLUMNS {
            assert!(lines[0].get(column).is_some(), "{column} missing");
        }
    }

    #[tokio::test]
    async fn a_failed_export_leaves_no_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("calls.csv");
        let error = ocx_client::Error::Config("boom".into());
        let records = futures_util::stream::iter([Ok(record("a")), Err(error)]);
        let result = to_file(records, ExportFormat::Csv, &path, &ProgressBar::hidden()).await;
        assert!(result.is_err());
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 0);

        let records = futures_util::stream::iter([Ok(record("a"))]);
        let count = to_file(records, ExportFormat::Csv, &path, &ProgressBar::hidden())
            .await
            .expect("exports");
        assert_eq!(count, 1);
        assert_eq!(fs::read_to_string(&path).expect("file").lines().count(), 2);
    }
}

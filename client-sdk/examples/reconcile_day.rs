//! Uploads a day of the carrier's call durations and prints the reconciliation of that day
//! with the platform's call records: the summary, then the first calls that differ.
//!
//! ```text
//! OCX_KEY_FILE=ocx-data/demo-carrier.key \
//!   cargo run -p ocx-client --example reconcile_day -- 2026-12-04 [durations.csv]
//! ```
//!
//! The CSV file has a header row and the columns `record_id, call_id, correlation_id,
//! caller_number, callee_number, start_time` (RFC 3339) and `duration_seconds`, as
//! `ocx durations upload` reads them. Without a file the example stands in for the carrier's
//! switch: it reads the day's call records and reports each one's duration as the switch might
//! have measured it (every tenth call 3 s longer, every seventh not reported at all), so that
//! the reconciliation has something to show. Uploading the same day again changes nothing:
//! every report comes back unchanged. (The demo server already holds the demo carrier's own
//! reports of most calls; a call reported twice is paired with one report, and the other counts
//! as missing on the platform's side, as `reconciliation.proto` documents.)

mod common;

use std::time::{Duration, SystemTime};

use futures_util::{StreamExt, TryStreamExt, stream};
use ocx_client::{DurationUploader, pb};

/// Reports per batch: the server's default limit.
const BATCH: usize = 1000;

/// Seconds since the epoch of `time`.
fn seconds(time: SystemTime) -> Result<i64, Box<dyn std::error::Error>> {
    Ok(i64::try_from(
        time.duration_since(SystemTime::UNIX_EPOCH)?.as_secs(),
    )?)
}

/// A protobuf timestamp at `seconds`.
fn at(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

/// The reports in the CSV file `path`.
fn from_csv(path: &str) -> Result<Vec<pb::CallDurationReport>, Box<dyn std::error::Error>> {
    let mut reports = Vec::new();
    for row in csv::Reader::from_path(path)?.records() {
        let row = row?;
        let start = seconds(humantime::parse_rfc3339(&row[5])?)?;
        let duration = Duration::from_secs_f64(row[6].parse()?);
        reports.push(pb::CallDurationReport {
            record_id: row[0].to_owned(),
            call_id: row[1].to_owned(),
            correlation_id: row[2].to_owned(),
            caller_number: row[3].to_owned(),
            callee_number: row[4].to_owned(),
            start_time: at(start),
            duration: Some(prost_types::Duration {
                seconds: i64::try_from(duration.as_secs())?,
                nanos: i32::try_from(duration.subsec_micros() * 1000)?,
            }),
        });
    }
    Ok(reports)
}

/// The day's call records, reported as a carrier's switch might have measured them.
async fn as_measured(
    client: &ocx_client::Client,
    (from, to): (i64, i64),
) -> Result<Vec<pb::CallDurationReport>, Box<dyn std::error::Error>> {
    let records: Vec<pb::CallRecord> = client
        .call_records(pb::ListCallRecordsRequest {
            start_time_from: at(from),
            start_time_to: at(to),
            ..Default::default()
        })
        .try_collect()
        .await?;
    Ok(records
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 7 != 3)
        .map(|(i, r)| {
            let mut duration = r.duration.unwrap_or_default();
            if i % 10 == 5 {
                duration.seconds += 3;
            }
            pb::CallDurationReport {
                record_id: format!("switch-{}", r.call_id),
                call_id: r.call_id.clone(),
                correlation_id: r.correlation_id.clone(),
                caller_number: r.caller_number.clone(),
                callee_number: r.callee_number.clone(),
                start_time: r.start_time,
                duration: Some(duration),
            }
        })
        .collect())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: reconcile_day YYYY-MM-DD [DURATIONS.csv]";
    let mut args = std::env::args().skip(1);
    let day = args.next().ok_or(usage)?;
    let from = seconds(humantime::parse_rfc3339(&format!("{day}T00:00:00Z"))?)?;
    let to = from + 24 * 3600;
    let client = common::connect().await?;

    let reports = match args.next() {
        Some(path) => from_csv(&path)?,
        None => as_measured(&client, (from, to)).await?,
    };
    println!("uploading {} duration reports for {day}", reports.len());

    // Batches of up to 1,000, several in flight; what the server did not acknowledge is sent
    // again after a reconnect, so an interrupted upload loses nothing and doubles nothing.
    let batches: Vec<((), Vec<pb::CallDurationReport>)> = reports
        .chunks(BATCH)
        .map(|batch| ((), batch.to_vec()))
        .collect();
    let uploader = DurationUploader::new(&client, "");
    let totals = uploader
        .run(stream::iter(batches), |(), ack| {
            for result in &ack.results {
                if result.status == pb::ItemStatus::Rejected as i32 {
                    eprintln!("rejected {}: {}", result.record_id, result.reason);
                }
            }
        })
        .await?;
    println!(
        "uploaded: {} created, {} unchanged, {} corrected, {} rejected",
        totals.created, totals.unchanged, totals.corrected, totals.rejected
    );

    // The day, reconciled: a call's period is the platform's start time (an unmatched
    // report's, its own), and durations within the tolerance match.
    let period = |page_size| pb::ListDiscrepanciesRequest {
        start_time: at(from),
        end_time: at(to),
        tolerance: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        page_size,
        ..Default::default()
    };
    let summary = client
        .get_reconciliation_summary(pb::GetReconciliationSummaryRequest {
            start_time: at(from),
            end_time: at(to),
            tolerance: period(0).tolerance,
            ..Default::default()
        })
        .await?;
    println!(
        "{day}: {} matched, {} mismatched, {} missing on the carrier's side, {} missing on the \
         platform's",
        summary.matched_count,
        summary.mismatched_count,
        summary.missing_on_carrier_count,
        summary.missing_on_platform_count
    );
    let mut differing = std::pin::pin!(client.discrepancies(period(100)).take(10));
    while let Some(d) = differing.next().await {
        let d = d?;
        let kind = pb::DiscrepancyKind::try_from(d.kind).map_or("unknown", |k| k.as_str_name());
        let secs = |x: Option<prost_types::Duration>| x.map(|x| x.seconds);
        println!(
            "  {kind}\t{}\tplatform {:?} s\tcarrier {:?} s",
            d.call_id,
            secs(d.platform_duration),
            secs(d.carrier_duration)
        );
    }
    Ok(())
}

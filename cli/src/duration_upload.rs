//! `ocx durations upload FILE.csv`: a carrier's call durations from CSV, streamed to the server
//! with [`DurationUploader`] (batches of up to 1000 in flight, unacknowledged batches resent
//! after a broken connection), a progress bar, a summary, and a file of rejected rows with
//! their reasons.
//!
//! The CSV has a header row. Columns, in any order (names are case-insensitive):
//! - `record_id` (required): the carrier's own id for the call, its idempotency key;
//! - `call_id`, `correlation_id`: the platform's call id and/or the SIP Call-ID; at least one;
//! - `caller_number`, `callee_number`: E.164;
//! - `start_time`: RFC 3339, e.g. `2024-05-01T10:00:00Z` or `2024-05-01T10:00:00.250Z`;
//! - `duration_seconds`: a decimal number of seconds, up to microseconds, e.g. `61.25`.
//!
//! The file is read as it is sent, so any size runs in flat memory. A row the CLI cannot read
//! (a bad time or number of seconds) is not sent and goes to the rejects file with the rows
//! the server rejected; the rejects file has a `line` column, the row's own columns, and
//! `reason`, and is always written (just its header when nothing was rejected) so that a stale
//! one is never mistaken for this run's.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use futures_util::stream;
use ocx_api::MAX_BATCH_ITEMS;
use ocx_client::{Client, DurationUploader, UploadTotals, pb};
use serde_json::json;

use crate::output::{self, Format};

/// The columns a CSV may have, in the order the rejects file repeats them.
pub const COLUMNS: &[&str] = &[
    "record_id",
    "call_id",
    "correlation_id",
    "caller_number",
    "callee_number",
    "start_time",
    "duration_seconds",
];

/// How many rejected rows the summary prints (all of them go to the rejects file).
const SHOWN_REJECTIONS: usize = 5;

/// Where a row came from, kept until its batch is acknowledged.
struct Source {
    /// The row's line in the file (1 is the header).
    line: u64,
    /// The row's cells in [`COLUMNS`] order, for the rejects file.
    cells: Vec<String>,
}

/// A row not stored, and why.
struct Rejected {
    /// Where it came from.
    source: Source,
    /// The reason, with the CSV column at fault.
    reason: String,
}

/// Reads rows from a CSV file lazily, batching them; rows it cannot read become rejects.
struct Rows<R: Read> {
    /// The CSV reader.
    reader: csv::Reader<R>,
    /// Column name → index in the file.
    index: HashMap<&'static str, usize>,
    /// Rows of the batch being built.
    batch_size: usize,
    /// Rows rejected before sending (shared with the caller through `take_rejects`).
    rejects: Vec<Rejected>,
    /// A CSV error that ended the reading (malformed quoting, bad UTF-8).
    error: Option<anyhow::Error>,
    /// Rows read so far, sent or not.
    read: u64,
}

impl<R: Read> Rows<R> {
    /// Checks the header row.
    fn new(input: R, batch_size: usize) -> anyhow::Result<Rows<R>> {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(input);
        let index = crate::upload::header_index(
            reader.headers().context("reading the header row")?,
            COLUMNS,
        )?;
        for required in ["record_id", "start_time", "duration_seconds"] {
            if !index.contains_key(required) {
                bail!("the header row has no {required:?} column");
            }
        }
        if !index.contains_key("call_id") && !index.contains_key("correlation_id") {
            bail!("the header row needs a \"call_id\" or a \"correlation_id\" column");
        }
        Ok(Rows {
            reader,
            index,
            batch_size,
            rejects: Vec::new(),
            error: None,
            read: 0,
        })
    }

    /// The next batch of readable rows (with their sources), or `None` at the end of the file
    /// or at a CSV error (kept in `error`).
    fn next_batch(&mut self) -> Option<(Vec<Source>, Vec<pb::CallDurationReport>)> {
        let mut sources = Vec::with_capacity(self.batch_size);
        let mut reports = Vec::with_capacity(self.batch_size);
        let mut record = csv::StringRecord::new();
        while reports.len() < self.batch_size && self.error.is_none() {
            match self.reader.read_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(error) => {
                    self.error = Some(anyhow::Error::new(error).context("reading the CSV"));
                    break;
                }
            }
            self.read += 1;
            let line = record.position().map_or(0, |p| p.line());
            let cells: Vec<String> = COLUMNS
                .iter()
                .map(|c| {
                    self.index
                        .get(c)
                        .and_then(|&i| record.get(i))
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect();
            let source = Source { line, cells };
            match to_report(&source.cells) {
                Ok(report) => {
                    sources.push(source);
                    reports.push(report);
                }
                Err(reason) => self.rejects.push(Rejected { source, reason }),
            }
        }
        (!reports.is_empty()).then_some((sources, reports))
    }
}

/// A row's cells (in [`COLUMNS`] order) as a report; the server checks the rest.
fn to_report(cells: &[String]) -> Result<pb::CallDurationReport, String> {
    let [
        record_id,
        call_id,
        correlation_id,
        caller_number,
        callee_number,
        start_time,
        duration_seconds,
    ] = cells
    else {
        return Err("internal: wrong number of cells".to_owned());
    };
    let start_time = humantime::parse_rfc3339(start_time)
        .map(prost_types::Timestamp::from)
        .map_err(|e| {
            format!("start_time: {e}: expected RFC 3339 UTC, e.g. 2024-05-01T10:00:00Z")
        })?;
    let duration = parse_seconds(duration_seconds).map_err(|e| format!("duration_seconds: {e}"))?;
    Ok(pb::CallDurationReport {
        record_id: record_id.clone(),
        call_id: call_id.clone(),
        correlation_id: correlation_id.clone(),
        caller_number: caller_number.clone(),
        callee_number: callee_number.clone(),
        start_time: Some(start_time),
        duration: Some(duration),
    })
}

/// `61.25` → 61 s 250 ms. Up to six decimals (microseconds); a sign is kept so that the server
/// can say what is wrong with a negative duration.
fn parse_seconds(text: &str) -> Result<prost_types::Duration, String> {
    let bad = || format!("{text:?} is not a number of seconds such as 61 or 61.25");
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    if fraction.len() > 6 {
        return Err(format!(
            "{text:?} has more than six decimals (microseconds)"
        ));
    }
    let seconds: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let micros: i32 = format!("{fraction:0<6}").parse().map_err(|_| bad())?;
    let (sign, nanos) = (if negative { -1 } else { 1 }, micros * 1000);
    Ok(prost_types::Duration {
        seconds: sign * seconds,
        nanos: if negative { -nanos } else { nanos },
    })
}

/// `durations[3].call_id` → `call_id`.
fn column_of(field: &str) -> &str {
    field.split_once("].").map_or(field, |(_, rest)| rest)
}

/// The rejects file's path: `--rejects`, else `FILE.rejects.csv` beside the input (or
/// `rejects.csv` for stdin).
pub fn rejects_path(file: &Path, rejects: Option<PathBuf>) -> PathBuf {
    rejects.unwrap_or_else(|| {
        if file.as_os_str() == "-" {
            PathBuf::from("rejects.csv")
        } else {
            let mut name = file.file_stem().unwrap_or_default().to_os_string();
            name.push(".rejects.csv");
            file.with_file_name(name)
        }
    })
}

/// How many data rows `path` holds, for the progress bar (a fast first pass).
fn count_rows(path: &Path) -> Option<u64> {
    let file = File::open(path).ok()?;
    let mut reader = csv::Reader::from_reader(BufReader::with_capacity(1 << 20, file));
    let mut record = csv::ByteRecord::new();
    let mut rows = 0;
    while reader.read_byte_record(&mut record).ok()? {
        rows += 1;
    }
    Some(rows)
}

/// Uploads the file; prints the summary (exit code 1 if any row was rejected).
pub async fn upload(
    client: &Client,
    format: Format,
    carrier_id: &str,
    file: &Path,
    rejects: PathBuf,
) -> anyhow::Result<ExitCode> {
    let input: Box<dyn Read> = if file.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        let opened = File::open(file).with_context(|| format!("opening {}", file.display()))?;
        Box::new(BufReader::with_capacity(1 << 20, opened))
    };
    let total = if file.as_os_str() == "-" {
        None
    } else {
        count_rows(file)
    };
    let mut rows =
        Rows::new(input, MAX_BATCH_ITEMS).with_context(|| format!("reading {}", file.display()))?;
    let mut rejected: Vec<Rejected> = Vec::new();
    let bar = output::progress("rows", total, false);
    let started = Instant::now();
    let uploader = DurationUploader::new(client, carrier_id);
    // The uploader pulls batches as the window allows; `rows` is borrowed by the stream, so
    // rows the CLI rejects are collected from it once the upload is over.
    let result = {
        let batches = stream::iter(std::iter::from_fn(|| rows.next_batch()));
        uploader
            .run(batches, |sources, ack| {
                bar.inc(sources.len() as u64);
                for result in &ack.results {
                    if result.status() != pb::ItemStatus::Rejected {
                        continue;
                    }
                    let Some(source) = usize::try_from(result.index)
                        .ok()
                        .and_then(|i| sources.get(i))
                    else {
                        continue;
                    };
                    let reason = if result.violations.is_empty() {
                        result.reason.clone()
                    } else {
                        result
                            .violations
                            .iter()
                            .map(|v| format!("{}: {}", column_of(&v.field), v.description))
                            .collect::<Vec<_>>()
                            .join("; ")
                    };
                    rejected.push(Rejected {
                        source: Source {
                            line: source.line,
                            cells: source.cells.clone(),
                        },
                        reason,
                    });
                }
            })
            .await
    };
    bar.inc(rows.rejects.len() as u64);
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let local = rows.rejects.len() as u64;
    rejected.append(&mut rows.rejects);
    rejected.sort_by_key(|r| r.source.line);
    write_rejects(&rejects, &rejected)
        .with_context(|| format!("writing the rejects file {}", rejects.display()))?;
    let totals = match result {
        Ok(totals) => totals,
        Err(error) => {
            return Err(anyhow::Error::new(error).context(format!(
                "the upload stopped after {} rows were read (rejected rows so far are in {}); \
                 rows acknowledged before the failure are stored, and uploading the file \
                 again is safe",
                rows.read,
                rejects.display()
            )));
        }
    };
    if let Some(error) = rows.error.take() {
        return Err(error.context(format!(
            "the rows before it were uploaded; rejected rows so far are in {}",
            rejects.display()
        )));
    }
    print_summary(format, &totals, local, &rejected, &rejects, elapsed)?;
    Ok(if rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The rejects file: `line`, the row's columns, `reason`.
fn write_rejects(path: &Path, rejected: &[Rejected]) -> anyhow::Result<()> {
    let mut writer = csv::Writer::from_path(path)?;
    let mut header = vec!["line"];
    header.extend_from_slice(COLUMNS);
    header.push("reason");
    writer.write_record(&header)?;
    for r in rejected {
        let mut record = vec![r.source.line.to_string()];
        record.extend(r.source.cells.iter().cloned());
        record.push(r.reason.clone());
        writer.write_record(&record)?;
    }
    writer.flush()?;
    Ok(())
}

/// Prints what happened: a few rejected rows, then the counts.
fn print_summary(
    format: Format,
    totals: &UploadTotals,
    local: u64,
    rejected: &[Rejected],
    rejects: &Path,
    elapsed: std::time::Duration,
) -> io::Result<()> {
    let mut out = io::stdout().lock();
    let rate = (totals.reports as f64 / elapsed.as_secs_f64().max(1e-9)).round();
    if format == Format::Json {
        let summary = json!({
            "created": totals.created,
            "unchanged": totals.unchanged,
            "corrected": totals.corrected,
            "rejected": totals.rejected + local,
            "rejected_before_sending": local,
            "batches": totals.batches,
            "reconnects": totals.reconnects,
            "seconds": elapsed.as_secs_f64(),
            "reports_per_second": rate,
            "rejects_file": rejects.display().to_string(),
        });
        return writeln!(out, "{summary}");
    }
    for r in rejected.iter().take(SHOWN_REJECTIONS) {
        let record_id = r.source.cells.first().map_or("", String::as_str);
        writeln!(out, "line {}: {record_id}: {}", r.source.line, r.reason)?;
    }
    if rejected.len() > SHOWN_REJECTIONS {
        writeln!(out, "... and {} more", rejected.len() - SHOWN_REJECTIONS)?;
    }
    writeln!(
        out,
        "created {}, unchanged {}, corrected {}, rejected {} ({} before sending) in {:.1} s \
         ({rate} reports/s{})",
        totals.created,
        totals.unchanged,
        totals.corrected,
        totals.rejected + local,
        local,
        elapsed.as_secs_f64(),
        match totals.reconnects {
            0 => String::new(),
            n => format!(", {n} reconnects"),
        },
    )?;
    if !rejected.is_empty() {
        writeln!(out, "rejected rows and reasons: {}", rejects.display())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_parse_to_the_microsecond() {
        let d = |s, n| prost_types::Duration {
            seconds: s,
            nanos: n,
        };
        assert_eq!(parse_seconds("61"), Ok(d(61, 0)));
        assert_eq!(parse_seconds("61.25"), Ok(d(61, 250_000_000)));
        assert_eq!(parse_seconds(".000001"), Ok(d(0, 1000)));
        assert_eq!(parse_seconds("-5.5"), Ok(d(-5, -500_000_000)));
        for bad in ["", ".", "1.2.3", "abc", "1e3", "1.0000001", " 1"] {
            assert!(parse_seconds(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rows_batch_and_reject_what_cannot_be_read() {
        let csv = "Record_ID,call_id,start_time,duration_seconds,caller_number\n\
                   r1,c1,2024-05-01T10:00:00Z,61.5,+442079460001\n\
                   r2,c2,yesterday,10,+442079460001\n\
                   r3,c3,2024-05-01T10:01:00Z,ten,\n\
                   r4,c4,2024-05-01T10:02:00.25Z,1,\n\
                   r5,c5,2024-05-01T10:03:00Z,2,\n";
        let mut rows = Rows::new(csv.as_bytes(), 2).expect("header");
        let (sources, reports) = rows.next_batch().expect("first batch");
        assert_eq!(sources.iter().map(|s| s.line).collect::<Vec<_>>(), [2, 5]);
        assert_eq!(reports[0].record_id, "r1");
        assert_eq!(reports[0].caller_number, "+442079460001");
        assert_eq!(reports[1].start_time.map(|t| t.nanos), Some(250_000_000));
        let (sources, _) = rows.next_batch().expect("second batch");
        assert_eq!(sources[0].cells[0], "r5");
        assert!(rows.next_batch().is_none());
        let rejects: Vec<(u64, &str)> = rows
            .rejects
            .iter()
            .map(|r| (r.source.line, r.reason.split(':').next().unwrap_or("")))
            .collect();
        assert_eq!(rejects, [(3, "start_time"), (4, "duration_seconds")]);
        assert_eq!(rows.read, 5);
    }

    #[test]
    fn headers_are_checked_before_anything_is_sent() {
        let error = |csv: &str| {
            Rows::new(csv.as_bytes(), 10)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(error("record_id,call_id,start_time,duration_seconds,colour\n").contains("colour"));
        assert!(error("record_id,call_id,start_time\n").contains("duration_seconds"));
        assert!(error("record_id,start_time,duration_seconds\n").contains("correlation_id"));
        assert!(error("record_id,call_id,call_id,start_time,duration_seconds\n").contains("twice"));
        assert!(
            Rows::new(
                "record_id,correlation_id,start_time,duration_seconds\n".as_bytes(),
                1
            )
            .is_ok()
        );
    }

    #[test]
    fn rejects_go_beside_the_input() {
        assert_eq!(
            rejects_path(Path::new("/data/may.csv"), None),
            Path::new("/data/may.rejects.csv")
        );
        assert_eq!(rejects_path(Path::new("-"), None), Path::new("rejects.csv"));
        assert_eq!(
            rejects_path(Path::new("a.csv"), Some("b.csv".into())),
            Path::new("b.csv")
        );
    }
}

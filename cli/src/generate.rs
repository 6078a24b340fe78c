//! `ocx calls generate`: realistic records from `ocx_sample::CallRecordGenerator`, sent on
//! one `IngestCallRecords` stream, with a summary of what the server did with them.
//!
//! Batches are generated lazily, as the transport takes them, so any `--count` runs in flat
//! memory at the rate the server commits. A revision is always sent in a later batch than its
//! original: batches commit in order, so the original is stored first and the revision is
//! REVISED rather than stale.

use std::io::{self, Write};
use std::pin::pin;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_util::{StreamExt, stream};
use ocx_client::{Client, pb};
use ocx_sample::{CallRecordGenerator, Line};
use serde_json::json;

use clap::Args;

use crate::output::{self, Format};

/// `ocx calls generate` flags.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// How many records to generate (revisions come on top).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// Seed of the generator: the same seed, numbers, --count, --from and --to give the same
    /// records, so a rerun stores nothing new (records come back unchanged, or stale where a revision was
    /// stored). Default: taken from the clock, and printed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// The tenant of the numbers.
    #[arg(long, value_parser = crate::values::tenant_id)]
    pub tenant: String,
    /// A number of the tenant, E.164; repeat for several. Each record has one of them as its
    /// tenant side (the caller of outbound calls, the callee of inbound ones).
    #[arg(long = "number", required = true, value_parser = crate::values::e164)]
    pub numbers: Vec<String>,
    /// Records per batch, 1 to 1000.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch: u16,
    /// Also send a revision (version 2, with changed quality data) of this percentage of the
    /// records, each in a batch after its original.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub revise_percent: u8,
    /// Start of the time range the calls start in (RFC 3339 UTC). Default: 24 hours before
    /// --to. Keep it inside the retention period (90 days unless set otherwise), or the next
    /// purge removes the older calls.
    #[arg(long, alias = "start", value_parser = crate::values::rfc3339)]
    pub from: Option<prost_types::Timestamp>,
    /// End of the time range (RFC 3339 UTC, exclusive); not in the future, since the server
    /// refuses calls that start there. Default: now, rounded down to the hour, so that a rerun
    /// with the same --seed within the hour sends the same records.
    #[arg(long, value_parser = crate::values::rfc3339)]
    pub to: Option<prost_types::Timestamp>,
}

/// The default length of the time range: a day.
const DEFAULT_RANGE_SECS: i64 = 24 * 3600;
/// The narrowest slot a call may have in the range (start times must increase).
const MIN_SLOT_MS: i64 = 2;

/// The time range `[from, to)` (seconds) the flags describe at `now`; why not, if they
/// describe none a generator can fill.
fn time_range(args: &GenerateArgs, now: i64) -> anyhow::Result<(i64, i64)> {
    let to = match &args.to {
        Some(to) if to.seconds > now => anyhow::bail!(
            "--to is in the future: calls do not start in the future, and the server refuses them"
        ),
        Some(to) => to.seconds,
        None => now - now.rem_euclid(3600),
    };
    let from = args
        .from
        .as_ref()
        .map_or(to - DEFAULT_RANGE_SECS, |from| from.seconds);
    if from >= to {
        anyhow::bail!("--from must come before --to");
    }
    let most = (to - from).saturating_mul(1000) / MIN_SLOT_MS;
    if i64::try_from(args.count).map_or(true, |count| count > most) {
        anyhow::bail!(
            "{} calls do not fit between --from and --to: at most {most} (one per {MIN_SLOT_MS} ms)",
            args.count
        );
    }
    Ok((from, to))
}
/// How many rejected records the summary details.
const SHOWN_REJECTIONS: usize = 5;

/// Generates, ingests and reports; exit code 1 if any record was rejected.
pub async fn generate(
    client: &Client,
    format: Format,
    args: GenerateArgs,
) -> anyhow::Result<ExitCode> {
    let seed = args.seed.unwrap_or_else(clock_seed);
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
    let range = time_range(&args, now)?;
    let lines = args
        .numbers
        .iter()
        .map(|number| Line {
            tenant_id: args.tenant.clone(),
            number: number.clone(),
        })
        .collect();
    let batches = Batches {
        generator: CallRecordGenerator::within(seed, lines, range, args.count).with_incidents(),
        remaining: args.count,
        made: 0,
        batch_size: usize::from(args.batch),
        revise_percent: u64::from(args.revise_percent),
        pending: Vec::new(),
    };
    let revisions = args.count.saturating_mul(u64::from(args.revise_percent)) / 100;

    let bar = output::progress("records ingested", Some(args.count + revisions), false);
    let started = Instant::now();
    let mut tally = Tally::default();
    let failure = match client.ingest_call_records(stream::iter(batches)).await {
        Ok(acks) => {
            let mut acks = pin!(acks);
            let mut failure = None;
            while let Some(ack) = acks.next().await {
                match ack {
                    Ok(ack) => {
                        bar.inc(ack.results.len() as u64);
                        tally.add(ack);
                    }
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                }
            }
            failure
        }
        Err(error) => Some(error),
    };
    let elapsed = started.elapsed().as_secs_f64();
    bar.finish_and_clear();

    tally.print(format, seed, elapsed, &mut io::stdout().lock())?;
    if let Some(error) = failure {
        return Err(error.into());
    }
    Ok(if tally.rejected == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A seed from the clock, for runs that do not ask for one (printed, so they can be redone).
fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The batches to send: new records, preceded by the revisions picked from earlier batches.
struct Batches {
    /// Makes the records and their revisions.
    generator: CallRecordGenerator,
    /// New records still to make.
    remaining: u64,
    /// New records made so far (decides which get revised).
    made: u64,
    /// Records per batch.
    batch_size: usize,
    /// Share of new records to revise, in percent.
    revise_percent: u64,
    /// Originals picked for revision, to be revised in a later batch than their own.
    pending: Vec<pb::CallRecord>,
}

impl Iterator for Batches {
    type Item = Vec<pb::CallRecord>;

    fn next(&mut self) -> Option<Vec<pb::CallRecord>> {
        if self.remaining == 0 && self.pending.is_empty() {
            return None;
        }
        let due = self.pending.len().min(self.batch_size);
        let originals: Vec<pb::CallRecord> = self.pending.drain(..due).collect();
        let mut batch: Vec<pb::CallRecord> = originals
            .iter()
            .map(|original| self.generator.revise(original))
            .collect();
        while batch.len() < self.batch_size && self.remaining > 0 {
            let record = self.generator.next_record();
            self.remaining -= 1;
            self.made += 1;
            // Exactly floor(made × percent / 100) of the first `made` records are picked, evenly
            // spread.
            let n = self.made;
            if n * self.revise_percent / 100 > (n - 1) * self.revise_percent / 100 {
                self.pending.push(record.clone());
            }
            batch.push(record);
        }
        Some(batch)
    }
}

/// What the server did with the records.
#[derive(Default)]
struct Tally {
    /// Batches acknowledged.
    batches: u64,
    /// New records stored.
    created: u64,
    /// Records that replaced a lower version.
    revised: u64,
    /// Duplicates.
    unchanged: u64,
    /// Records not stored.
    rejected: u64,
    /// The first few rejected results, for the report.
    rejections: Vec<pb::CallRecordResult>,
}

impl Tally {
    /// Adds one acknowledgement.
    fn add(&mut self, ack: pb::IngestCallRecordsResponse) {
        self.batches += 1;
        self.created += u64::try_from(ack.created_count).unwrap_or(0);
        self.revised += u64::try_from(ack.revised_count).unwrap_or(0);
        self.unchanged += u64::try_from(ack.unchanged_count).unwrap_or(0);
        self.rejected += u64::try_from(ack.rejected_count).unwrap_or(0);
        let room = SHOWN_REJECTIONS.saturating_sub(self.rejections.len());
        self.rejections.extend(
            ack.results
                .into_iter()
                .filter(|r| r.status() == pb::ItemStatus::Rejected)
                .take(room),
        );
    }

    /// Prints the summary: a few lines, or one JSON object.
    fn print(
        &self,
        format: Format,
        seed: u64,
        elapsed_secs: f64,
        out: &mut impl Write,
    ) -> io::Result<()> {
        let records = self.created + self.revised + self.unchanged + self.rejected;
        let rate = if elapsed_secs > 0.0 {
            records as f64 / elapsed_secs
        } else {
            0.0
        };
        match format {
            Format::Json => {
                let rejections: Vec<_> = self
                    .rejections
                    .iter()
                    .map(|r| {
                        json!({
                            "call_id": r.call_id,
                            "reason": r.reason,
                            "violations": r.violations.iter().map(|v| json!({
                                "field": v.field,
                                "description": v.description,
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                let summary = json!({
                    "seed": seed,
                    "batches": self.batches,
                    "created": self.created,
                    "revised": self.revised,
                    "unchanged": self.unchanged,
                    "rejected": self.rejected,
                    "elapsed_seconds": elapsed_secs,
                    "records_per_second": rate,
                    "rejections": rejections,
                });
                writeln!(out, "{summary}")
            }
            Format::Table | Format::Csv => {
                for r in &self.rejections {
                    writeln!(out, "{}: rejected: {}", r.call_id, r.reason)?;
                    for v in &r.violations {
                        writeln!(out, "  {}: {}", v.field, v.description)?;
                    }
                }
                if self.rejected > self.rejections.len() as u64 {
                    writeln!(
                        out,
                        "... and {} more rejected",
                        self.rejected - self.rejections.len() as u64
                    )?;
                }
                writeln!(
                    out,
                    "created {}, revised {}, unchanged {}, rejected {}",
                    self.created, self.revised, self.unchanged, self.rejected
                )?;
                writeln!(
                    out,
                    "{records} records in {} batches, {elapsed_secs:.2} s, {rate:.0} records/s (seed {seed})",
                    self.batches
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(count: u64, batch_size: usize, revise_percent: u64) -> Vec<Vec<pb::CallRecord>> {
        let lines = vec![Line {
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            number: "+442079460001".into(),
        }];
        Batches {
            generator: CallRecordGenerator::new(1, lines, 1_700_000_000),
            remaining: count,
            made: 0,
            batch_size,
            revise_percent,
            pending: Vec::new(),
        }
        .collect()
    }

    #[test]
    fn revisions_follow_their_originals_in_later_batches() {
        let all = batches(250, 100, 10);
        assert!(all.iter().all(|b| !b.is_empty() && b.len() <= 100));
        let flat: Vec<&pb::CallRecord> = all.iter().flatten().collect();
        assert_eq!(flat.iter().filter(|r| r.version == 1).count(), 250);
        assert_eq!(flat.iter().filter(|r| r.version == 2).count(), 25);
        let batch_of = |call_id: &str, version: i64| {
            all.iter()
                .position(|b| {
                    b.iter()
                        .any(|r| r.call_id == call_id && r.version == version)
                })
                .expect("sent")
        };
        for revised in flat.iter().filter(|r| r.version == 2) {
            assert!(batch_of(&revised.call_id, 1) < batch_of(&revised.call_id, 2));
        }
    }

    #[test]
    fn everything_revised_still_ends() {
        let all = batches(30, 10, 100);
        let total: usize = all.iter().map(Vec::len).sum();
        assert_eq!(total, 60);
        assert!(batches(5, 10, 0).iter().flatten().all(|r| r.version == 1));
    }

    #[test]
    fn summary_lists_the_first_rejections() {
        let mut tally = Tally::default();
        let rejected = |i: i32| pb::CallRecordResult {
            index: i,
            call_id: format!("c-{i}"),
            status: pb::ItemStatus::Rejected.into(),
            reason: "no carrier holds +15550100".into(),
            ..Default::default()
        };
        tally.add(pb::IngestCallRecordsResponse {
            batch_id: 1,
            results: (0..7).map(rejected).collect(),
            created_count: 3,
            rejected_count: 7,
            ..Default::default()
        });
        let mut out = Vec::new();
        tally
            .print(Format::Table, 9, 2.0, &mut out)
            .expect("writes");
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(text.matches(": rejected: ").count(), SHOWN_REJECTIONS);
        assert!(text.contains("... and 2 more rejected"));
        assert!(text.contains("created 3, revised 0, unchanged 0, rejected 7"));
        assert!(text.contains("10 records in 1 batches, 2.00 s, 5 records/s (seed 9)"));
    }
}

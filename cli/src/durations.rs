//! `ocx durations ...`, `ocx reconcile ...` and `ocx usage`: the flags and the commands for a
//! carrier's call durations, the reconciliation against the platform's records, and a
//! tenant's usage (the CSV upload has a module of its own).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use futures_util::StreamExt;
use ocx_client::{Client, pb};

use crate::duration_upload;
use crate::output::{Format, print_all, print_one, print_usage};

/// `ocx durations ...`
#[derive(Debug, Subcommand)]
pub enum DurationCommand {
    /// Upload the durations the carrier measured, from a CSV file.
    ///
    /// The file has a header row. Columns: record_id (required: the carrier's id for the call;
    /// sending it again is a no-op, or a correction if the duration changed), call_id and/or
    /// correlation_id (at least one), caller_number, callee_number (E.164), start_time
    /// (RFC 3339 UTC), duration_seconds (decimal, e.g. 61.25). Rejected rows are written with
    /// their line and reason to the rejects file; the exit code is 1 if any row was rejected.
    Upload {
        /// The CSV file ('-' for stdin).
        file: PathBuf,
        /// The carrier (required with a platform key).
        #[arg(long, value_parser = crate::values::carrier_id)]
        carrier: Option<String>,
        /// Where to write rejected rows [default: FILE.rejects.csv beside FILE; rejects.csv for
        /// stdin].
        #[arg(long)]
        rejects: Option<PathBuf>,
    },
    /// List reported durations (every page), ordered by start time.
    List {
        /// The carrier (required with a platform key).
        #[arg(long, value_parser = crate::values::carrier_id)]
        carrier: Option<String>,
        /// Only calls that started at or after this time (RFC 3339 UTC).
        #[arg(long, value_parser = crate::values::rfc3339)]
        from: Option<prost_types::Timestamp>,
        /// Only calls that started before this time (RFC 3339 UTC).
        #[arg(long, value_parser = crate::values::rfc3339)]
        to: Option<prost_types::Timestamp>,
        /// Stop after this many.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
    },
}

/// The period and tolerance of a reconciliation.
#[derive(Debug, Args)]
pub struct Period {
    /// Start of the period, inclusive (RFC 3339 UTC).
    #[arg(long, value_parser = crate::values::rfc3339)]
    from: prost_types::Timestamp,
    /// End of the period, exclusive (RFC 3339 UTC).
    #[arg(long, value_parser = crate::values::rfc3339)]
    to: prost_types::Timestamp,
    /// Durations closer than this agree (e.g. 1s, 500ms, 2s) [default: 1s].
    #[arg(long, value_parser = duration)]
    tolerance: Option<prost_types::Duration>,
    /// The carrier (required with a platform key).
    #[arg(long, value_parser = crate::values::carrier_id)]
    carrier: Option<String>,
}

/// `ocx reconcile ...`
#[derive(Debug, Subcommand)]
pub enum ReconcileCommand {
    /// Counts and summed durations on each side, how many agree, and the agreement rate.
    Summary(Period),
    /// The calls the two sides disagree on, with both durations.
    Discrepancies {
        /// The period.
        #[command(flatten)]
        period: Period,
        /// Only this kind.
        #[arg(long, value_enum)]
        kind: Option<Kind>,
        /// Stop after this many.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
    },
    /// Follow reconciliation live: every entry as it stands, then each change as it is
    /// committed (matched, mismatched, missing on either side, removed); reconnects by itself,
    /// stop with Ctrl-C.
    Follow {
        /// Durations closer than this agree (e.g. 1s, 500ms, 2s) [default: 1s].
        #[arg(long, value_parser = duration)]
        tolerance: Option<prost_types::Duration>,
        /// The carrier (required with a platform key).
        #[arg(long, value_parser = crate::values::carrier_id)]
        carrier: Option<String>,
        /// Start after this sequence (0: every entry as it stands first).
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// Only the changes that are not MATCHED.
        #[arg(long)]
        disagreements: bool,
    },
}

/// `--kind` of a discrepancy.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    /// Both sides have the call; the durations differ by more than the tolerance.
    Mismatched,
    /// The platform has the call; the carrier did not report it.
    MissingOnCarrier,
    /// The carrier reported a call the platform has no record of.
    MissingOnPlatform,
}

/// `ocx usage` flags.
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// The tenant's GUID.
    #[arg(long, value_parser = crate::values::tenant_id)]
    tenant: String,
    /// Start of the period, inclusive (RFC 3339 UTC).
    #[arg(long, value_parser = crate::values::rfc3339)]
    from: prost_types::Timestamp,
    /// End of the period, exclusive (RFC 3339 UTC).
    #[arg(long, value_parser = crate::values::rfc3339)]
    to: prost_types::Timestamp,
    /// One row per UTC day, or per number and direction.
    #[arg(long, value_enum, default_value_t = Grouping::Day)]
    by: Grouping,
}

/// `--by` of usage.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Grouping {
    /// One row per UTC day of the start time.
    Day,
    /// One row per tenant number and direction.
    Number,
}

/// `ocx durations ...`
pub async fn durations(
    client: &Client,
    format: Format,
    command: DurationCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        DurationCommand::Upload {
            file,
            carrier,
            rejects,
        } => {
            let rejects = duration_upload::rejects_path(&file, rejects);
            duration_upload::upload(client, format, &carrier.unwrap_or_default(), &file, rejects)
                .await
        }
        DurationCommand::List {
            carrier,
            from,
            to,
            limit,
        } => {
            let request = pb::ListCallDurationsRequest {
                carrier_id: carrier.unwrap_or_default(),
                start_time_from: from,
                start_time_to: to,
                page_size: page_size(limit),
                ..Default::default()
            };
            let items = client.call_durations(request);
            print_all(format, limited(items, limit)).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `ocx reconcile ...`
pub async fn reconcile(
    client: &Client,
    format: Format,
    command: ReconcileCommand,
) -> anyhow::Result<()> {
    match command {
        ReconcileCommand::Summary(period) => {
            let request = pb::GetReconciliationSummaryRequest {
                carrier_id: period.carrier.unwrap_or_default(),
                start_time: Some(period.from),
                end_time: Some(period.to),
                tolerance: period.tolerance,
            };
            print_one(format, &client.get_reconciliation_summary(request).await?)?;
        }
        ReconcileCommand::Discrepancies {
            period,
            kind,
            limit,
        } => {
            let kind = match kind {
                None => pb::DiscrepancyKind::Unspecified,
                Some(Kind::Mismatched) => pb::DiscrepancyKind::Mismatched,
                Some(Kind::MissingOnCarrier) => pb::DiscrepancyKind::MissingOnCarrier,
                Some(Kind::MissingOnPlatform) => pb::DiscrepancyKind::MissingOnPlatform,
            };
            let request = pb::ListDiscrepanciesRequest {
                carrier_id: period.carrier.unwrap_or_default(),
                start_time: Some(period.from),
                end_time: Some(period.to),
                tolerance: period.tolerance,
                kind: kind.into(),
                page_size: page_size(limit),
                ..Default::default()
            };
            print_all(format, limited(client.discrepancies(request), limit)).await?;
        }
        ReconcileCommand::Follow {
            tolerance,
            carrier,
            after,
            disagreements,
        } => {
            let carrier = carrier.unwrap_or_default();
            let mut changes =
                std::pin::pin!(client.follow_reconciliation(&carrier, after, tolerance));
            while let Some(change) = changes.next().await {
                let change = change?;
                if disagreements && change.state() == pb::ReconciliationState::Matched {
                    continue;
                }
                crate::output::print_reconciliation_change(format, &change)?;
            }
        }
    }
    Ok(())
}

/// `ocx usage`
pub async fn usage(client: &Client, format: Format, args: UsageArgs) -> anyhow::Result<()> {
    let grouping = match args.by {
        Grouping::Day => pb::UsageGrouping::Day,
        Grouping::Number => pb::UsageGrouping::NumberAndDirection,
    };
    let request = pb::GetTenantUsageRequest {
        tenant_id: args.tenant,
        start_time: Some(args.from),
        end_time: Some(args.to),
        grouping: grouping.into(),
    };
    let usage = client.get_tenant_usage(request).await?;
    print_usage(format, grouping, &usage)?;
    Ok(())
}

/// At most `limit` items of a listing (all without one).
fn limited<T>(
    items: impl futures_util::Stream<Item = T>,
    limit: Option<u32>,
) -> impl futures_util::Stream<Item = T> {
    items.take(limit.map_or(usize::MAX, |l| l as usize))
}

/// The page size for a listing of at most `limit` items: with a small limit, do not fetch a
/// whole default page for nothing.
fn page_size(limit: Option<u32>) -> i32 {
    limit.map_or(0, |n| n.min(ocx_api::MAX_PAGE_SIZE as u32) as i32)
}

/// `1s`, `500ms`, `1m 30s` as a protobuf duration.
fn duration(value: &str) -> Result<prost_types::Duration, String> {
    let parsed = humantime::parse_duration(value)
        .map_err(|e| format!("{e}: expected a duration such as 1s, 500ms or 2s"))?;
    prost_types::Duration::try_from(parsed).map_err(|e| e.to_string())
}

//! `ocx calls ...`: the flags of the call record commands, and `list`, `get` and `follow`
//! (`export` and `generate` have modules of their own).

use std::pin::pin;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use futures_util::StreamExt;
use ocx_client::{Client, pb};

use crate::output::{self, Format, print_all};
use crate::{export, generate};

/// `ocx calls ...`
#[derive(Debug, Subcommand)]
pub enum CallCommand {
    /// List call records (every page), ordered by start time.
    List(ListArgs),
    /// Show one call record in full, with its media streams.
    Get {
        /// The platform's call id.
        call_id: String,
        /// The carrier (required with a platform key).
        #[arg(long, value_parser = crate::values::carrier_id)]
        carrier: Option<String>,
    },
    /// Export the records that started in a time window, as CSV or JSON lines.
    ///
    /// One row (line) per record with the columns call_id, correlation_id, version, carrier_id,
    /// tenant_id, call_type, direction, caller_number, callee_number, user_sip_uri, invite_time,
    /// start_time, end_time, duration_seconds, final_sip_code, final_sip_phrase, q850_cause,
    /// successful, destination_context, usage_country_code, trunk_fqdn, quality, poor_due_to
    /// (';'-separated in CSV), feed_sequence; JSON lines also carry update_time and
    /// media_streams. A progress spinner shows on stderr when it is a terminal.
    Export(export::ExportArgs),
    /// Follow the call record feed: every record created or revised, in commit order
    /// (reconnects by itself; stop with Ctrl-C).
    Follow {
        /// The carrier (required with a platform key).
        #[arg(long, value_parser = crate::values::carrier_id)]
        carrier: Option<String>,
        /// Start after this feed sequence (0: from the beginning).
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
    /// Generate realistic call records on tenant numbers and ingest them (platform key).
    ///
    /// The numbers must be held by a carrier (uploaded to OCX), which then owns the records;
    /// records on other numbers are rejected. Prints created/revised/unchanged/rejected counts and the rate; exit code 1 if any record
    /// was rejected.
    Generate(generate::GenerateArgs),
}

/// `ocx calls list` flags.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The carrier (required with a platform key).
    #[arg(long, value_parser = crate::values::carrier_id)]
    carrier: Option<String>,
    /// Only calls that started at or after this time (RFC 3339 UTC, e.g. 2024-05-01T00:00:00Z).
    #[arg(long, value_parser = crate::values::rfc3339)]
    from: Option<prost_types::Timestamp>,
    /// Only calls that started before this time (RFC 3339 UTC).
    #[arg(long, value_parser = crate::values::rfc3339)]
    to: Option<prost_types::Timestamp>,
    /// Only this tenant's calls.
    #[arg(long, value_parser = crate::values::tenant_id)]
    tenant: Option<String>,
    /// Only calls with this number as caller or callee (E.164).
    #[arg(long, value_parser = crate::values::e164)]
    number: Option<String>,
    /// Only calls in this direction.
    #[arg(long, value_enum)]
    direction: Option<Direction>,
    /// Only calls of this type.
    #[arg(long = "type", value_enum)]
    call_type: Option<CallType>,
    /// Only calls with this quality verdict.
    #[arg(long, value_enum)]
    quality: Option<Quality>,
    /// Stop after this many records.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    limit: Option<u32>,
}

/// `--direction`
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Direction {
    /// From the PSTN into the tenant.
    Inbound,
    /// From the tenant to the PSTN.
    Outbound,
}

/// `--type` of a call.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum CallType {
    /// A user received a PSTN call.
    UserIn,
    /// A user placed a PSTN call.
    UserOut,
    /// A conference was dialled into.
    ConferenceIn,
    /// A conference dialled out.
    ConferenceOut,
    /// A call transferred to the PSTN.
    Transfer,
    /// A call forwarded to the PSTN.
    Forwarding,
    /// An emergency call.
    EmergencyOut,
    /// A voice application received a call.
    VoiceAppIn,
    /// A voice application placed a call.
    VoiceAppOut,
}

impl Direction {
    /// The wire value.
    pub(crate) fn to_pb(self) -> pb::CallDirection {
        match self {
            Direction::Inbound => pb::CallDirection::Inbound,
            Direction::Outbound => pb::CallDirection::Outbound,
        }
    }
}

impl CallType {
    /// The wire value.
    pub(crate) fn to_pb(self) -> pb::CallType {
        match self {
            CallType::UserIn => pb::CallType::UserIn,
            CallType::UserOut => pb::CallType::UserOut,
            CallType::ConferenceIn => pb::CallType::ConferenceIn,
            CallType::ConferenceOut => pb::CallType::ConferenceOut,
            CallType::Transfer => pb::CallType::Transfer,
            CallType::Forwarding => pb::CallType::Forwarding,
            CallType::EmergencyOut => pb::CallType::EmergencyOut,
            CallType::VoiceAppIn => pb::CallType::VoiceAppIn,
            CallType::VoiceAppOut => pb::CallType::VoiceAppOut,
        }
    }
}

/// `--quality`
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Quality {
    /// Every stream with metrics within every threshold.
    Good,
    /// At least one metric of one stream over its threshold.
    Poor,
    /// No stream with any classifying metric.
    Unclassified,
}

/// Runs `ocx calls ...`; exit code 1 when `generate` had rejected records.
pub async fn run(
    client: &Client,
    format: Format,
    command: CallCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        CallCommand::List(args) => list(client, format, args).await?,
        CallCommand::Get { call_id, carrier } => {
            let record = client
                .get_call_record(&carrier.unwrap_or_default(), &call_id)
                .await?;
            output::print_call_record(format, &record)?;
        }
        CallCommand::Export(args) => export::export(client, args).await?,
        CallCommand::Follow { carrier, after } => {
            let mut records = pin!(client.follow_call_records(&carrier.unwrap_or_default(), after));
            while let Some(record) = records.next().await {
                output::print_call_feed(format, &record?)?;
            }
        }
        CallCommand::Generate(args) => return generate::generate(client, format, args).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// `ocx calls list`
async fn list(client: &Client, format: Format, args: ListArgs) -> anyhow::Result<()> {
    let direction = args
        .direction
        .map_or(pb::CallDirection::Unspecified, Direction::to_pb);
    let call_type = args
        .call_type
        .map_or(pb::CallType::Unspecified, CallType::to_pb);
    let quality = match args.quality {
        None => pb::QualityVerdict::Unspecified,
        Some(Quality::Good) => pb::QualityVerdict::Good,
        Some(Quality::Poor) => pb::QualityVerdict::Poor,
        Some(Quality::Unclassified) => pb::QualityVerdict::Unclassified,
    };
    // With a small limit, do not fetch a whole default page for nothing.
    let limit = args.limit.map_or(usize::MAX, |n| n as usize);
    let page_size = args
        .limit
        .map_or(0, |n| n.min(ocx_api::MAX_PAGE_SIZE as u32) as i32);
    let request = pb::ListCallRecordsRequest {
        carrier_id: args.carrier.unwrap_or_default(),
        start_time_from: args.from,
        start_time_to: args.to,
        tenant_id: args.tenant.unwrap_or_default(),
        number: args.number.unwrap_or_default(),
        direction: direction.into(),
        call_type: call_type.into(),
        quality: quality.into(),
        page_size,
        page_token: String::new(),
    };
    print_all(format, client.call_records(request).take(limit)).await
}

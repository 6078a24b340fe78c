//! How resources are printed: aligned text tables for people, JSON lines for programs.
//!
//! Enum values print as their proto names without the type prefix, lower case (`assigned`),
//! and `null` in JSON when unspecified; times as RFC 3339 UTC. Call records also have a flat
//! CSV form (`calls export`), and commands that run long get a progress spinner on stderr.

use std::io::{self, IsTerminal, Write};
use std::pin::pin;
use std::time::SystemTime;

use futures_util::{Stream, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use ocx_client::pb;
use serde_json::{Value, json};

/// The `--output` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns (one item: one `field value` line per field).
    Table,
    /// One JSON object per line.
    Json,
    /// Comma-separated values with a header row (for listings; elsewhere as `table`).
    Csv,
}

/// A resource that can be printed either way.
pub trait Render {
    /// Table headings, in the order of [`Render::cells`].
    const COLUMNS: &'static [&'static str];
    /// The table cells of this item, one per column.
    fn cells(&self) -> Vec<String>;
    /// The JSON form of this item.
    fn json(&self) -> Value;
}

/// Prints one item: vertically as `field  value` lines, or as one JSON object.
pub fn print_one<T: Render>(format: Format, item: &T) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", item.json()),
        Format::Csv => {
            let mut csv = csv::Writer::from_writer(out);
            csv.write_record(T::COLUMNS.iter().map(|c| c.to_ascii_lowercase()))?;
            csv.write_record(item.cells())?;
            csv.flush()
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = T::COLUMNS
                .iter()
                .zip(item.cells())
                .map(|(column, cell)| vec![column.to_ascii_lowercase(), cell])
                .collect();
            write_table(&mut out, None, &rows)
        }
    }
}

/// Prints every item of a listing. JSON lines go out as they arrive; a table waits for the end
/// so it can align its columns. An error ends the listing after what was already printed.
pub async fn print_all<T: Render>(
    format: Format,
    items: impl Stream<Item = ocx_client::Result<T>>,
) -> anyhow::Result<()> {
    let mut items = pin!(items);
    let mut rows = Vec::new();
    let mut failure = None;
    // CSV rows go out as they arrive, after the header.
    let mut csv = (format == Format::Csv).then(|| csv::Writer::from_writer(io::stdout()));
    if let Some(csv) = csv.as_mut() {
        csv.write_record(T::COLUMNS.iter().map(|c| c.to_ascii_lowercase()))?;
    }
    while let Some(item) = items.next().await {
        match item {
            Ok(item) => match format {
                Format::Json => writeln!(io::stdout().lock(), "{}", item.json())?,
                Format::Table => rows.push(item.cells()),
                Format::Csv => {
                    if let Some(csv) = csv.as_mut() {
                        csv.write_record(item.cells())?;
                    }
                }
            },
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    if let Some(mut csv) = csv {
        csv.flush()?;
    }
    // A listing refused outright prints only the error, not an empty table.
    if format == Format::Table && (failure.is_none() || !rows.is_empty()) {
        write_table(&mut io::stdout().lock(), Some(T::COLUMNS), &rows)?;
    }
    match failure {
        Some(error) => Err(error.into()),
        None => Ok(()),
    }
}

/// Writes rows as columns separated by two spaces, padded to the widest cell.
pub fn write_table(
    out: &mut impl Write,
    headings: Option<&[&str]>,
    rows: &[Vec<String>],
) -> io::Result<()> {
    let headings: Option<Vec<String>> = headings.map(|h| h.iter().map(|s| s.to_string()).collect());
    let all = || headings.iter().chain(rows);
    let columns = all().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            all()
                .filter_map(|row| row.get(i))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in all() {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// `NUMBER_STATE_ASSIGNED` with prefix `NUMBER_STATE_` → `assigned`.
pub fn enum_name(proto_name: &str, prefix: &str) -> String {
    proto_name
        .strip_prefix(prefix)
        .unwrap_or(proto_name)
        .to_ascii_lowercase()
}

/// [`enum_name`] as JSON: `null` for the unspecified (zero) value.
fn enum_json(proto_name: &str, prefix: &str) -> Value {
    match enum_name(proto_name, prefix).as_str() {
        "unspecified" => Value::Null,
        name => Value::from(name),
    }
}

/// A table cell for an enum: `-` when unspecified.
fn enum_cell(proto_name: &str, prefix: &str) -> String {
    match enum_name(proto_name, prefix).as_str() {
        "unspecified" => "-".to_owned(),
        name => name.to_owned(),
    }
}

/// A timestamp as RFC 3339 with the precision it has (seconds, milli-, micro- or nanoseconds:
/// `…:14.363Z`, not `…:14.363000000Z`), or `None` if unset.
pub fn rfc3339(ts: &Option<prost_types::Timestamp>) -> Option<String> {
    let ts = (*ts)?;
    let time = SystemTime::try_from(ts).ok()?;
    let text = match ts.nanos {
        0 => humantime::format_rfc3339_seconds(time).to_string(),
        n if n % 1_000_000 == 0 => humantime::format_rfc3339_millis(time).to_string(),
        n if n % 1_000 == 0 => humantime::format_rfc3339_micros(time).to_string(),
        _ => humantime::format_rfc3339_nanos(time).to_string(),
    };
    Some(text)
}

/// A timestamp for JSON: RFC 3339 or `null`.
fn time_json(ts: &Option<prost_types::Timestamp>) -> Value {
    rfc3339(ts).map_or(Value::Null, Value::from)
}

/// A timestamp for a table: RFC 3339 to the second, or `-`.
fn time_cell(ts: &Option<prost_types::Timestamp>) -> String {
    ts.and_then(|ts| SystemTime::try_from(ts).ok()).map_or_else(
        || "-".to_owned(),
        |t| humantime::format_rfc3339_seconds(t).to_string(),
    )
}

/// A table cell for free text: `-` when empty.
fn text_cell(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

/// Capability names, e.g. `["inbound_calling", "user_assignment"]`.
fn capabilities(number: &pb::PhoneNumber) -> Vec<String> {
    number
        .capabilities()
        .map(|c| enum_name(c.as_str_name(), "NUMBER_CAPABILITY_"))
        .collect()
}

impl Render for pb::Carrier {
    const COLUMNS: &'static [&'static str] = &["CARRIER_ID", "DISPLAY_NAME", "CREATED"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.carrier_id.clone(),
            text_cell(&self.display_name),
            time_cell(&self.create_time),
        ]
    }

    fn json(&self) -> Value {
        json!({
            "carrier_id": self.carrier_id,
            "display_name": self.display_name,
            "create_time": time_json(&self.create_time),
        })
    }
}

impl Render for pb::ApiKey {
    const COLUMNS: &'static [&'static str] = &[
        "KEY_ID",
        "ROLE",
        "CARRIER_ID",
        "NAME",
        "CREATED",
        "LAST_USED",
        "REVOKED",
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            self.key_id.clone(),
            enum_cell(self.role().as_str_name(), "API_KEY_ROLE_"),
            text_cell(&self.carrier_id),
            text_cell(&self.display_name),
            time_cell(&self.create_time),
            time_cell(&self.last_use_time),
            time_cell(&self.revoke_time),
        ]
    }

    fn json(&self) -> Value {
        json!({
            "key_id": self.key_id,
            "role": enum_json(self.role().as_str_name(), "API_KEY_ROLE_"),
            "carrier_id": self.carrier_id,
            "display_name": self.display_name,
            "create_time": time_json(&self.create_time),
            "last_use_time": time_json(&self.last_use_time),
            "revoke_time": time_json(&self.revoke_time),
        })
    }
}

impl Render for pb::Consent {
    const COLUMNS: &'static [&'static str] = &[
        "CARRIER_ID",
        "TENANT_ID",
        "STATUS",
        "COUNTRIES",
        "CONTACT",
        "UPDATED",
    ];

    fn cells(&self) -> Vec<String> {
        let contact = self.contact.as_ref().map_or_else(String::new, |c| {
            match (c.full_name.is_empty(), c.email.is_empty()) {
                (false, false) => format!("{} <{}>", c.full_name, c.email),
                (false, true) => c.full_name.clone(),
                _ => c.email.clone(),
            }
        });
        let countries = if self.consented_countries.is_empty() {
            "any".to_owned()
        } else {
            self.consented_countries.join(",")
        };
        vec![
            self.carrier_id.clone(),
            self.tenant_id.clone(),
            enum_cell(self.status().as_str_name(), "CONSENT_STATUS_"),
            countries,
            text_cell(&contact),
            time_cell(&self.update_time),
        ]
    }

    fn json(&self) -> Value {
        let contact = self.contact.as_ref().map(|c| {
            json!({
                "full_name": c.full_name,
                "email": c.email,
                "telephone_number": c.telephone_number,
                "company_name": c.company_name,
            })
        });
        json!({
            "carrier_id": self.carrier_id,
            "tenant_id": self.tenant_id,
            "status": enum_json(self.status().as_str_name(), "CONSENT_STATUS_"),
            "consented_countries": self.consented_countries,
            "contact": contact,
            "consent_time": time_json(&self.consent_time),
            "update_time": time_json(&self.update_time),
        })
    }
}

impl Render for pb::PhoneNumber {
    const COLUMNS: &'static [&'static str] = &[
        "NUMBER",
        "CARRIER_ID",
        "TENANT_ID",
        "STATE",
        "ASSIGNMENT",
        "SIP_URI",
        "CAPABILITIES",
        "COUNTRY",
        "VERSION",
        "UPDATED",
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            self.number.clone(),
            self.carrier_id.clone(),
            text_cell(&self.tenant_id),
            enum_cell(self.state().as_str_name(), "NUMBER_STATE_"),
            enum_cell(self.assignment_type().as_str_name(), "ASSIGNMENT_TYPE_"),
            text_cell(&self.sip_uri),
            text_cell(&capabilities(self).join(",")),
            text_cell(&self.country_code),
            self.version.to_string(),
            time_cell(&self.update_time),
        ]
    }

    fn json(&self) -> Value {
        json!({
            "number": self.number,
            "carrier_id": self.carrier_id,
            "tenant_id": self.tenant_id,
            "state": enum_json(self.state().as_str_name(), "NUMBER_STATE_"),
            "assignment_type": enum_json(self.assignment_type().as_str_name(), "ASSIGNMENT_TYPE_"),
            "sip_uri": self.sip_uri,
            "user_id": self.user_id,
            "capabilities": capabilities(self),
            "civic_address_id": self.civic_address_id,
            "location_id": self.location_id,
            "country_code": self.country_code,
            "provision_time": time_json(&self.provision_time),
            "assign_time": time_json(&self.assign_time),
            "update_time": time_json(&self.update_time),
            "version": self.version,
        })
    }
}

impl Render for pb::NumberEvent {
    const COLUMNS: &'static [&'static str] = &["SEQUENCE", "TYPE", "NUMBER", "STATE", "SIP_URI"];

    fn cells(&self) -> Vec<String> {
        let number = self.phone_number.clone().unwrap_or_default();
        vec![
            self.sequence.to_string(),
            enum_cell(self.r#type().as_str_name(), "NUMBER_EVENT_TYPE_"),
            text_cell(&number.number),
            enum_cell(number.state().as_str_name(), "NUMBER_STATE_"),
            text_cell(&number.sip_uri),
        ]
    }

    fn json(&self) -> Value {
        json!({
            "sequence": self.sequence,
            "type": enum_json(self.r#type().as_str_name(), "NUMBER_EVENT_TYPE_"),
            "event_time": time_json(&self.event_time),
            "phone_number": self.phone_number.as_ref().map(Render::json),
        })
    }
}

/// Prints one event as it arrives: a fixed-width line, or a JSON line. No table alignment, since
/// the stream never ends.
pub fn print_event(format: Format, event: &pb::NumberEvent) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", event.json()),
        Format::Table | Format::Csv => {
            let number = event.phone_number.clone().unwrap_or_default();
            writeln!(
                out,
                "{:>8}  {:<12}  {:<16}  {:<11}  {}",
                event.sequence,
                enum_cell(event.r#type().as_str_name(), "NUMBER_EVENT_TYPE_"),
                text_cell(&number.number),
                enum_cell(number.state().as_str_name(), "NUMBER_STATE_"),
                text_cell(&number.sip_uri),
            )
        }
    }
}

// ----- call records -----

/// The flat columns of a call record, as `calls export` writes them (CSV header, and the keys
/// of the JSON form, which adds `media_streams` and `update_time`).
pub const CALL_RECORD_COLUMNS: &[&str] = &[
    "call_id",
    "correlation_id",
    "version",
    "carrier_id",
    "tenant_id",
    "call_type",
    "direction",
    "caller_number",
    "callee_number",
    "user_sip_uri",
    "invite_time",
    "start_time",
    "end_time",
    "duration_seconds",
    "final_sip_code",
    "final_sip_phrase",
    "q850_cause",
    "successful",
    "destination_context",
    "usage_country_code",
    "trunk_fqdn",
    "quality",
    "poor_due_to",
    "feed_sequence",
];

/// A duration in seconds (fractional), or `None` if unset.
pub fn seconds(d: &Option<prost_types::Duration>) -> Option<f64> {
    d.as_ref()
        .map(|d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

/// A duration in milliseconds, or `None` if unset (media metrics read best in ms).
fn millis(d: &Option<prost_types::Duration>) -> Option<f64> {
    seconds(d).map(|s| s * 1000.0)
}

/// An enum name for a CSV cell: empty when unspecified.
fn enum_csv(proto_name: &str, prefix: &str) -> String {
    match enum_name(proto_name, prefix).as_str() {
        "unspecified" => String::new(),
        name => name.to_owned(),
    }
}

/// The metrics that made a call poor, e.g. `["jitter", "round_trip_time"]`.
fn poor_due_to(record: &pb::CallRecord) -> Vec<String> {
    record
        .poor_due_to()
        .map(|m| enum_name(m.as_str_name(), "QUALITY_METRIC_"))
        .collect()
}

/// The verdict for a table: `good`, `unclassified`, or `poor (jitter,round_trip_time)`.
fn quality_cell(record: &pb::CallRecord) -> String {
    let verdict = enum_cell(record.quality().as_str_name(), "QUALITY_VERDICT_");
    let due = poor_due_to(record);
    if due.is_empty() {
        verdict
    } else {
        format!("{verdict} ({})", due.join(","))
    }
}

/// One CSV row of a call record, in [`CALL_RECORD_COLUMNS`] order: enums by name (empty when
/// unspecified), times RFC 3339 (empty when unset), `poor_due_to` joined with `;`.
pub fn call_record_csv_row(r: &pb::CallRecord) -> Vec<String> {
    vec![
        r.call_id.clone(),
        r.correlation_id.clone(),
        r.version.to_string(),
        r.carrier_id.clone(),
        r.tenant_id.clone(),
        enum_csv(r.call_type().as_str_name(), "CALL_TYPE_"),
        enum_csv(r.direction().as_str_name(), "CALL_DIRECTION_"),
        r.caller_number.clone(),
        r.callee_number.clone(),
        r.user_sip_uri.clone(),
        rfc3339(&r.invite_time).unwrap_or_default(),
        rfc3339(&r.start_time).unwrap_or_default(),
        rfc3339(&r.end_time).unwrap_or_default(),
        seconds(&r.duration).map_or_else(String::new, |s| s.to_string()),
        r.final_sip_code.to_string(),
        r.final_sip_phrase.clone(),
        r.q850_cause.to_string(),
        r.successful.to_string(),
        enum_csv(
            r.destination_context().as_str_name(),
            "DESTINATION_CONTEXT_",
        ),
        r.usage_country_code.clone(),
        r.trunk_fqdn.clone(),
        enum_csv(r.quality().as_str_name(), "QUALITY_VERDICT_"),
        poor_due_to(r).join(";"),
        r.feed_sequence.to_string(),
    ]
}

/// The JSON form of a media stream: durations as `*_ms` numbers, unset metrics `null`.
fn media_stream_json(s: &pb::MediaStream) -> Value {
    json!({
        "direction": enum_json(s.direction().as_str_name(), "STREAM_DIRECTION_"),
        "codec": s.codec,
        "average_jitter_ms": millis(&s.average_jitter),
        "max_jitter_ms": millis(&s.max_jitter),
        "average_packet_loss_rate": s.average_packet_loss_rate,
        "max_packet_loss_rate": s.max_packet_loss_rate,
        "average_round_trip_time_ms": millis(&s.average_round_trip_time),
        "max_round_trip_time_ms": millis(&s.max_round_trip_time),
        "average_audio_degradation": s.average_audio_degradation,
        "average_ratio_of_concealed_samples": s.average_ratio_of_concealed_samples,
        "mos": s.mos,
        "mos_estimated": s.mos_estimated,
    })
}

impl Render for pb::CallRecord {
    const COLUMNS: &'static [&'static str] = &[
        "START",
        "CALL_ID",
        "DIRECTION",
        "TYPE",
        "CALLER",
        "CALLEE",
        "DURATION_S",
        "QUALITY",
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            time_cell(&self.start_time),
            self.call_id.clone(),
            enum_cell(self.direction().as_str_name(), "CALL_DIRECTION_"),
            enum_cell(self.call_type().as_str_name(), "CALL_TYPE_"),
            text_cell(&self.caller_number),
            text_cell(&self.callee_number),
            seconds(&self.duration).map_or_else(|| "-".to_owned(), |s| format!("{s:.0}")),
            quality_cell(self),
        ]
    }

    /// Every field: the [`CALL_RECORD_COLUMNS`] (enums by name or `null`, times RFC 3339 or
    /// `null`, `poor_due_to` an array), then `update_time` and `media_streams`.
    fn json(&self) -> Value {
        let r = self;
        json!({
            "call_id": r.call_id,
            "correlation_id": r.correlation_id,
            "version": r.version,
            "carrier_id": r.carrier_id,
            "tenant_id": r.tenant_id,
            "call_type": enum_json(r.call_type().as_str_name(), "CALL_TYPE_"),
            "direction": enum_json(r.direction().as_str_name(), "CALL_DIRECTION_"),
            "caller_number": r.caller_number,
            "callee_number": r.callee_number,
            "user_sip_uri": r.user_sip_uri,
            "invite_time": time_json(&r.invite_time),
            "start_time": time_json(&r.start_time),
            "end_time": time_json(&r.end_time),
            "duration_seconds": seconds(&r.duration),
            "final_sip_code": r.final_sip_code,
            "final_sip_phrase": r.final_sip_phrase,
            "q850_cause": r.q850_cause,
            "successful": r.successful,
            "destination_context":
                enum_json(r.destination_context().as_str_name(), "DESTINATION_CONTEXT_"),
            "usage_country_code": r.usage_country_code,
            "trunk_fqdn": r.trunk_fqdn,
            "quality": enum_json(r.quality().as_str_name(), "QUALITY_VERDICT_"),
            "poor_due_to": poor_due_to(r),
            "feed_sequence": r.feed_sequence,
            "update_time": time_json(&r.update_time),
            "media_streams": r.media_streams.iter().map(media_stream_json).collect::<Vec<_>>(),
        })
    }
}

/// Prints one call record in full: a JSON line, or `field  value` lines for every field
/// followed by a table of its media streams.
pub fn print_call_record(format: Format, record: &pb::CallRecord) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if format == Format::Json {
        return writeln!(out, "{}", record.json());
    }
    let mut rows: Vec<Vec<String>> = CALL_RECORD_COLUMNS
        .iter()
        .zip(call_record_csv_row(record))
        .map(|(column, cell)| {
            let cell = if cell.is_empty() {
                "-".to_owned()
            } else {
                cell
            };
            vec![(*column).to_owned(), cell]
        })
        .collect();
    rows.push(vec![
        "update_time".to_owned(),
        time_cell(&record.update_time),
    ]);
    write_table(&mut out, None, &rows)?;
    writeln!(out)?;
    if record.media_streams.is_empty() {
        return writeln!(out, "no media streams");
    }
    let streams: Vec<Vec<String>> = record
        .media_streams
        .iter()
        .map(media_stream_cells)
        .collect();
    write_table(&mut out, Some(MEDIA_STREAM_COLUMNS), &streams)
}

/// Columns of the media stream table of `calls get`; `avg/max` pairs share a column.
const MEDIA_STREAM_COLUMNS: &[&str] = &[
    "STREAM",
    "CODEC",
    "JITTER_MS",
    "LOSS",
    "RTT_MS",
    "DEGRADATION",
    "CONCEALED",
    "MOS",
];

/// One row of the media stream table.
fn media_stream_cells(s: &pb::MediaStream) -> Vec<String> {
    let number = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |x| format!("{x}"));
    let pair = |avg: Option<f64>, max: Option<f64>| match (avg, max) {
        (None, None) => "-".to_owned(),
        (avg, max) => format!("{}/{}", number(avg), number(max)),
    };
    let mos = match (s.mos, s.mos_estimated) {
        (None, _) => "-".to_owned(),
        (Some(mos), false) => format!("{mos:.2}"),
        (Some(mos), true) => format!("{mos:.2} (estimated)"),
    };
    vec![
        enum_cell(s.direction().as_str_name(), "STREAM_DIRECTION_"),
        text_cell(&s.codec),
        pair(millis(&s.average_jitter), millis(&s.max_jitter)),
        pair(s.average_packet_loss_rate, s.max_packet_loss_rate),
        pair(
            millis(&s.average_round_trip_time),
            millis(&s.max_round_trip_time),
        ),
        number(s.average_audio_degradation),
        number(s.average_ratio_of_concealed_samples),
        mos,
    ]
}

/// Prints one record of the feed as it arrives: `feed_sequence call_id version direction caller
/// callee quality` on one line, or a JSON line.
pub fn print_call_feed(format: Format, record: &pb::CallRecord) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", record.json()),
        Format::Table | Format::Csv => writeln!(
            out,
            "{:>8}  {:<36}  v{:<3}  {:<8}  {:<16}  {:<16}  {}",
            record.feed_sequence,
            record.call_id,
            record.version,
            enum_cell(record.direction().as_str_name(), "CALL_DIRECTION_"),
            text_cell(&record.caller_number),
            text_cell(&record.callee_number),
            quality_cell(record),
        ),
    }
}

/// Prints one change of the reconciliation feed as it arrives: `sequence state start call_id
/// record_id platform_s carrier_s` on one line (CSV and table alike, as for the call record
/// feed), or a JSON line.
pub fn print_reconciliation_change(
    format: Format,
    change: &pb::ReconciliationChange,
) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match format {
        Format::Json => writeln!(
            out,
            "{}",
            json!({
                "sequence": change.sequence,
                "entry": enum_json(change.entry().as_str_name(), "RECONCILIATION_ENTRY_"),
                "state": enum_json(change.state().as_str_name(), "RECONCILIATION_STATE_"),
                "call_id": change.call_id,
                "correlation_id": change.correlation_id,
                "record_id": change.record_id,
                "start_time": time_json(&change.start_time),
                "platform_duration_seconds": seconds(&change.platform_duration),
                "carrier_duration_seconds": seconds(&change.carrier_duration),
            })
        ),
        Format::Table | Format::Csv => writeln!(
            out,
            "{:>8}  {:<19}  {:<20}  {:<36}  {:<20}  {:>10}  {:>10}",
            change.sequence,
            enum_cell(change.state().as_str_name(), "RECONCILIATION_STATE_"),
            time_cell(&change.start_time),
            text_cell(&change.call_id),
            text_cell(&change.record_id),
            seconds_cell(&change.platform_duration),
            seconds_cell(&change.carrier_duration),
        ),
    }
}

/// A duration in seconds for a table: `61.25`, `-` when unset.
fn seconds_cell(d: &Option<prost_types::Duration>) -> String {
    seconds(d).map_or_else(|| "-".to_owned(), |s| format!("{s:.3}"))
}

impl Render for pb::CallDuration {
    const COLUMNS: &'static [&'static str] = &[
        "START",
        "RECORD_ID",
        "CALL_ID",
        "CORRELATION_ID",
        "CALLER",
        "CALLEE",
        "DURATION_S",
        "CORRECTIONS",
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            time_cell(&self.start_time),
            self.record_id.clone(),
            text_cell(&self.call_id),
            text_cell(&self.correlation_id),
            text_cell(&self.caller_number),
            text_cell(&self.callee_number),
            seconds_cell(&self.duration),
            self.corrections.to_string(),
        ]
    }

    fn json(&self) -> Value {
        json!({
            "record_id": self.record_id,
            "carrier_id": self.carrier_id,
            "call_id": self.call_id,
            "correlation_id": self.correlation_id,
            "caller_number": self.caller_number,
            "callee_number": self.callee_number,
            "start_time": time_json(&self.start_time),
            "duration_seconds": seconds(&self.duration),
            "corrections": self.corrections,
            "create_time": time_json(&self.create_time),
            "update_time": time_json(&self.update_time),
        })
    }
}

impl Render for pb::ReconciliationSummary {
    const COLUMNS: &'static [&'static str] = &[
        "START",
        "END",
        "TOLERANCE_S",
        "PLATFORM_CALLS",
        "PLATFORM_DURATION_S",
        "CARRIER_CALLS",
        "CARRIER_DURATION_S",
        "MATCHED",
        "MISMATCHED",
        "MISSING_ON_CARRIER",
        "MISSING_ON_PLATFORM",
        "AGREEMENT_RATE",
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            time_cell(&self.start_time),
            time_cell(&self.end_time),
            seconds_cell(&self.tolerance),
            self.platform_count.to_string(),
            seconds_cell(&self.platform_duration),
            self.carrier_count.to_string(),
            seconds_cell(&self.carrier_duration),
            self.matched_count.to_string(),
            self.mismatched_count.to_string(),
            self.missing_on_carrier_count.to_string(),
            self.missing_on_platform_count.to_string(),
            format!("{:.2}%", self.agreement_rate * 100.0),
        ]
    }

    fn json(&self) -> Value {
        json!({
            "start_time": time_json(&self.start_time),
            "end_time": time_json(&self.end_time),
            "tolerance_seconds": seconds(&self.tolerance),
            "platform_count": self.platform_count,
            "platform_duration_seconds": seconds(&self.platform_duration),
            "carrier_count": self.carrier_count,
            "carrier_duration_seconds": seconds(&self.carrier_duration),
            "matched_count": self.matched_count,
            "mismatched_count": self.mismatched_count,
            "missing_on_carrier_count": self.missing_on_carrier_count,
            "missing_on_platform_count": self.missing_on_platform_count,
            "agreement_rate": self.agreement_rate,
        })
    }
}

impl Render for pb::Discrepancy {
    const COLUMNS: &'static [&'static str] = &[
        "KIND",
        "START",
        "CALL_ID",
        "RECORD_ID",
        "CALLER",
        "CALLEE",
        "PLATFORM_S",
        "CARRIER_S",
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            enum_cell(self.kind().as_str_name(), "DISCREPANCY_KIND_"),
            time_cell(&self.start_time),
            text_cell(&self.call_id),
            text_cell(&self.record_id),
            text_cell(&self.caller_number),
            text_cell(&self.callee_number),
            seconds_cell(&self.platform_duration),
            seconds_cell(&self.carrier_duration),
        ]
    }

    fn json(&self) -> Value {
        json!({
            "kind": enum_json(self.kind().as_str_name(), "DISCREPANCY_KIND_"),
            "call_id": self.call_id,
            "correlation_id": self.correlation_id,
            "record_id": self.record_id,
            "start_time": time_json(&self.start_time),
            "caller_number": self.caller_number,
            "callee_number": self.callee_number,
            "platform_duration_seconds": seconds(&self.platform_duration),
            "carrier_duration_seconds": seconds(&self.carrier_duration),
        })
    }
}

impl Render for pb::AuditEvent {
    const COLUMNS: &'static [&'static str] = &[
        "TIME", "KEY_ID", "CARRIER", "RPC", "KIND", "ITEMS", "OUTCOME", "SOURCE",
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            time_cell(&self.time),
            text_cell(&self.key_id),
            text_cell(&self.carrier_id),
            self.rpc.clone(),
            text_cell(&self.resource_kind),
            self.item_count.to_string(),
            self.outcome.clone(),
            text_cell(&self.source),
        ]
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "time": time_json(&self.time),
            "key_id": self.key_id,
            "carrier_id": self.carrier_id,
            "role": self.role,
            "rpc": self.rpc,
            "resource_kind": self.resource_kind,
            "item_count": self.item_count,
            "outcome": self.outcome,
            "source": self.source,
        })
    }
}

impl Render for pb::RetentionPolicy {
    const COLUMNS: &'static [&'static str] = &[
        "CALL_RECORD_DAYS",
        "CALL_DURATION_DAYS",
        "RELEASED_NUMBER_DAYS",
        "AUDIT_EVENT_DAYS",
        "UPDATE_TIME",
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            self.call_record_days.to_string(),
            self.call_duration_days.to_string(),
            self.released_number_days.to_string(),
            self.audit_event_days.to_string(),
            time_cell(&self.update_time),
        ]
    }

    fn json(&self) -> Value {
        json!({
            "call_record_days": self.call_record_days,
            "call_duration_days": self.call_duration_days,
            "released_number_days": self.released_number_days,
            "audit_event_days": self.audit_event_days,
            "update_time": time_json(&self.update_time),
        })
    }
}

impl Render for pb::PurgeExpiredDataResponse {
    const COLUMNS: &'static [&'static str] = &[
        "CALL_RECORDS",
        "CALL_DURATIONS",
        "RELEASED_NUMBERS",
        "NUMBER_EVENTS",
        "AUDIT_EVENTS",
    ];

    fn cells(&self) -> Vec<String> {
        [
            self.call_records,
            self.call_durations,
            self.released_numbers,
            self.number_events,
            self.audit_events,
        ]
        .iter()
        .map(i64::to_string)
        .collect()
    }

    fn json(&self) -> Value {
        json!({
            "call_records": self.call_records,
            "call_durations": self.call_durations,
            "released_numbers": self.released_numbers,
            "number_events": self.number_events,
            "audit_events": self.audit_events,
        })
    }
}

impl Render for pb::EraseTenantDataResponse {
    const COLUMNS: &'static [&'static str] =
        &["CALL_RECORDS", "CALL_DURATIONS", "NUMBERS", "NUMBER_EVENTS"];

    fn cells(&self) -> Vec<String> {
        [
            self.call_records,
            self.call_durations,
            self.numbers,
            self.number_events,
        ]
        .iter()
        .map(i64::to_string)
        .collect()
    }

    fn json(&self) -> Value {
        json!({
            "call_records": self.call_records,
            "call_durations": self.call_durations,
            "numbers": self.numbers,
            "number_events": self.number_events,
        })
    }
}

/// Prints tenant usage: a table with one row per group and a total line, or one JSON object
/// per row followed by one for the total.
pub fn print_usage(
    format: Format,
    grouping: pb::UsageGrouping,
    usage: &pb::GetTenantUsageResponse,
) -> io::Result<()> {
    let mut out = io::stdout().lock();
    let source = |r: &pb::UsageRow| enum_name(r.source().as_str_name(), "DURATION_SOURCE_");
    if format == Format::Json {
        for r in &usage.rows {
            let row = json!({
                "day": (!r.day.is_empty()).then_some(&r.day),
                "number": (!r.number.is_empty()).then_some(&r.number),
                "direction": enum_json(r.direction().as_str_name(), "CALL_DIRECTION_"),
                "call_count": r.call_count,
                "total_duration_seconds": seconds(&r.total_duration),
                "source": source(r),
                "operator_count": r.operator_count,
                "platform_count": r.platform_count,
            });
            writeln!(out, "{row}")?;
        }
        let total = json!({
            "total": true,
            "call_count": usage.call_count,
            "total_duration_seconds": seconds(&usage.total_duration),
        });
        return writeln!(out, "{total}");
    }
    let by_day = grouping == pb::UsageGrouping::Day;
    if format == Format::Csv {
        let mut csv = csv::Writer::from_writer(out);
        csv.write_record([
            "day",
            "number",
            "direction",
            "call_count",
            "total_duration_seconds",
            "source",
            "operator_count",
            "platform_count",
        ])?;
        for r in &usage.rows {
            csv.write_record([
                r.day.clone(),
                r.number.clone(),
                enum_csv(r.direction().as_str_name(), "CALL_DIRECTION_"),
                r.call_count.to_string(),
                seconds(&r.total_duration).map_or_else(String::new, |s| s.to_string()),
                source(r),
                r.operator_count.to_string(),
                r.platform_count.to_string(),
            ])?;
        }
        return csv.flush();
    }
    let columns: &[&str] = if by_day {
        &[
            "DAY",
            "CALLS",
            "DURATION_S",
            "SOURCE",
            "OPERATOR",
            "PLATFORM",
        ]
    } else {
        &[
            "NUMBER",
            "DIRECTION",
            "CALLS",
            "DURATION_S",
            "SOURCE",
            "OPERATOR",
            "PLATFORM",
        ]
    };
    let mut rows: Vec<Vec<String>> = usage
        .rows
        .iter()
        .map(|r| {
            let mut cells = if by_day {
                vec![r.day.clone()]
            } else {
                vec![
                    r.number.clone(),
                    enum_cell(r.direction().as_str_name(), "CALL_DIRECTION_"),
                ]
            };
            cells.extend([
                r.call_count.to_string(),
                seconds_cell(&r.total_duration),
                source(r),
                r.operator_count.to_string(),
                r.platform_count.to_string(),
            ]);
            cells
        })
        .collect();
    let mut total = vec!["total".to_owned()];
    if !by_day {
        total.push(String::new());
    }
    total.extend([
        usage.call_count.to_string(),
        seconds_cell(&usage.total_duration),
    ]);
    total.extend([String::new(), String::new(), String::new()]);
    rows.push(total);
    write_table(&mut out, Some(columns), &rows)
}

/// A progress bar (`total` known) or spinner on stderr, or a hidden one: shown only when stderr
/// is a terminal and nothing else is being written to that terminal (`stdout_is_output`: the
/// command streams its results to stdout, which then must not be a terminal too). Never any
/// progress text otherwise, so logs and pipes stay clean.
pub fn progress(what: &str, total: Option<u64>, stdout_is_output: bool) -> ProgressBar {
    let show = io::stderr().is_terminal() && !(stdout_is_output && io::stdout().is_terminal());
    if !show {
        return ProgressBar::hidden();
    }
    let (bar, template) = match total {
        Some(total) => (
            ProgressBar::new(total),
            format!("{{wide_bar}} {{human_pos}}/{{human_len}} {what} ({{per_sec:0}}, ETA {{eta}})"),
        ),
        None => (
            ProgressBar::new_spinner(),
            format!("{{spinner}} {{human_pos}} {what} ({{per_sec:0}}, {{elapsed}})"),
        ),
    };
    // The templates are constants in all but `what`; a bad one falls back to the default look.
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_on_the_widest_cell() {
        let mut out = Vec::new();
        let rows = vec![
            vec![
                "+441632960001".to_owned(),
                "assigned".to_owned(),
                "x".to_owned(),
            ],
            vec!["+44".to_owned(), "provisioned".to_owned(), "-".to_owned()],
        ];
        write_table(&mut out, Some(&["NUMBER", "STATE", "SIP"]), &rows).expect("writes");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "NUMBER         STATE        SIP\n\
             +441632960001  assigned     x\n\
             +44            provisioned  -\n"
        );
    }

    #[test]
    fn times_keep_only_the_precision_they_have() {
        let at = |nanos| {
            rfc3339(&Some(prost_types::Timestamp {
                seconds: 1_714_521_600,
                nanos,
            }))
        };
        assert_eq!(at(0).as_deref(), Some("2024-05-01T00:00:00Z"));
        assert_eq!(at(363_000_000).as_deref(), Some("2024-05-01T00:00:00.363Z"));
        assert_eq!(
            at(363_001_000).as_deref(),
            Some("2024-05-01T00:00:00.363001Z")
        );
        assert_eq!(at(1).as_deref(), Some("2024-05-01T00:00:00.000000001Z"));
        assert_eq!(rfc3339(&None), None);
    }

    #[test]
    fn enum_names_lose_their_prefix() {
        assert_eq!(
            enum_name(pb::NumberState::Assigned.as_str_name(), "NUMBER_STATE_"),
            "assigned"
        );
        assert_eq!(
            enum_json(
                pb::AssignmentType::Unspecified.as_str_name(),
                "ASSIGNMENT_TYPE_"
            ),
            Value::Null
        );
    }
}

//! How resources are printed: aligned text tables for people, JSON lines for programs.
//!
//! Enum values print as their proto names without the type prefix, lower case (`assigned`),
//! and `null` in JSON when unspecified; times as RFC 3339 UTC.

use std::io::{self, Write};
use std::pin::pin;
use std::time::SystemTime;

use futures_util::{Stream, StreamExt};
use ocx_client::pb;
use serde_json::{Value, json};

/// The `--output` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns (one item: one `field value` line per field).
    Table,
    /// One JSON object per line.
    Json,
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
    while let Some(item) = items.next().await {
        match item {
            Ok(item) => match format {
                Format::Json => writeln!(io::stdout().lock(), "{}", item.json())?,
                Format::Table => rows.push(item.cells()),
            },
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
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

/// A timestamp as RFC 3339 with the precision the server gave, or `None` if unset.
fn rfc3339(ts: &Option<prost_types::Timestamp>) -> Option<String> {
    let time = SystemTime::try_from((*ts)?).ok()?;
    Some(humantime::format_rfc3339(time).to_string())
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
        Format::Table => {
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

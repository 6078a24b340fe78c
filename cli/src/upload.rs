//! `ocx numbers upload` and `ocx numbers release`: CSV rows to batches, batch results back to
//! CSV line numbers.
//!
//! The CSV has a header row. Columns, in any order (names are case-insensitive):
//! - `number` (required): E.164, e.g. `+441632960001`;
//! - `tenant_id`: the tenant's GUID; may be left out (or cells left empty) when `--tenant` is
//!   given, which fills the gaps;
//! - `capabilities`: names separated by `;`, e.g. `inbound_calling;outbound_calling;user_assignment`
//!   (empty: the server's default);
//! - `civic_address_id`, `location_id`, `country_code`: optional.
//!
//! The whole file is read before anything is sent, so a malformed file sends nothing.

use std::collections::HashMap;
use std::io::{self, Read, Write};

use anyhow::{Context, bail};
use ocx_api::MAX_BATCH_ITEMS;
use ocx_client::{Client, pb};

/// The columns a CSV may have.
const COLUMNS: &[&str] = &[
    "number",
    "tenant_id",
    "capabilities",
    "civic_address_id",
    "location_id",
    "country_code",
];

/// One CSV row ready to send.
#[derive(Debug, PartialEq)]
pub struct Row {
    /// The row's line in the file (1 is the header), for reporting.
    pub line: u64,
    /// What to upload.
    pub upload: pb::NumberUpload,
}

/// A row the CLI itself could not turn into an upload (it is never sent).
#[derive(Debug, PartialEq)]
pub struct LocalReject {
    /// The row's line in the file.
    pub line: u64,
    /// The `number` cell.
    pub number: String,
    /// The column at fault.
    pub column: &'static str,
    /// Why.
    pub description: String,
}

/// What a CSV file holds.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    /// Rows to send, in file order.
    pub rows: Vec<Row>,
    /// Rows rejected before sending.
    pub rejects: Vec<LocalReject>,
}

/// Reads the CSV. `default_tenant` fills a missing `tenant_id` column or empty cells.
pub fn parse_csv(mut input: impl Read, default_tenant: Option<&str>) -> anyhow::Result<Parsed> {
    let mut data = Vec::new();
    input.read_to_end(&mut data)?;
    // The csv crate places a record after a blank line at the start of that blank line (in
    // its line count and byte offset alike); skipping line breaks from that offset finds the
    // line an editor shows.
    let line_at = |byte: u64| {
        let mut start = usize::try_from(byte).map_or(data.len(), |b| b.min(data.len()));
        while data.get(start).is_some_and(|b| *b == b'\n' || *b == b'\r') {
            start += 1;
        }
        1 + data[..start].iter().filter(|&&b| b == b'\n').count() as u64
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(data.as_slice());
    let index = header_index(reader.headers().context("reading the header row")?, COLUMNS)?;
    if !index.contains_key("number") {
        bail!("the header row has no \"number\" column");
    }
    if !index.contains_key("tenant_id") && default_tenant.is_none() {
        bail!("the header row has no \"tenant_id\" column: add one or pass --tenant");
    }

    let mut parsed = Parsed::default();
    for record in reader.records() {
        let record = record.context("reading the CSV")?;
        let line = record.position().map_or(0, |p| line_at(p.byte()));
        let cell = |column: &str| {
            index
                .get(column)
                .and_then(|&i| record.get(i))
                .unwrap_or_default()
                .to_owned()
        };
        let number = cell("number");
        let mut tenant_id = cell("tenant_id");
        if tenant_id.is_empty() {
            tenant_id = default_tenant.unwrap_or_default().to_owned();
        }
        let capabilities = match parse_capabilities(&cell("capabilities")) {
            Ok(capabilities) => capabilities,
            Err(description) => {
                parsed.rejects.push(LocalReject {
                    line,
                    number,
                    column: "capabilities",
                    description,
                });
                continue;
            }
        };
        parsed.rows.push(Row {
            line,
            upload: pb::NumberUpload {
                number,
                tenant_id,
                capabilities: capabilities.into_iter().map(i32::from).collect(),
                civic_address_id: cell("civic_address_id"),
                location_id: cell("location_id"),
                country_code: cell("country_code"),
            },
        });
    }
    Ok(parsed)
}

/// The header row's columns (case-insensitive) by their index; an unknown or repeated column
/// is an error that lists the known ones. Shared by every CSV the CLI reads.
pub fn header_index(
    headers: &csv::StringRecord,
    columns: &[&'static str],
) -> anyhow::Result<HashMap<&'static str, usize>> {
    let mut index = HashMap::new();
    for (i, name) in headers.iter().enumerate() {
        let name = name.to_ascii_lowercase();
        let Some(column) = columns.iter().find(|c| **c == name) else {
            bail!(
                "unknown column {name:?} in the header row; the columns are: {}",
                columns.join(", ")
            );
        };
        if index.insert(*column, i).is_some() {
            bail!("column {name:?} appears twice in the header row");
        }
    }
    Ok(index)
}

/// `inbound_calling;user_assignment` → the capabilities; an unknown name is an error.
fn parse_capabilities(cell: &str) -> Result<Vec<pb::NumberCapability>, String> {
    cell.split(';')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            let upper = name.to_ascii_uppercase();
            let full = if upper.starts_with("NUMBER_CAPABILITY_") {
                upper
            } else {
                format!("NUMBER_CAPABILITY_{upper}")
            };
            pb::NumberCapability::from_str_name(&full)
                .filter(|c| *c != pb::NumberCapability::Unspecified)
                .ok_or_else(|| {
                    format!(
                        "unknown capability {name:?}: use inbound_calling, outbound_calling, \
                         user_assignment, conference_assignment, voice_app_assignment or mobile"
                    )
                })
        })
        .collect()
}

/// One line of the report: a row (or number) the server or the CLI rejected.
struct Rejected {
    /// The CSV line (unknown only if the server sent an index outside the batch).
    line: Option<u64>,
    /// The number as sent.
    number: String,
    /// The server's reason; empty for local rejects.
    reason: String,
    /// `(field, description)` with the `numbers[i].` prefix taken off, so the field is the
    /// CSV column.
    violations: Vec<(String, String)>,
}

/// Counts of each item status.
#[derive(Default)]
struct Tally {
    /// New numbers stored.
    created: usize,
    /// Identical resends.
    unchanged: usize,
    /// Numbers whose attributes (or state) changed.
    updated: usize,
    /// Items not stored.
    rejected: Vec<Rejected>,
}

impl Tally {
    /// Adds the results of one batch whose items came from CSV `lines`.
    fn add(&mut self, results: Vec<pb::NumberResult>, lines: &[u64]) {
        for result in results {
            match result.status() {
                pb::ItemStatus::Created => self.created += 1,
                pb::ItemStatus::Unchanged => self.unchanged += 1,
                // Numbers have no versions to revise; a server that says so changed the number.
                pb::ItemStatus::Updated | pb::ItemStatus::Revised | pb::ItemStatus::Corrected => {
                    self.updated += 1
                }
                pb::ItemStatus::Rejected | pb::ItemStatus::Unspecified => {
                    let prefix = format!("numbers[{}]", result.index);
                    let violations = result
                        .violations
                        .into_iter()
                        .map(|v| (strip_item_prefix(&v.field, &prefix), v.description))
                        .collect();
                    let line = usize::try_from(result.index)
                        .ok()
                        .and_then(|i| lines.get(i).copied());
                    self.rejected.push(Rejected {
                        line,
                        number: result.number,
                        reason: result.reason,
                        violations,
                    });
                }
            }
        }
    }

    /// Prints the rejected items (by line) and the summary.
    fn print(&mut self, out: &mut impl Write) -> io::Result<()> {
        self.rejected.sort_by_key(|r| r.line);
        for rejected in &self.rejected {
            let place = rejected
                .line
                .map_or_else(String::new, |line| format!("line {line}: "));
            // The server's reason often just joins the violations printed below.
            let restated = !rejected.violations.is_empty()
                && rejected
                    .violations
                    .iter()
                    .all(|(_, description)| rejected.reason.contains(description.as_str()));
            let reason = if rejected.reason.is_empty() || restated {
                "rejected".to_owned()
            } else {
                format!("rejected: {}", rejected.reason)
            };
            writeln!(out, "{place}{}: {reason}", rejected.number)?;
            for (field, description) in &rejected.violations {
                writeln!(out, "  {field}: {description}")?;
            }
        }
        writeln!(
            out,
            "created {}, unchanged {}, updated {}, rejected {}",
            self.created,
            self.unchanged,
            self.updated,
            self.rejected.len()
        )
    }
}

/// `numbers[3].capabilities[0]` with prefix `numbers[3]` → `capabilities[0]`; `numbers[3]` →
/// `number`; anything else unchanged.
fn strip_item_prefix(field: &str, prefix: &str) -> String {
    match field.strip_prefix(prefix) {
        Some("") => "number".to_owned(),
        Some(rest) => rest.strip_prefix('.').unwrap_or(rest).to_owned(),
        None => field.to_owned(),
    }
}

/// Uploads the parsed rows in batches; prints the rejected rows and a summary. Returns whether
/// every row was accepted. A batch that fails as a whole stops the upload (after printing what
/// the earlier batches did).
pub async fn upload(client: &Client, carrier_id: &str, parsed: Parsed) -> anyhow::Result<bool> {
    let mut tally = Tally::default();
    for reject in parsed.rejects {
        tally.rejected.push(Rejected {
            line: Some(reject.line),
            number: reject.number,
            reason: String::new(),
            violations: vec![(reject.column.to_owned(), reject.description)],
        });
    }
    let mut failure = None;
    for batch in parsed.rows.chunks(MAX_BATCH_ITEMS) {
        let lines: Vec<u64> = batch.iter().map(|row| row.line).collect();
        let request = pb::UploadNumbersRequest {
            request_id: String::new(),
            carrier_id: carrier_id.to_owned(),
            numbers: batch.iter().map(|row| row.upload.clone()).collect(),
        };
        match client.upload_numbers(request).await {
            Ok(response) => tally.add(response.results, &lines),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    tally.print(&mut io::stdout().lock())?;
    match failure {
        Some(error) => Err(error.into()),
        None => Ok(tally.rejected.is_empty()),
    }
}

/// Releases the numbers in batches; prints one line per number. Returns whether none was
/// rejected.
pub async fn release(
    client: &Client,
    carrier_id: &str,
    numbers: Vec<String>,
) -> anyhow::Result<bool> {
    let mut all_ok = true;
    let mut out = io::stdout().lock();
    for batch in numbers.chunks(MAX_BATCH_ITEMS) {
        let request = pb::ReleaseNumbersRequest {
            request_id: String::new(),
            carrier_id: carrier_id.to_owned(),
            numbers: batch.to_vec(),
        };
        let response = client.release_numbers(request).await?;
        for result in response.results {
            match result.status() {
                pb::ItemStatus::Updated
                | pb::ItemStatus::Created
                | pb::ItemStatus::Revised
                | pb::ItemStatus::Corrected => {
                    writeln!(out, "{}: released", result.number)?;
                }
                pb::ItemStatus::Unchanged => writeln!(out, "{}: already released", result.number)?,
                pb::ItemStatus::Rejected | pb::ItemStatus::Unspecified => {
                    all_ok = false;
                    writeln!(out, "{}: rejected: {}", result.number, result.reason)?;
                    for violation in result.violations {
                        writeln!(out, "  {}: {}", violation.field, violation.description)?;
                    }
                }
            }
        }
    }
    Ok(all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    #[test]
    fn rows_keep_their_line_and_fill_the_tenant() {
        let csv = "Number, tenant_id ,capabilities,country_code\n\
                   +441632960001,,inbound_calling; user_assignment,GB\n\
                   \n\
                   +441632960002,00000000-0000-0000-0000-000000000001,,\n\
                   +441632960003,,teleport,\n";
        let parsed = parse_csv(csv.as_bytes(), Some(TENANT)).expect("parses");
        assert_eq!(parsed.rows.len(), 2);
        assert_eq!(parsed.rows[0].line, 2);
        assert_eq!(parsed.rows[0].upload.tenant_id, TENANT);
        assert_eq!(
            parsed.rows[0].upload.capabilities,
            [
                i32::from(pb::NumberCapability::InboundCalling),
                i32::from(pb::NumberCapability::UserAssignment)
            ]
        );
        assert_eq!(parsed.rows[0].upload.country_code, "GB");
        assert_eq!(parsed.rows[1].line, 4);
        assert_eq!(
            parsed.rows[1].upload.tenant_id,
            "00000000-0000-0000-0000-000000000001"
        );
        assert_eq!(parsed.rejects.len(), 1);
        assert_eq!(parsed.rejects[0].line, 5);
        assert_eq!(parsed.rejects[0].column, "capabilities");
    }

    #[test]
    fn bad_headers_send_nothing() {
        assert!(parse_csv("number,tenant\n+441632960001,x\n".as_bytes(), None).is_err());
        assert!(parse_csv("tenant_id\nx\n".as_bytes(), None).is_err());
        assert!(parse_csv("number\n+441632960001\n".as_bytes(), None).is_err());
        assert!(parse_csv("number\n+441632960001\n".as_bytes(), Some(TENANT)).is_ok());
    }

    #[test]
    fn server_results_map_back_to_lines_and_columns() {
        let mut tally = Tally::default();
        let rejected = pb::NumberResult {
            index: 1,
            number: "+1".into(),
            status: pb::ItemStatus::Rejected.into(),
            reason: "invalid".into(),
            violations: vec![pb::FieldViolation {
                field: "numbers[1].number".into(),
                description: "not E.164".into(),
            }],
            phone_number: None,
        };
        let created = pb::NumberResult {
            index: 0,
            status: pb::ItemStatus::Created.into(),
            ..Default::default()
        };
        tally.add(vec![created, rejected], &[2, 7]);
        let mut out = Vec::new();
        tally.print(&mut out).expect("writes");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "line 7: +1: rejected: invalid\n  number: not E.164\n\
             created 1, unchanged 0, updated 0, rejected 1\n"
        );
    }
}

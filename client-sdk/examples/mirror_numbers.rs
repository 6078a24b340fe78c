//! Mirrors the carrier's numbers, and the platform's assignments of them, into a local table
//! kept current from the number-event feed. The table (a tab-separated file) records the last
//! event it holds, so the next run resumes the feed after it: start it once, and it stays in
//! step across restarts of this program and of the server.
//!
//! ```text
//! OCX_KEY_FILE=ocx-data/demo-carrier.key \
//!   cargo run -p ocx-client --example mirror_numbers -- numbers.tsv [--until-caught-up]
//! ```
//!
//! Runs until stopped; `--until-caught-up` stops once the table holds every number at least
//! at the version `ListNumbers` showed when the program started, and checks it against them.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures_util::{StreamExt, TryStreamExt};
use ocx_client::pb;

/// One row of the local table.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    tenant_id: String,
    state: String,
    sip_uri: String,
    version: i64,
}

impl Row {
    fn of(n: &pb::PhoneNumber) -> Row {
        Row {
            tenant_id: n.tenant_id.clone(),
            state: pb::NumberState::try_from(n.state)
                .map_or("unknown", |s| s.as_str_name())
                .to_owned(),
            sip_uri: n.sip_uri.clone(),
            version: n.version,
        }
    }
}

/// The table and the sequence of the last event applied to it.
#[derive(Debug, Default)]
struct Table {
    after: i64,
    rows: BTreeMap<String, Row>,
}

impl Table {
    /// Reads the table `path` (an empty one if there is none yet).
    fn load(path: &Path) -> Result<Table, Box<dyn std::error::Error>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Table::default()),
            Err(e) => return Err(e.into()),
        };
        let mut table = Table::default();
        for line in text.lines() {
            if let Some(after) = line.strip_prefix("# after ") {
                table.after = after.parse()?;
                continue;
            }
            let fields: Vec<&str> = line.split('\t').collect();
            let [number, tenant_id, state, sip_uri, version] = fields[..] else {
                return Err(format!("{}: not a row: {line}", path.display()).into());
            };
            let row = Row {
                tenant_id: tenant_id.to_owned(),
                state: state.to_owned(),
                sip_uri: sip_uri.to_owned(),
                version: version.parse()?,
            };
            table.rows.insert(number.to_owned(), row);
        }
        Ok(table)
    }

    /// Writes the table to `path`, whole (a crash leaves the old table or the new one).
    fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut text = format!("# after {}\n", self.after);
        for (number, r) in &self.rows {
            let line = format!(
                "{number}\t{}\t{}\t{}\t{}\n",
                r.tenant_id, r.state, r.sip_uri, r.version
            );
            text.push_str(&line);
        }
        common::save(path, &text)
    }

    /// Applies one event: the number as the event left it.
    fn apply(&mut self, event: &pb::NumberEvent) {
        if let Some(n) = &event.phone_number {
            self.rows.insert(n.number.clone(), Row::of(n));
        }
        self.after = event.sequence;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path: PathBuf = args
        .next()
        .ok_or("usage: mirror_numbers TABLE_FILE [--until-caught-up]")?
        .into();
    let until_caught_up = args.next().as_deref() == Some("--until-caught-up");
    let client = common::connect().await?;
    let mut table = Table::load(&path)?;
    eprintln!(
        "{} numbers in {}, following events after {}",
        table.rows.len(),
        path.display(),
        table.after
    );

    // What the server holds now: with --until-caught-up, the mirror is done once it holds each
    // number at least at this version.
    let target: BTreeMap<String, pb::PhoneNumber> = if until_caught_up {
        client
            .numbers(pb::ListNumbersRequest::default())
            .map_ok(|n| (n.number.clone(), n))
            .try_collect()
            .await?
    } else {
        BTreeMap::new()
    };
    let caught_up = |table: &Table| {
        target.iter().all(|(number, n)| {
            table
                .rows
                .get(number)
                .is_some_and(|r| r.version >= n.version)
        })
    };

    // The follower reconnects by itself and resumes after the last event it delivered.
    let mut events = std::pin::pin!(client.follow_number_events("", table.after));
    while !(until_caught_up && caught_up(&table)) {
        let Some(event) = events.next().await else {
            break;
        };
        let event = event?;
        table.apply(&event);
        // Saved after each event here; a busy mirror would save every few hundred events or
        // seconds (replaying a few events again after a crash does no harm: each one sets the
        // number as it became).
        table.save(&path)?;
        if let Some(n) = &event.phone_number {
            let kind =
                pb::NumberEventType::try_from(event.r#type).map_or("unknown", |t| t.as_str_name());
            println!("{}\t{kind}\t{}\tv{}", event.sequence, n.number, n.version);
        }
    }

    if until_caught_up {
        // The mirror agrees with what ListNumbers showed, number for number.
        for (number, n) in &target {
            let row = &table.rows[number];
            if row.version == n.version && *row != Row::of(n) {
                return Err(format!("{number}: mirrored {row:?}, listed {n:?}").into());
            }
        }
        let assigned = table
            .rows
            .values()
            .filter(|r| r.state == "NUMBER_STATE_ASSIGNED")
            .count();
        println!(
            "caught up: {} numbers ({assigned} assigned) after event {}",
            table.rows.len(),
            table.after
        );
    }
    Ok(())
}

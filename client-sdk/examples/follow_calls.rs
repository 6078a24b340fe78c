//! Follows the carrier's call-record feed from a saved position: prints each record as it
//! arrives and saves its `feed_sequence` after handling it, so that a restart of this program
//! (or of the server) carries on after the last record handled, missing and repeating nothing.
//!
//! ```text
//! OCX_KEY_FILE=ocx-data/demo-carrier.key \
//!   cargo run -p ocx-client --example follow_calls -- calls.position [--limit N]
//! ```
//!
//! Runs until stopped; `--limit N` stops after N records.

mod common;

use std::path::PathBuf;

use futures_util::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let position: PathBuf = args
        .next()
        .ok_or("usage: follow_calls POSITION_FILE [--limit N]")?
        .into();
    let limit: Option<usize> = match (args.next().as_deref(), args.next()) {
        (Some("--limit"), Some(n)) => Some(n.parse()?),
        (None, _) => None,
        _ => return Err("usage: follow_calls POSITION_FILE [--limit N]".into()),
    };
    let client = common::connect().await?;

    // Where the last run stopped (0: from the first record).
    let after: i64 = match std::fs::read_to_string(&position) {
        Ok(text) => text.trim().parse()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e.into()),
    };
    eprintln!("following call records after feed sequence {after}");

    // The follower reconnects by itself (a server restart, a network blip) and resumes after
    // the last record it delivered; an empty carrier id means the key's own carrier.
    let mut feed = std::pin::pin!(client.follow_call_records("", after));
    let mut handled = 0;
    while let Some(record) = feed.next().await {
        let record = record?;
        let duration = record.duration.map_or(0, |d| d.seconds);
        let quality = ocx_client::pb::QualityVerdict::try_from(record.quality)
            .map_or("unknown", |q| q.as_str_name());
        println!(
            "{}\t{}\tv{}\t{} -> {}\t{duration} s\t{quality}",
            record.feed_sequence,
            record.call_id,
            record.version,
            record.caller_number,
            record.callee_number,
        );
        // Handled: only now is the position saved (a crash before this line sees the record
        // again on the next run, never loses it).
        common::save(&position, &record.feed_sequence.to_string())?;
        handled += 1;
        if limit.is_some_and(|n| handled >= n) {
            break;
        }
    }
    eprintln!("handled {handled} records");
    Ok(())
}

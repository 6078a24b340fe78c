//! Crash loop: the real server binary is killed with SIGKILL at random moments while call
//! records and duration reports stream in, and started again, 20 times (set
//! `OCX_CRASH_KILLS=200` for the longer run). A client resends whatever was not acknowledged,
//! as a real one would. After every kill:
//! - `PRAGMA integrity_check` is `ok`;
//! - every acknowledged record and report is stored, exactly once.
//!
//! At the end, sending everything again adds nothing.
//!
//! The moments are random but repeatable: the seed is printed, and `OCX_CRASH_SEED` replays a
//! run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::OCX_SERVER;
use futures_util::{StreamExt, TryStreamExt, stream};
use ocx_client::{Client, pb};
use ocx_testkit::process::key;
use ocx_testkit::sample::{CallRecordGenerator, Line, Rng, report_for};
use ocx_testkit::seed_carrier;

const TENANT: &str = "1b2c3d4e-0000-4000-8000-000000000004";
const CARRIER: &str = "loop-tel";
/// Records (and reports) per batch.
const BATCH: usize = 50;
/// Batches of each kind sent in a round before it is killed (at most).
const PER_ROUND: usize = 12;

/// What the database holds: call ids and report ids, each with how many rows carry it.
fn stored(db: &Path) -> (BTreeMap<String, i64>, BTreeMap<String, i64>) {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
            .expect("open the database");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity check");
    assert_eq!(check, "ok", "integrity check after a kill");
    let counts = |sql: &str| -> BTreeMap<String, i64> {
        let mut statement = conn.prepare(sql).expect("prepare");
        statement
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    (
        counts("SELECT call_id, count(*) FROM call_records GROUP BY call_id"),
        counts("SELECT record_id, count(*) FROM call_durations GROUP BY record_id"),
    )
}

/// Platform and carrier clients on a fresh server process.
async fn clients(endpoint: String, dir: &Path, carrier_key: &str) -> (Client, Client) {
    let platform = Client::connect(endpoint, key(&dir.join("platform.key")))
        .await
        .expect("connect");
    let carrier = platform.with_key(carrier_key).expect("carrier client");
    (platform, carrier)
}

#[tokio::test]
async fn sigkill_at_random_moments_loses_and_repeats_nothing() {
    let kills: usize = std::env::var("OCX_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("OCX_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("crash loop: {kills} kills, OCX_CRASH_SEED={seed}");
    let mut rng = Rng::new(seed);

    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("ocx.db");
    let (server, endpoint) = OCX_SERVER.start(dir.path(), false);
    let platform = Client::connect(endpoint, key(&dir.path().join("platform.key")))
        .await
        .expect("connect");
    let (carrier_key, numbers) = seed_carrier(&platform, CARRIER, TENANT, "+4420793", 20).await;
    drop(server);
    let lines = Line::all(TENANT, &numbers);
    let mut generator = CallRecordGenerator::new(seed, lines, 1_790_000_000);

    // Everything ever sent, and what is still unacknowledged (to resend).
    let mut all_records: Vec<Vec<pb::CallRecord>> = Vec::new();
    let mut all_reports: Vec<Vec<pb::CallDurationReport>> = Vec::new();
    let mut acked_records: BTreeSet<String> = BTreeSet::new();
    let mut acked_reports: BTreeSet<String> = BTreeSet::new();
    let mut pending_records: Vec<Vec<pb::CallRecord>> = Vec::new();
    let mut pending_reports: Vec<Vec<pb::CallDurationReport>> = Vec::new();

    for round in 0..=kills {
        let last = round == kills;
        // This round's batches: the unacknowledged ones first, then new ones.
        while pending_records.len() < PER_ROUND {
            let batch: Vec<pb::CallRecord> = (0..BATCH).map(|_| generator.next_record()).collect();
            let reports = batch
                .iter()
                .map(|r| report_for(r, format!("report-{}", r.call_id)))
                .collect::<Vec<_>>();
            all_records.push(batch.clone());
            all_reports.push(reports.clone());
            pending_records.push(batch);
            pending_reports.push(reports);
        }
        let (mut server, endpoint) = OCX_SERVER.start(dir.path(), false);
        let (platform, carrier) = clients(endpoint, dir.path(), &carrier_key).await;
        let records = std::mem::take(&mut pending_records);
        let reports = std::mem::take(&mut pending_reports);
        let mut record_acks = Box::pin(
            platform
                .ingest_call_records(stream::iter(records.clone()))
                .await
                .expect("ingest"),
        );
        let mut report_acks = Box::pin(
            carrier
                .upload_call_durations("", stream::iter(reports.clone()))
                .await
                .expect("upload"),
        );
        // Kill after a random number of acknowledgements (of either kind), possibly none.
        let kill_after = if last {
            usize::MAX
        } else {
            rng.below(2 * PER_ROUND as u64) as usize
        };
        let (mut seen, mut records_done, mut reports_done) = (0, false, false);
        let mut record_ok = vec![false; records.len()];
        let mut report_ok = vec![false; reports.len()];
        while seen < kill_after && !(records_done && reports_done) {
            tokio::select! {
                ack = record_acks.next(), if !records_done => match ack {
                    Some(Ok(ack)) => {
                        let i = (ack.batch_id - 1) as usize;
                        assert_eq!(ack.rejected_count, 0);
                        record_ok[i] = true;
                        acked_records.extend(records[i].iter().map(|r| r.call_id.clone()));
                        seen += 1;
                    }
                    Some(Err(e)) => panic!("ingest failed without a kill: {e:?}"),
                    None => records_done = true,
                },
                ack = report_acks.next(), if !reports_done => match ack {
                    Some(Ok(ack)) => {
                        let i = (ack.batch_id - 1) as usize;
                        assert_eq!(ack.rejected_count, 0);
                        report_ok[i] = true;
                        acked_reports.extend(reports[i].iter().map(|r| r.record_id.clone()));
                        seen += 1;
                    }
                    Some(Err(e)) => panic!("upload failed without a kill: {e:?}"),
                    None => reports_done = true,
                },
            }
        }
        server.0.kill().expect("SIGKILL");
        server.0.wait().expect("reap");
        drop((record_acks, report_acks, platform, carrier));
        pending_records = records
            .into_iter()
            .zip(record_ok)
            .filter(|(_, ok)| !ok)
            .map(|(b, _)| b)
            .collect();
        pending_reports = reports
            .into_iter()
            .zip(report_ok)
            .filter(|(_, ok)| !ok)
            .map(|(b, _)| b)
            .collect();

        let (call_ids, report_ids) = stored(&db);
        for id in &acked_records {
            assert_eq!(call_ids.get(id), Some(&1), "round {round}: record {id}");
        }
        for id in &acked_reports {
            assert_eq!(report_ids.get(id), Some(&1), "round {round}: report {id}");
        }
        assert!(call_ids.values().all(|&n| n == 1), "a record stored twice");
        assert!(
            report_ids.values().all(|&n| n == 1),
            "a report stored twice"
        );
    }
    assert!(
        pending_records.is_empty() && pending_reports.is_empty(),
        "the last round, never killed, acknowledged everything"
    );

    // Everything again: nothing new.
    let (_server, endpoint) = OCX_SERVER.start(dir.path(), false);
    let (platform, carrier) = clients(endpoint, dir.path(), &carrier_key).await;
    let acks: Vec<pb::IngestCallRecordsResponse> = platform
        .ingest_call_records(stream::iter(all_records.clone()))
        .await
        .expect("ingest")
        .try_collect()
        .await
        .expect("acks");
    assert_eq!(acks.iter().map(|a| a.created_count).sum::<i32>(), 0);
    let acks: Vec<pb::UploadCallDurationsResponse> = carrier
        .upload_call_durations("", stream::iter(all_reports.clone()))
        .await
        .expect("upload")
        .try_collect()
        .await
        .expect("acks");
    assert_eq!(acks.iter().map(|a| a.created_count).sum::<i32>(), 0);
    let (call_ids, report_ids) = stored(&db);
    assert_eq!(
        call_ids.len(),
        all_records.iter().map(Vec::len).sum::<usize>()
    );
    assert_eq!(
        report_ids.len(),
        all_reports.iter().map(Vec::len).sum::<usize>()
    );
    eprintln!(
        "{} records and {} reports, each stored once, after {kills} kills",
        call_ids.len(),
        report_ids.len()
    );
}

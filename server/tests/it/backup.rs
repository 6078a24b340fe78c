//! Online backup: `ocx-server backup --to FILE` while the server ingests. The copy opens, passes
//! SQLite's integrity check, and holds every record acknowledged before the backup began; the
//! server keeps ingesting throughout; a restored copy serves those records.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Mutex};

use crate::OCX_SERVER;
use futures_util::StreamExt;
use ocx_client::{Client, pb};
use ocx_testkit::process::key;
use ocx_testkit::sample::{CallRecordGenerator, Line};
use ocx_testkit::{call_ids, seed_carrier};

const TENANT: &str = "1b2c3d4e-0000-4000-8000-000000000002";
const CARRIER: &str = "backup-tel";

#[tokio::test]
async fn a_backup_taken_during_ingest_holds_everything_acknowledged_before_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, endpoint) = OCX_SERVER.start(dir.path(), false);
    let platform = Client::connect(endpoint.clone(), key(&dir.path().join("platform.key")))
        .await
        .expect("connect");
    let (_, numbers) = seed_carrier(&platform, CARRIER, TENANT, "+4420795", 20).await;

    // An ingest stream that keeps sending batches of 100 until told to stop: the backup runs
    // while it is open and busy.
    let lines = Line::all(TENANT, &numbers);
    let generator = Arc::new(Mutex::new(CallRecordGenerator::new(
        11,
        lines,
        1_790_000_000,
    )));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sent: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let batches = {
        let (generator, sent) = (Arc::clone(&generator), Arc::clone(&sent));
        futures_util::stream::unfold(stop_rx, move |stop| {
            let (generator, sent) = (Arc::clone(&generator), Arc::clone(&sent));
            async move {
                if *stop.borrow() {
                    return None;
                }
                let batch: Vec<pb::CallRecord> = {
                    let mut g = generator.lock().expect("generator");
                    (0..100).map(|_| g.next_record()).collect()
                };
                sent.lock()
                    .expect("sent")
                    .push(batch.iter().map(|r| r.call_id.clone()).collect());
                Some((batch, stop))
            }
        })
    };
    let mut acks = Box::pin(platform.ingest_call_records(batches).await.expect("ingest"));
    let mut acknowledged = BTreeSet::new();
    let acknowledge = |acknowledged: &mut BTreeSet<String>, ack: pb::IngestCallRecordsResponse| {
        assert_eq!(ack.rejected_count, 0);
        let ids = sent.lock().expect("sent")[(ack.batch_id - 1) as usize].clone();
        acknowledged.extend(ids);
    };
    for _ in 0..20 {
        acknowledge(
            &mut acknowledged,
            acks.next().await.expect("an ack").expect("ack"),
        );
    }
    let before_backup = acknowledged.clone();

    // The backup, as an operator runs it, while acknowledgements keep coming.
    let backup_path = dir.path().join("backup.db");
    let mut backup = Command::new(env!("CARGO_BIN_EXE_ocx-server"))
        .args(["--data-dir"])
        .arg(dir.path())
        .args(["backup", "--to"])
        .arg(&backup_path)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("spawn backup");
    let mut finished = tokio::task::spawn_blocking(move || backup.wait());
    let mut during = 0;
    let status = loop {
        tokio::select! {
            status = &mut finished => break status.expect("join").expect("backup status"),
            ack = acks.next() => {
                acknowledge(&mut acknowledged, ack.expect("the ingest went on").expect("ack"));
                during += 1;
            }
        }
    };
    assert!(status.success(), "backup failed: {status}");
    stop_tx.send(true).expect("stop");
    while let Some(ack) = acks.next().await {
        acknowledge(&mut acknowledged, ack.expect("ack"));
    }
    eprintln!(
        "{} acknowledged before the backup, {during} batches acknowledged while it ran, {} in all",
        before_backup.len(),
        acknowledged.len()
    );

    // The copy: whole, and holding everything acknowledged before it began.
    let copy = rusqlite::Connection::open_with_flags(
        &backup_path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("the backup opens");
    let check: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity check");
    assert_eq!(check, "ok");
    let mut statement = copy
        .prepare("SELECT call_id FROM call_records")
        .expect("select");
    let in_copy: BTreeSet<String> = statement
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("ids");
    let missing: Vec<_> = before_backup.difference(&in_copy).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged records missing",
        missing.len()
    );
    assert!(
        in_copy.is_subset(&acknowledged),
        "the copy holds a record never acknowledged"
    );
    drop(statement);
    drop(copy);

    // A second backup to the same file is refused; the first is untouched.
    let refused = Command::new(env!("CARGO_BIN_EXE_ocx-server"))
        .args(["--data-dir"])
        .arg(dir.path())
        .args(["backup", "--to"])
        .arg(&backup_path)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run backup");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Restore, as the README says: stop, replace the database (and drop its WAL), start.
    drop(server);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("ocx.db{suffix}")));
    }
    std::fs::copy(&backup_path, dir.path().join("ocx.db")).expect("restore");
    let (_server, endpoint) = OCX_SERVER.start(dir.path(), false);
    let platform = Client::connect(endpoint, key(&dir.path().join("platform.key")))
        .await
        .expect("connect to the restored server");
    let served: BTreeSet<String> = call_ids(&platform, CARRIER).await.into_iter().collect();
    assert_eq!(served, in_copy, "the restored server serves the copy");
}

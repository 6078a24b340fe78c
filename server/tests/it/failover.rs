//! Failover of the database under two `ocx-server` replicas: a PostgreSQL primary with a
//! synchronous streaming standby (`scripts/pg-failover.sh`), both replicas on the multi-host URL
//! (`postgres://h1:p1,h2:p2/db?target_session_attrs=read-write`). Writers go through both
//! replicas at once (call-record ingest, number assignments, duration uploads and reports), and
//! a carrier follows the call-record feed on one replica and its number events on the other. At
//! a seeded moment (after so many ingest batches and assignments were acknowledged) the
//! primary's postmaster and every backend are SIGKILLed and the standby is promoted; the
//! writers retry what was not acknowledged, every 10 ms, through the same replicas. Then:
//! - every write is stored exactly once: each call record and report once, and each number's
//!   version counts its acknowledged assignments (a doubled one would count twice);
//! - the database's feed and number events run 1..=n without a gap, and the followers saw
//!   exactly them, once each, in order;
//! - resending everything creates nothing: no record, report or number version more;
//! - it prints the time from the kill to the first write acknowledged again.
//!
//! Runs where the PostgreSQL tests run (`OCX_TEST_POSTGRES` set: the machine has PostgreSQL's
//! programs). `OCX_FAILOVER_SEEDS` (comma-separated; default `1`, CI's short run) runs one
//! failover per seed, each on a fresh pair of servers:
//!
//!   OCX_FAILOVER_SEEDS=1,2,3,4,5 cargo test -p ocx-server --test it failover -- --nocapture

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt, stream};
use ocx_client::{Client, pb};
use ocx_testkit::postgres::TestPostgres;
use ocx_testkit::process::key;
use ocx_testkit::sample::{CallRecordGenerator, Line};
use ocx_testkit::seed_carrier;
use tokio::sync::watch;

use crate::OCX_SERVER;
use crate::replicas::{
    STORED_EVENTS, STORED_RECORDS, Seen, assert_gapless, collect, event_entry, record_entry,
    reports_for, stored,
};

const TENANT: &str = "1b2c3d4e-0000-4000-8000-00000000000f";
const CARRIER: &str = "failover-tel";
/// Numbers assigned over and over.
const NUMBERS: u32 = 8;
/// Records per ingest batch, and batches in all (half through each replica).
const BATCH: usize = 20;
const BATCHES: usize = 40;
/// Number assignments in all (half through each replica).
const ASSIGNMENTS: usize = 60;
/// The longest any one write may take to be acknowledged, failover included, and any other
/// wait.
const BOUND: Duration = Duration::from_secs(60);
/// One attempt of a write: a request that hangs on a connection to the dead primary is given
/// up after this and sent again.
const ATTEMPT: Duration = Duration::from_secs(5);
/// The pause between two attempts of a write that failed.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// The primary and its standby, stopped and removed on drop.
struct Cluster {
    dir: String,
    url: String,
}

impl Cluster {
    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-failover.sh")
    }

    fn run(args: &[&str]) -> String {
        let out = std::process::Command::new("bash")
            .arg(Self::script())
            .args(args)
            .output()
            .expect("run scripts/pg-failover.sh");
        assert!(
            out.status.success(),
            "pg-failover.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn start() -> Cluster {
        let exports = Cluster::run(&["start"]);
        let value = |name: &str| {
            exports
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .map(|v| v.trim_matches('\'').to_owned())
                .unwrap_or_else(|| panic!("pg-failover.sh start printed no {name}: {exports}"))
        };
        Cluster {
            dir: value("OCX_FAILOVER_DIR"),
            url: value("OCX_FAILOVER_URL"),
        }
    }

    /// Runs `verb` on the cluster, off the runtime's threads (the writers keep going).
    async fn verb(&self, verb: &'static str) {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || Cluster::run(&[verb, &dir]))
            .await
            .expect("pg-failover.sh");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(Cluster::script())
            .args(["stop", &self.dir])
            .output();
    }
}

/// The seeds to run, from `OCX_FAILOVER_SEEDS`.
fn seeds() -> Vec<u64> {
    std::env::var("OCX_FAILOVER_SEEDS")
        .unwrap_or_else(|_| "1".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("OCX_FAILOVER_SEEDS: comma-separated integers")
        })
        .collect()
}

/// A small deterministic generator (splitmix64): the seeded moments.
fn draw(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(n + 1));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// When the attempt that was acknowledged was sent, and when its answer came.
#[derive(Debug, Clone, Copy)]
struct Acked {
    sent: Instant,
    at: Instant,
}

/// Runs `attempt` until it succeeds (each attempt at most [`ATTEMPT`], then [`RETRY_PAUSE`]),
/// for at most [`BOUND`]; the answer, and when the attempt that got it was sent and answered.
async fn until_acknowledged<T, F, Fut>(what: &str, attempt: F) -> (T, Acked)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        let sent = Instant::now();
        let error = match tokio::time::timeout(ATTEMPT, attempt()).await {
            Ok(Ok(answer)) => {
                let at = Instant::now();
                return (answer, Acked { sent, at });
            }
            Ok(Err(e)) => e,
            Err(_) => format!("no answer within {ATTEMPT:?}"),
        };
        assert!(
            started.elapsed() < BOUND,
            "{what} not acknowledged within {BOUND:?}: {error}"
        );
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// One ingest stream of one batch; its acknowledgement.
async fn ingest_once(
    client: &Client,
    batch: Vec<pb::CallRecord>,
) -> Result<pb::IngestCallRecordsResponse, String> {
    let acks = client
        .ingest_call_records(stream::iter(vec![batch]))
        .await
        .map_err(|e| format!("{e:?}"))?;
    match Box::pin(acks).next().await {
        Some(Ok(ack)) => Ok(ack),
        Some(Err(e)) => Err(format!("{e:?}")),
        None => Err("the stream ended with no acknowledgement".into()),
    }
}

/// Ingests `batches`, alternating replicas, each until acknowledged; publishes how many are.
/// The acknowledgements and when they came.
async fn ingest_all(
    replicas: [Client; 2],
    batches: Vec<Vec<pb::CallRecord>>,
    progress: watch::Sender<usize>,
) -> Vec<(pb::IngestCallRecordsResponse, Acked)> {
    let mut acks = Vec::new();
    for (i, batch) in batches.into_iter().enumerate() {
        let client = &replicas[i % 2];
        let ack = until_acknowledged(&format!("ingest batch {i}"), || {
            ingest_once(client, batch.clone())
        })
        .await;
        assert_eq!(ack.0.rejected_count, 0, "{:?}", ack.0);
        acks.push(ack);
        progress.send_replace(i + 1);
    }
    acks
}

/// The `k`th assignment: a number and the SIP URI it gets, and its request id (the same for
/// every attempt, so a retry of one that was stored but not acknowledged changes nothing).
fn assignment(numbers: &[String], k: usize) -> pb::AssignNumberRequest {
    pb::AssignNumberRequest {
        number: numbers[k % numbers.len()].clone(),
        tenant_id: TENANT.into(),
        assignment_type: pb::AssignmentType::User.into(),
        sip_uri: format!("sip:user{k}@failover.example"),
        request_id: format!("00000000-0000-4000-8000-{k:012}"),
        ..Default::default()
    }
}

/// Makes the assignments, alternating replicas, each until acknowledged; publishes how many
/// are. The answers and when they came.
async fn assign_all(
    replicas: [Client; 2],
    requests: Vec<pb::AssignNumberRequest>,
    progress: watch::Sender<usize>,
) -> Vec<(pb::PhoneNumber, Acked)> {
    let mut answers = Vec::new();
    for (k, request) in requests.into_iter().enumerate() {
        let client = &replicas[k % 2];
        let answer = until_acknowledged(&format!("assignment {k}"), || {
            let (client, request) = (client.clone(), request.clone());
            async move {
                client
                    .assign_number(request)
                    .await
                    .map_err(|e| format!("{e:?}"))
            }
        })
        .await;
        answers.push(answer);
        progress.send_replace(k + 1);
    }
    answers
}

/// How a batch of duration reports was answered: (created, unchanged, rejected).
type Reported = (i32, i32, i32);

/// Sends the `i`th batch of duration reports once: even batches over `UploadCallDurations`
/// (the batch alone on the stream), odd ones with `ReportCallDurations`.
async fn report_once(
    client: &Client,
    i: usize,
    batch: Vec<pb::CallDurationReport>,
) -> Result<Reported, String> {
    if i % 2 == 1 {
        let answer = client
            .report_call_durations(CARRIER, batch)
            .await
            .map_err(|e| format!("{e:?}"))?;
        return Ok((
            answer.created_count,
            answer.unchanged_count,
            answer.rejected_count,
        ));
    }
    let acks = client
        .upload_call_durations(CARRIER, stream::iter(vec![batch]))
        .await
        .map_err(|e| format!("{e:?}"))?;
    match Box::pin(acks).next().await {
        Some(Ok(ack)) => Ok((ack.created_count, ack.unchanged_count, ack.rejected_count)),
        Some(Err(e)) => Err(format!("{e:?}")),
        None => Err("the stream ended with no acknowledgement".into()),
    }
}

/// Uploads and reports the durations, alternating replicas, each batch until acknowledged,
/// and each once its calls' batch was ingested (as a carrier reports calls that happened): so
/// the reports too are under way when the primary dies. Publishes how many are acknowledged.
async fn report_all(
    replicas: [Client; 2],
    batches: Vec<Vec<pb::CallDurationReport>>,
    mut ingested: watch::Receiver<usize>,
    progress: watch::Sender<usize>,
) -> Vec<(Reported, Acked)> {
    let mut answers = Vec::new();
    for (i, batch) in batches.into_iter().enumerate() {
        ingested
            .wait_for(|n| *n > i)
            .await
            .expect("the ingest writer publishes its progress");
        let client = &replicas[i % 2];
        let answer = until_acknowledged(&format!("report batch {i}"), || {
            report_once(client, i, batch.clone())
        })
        .await;
        assert_eq!(answer.0.2, 0, "batch {i}: none rejected");
        answers.push(answer);
        progress.send_replace(i + 1);
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_survive_a_failover_to_the_synchronous_standby_exactly_once() {
    if TestPostgres::from_env().is_none() {
        return;
    }
    for seed in seeds() {
        failover(seed).await;
    }
}

async fn failover(seed: u64) {
    let cluster = Cluster::start();
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let args = ["--database", cluster.url.as_str()];
    let (_replica_a, endpoint_a, _) = OCX_SERVER.start_configured(dir_a.path(), &args, &[]);
    let platform_key = key(&dir_a.path().join("platform.key"));
    let (_replica_b, endpoint_b, _) = OCX_SERVER.start_configured(dir_b.path(), &args, &[]);
    // The writers retry by themselves, at once: no retry budget in the SDK, whose backoff
    // would be part of the figure.
    let connect = |endpoint: String| async {
        Client::connect(endpoint, &platform_key)
            .await
            .expect("connect")
            .with_retry_budget(Duration::ZERO)
    };
    let platform = [connect(endpoint_a).await, connect(endpoint_b).await];
    let (carrier_key, numbers) =
        seed_carrier(&platform[0], CARRIER, TENANT, "+4420795", NUMBERS).await;
    let carrier = [
        platform[0].with_key(&carrier_key).expect("client"),
        platform[1].with_key(&carrier_key).expect("client"),
    ];
    // B learns of the key through the database's notification.
    until_acknowledged("the carrier key on B", || async {
        carrier[1]
            .get_number(CARRIER, &numbers[0])
            .await
            .map_err(|e| format!("{e:?}"))
    })
    .await;

    // The follower: the call-record feed on A, number events on B, from the start.
    let (records_target_tx, records_target) = watch::channel(i64::MAX);
    let (events_target_tx, events_target) = watch::channel(i64::MAX);
    let records_seen = collect(
        carrier[0].follow_call_records(CARRIER, 0),
        record_entry,
        records_target,
        None,
    );
    let events_seen = collect(
        carrier[1].follow_number_events(CARRIER, 0),
        event_entry,
        events_target,
        None,
    );

    // The writes.
    let lines = Line::all(TENANT, &numbers);
    let mut generator = CallRecordGenerator::new(seed, lines, 1_790_000_000);
    let batches: Vec<Vec<pb::CallRecord>> = (0..BATCHES)
        .map(|_| (0..BATCH).map(|_| generator.next_record()).collect())
        .collect();
    let reports: Vec<Vec<pb::CallDurationReport>> =
        batches.iter().map(|b| reports_for(b)).collect();
    let assignments: Vec<pb::AssignNumberRequest> =
        (0..ASSIGNMENTS).map(|k| assignment(&numbers, k)).collect();
    let (ingested_tx, mut ingested) = watch::channel(0);
    let (assigned_tx, mut assigned) = watch::channel(0);
    let (reported_tx, reported) = watch::channel(0);
    let ingest = tokio::spawn(ingest_all(platform.clone(), batches.clone(), ingested_tx));
    let assign = tokio::spawn(assign_all(
        platform.clone(),
        assignments.clone(),
        assigned_tx,
    ));
    let report = tokio::spawn(report_all(
        carrier.clone(),
        reports.clone(),
        ingested.clone(),
        reported_tx,
    ));

    // The seeded moment: so many ingest batches and assignments acknowledged.
    let after_batches = 3 + (draw(seed, 0) % (BATCHES as u64 / 2)) as usize;
    let after_assignments = 3 + (draw(seed, 1) % (ASSIGNMENTS as u64 / 2)) as usize;
    tokio::time::timeout(BOUND, ingested.wait_for(|n| *n >= after_batches))
        .await
        .expect("ingest batches acknowledged before the kill")
        .expect("ingest progress");
    tokio::time::timeout(BOUND, assigned.wait_for(|n| *n >= after_assignments))
        .await
        .expect("assignments acknowledged before the kill")
        .expect("assignment progress");
    let (batches_before, assignments_before, reports_before) =
        (*ingested.borrow(), *assigned.borrow(), *reported.borrow());
    let killing = Instant::now();
    cluster.verb("kill-primary").await;
    let killed = Instant::now();
    cluster.verb("promote").await;
    let promoted = Instant::now();

    let ingest = ingest.await.expect("ingest");
    let assign = assign.await.expect("assignments");
    let report = report.await.expect("reports");
    assert!(
        batches_before < BATCHES && assignments_before < ASSIGNMENTS && reports_before < BATCHES,
        "the kill came while writes were still to be made ({batches_before} batches, \
         {assignments_before} assignments, {reports_before} report batches acknowledged)"
    );
    // The first write sent after the kill and acknowledged: one committed before the kill can
    // have its answer arrive after it, and says nothing of the new primary.
    let first_again = ingest
        .iter()
        .map(|a| a.1)
        .chain(assign.iter().map(|a| a.1))
        .chain(report.iter().map(|a| a.1))
        .filter(|a| a.sent > killed)
        .map(|a| a.at)
        .min()
        .expect("writes sent after the kill and acknowledged");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    // pg_ctl notices the promotion a moment after the new primary takes writes, so a write
    // may be acknowledged "before" it returns: signed.
    let after_promotion = if first_again >= promoted {
        ms(first_again - promoted)
    } else {
        -ms(promoted - first_again)
    };
    eprintln!(
        "failover seed {seed}: killed after {batches_before} of {BATCHES} ingest batches and \
         {assignments_before} of {ASSIGNMENTS} assignments (seeded: at least {after_batches} and \
         {after_assignments}), {reports_before} of {BATCHES} report batches; kill {:.0} ms; promoted {:.0} ms \
         after the kill; first write acknowledged again {:.0} ms after the kill ({:.0} ms after \
         the promotion)",
        ms(killed - killing),
        ms(promoted - killed),
        ms(first_again - killed),
        after_promotion,
    );

    // Exactly once: every record and report once, each number's version counts its
    // acknowledged assignments.
    let records = stored(&cluster.url, STORED_RECORDS, CARRIER).await;
    let events = stored(&cluster.url, STORED_EVENTS, CARRIER).await;
    assert_gapless("the call-record feed in the database", &records);
    assert_gapless("number events in the database", &events);
    let sent: Vec<String> = batches
        .iter()
        .flatten()
        .map(|r| r.call_id.clone())
        .collect();
    let mut stored_ids: Vec<String> = records.iter().map(|r| r.1.clone()).collect();
    stored_ids.sort();
    let mut sent_sorted = sent.clone();
    sent_sorted.sort();
    assert_eq!(stored_ids, sent_sorted, "each record sent is stored once");
    let created: i32 = ingest.iter().map(|a| a.0.created_count).sum();
    assert!(
        created <= sent.len() as i32,
        "acknowledgements never claim more records than were sent"
    );
    let mut report_ids: Vec<String> = carrier[0]
        .call_durations(pb::ListCallDurationsRequest {
            carrier_id: CARRIER.into(),
            page_size: 1000,
            ..Default::default()
        })
        .map_ok(|d| d.record_id)
        .try_collect()
        .await
        .expect("list reports");
    report_ids.sort();
    let mut reported: Vec<String> = reports
        .iter()
        .flatten()
        .map(|r| r.record_id.clone())
        .collect();
    reported.sort();
    assert_eq!(report_ids, reported, "each report sent is stored once");
    let versions = number_versions(&platform[0], &numbers).await;
    for (i, number) in numbers.iter().enumerate() {
        let made: Vec<&pb::PhoneNumber> = assign
            .iter()
            .map(|a| &a.0)
            .filter(|n| n.number == *number)
            .collect();
        let last = made.last().expect("each number was assigned");
        assert_eq!(
            versions[i],
            (1 + made.len() as i64, last.sip_uri.clone()),
            "{number}: one version per acknowledged assignment, the last one's SIP URI"
        );
    }

    // The follower saw exactly the database's sequences.
    records_target_tx.send_replace(records.len() as i64);
    events_target_tx.send_replace(events.len() as i64);
    let within = |task: tokio::task::JoinHandle<Seen>| async move {
        tokio::time::timeout(BOUND, task)
            .await
            .expect("a follower reached the head")
            .expect("follower")
    };
    assert_eq!(
        within(records_seen).await,
        records,
        "the call-record feed, followed through the failover, is the database's: once each, in order"
    );
    assert_eq!(
        within(events_seen).await,
        events,
        "number events, followed through the failover, are the database's: once each, in order"
    );

    // Resending everything creates nothing.
    for batch in &batches {
        let ack = ingest_once(&platform[1], batch.clone())
            .await
            .expect("resend a batch");
        assert_eq!(
            (ack.created_count, ack.revised_count, ack.unchanged_count),
            (0, 0, BATCH as i32),
            "a resent batch is unchanged"
        );
    }
    for (i, batch) in reports.iter().enumerate() {
        let answer = report_once(&carrier[(i + 1) % 2], i, batch.clone())
            .await
            .expect("resend reports");
        assert_eq!(
            answer,
            (0, batch.len() as i32, 0),
            "resent reports are unchanged"
        );
    }
    for (k, request) in assignments.iter().enumerate() {
        let again = platform[k % 2]
            .assign_number(request.clone())
            .await
            .expect("resend an assignment");
        assert_eq!(
            again, assign[k].0,
            "a resent assignment answers as the first did"
        );
    }
    assert_eq!(number_versions(&platform[0], &numbers).await, versions);
    assert_eq!(stored(&cluster.url, STORED_RECORDS, CARRIER).await, records);
    assert_eq!(stored(&cluster.url, STORED_EVENTS, CARRIER).await, events);
}

/// Each number's (version, SIP URI) as the store has it.
async fn number_versions(platform: &Client, numbers: &[String]) -> Vec<(i64, String)> {
    let mut versions = Vec::new();
    for number in numbers {
        let n = platform.get_number(CARRIER, number).await.expect("number");
        versions.push((n.version, n.sip_uri));
    }
    versions
}

//! What only PostgreSQL has: several replicas on one database. How call-record ingest scales
//! from one replica to two, and the feed's latency when the records are ingested through one
//! replica and delivered by the other (the LISTEN/NOTIFY wake-up between them).

use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{StreamExt, stream};
use ocx_api::pb;
use ocx_client::Client;

use crate::figures::{Figure, Target, human};
use crate::harness::{Backend, Server, record_batches, setup};

/// The carrier that half of the records name in the two-carrier runs.
const SECOND_CARRIER: &str = "bench-tel-2";

/// Ingests `batches` over one stream per client, all at once; the time to the last
/// acknowledgement of all of them.
async fn ingest_on(
    platforms: &[Client],
    batches: Vec<Vec<pb::CallRecord>>,
) -> anyhow::Result<Duration> {
    let records: usize = batches.iter().map(Vec::len).sum();
    let mut shares: Vec<Vec<Vec<pb::CallRecord>>> = vec![Vec::new(); platforms.len()];
    for (i, batch) in batches.into_iter().enumerate() {
        shares[i % platforms.len()].push(batch);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (platform, share) in platforms.iter().zip(shares) {
        let platform = platform.clone();
        tasks.push(tokio::spawn(async move {
            let acks = platform.ingest_call_records(stream::iter(share)).await?;
            let mut acks = std::pin::pin!(acks);
            let mut created = 0_i64;
            while let Some(ack) = acks.next().await {
                created += i64::from(ack?.created_count);
            }
            anyhow::Ok(created)
        }));
    }
    let mut created = 0;
    for task in tasks {
        created += task.await??;
    }
    let elapsed = started.elapsed();
    if created != records as i64 {
        bail!("{created} of {records} records were created");
    }
    Ok(elapsed)
}

/// CPU seconds used so far by `pid`, from /proc (user + system; 100 ticks a second, Linux's
/// USER_HZ); 0 if it cannot be read.
fn cpu_of(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name's closing parenthesis: state is the 1st, utime the 12th.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds so far of: the processes `servers`, every process named `postgres`, and this
/// one (the load generator).
fn cpu_split(servers: &[u32]) -> (f64, f64, f64) {
    let ocx = servers.iter().map(|p| cpu_of(&p.to_string())).sum();
    let mut postgres = 0.0;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "postgres" {
                postgres += cpu_of(&pid);
            }
        }
    }
    (ocx, postgres, cpu_of("self"))
}

/// Replica figures: see the module's comment.
pub async fn replicas(backend: &Backend, small: bool) -> anyhow::Result<Vec<Figure>> {
    let (records, (rate, seconds)) = if small {
        (4_000, (1_000, 2))
    } else {
        (400_000, (5_000, 10))
    };
    let dir = tempfile::tempdir()?;
    let batches: Vec<Vec<pb::CallRecord>> = record_batches(records).collect();
    let per_second = |d: Duration| records as f64 / d.as_secs_f64();

    eprintln!("ingesting {records} records: one replica, one stream ...");
    let one = Server::start(backend, &dir.path().join("a.db")).await?;
    let (platform, _) = setup(&one).await?;
    let before = cpu_split(&[one.pid()]);
    let single = ingest_on(std::slice::from_ref(&platform), batches.clone()).await?;
    let after = cpu_split(&[one.pid()]);
    drop(one);
    let cpu = (after.0 - before.0, after.1 - before.1, after.2 - before.2);

    // Two streams, on one replica or one each on two; the records of one carrier, or half of
    // them named for a second carrier (a carrier's feed is ordered, so its writes take turns).
    let mut two_streams = Vec::new();
    for carriers in [1, 2] {
        for replicas in [1, 2] {
            eprintln!(
                "ingesting {records} records: {replicas} replica(s), two streams, {carriers} carrier(s) ..."
            );
            let a = Server::start(backend, &dir.path().join("b.db")).await?;
            let (platform_a, _) = setup(&a).await?;
            let b = if replicas == 2 {
                Some(a.replica()?)
            } else {
                None
            };
            let platform_b = match &b {
                Some(b) => Client::connect(b.endpoint.clone(), b.platform_key.clone()).await?,
                None => platform_a.clone(),
            };
            let mut batches = batches.clone();
            if carriers == 2 {
                platform_a.create_carrier(SECOND_CARRIER, "Bench 2").await?;
                // Batches alternate between the streams: every other one goes to the second
                // carrier, on the second stream.
                for batch in batches.iter_mut().skip(1).step_by(2) {
                    for record in batch.iter_mut() {
                        record.carrier_id = SECOND_CARRIER.to_owned();
                    }
                }
            }
            let took = ingest_on(&[platform_a, platform_b], batches).await?;
            two_streams.push((carriers, replicas, took));
            drop((a, b));
        }
    }

    eprintln!("feed latency across replicas: ingested through A, followed on B ...");
    let a = Server::start(backend, &dir.path().join("d.db")).await?;
    let b = a.replica()?;
    let (platform_a, _) = setup(&a).await?;
    // The follower's key is made through B, so B knows it at once.
    let platform_b = Client::connect(b.endpoint.clone(), b.platform_key.clone()).await?;
    let created = platform_b
        .create_api_key(pb::CreateApiKeyRequest {
            request_id: String::new(),
            role: pb::ApiKeyRole::Carrier.into(),
            carrier_id: crate::harness::CARRIER.to_owned(),
            display_name: "bench-follower".to_owned(),
        })
        .await?;
    let carrier_b = platform_b.with_key(created.secret)?;
    let latency = crate::latency::measure(&platform_a, &carrier_b, rate, seconds)
        .await?
        .named(" [PostgreSQL, ingested through replica A, delivered by replica B]");
    drop((a, b));

    let rate_of = |d| format!("{} records/s", human(per_second(d)));
    let mut figures = vec![
        Figure::info(
            format!("ingest, 1 replica, 1 stream ({records} records) [PostgreSQL]"),
            rate_of(single),
        ),
        Figure::info(
            "CPU during that ingest: OCX / PostgreSQL / load generator, of wall × 2 cores [PostgreSQL]",
            format!(
                "{:.1} / {:.1} / {:.1} s of {:.1} s",
                cpu.0,
                cpu.1,
                cpu.2,
                single.as_secs_f64() * 2.0
            ),
        ),
    ];
    for carriers in [1, 2] {
        let took = |replicas| {
            two_streams
                .iter()
                .find(|(c, r, _)| *c == carriers && *r == replicas)
                .map_or(Duration::MAX, |t| t.2)
        };
        figures.push(Figure::info(
            format!("ingest, 1 replica, 2 streams, {carriers} carrier(s) ({records} records) [PostgreSQL]"),
            rate_of(took(1)),
        ));
        figures.push(Figure::ratio(
            format!("ingest, 2 replicas, a stream each, {carriers} carrier(s) ({records} records) [PostgreSQL; limit: 1 replica]"),
            per_second(took(2)),
            per_second(took(1)),
            "records/s",
            Target::None,
        ));
    }
    figures.push(latency);
    Ok(figures)
}

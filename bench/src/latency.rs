//! Feed latency: see `Cmd::Latency`.

use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{StreamExt, stream};
use ocx_api::pb;

use crate::figures::{Figure, Target, human};
use crate::harness::{Backend, Server, record_batches, setup};

/// Feed latency on one server: see [`Cmd::Latency`].
pub async fn run(backend: &Backend, rate: u64, seconds: u64) -> anyhow::Result<Vec<Figure>> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(backend, &dir.path().join("ocx.db")).await?;
    let (platform, carrier) = setup(&server).await?;
    let figure = measure(&platform, &carrier, rate, seconds).await?;
    drop(server);
    Ok(vec![figure.named(backend.suffix())])
}

/// Feed latency with `platform` ingesting and `carrier` following (on one server, or on two
/// replicas of one database).
pub async fn measure(
    platform: &ocx_client::Client,
    carrier: &ocx_client::Client,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<Figure> {
    const PER_BATCH: u64 = 100;
    let total = rate * seconds;
    let batches: Vec<Vec<pb::CallRecord>> = record_batches(total)
        .flatten()
        .collect::<Vec<_>>()
        .chunks(PER_BATCH as usize)
        .map(<[pb::CallRecord]>::to_vec)
        .collect();
    let batch_of: std::collections::HashMap<String, usize> = batches
        .iter()
        .enumerate()
        .flat_map(|(i, b)| b.iter().map(move |r| (r.call_id.clone(), i)))
        .collect();

    // The carrier follows the feed from the start, noting when each record arrives.
    let mut feed = Box::pin(carrier.stream_call_records("", 0).await?);
    let follower = tokio::spawn(async move {
        let mut arrivals = Vec::with_capacity(total as usize);
        while (arrivals.len() as u64) < total {
            match feed.next().await {
                Some(Ok(record)) => arrivals.push((record.call_id, Instant::now())),
                _ => break,
            }
        }
        arrivals
    });

    // The platform sends a batch every PER_BATCH / rate seconds and notes each acknowledgement.
    eprintln!("ingesting {total} records at {rate}/s while a carrier follows the feed ...");
    let interval = Duration::from_secs_f64(PER_BATCH as f64 / rate as f64);
    let paced = stream::unfold(
        (batches.into_iter(), tokio::time::interval(interval)),
        |(mut batches, mut tick)| async move {
            tick.tick().await;
            batches.next().map(|b| (b, (batches, tick)))
        },
    );
    let started = Instant::now();
    let acks = platform.ingest_call_records(paced).await?;
    let mut acks = std::pin::pin!(acks);
    let mut acked_at = Vec::new();
    while let Some(ack) = acks.next().await {
        ack?;
        acked_at.push(Instant::now());
    }
    let achieved = total as f64 / started.elapsed().as_secs_f64();
    let arrivals = tokio::time::timeout(Duration::from_secs(60), follower).await??;
    if arrivals.len() as u64 != total {
        bail!("the feed delivered {} of {total} records", arrivals.len());
    }
    let mut latencies: Vec<Duration> = arrivals
        .iter()
        .filter_map(|(call_id, at)| {
            let acked = acked_at.get(*batch_of.get(call_id)?)?;
            // A record can reach the carrier before the platform reads its acknowledgement.
            Some(at.saturating_duration_since(*acked))
        })
        .collect();
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    let (p50, p99, max) = (pick(0.5), pick(0.99), pick(1.0));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(Figure::value(
        format!(
            "feed latency, acknowledged → delivered, at {} records/s ({total} records): p50 / p99 / max",
            human(achieved)
        ),
        format!("{:.1} / {:.1} / {:.1} ms", ms(p50), ms(p99), ms(max)),
        ms(p99),
        Target::Below(50.0, "ms (p99)"),
    ))
}

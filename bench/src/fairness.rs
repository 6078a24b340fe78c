//! Fairness between carriers on long reads: carrier B's small reconciliation summary, alone
//! and while carrier A runs eight summary loops over a large period, with the server's
//! per-carrier share of the long reads (`--long-reads-per-carrier`, 2 by default) and without
//! one (a share of 1,000: what the server did before it had shares).

use std::time::{Duration, Instant};

use anyhow::Context;
use ocx_api::pb;
use ocx_client::Client;
use ocx_sample::{CallRecordGenerator, Line};

use crate::figures::{Figure, Target};
use crate::harness::{self, Server};

/// Carrier B: a second carrier with a small period.
const CARRIER_B: &str = "bench-b";
/// B's tenant.
const TENANT_B: &str = "0b0b0b0b-86f1-41af-91ab-2d7cd011db47";
/// A's summary loops.
const LOOPS: usize = 8;
/// B's summaries measured in each phase.
const SAMPLES: usize = 50;
/// What a refused loop waits (the server's RetryInfo for a carrier over its share).
const RETRY: Duration = Duration::from_secs(1);

/// Runs the comparison with A's period holding `records` calls.
pub async fn run(records: u64) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for (share, label) in [
        (None, "with the share (2)"),
        (Some(1000), "without a share"),
    ] {
        let dir = tempfile::tempdir()?;
        let server = Server::start_with_share(&dir.path().join("ocx.db"), share)?;
        let (platform, a) = harness::setup(&server).await?;
        crate::ingest::ingest_records(&platform, records).await?;
        let b = setup_b(&platform).await?;
        let period_a = summary_request(harness::START, harness::START + 365 * 86_400);
        let period_b = summary_request(harness::START, harness::START + 86_400);
        let idle = samples(&b, &period_b).await?;
        let stop = tokio::sync::watch::channel(false);
        let mut loops = Vec::new();
        for _ in 0..LOOPS {
            let (a, request, mut stop) = (a.clone(), period_a.clone(), stop.1.clone());
            loops.push(tokio::spawn(async move {
                let (mut done, mut refused) = (0u64, 0u64);
                while !*stop.borrow_and_update() {
                    match a.get_reconciliation_summary(request.clone()).await {
                        Ok(_) => done += 1,
                        Err(e) if e.code() == Some(tonic::Code::ResourceExhausted) => {
                            refused += 1;
                            tokio::time::sleep(RETRY).await;
                        }
                        Err(e) => return Err(anyhow::Error::from(e)),
                    }
                }
                Ok((done, refused))
            }));
        }
        let loaded = samples(&b, &period_b).await?;
        stop.0.send(true)?;
        let (mut done, mut refused) = (0, 0);
        for l in loops {
            let (d, r) = l.await??;
            done += d;
            refused += r;
        }
        let (ip50, imax) = p50_max(idle);
        let (lp50, lmax) = p50_max(loaded);
        figures.push(Figure::info(
            format!("B's summary alone, p50 / max [{label}]"),
            format!("{ip50:.1} / {imax:.1} ms"),
        ));
        figures.push(Figure::value(
            format!("B's summary beside A's {LOOPS} loops, p50 / max [{label}]"),
            format!("{lp50:.1} / {lmax:.1} ms (A: {done} summaries, {refused} refused)"),
            lp50,
            Target::None,
        ));
    }
    Ok(figures)
}

/// B's summary `SAMPLES` times in a row; each one's time in ms.
async fn samples(
    b: &Client,
    request: &pb::GetReconciliationSummaryRequest,
) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let started = Instant::now();
        b.get_reconciliation_summary(request.clone()).await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(times)
}

/// The median and the largest of `times`.
fn p50_max(mut times: Vec<f64>) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    let p50 = times.get(times.len() / 2).copied().unwrap_or(0.0);
    (p50, times.last().copied().unwrap_or(0.0))
}

/// A summary over `[from, to)` seconds.
fn summary_request(from: i64, to: i64) -> pb::GetReconciliationSummaryRequest {
    pb::GetReconciliationSummaryRequest {
        start_time: Some(harness::timestamp(from)),
        end_time: Some(harness::timestamp(to)),
        ..Default::default()
    }
}

/// Carrier B with its key, tenant, 10 numbers and a day of 1,000 calls; its client.
async fn setup_b(platform: &Client) -> anyhow::Result<Client> {
    platform.create_carrier(CARRIER_B, "Bench B").await?;
    let created = platform
        .create_api_key(pb::CreateApiKeyRequest {
            role: pb::ApiKeyRole::Carrier.into(),
            carrier_id: CARRIER_B.to_owned(),
            display_name: "bench".to_owned(),
            ..Default::default()
        })
        .await?;
    let b = platform.with_key(created.secret)?;
    platform
        .grant_consent(pb::GrantConsentRequest {
            carrier_id: CARRIER_B.to_owned(),
            tenant_id: TENANT_B.to_owned(),
            status: pb::ConsentStatus::Active.into(),
            ..Default::default()
        })
        .await?;
    let lines: Vec<Line> = (0..10)
        .map(|i| Line {
            tenant_id: TENANT_B.to_owned(),
            number: format!("+4420795{i:05}"),
        })
        .collect();
    b.upload_numbers(pb::UploadNumbersRequest {
        numbers: lines
            .iter()
            .map(|l| pb::NumberUpload {
                number: l.number.clone(),
                tenant_id: l.tenant_id.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
    .await?;
    let window = (harness::START, harness::START + 86_400);
    let mut calls = CallRecordGenerator::within(harness::SEED, lines, window, 1000);
    let batch: Vec<pb::CallRecord> = (0..1000).map(|_| calls.next_record()).collect();
    let acks = platform
        .ingest_call_records(futures_util::stream::iter([batch]))
        .await?;
    let mut acks = std::pin::pin!(acks);
    while let Some(ack) = futures_util::StreamExt::next(&mut acks).await {
        ack.context("B's calls")?;
    }
    Ok(b)
}

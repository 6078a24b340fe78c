//! R5: `GetNumber` at a fixed number of calls in flight, against a no-op unary method on the
//! same server, connection and load generator: see `Cmd::Requests`.
//!
//! The no-op is the standard health service's `Check` for the whole server (`service: ""`),
//! which the server mounts beside OCX's services: tonic decodes the request, reads a watch
//! value and encodes a two-byte answer. It is not behind OCX's gate, so the ratio is what the
//! gate (key check, rate limiter, stream and deadline accounting, audit event, metrics) plus
//! the handler (validation, a read on a reader thread, conversion) cost against tonic itself.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{StreamExt, TryStreamExt, stream};
use ocx_client::Client;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::figures::{Figure, Target};
use crate::harness::{Backend, NUMBERS, Server, lines, setup};

/// Rounds per method; they alternate so that drift on a shared machine hits both alike.
const ROUNDS: u32 = 3;

/// Runs `call(i)` for i in 0..requests with `concurrency` calls in flight; the elapsed time.
async fn drive<F, Fut>(requests: u64, concurrency: usize, call: F) -> anyhow::Result<Duration>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    let done = stream::iter(0..requests)
        .map(call)
        .buffer_unordered(concurrency)
        .try_fold(0_u64, |n, ()| async move { Ok(n + 1) })
        .await?;
    let elapsed = started.elapsed();
    if done != requests {
        bail!("{done} of {requests} requests completed");
    }
    Ok(elapsed)
}

pub async fn run(
    backend: &Backend,
    requests: u64,
    concurrency: usize,
) -> anyhow::Result<Vec<Figure>> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(backend, &dir.path().join("ocx.db")).await?;
    let (platform, _) = setup(&server).await?;
    // One connection for both methods: a carrier key of the benchmark's carrier on it.
    let channel: Channel = Endpoint::from_shared(server.endpoint.clone())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let created = platform
        .create_api_key(ocx_api::pb::CreateApiKeyRequest {
            request_id: String::new(),
            role: ocx_api::pb::ApiKeyRole::Carrier.into(),
            carrier_id: crate::harness::CARRIER.to_owned(),
            display_name: "bench-requests".to_owned(),
        })
        .await?;
    let carrier = Client::from_channel(channel.clone(), created.secret)?;
    let health = HealthClient::new(channel);
    let numbers: Vec<String> = lines().into_iter().map(|l| l.number).collect();

    let get_number = |i: u64| {
        let (carrier, number) = (
            carrier.clone(),
            numbers[(i % u64::from(NUMBERS)) as usize].clone(),
        );
        async move {
            let found = carrier.get_number("", &number).await?;
            if found.number != number {
                bail!("asked for {number}, got {}", found.number);
            }
            Ok(())
        }
    };
    let check = |_: u64| {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await?;
            Ok(())
        }
    };

    eprintln!(
        "{requests} GetNumber and {requests} health checks, {concurrency} in flight, {ROUNDS} rounds each ..."
    );
    // Warm both paths (connections, caches, the reader pool) before timing.
    drive(requests.min(1000), concurrency, get_number).await?;
    drive(requests.min(1000), concurrency, check).await?;
    let (mut ocx, mut noop) = (Duration::MAX, Duration::MAX);
    for _ in 0..ROUNDS {
        ocx = ocx.min(drive(requests, concurrency, get_number).await?);
        noop = noop.min(drive(requests, concurrency, check).await?);
    }
    drop(server);
    let per_second = |d: Duration| requests as f64 / d.as_secs_f64();
    Ok(vec![Figure::ratio(
        format!(
            "R5 GetNumber at {concurrency} concurrent calls (best of {ROUNDS} × {requests}){}",
            backend.suffix()
        ),
        per_second(ocx),
        per_second(noop),
        "requests/s",
        if backend.is_postgres() {
            Target::None
        } else {
            Target::RatioAtLeast(0.6)
        },
    )])
}

//! Connection limits of the real binary: the soft open-file limit is raised at start; the
//! per-connection stream limit is advertised to clients (HTTP/2
//! SETTINGS_MAX_CONCURRENT_STREAMS), so that one connection cannot hold thousands of calls; a
//! connection that starts no call within the handshake timeout, or holds none open for the
//! idle timeout, is closed; one over the connection cap is closed at once; at the open-file
//! limit the server pauses between accepts instead of spinning, and recovers.

use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crate::OCX_SERVER;
use ocx_client::Client;
use ocx_testkit::metrics::{sample, scrape, wait_for};
use ocx_testkit::process::{key, wait_for_line};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

#[test]
fn the_soft_open_file_limit_is_raised_at_start_and_logged() {
    let Ok(limits) = Command::new("prlimit")
        .arg("--nofile")
        .arg("--raw")
        .arg("--noheadings")
        .output()
    else {
        eprintln!("skipped: no prlimit on this machine");
        return;
    };
    // RESOURCE DESCRIPTION SOFT HARD UNITS
    let text = String::from_utf8_lossy(&limits.stdout).to_string();
    let hard: u64 = text
        .split_whitespace()
        .rev()
        .find_map(|w| w.parse().ok())
        .expect("the hard limit");
    if hard <= 256 {
        eprintln!("skipped: the hard limit ({hard}) leaves nothing to raise");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    // Started with a soft limit of 256 (the hard one unchanged), as a small default would.
    let mut child = Command::new("prlimit")
        .arg("--nofile=256:")
        .arg("--")
        .arg(OCX_SERVER.0)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let line = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map(|l| l.expect("log line"))
        .find(|l| l.contains("open-file limit"))
        .expect("the server logs its open-file limit before serving");
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("\"before\":\"256\""), "{line}");
    assert!(
        line.contains(&format!("\"now\":{hard}")),
        "raised to the hard limit: {line}"
    );
}

#[tokio::test]
async fn the_stream_limit_per_connection_is_advertised() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, endpoint, _) = OCX_SERVER.start_configured(
        dir.path(),
        &["--demo", "--max-concurrent-streams", "2"],
        &[],
    );
    let carrier_key = key(&dir.path().join("demo-carrier.key"));
    let addr = endpoint.trim_start_matches("http://").to_owned();

    // A plain HTTP/2 client, to see the server's SETTINGS.
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let (client, mut connection) = h2::client::handshake(tcp).await.expect("handshake");
    let watch = |client: &mut h2::client::SendRequest<bytes::Bytes>| {
        let request = http::Request::post(format!(
            "http://{addr}/ocx.v1.NumberService/WatchNumberEvents"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {carrier_key}"))
        .body(())
        .expect("request");
        let (response, mut body) = client.send_request(request, false).expect("send");
        // An empty WatchNumberEventsRequest (from the start), framed, and the end of the
        // request; the answer stream stays open.
        body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
            .expect("body");
        (response, body)
    };
    // Two feeds open, each answered (so the server's SETTINGS have arrived).
    let mut client = client.ready().await.expect("ready");
    let (first, _first_body) = watch(&mut client);
    let mut client = client.ready().await.expect("ready");
    let (second, _second_body) = watch(&mut client);
    let drive = async {
        let (a, b) = tokio::join!(first, second);
        (a.expect("first feed"), b.expect("second feed"))
    };
    let (first, second) = tokio::select! {
        answered = drive => answered,
        end = &mut connection => panic!("the connection ended: {end:?}"),
    };
    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 200);
    assert_eq!(connection.max_concurrent_send_streams(), 2, "advertised");
    // hyper refuses a stream past the limit (REFUSED_STREAM) from a client that ignores it; a
    // conforming client, like this one and every gRPC library, queues it instead.
    drop((first, second));
}

/// The metrics address a server started with `--metrics-listen 127.0.0.1:0` logged.
fn metrics_addr(lines: &Receiver<String>) -> String {
    let line = wait_for_line(lines, Duration::from_secs(10), |l| {
        l.contains(" metrics ") && l.contains("addr=")
    })
    .expect("the server logs its metrics address");
    line.split("addr=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("address")
        .to_owned()
}

/// Scrapes until `series` has `value`, for at most 10 s; panics with the last scrape if not.
async fn wait_for_sample(metrics: &str, series: &str, value: f64) {
    wait_for(metrics, series, Duration::from_secs(10), |v| {
        v == Some(value)
    })
    .await;
}

/// Reads from `tcp` until the server closes it (EOF or reset), for at most `bound`; how long
/// that took. Panics if the connection is still open at the bound.
async fn closed_within(tcp: &mut TcpStream, bound: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + bound).into(), tcp.read(&mut buf)).await {
            Err(_) => panic!("the server did not close the connection within {bound:?}"),
            Ok(Ok(0)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return started.elapsed();
            }
            Ok(Err(e)) => panic!("read: {e}"),
        }
    }
}

/// A plain HTTP/2 connection: the request half, and the task that drives the connection
/// (it ends when the connection does).
async fn h2_connect(
    addr: &str,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
    h2::PingPong,
) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, mut connection) = h2::client::handshake(tcp).await.expect("handshake");
    let ping = connection.ping_pong().expect("ping_pong");
    (client, tokio::spawn(connection), ping)
}

/// A gRPC health check on `client`, to its end (trailers).
async fn health_check(client: h2::client::SendRequest<bytes::Bytes>, addr: &str) {
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (response, mut body) = client.send_request(request, false).expect("send");
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .expect("body");
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("answered in time")
        .expect("response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    while let Some(data) = body.data().await {
        data.expect("data");
    }
    let trailers = body.trailers().await.expect("trailers").expect("trailers");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_handshake_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, endpoint, lines) = OCX_SERVER.start_watched(
        &[],
        dir.path(),
        &[
            "--handshake-timeout",
            "1s",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let metrics = metrics_addr(&lines);
    let addr = endpoint.trim_start_matches("http://");

    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let took = closed_within(&mut silent, Duration::from_secs(10)).await;
    assert!(
        took >= Duration::from_millis(900),
        "closed after {took:?}, before the 1 s handshake timeout"
    );
    let text = scrape(&metrics).await;
    assert_eq!(
        sample(
            &text,
            "ocx_connections_closed_total{reason=\"handshake_timeout\"}"
        ),
        Some(1.0),
        "{text}"
    );

    // A connection that starts a call in time is served.
    let (client, _connection, _ping) = h2_connect(addr).await;
    health_check(client, addr).await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_one_with_an_open_stream_is_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, endpoint, lines) = OCX_SERVER.start_watched(
        &[],
        dir.path(),
        &[
            "--demo",
            "--idle-timeout",
            "2s",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        &[("RUST_LOG", "info,ocx_server::conn=debug")],
    );
    let metrics = metrics_addr(&lines);
    let addr = endpoint.trim_start_matches("http://").to_owned();
    let carrier_key = key(&dir.path().join("demo-carrier.key"));

    // A connection holding a feed open, opened first: if idleness were counted from anything
    // but the end of its last call, it would be closed first.
    let (feed_client, feed_connection, mut feed_ping) = h2_connect(&addr).await;
    let mut feed_client = feed_client.ready().await.expect("ready");
    let request = http::Request::post(format!(
        "http://{addr}/ocx.v1.NumberService/WatchNumberEvents"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("authorization", format!("Bearer {carrier_key}"))
    .body(())
    .expect("request");
    let (feed, mut feed_body) = feed_client.send_request(request, false).expect("send");
    feed_body
        .send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .expect("body");
    let feed = tokio::time::timeout(Duration::from_secs(10), feed)
        .await
        .expect("answered in time")
        .expect("feed");
    assert_eq!(feed.status(), 200);

    // A connection that makes one call, then nothing (the request half is kept, so the
    // client does not close it itself).
    let (idle_client, idle_connection, _idle_ping) = h2_connect(&addr).await;
    health_check(idle_client.clone(), &addr).await;
    let ended = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), idle_connection)
        .await
        .expect("the idle connection is closed within 10 s")
        .expect("join")
        .ok();
    let took = ended.elapsed();
    assert!(
        took >= Duration::from_millis(1800),
        "closed {took:?} after its call, before the 2 s idle timeout"
    );
    wait_for_line(&lines, Duration::from_secs(5), |l| {
        l.contains("connection closed by the server") && l.contains("idle_timeout")
    })
    .expect("the close is logged at debug");

    // The feed's connection, idle longer than the timeout but for its open stream, still
    // answers a ping, and its stream is still open.
    tokio::time::timeout(Duration::from_secs(5), feed_ping.ping(h2::Ping::opaque()))
        .await
        .expect("pong in time")
        .expect("the feed's connection is open");
    assert!(!feed_connection.is_finished());
    assert!(!feed.body().is_end_stream(), "the feed is still open");
    drop((feed, feed_body, feed_client, idle_client));

    let text = scrape(&metrics).await;
    assert_eq!(
        sample(
            &text,
            "ocx_connections_closed_total{reason=\"idle_timeout\"}"
        ),
        Some(1.0),
        "{text}"
    );

    // An SDK client's idle connection is closed, and its next call simply reconnects.
    let platform = Client::connect(endpoint.clone(), key(&dir.path().join("platform.key")))
        .await
        .expect("connect");
    platform.get_retention_policy().await.expect("first call");
    wait_for_line(&lines, Duration::from_secs(10), |l| {
        l.contains("connection closed by the server") && l.contains("idle_timeout")
    })
    .expect("the SDK's idle connection is closed");
    wait_for_sample(
        &metrics,
        "ocx_connections_closed_total{reason=\"idle_timeout\"}",
        2.0,
    )
    .await;
    platform
        .get_retention_policy()
        .await
        .expect("the next call after the close");
}

#[tokio::test]
async fn a_connection_over_the_cap_is_closed_at_once_and_a_freed_place_is_reused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, endpoint, lines) = OCX_SERVER.start_watched(
        &[],
        dir.path(),
        &["--max-connections", "5", "--metrics-listen", "127.0.0.1:0"],
        &[],
    );
    let metrics = metrics_addr(&lines);
    let addr = endpoint.trim_start_matches("http://").to_owned();

    // Five connections, each served a call.
    let mut held = Vec::new();
    for _ in 0..5 {
        let (client, connection, ping) = h2_connect(&addr).await;
        health_check(client.clone(), &addr).await;
        held.push((client, connection, ping));
    }
    wait_for_sample(&metrics, "ocx_connections_open", 5.0).await;

    // The sixth is closed at once (long before the 20 s handshake timeout).
    let mut sixth = TcpStream::connect(&addr).await.expect("connect");
    let took = closed_within(&mut sixth, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(5), "{took:?}");
    let text = scrape(&metrics).await;
    assert_eq!(
        sample(&text, "ocx_connections_refused_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "ocx_connections_open"), Some(5.0), "{text}");
    wait_for_line(&lines, Duration::from_secs(5), |l| {
        l.contains("connection refused") && l.contains("--max-connections")
    })
    .expect("the refusal is logged");

    // The five are still served.
    for (_, _, ping) in &mut held {
        ping.ping(h2::Ping::opaque()).await.expect("pong");
    }

    // One closes; once the server has let it go, a new connection is served.
    let (client, connection, ping) = held.pop().expect("one");
    drop((client, ping));
    connection.abort();
    wait_for_sample(&metrics, "ocx_connections_open", 4.0).await;
    let (client, _connection, _ping) = h2_connect(&addr).await;
    health_check(client, &addr).await;
    let text = scrape(&metrics).await;
    assert_eq!(sample(&text, "ocx_connections_refused_total"), Some(1.0));
    assert_eq!(sample(&text, "ocx_connections_accepted_total"), Some(6.0));
}

/// The server's CPU time so far (user + system), from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // After the command name in parentheses: state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    let per_second: u64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100);
    Duration::from_millis(ticks * 1000 / per_second)
}

#[tokio::test]
async fn at_the_open_file_limit_the_server_waits_instead_of_spinning_and_recovers() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: no prlimit on this machine");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    // Soft and hard 128 (the server raises the soft limit to the hard one at start).
    let (server, endpoint, lines) = OCX_SERVER.start_watched(
        &["prlimit", "--nofile=128:128", "--"],
        dir.path(),
        &["--max-connections", "100000"],
        &[],
    );
    let pid = server.0.id();
    let addr = endpoint.trim_start_matches("http://").to_owned();
    // The cap is lowered to fit the limit, and says so.
    let lowered = wait_for_line(&lines, Duration::from_secs(5), |l| {
        l.contains("connection cap lowered")
    })
    .expect("the lowered cap is logged");
    assert!(lowered.contains("cap=64"), "{lowered}");

    // Descriptors taken by something else (here: the limit lowered under the running server
    // to a few above what it holds) are not counted by the cap: accepts then fail (EMFILE).
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .count();
    let limit = format!("--nofile={0}:{0}", open + 4);
    let status = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &limit])
        .status()
        .expect("prlimit");
    assert!(status.success());

    // The kernel completes these connections into the backlog whether or not they are
    // accepted.
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    let warning = wait_for_line(&lines, Duration::from_secs(10), |l| {
        l.contains("could not accept a connection")
    })
    .expect("the failed accept is logged");
    assert!(
        warning.contains("Too many open files") || warning.contains("os error 24"),
        "{warning}"
    );

    // A measurement window, not synchronisation: the server sits at the limit with the
    // backlog full; it must not spin.
    let (cpu_before, started) = (cpu_time(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu, wall) = (cpu_time(pid) - cpu_before, started.elapsed());
    let share = cpu.as_secs_f64() / wall.as_secs_f64();
    eprintln!(
        "CPU at the open-file limit: {:.1} % of one core",
        share * 100.0
    );
    assert!(share < 0.2, "{cpu:?} of CPU in {wall:?}");

    // The clients leave; the server accepts again and serves a new client.
    drop(clients);
    let platform = Client::connect(endpoint.clone(), key(&dir.path().join("platform.key")))
        .await
        .expect("connect");
    tokio::time::timeout(Duration::from_secs(30), platform.get_retention_policy())
        .await
        .expect("answered in time")
        .expect("a call after the clients left");
}

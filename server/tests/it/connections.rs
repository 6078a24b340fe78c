//! Connection limits of the real binary: the soft open-file limit is raised at start, and the
//! per-connection stream limit is advertised to clients (HTTP/2
//! SETTINGS_MAX_CONCURRENT_STREAMS), so that one connection cannot hold thousands of calls.

use std::process::{Command, Stdio};

use crate::OCX_SERVER;
use ocx_testkit::process::key;

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

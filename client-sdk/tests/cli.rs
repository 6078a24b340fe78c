//! The `ocx` command-line tool end to end, against a real server on a loopback port.

use std::process::{Command, Output};
use std::sync::Arc;

use ocx_server::store::sqlite::SqliteStore;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

/// Runs `ocx` with `key`; returns the exit code, stdout and stderr.
fn ocx(endpoint: &str, key: &str, args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_ocx"))
        .args(args)
        .env("OCX_ENDPOINT", endpoint)
        .env("OCX_KEY", key)
        .env_remove("OCX_KEY_FILE")
        .output()
        .expect("run ocx");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8");
    (status.code().unwrap_or(-1), text(stdout), text(stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn carriers_keys_consents_numbers_and_assignments_through_the_cli() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("ocx.db")).expect("store");
    let platform = ocx_server::bootstrap::ensure_platform_key(&store, None)
        .await
        .expect("bootstrap")
        .expect("key");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ocx_server::run(listener, Arc::new(store), async move {
        let _ = stopped.await;
    }));
    let e = endpoint.clone();
    // The CLI blocks; run it off the async threads.
    let run = move |key: String, args: Vec<String>| {
        let e = e.clone();
        tokio::task::spawn_blocking(move || {
            ocx(
                &e,
                &key,
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        })
    };
    let args = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();

    let (code, out, err) = run(
        platform.clone(),
        args("carriers create fabrikam-tel --name Fabrikam"),
    )
    .await
    .expect("join");
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = run(platform.clone(), args("carriers list"))
        .await
        .expect("join");
    assert_eq!(code, 0);
    assert!(out.contains("fabrikam-tel"), "{out}");

    let (code, out, err) = run(
        platform.clone(),
        args("--output json keys create --role carrier --carrier fabrikam-tel --name ops"),
    )
    .await
    .expect("join");
    assert_eq!(code, 0, "{err}");
    let created: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let carrier_key = created["secret"].as_str().expect("secret").to_owned();
    assert!(carrier_key.starts_with("ocx_"));

    let grant = format!("consents grant --carrier fabrikam-tel --tenant {TENANT} --country GB");
    let (code, _, err) = run(platform.clone(), args(&grant)).await.expect("join");
    assert_eq!(code, 0, "{err}");

    // Upload: line 4 has a bad number and line 5 a country the tenant did not consent to.
    let csv = dir.path().join("numbers.csv");
    std::fs::write(
        &csv,
        "number,tenant_id,country_code\n+442079460001,,GB\n+442079460002,,GB\n+4420x,,GB\n+12065550100,,US\n",
    )
    .expect("csv");
    let upload = format!("numbers upload {} --tenant {TENANT}", csv.display());
    let (code, out, err) = run(carrier_key.clone(), args(&upload)).await.expect("join");
    assert_eq!(code, 1, "rejected rows make the exit code 1: {out}{err}");
    assert!(out.contains("created 2"), "{out}");
    assert!(out.contains("rejected 2"), "{out}");
    assert!(out.contains("line 4"), "{out}");
    assert!(out.contains("line 5"), "{out}");

    let (code, out, _) = run(carrier_key.clone(), args("--output json numbers list"))
        .await
        .expect("join");
    assert_eq!(code, 0);
    let listed: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["number"], "+442079460001");

    let assign = format!(
        "assign +442079460001 --tenant {TENANT} --type user --sip-uri sip:gina@contoso.com"
    );
    let (code, _, err) = run(platform.clone(), args(&assign)).await.expect("join");
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = run(
        carrier_key.clone(),
        args("--output json numbers get +442079460001"),
    )
    .await
    .expect("join");
    assert_eq!(code, 0);
    let got: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(got["sip_uri"], "sip:gina@contoso.com");
    assert_eq!(got["state"], "assigned");

    // A server-side error: status, message and violations on stderr, exit code 2.
    let (code, _, err) = run(carrier_key.clone(), args("carriers list"))
        .await
        .expect("join");
    assert_eq!(code, 2);
    assert!(err.contains("PermissionDenied"), "{err}");
    let (code, _, err) = run(
        "ocx_0000000000000000_".to_owned() + &"0".repeat(64),
        args("numbers list"),
    )
    .await
    .expect("join");
    assert_eq!(code, 2);
    assert!(err.contains("Unauthenticated"), "{err}");

    // Call records: generate (platform), then list, get, export and follow (carrier).
    let generate = format!(
        "--output json calls generate --count 300 --seed 11 --tenant {TENANT} --number +442079460001 --number +442079460002 --revise-percent 10 --start 2026-01-01T00:00:00Z"
    );
    let (code, out, err) = run(platform.clone(), args(&generate)).await.expect("join");
    assert_eq!(code, 0, "{out}{err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).expect("json summary");
    assert_eq!(summary["created"], 300, "{summary}");
    assert_eq!(summary["revised"], 30, "{summary}");
    assert_eq!(summary["rejected"], 0, "{summary}");

    let (code, out, err) = run(
        carrier_key.clone(),
        args("--output json calls list --number +442079460002 --direction outbound"),
    )
    .await
    .expect("join");
    assert_eq!(code, 0, "{err}");
    let listed: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert!(!listed.is_empty());
    assert!(
        listed
            .iter()
            .all(|r| r["direction"] == "outbound" && r["caller_number"] == "+442079460002"),
        "{out}"
    );
    let call_id = listed[0]["call_id"].as_str().expect("call id").to_owned();
    let (code, out, _) = run(
        carrier_key.clone(),
        args(&format!("--output json calls get {call_id}")),
    )
    .await
    .expect("join");
    assert_eq!(code, 0);
    let got: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(got["call_id"], call_id.as_str());

    let csv_out = dir.path().join("calls.csv");
    let export = format!(
        "calls export --since 2025-12-01T00:00:00Z --until 2026-12-01T00:00:00Z --format csv --out {}",
        csv_out.display()
    );
    let (code, _, err) = run(carrier_key.clone(), args(&export)).await.expect("join");
    assert_eq!(code, 0, "{err}");
    assert!(
        err.is_empty(),
        "no progress output when stderr is not a terminal: {err}"
    );
    let mut reader = csv::Reader::from_path(&csv_out).expect("csv");
    let headers = reader.headers().expect("headers").clone();
    assert_eq!(&headers[0], "call_id");
    let rows: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>().expect("rows");
    assert_eq!(rows.len(), 300, "each call once, at its latest version");
    let (code, out, _) = run(
        carrier_key.clone(),
        args(
            "calls export --since 2025-12-01T00:00:00Z --until 2026-12-01T00:00:00Z --format jsonl",
        ),
    )
    .await
    .expect("join");
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 300);

    // follow runs until stopped; read its first lines from a child process and kill it.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ocx"))
        .args(["--output", "json", "calls", "follow", "--after", "325"])
        .env("OCX_ENDPOINT", &endpoint)
        .env("OCX_KEY", &carrier_key)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn follow");
    let stdout = child.stdout.take().expect("stdout");
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .take(5)
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .expect("join")
    .expect("lines");
    let _ = child.kill();
    let _ = child.wait();
    let seqs: Vec<i64> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["feed_sequence"]
                .as_i64()
                .expect("seq")
        })
        .collect();
    assert_eq!(seqs, [326, 327, 328, 329, 330]);

    let _ = stop.send(());
    server.await.expect("join").expect("server");
}

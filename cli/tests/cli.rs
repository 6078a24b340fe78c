//! The `ocx` command-line tool end to end, against a real server on a loopback port.

use std::process::{Command, Output};

use ocx_testkit::TestServer;

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

/// A server on a loopback port over a fresh database, that the CLI is run against.
struct Served {
    server: TestServer,
}

impl Served {
    async fn start() -> Served {
        Served {
            server: TestServer::start().await,
        }
    }

    /// Runs `ocx` with `key` and whitespace-separated `args`, off the async threads (the CLI
    /// blocks).
    async fn run(&self, key: &str, args: &str) -> (i32, String, String) {
        let (endpoint, key) = (self.server.endpoint(), key.to_owned());
        let args: Vec<String> = args.split_whitespace().map(str::to_owned).collect();
        tokio::task::spawn_blocking(move || {
            ocx(
                &endpoint,
                &key,
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        })
        .await
        .expect("join")
    }

    /// [`Served::run`] that must succeed; its stdout.
    async fn ok(&self, key: &str, args: &str) -> String {
        let (code, out, err) = self.run(key, args).await;
        assert_eq!(code, 0, "ocx {args}: {out}{err}");
        out
    }

    async fn stop(mut self) {
        self.server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn carriers_keys_consents_numbers_and_assignments_through_the_cli() {
    let served = Served::start().await;
    let (dir, endpoint, platform) = (
        served.server.dir(),
        served.server.endpoint(),
        served.server.platform_key.clone(),
    );

    let (code, out, err) = served
        .run(&platform, "carriers create fabrikam-tel --name Fabrikam")
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = served.run(&platform, "carriers list").await;
    assert_eq!(code, 0);
    assert!(out.contains("fabrikam-tel"), "{out}");

    let (code, out, err) = served
        .run(
            &platform,
            "--output json keys create --role carrier --carrier fabrikam-tel --name ops",
        )
        .await;
    assert_eq!(code, 0, "{err}");
    let created: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let carrier_key = created["secret"].as_str().expect("secret").to_owned();
    assert!(carrier_key.starts_with("ocx_"));

    let grant = format!("consents grant --carrier fabrikam-tel --tenant {TENANT} --country GB");
    let (code, _, err) = served.run(&platform, &grant).await;
    assert_eq!(code, 0, "{err}");

    // Upload: line 4 has a bad number and line 5 a country the tenant did not consent to.
    let csv = dir.join("numbers.csv");
    std::fs::write(
        &csv,
        "number,tenant_id,country_code\n+442079460001,,GB\n+442079460002,,GB\n+4420x,,GB\n+12065550100,,US\n",
    )
    .expect("csv");
    let upload = format!("numbers upload {} --tenant {TENANT}", csv.display());
    let (code, out, err) = served.run(&carrier_key, &upload).await;
    assert_eq!(code, 1, "rejected rows make the exit code 1: {out}{err}");
    assert!(out.contains("created 2"), "{out}");
    assert!(out.contains("rejected 2"), "{out}");
    assert!(out.contains("line 4"), "{out}");
    assert!(out.contains("line 5"), "{out}");

    let (code, out, _) = served.run(&carrier_key, "--output json numbers list").await;
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
    let (code, _, err) = served.run(&platform, &assign).await;
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = served
        .run(&carrier_key, "--output json numbers get +442079460001")
        .await;
    assert_eq!(code, 0);
    let got: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(got["sip_uri"], "sip:gina@contoso.com");
    assert_eq!(got["state"], "assigned");

    // A server-side error: status, message and violations on stderr, exit code 2.
    let (code, _, err) = served.run(&carrier_key, "carriers list").await;
    assert_eq!(code, 2);
    assert!(
        err.starts_with("error: PERMISSION_DENIED: ") && err.lines().count() == 1,
        "{err}"
    );
    let unknown = "ocx_0000000000000000_".to_owned() + &"0".repeat(64);
    let (code, _, err) = served.run(&unknown, "numbers list").await;
    assert_eq!(code, 2);
    assert!(err.starts_with("error: UNAUTHENTICATED: "), "{err}");

    // Call records: generate (platform), then list, get, export and follow (carrier).
    let generate = format!(
        "--output json calls generate --count 300 --seed 11 --tenant {TENANT} --number +442079460001 --number +442079460002 --revise-percent 10 --from 2026-01-01T00:00:00Z --to 2026-01-02T00:00:00Z"
    );
    let (code, out, err) = served.run(&platform, &generate).await;
    assert_eq!(code, 0, "{out}{err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).expect("json summary");
    assert_eq!(summary["created"], 300, "{summary}");
    assert_eq!(summary["revised"], 30, "{summary}");
    assert_eq!(summary["rejected"], 0, "{summary}");

    let (code, out, err) = served
        .run(
            &carrier_key,
            "--output json calls list --number +442079460002 --direction outbound",
        )
        .await;
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
    let (code, out, _) = served
        .run(&carrier_key, &format!("--output json calls get {call_id}"))
        .await;
    assert_eq!(code, 0);
    let got: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(got["call_id"], call_id.as_str());

    let csv_out = dir.join("calls.csv");
    let export = format!(
        "calls export --since 2025-12-01T00:00:00Z --until 2026-12-01T00:00:00Z --format csv --out {}",
        csv_out.display()
    );
    let (code, _, err) = served.run(&carrier_key, &export).await;
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
    let (code, out, _) = served
        .run(
            &carrier_key,
            "calls export --since 2025-12-01T00:00:00Z --until 2026-12-01T00:00:00Z --format jsonl",
        )
        .await;
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

    served.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn durations_reconciliation_and_usage_through_the_cli() {
    let served = Served::start().await;
    let platform = served.server.platform_key.clone();
    served
        .ok(&platform, "carriers create fabrikam-tel --name Fabrikam")
        .await;
    let created = served
        .ok(
            &platform,
            "--output json keys create --role carrier --carrier fabrikam-tel",
        )
        .await;
    let created: serde_json::Value = serde_json::from_str(created.trim()).expect("json");
    let carrier = created["secret"].as_str().expect("secret").to_owned();
    served
        .ok(
            &platform,
            &format!("consents grant --carrier fabrikam-tel --tenant {TENANT}"),
        )
        .await;
    let numbers = served.server.dir().join("numbers.csv");
    std::fs::write(&numbers, "number\n+442079460001\n").expect("write");
    served
        .ok(
            &carrier,
            &format!("numbers upload {} --tenant {TENANT}", numbers.display()),
        )
        .await;
    served
        .ok(
            &platform,
            &format!(
                "calls generate --count 40 --seed 3 --tenant {TENANT} --number +442079460001 \
                 --revise-percent 0 --from 2026-01-01T00:00:00Z --to 2026-01-01T06:00:00Z"
            ),
        )
        .await;
    let listed = served.ok(&carrier, "--output json calls list").await;
    let calls: Vec<serde_json::Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(calls.len(), 40);

    // The carrier's file: calls 0..30 reported (1 by correlation id only, 2 off by 5 s), three
    // bad rows, and the last ten calls not reported.
    let mut csv = String::from(
        "record_id,call_id,correlation_id,caller_number,callee_number,start_time,duration_seconds\n",
    );
    for (i, call) in calls.iter().take(30).enumerate() {
        let duration =
            call["duration_seconds"].as_f64().unwrap_or(0.0) + [0.0, 5.0][usize::from(i % 15 == 7)];
        let call_id = if i == 4 {
            ""
        } else {
            call["call_id"].as_str().expect("id")
        };
        csv.push_str(&format!(
            "fab-{i},{call_id},{},{},{},{},{duration:.3}\n",
            call["correlation_id"].as_str().expect("correlation"),
            call["caller_number"].as_str().expect("caller"),
            call["callee_number"].as_str().expect("callee"),
            call["start_time"].as_str().expect("start"),
        ));
    }
    csv.push_str("bad-time,c,,+442079460001,+14255550100,yesterday,10\n"); // line 32: not sent
    csv.push_str("bad-neg,c,,+442079460001,+14255550100,2026-01-01T00:00:00Z,-4\n"); // 33
    csv.push_str("bad-id,,,+442079460001,+14255550100,2026-01-01T00:00:00Z,4\n"); // 34
    let file = served.server.dir().join("may.csv");
    std::fs::write(&file, csv).expect("write");

    let upload = format!("--output json durations upload {}", file.display());
    let (code, out, err) = served.run(&carrier, &upload).await;
    assert_eq!(code, 1, "some rows were rejected: {out}{err}");
    assert!(err.is_empty(), "no progress bar off a terminal: {err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(
        (
            &summary["created"],
            &summary["rejected"],
            &summary["rejected_before_sending"]
        ),
        (&30.into(), &3.into(), &1.into()),
        "{summary}"
    );
    let rejects = served.server.dir().join("may.rejects.csv");
    let mut reader = csv::Reader::from_path(&rejects).expect("rejects file");
    let rows: Vec<(String, String, String)> = reader
        .records()
        .map(|r| {
            let r = r.expect("row");
            (r[0].to_owned(), r[1].to_owned(), r[8].to_owned())
        })
        .collect();
    let lines: Vec<(&str, &str)> = rows
        .iter()
        .map(|(l, id, _)| (l.as_str(), id.as_str()))
        .collect();
    assert_eq!(
        lines,
        [("32", "bad-time"), ("33", "bad-neg"), ("34", "bad-id")]
    );
    assert!(rows[0].2.starts_with("start_time"), "{rows:?}");
    assert!(rows[1].2.starts_with("duration"), "{rows:?}");
    assert!(rows[2].2.contains("call_id"), "{rows:?}");

    // Again: nothing new; the table form names the rejects file.
    let (code, out, _) = served
        .run(&carrier, &format!("durations upload {}", file.display()))
        .await;
    assert_eq!(code, 1);
    assert!(
        out.contains("created 0, unchanged 30, corrected 0, rejected 3"),
        "{out}"
    );
    assert!(out.contains("line 32: bad-time: start_time"), "{out}");
    assert!(out.contains("may.rejects.csv"), "{out}");

    let listed = served.ok(&carrier, "--output json durations list").await;
    assert_eq!(listed.lines().count(), 30);
    let out = served
        .ok(&carrier, "--output csv durations list --limit 2")
        .await;
    let mut reader = csv::Reader::from_reader(out.as_bytes());
    assert_eq!(
        reader.headers().expect("header").get(1),
        Some("record_id"),
        "{out}"
    );
    assert_eq!(reader.records().count(), 2, "{out}");
    // A field violation, on the one error line.
    let (code, _, err) = served
        .run(
            &carrier,
            "reconcile summary --from 2026-01-01T00:00:00Z --to 2026-01-01T00:00:00Z",
        )
        .await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.starts_with("error: INVALID_ARGUMENT: ")
            && err.contains("end_time")
            && err.lines().count() == 1,
        "{err}"
    );
    let (code, completion, _) = served.run(&carrier, "completions bash").await;
    assert_eq!(code, 0);
    assert!(
        completion.contains("durations") && completion.contains("complete"),
        "bash completion"
    );

    let period = "--from 2025-12-01T00:00:00Z --to 2026-12-01T00:00:00Z";
    let out = served
        .ok(
            &carrier,
            &format!("--output json reconcile summary {period}"),
        )
        .await;
    let summary: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(summary["platform_count"], 40, "{summary}");
    assert_eq!(summary["carrier_count"], 30, "{summary}");
    assert_eq!(summary["matched_count"], 28, "{summary}");
    assert_eq!(summary["mismatched_count"], 2, "{summary}");
    assert_eq!(summary["missing_on_carrier_count"], 10, "{summary}");
    // A tolerance above the skew agrees with every reported call.
    let out = served
        .ok(
            &carrier,
            &format!("--output json reconcile summary {period} --tolerance 6s"),
        )
        .await;
    let loose: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(loose["matched_count"], 30, "{loose}");

    let out = served
        .ok(
            &carrier,
            &format!("--output json reconcile discrepancies {period} --kind mismatched"),
        )
        .await;
    let mismatched: Vec<String> = out
        .lines()
        .map(|l| {
            let d: serde_json::Value = serde_json::from_str(l).expect("json");
            d["record_id"].as_str().expect("record").to_owned()
        })
        .collect();
    assert_eq!(mismatched, ["fab-7", "fab-22"]);
    let out = served
        .ok(
            &carrier,
            &format!("reconcile discrepancies {period} --limit 3"),
        )
        .await;
    assert_eq!(out.lines().count(), 4, "a heading and three rows: {out}");

    let usage = format!("--output json usage --tenant {TENANT} {period} --by number");
    let out = served.ok(&platform, &usage).await;
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let total = rows.last().expect("total");
    assert_eq!(total["call_count"], 40, "{out}");
    let operator: i64 = rows
        .iter()
        .filter_map(|r| r["operator_count"].as_i64())
        .sum();
    let from_platform: i64 = rows
        .iter()
        .filter_map(|r| r["platform_count"].as_i64())
        .sum();
    assert_eq!((operator, from_platform), (30, 10), "{out}");
    let (code, _, err) = served
        .run(&carrier, &format!("usage --tenant {TENANT} {period}"))
        .await;
    assert_eq!(code, 2);
    assert!(
        err.starts_with("error: PERMISSION_DENIED: ") && err.lines().count() == 1,
        "{err}"
    );

    // The operator's privacy commands: retention, audit, erasure.
    let out = served.ok(&platform, "--output json retention get").await;
    let policy: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(policy["call_record_days"], 90, "{policy}");
    let out = served.ok(&platform,
            "--output json retention set --call-records 30 --call-durations 60 --released-numbers 7 --audit-events 400",).await;
    let policy: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(policy["call_duration_days"], 60, "{policy}");
    let out = served.ok(&platform,
            "--output json audit --carrier fabrikam-tel --rpc ocx.v1.CallDurationService/UploadCallDurations",).await;
    assert_eq!(out.lines().count(), 2, "the two uploads: {out}");
    let (code, _, err) = served
        .run(&platform, &format!("erase --tenant {TENANT}"))
        .await;
    assert_eq!(code, 2, "erasure wants --yes: {err}");
    let out = served
        .ok(
            &platform,
            &format!("--output json erase --tenant {TENANT} --yes"),
        )
        .await;
    let erased: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(erased["call_records"], 40, "{erased}");
    assert_eq!(erased["call_durations"], 30, "{erased}");

    served.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_calls_start_within_the_range_and_never_in_the_future() {
    let served = Served::start().await;
    let platform = served.server.platform_key.clone();
    served
        .ok(&platform, "carriers create range-tel --name Range")
        .await;
    served
        .ok(
            &platform,
            &format!("consents grant --carrier range-tel --tenant {TENANT}"),
        )
        .await;
    let numbers = served.server.dir().join("numbers.csv");
    std::fs::write(&numbers, "number\n+442079460001\n").expect("write");
    served
        .ok(
            &platform,
            &format!(
                "numbers upload {} --tenant {TENANT} --carrier range-tel",
                numbers.display()
            ),
        )
        .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;

    // The default range: the day before the last whole hour.
    let generate = format!(
        "--output json calls generate --count 500 --seed 8 --tenant {TENANT} --number +442079460001"
    );
    let summary = served.ok(&platform, &generate).await;
    let summary: serde_json::Value = serde_json::from_str(summary.trim()).expect("json");
    assert_eq!(summary["created"], 500, "{summary}");
    let listed = served
        .ok(&platform, "--output json calls list --carrier range-tel")
        .await;
    let starts: Vec<i64> = listed
        .lines()
        .map(|l| {
            let record: serde_json::Value = serde_json::from_str(l).expect("json");
            let start = record["start_time"].as_str().expect("start").to_owned();
            humantime::parse_rfc3339(&start)
                .expect("rfc 3339")
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_secs() as i64
        })
        .collect();
    assert_eq!(starts.len(), 500);
    let to = now - now % 3600;
    assert!(
        starts.iter().all(|s| (to - 86_400..to).contains(s)),
        "{:?}",
        (starts.iter().min(), starts.iter().max(), to)
    );
    // Spread over the whole day, not bunched at one end.
    assert!(starts.iter().any(|s| *s < to - 86_400 + 3_600));
    assert!(starts.iter().any(|s| *s >= to - 3_600));

    // A range that reaches into the future, or is too narrow for the count, is refused
    // before anything is sent.
    for (range, words) in [
        ("--to 2999-01-01T00:00:00Z", "--to is in the future"),
        (
            "--from 2026-01-01T00:00:00Z --to 2026-01-01T00:00:01Z",
            "do not fit",
        ),
        (
            "--from 2026-01-02T00:00:00Z --to 2026-01-01T00:00:00Z",
            "--from must come before --to",
        ),
    ] {
        let (code, out, err) = served
            .run(
                &platform,
                &format!(
                    "calls generate --count 1000 --tenant {TENANT} --number +442079460001 {range}"
                ),
            )
            .await;
        assert_ne!(code, 0, "{range}: {out}");
        assert!(err.contains(words), "{range}: {err}");
    }
    served.stop().await;
}

/// RFC 3339 (UTC, seconds) of `secs` since the epoch.
fn rfc3339(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(u64::try_from(secs).expect("after 1970"));
    humantime::format_rfc3339_seconds(t).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn quality_summary_of_the_demo_data_as_rows_and_as_a_chart() {
    let served = Served {
        server: TestServer::start_demo().await,
    };
    let key = std::fs::read_to_string(served.server.dir().join("demo-carrier.key"))
        .expect("demo carrier key");
    let key = key.trim();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let period = format!(
        "--from {} --to {}",
        rfc3339(now - 3 * 86_400),
        rfc3339(now + 60)
    );
    let chart = served.server.dir().join("quality.svg");

    // Hourly, per trunk, as JSON lines, with the chart.
    let out = served
        .ok(
            key,
            &format!(
                "quality summary {period} --by hour --group-by trunk --output json --chart {}",
                chart.display()
            ),
        )
        .await;
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let calls: i64 = rows
        .iter()
        .map(|r| r["calls"].as_i64().expect("calls"))
        .sum();
    assert_eq!(calls, 2_000, "every demo call, once");
    let trunks: std::collections::BTreeSet<&str> = rows
        .iter()
        .map(|r| r["trunk"].as_str().expect("trunk"))
        .collect();
    assert_eq!(
        trunks.iter().copied().collect::<Vec<_>>(),
        ["sbc1.carrier.example", "sbc2.carrier.example"]
    );
    // The demo's incident: sbc2 degrades for four hours; sbc1 never does. The worst run of
    // four hours, per trunk, by its poor-call rate.
    let worst = |trunk: &str| {
        let hours: std::collections::BTreeMap<&str, (i64, i64)> = rows
            .iter()
            .filter(|r| r["trunk"] == trunk)
            .map(|r| {
                let n = |f: &str| r[f].as_i64().expect("a count");
                let bucket = r["bucket_start_time"].as_str().expect("bucket");
                (bucket, (n("poor_calls"), n("good_calls") + n("poor_calls")))
            })
            .collect();
        let hours: Vec<(i64, i64)> = hours.into_values().collect();
        hours
            .windows(4)
            .map(|w| {
                let (poor, classified) = w.iter().fold((0, 0), |a, h| (a.0 + h.0, a.1 + h.1));
                poor as f64 / classified.max(1) as f64
            })
            .fold(0.0_f64, f64::max)
    };
    let (sbc1, sbc2) = (worst("sbc1.carrier.example"), worst("sbc2.carrier.example"));
    assert!(sbc2 > 0.4, "sbc2's worst four hours: {sbc2}");
    assert!(sbc1 < 0.3, "sbc1's worst four hours: {sbc1}");

    // The chart: well-formed SVG, and in each of its two panels one line per trunk, named in
    // the legend.
    let svg = std::fs::read_to_string(&chart).expect("the chart was written");
    let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    // A series is a polyline 2 px wide through every bucket; the legend's samples and the
    // axes' ticks have two points.
    let mut series: std::collections::BTreeMap<&str, usize> = Default::default();
    for n in doc
        .descendants()
        .filter(|n| n.tag_name().name() == "polyline")
    {
        let points = n
            .attribute("points")
            .unwrap_or_default()
            .split_whitespace()
            .count();
        if n.attribute("stroke-width") == Some("2") && points > 2 {
            *series
                .entry(n.attribute("stroke").expect("a colour"))
                .or_default() += 1;
        }
    }
    assert_eq!(series.len(), trunks.len(), "a colour per trunk: {series:?}");
    assert!(
        series.values().all(|n| *n == 2),
        "a line per trunk in each panel: {series:?}"
    );
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "text")
        .filter_map(|n| n.text())
        .collect();
    for trunk in &trunks {
        assert_eq!(
            texts.iter().filter(|t| t.contains(trunk)).count(),
            2,
            "{trunk} in both legends"
        );
    }
    assert!(texts.iter().any(|t| t.contains("Poor-call rate")));
    assert!(texts.iter().any(|t| t.contains("ASR")));

    // The other incident: calls on the French lines fail more often (a lower ASR); as a
    // table, then as CSV.
    let table = served
        .ok(
            key,
            &format!("quality summary {period} --by none --group-by country"),
        )
        .await;
    let header: Vec<&str> = table
        .lines()
        .next()
        .expect("header")
        .split_whitespace()
        .collect();
    assert_eq!(&header[..3], ["COUNTRY", "CALLS", "ANSWERED"]);
    let asr = |country: &str| -> f64 {
        let line = table
            .lines()
            .find(|l| l.starts_with(country))
            .unwrap_or_else(|| panic!("no {country} row in {table}"));
        let cells: Vec<&str> = line.split_whitespace().collect();
        cells[header.iter().position(|h| *h == "ASR").expect("ASR column")]
            .parse()
            .expect("a number")
    };
    assert!(
        asr("FR") + 0.1 < asr("GB"),
        "FR {} against GB {}",
        asr("FR"),
        asr("GB")
    );
    let csv = served
        .ok(
            key,
            &format!("quality summary {period} --by day --group-by country,codec --output csv --country FR"),
        )
        .await;
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .expect("header")
            .starts_with("bucket,country,codec,calls,")
    );
    assert!(lines.all(|l| l.split(',').nth(1) == Some("FR")), "{csv}");
    served.stop().await;
}

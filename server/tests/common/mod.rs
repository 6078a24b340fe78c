//! Shared by the tests that run the real `ocx-server` binary.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A server process, killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary on an ephemeral loopback port; returns it and its address, read from the
/// "serving" log line (the binary logs the address it actually bound).
#[allow(dead_code)]
pub fn start(data_dir: &Path, demo: bool) -> (Proc, String) {
    let (proc, endpoint, _) = start_logged(data_dir, demo, "info");
    (proc, endpoint)
}

/// [`start`] with `RUST_LOG=rust_log`, keeping every log line: the returned thread ends when
/// the process does, and returns them all.
#[allow(dead_code)]
pub fn start_logged(
    data_dir: &Path,
    demo: bool,
    rust_log: &str,
) -> (Proc, String, std::thread::JoinHandle<Vec<String>>) {
    let demo: &[&str] = if demo { &["--demo"] } else { &[] };
    start_configured(data_dir, demo, &[("RUST_LOG", rust_log)])
}

/// [`start_logged`] with more flags and environment variables.
#[allow(dead_code)]
pub fn start_configured(
    data_dir: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> (Proc, String, std::thread::JoinHandle<Vec<String>>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ocx-server"));
    cmd.args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "info");
    for (name, value) in envs {
        cmd.env(name, value);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ocx-server");
    let stdout = child.stdout.take().expect("stdout");
    let proc = Proc(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let addr = loop {
        let line = lines
            .next()
            .expect("server exited before serving")
            .expect("read log");
        seen.push(line.clone());
        if !line.contains("serving") {
            continue;
        }
        // Text logs say `addr=127.0.0.1:1234`; JSON logs `"addr":"127.0.0.1:1234"`.
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().expect("address").to_owned();
        }
        if let Some(rest) = line.split("\"addr\":\"").nth(1) {
            break rest.split('"').next().expect("address").to_owned();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    let drain = std::thread::spawn(move || {
        seen.extend(lines.map_while(Result::ok));
        seen
    });
    (proc, format!("http://{addr}"), drain)
}

pub fn key(path: &Path) -> String {
    std::fs::read_to_string(path)
        .expect("key file")
        .trim()
        .to_owned()
}

/// Sets up, through `platform`: carrier `carrier` with a carrier key of its own, `tenant`'s
/// consent to it, and `count` numbers `<prefix>00000`, `<prefix>00001`, ... on that tenant.
/// Returns the carrier key's secret and the numbers.
#[allow(dead_code)]
pub async fn seed_carrier(
    platform: &ocx_client::Client,
    carrier: &str,
    tenant: &str,
    prefix: &str,
    count: u32,
) -> (String, Vec<String>) {
    use ocx_client::pb;
    platform
        .create_carrier(carrier, &format!("{carrier} Ltd"))
        .await
        .expect("carrier");
    let secret = platform
        .create_api_key(pb::CreateApiKeyRequest {
            role: pb::ApiKeyRole::Carrier.into(),
            carrier_id: carrier.into(),
            display_name: "tests".into(),
            request_id: String::new(),
        })
        .await
        .expect("carrier key")
        .secret;
    platform
        .grant_consent(pb::GrantConsentRequest {
            carrier_id: carrier.into(),
            tenant_id: tenant.into(),
            ..Default::default()
        })
        .await
        .expect("consent");
    let numbers: Vec<String> = (0..count).map(|i| format!("{prefix}{i:05}")).collect();
    let uploaded = platform
        .upload_numbers(pb::UploadNumbersRequest {
            carrier_id: carrier.into(),
            numbers: numbers
                .iter()
                .map(|n| pb::NumberUpload {
                    number: n.clone(),
                    tenant_id: tenant.into(),
                    ..Default::default()
                })
                .collect(),
            request_id: String::new(),
        })
        .await
        .expect("numbers");
    assert_eq!(uploaded.created_count as u32, count);
    (secret, numbers)
}

/// The call ids of `carrier`'s records, in listing order, read through `platform`.
#[allow(dead_code)]
pub async fn call_ids(platform: &ocx_client::Client, carrier: &str) -> Vec<String> {
    use futures_util::TryStreamExt;
    platform
        .call_records(ocx_client::pb::ListCallRecordsRequest {
            carrier_id: carrier.into(),
            page_size: 1000,
            ..Default::default()
        })
        .map_ok(|r| r.call_id)
        .try_collect()
        .await
        .expect("list call records")
}

/// Sends SIGTERM to the server and waits (at most `bound`) for it to exit by itself; its exit
/// status and how long it took.
#[allow(dead_code)]
pub async fn sigterm_and_wait(
    server: Proc,
    bound: std::time::Duration,
) -> (std::process::ExitStatus, std::time::Duration) {
    let signalled = std::time::Instant::now();
    let pid = server.0.id().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(kill.success());
    let mut server = server;
    let status = tokio::time::timeout(bound, tokio::task::spawn_blocking(move || server.0.wait()))
        .await
        .expect("the process exits by itself")
        .expect("join")
        .expect("exit status");
    (status, signalled.elapsed())
}

//! Settings come from flags, then environment variables, then a TOML file, then defaults; logs
//! can be JSON.

use crate::OCX_SERVER;
use ocx_client::{Client, pb};
use ocx_testkit::process::key;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

#[tokio::test]
async fn flags_beat_environment_beats_the_file_and_logs_can_be_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("ocx.toml");
    std::fs::write(
        &file,
        "max-batch = 5\nmax_page_size = 10\nrate = 500.0\nlog-format = \"json\"\n",
    )
    .expect("write");
    let (server, endpoint, log) = OCX_SERVER.start_configured(
        dir.path(),
        &[
            // The subcommand the help calls the default, with settings after it.
            "serve",
            "--config",
            file.to_str().expect("utf-8"),
            "--max-batch",
            "7",
        ],
        &[("OCX_MAX_PAGE_SIZE", "3")],
    );
    let platform = Client::connect(endpoint, key(&dir.path().join("platform.key")))
        .await
        .expect("connect");
    platform
        .create_carrier("acme-tel", "Acme")
        .await
        .expect("carrier");
    platform
        .grant_consent(pb::GrantConsentRequest {
            carrier_id: "acme-tel".into(),
            tenant_id: TENANT.into(),
            status: pb::ConsentStatus::Active as i32,
            ..Default::default()
        })
        .await
        .expect("consent");
    let upload = |n: u32| pb::UploadNumbersRequest {
        request_id: String::new(),
        carrier_id: "acme-tel".into(),
        numbers: (0..n)
            .map(|i| pb::NumberUpload {
                number: format!("+44207946{i:04}"),
                tenant_id: TENANT.into(),
                ..Default::default()
            })
            .collect(),
    };
    // The flag (7) wins over the file (5).
    platform
        .upload_numbers(upload(7))
        .await
        .expect("7 is allowed");
    let err = platform
        .upload_numbers(upload(8))
        .await
        .expect_err("8 is not");
    assert!(
        err.violations()[0].description.contains("limit of 7"),
        "{err:?}"
    );
    // The environment (3) wins over the file (10): a page of 4 is served as 3.
    let page = platform
        .list_numbers(pb::ListNumbersRequest {
            carrier_id: "acme-tel".into(),
            page_size: 4,
            ..Default::default()
        })
        .await
        .expect("clamped to 3");
    assert_eq!(page.phone_numbers.len(), 3);
    assert!(!page.next_page_token.is_empty());
    drop(server);
    // The file's log format held: every line is a JSON object.
    let lines = log.join().expect("log");
    assert!(!lines.is_empty());
    for line in &lines {
        let value: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
        assert!(
            value["timestamp"].is_string() && value["level"].is_string(),
            "{line}"
        );
    }
}

#[test]
fn an_unknown_setting_in_the_file_is_an_error_that_says_which() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("ocx.toml");
    std::fs::write(&file, "max-bach = 5\n").expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ocx-server"))
        .args([
            "--config",
            file.to_str().expect("utf-8"),
            "init",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max-bach"), "{stderr}");
}

#[test]
fn a_rate_that_would_refuse_everything_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (flag, value) in [
        ("--rate", "0"),
        ("--rate", "-5"),
        ("--rate", "NaN"),
        ("--burst", "0.5"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_ocx-server"))
            .arg(format!("{flag}={value}"))
            .args(["init", "--data-dir"])
            .arg(dir.path())
            .output()
            .expect("run");
        assert!(!output.status.success(), "{flag} {value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}

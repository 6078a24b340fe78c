//! Upgrade in place: a database written by the release before the pairing state (commit
//! 9f35cb3, `tests/fixtures/pre-pairing/`) opens on this code, which builds the state once at
//! migration, and every answer of reconciliation and usage is what that release gave.
//!
//! The fixture was made by this very file's `make_the_pre_pairing_fixture`, run in a worktree
//! of that commit (`scripts/make-migration-fixture.sh`; the check is in `migration_check`, as
//! it needs what that release had not): it seeds a carrier's records and
//! reports (matches by call id and by correlation id, several reports on one call, corrections,
//! revisions, lone reports on both sides, two tenants), asks its questions, and writes the
//! database and the answers (their `Debug` text, exact to the microsecond).

use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use ocx_client::{Client, pb};
use ocx_testkit::sample::{CallRecordGenerator, Line};
use ocx_testkit::{TestServer, at, carrier, consent, ingest, provision, report, tenant};

/// The carrier of the fixture.
pub const CARRIER: &str = "fixture-tel";
/// Start of its calls (2024-06-03T00:00:00Z).
const T0: i64 = 1_717_372_800;

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pre-pairing")
}

/// Seeds the fixture's data through `platform`; the carrier's client.
async fn seed(platform: &Client) -> Client {
    let acme = carrier(platform, CARRIER).await;
    let (t1, t2) = (tenant(41), tenant(42));
    consent(platform, CARRIER, &t1).await;
    consent(platform, CARRIER, &t2).await;
    let n1: Vec<String> = (0..6).map(|i| format!("+4420794600{i:02}")).collect();
    let n2: Vec<String> = (0..4).map(|i| format!("+4420794700{i:02}")).collect();
    provision(&acme.client, &t1, &n1).await;
    provision(&acme.client, &t2, &n2).await;
    let mut lines = Line::all(&t1, &n1);
    lines.extend(Line::all(&t2, &n2));
    let mut generator = CallRecordGenerator::new(41, lines, T0).with_mean_gap_secs(600.0);
    let records: Vec<pb::CallRecord> = (0..1500).map(|_| generator.next_record()).collect();
    for batch in records.chunks(500) {
        ingest(platform, batch.to_vec()).await;
    }
    // Revisions: another duration for every 50th call.
    let revised: Vec<pb::CallRecord> = records
        .iter()
        .step_by(50)
        .map(|r| {
            let mut r = r.clone();
            r.version += 1;
            if let (Some(end), Some(duration)) = (r.end_time.as_mut(), r.duration.as_mut()) {
                end.seconds += 7;
                duration.seconds += 7;
            }
            r
        })
        .collect();
    ingest(platform, revised).await;
    // Reports: by call id, by correlation id, off by more than a second, a second report on
    // some calls, reports for calls the platform never had.
    let mut reports = Vec::new();
    for (i, r) in records.iter().enumerate() {
        if i % 10 == 9 {
            continue; // missing on the carrier
        }
        let start = r.start_time.expect("start").seconds;
        let duration = r
            .duration
            .map_or(0, |d| d.seconds * 1_000_000 + i64::from(d.nanos) / 1000)
            + [0, 400_000, 2_500_000][i % 3];
        let (call_id, correlation_id) = if i % 4 == 0 {
            (String::new(), r.correlation_id.clone())
        } else {
            (r.call_id.clone(), String::new())
        };
        reports.push(report(
            &format!("r{i}"),
            &call_id,
            &correlation_id,
            start,
            duration,
        ));
        if i % 97 == 0 {
            reports.push(report(
                &format!("r{i}-again"),
                &r.call_id,
                "",
                start,
                duration + 5_000_000,
            ));
        }
    }
    for i in 0..20 {
        reports.push(report(
            &format!("lone{i}"),
            "",
            &format!("nobody-{i}@sbc.example"),
            T0 + i * 3_600,
            30_000_000,
        ));
    }
    for batch in reports.chunks(500) {
        acme.client
            .report_call_durations("", batch.to_vec())
            .await
            .expect("report");
    }
    // Corrections: a report moved to another call, one made exact.
    acme.client
        .report_call_durations(
            "",
            vec![
                report("r1", &records[2].call_id, "", T0, 61_000_000),
                report("r5", &records[5].call_id, "", T0, 1_000_000),
            ],
        )
        .await
        .expect("corrections");
    acme.client
}

/// The questions, and their answers as `Debug` text: summaries for periods on and off whole
/// hours and days and several tolerances, every discrepancy page (pages of 37), and both
/// tenants' usage both ways.
pub async fn answers(carrier: &Client, platform: &Client) -> Vec<String> {
    let hour = 3_600;
    let periods = [
        (T0 - 86_400, T0 + 30 * 86_400),
        (T0 + 86_400, T0 + 3 * 86_400),
        (T0 + 5 * hour + 17, T0 + 2 * 86_400 + 7 * hour + 3),
        (T0 + 20 * 60, T0 + 50 * 60),
    ];
    let tolerances: [i32; 4] = [0, 500_000, 1_000_000, 3_000_000];
    let mut out = Vec::new();
    for (s, e) in periods {
        for tolerance in tolerances {
            let tolerance = Some(prost_types::Duration {
                seconds: i64::from(tolerance / 1_000_000),
                nanos: (tolerance % 1_000_000) * 1000,
            });
            let summary = carrier
                .get_reconciliation_summary(pb::GetReconciliationSummaryRequest {
                    start_time: at(s),
                    end_time: at(e),
                    tolerance,
                    ..Default::default()
                })
                .await
                .expect("summary");
            out.push(format!("summary {s} {e} {tolerance:?}: {summary:?}"));
        }
        let listed: Vec<pb::Discrepancy> = carrier
            .discrepancies(pb::ListDiscrepanciesRequest {
                start_time: at(s),
                end_time: at(e),
                page_size: 37,
                ..Default::default()
            })
            .try_collect()
            .await
            .expect("discrepancies");
        for d in listed {
            out.push(format!("discrepancy {s} {e}: {d:?}"));
        }
        for t in [tenant(41), tenant(42)] {
            for grouping in [
                pb::UsageGrouping::Day,
                pb::UsageGrouping::NumberAndDirection,
            ] {
                let usage = platform
                    .get_tenant_usage(pb::GetTenantUsageRequest {
                        tenant_id: t.clone(),
                        start_time: at(s),
                        end_time: at(e),
                        grouping: grouping.into(),
                    })
                    .await
                    .expect("usage");
                out.push(format!("usage {t} {s} {e} {grouping:?}: {usage:?}"));
            }
        }
    }
    out
}

/// Makes the fixture (run by `scripts/make-migration-fixture.sh` in a worktree of the release
/// before the pairing state; `OCX_FIXTURE_OUT` names where to write it).
#[tokio::test]
#[ignore = "makes the fixture: scripts/make-migration-fixture.sh runs it on the previous release"]
async fn make_the_pre_pairing_fixture() {
    let out = PathBuf::from(std::env::var("OCX_FIXTURE_OUT").expect("OCX_FIXTURE_OUT"));
    let mut server = TestServer::start().await;
    let platform = server.platform().await;
    let carrier = seed(&platform).await;
    let answers = answers(&carrier, &platform).await;
    server.stop().await;
    std::fs::create_dir_all(&out).expect("out dir");
    // The database and its write-ahead log (the script folds the log into the file).
    std::fs::copy(&server.db_path, out.join("ocx.db")).expect("copy");
    let wal = server.db_path.with_extension("db-wal");
    if wal.exists() {
        std::fs::copy(&wal, out.join("ocx.db-wal")).expect("copy the log");
    }
    std::fs::write(out.join("platform.key"), &server.platform_key).expect("key");
    std::fs::write(out.join("answers.txt"), answers.join("\n") + "\n").expect("answers");
}

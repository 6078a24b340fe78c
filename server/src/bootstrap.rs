//! Getting a fresh server to a usable state: the first platform key, and the demo data.
//!
//! A fresh database has no keys, and every RPC needs one. So the server issues the first
//! platform key itself, writes it to a file readable only by its owner (mode 0600), and logs
//! the file's path (never the key). Later keys are made with `AdminService.CreateApiKey`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use ocx_sample::{CallRecordGenerator, Line};

use crate::auth::issue_key;
use crate::convert_calls;
use crate::domain::{
    AssignRequest, AssignmentType, Capability, Carrier, ConsentGrant, ConsentStatus, Contact,
    DurationReport, NumberUpload, Role, now_micros,
};
use crate::store::Store;

/// File name of the bootstrap platform key inside the data directory.
pub const PLATFORM_KEY_FILE: &str = "platform.key";
/// File name of the demo carrier's key inside the data directory.
pub const DEMO_CARRIER_KEY_FILE: &str = "demo-carrier.key";
/// The demo carrier's id.
pub const DEMO_CARRIER: &str = "demo-carrier";
/// The demo tenants (Entra tenant GUIDs).
pub const DEMO_TENANTS: [&str; 2] = [
    "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "0b6c4b3e-5a4e-4f4e-9d7c-2f1c3a9b8e11",
];

/// Writes `token` to `path` durably, readable and writable by the owner only: a temp file
/// created with mode 0600, synced, renamed over `path`, and the directory synced.
pub fn write_key_file(path: &Path, token: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("key.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    writeln!(file, "{token}").with_context(|| format!("writing {}", tmp.display()))?;
    file.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
    }
    Ok(())
}

/// Issues a platform key if the store has no active one, and returns its token. With
/// `key_file`, the token is written there durably *before* the key is stored: a crash in
/// between leaves an unusable file (replaced on the next start), never a stored key that nobody
/// holds.
pub async fn ensure_platform_key(
    store: &dyn Store,
    key_file: Option<&Path>,
) -> anyhow::Result<Option<String>> {
    let active = store.active_api_keys().await?;
    if active.iter().any(|k| k.role == Role::Platform) {
        return Ok(None);
    }
    let issued = issue_key(Role::Platform, None, "bootstrap".into());
    if let Some(path) = key_file {
        write_key_file(path, &issued.token)?;
    }
    store.insert_api_key(issued.record).await?;
    Ok(Some(issued.token))
}

/// [`ensure_platform_key`] writing to `<data_dir>/platform.key`; returns the file's path if a
/// key was issued.
pub async fn bootstrap_platform_key(
    store: &dyn Store,
    data_dir: &Path,
) -> anyhow::Result<Option<PathBuf>> {
    let path = data_dir.join(PLATFORM_KEY_FILE);
    Ok(ensure_platform_key(store, Some(&path)).await?.map(|_| path))
}

/// Calls in the demo data.
const DEMO_CALLS: usize = 2_000;

/// The demo numbers with their tenants and countries: twenty in the United Kingdom (five of
/// them assigned), six in France.
fn demo_numbers() -> Vec<(String, &'static str, &'static str)> {
    let uk = (0..20).map(|i| (format!("+4420790{i:05}"), DEMO_TENANTS[i % 2], "GB"));
    let fr = (0..6).map(|i| (format!("+3314268{i:04}"), DEMO_TENANTS[i % 2], "FR"));
    uk.chain(fr).collect()
}

/// Call records for the demo numbers: 2,000 calls over the last two days (both directions,
/// several call types, good, poor and unclassified quality, with the generator's incidents:
/// a trunk degrading for four hours, the French lines' calls failing more often), 200 of them
/// revised with later quality data; and the carrier's duration reports for most of the first
/// 200.
async fn seed_demo_calls(store: &dyn Store) -> anyhow::Result<()> {
    let lines = demo_numbers()
        .into_iter()
        .map(|(number, tenant, _)| Line {
            tenant_id: tenant.into(),
            number,
        })
        .collect();
    let now = now_micros() / 1_000_000;
    let start = now - 2 * 24 * 3600;
    // Within the two days, never after now: the server refuses calls that start in the future.
    let mut generator =
        CallRecordGenerator::within(2026, lines, (start, now), DEMO_CALLS as u64).with_incidents();
    let mut records: Vec<_> = generator.by_ref().take(DEMO_CALLS).collect();
    let revisions: Vec<_> = records
        .iter()
        .step_by(10)
        .map(|r| generator.revise(r))
        .collect();
    records.extend(revisions);
    for (i, chunk) in records.chunks(100).enumerate() {
        let domain = chunk
            .iter()
            .enumerate()
            .map(|(j, r)| convert_calls::call_record_in(r, &format!("demo[{}]", i * 100 + j)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|v| anyhow::anyhow!("demo call records are invalid: {:?}", v.into_pairs()))?;
        store.ingest_call_records(domain).await?;
    }
    // The carrier's own durations: most calls reported (by call id, or by correlation id only),
    // some a few seconds off, some not reported, and a few the platform has no record of.
    let mut reports = Vec::new();
    for (i, r) in records.iter().take(200).enumerate() {
        let (Some(start), Some(duration)) = (&r.start_time, &r.duration) else {
            continue;
        };
        if i % 7 == 3 {
            continue;
        }
        let skew = if i % 11 == 5 { 4_000_000 } else { 0 };
        reports.push(DurationReport {
            record_id: format!("demo-{i:04}"),
            call_id: if i % 5 == 0 {
                String::new()
            } else {
                r.call_id.clone()
            },
            correlation_id: r.correlation_id.clone(),
            caller_number: r.caller_number.clone(),
            callee_number: r.callee_number.clone(),
            start_time: start.seconds * 1_000_000 + i64::from(start.nanos) / 1000,
            duration_us: duration.seconds * 1_000_000 + i64::from(duration.nanos) / 1000 + skew,
        });
    }
    for i in 0..3 {
        reports.push(DurationReport {
            record_id: format!("demo-orphan-{i}"),
            call_id: String::new(),
            correlation_id: format!("orphan-{i}@sbc1.carrier.example"),
            caller_number: "+442079000001".into(),
            callee_number: "+14255550100".into(),
            start_time: (start + 3600 * (i + 1)) * 1_000_000,
            duration_us: 42_000_000,
        });
    }
    store.report_call_durations(DEMO_CARRIER, reports).await?;
    Ok(())
}

/// Seeds a demo carrier with two consenting tenants, twenty-six numbers (five of them assigned) and
/// their call records, and writes the carrier's key to `<data_dir>/demo-carrier.key`. Does
/// nothing if the demo carrier exists and its key file is there.
pub async fn seed_demo(store: &dyn Store, data_dir: &Path) -> anyhow::Result<()> {
    let key_path = data_dir.join(DEMO_CARRIER_KEY_FILE);
    if store.get_carrier(DEMO_CARRIER).await?.is_none() {
        store
            .create_carrier(Carrier {
                carrier_id: DEMO_CARRIER.into(),
                display_name: "Contoso Telecom (demo)".into(),
                create_time: now_micros(),
            })
            .await?;
        for (i, tenant) in DEMO_TENANTS.iter().enumerate() {
            store
                .grant_consent(ConsentGrant {
                    carrier_id: DEMO_CARRIER.into(),
                    tenant_id: (*tenant).into(),
                    status: ConsentStatus::Active,
                    countries: vec!["FR".into(), "GB".into(), "US".into()],
                    contact: Contact {
                        full_name: format!("Demo Admin {}", i + 1),
                        email: format!("admin{}@tenant{}.example", i + 1, i + 1),
                        ..Contact::default()
                    },
                })
                .await?;
        }
        let uploads = demo_numbers()
            .into_iter()
            .map(|(number, tenant, country)| NumberUpload {
                number,
                tenant_id: tenant.into(),
                capabilities: Capability::DEFAULTS.to_vec(),
                civic_address_id: String::new(),
                location_id: String::new(),
                country_code: country.into(),
            })
            .collect();
        store.upload_numbers(DEMO_CARRIER, uploads).await?;
        for (i, user) in ["alice", "bob", "carol", "dave", "erin"].iter().enumerate() {
            store
                .assign_number(AssignRequest {
                    number: format!("+4420790{:05}", i),
                    tenant_id: DEMO_TENANTS[i % 2].into(),
                    assignment_type: AssignmentType::User,
                    sip_uri: format!("sip:{user}@contoso.example"),
                    user_id: String::new(),
                })
                .await?;
        }
        seed_demo_calls(store).await?;
        tracing::info!(carrier = DEMO_CARRIER, "demo data seeded");
    }
    if !key_path.exists() {
        let issued = issue_key(Role::Carrier, Some(DEMO_CARRIER.into()), "demo".into());
        write_key_file(&key_path, &issued.token)?;
        store.insert_api_key(issued.record).await?;
        tracing::info!(path = %key_path.display(), "demo carrier key written");
    }
    Ok(())
}

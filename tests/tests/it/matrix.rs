//! The authorization matrix: every RPC of the contract × every kind of caller × a resource of
//! carrier A, of carrier B, and one that does not exist, each with the exact status code it
//! must get, and no answer to a carrier ever carrying another carrier's rows.
//!
//! The list of RPCs comes from the contract (`ocx_api::FILE_DESCRIPTOR_SET`), so an RPC added
//! without a row here fails this test. The matrix runs twice, the second time in reverse order:
//! cells that write use spare resources and idempotent writes, so no cell's answer depends on
//! which cells ran before it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::{Stream, StreamExt, stream};
use ocx_client::{Client, pb};
use ocx_testkit::{
    TestServer, call, carrier, consent, ingest, now_secs, numbers, provision, report, tenant,
};
use tonic::Code;

/// The far end of every fixture call: a number no carrier holds.
const FAR_END: &str = "+12025550100";
/// The carrier id a platform key names to address a carrier that does not exist.
const NOBODY: &str = "nobody-tel";
/// How long a stream may take to deliver its first message before the cell fails (a guard
/// against a hang, not a synchronisation: the fixture guarantees the message exists).
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Principal {
    NoKey,
    MalformedKey,
    RevokedKey,
    CarrierA,
    CarrierB,
    Platform,
}

const PRINCIPALS: [Principal; 6] = [
    Principal::NoKey,
    Principal::MalformedKey,
    Principal::RevokedKey,
    Principal::CarrierA,
    Principal::CarrierB,
    Principal::Platform,
];

/// What the call addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    A,
    B,
    Missing,
}

const TARGETS: [Target; 3] = [Target::A, Target::B, Target::Missing];

/// Who may call an RPC, and what a carrier key gets.
#[derive(Debug, Clone, Copy)]
enum Scope {
    /// `AdminService`, `PlatformService`: a carrier key is `PERMISSION_DENIED`.
    PlatformOnly,
    /// Carrier-scoped: the code a carrier key gets for its own resource, another carrier's,
    /// and a missing one.
    Carrier {
        own: Code,
        other: Code,
        missing: Code,
    },
}

/// Every carrier-scoped RPC answered as a call, whatever the target (lists, batches, streams).
const CARRIER_OK: Scope = Scope::Carrier {
    own: Code::Ok,
    other: Code::Ok,
    missing: Code::Ok,
};
/// A carrier-scoped read by id: another carrier's resource is hidden exactly like a missing one.
const CARRIER_GET: Scope = Scope::Carrier {
    own: Code::Ok,
    other: Code::NotFound,
    missing: Code::NotFound,
};
/// The platform's codes for targets A, B, missing when the missing target is a carrier (or key,
/// consent, number) that does not exist.
const NAMED: [Code; 3] = [Code::Ok, Code::Ok, Code::NotFound];
/// The platform's codes when every target is answered (filters, idempotent operations).
const ALL_OK: [Code; 3] = [Code::Ok, Code::Ok, Code::Ok];

/// What a successful call showed: `carrier_id=<id>` for every `carrier_id` field of a row it
/// returned, and the other identifying values (numbers, tenants, call ids, reasons) it carried.
/// A value starting with `UNEXPECTED` is an anomaly the call itself noticed.
type Seen = Vec<String>;
type Answer = Result<Seen, ocx_client::Error>;
type Call = for<'a> fn(&'a Cell<'a>) -> BoxFuture<'a, Answer>;

/// One RPC of the contract.
struct Row {
    /// `Service/Method` in package `ocx.v1`.
    rpc: &'static str,
    scope: Scope,
    /// The platform key's codes for targets A, B, missing.
    platform: [Code; 3],
    /// For a carrier key, another carrier's resource and a missing one must get the same answer
    /// (code, message, per-item results) once ids are masked: existence is not revealed.
    hides: bool,
    call: Call,
}

/// The resources of one carrier (or, for the missing target, ids that exist nowhere).
struct Res {
    carrier_id: String,
    /// The tenant that consented to the carrier and holds its numbers and calls.
    tenant: String,
    /// A second consenting tenant, for `RevokeConsent`.
    revoke_tenant: String,
    /// A tenant without data, for `EraseTenantData`.
    erase_tenant: String,
    /// Assigned by the platform, with `sip_uri`: read by `GetNumber`, re-assigned.
    assigned: String,
    /// For `ReleaseNumbers`.
    spare: String,
    /// Provisioned, never assigned: re-uploaded unchanged, unassigned as a no-op.
    idle: String,
    sip_uri: String,
    /// Two call records, both in the reconciliation window.
    calls: Vec<pb::CallRecord>,
    /// The carrier's duration report for the first call (a mismatch: 90 s against 60 s).
    report: pb::CallDurationReport,
    /// A key that `RevokeApiKey` cells revoke.
    spare_key_id: String,
}

impl Res {
    /// Values that identify this carrier's data.
    fn markers(&self) -> Vec<&str> {
        let mut markers = vec![
            self.carrier_id.as_str(),
            &self.tenant,
            &self.revoke_tenant,
            &self.erase_tenant,
            &self.assigned,
            &self.spare,
            &self.idle,
            &self.sip_uri,
            &self.report.record_id,
            &self.spare_key_id,
        ];
        for c in &self.calls {
            markers.push(&c.call_id);
            markers.push(&c.correlation_id);
        }
        markers
    }
}

struct Fixture {
    a: Res,
    b: Res,
    missing: Res,
    /// The reconciliation / usage / listing window `[from, to)`, holding every fixture call.
    window: (i64, i64),
    /// Start of reports that must stay out of the window.
    far_past: i64,
    /// For fresh carrier ids and numbers.
    counter: AtomicU32,
}

impl Fixture {
    fn res(&self, target: Target) -> &Res {
        match target {
            Target::A => &self.a,
            Target::B => &self.b,
            Target::Missing => &self.missing,
        }
    }

    fn fresh(&self) -> u32 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }
}

/// One cell of the matrix, as its call sees it.
struct Cell<'a> {
    fx: &'a Fixture,
    client: &'a Client,
    target: Target,
    /// `true` for the platform key; otherwise the call is made as a carrier (A for the keys
    /// that do not authenticate, whose requests never reach a handler).
    platform: bool,
    /// The carrier a carrier key acts for.
    caller: Target,
}

impl Cell<'_> {
    /// The addressed resources.
    fn res(&self) -> &Res {
        self.fx.res(self.target)
    }

    /// `carrier_id` of a carrier-scoped request: empty for a carrier key (its scope comes from
    /// the key), the target's carrier for the platform.
    fn scope(&self) -> String {
        if self.platform {
            self.res().carrier_id.clone()
        } else {
            String::new()
        }
    }

    /// The carrier a write acts for: the caller's own for a carrier key, the target for the
    /// platform.
    fn acting(&self) -> &Res {
        if self.platform {
            self.res()
        } else {
            self.fx.res(self.caller)
        }
    }

    /// The duration report this cell sends: the fixture's own report when it addresses its own
    /// carrier (re-sent: unchanged); otherwise one naming the addressed call, dated out of the
    /// window so the caller's window stays as the fixture made it.
    fn report(&self) -> pb::CallDurationReport {
        if self.platform || self.target == self.caller || self.target == Target::Missing {
            return self.res().report.clone();
        }
        let call = &self.res().calls[0];
        report(
            "foreign-report",
            &call.call_id,
            &call.correlation_id,
            self.fx.far_past,
            60_000_000,
        )
    }

    fn window_from(&self) -> Option<prost_types::Timestamp> {
        ocx_testkit::at(self.fx.window.0)
    }

    fn window_to(&self) -> Option<prost_types::Timestamp> {
        ocx_testkit::at(self.fx.window.1)
    }
}

fn carrier_of(id: &str) -> Option<String> {
    (!id.is_empty()).then(|| format!("carrier_id={id}"))
}

fn number_seen(n: &pb::PhoneNumber) -> Seen {
    let mut seen: Seen = carrier_of(&n.carrier_id).into_iter().collect();
    seen.extend([n.number.clone(), n.tenant_id.clone(), n.sip_uri.clone()]);
    seen
}

fn record_seen(r: &pb::CallRecord) -> Seen {
    let mut seen: Seen = carrier_of(&r.carrier_id).into_iter().collect();
    seen.extend([
        r.call_id.clone(),
        r.correlation_id.clone(),
        r.tenant_id.clone(),
        r.caller_number.clone(),
        r.callee_number.clone(),
    ]);
    seen
}

/// What a batch result reveals beyond what the caller sent: the stored row and the reason.
fn number_result_seen(r: &pb::NumberResult) -> Seen {
    let mut seen = vec![r.reason.clone()];
    seen.extend(r.violations.iter().map(|v| v.description.clone()));
    seen.extend(r.phone_number.iter().flat_map(number_seen));
    seen
}

fn duration_result_seen(r: &pb::CallDurationResult) -> Seen {
    let mut seen = vec![r.reason.clone()];
    seen.extend(r.violations.iter().map(|v| v.description.clone()));
    seen
}

/// The first item of a stream (the SDK yields an error at open or as the first item).
async fn first<T>(
    items: impl Stream<Item = Result<T, ocx_client::Error>> + Send,
) -> Result<T, ocx_client::Error> {
    let mut items = Box::pin(items);
    let status = |code, message: &str| ocx_client::Error::Status {
        code,
        message: message.to_owned(),
        violations: Vec::new(),
    };
    match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, items.next()).await {
        Ok(Some(item)) => item,
        Ok(None) => Err(status(Code::Unknown, "the stream ended without a message")),
        Err(_) => Err(status(
            Code::DeadlineExceeded,
            "no first message within the timeout",
        )),
    }
}

fn rows() -> Vec<Row> {
    vec![
        // ----- AdminService -----
        Row {
            rpc: "AdminService/CreateCarrier",
            scope: Scope::PlatformOnly,
            platform: [Code::AlreadyExists, Code::AlreadyExists, Code::Ok],
            hides: false,
            call: |c| {
                Box::pin(async move {
                    let id = match c.target {
                        Target::Missing => format!("new-tel-{}", c.fx.fresh()),
                        _ => c.res().carrier_id.clone(),
                    };
                    c.client.create_carrier(&id, "Matrix Ltd").await?;
                    Ok(Vec::new())
                })
            },
        },
        Row {
            rpc: "AdminService/ListCarriers",
            scope: Scope::PlatformOnly,
            platform: ALL_OK,
            hides: false,
            call: |c| {
                Box::pin(async move {
                    let req = pb::ListCarriersRequest {
                        page_size: 10,
                        ..Default::default()
                    };
                    c.client.list_carriers(req).await?;
                    Ok(Vec::new())
                })
            },
        },
        Row {
            rpc: "AdminService/CreateApiKey",
            scope: Scope::PlatformOnly,
            platform: NAMED,
            hides: false,
            call: |c| {
                Box::pin(async move {
                    let key = c
                        .client
                        .create_api_key(pb::CreateApiKeyRequest {
                            request_id: String::new(),
                            role: pb::ApiKeyRole::Carrier as i32,
                            carrier_id: c.res().carrier_id.clone(),
                            display_name: "matrix".into(),
                        })
                        .await?;
                    Ok(key
                        .api_key
                        .iter()
                        .filter_map(|k| carrier_of(&k.carrier_id))
                        .collect())
                })
            },
        },
        Row {
            rpc: "AdminService/RevokeApiKey",
            scope: Scope::PlatformOnly,
            platform: NAMED,
            hides: false,
            call: |c| {
                Box::pin(async move {
                    let key = c.client.revoke_api_key(&c.res().spare_key_id).await?;
                    Ok(carrier_of(&key.carrier_id).into_iter().collect())
                })
            },
        },
        Row {
            rpc: "AdminService/ListApiKeys",
            scope: Scope::PlatformOnly,
            platform: ALL_OK,
            hides: false,
            call: |c| {
                Box::pin(async move {
                    let page = c
                        .client
                        .list_api_keys(pb::ListApiKeysRequest {
                            carrier_id: c.res().carrier_id.clone(),
                            page_size: 50,
                            ..Default::default()
                        })
                        .await?;
                    Ok(page
                        .api_keys
                        .iter()
                        .filter_map(|k| carrier_of(&k.carrier_id))
                        .collect())
                })
            },
        },
        Row {
            rpc: "AdminService/GetRetentionPolicy",
            scope: Scope::PlatformOnly,
            platform: ALL_OK,
            hides: false,
            call: |c| {
                Box::pin(async move {
                    c.client.get_retention_policy().await?;
                    Ok(Vec::new())
                })
            },
        },
        Row {
            rpc: "AdminService/SetRetentionPolicy",
            scope: Scope::PlatformOnly,
            platform: ALL_OK,
            hides: false,
            call: |c| {
                Box::pin(async move {
                    c.client.set_retention_policy(default_policy()).await?;
                    Ok(Vec::new())
                })
            },
        },
        Row {
            rpc: "AdminService/PurgeExpiredData",
            scope: Scope::PlatformOnly,
            platform: ALL_OK,
            hides: false,
            call: |c| {
                Box::pin(async move {
                    c.client.purge_expired_data().await?;
                    Ok(Vec::new())
                })
            },
        },
        Row {
            rpc: "AdminService/EraseTenantData",
            scope: Scope::PlatformOnly,
            // Erasure is idempotent: a tenant with nothing (left) to erase is answered too.
            platform: ALL_OK,
            hides: false,
            call: |c| {
                Box::pin(async move {
                    c.client.erase_tenant_data(&c.res().erase_tenant).await?;
                    Ok(Vec::new())
                })
            },
        },
        Row {
            rpc: "AdminService/ListAuditEvents",
            scope: Scope::PlatformOnly,
            // A filter: no events for a carrier that does not exist.
            platform: ALL_OK,
            hides: false,
            call: |c| {
                Box::pin(async move {
                    let page = c
                        .client
                        .list_audit_events(pb::ListAuditEventsRequest {
                            carrier_id: c.res().carrier_id.clone(),
                            page_size: 20,
                            ..Default::default()
                        })
                        .await?;
                    Ok(page
                        .audit_events
                        .iter()
                        .filter_map(|e| carrier_of(&e.carrier_id))
                        .collect())
                })
            },
        },
        // ----- ConsentService -----
        Row {
            rpc: "ConsentService/ListConsents",
            scope: CARRIER_OK,
            platform: NAMED,
            hides: true,
            call: |c| {
                Box::pin(async move {
                    let page = c
                        .client
                        .list_consents(pb::ListConsentsRequest {
                            carrier_id: c.scope(),
                            ..Default::default()
                        })
                        .await?;
                    Ok(page
                        .consents
                        .iter()
                        .flat_map(|x| {
                            carrier_of(&x.carrier_id)
                                .into_iter()
                                .chain([x.tenant_id.clone()])
                        })
                        .collect())
                })
            },
        },
        // ----- NumberService -----
        Row {
            rpc: "NumberService/UploadNumbers",
            scope: CARRIER_OK,
            platform: NAMED,
            // Another carrier's number is rejected, a missing one is created: not the same
            // answer, but the rejection must not say whose the number is.
            hides: false,
            call: |c| {
                Box::pin(async move {
                    let number = match c.target {
                        Target::Missing => format!("+4930{:08}", c.fx.fresh()),
                        _ => c.res().idle.clone(),
                    };
                    let response = c
                        .client
                        .upload_numbers(pb::UploadNumbersRequest {
                            request_id: String::new(),
                            carrier_id: c.scope(),
                            numbers: vec![ocx_testkit::item(&number, &c.acting().tenant)],
                        })
                        .await?;
                    Ok(response
                        .results
                        .iter()
                        .flat_map(number_result_seen)
                        .collect())
                })
            },
        },
        Row {
            rpc: "NumberService/ReleaseNumbers",
            scope: CARRIER_OK,
            platform: NAMED,
            hides: true,
            call: |c| {
                Box::pin(async move {
                    let response = c
                        .client
                        .release_numbers(pb::ReleaseNumbersRequest {
                            request_id: String::new(),
                            carrier_id: c.scope(),
                            numbers: vec![c.res().spare.clone()],
                        })
                        .await?;
                    Ok(response
                        .results
                        .iter()
                        .flat_map(number_result_seen)
                        .collect())
                })
            },
        },
        Row {
            rpc: "NumberService/GetNumber",
            scope: CARRIER_GET,
            platform: NAMED,
            hides: true,
            call: |c| {
                Box::pin(async move {
                    let n = c.client.get_number(&c.scope(), &c.res().assigned).await?;
                    Ok(number_seen(&n))
                })
            },
        },
        Row {
            rpc: "NumberService/ListNumbers",
            scope: CARRIER_OK,
            platform: NAMED,
            hides: true,
            call: |c| {
                Box::pin(async move {
                    let page = c
                        .client
                        .list_numbers(pb::ListNumbersRequest {
                            carrier_id: c.scope(),
                            tenant_id: c.res().tenant.clone(),
                            ..Default::default()
                        })
                        .await?;
                    Ok(page.phone_numbers.iter().flat_map(number_seen).collect())
                })
            },
        },
        Row {
            rpc: "NumberService/WatchNumberEvents",
            scope: CARRIER_OK,
            platform: NAMED,
            hides: true,
            call: |c| {
                Box::pin(async move {
                    let events = c.client.watch_number_events(&c.scope(), 0).await?;
                    let event = first(events).await?;
                    Ok(event.phone_number.iter().flat_map(number_seen).collect())
                })
            },
        },
        // ----- CallRecordService -----
        Row {
            rpc: "CallRecordService/GetCallRecord",
            scope: CARRIER_GET,
            platform: NAMED,
            hides: true,
            call: |c| {
                Box::pin(async move {
                    let r = c
                        .client
                        .get_call_record(&c.scope(), &c.res().calls[0].call_id)
                        .await?;
                    Ok(record_seen(&r))
                })
            },
        },
        Row {
            rpc: "CallRecordService/ListCallRecords",
            scope: CARRIER_OK,
            platform: NAMED,
            hides: true,
            call: |c| {
                Box::pin(async move {
                    let page = c
                        .client
                        .list_call_records(pb::ListCallRecordsRequest {
                            carrier_id: c.scope(),
                            tenant_id: c.res().tenant.clone(),
                            ..Default::default()
                        })
                        .await?;
                    Ok(page.call_records.iter().flat_map(record_seen).collect())
                })
            },
        },
        Row {
            rpc: "CallRecordService/StreamCallRecords",
            scope: CARRIER_OK,
            platform: NAMED,
            hides: true,
            call: |c| {
                Box::pin(async move {
                    let records = c.client.stream_call_records(&c.scope(), 0).await?;
                    Ok(record_seen(&first(records).await?))
                })
            },
        },
        Row {
            rpc: "CallRecordService/GetQualitySummary",
            scope: CARRIER_OK,
            platform: NAMED,
            hides: true,
            call: |c| {
                Box::pin(async move {
                    let (from, to) = (c.window_from().expect("from"), c.window_to().expect("to"));
                    let (start, end) = ocx_client::whole_hours(&from, &to);
                    let rows = c
                        .client
                        .quality_summary(pb::GetQualitySummaryRequest {
                            carrier_id: c.scope(),
                            start_time: Some(start),
                            end_time: Some(end),
                            ..Default::default()
                        })
                        .await?;
                    // Each carrier has exactly two calls: more would be another carrier's.
                    let calls: i64 = rows.iter().map(|r| r.calls).sum();
                    Ok(if calls == 2 {
                        Vec::new()
                    } else {
                        vec![format!("UNEXPECTED quality summary calls {calls}, not 2")]
                    })
                })
            },
        },
        // ----- CallDurationService -----
        Row {
            rpc: "CallDurationService/ReportCallDurations",
            scope: CARRIER_OK,
            platform: NAMED,
            hides: false,
            call: |c| {
                Box::pin(async move {
                    let response = c
                        .client
                        .report_call_durations(&c.scope(), vec![c.report()])
                        .await?;
                    Ok(response
                        .results
                        .iter()
                        .flat_map(duration_result_seen)
                        .collect())
                })
            },
        },
        Row {
            rpc: "CallDurationService/UploadCallDurations",
            scope: CARRIER_OK,
            platform: NAMED,
            hides: false,
            call: |c| {
                Box::pin(async move {
                    let batches = stream::iter([vec![c.report()]]);
                    let acks = c.client.upload_call_durations(&c.scope(), batches).await?;
                    let ack = first(acks).await?;
                    Ok(ack.results.iter().flat_map(duration_result_seen).collect())
                })
            },
        },
        Row {
            rpc: "CallDurationService/ListCallDurations",
            scope: CARRIER_OK,
            platform: NAMED,
            hides: true,
            call: |c| {
                Box::pin(async move {
                    let page = c
                        .client
                        .list_call_durations(pb::ListCallDurationsRequest {
                            carrier_id: c.scope(),
                            start_time_from: c.window_from(),
                            start_time_to: c.window_to(),
                            ..Default::default()
                        })
                        .await?;
                    Ok(page
                        .call_durations
                        .iter()
                        .flat_map(|d| {
                            carrier_of(&d.carrier_id).into_iter().chain([
                                d.record_id.clone(),
                                d.call_id.clone(),
                                d.correlation_id.clone(),
                                d.caller_number.clone(),
                                d.callee_number.clone(),
                            ])
                        })
                        .collect())
                })
            },
        },
        // ----- ReconciliationService -----
        Row {
            rpc: "ReconciliationService/GetReconciliationSummary",
            scope: CARRIER_OK,
            platform: NAMED,
            hides: true,
            call: |c| {
                Box::pin(async move {
                    let s = c
                        .client
                        .get_reconciliation_summary(pb::GetReconciliationSummaryRequest {
                            carrier_id: c.scope(),
                            start_time: c.window_from(),
                            end_time: c.window_to(),
                            tolerance: None,
                        })
                        .await?;
                    // Each carrier has exactly two calls and one report in the window: more
                    // would be another carrier's.
                    let counts = (s.platform_count, s.carrier_count);
                    Ok(if counts == (2, 1) {
                        Vec::new()
                    } else {
                        vec![format!(
                            "UNEXPECTED summary counts (platform, carrier) {counts:?}, not (2, 1)"
                        )]
                    })
                })
            },
        },
        Row {
            rpc: "ReconciliationService/ListDiscrepancies",
            scope: CARRIER_OK,
            platform: NAMED,
            hides: true,
            call: |c| {
                Box::pin(async move {
                    let page = c
                        .client
                        .list_discrepancies(pb::ListDiscrepanciesRequest {
                            carrier_id: c.scope(),
                            start_time: c.window_from(),
                            end_time: c.window_to(),
                            ..Default::default()
                        })
                        .await?;
                    let mut seen: Seen = page
                        .discrepancies
                        .iter()
                        .flat_map(|d| {
                            [
                                d.call_id.clone(),
                                d.correlation_id.clone(),
                                d.record_id.clone(),
                                d.caller_number.clone(),
                                d.callee_number.clone(),
                            ]
                        })
                        .collect();
                    if page.discrepancies.len() != 2 {
                        seen.push(format!(
                            "UNEXPECTED {} discrepancies, not 2 (one mismatch, one missing report)",
                            page.discrepancies.len()
                        ));
                    }
                    Ok(seen)
                })
            },
        },
        Row {
            rpc: "ReconciliationService/WatchReconciliation",
            scope: CARRIER_OK,
            platform: NAMED,
            hides: true,
            call: |c| {
                Box::pin(async move {
                    let changes = c.client.follow_reconciliation(&c.scope(), 0, None);
                    let change = first(changes).await?;
                    Ok(vec![
                        change.call_id,
                        change.correlation_id,
                        change.record_id,
                    ])
                })
            },
        },
        // ----- PlatformService -----
        Row {
            rpc: "PlatformService/GrantConsent",
            scope: Scope::PlatformOnly,
            platform: NAMED,
            hides: false,
            call: |c| {
                Box::pin(async move {
                    let consent = c
                        .client
                        .grant_consent(pb::GrantConsentRequest {
                            carrier_id: c.res().carrier_id.clone(),
                            tenant_id: c.res().tenant.clone(),
                            ..Default::default()
                        })
                        .await?;
                    Ok(carrier_of(&consent.carrier_id).into_iter().collect())
                })
            },
        },
        Row {
            rpc: "PlatformService/RevokeConsent",
            scope: Scope::PlatformOnly,
            platform: NAMED,
            hides: false,
            call: |c| {
                Box::pin(async move {
                    let consent = c
                        .client
                        .revoke_consent(&c.res().carrier_id, &c.res().revoke_tenant)
                        .await?;
                    Ok(carrier_of(&consent.carrier_id).into_iter().collect())
                })
            },
        },
        Row {
            rpc: "PlatformService/AssignNumber",
            scope: Scope::PlatformOnly,
            platform: NAMED,
            hides: false,
            call: |c| {
                Box::pin(async move {
                    let n = c.client.assign_number(assignment(c.res())).await?;
                    Ok(number_seen(&n))
                })
            },
        },
        Row {
            rpc: "PlatformService/UnassignNumber",
            scope: Scope::PlatformOnly,
            platform: NAMED,
            hides: false,
            call: |c| {
                Box::pin(async move {
                    let n = c
                        .client
                        .unassign_number(&c.res().idle, &c.res().tenant)
                        .await?;
                    Ok(number_seen(&n))
                })
            },
        },
        Row {
            rpc: "PlatformService/IngestCallRecords",
            scope: Scope::PlatformOnly,
            // A record whose number nobody holds is rejected in its acknowledgement.
            platform: ALL_OK,
            hides: false,
            call: |c| {
                Box::pin(async move {
                    let batches = stream::iter([vec![c.res().calls[0].clone()]]);
                    let acks = c.client.ingest_call_records(batches).await?;
                    let ack = first(acks).await?;
                    Ok(ack
                        .results
                        .iter()
                        .filter_map(|r| carrier_of(&r.carrier_id))
                        .collect())
                })
            },
        },
        Row {
            rpc: "PlatformService/GetTenantUsage",
            scope: Scope::PlatformOnly,
            platform: ALL_OK,
            hides: false,
            call: |c| {
                Box::pin(async move {
                    let usage = c
                        .client
                        .get_tenant_usage(pb::GetTenantUsageRequest {
                            tenant_id: c.res().tenant.clone(),
                            start_time: c.window_from(),
                            end_time: c.window_to(),
                            grouping: pb::UsageGrouping::NumberAndDirection as i32,
                        })
                        .await?;
                    Ok(usage.rows.iter().map(|r| r.number.clone()).collect())
                })
            },
        },
    ]
}

/// The policy every server starts with (asserted before the matrix runs), so setting it
/// changes nothing for later cells.
fn default_policy() -> pb::RetentionPolicy {
    pb::RetentionPolicy {
        call_record_days: 90,
        call_duration_days: 90,
        released_number_days: 30,
        audit_event_days: 365,
        update_time: None,
    }
}

fn assignment(res: &Res) -> pb::AssignNumberRequest {
    pb::AssignNumberRequest {
        request_id: String::new(),
        number: res.assigned.clone(),
        tenant_id: res.tenant.clone(),
        assignment_type: pb::AssignmentType::User as i32,
        sip_uri: res.sip_uri.clone(),
        user_id: String::new(),
    }
}

/// The code a cell must get.
fn expected(row: &Row, principal: Principal, target: Target) -> Code {
    let caller = match principal {
        Principal::NoKey | Principal::MalformedKey | Principal::RevokedKey => {
            return Code::Unauthenticated;
        }
        Principal::Platform => return row.platform[target as usize],
        Principal::CarrierA => Target::A,
        Principal::CarrierB => Target::B,
    };
    match row.scope {
        Scope::PlatformOnly => Code::PermissionDenied,
        Scope::Carrier {
            own,
            other,
            missing,
        } => match target {
            Target::Missing => missing,
            t if t == caller => own,
            _ => other,
        },
    }
}

// ----- the contract's list of RPCs -----

/// Every `ocx.v1.Service/Method` in `ocx_api::FILE_DESCRIPTOR_SET`, with whether it streams.
fn contract_methods() -> BTreeMap<String, bool> {
    let set =
        <prost_types::FileDescriptorSet as prost::Message>::decode(ocx_api::FILE_DESCRIPTOR_SET)
            .expect("the contract's descriptor set decodes");
    set.file
        .iter()
        .filter(|file| file.package() == "ocx.v1")
        .flat_map(|file| &file.service)
        .flat_map(|service| {
            service.method.iter().map(move |method| {
                (
                    format!("ocx.v1.{}/{}", service.name(), method.name()),
                    method.client_streaming() || method.server_streaming(),
                )
            })
        })
        .collect()
}

#[test]
fn the_contract_the_server_and_the_matrix_list_the_same_rpcs_and_roles() {
    let contract = contract_methods();
    assert!(contract.len() >= 30, "too few methods parsed: {contract:?}");
    assert!(contract["ocx.v1.PlatformService/IngestCallRecords"]);
    assert!(!contract["ocx.v1.NumberService/GetNumber"]);

    let server: BTreeMap<String, bool> = ocx_server::rpcs::RPCS
        .iter()
        .map(|rpc| (rpc.path(), rpc.streaming()))
        .collect();
    assert_eq!(
        server, contract,
        "ocx_server::rpcs::RPCS and the contract disagree"
    );

    let rows = rows();
    let names: BTreeSet<String> = rows.iter().map(|r| format!("ocx.v1.{}", r.rpc)).collect();
    assert_eq!(names.len(), rows.len(), "an RPC has two rows");
    let contract: BTreeSet<String> = contract.into_keys().collect();
    let missing: Vec<&String> = contract.difference(&names).collect();
    let extra: Vec<&String> = names.difference(&contract).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the matrix must have exactly one row per RPC of the contract; without a row: \
         {missing:?}; not in the contract: {extra:?}"
    );
    for row in &rows {
        let path = format!("ocx.v1.{}", row.rpc);
        let declared = ocx_server::rpcs::find(&path).map(|rpc| rpc.access);
        let expected = match row.scope {
            Scope::PlatformOnly => ocx_server::rpcs::Access::PlatformOnly,
            Scope::Carrier { .. } => ocx_server::rpcs::Access::CarrierAndPlatform,
        };
        assert_eq!(
            declared,
            Some(expected),
            "{path}: the server declares another access than the matrix expects"
        );
    }
}

// ----- the fixture -----

/// A carrier with two consenting tenants, three numbers (one assigned), two calls, a report,
/// and a spare key.
async fn side(
    platform: &Client,
    id: &str,
    prefix: &str,
    first_tenant: u32,
    t0: i64,
) -> (Res, Client) {
    let fixture = carrier(platform, id).await;
    let (main, revoke_tenant) = (tenant(first_tenant), tenant(first_tenant + 1));
    consent(platform, id, &main).await;
    consent(platform, id, &revoke_tenant).await;
    let n = numbers(prefix, 1, 3);
    provision(&fixture.client, &main, &n).await;
    let short = id.trim_end_matches("-tel");
    let calls = vec![
        call(
            &format!("{short}-call-1"),
            pb::CallDirection::Inbound,
            &n[0],
            FAR_END,
            &main,
            t0,
        ),
        call(
            &format!("{short}-call-2"),
            pb::CallDirection::Outbound,
            &n[0],
            FAR_END,
            &main,
            t0 + 60,
        ),
    ];
    let mut own_report = report(
        &format!("{short}-report-1"),
        &calls[0].call_id,
        &calls[0].correlation_id,
        t0,
        90_000_000,
    );
    own_report.caller_number = FAR_END.into();
    own_report.callee_number = n[0].clone();
    let spare_key = platform
        .create_api_key(pb::CreateApiKeyRequest {
            request_id: String::new(),
            role: pb::ApiKeyRole::Carrier as i32,
            carrier_id: id.into(),
            display_name: "spare".into(),
        })
        .await
        .expect("spare key");
    let res = Res {
        carrier_id: id.into(),
        tenant: main,
        revoke_tenant,
        erase_tenant: tenant(first_tenant + 2),
        assigned: n[0].clone(),
        spare: n[1].clone(),
        idle: n[2].clone(),
        sip_uri: format!("sip:alice@{short}.example"),
        calls,
        report: own_report,
        spare_key_id: spare_key.api_key.expect("key metadata").key_id,
    };
    platform
        .assign_number(assignment(&res))
        .await
        .expect("assign");
    (res, fixture.client)
}

/// Ids that exist nowhere, in the shape of a carrier's resources.
fn missing(t0: i64, far_past: i64) -> Res {
    let n = numbers("+1999555", 101, 3);
    let tenant_id = tenant(99);
    Res {
        carrier_id: NOBODY.into(),
        revoke_tenant: tenant(98),
        erase_tenant: tenant(97),
        assigned: n[0].clone(),
        spare: n[1].clone(),
        idle: n[2].clone(),
        sip_uri: "sip:nobody@nowhere.example".into(),
        calls: vec![call(
            "nowhere-call-1",
            pb::CallDirection::Inbound,
            &n[0],
            FAR_END,
            &tenant_id,
            t0,
        )],
        report: report(
            "nowhere-report",
            "nowhere-call-1",
            "nowhere-call-1@sbc.example",
            far_past,
            60_000_000,
        ),
        spare_key_id: "ffffffffffffffff".into(),
        tenant: tenant_id,
    }
}

/// What one cell got.
type Got = Result<Seen, (Code, String)>;

fn mask(text: &str, markers: &[&str]) -> String {
    markers
        .iter()
        .fold(text.to_owned(), |t, m| t.replace(m, "<id>"))
}

/// The values of `seen` that belong to a carrier other than `owner`.
fn leaks(seen: &Seen, owner: &Res, others: &[&Res]) -> Vec<String> {
    seen.iter()
        .filter(|v| {
            if v.starts_with("UNEXPECTED") {
                return true;
            }
            if let Some(id) = v.strip_prefix("carrier_id=") {
                return id != owner.carrier_id;
            }
            others
                .iter()
                .any(|o| o.markers().iter().any(|m| v.contains(m)))
        })
        .cloned()
        .collect()
}

#[tokio::test]
async fn every_rpc_for_every_caller_and_target() {
    let started = Instant::now();
    let server = TestServer::start().await;
    let platform = server.platform().await;
    assert_eq!(
        platform.get_retention_policy().await.expect("policy"),
        default_policy(),
        "SetRetentionPolicy cells write the defaults back: they must be the defaults"
    );

    let t0 = now_secs() - 3_600;
    let far_past = t0 - 10 * 86_400;
    let (a, client_a) = side(&platform, "acme-tel", "+44207946", 1, t0).await;
    let (b, client_b) = side(&platform, "bravo-tel", "+33142685", 11, t0).await;
    let all_calls: Vec<pb::CallRecord> = a.calls.iter().chain(&b.calls).cloned().collect();
    let ack = ingest(&platform, all_calls).await;
    assert_eq!(ack.created_count, 4, "{ack:?}");
    for (res, client) in [(&a, &client_a), (&b, &client_b)] {
        let reported = client
            .report_call_durations("", vec![res.report.clone()])
            .await
            .expect("report");
        assert_eq!(reported.created_count, 1, "{reported:?}");
    }
    let revoked = platform
        .create_api_key(pb::CreateApiKeyRequest {
            request_id: String::new(),
            role: pb::ApiKeyRole::Carrier as i32,
            carrier_id: a.carrier_id.clone(),
            display_name: "to be revoked".into(),
        })
        .await
        .expect("second key for A");
    let revoked_id = revoked
        .api_key
        .as_ref()
        .expect("key metadata")
        .key_id
        .clone();
    platform.revoke_api_key(&revoked_id).await.expect("revoke");

    let clients: Vec<(Principal, Client)> = vec![
        (Principal::NoKey, server.client_with_key("")),
        (Principal::MalformedKey, server.client_with_key("not-a-key")),
        (
            Principal::RevokedKey,
            platform.with_key(revoked.secret).expect("client"),
        ),
        (Principal::CarrierA, client_a.clone()),
        (Principal::CarrierB, client_b.clone()),
        (Principal::Platform, platform.clone()),
    ];
    assert_eq!(
        clients.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        PRINCIPALS
    );
    let fx = Fixture {
        a,
        b,
        missing: missing(t0, far_past),
        window: (t0 - 1_800, t0 + 1_800),
        far_past,
        counter: AtomicU32::new(1),
    };
    let rows = rows();
    let mut markers: Vec<&str> = [&fx.a, &fx.b, &fx.missing]
        .iter()
        .flat_map(|r| r.markers())
        .collect();
    markers.sort_by_key(|m| std::cmp::Reverse(m.len()));

    let mut failures = Vec::new();
    let mut cells = Vec::new();
    for row in 0..rows.len() {
        for p in 0..clients.len() {
            for target in TARGETS {
                cells.push((row, p, target));
            }
        }
    }
    let mut count = 0;
    for pass in ["forward", "reverse"] {
        if pass == "reverse" {
            cells.reverse();
        }
        let mut got: HashMap<(usize, Principal, Target), Got> = HashMap::new();
        for &(r, p, target) in &cells {
            let (principal, client) = &clients[p];
            let row = &rows[r];
            let cell = Cell {
                fx: &fx,
                client,
                target,
                platform: *principal == Principal::Platform,
                caller: if *principal == Principal::CarrierB {
                    Target::B
                } else {
                    Target::A
                },
            };
            let answer = (row.call)(&cell).await;
            count += 1;
            // Empty fields carry nothing.
            let answer = answer.map(|mut seen| {
                seen.retain(|v| !v.is_empty());
                seen
            });
            let answer: Got = answer.map_err(|e| {
                (
                    e.code().unwrap_or(Code::Unknown),
                    match &e {
                        ocx_client::Error::Status { message, .. } => message.clone(),
                        other => other.to_string(),
                    },
                )
            });
            let want = expected(row, *principal, target);
            let code = answer.as_ref().map_or_else(|(c, _)| *c, |_| Code::Ok);
            let cell_name = format!("{pass}: {} as {principal:?} on {target:?}", row.rpc);
            if code != want {
                let detail = match &answer {
                    Ok(_) => String::new(),
                    Err((_, message)) => format!(" ({message})"),
                };
                failures.push(format!(
                    "{cell_name}: expected {want:?}, got {code:?}{detail}"
                ));
            }
            // Whose rows the answer may carry: the caller's own for a carrier key, the
            // addressed carrier's for the platform.
            let owner = match principal {
                Principal::CarrierA => Some(&fx.a),
                Principal::CarrierB => Some(&fx.b),
                Principal::Platform => Some(fx.res(target)),
                _ => None,
            };
            if let (Ok(seen), Some(owner)) = (&answer, owner) {
                let others: Vec<&Res> = [&fx.a, &fx.b]
                    .into_iter()
                    .filter(|o| o.carrier_id != owner.carrier_id)
                    .collect();
                let leaked = leaks(seen, owner, &others);
                if !leaked.is_empty() {
                    failures.push(format!(
                        "{cell_name}: answer carries what is not {}'s: {leaked:?}",
                        owner.carrier_id
                    ));
                }
            }
            got.insert((r, *principal, target), answer);
        }

        // Another carrier's resource must look exactly like a missing one.
        for (r, row) in rows.iter().enumerate() {
            if !row.hides {
                continue;
            }
            for (principal, other) in [
                (Principal::CarrierA, Target::B),
                (Principal::CarrierB, Target::A),
            ] {
                let masked = |t: Target| match &got[&(r, principal, t)] {
                    Ok(seen) => Ok(seen.iter().map(|v| mask(v, &markers)).collect::<Vec<_>>()),
                    Err((code, message)) => Err((*code, mask(message, &markers))),
                };
                let (theirs, nobodys) = (masked(other), masked(Target::Missing));
                if theirs != nobodys {
                    failures.push(format!(
                        "{pass}: {} as {principal:?}: another carrier's resource is told apart \
                         from a missing one: {theirs:?} vs {nobodys:?}",
                        row.rpc
                    ));
                }
            }
        }
    }

    page_tokens_stay_with_their_carrier(&fx, &clients, &mut failures).await;

    assert!(
        failures.is_empty(),
        "{} problem(s) in the authorization matrix:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "matrix: {} rows × {} principals × {} targets, {count} cells in two passes, {:?}",
        rows.len(),
        PRINCIPALS.len(),
        TARGETS.len(),
        started.elapsed()
    );
}

/// A page token carrier A obtained is refused to carrier B (and to the platform asking for B),
/// never a way to A's rows.
async fn page_tokens_stay_with_their_carrier(
    fx: &Fixture,
    clients: &[(Principal, Client)],
    failures: &mut Vec<String>,
) {
    let client = |who: Principal| {
        clients
            .iter()
            .find(|(p, _)| *p == who)
            .map(|(_, c)| c)
            .expect("a client per principal")
    };
    let (a, b, platform) = (
        client(Principal::CarrierA),
        client(Principal::CarrierB),
        client(Principal::Platform),
    );

    // Each list: A's first page of one item, then the same token presented by B (carrier_id
    // empty) and by the platform naming B.
    let lists = ["ListNumbers", "ListConsents", "ListCallRecords"];
    let token_of = |seen: &Seen| {
        seen.iter()
            .find_map(|v| v.strip_prefix("token="))
            .unwrap_or_default()
            .to_owned()
    };
    for list in lists {
        let first_page = match page_of(list, a, String::new(), String::new()).await {
            Ok(seen) => seen,
            Err(e) => {
                failures.push(format!("page tokens: {list} as CarrierA failed: {e}"));
                continue;
            }
        };
        let token = token_of(&first_page);
        if token.is_empty() {
            failures.push(format!(
                "page tokens: {list} as CarrierA with page_size 1 gave no next_page_token"
            ));
            continue;
        }
        // The token works for A itself (so refusals below are about the caller, not the token).
        if let Err(e) = page_of(list, a, String::new(), token.clone()).await {
            failures.push(format!(
                "page tokens: {list}: A's own token refused to A: {e}"
            ));
        }
        for (who, client, carrier_id) in [
            ("CarrierB", b, String::new()),
            (
                "Platform naming bravo-tel",
                platform,
                fx.b.carrier_id.clone(),
            ),
        ] {
            let seen = |s: &Seen| -> Seen {
                s.iter()
                    .filter(|v| !v.starts_with("token="))
                    .cloned()
                    .collect()
            };
            match page_of(list, client, carrier_id, token.clone()).await {
                Err(e) if e.code() == Some(Code::InvalidArgument) => {}
                Err(e) => failures.push(format!(
                    "page tokens: {list}: A's token presented by {who}: expected InvalidArgument, got {e}"
                )),
                Ok(rows) => {
                    let leaked = leaks(&seen(&rows), &fx.b, &[&fx.a]);
                    failures.push(format!(
                        "page tokens: {list}: A's token presented by {who} was accepted \
                         (expected InvalidArgument); rows of A in it: {leaked:?}"
                    ));
                }
            }
        }
    }
}

/// One page of `list` (page size 1) with `page_token`; the rows seen, then `token=<next>`.
async fn page_of(list: &str, c: &Client, carrier_id: String, page_token: String) -> Answer {
    let mut seen: Seen = Vec::new();
    let next = match list {
        "ListNumbers" => {
            let page = c
                .list_numbers(pb::ListNumbersRequest {
                    carrier_id,
                    page_size: 1,
                    page_token,
                    ..Default::default()
                })
                .await?;
            seen.extend(page.phone_numbers.iter().flat_map(number_seen));
            page.next_page_token
        }
        "ListConsents" => {
            let page = c
                .list_consents(pb::ListConsentsRequest {
                    carrier_id,
                    page_size: 1,
                    page_token,
                    ..Default::default()
                })
                .await?;
            for x in &page.consents {
                seen.extend(carrier_of(&x.carrier_id));
                seen.push(x.tenant_id.clone());
            }
            page.next_page_token
        }
        "ListCallRecords" => {
            let page = c
                .list_call_records(pb::ListCallRecordsRequest {
                    carrier_id,
                    page_size: 1,
                    page_token,
                    ..Default::default()
                })
                .await?;
            seen.extend(page.call_records.iter().flat_map(record_seen));
            page.next_page_token
        }
        other => panic!("no lister for {other}"),
    };
    seen.push(format!("token={next}"));
    Ok(seen)
}

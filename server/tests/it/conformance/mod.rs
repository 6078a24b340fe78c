//! The conformance suite every [`Store`] backend must pass: the guarantees the services rely
//! on, checked at the store interface (group commit isolation, gapless per-carrier sequences
//! under concurrency, batch outcomes, ownership, keyset pages, feeds). A backend's test calls
//! [`run_all`] with a way to make a fresh, empty store.

use std::future::Future;
use std::sync::Arc;

use ocx_server::domain::Refusal;
use ocx_server::domain::{
    AssignRequest, AssignmentType, CallDirection, CallRecord, CallType, Capability, Carrier,
    ConsentGrant, ConsentStatus, Contact, IngestOutcome, ItemOutcome, NumberFilter, NumberUpload,
    QualityVerdict, now_micros,
};
use ocx_server::store::{Store, StoreError};
use tonic::Code;

/// Tenants with consent in [`carrier`].
const T1: &str = "00000001-0000-4000-8000-000000000001";
const T2: &str = "00000002-0000-4000-8000-000000000002";

mod calls;
mod durations;
mod numbers;
mod privacy;

/// The words a refusal reaches a person in (the error layer's; the store gives only facts).
fn words(r: &Refusal) -> String {
    ocx_server::error::refusal(r)
}

/// The status code and words a store error that is a refusal reaches a client as; `None` for
/// any other error (or none).
fn refused<T>(result: &Result<T, StoreError>) -> Option<(Code, String)> {
    match result {
        Err(StoreError::Refused(r)) => Some((ocx_server::error::refusal_code(r), words(r))),
        _ => None,
    }
}

/// Runs every check, each on a fresh store from `fresh`.
pub async fn run_all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    failing_job_rolls_back_alone(fresh().await).await;
    sequences_are_gapless_per_carrier_under_concurrency(fresh().await).await;
    upload_outcomes_and_ownership(fresh().await).await;
    pages_are_keyset_and_totals_match(fresh().await).await;
    call_record_ingest_and_feed(fresh().await).await;
    numbers::run_all(&fresh).await;
    calls::run_all(&fresh).await;
    durations::run_all(&fresh).await;
    privacy::run_all(&fresh).await;
}

/// Creates carrier `id` with active consents from tenants [`T1`] and [`T2`].
async fn carrier(store: &dyn Store, id: &str) {
    let c = Carrier {
        carrier_id: id.into(),
        display_name: id.into(),
        create_time: now_micros(),
    };
    store.create_carrier(c).await.expect("create carrier");
    for tenant in [T1, T2] {
        let grant = ConsentGrant {
            carrier_id: id.into(),
            tenant_id: tenant.into(),
            status: ConsentStatus::Active,
            countries: Vec::new(),
            contact: Contact::default(),
        };
        store.grant_consent(grant).await.expect("consent");
    }
}

/// A user assignment of `number` in `tenant` to `sip_uri` (user id `user-1`).
fn assign(number: &str, tenant: &str, sip_uri: &str) -> AssignRequest {
    AssignRequest {
        number: number.into(),
        tenant_id: tenant.into(),
        assignment_type: AssignmentType::User,
        sip_uri: sip_uri.into(),
        user_id: "user-1".into(),
    }
}

/// An upload of `number` for `tenant` with the default capabilities.
fn upload(number: &str, tenant: &str) -> NumberUpload {
    NumberUpload {
        number: number.into(),
        tenant_id: tenant.into(),
        capabilities: Capability::DEFAULTS.to_vec(),
        civic_address_id: String::new(),
        location_id: String::new(),
        country_code: String::new(),
    }
}

/// Jobs that commit together: a failing job (a duplicate carrier) leaves no trace and does not
/// undo the jobs grouped with it.
async fn failing_job_rolls_back_alone(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let id = if i % 4 == 0 {
                "acme".to_owned()
            } else {
                format!("c{i:02}")
            };
            let c = Carrier {
                carrier_id: id,
                display_name: "x".into(),
                create_time: now_micros(),
            };
            store.create_carrier(c).await
        }));
    }
    let mut failed = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => {}
            Err(StoreError::Refused(r))
                if ocx_server::error::refusal_code(&r) == Code::AlreadyExists =>
            {
                failed += 1
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(failed, 10);
    let page = store.list_carriers(None, 100).await.expect("list");
    assert_eq!(page.total, 31);
    assert_eq!(page.items.len(), 31);
}

/// Concurrent writers for two carriers: each carrier's events are 1..=n with no gap.
async fn sequences_are_gapless_per_carrier_under_concurrency(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    carrier(store.as_ref(), "bravo").await;
    let mut tasks = Vec::new();
    for w in 0..8u32 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let who = if w % 2 == 0 { "acme" } else { "bravo" };
            for b in 0..10u32 {
                let items = (0..5)
                    .map(|i| upload(&format!("+44207{w}{b:02}{i:03}"), T1))
                    .collect();
                let out = store.upload_numbers(who, items).await.expect("upload");
                assert!(out.iter().all(|o| matches!(o, ItemOutcome::Created(_))));
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    for who in ["acme", "bravo"] {
        let events = store
            .number_events_after(who, 0, 1000)
            .await
            .expect("events");
        let seqs: Vec<i64> = events.iter().map(|e| e.sequence).collect();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>(), "{who}");
        assert!(events.iter().all(|e| e.number.carrier_id == who));
        assert_eq!(store.number_event_head(who).await.expect("head"), 200);
    }
}

/// Upload outcomes, another carrier's number, assignment versions.
async fn upload_outcomes_and_ownership(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    carrier(store.as_ref(), "bravo").await;
    let out = store
        .upload_numbers("acme", vec![upload("+441", T1), upload("+441", T1)])
        .await
        .expect("upload");
    assert!(matches!(&out[0], ItemOutcome::Created(n) if n.version == 1));
    assert!(matches!(&out[1], ItemOutcome::Unchanged(_)));
    let out = store
        .upload_numbers("bravo", vec![upload("+441", T2)])
        .await
        .expect("upload");
    assert!(matches!(&out[0], ItemOutcome::Rejected(r) if !words(r).contains("acme")));
    assert!(
        store
            .get_number("bravo", "+441")
            .await
            .expect("get")
            .is_none()
    );
    let assign = AssignRequest {
        number: "+441".into(),
        tenant_id: T1.into(),
        assignment_type: AssignmentType::User,
        sip_uri: "sip:a@b.c".into(),
        user_id: String::new(),
    };
    assert_eq!(
        store
            .assign_number(assign.clone())
            .await
            .expect("assign")
            .version,
        2
    );
    assert_eq!(store.assign_number(assign).await.expect("again").version, 2);
    let wrong = store.unassign_number("+441", T2).await;
    assert!(matches!(
        refused(&wrong),
        Some((Code::FailedPrecondition, _))
    ));
    assert_eq!(
        store
            .unassign_number("+441", T1)
            .await
            .expect("unassign")
            .version,
        3
    );
}

/// Keyset pages: in order, each item once, totals for the filter.
async fn pages_are_keyset_and_totals_match(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    let items = (0..25)
        .map(|i| upload(&format!("+4420{i:03}"), if i % 2 == 0 { T1 } else { T2 }))
        .collect();
    store.upload_numbers("acme", items).await.expect("upload");
    let filter = NumberFilter {
        tenant_id: Some(T1.into()),
        ..NumberFilter::default()
    };
    let mut after = None;
    let mut seen = Vec::new();
    loop {
        let page = store
            .list_numbers("acme", filter.clone(), after.clone(), 4)
            .await
            .expect("page");
        assert_eq!(page.total, 13);
        seen.extend(page.items.iter().map(|n| n.number.clone()));
        if !page.more {
            break;
        }
        after = page.items.last().map(|n| n.number.clone());
    }
    let expected: Vec<String> = (0..25)
        .filter(|i| i % 2 == 0)
        .map(|i| format!("+4420{i:03}"))
        .collect();
    assert_eq!(seen, expected);
}

/// An inbound call record to `number`, 1 s long, whose content hash follows its version.
fn record(call_id: &str, version: i64, number: &str) -> CallRecord {
    CallRecord {
        call_id: call_id.into(),
        correlation_id: String::new(),
        version,
        carrier_id: String::new(),
        tenant_id: T1.into(),
        call_type: CallType::UserIn,
        direction: CallDirection::Inbound,
        caller_number: "+33100".into(),
        callee_number: number.into(),
        user_sip_uri: String::new(),
        invite_time: None,
        start_time: 1_000_000,
        end_time: 2_000_000,
        duration_us: 1_000_000,
        final_sip_code: 200,
        final_sip_phrase: "OK".into(),
        q850_cause: 16,
        successful: true,
        destination_context: None,
        usage_country_code: String::new(),
        trunk_fqdn: String::new(),
        media_streams: Vec::new(),
        quality: QualityVerdict::Unclassified,
        poor_due_to: Vec::new(),
        content_hash: version * 7,
        feed_sequence: 0,
        update_time: 0,
    }
}

/// Ingest outcomes by call id and version, ownership by number, the feed in commit order.
async fn call_record_ingest_and_feed(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    store
        .upload_numbers("acme", vec![upload("+441", T1)])
        .await
        .expect("upload");
    let out = store
        .ingest_call_records(vec![
            record("a", 1, "+441"),
            record("b", 1, "+441"),
            record("c", 1, "+449"),
        ])
        .await
        .expect("ingest");
    assert_eq!(out[0], IngestOutcome::Created("acme".into()));
    assert!(matches!(&out[2], IngestOutcome::Rejected(_)));
    let mut same_version_other_content = record("a", 1, "+441");
    same_version_other_content.content_hash = 99;
    let out = store
        .ingest_call_records(vec![
            record("a", 1, "+441"),
            same_version_other_content,
            record("b", 2, "+441"),
        ])
        .await
        .expect("ingest");
    assert_eq!(out[0], IngestOutcome::Unchanged("acme".into()));
    assert!(matches!(&out[1], IngestOutcome::Rejected(r) if words(r).contains("stale")));
    assert_eq!(out[2], IngestOutcome::Revised("acme".into()));
    let feed = store.call_records_after("acme", 0, 10).await.expect("feed");
    let got: Vec<(i64, &str, i64)> = feed
        .iter()
        .map(|r| (r.feed_sequence, r.call_id.as_str(), r.version))
        .collect();
    assert_eq!(got, [(1, "a", 1), (3, "b", 2)]);
    assert_eq!(store.call_record_head("acme").await.expect("head"), 3);
    assert!(
        store
            .get_call_record("other", "a")
            .await
            .expect("get")
            .is_none()
    );
}

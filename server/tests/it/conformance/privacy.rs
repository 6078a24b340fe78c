//! Conformance checks for retention, erasure, audit and request ids.

use std::future::Future;
use std::sync::Arc;

use super::{T1, T2, assign, carrier, record, refused, upload};
use ocx_server::domain::{
    AssignmentType, AuditEvent, AuditFilter, CallRecord, DAY_US, DurationOutcome, DurationReport,
    EraseCounts, IngestOutcome, ItemOutcome, Micros, NumberEventType, NumberFilter, NumberState,
    PurgeCounts, RetentionPolicy, now_micros,
};
use ocx_server::store::Store;
use ocx_server::store::request::{RequestKey, with_request};
use tonic::Code;

/// Runs this module's checks, each on a fresh store.
pub async fn run_all<F, Fut>(fresh: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    retention_policy_set_and_get(fresh().await).await;
    purge_follows_the_policy(fresh().await).await;
    erase_tenant_removes_only_that_tenant(fresh().await).await;
    audit_append_filter_and_pages(fresh().await).await;
    request_ids_answer_retries_once(fresh().await).await;
    concurrent_retries_of_one_request_id(fresh().await).await;
    sequences_are_never_drawn_twice_after_deletions(fresh().await).await;
}

/// A call record of `tenant` to `number` starting at `start`.
fn call(call_id: &str, tenant: &str, number: &str, start: Micros) -> CallRecord {
    CallRecord {
        tenant_id: tenant.into(),
        start_time: start,
        end_time: start + 1_000_000,
        ..record(call_id, 1, number)
    }
}

/// A one-second duration report.
fn report(
    record_id: &str,
    call_id: &str,
    caller: &str,
    callee: &str,
    start: Micros,
) -> DurationReport {
    DurationReport {
        record_id: record_id.into(),
        call_id: call_id.into(),
        correlation_id: String::new(),
        caller_number: caller.into(),
        callee_number: callee.into(),
        start_time: start,
        duration_us: 1_000_000,
    }
}

fn key(request_id: &str, rpc: &'static str, fingerprint: u8) -> RequestKey {
    RequestKey {
        key_id: "key-1".into(),
        request_id: request_id.into(),
        rpc,
        fingerprint: [fingerprint; 32],
    }
}

async fn durations(store: &dyn Store, carrier_id: &str) -> Vec<String> {
    let (items, more) = store
        .list_call_durations(carrier_id, (None, None), None, 1000)
        .await
        .expect("durations");
    assert!(!more);
    items.into_iter().map(|(d, _)| d.report.record_id).collect()
}

fn audit(time: Micros, i: usize) -> AuditEvent {
    AuditEvent {
        id: 0,
        time,
        key_id: format!("k{}", i % 3),
        carrier_id: format!("c{}", i % 2),
        role: "carrier".into(),
        rpc: format!("ocx.v1.S/M{}", i % 5),
        resource_kind: "numbers".into(),
        item_count: i as i64,
        outcome: "OK".into(),
        source: format!("192.0.2.{}", i % 7),
    }
}

/// The defaults until a policy is set; then the policy as set, with its update time.
async fn retention_policy_set_and_get(store: Arc<dyn Store>) {
    assert_eq!(
        store.retention_policy().await.expect("policy"),
        RetentionPolicy::default()
    );
    let wanted = RetentionPolicy {
        call_record_days: 7,
        call_duration_days: 8,
        released_number_days: 9,
        audit_event_days: 400,
        update_time: None,
    };
    let before = now_micros();
    let set = store
        .set_retention_policy(wanted)
        .await
        .expect("set policy");
    assert!(set.update_time.is_some_and(|t| t >= before));
    assert_eq!(
        RetentionPolicy {
            update_time: None,
            ..set
        },
        wanted
    );
    assert_eq!(store.retention_policy().await.expect("policy"), set);
    let again = store
        .set_retention_policy(RetentionPolicy::default())
        .await
        .expect("set again");
    assert_eq!(store.retention_policy().await.expect("policy"), again);
    assert_eq!(again.call_record_days, 90);
}

/// Purges delete exactly what the policy expires as of `now` (later `now`s stand for time
/// passing), released numbers with their events, and nothing else; a purge under a request id
/// answers its retry with the first counts.
async fn purge_follows_the_policy(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    let now = now_micros();
    store
        .upload_numbers("acme", vec![upload("+441", T1), upload("+442", T1)])
        .await
        .expect("upload");
    store
        .release_numbers("acme", vec!["+441".into()])
        .await
        .expect("release");
    let out = store
        .ingest_call_records(vec![
            call("old", T1, "+442", 1_000_000),
            call("new", T1, "+442", now),
        ])
        .await
        .expect("ingest");
    assert!(out.iter().all(|o| matches!(o, IngestOutcome::Created(_))));
    let out = store
        .report_call_durations(
            "acme",
            vec![
                report("d-old", "old", "+33100", "+442", 1_000_000),
                report("d-new", "new", "+33100", "+442", now),
            ],
        )
        .await
        .expect("report");
    assert_eq!(out, [DurationOutcome::Created, DurationOutcome::Created]);
    // A correction, so that the old report has history.
    let mut corrected = report("d-old", "old", "+33100", "+442", 1_000_000);
    corrected.duration_us = 2_000_000;
    let out = store
        .report_call_durations("acme", vec![corrected])
        .await
        .expect("correct");
    assert_eq!(out, [DurationOutcome::Corrected]);
    store
        .append_audit_events(vec![audit(1, 0), audit(now, 1), audit(now, 2)])
        .await
        .expect("audit");

    // Now, with the defaults: what started in 1970 goes.
    let counts = store.purge_expired(now_micros()).await.expect("purge");
    assert_eq!(
        counts,
        PurgeCounts {
            call_records: 1,
            call_durations: 1,
            released_numbers: 0,
            number_events: 0,
            audit_events: 1,
        }
    );
    assert!(
        store
            .get_call_record("acme", "old")
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        store
            .get_call_record("acme", "new")
            .await
            .expect("get")
            .is_some()
    );
    assert_eq!(durations(store.as_ref(), "acme").await, ["d-new"]);

    // One day of calls and reports: two days on, the rest goes.
    store
        .set_retention_policy(RetentionPolicy {
            call_record_days: 1,
            call_duration_days: 1,
            ..RetentionPolicy::default()
        })
        .await
        .expect("policy");
    let counts = store.purge_expired(now + 2 * DAY_US).await.expect("purge");
    assert_eq!(
        counts,
        PurgeCounts {
            call_records: 1,
            call_durations: 1,
            ..PurgeCounts::default()
        }
    );
    assert!(
        store
            .get_call_record("acme", "new")
            .await
            .expect("get")
            .is_none()
    );
    assert!(durations(store.as_ref(), "acme").await.is_empty());
    assert!(
        store
            .get_number("acme", "+441")
            .await
            .expect("get")
            .is_some()
    );

    // Another carrier provisions the released number: a row of its own.
    carrier(store.as_ref(), "bravo").await;
    let out = store
        .upload_numbers("bravo", vec![upload("+441", T2)])
        .await
        .expect("upload");
    assert!(matches!(&out[0], ItemOutcome::Created(n) if n.version == 1));

    // 31 days on, acme's released number goes with its two events; the other stays, and so
    // does bravo's row of the same number.
    let counts = store.purge_expired(now + 31 * DAY_US).await.expect("purge");
    assert_eq!(
        counts,
        PurgeCounts {
            released_numbers: 1,
            number_events: 2,
            ..PurgeCounts::default()
        }
    );
    assert!(
        store
            .get_number("acme", "+441")
            .await
            .expect("get")
            .is_none()
    );
    let page = store
        .list_numbers("acme", NumberFilter::default(), None, 10)
        .await
        .expect("list");
    assert_eq!(page.total, 1);
    assert_eq!(page.items[0].number, "+442");
    let kept = store
        .get_number("bravo", "+441")
        .await
        .expect("get")
        .expect("bravo's row of +441 is not acme's to purge");
    assert_eq!(kept.state, NumberState::Provisioned);
    let events = store
        .number_events_after("acme", 0, 10)
        .await
        .expect("events");
    assert_eq!(
        events
            .iter()
            .map(|e| (e.sequence, e.number.number.as_str()))
            .collect::<Vec<_>>(),
        [(2, "+442")]
    );
    let (left, _) = store
        .list_audit_events(AuditFilter::default(), None, 10)
        .await
        .expect("audit");
    assert_eq!(left.len(), 2);

    // A year and more on, the audit trail's turn; under a request id, whose retry answers
    // the same although nothing is left to purge.
    let purge = key("purge-1", "PurgeExpiredData", 1);
    let later = now + 400 * DAY_US;
    let counts = with_request(Some(purge.clone()), store.purge_expired(later))
        .await
        .expect("purge");
    assert_eq!(
        counts,
        PurgeCounts {
            audit_events: 2,
            ..PurgeCounts::default()
        }
    );
    let retried = with_request(Some(purge.clone()), store.purge_expired(later))
        .await
        .expect("retry");
    assert_eq!(retried, counts);
    let other = with_request(
        Some(key("purge-1", "PurgeExpiredData", 2)),
        store.purge_expired(later),
    )
    .await;
    assert!(
        matches!(refused(&other), Some((Code::AlreadyExists, _))),
        "{other:?}"
    );
    assert_eq!(
        store.purge_expired(later).await.expect("purge"),
        PurgeCounts::default()
    );
    assert!(
        store
            .get_number("acme", "+442")
            .await
            .expect("get")
            .is_some()
    );
}

/// Erasure deletes the tenant's call records and the reports matching them or naming its
/// numbers, unassigns its numbers (one event each) and blanks the assignee in past events, and
/// forgets recorded request ids; another tenant's data stays as it was.
async fn erase_tenant_removes_only_that_tenant(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    let now = now_micros();
    store
        .upload_numbers(
            "acme",
            vec![upload("+441", T1), upload("+442", T1), upload("+443", T2)],
        )
        .await
        .expect("upload");
    store
        .assign_number(assign("+441", T1, "sip:secret@t1.example"))
        .await
        .expect("assign");
    let kept = store
        .assign_number(assign("+443", T2, "sip:keep@t2.example"))
        .await
        .expect("assign");
    store
        .ingest_call_records(vec![
            call("c1", T1, "+441", now),
            call("c2", T2, "+443", now),
        ])
        .await
        .expect("ingest");
    store
        .report_call_durations(
            "acme",
            vec![
                report("d1", "c1", "+33100", "+441", now),
                report("d2", "", "+442", "+33200", now),
                report("d3", "c2", "+33100", "+443", now),
                report("d4", "", "+33300", "+33400", now),
            ],
        )
        .await
        .expect("report");
    // A write under a request id, answered from its record until the erasure.
    let earlier = key("upload-1", "UploadNumbers", 1);
    let first = with_request(
        Some(earlier.clone()),
        store.upload_numbers("acme", vec![upload("+444", T2)]),
    )
    .await
    .expect("upload");
    assert!(matches!(&first[0], ItemOutcome::Created(_)));
    let head = store.number_event_head("acme").await.expect("head");
    assert_eq!(head, 6);

    let erase = key("erase-1", "EraseTenantData", 1);
    let counts = with_request(Some(erase.clone()), store.erase_tenant(T1))
        .await
        .expect("erase");
    assert_eq!(
        counts,
        EraseCounts {
            call_records: 1,
            call_durations: 2,
            numbers: 1,
            number_events: 1,
        }
    );
    // Its retry answers the same (the erasure's own record is written after the deletes).
    let retried = with_request(Some(erase), store.erase_tenant(T1))
        .await
        .expect("retry");
    assert_eq!(retried, counts);

    assert!(
        store
            .get_call_record("acme", "c1")
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        store
            .get_call_record("acme", "c2")
            .await
            .expect("get")
            .is_some()
    );
    assert_eq!(durations(store.as_ref(), "acme").await, ["d3", "d4"]);
    let n = store
        .get_number("acme", "+441")
        .await
        .expect("get")
        .expect("+441 stays");
    assert_eq!(
        (n.state, n.assignment.clone(), n.version),
        (NumberState::Provisioned, None, 3)
    );
    assert_eq!(
        store.get_number("acme", "+443").await.expect("get"),
        Some(kept.clone())
    );
    let events = store
        .number_events_after("acme", 0, 100)
        .await
        .expect("events");
    assert_eq!(events.len(), 7);
    let unassigned = &events[6];
    assert_eq!(
        (
            unassigned.sequence,
            unassigned.event_type,
            &unassigned.number
        ),
        (7, NumberEventType::Unassigned, &n)
    );
    let assigned = &events[3];
    assert_eq!(assigned.event_type, NumberEventType::Assigned);
    let a = assigned
        .number
        .assignment
        .clone()
        .expect("kept what happened");
    assert_eq!(
        (a.assignment_type, a.sip_uri.as_str(), a.user_id.as_str()),
        (AssignmentType::User, "", "")
    );
    assert_eq!(events[4].number, kept);
    for e in &events {
        if let Some(a) = &e.number.assignment
            && e.number.tenant_id == T1
        {
            assert!(a.sip_uri.is_empty() && a.user_id.is_empty(), "{e:?}");
        }
    }

    // The request id's record is gone: the retry runs again and finds the number there.
    let again = with_request(
        Some(earlier),
        store.upload_numbers("acme", vec![upload("+444", T2)]),
    )
    .await
    .expect("upload");
    assert!(matches!(&again[0], ItemOutcome::Unchanged(_)), "{again:?}");

    // Nothing left to erase.
    assert_eq!(
        store.erase_tenant(T1).await.expect("erase again"),
        EraseCounts::default()
    );
    assert_eq!(store.number_event_head("acme").await.expect("head"), 7);
}

/// Audit events: newest first, filters, pages by `before` with no repeat or gap.
async fn audit_append_filter_and_pages(store: Arc<dyn Store>) {
    let base = now_micros();
    for chunk in (0..30usize).collect::<Vec<_>>().chunks(10) {
        let events = chunk.iter().map(|&i| audit(base + i as i64, i)).collect();
        store.append_audit_events(events).await.expect("append");
    }
    store
        .append_audit_events(Vec::new())
        .await
        .expect("append nothing");

    let all = async |filter: AuditFilter, limit: usize| {
        let mut before = None;
        let mut seen: Vec<AuditEvent> = Vec::new();
        loop {
            let (page, more) = store
                .list_audit_events(filter.clone(), before, limit)
                .await
                .expect("page");
            assert!(page.len() <= limit);
            if more {
                assert_eq!(page.len(), limit);
            }
            seen.extend(page);
            if !more {
                break;
            }
            before = seen.last().map(|e| e.id);
        }
        assert!(seen.windows(2).all(|w| w[0].id > w[1].id));
        seen.iter().map(|e| e.item_count).collect::<Vec<i64>>()
    };
    let everything = all(AuditFilter::default(), 7).await;
    assert_eq!(everything, (0..30).rev().collect::<Vec<_>>());
    // Pages that end exactly at the last event.
    assert_eq!(all(AuditFilter::default(), 10).await, everything);
    let (first, more) = store
        .list_audit_events(AuditFilter::default(), None, 30)
        .await
        .expect("all");
    assert!(!more);
    assert_eq!(first.len(), 30);
    let e = &first[29];
    assert_eq!(
        (
            e.time,
            e.key_id.as_str(),
            e.carrier_id.as_str(),
            e.role.as_str(),
            e.rpc.as_str(),
            e.resource_kind.as_str(),
            e.outcome.as_str(),
            e.source.as_str()
        ),
        (
            base,
            "k0",
            "c0",
            "carrier",
            "ocx.v1.S/M0",
            "numbers",
            "OK",
            "192.0.2.0"
        )
    );
    let (page, more) = store
        .list_audit_events(AuditFilter::default(), None, 29)
        .await
        .expect("29");
    assert!(more);
    assert_eq!(page.len(), 29);

    let by_key = all(
        AuditFilter {
            key_id: Some("k1".into()),
            ..AuditFilter::default()
        },
        3,
    )
    .await;
    assert_eq!(
        by_key,
        (0..30).rev().filter(|i| i % 3 == 1).collect::<Vec<_>>()
    );
    let narrow = all(
        AuditFilter {
            carrier_id: Some("c0".into()),
            rpc: Some("ocx.v1.S/M0".into()),
            ..AuditFilter::default()
        },
        2,
    )
    .await;
    assert_eq!(narrow, [20, 10, 0]);
    let window = all(
        AuditFilter {
            start: Some(base + 10),
            end: Some(base + 20),
            ..AuditFilter::default()
        },
        4,
    )
    .await;
    assert_eq!(window, (10..20).rev().collect::<Vec<_>>());
    assert!(
        all(
            AuditFilter {
                key_id: Some("nobody".into()),
                ..AuditFilter::default()
            },
            5
        )
        .await
        .is_empty()
    );
}

/// A write under a request id is done once: the retry gets the first outcome, the same id
/// for another request is ALREADY_EXISTS, another key's id is its own, and a write that failed
/// left no record.
async fn request_ids_answer_retries_once(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    let k = key("req-1", "UploadNumbers", 1);
    let first = with_request(
        Some(k.clone()),
        store.upload_numbers("acme", vec![upload("+441", T1)]),
    )
    .await
    .expect("upload");
    assert!(matches!(&first[0], ItemOutcome::Created(n) if n.version == 1));
    let again = with_request(
        Some(k.clone()),
        store.upload_numbers("acme", vec![upload("+441", T1)]),
    )
    .await
    .expect("retry");
    assert_eq!(again, first);
    assert_eq!(store.number_event_head("acme").await.expect("head"), 1);

    let different = with_request(
        Some(key("req-1", "UploadNumbers", 2)),
        store.upload_numbers("acme", vec![upload("+442", T1)]),
    )
    .await;
    assert!(
        matches!(refused(&different), Some((Code::AlreadyExists, m)) if m.contains("req-1")),
        "{different:?}"
    );
    assert!(
        store
            .get_number("acme", "+442")
            .await
            .expect("get")
            .is_none()
    );
    let other_rpc = with_request(
        Some(key("req-1", "ReleaseNumbers", 1)),
        store.release_numbers("acme", vec!["+441".into()]),
    )
    .await;
    assert!(matches!(
        refused(&other_rpc),
        Some((Code::AlreadyExists, _))
    ));
    // The same id under another API key is another request.
    let other_key = RequestKey {
        key_id: "key-2".into(),
        ..k.clone()
    };
    let out = with_request(
        Some(other_key),
        store.upload_numbers("acme", vec![upload("+441", T1)]),
    )
    .await
    .expect("other key");
    assert!(matches!(&out[0], ItemOutcome::Unchanged(_)));

    // A release retried: the retry answers `Updated` as the first time, not `Unchanged`.
    let r = key("req-2", "ReleaseNumbers", 1);
    let released = with_request(
        Some(r.clone()),
        store.release_numbers("acme", vec!["+441".into()]),
    )
    .await
    .expect("release");
    assert!(matches!(&released[0], ItemOutcome::Updated(_)));
    let retried = with_request(Some(r), store.release_numbers("acme", vec!["+441".into()]))
        .await
        .expect("retry");
    assert_eq!(retried, released);
    assert_eq!(store.number_event_head("acme").await.expect("head"), 2);

    // A write that failed recorded nothing: its retry runs again.
    let a = key("req-3", "AssignNumber", 1);
    let failed = with_request(
        Some(a.clone()),
        store.assign_number(assign("+449", T1, "sip:x@y.z")),
    )
    .await;
    assert!(
        matches!(refused(&failed), Some((Code::NotFound, _))),
        "{failed:?}"
    );
    store
        .upload_numbers("acme", vec![upload("+449", T1)])
        .await
        .expect("upload");
    let n = with_request(
        Some(a.clone()),
        store.assign_number(assign("+449", T1, "sip:x@y.z")),
    )
    .await
    .expect("assign");
    assert_eq!((n.version, n.state), (2, NumberState::Assigned));
    // Then it is recorded: after an unassign, the retry still answers the assignment.
    store.unassign_number("+449", T1).await.expect("unassign");
    let replayed = with_request(
        Some(a),
        store.assign_number(assign("+449", T1, "sip:x@y.z")),
    )
    .await
    .expect("replay");
    assert_eq!(replayed, n);
    assert_eq!(
        store
            .get_number("acme", "+449")
            .await
            .expect("get")
            .map(|n| (n.version, n.state)),
        Some((3, NumberState::Provisioned))
    );
    // Without a request id, nothing is recorded or replayed.
    let plain = store
        .upload_numbers("acme", vec![upload("+441", T1)])
        .await
        .expect("plain");
    assert!(matches!(&plain[0], ItemOutcome::Created(n) if n.version == 3));
}

/// Retries of one request id sent at once (as from a client that timed out): one write, and
/// every caller gets its outcome.
async fn concurrent_retries_of_one_request_id(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    let k = key("req-9", "UploadNumbers", 9);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, k) = (Arc::clone(&store), k.clone());
        tasks.push(tokio::spawn(async move {
            let items = (0..5).map(|i| upload(&format!("+4460{i}"), T1)).collect();
            with_request(Some(k), store.upload_numbers("acme", items)).await
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.expect("task").expect("upload"));
    }
    assert!(
        outcomes[0]
            .iter()
            .all(|o| matches!(o, ItemOutcome::Created(_)))
    );
    assert!(outcomes.iter().all(|o| *o == outcomes[0]));
    assert_eq!(store.number_event_head("acme").await.expect("head"), 5);
}

/// Retention deletes a carrier's newest events and records; the sequences they had stay used:
/// the next event and the next record get the sequence after them, and the heads never go back.
/// (A follower that had seen them would otherwise skip what came under their old sequences.)
async fn sequences_are_never_drawn_twice_after_deletions(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    store
        .upload_numbers("acme", vec![upload("+441", T1), upload("+442", T1)])
        .await
        .expect("upload");
    store
        .release_numbers("acme", vec!["+442".into()])
        .await
        .expect("release");
    let out = store
        .ingest_call_records(vec![
            call("old-1", T1, "+441", 1_000_000),
            call("old-2", T1, "+441", 2_000_000),
        ])
        .await
        .expect("ingest");
    assert!(out.iter().all(|o| matches!(o, IngestOutcome::Created(_))));
    assert_eq!(store.number_event_head("acme").await.expect("head"), 3);
    assert_eq!(store.call_record_head("acme").await.expect("head"), 2);

    // Far enough ahead that the released number (event 3) and both records (1, 2) expire.
    let later = now_micros() + 4000 * DAY_US;
    let counts = store.purge_expired(later).await.expect("purge");
    assert_eq!((counts.released_numbers, counts.call_records), (1, 2));
    assert_eq!(store.number_event_head("acme").await.expect("head"), 3);
    assert_eq!(store.call_record_head("acme").await.expect("head"), 2);

    store
        .assign_number(assign("+441", T1, "sip:a@example.com"))
        .await
        .expect("assign");
    let events = store
        .number_events_after("acme", 2, 10)
        .await
        .expect("events");
    let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, [4], "the event after a purged event 3 is 4");
    let out = store
        .ingest_call_records(vec![call("new", T1, "+441", now_micros())])
        .await
        .expect("ingest");
    assert_eq!(out, [IngestOutcome::Created("acme".into())]);
    let feed = store.call_records_after("acme", 0, 10).await.expect("feed");
    let got: Vec<(i64, &str)> = feed
        .iter()
        .map(|r| (r.feed_sequence, r.call_id.as_str()))
        .collect();
    assert_eq!(
        got,
        [(3, "new")],
        "the record after purged records 1 and 2 is 3"
    );
}

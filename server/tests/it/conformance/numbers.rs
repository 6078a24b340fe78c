//! Conformance checks for numbers, assignments and number events.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use super::{T1, T2, assign, carrier, refused, upload, words};
use ocx_server::domain::{
    AssignRequest, AssignmentType, Capability, ItemOutcome, NumberEventType, NumberFilter,
    NumberState, PhoneNumber, Refusal, now_micros,
};
use ocx_server::store::Store;
use tonic::Code;

/// Runs this module's checks, each on a fresh store.
pub async fn run_all<F, Fut>(fresh: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    release_outcomes_and_events(fresh().await).await;
    events_page_by_after_and_limit(fresh().await).await;
    list_filters_and_isolation(fresh().await).await;
    assign_and_unassign_rules(fresh().await).await;
    upload_updates_and_moves(fresh().await).await;
    concurrent_uploads_of_the_same_numbers(fresh().await).await;
    concurrent_assign_unassign_of_one_number(fresh().await).await;
}

/// The number of an outcome that carries one.
fn number_of(outcome: &ItemOutcome) -> &PhoneNumber {
    match outcome {
        ItemOutcome::Created(n) | ItemOutcome::Unchanged(n) | ItemOutcome::Updated(n) => n,
        ItemOutcome::Rejected(r) => panic!("rejected: {}", words(r)),
    }
}

/// Release: `Updated` then `Unchanged`, unknown and assigned numbers rejected, another
/// carrier's number "not found"; each release is one event with the released number; a
/// released number can be provisioned again by another carrier, in that carrier's log.
async fn release_outcomes_and_events(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    carrier(store.as_ref(), "bravo").await;
    store
        .upload_numbers("acme", vec![upload("+441", T1), upload("+442", T1)])
        .await
        .expect("upload");
    store
        .assign_number(assign("+442", T1, "sip:a@b.c"))
        .await
        .expect("assign");
    let out = store
        .release_numbers(
            "acme",
            vec!["+441".into(), "+441".into(), "+449".into(), "+442".into()],
        )
        .await
        .expect("release");
    assert!(
        matches!(&out[0], ItemOutcome::Updated(n) if n.state == NumberState::Released && n.version == 2),
        "{out:?}"
    );
    assert!(
        matches!(&out[1], ItemOutcome::Unchanged(n) if n.state == NumberState::Released && n.version == 2),
        "{out:?}"
    );
    assert_eq!(out[2], ItemOutcome::Rejected(Refusal::NumberNotFound));
    assert_eq!(words(&Refusal::NumberNotFound), "number not found");
    assert!(
        matches!(&out[3], ItemOutcome::Rejected(r) if words(r).contains("unassign")),
        "{out:?}"
    );
    let again = store
        .release_numbers("acme", vec!["+441".into()])
        .await
        .expect("release again");
    assert!(matches!(&again[0], ItemOutcome::Unchanged(n) if n.version == 2));
    // Another carrier cannot see or release it.
    let foreign = store
        .release_numbers("bravo", vec!["+442".into()])
        .await
        .expect("foreign release");
    assert_eq!(foreign[0], ItemOutcome::Rejected(Refusal::NumberNotFound));

    let events = store
        .number_events_after("acme", 0, 100)
        .await
        .expect("events");
    let got: Vec<(i64, NumberEventType, &str, NumberState, i64)> = events
        .iter()
        .map(|e| {
            (
                e.sequence,
                e.event_type,
                e.number.number.as_str(),
                e.number.state,
                e.number.version,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                1,
                NumberEventType::Provisioned,
                "+441",
                NumberState::Provisioned,
                1
            ),
            (
                2,
                NumberEventType::Provisioned,
                "+442",
                NumberState::Provisioned,
                1
            ),
            (
                3,
                NumberEventType::Assigned,
                "+442",
                NumberState::Assigned,
                2
            ),
            (
                4,
                NumberEventType::Released,
                "+441",
                NumberState::Released,
                2
            ),
        ]
    );
    assert_eq!(events[3].number, *number_of(&out[0]));
    assert_eq!(events[3].event_time, number_of(&out[0]).update_time);

    // Released: free for anyone. Each carrier keeps its own history of the number: the new
    // holder starts at version 1, and the carrier that released it still reads its released
    // row (until the retention policy purges it), never the new holder's.
    let released = number_of(&out[0]).clone();
    let out = store
        .upload_numbers("bravo", vec![upload("+441", T2)])
        .await
        .expect("upload again");
    let n = match &out[0] {
        ItemOutcome::Created(n) => n.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (n.carrier_id.as_str(), n.tenant_id.as_str(), n.version),
        ("bravo", T2, 1)
    );
    assert_eq!(
        store.get_number("acme", "+441").await.expect("get"),
        Some(released.clone()),
        "the released row stays the releasing carrier's"
    );
    assert_eq!(
        store.get_number("bravo", "+441").await.expect("get"),
        Some(n.clone())
    );
    let bravo = store
        .number_events_after("bravo", 0, 100)
        .await
        .expect("events");
    assert_eq!(bravo.len(), 1);
    assert_eq!(
        (bravo[0].sequence, bravo[0].event_type, &bravo[0].number),
        (1, NumberEventType::Provisioned, &n)
    );
    assert_eq!(store.number_event_head("acme").await.expect("head"), 4);
    assert_eq!(store.number_event_head("bravo").await.expect("head"), 1);
    // While bravo holds it, acme cannot provision it again; the platform assigns bravo's.
    let out = store
        .upload_numbers("acme", vec![upload("+441", T1)])
        .await
        .expect("upload");
    assert_eq!(out, [ItemOutcome::Rejected(Refusal::NumberUnavailable)]);
    let assigned = store
        .assign_number(assign("+441", T2, "sip:b@t2.example"))
        .await
        .expect("assign bravo's");
    assert_eq!(
        (assigned.carrier_id.as_str(), assigned.version),
        ("bravo", 2)
    );
    store.unassign_number("+441", T2).await.expect("unassign");
    // Once bravo releases it too, acme's own history goes on where it stopped.
    let out = store
        .release_numbers("bravo", vec!["+441".into()])
        .await
        .expect("release");
    assert!(matches!(&out[0], ItemOutcome::Updated(n) if n.state == NumberState::Released));
    let out = store
        .upload_numbers("acme", vec![upload("+441", T1)])
        .await
        .expect("upload");
    let again = match &out[0] {
        ItemOutcome::Created(n) => n.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (again.carrier_id.as_str(), again.version),
        ("acme", released.version + 1)
    );
    let bravo_row = store
        .get_number("bravo", "+441")
        .await
        .expect("get")
        .expect("bravo's released row");
    assert_eq!(
        (bravo_row.state, bravo_row.version),
        (NumberState::Released, 4)
    );
}

/// Events page by `after` and `limit`: each event once, in order, as the write returned it.
async fn events_page_by_after_and_limit(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    let mut written = Vec::new();
    for i in 0..5 {
        let out = store
            .upload_numbers("acme", vec![upload(&format!("+4420{i}"), T1)])
            .await
            .expect("upload");
        written.push(number_of(&out[0]).clone());
    }
    written.push(
        store
            .assign_number(assign("+44201", T1, "sip:x@y.z"))
            .await
            .expect("assign"),
    );
    written.push(store.unassign_number("+44201", T1).await.expect("unassign"));
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page = store
            .number_events_after("acme", after, 3)
            .await
            .expect("page");
        assert!(page.len() <= 3);
        if page.is_empty() {
            break;
        }
        after = page.last().map_or(after, |e| e.sequence);
        seen.extend(page);
    }
    assert_eq!(
        seen.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    let numbers: Vec<&PhoneNumber> = seen.iter().map(|e| &e.number).collect();
    assert_eq!(numbers, written.iter().collect::<Vec<_>>());
    assert_eq!(seen[5].event_type, NumberEventType::Assigned);
    assert_eq!(seen[6].event_type, NumberEventType::Unassigned);
    assert!(seen.iter().all(|e| e.event_time == e.number.update_time));
    // Past the head, and a limit of zero: nothing.
    assert!(
        store
            .number_events_after("acme", 7, 10)
            .await
            .expect("none")
            .is_empty()
    );
    assert!(
        store
            .number_events_after("acme", 0, 0)
            .await
            .expect("zero")
            .is_empty()
    );
    assert_eq!(
        store
            .number_events_after("acme", 5, 100)
            .await
            .expect("tail")
            .iter()
            .map(|e| e.sequence)
            .collect::<Vec<_>>(),
        [6, 7]
    );
}

/// Listing filters (tenant, state, updated since), their totals, and carrier isolation.
async fn list_filters_and_isolation(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    carrier(store.as_ref(), "bravo").await;
    let items = (0..10)
        .map(|i| upload(&format!("+4430{i}"), if i < 6 { T1 } else { T2 }))
        .collect();
    store.upload_numbers("acme", items).await.expect("upload");
    store
        .upload_numbers("bravo", vec![upload("+4439", T1)])
        .await
        .expect("upload");
    let since = now_micros() + 1;
    // Changes after `since`: two assigned, one released.
    while now_micros() < since {
        tokio::task::yield_now().await;
    }
    for number in ["+44300", "+44301"] {
        store
            .assign_number(assign(number, T1, "sip:u@v.w"))
            .await
            .expect("assign");
    }
    store
        .release_numbers("acme", vec!["+44309".into()])
        .await
        .expect("release");

    let list = async |filter: NumberFilter| {
        let page = store
            .list_numbers("acme", filter, None, 100)
            .await
            .expect("list");
        assert!(!page.more);
        assert_eq!(page.total, page.items.len() as i64);
        page.items
            .into_iter()
            .map(|n| n.number)
            .collect::<Vec<String>>()
    };
    assert_eq!(list(NumberFilter::default()).await.len(), 10);
    assert_eq!(
        list(NumberFilter {
            tenant_id: Some(T2.into()),
            ..NumberFilter::default()
        })
        .await,
        ["+44306", "+44307", "+44308", "+44309"]
    );
    assert_eq!(
        list(NumberFilter {
            state: Some(NumberState::Assigned),
            ..NumberFilter::default()
        })
        .await,
        ["+44300", "+44301"]
    );
    assert_eq!(
        list(NumberFilter {
            tenant_id: Some(T2.into()),
            state: Some(NumberState::Released),
            ..NumberFilter::default()
        })
        .await,
        ["+44309"]
    );
    assert_eq!(
        list(NumberFilter {
            updated_since: Some(since),
            ..NumberFilter::default()
        })
        .await,
        ["+44300", "+44301", "+44309"]
    );
    assert!(
        list(NumberFilter {
            tenant_id: Some(T1.into()),
            state: Some(NumberState::Released),
            ..NumberFilter::default()
        })
        .await
        .is_empty()
    );
    // Paging with a filter: `more` and `total` hold on every page.
    let filter = NumberFilter {
        state: Some(NumberState::Provisioned),
        ..NumberFilter::default()
    };
    let first = store
        .list_numbers("acme", filter.clone(), None, 4)
        .await
        .expect("page");
    assert_eq!((first.items.len(), first.more, first.total), (4, true, 7));
    let second = store
        .list_numbers("acme", filter, Some("+44305".into()), 4)
        .await
        .expect("page");
    assert_eq!(
        second
            .items
            .iter()
            .map(|n| n.number.as_str())
            .collect::<Vec<_>>(),
        ["+44306", "+44307", "+44308"]
    );
    assert!(!second.more);
    // The other carrier sees only its own.
    let bravo = store
        .list_numbers("bravo", NumberFilter::default(), None, 100)
        .await
        .expect("bravo");
    assert_eq!(bravo.total, 1);
    assert_eq!(bravo.items[0].number, "+4439");
}

/// Assign and unassign: unknown numbers, other tenants, released numbers; what changes a
/// version and appends an event, and what does not.
async fn assign_and_unassign_rules(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    store
        .upload_numbers("acme", vec![upload("+441", T1), upload("+442", T1)])
        .await
        .expect("upload");
    store
        .release_numbers("acme", vec!["+442".into()])
        .await
        .expect("release");
    let head = store.number_event_head("acme").await.expect("head");
    assert_eq!(head, 3);

    let unknown = store.assign_number(assign("+449", T1, "sip:a@b.c")).await;
    assert!(
        matches!(refused(&unknown), Some((Code::NotFound, _))),
        "{unknown:?}"
    );
    let unknown = store.unassign_number("+449", T1).await;
    assert!(
        matches!(refused(&unknown), Some((Code::NotFound, _))),
        "{unknown:?}"
    );
    let foreign = store.assign_number(assign("+441", T2, "sip:a@b.c")).await;
    assert!(
        matches!(refused(&foreign), Some((Code::FailedPrecondition, m)) if m.contains(T2)),
        "{foreign:?}"
    );
    let released = store.assign_number(assign("+442", T1, "sip:a@b.c")).await;
    assert!(
        matches!(refused(&released), Some((Code::FailedPrecondition, m)) if m.contains("released")),
        "{released:?}"
    );
    let released = store.unassign_number("+442", T1).await;
    assert!(matches!(
        refused(&released),
        Some((Code::FailedPrecondition, _))
    ));
    // Unassigning a number that is not assigned changes nothing.
    let n = store.unassign_number("+441", T1).await.expect("unassign");
    assert_eq!((n.version, n.state), (1, NumberState::Provisioned));
    assert_eq!(store.number_event_head("acme").await.expect("head"), head);

    let n = store
        .assign_number(assign("+441", T1, "sip:a@b.c"))
        .await
        .expect("assign");
    assert_eq!((n.version, n.state), (2, NumberState::Assigned));
    let a = n.assignment.clone().expect("assignment");
    assert_eq!(
        (a.assignment_type, a.sip_uri.as_str()),
        (AssignmentType::User, "sip:a@b.c")
    );
    // The same assignment again: unchanged. Another SIP URI: a change.
    let same = store
        .assign_number(assign("+441", T1, "sip:a@b.c"))
        .await
        .expect("same");
    assert_eq!(same, n);
    let moved = store
        .assign_number(AssignRequest {
            assignment_type: AssignmentType::Conference,
            ..assign("+441", T1, "sip:conf@b.c")
        })
        .await
        .expect("reassign");
    assert_eq!(moved.version, 3);
    assert_eq!(
        moved.assignment.as_ref().map(|a| a.assignment_type),
        Some(AssignmentType::Conference)
    );
    let stored = store.get_number("acme", "+441").await.expect("get");
    assert_eq!(stored, Some(moved.clone()));
    let n = store.unassign_number("+441", T1).await.expect("unassign");
    assert_eq!(
        (n.version, n.state, n.assignment),
        (4, NumberState::Provisioned, None)
    );
    let events = store
        .number_events_after("acme", head, 100)
        .await
        .expect("events");
    assert_eq!(
        events.iter().map(|e| e.event_type).collect::<Vec<_>>(),
        [
            NumberEventType::Assigned,
            NumberEventType::Assigned,
            NumberEventType::Unassigned
        ]
    );
    assert_eq!(events[1].number, moved);
}

/// Uploads that change a number: `Updated` keeps the assignment within its tenant; moving an
/// assigned number to another tenant is rejected; moving a provisioned one is an update.
async fn upload_updates_and_moves(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    store
        .upload_numbers("acme", vec![upload("+441", T1), upload("+442", T1)])
        .await
        .expect("upload");
    store
        .assign_number(assign("+441", T1, "sip:a@b.c"))
        .await
        .expect("assign");
    let mut fewer = upload("+441", T1);
    fewer.capabilities = vec![Capability::InboundCalling];
    fewer.location_id = "loc-1".into();
    let out = store
        .upload_numbers(
            "acme",
            vec![fewer.clone(), upload("+441", T2), upload("+442", T2), fewer],
        )
        .await
        .expect("upload");
    let n = match &out[0] {
        ItemOutcome::Updated(n) => n.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (
            n.version,
            n.state,
            n.capabilities.as_slice(),
            n.location_id.as_str()
        ),
        (
            3,
            NumberState::Assigned,
            &[Capability::InboundCalling][..],
            "loc-1"
        )
    );
    assert!(n.assignment.is_some());
    assert!(
        matches!(&out[1], ItemOutcome::Rejected(r) if words(r).contains(T1)),
        "{out:?}"
    );
    assert!(
        matches!(&out[2], ItemOutcome::Updated(m) if m.tenant_id == T2 && m.version == 2),
        "{out:?}"
    );
    assert_eq!(out[3], ItemOutcome::Unchanged(n.clone()));
    assert_eq!(
        store.get_number("acme", "+441").await.expect("get"),
        Some(n)
    );
    let events = store
        .number_events_after("acme", 3, 100)
        .await
        .expect("events");
    assert_eq!(
        events
            .iter()
            .map(|e| (e.sequence, e.event_type, e.number.number.as_str()))
            .collect::<Vec<_>>(),
        [
            (4, NumberEventType::Updated, "+441"),
            (5, NumberEventType::Updated, "+442")
        ]
    );
}

/// Two carriers upload the same numbers at once, from several tasks each and in opposite
/// orders: each number is created exactly once, by one carrier, whose log has it once; the
/// other carrier's uploads are rejected, its own carrier's other uploads unchanged.
async fn concurrent_uploads_of_the_same_numbers(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    carrier(store.as_ref(), "bravo").await;
    const NUMBERS: usize = 60;
    let numbers: Vec<String> = (0..NUMBERS).map(|i| format!("+4450{i:03}")).collect();
    let mut tasks = Vec::new();
    for w in 0..6usize {
        let store = Arc::clone(&store);
        let mut mine = numbers.clone();
        if w % 2 == 1 {
            mine.reverse();
        }
        tasks.push(tokio::spawn(async move {
            let who = if w % 2 == 0 { "acme" } else { "bravo" };
            let mut outcomes = Vec::new();
            for batch in mine.chunks(6) {
                let items = batch.iter().map(|n| upload(n, T1)).collect();
                let out = store.upload_numbers(who, items).await.expect("upload");
                outcomes.extend(batch.iter().cloned().zip(out));
            }
            (who, outcomes)
        }));
    }
    let mut created: HashMap<String, &str> = HashMap::new();
    for t in tasks {
        let (who, outcomes) = t.await.expect("task");
        for (number, outcome) in outcomes {
            match outcome {
                ItemOutcome::Created(n) => {
                    assert_eq!(n.carrier_id, who);
                    assert!(
                        created.insert(number.clone(), who).is_none(),
                        "{number} created twice"
                    );
                }
                ItemOutcome::Unchanged(n) => assert_eq!(n.carrier_id, who),
                ItemOutcome::Rejected(r) => {
                    assert_eq!(r, Refusal::NumberUnavailable);
                    assert_eq!(words(&r), "the number is not available to this carrier")
                }
                ItemOutcome::Updated(n) => panic!("{number} updated: {n:?}"),
            }
        }
    }
    assert_eq!(created.len(), NUMBERS);
    for who in ["acme", "bravo"] {
        let mine: Vec<&String> = numbers.iter().filter(|n| created[*n] == who).collect();
        for number in &mine {
            let n = store.get_number(who, number).await.expect("get");
            assert_eq!(n.map(|n| n.version), Some(1), "{number}");
        }
        let events = store
            .number_events_after(who, 0, 1000)
            .await
            .expect("events");
        assert_eq!(
            events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            (1..=mine.len() as i64).collect::<Vec<_>>(),
            "{who}"
        );
        let mut logged: Vec<&String> = events.iter().map(|e| &e.number.number).collect();
        logged.sort();
        assert_eq!(logged, mine, "{who}");
        assert!(
            events
                .iter()
                .all(|e| e.event_type == NumberEventType::Provisioned)
        );
        let page = store
            .list_numbers(who, NumberFilter::default(), None, 1000)
            .await
            .expect("list");
        assert_eq!(page.total, mine.len() as i64);
    }
}

/// Many tasks assign and unassign one number at once: every change is one version and one
/// event, in order, with no gap; calls that change nothing change neither.
async fn concurrent_assign_unassign_of_one_number(store: Arc<dyn Store>) {
    carrier(store.as_ref(), "acme").await;
    store
        .upload_numbers("acme", vec![upload("+441", T1)])
        .await
        .expect("upload");
    let mut tasks = Vec::new();
    for w in 0..8u32 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut returned = Vec::new();
            for i in 0..12u32 {
                let n = if (w + i) % 3 == 2 {
                    store.unassign_number("+441", T1).await
                } else {
                    // Half of the tasks share a URI, so some assignments change nothing.
                    let uri = format!("sip:u{}@b.c", w % 2 + (i % 2) * w);
                    store.assign_number(assign("+441", T1, &uri)).await
                };
                returned.push(n.expect("write"));
            }
            returned
        }));
    }
    let mut returned = Vec::new();
    for t in tasks {
        returned.extend(t.await.expect("task"));
    }
    let last = store
        .get_number("acme", "+441")
        .await
        .expect("get")
        .expect("number");
    let events = store
        .number_events_after("acme", 0, 1000)
        .await
        .expect("events");
    let n = events.len() as i64;
    assert_eq!(
        events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    // Version = 1 + changes: the k-th event holds version k.
    assert_eq!(
        events.iter().map(|e| e.number.version).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    assert_eq!(last.version, n);
    assert_eq!(events.last().map(|e| &e.number), Some(&last));
    assert!(n > 1, "nothing changed");
    for pair in events.windows(2) {
        let (before, after) = (&pair[0].number, &pair[1].number);
        match pair[1].event_type {
            NumberEventType::Unassigned => assert_eq!(before.state, NumberState::Assigned),
            NumberEventType::Assigned => {
                assert_eq!(after.state, NumberState::Assigned);
                assert_ne!(before.assignment, after.assignment);
            }
            other => panic!("{other:?}"),
        }
    }
    // Every number a call returned is one of the logged versions.
    for r in &returned {
        let logged = &events[(r.version - 1) as usize].number;
        assert_eq!(r, logged);
    }
}

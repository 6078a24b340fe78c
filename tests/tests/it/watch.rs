//! `WatchNumberEvents`: replay, live delivery, resume, gaplessness, and the SDK's follower.

use futures_util::{StreamExt, TryStreamExt};
use ocx_client::pb;
use ocx_testkit::{TestServer, carrier, consent, numbers, provision, tenant};

fn assign(number: &str, tenant: &str, sip: &str) -> pb::AssignNumberRequest {
    pb::AssignNumberRequest {
        request_id: String::new(),
        number: number.into(),
        tenant_id: tenant.into(),
        assignment_type: pb::AssignmentType::User as i32,
        sip_uri: sip.into(),
        user_id: String::new(),
    }
}

#[tokio::test]
async fn replays_after_a_sequence_then_delivers_live_and_resumes_without_gap_or_repeat() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    let b = carrier(&platform, "bravo-tel").await;
    consent(&platform, "acme-tel", &tenant(1)).await;
    consent(&platform, "bravo-tel", &tenant(2)).await;
    let ns = numbers("+4420794", 0, 5);
    provision(&a.client, &tenant(1), &ns).await; // acme events 1..=5
    provision(&b.client, &tenant(2), &numbers("+1206555", 0, 3)).await; // bravo's own sequence
    platform
        .assign_number(assign(&ns[0], &tenant(1), "sip:alice@contoso.com"))
        .await
        .expect("assign"); // 6

    // Replay everything after 3.
    let mut watch = Box::pin(a.client.watch_number_events("", 3).await.expect("watch"));
    let replayed: Vec<pb::NumberEvent> = (&mut watch).take(3).try_collect().await.expect("replay");
    let seqs: Vec<i64> = replayed.iter().map(|e| e.sequence).collect();
    assert_eq!(seqs, [4, 5, 6]);
    assert_eq!(replayed[0].r#type, pb::NumberEventType::Provisioned as i32);
    let assigned = &replayed[2];
    assert_eq!(assigned.r#type, pb::NumberEventType::Assigned as i32);
    let snapshot = assigned.phone_number.as_ref().expect("number");
    assert_eq!(
        (
            snapshot.number.as_str(),
            snapshot.sip_uri.as_str(),
            snapshot.version
        ),
        (ns[0].as_str(), "sip:alice@contoso.com", 2)
    );

    // Live: changes made while the stream is open arrive in order.
    platform
        .unassign_number(&ns[0], &tenant(1))
        .await
        .expect("unassign"); // 7
    a.client
        .release_numbers(pb::ReleaseNumbersRequest {
            request_id: String::new(),
            carrier_id: String::new(),
            numbers: vec![ns[1].clone()],
        })
        .await
        .expect("release"); // 8
    let live: Vec<pb::NumberEvent> = (&mut watch).take(2).try_collect().await.expect("live");
    assert_eq!(
        live.iter()
            .map(|e| (e.sequence, e.r#type))
            .collect::<Vec<_>>(),
        [
            (7, pb::NumberEventType::Unassigned as i32),
            (8, pb::NumberEventType::Released as i32)
        ]
    );
    drop(watch);

    // Disconnected: more changes happen. Reconnect with the last sequence seen.
    platform
        .assign_number(assign(&ns[2], &tenant(1), "sip:bob@contoso.com"))
        .await
        .expect("assign"); // 9
    let mut changed = pb::NumberUpload {
        number: ns[3].clone(),
        tenant_id: tenant(1),
        ..Default::default()
    };
    changed.location_id = "loc-9".into();
    a.client
        .upload_numbers(pb::UploadNumbersRequest {
            request_id: String::new(),
            carrier_id: String::new(),
            numbers: vec![changed],
        })
        .await
        .expect("update"); // 10
    let mut resumed = Box::pin(a.client.watch_number_events("", 8).await.expect("resume"));
    let after: Vec<pb::NumberEvent> = (&mut resumed).take(2).try_collect().await.expect("resumed");
    assert_eq!(
        after.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [9, 10]
    );
    assert_eq!(after[1].r#type, pb::NumberEventType::Updated as i32);

    // The platform can watch a carrier's stream too; bravo's sequence is its own, from 1.
    let theirs: Vec<pb::NumberEvent> = platform
        .watch_number_events("bravo-tel", 0)
        .await
        .expect("watch")
        .take(3)
        .try_collect()
        .await
        .expect("bravo");
    assert_eq!(
        theirs.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(theirs.iter().all(|e| {
        e.phone_number
            .as_ref()
            .is_some_and(|n| n.carrier_id == "bravo-tel")
    }));

    let err = a
        .client
        .watch_number_events("", -1)
        .await
        .map(|_| ())
        .expect_err("negative");
    assert_eq!(err.violations()[0].field, "after_sequence");
}

#[tokio::test]
async fn sequences_stay_gapless_under_concurrent_writers() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    consent(&platform, "acme-tel", &tenant(1)).await;
    let watcher = a.client.watch_number_events("", 0).await.expect("watch");
    // Eight concurrent uploaders, 25 batches of 4 numbers each: 800 events.
    let mut tasks = Vec::new();
    for w in 0..8u32 {
        let client = a.client.clone();
        tasks.push(tokio::spawn(async move {
            for batch in 0..25u32 {
                provision(
                    &client,
                    &tenant(1),
                    &numbers(&format!("+44207{w}"), batch * 4, 4),
                )
                .await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let events: Vec<pb::NumberEvent> = Box::pin(watcher)
        .take(800)
        .try_collect()
        .await
        .expect("events");
    let seqs: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(seqs, (1..=800).collect::<Vec<i64>>());
    let distinct: std::collections::BTreeSet<_> = events
        .iter()
        .filter_map(|e| e.phone_number.as_ref().map(|n| n.number.clone()))
        .collect();
    assert_eq!(distinct.len(), 800);
}

#[tokio::test]
async fn the_sdk_follower_resumes_across_a_server_restart() {
    let mut server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    consent(&platform, "acme-tel", &tenant(1)).await;
    let ns = numbers("+4420794", 0, 10);
    provision(&a.client, &tenant(1), &ns[..5]).await;
    let mut follow = Box::pin(a.client.follow_number_events("", 0));
    let first: Vec<pb::NumberEvent> = (&mut follow).take(5).try_collect().await.expect("first");
    assert_eq!(first.last().map(|e| e.sequence), Some(5));

    // The server restarts (graceful stop ends the stream with UNAVAILABLE); writes continue after.
    server.restart().await;
    provision(&a.client, &tenant(1), &ns[5..]).await;
    let rest: Vec<pb::NumberEvent> = (&mut follow)
        .take(5)
        .try_collect()
        .await
        .expect("after restart");
    assert_eq!(
        rest.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [6, 7, 8, 9, 10]
    );
    let got: Vec<_> = rest
        .iter()
        .filter_map(|e| e.phone_number.as_ref().map(|n| n.number.clone()))
        .collect();
    assert_eq!(got, ns[5..]);
}

#[tokio::test]
async fn a_cursor_beyond_the_last_sequence_is_out_of_range() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    consent(&platform, "acme-tel", &tenant(1)).await;
    provision(&a.client, &tenant(1), &numbers("+4420794", 0, 3)).await;
    let err = a
        .client
        .watch_number_events("", 4)
        .await
        .map(|_| ())
        .expect_err("beyond");
    assert_eq!(err.code(), Some(tonic::Code::OutOfRange));
    assert!(err.to_string().contains("last sequence 3"), "{err}");
    // At the head is fine: the stream waits for the next event.
    let mut at_head = Box::pin(a.client.watch_number_events("", 3).await.expect("at head"));
    provision(&a.client, &tenant(1), &numbers("+4420794", 3, 1)).await;
    assert_eq!(
        at_head.next().await.expect("event").expect("ok").sequence,
        4
    );
    let err = a
        .client
        .stream_call_records("", 1)
        .await
        .map(|_| ())
        .expect_err("empty feed");
    assert_eq!(err.code(), Some(tonic::Code::OutOfRange));
}

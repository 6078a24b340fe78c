//! Call records end to end: ingestion results, ownership, quality verdicts, filters, paging,
//! the feed, and isolation between carriers.

use std::collections::BTreeSet;

use futures_util::{StreamExt, TryStreamExt};
use ocx_client::pb;
use ocx_testkit::{TestServer, call, carrier, consent, ingest, provision, tenant};
use prost_types::Duration;
use tonic::Code;

use pb::CallDirection::{Inbound, Outbound};
use pb::ItemStatus::{Created, Rejected, Revised, Unchanged};

const ACME: &str = "+442079460001";
const ACME2: &str = "+442079460002";
const BRAVO: &str = "+12065550100";
const FAR: &str = "+33142685300";

/// Two carriers, each with a tenant and numbers.
async fn setup(
    server: &TestServer,
) -> (
    ocx_client::Client,
    ocx_testkit::CarrierFixture,
    ocx_testkit::CarrierFixture,
) {
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    let b = carrier(&platform, "bravo-tel").await;
    consent(&platform, "acme-tel", &tenant(1)).await;
    consent(&platform, "bravo-tel", &tenant(2)).await;
    provision(&a.client, &tenant(1), &[ACME.into(), ACME2.into()]).await;
    provision(&b.client, &tenant(2), &[BRAVO.into()]).await;
    (platform, a, b)
}

fn statuses(ack: &pb::IngestCallRecordsResponse) -> Vec<pb::ItemStatus> {
    ack.results
        .iter()
        .map(|r| pb::ItemStatus::try_from(r.status).expect("status"))
        .collect()
}

#[tokio::test]
async fn ingest_results_duplicates_revisions_stale_and_rejects() {
    let server = TestServer::start().await;
    let (platform, a, b) = setup(&server).await;
    let t1 = tenant(1);
    let first = vec![
        call("c-1", Inbound, ACME, FAR, &t1, 1_000),
        call("c-2", Outbound, ACME2, FAR, &t1, 2_000),
        call("c-3", Inbound, BRAVO, FAR, &tenant(2), 3_000),
    ];
    let ack = ingest(&platform, first.clone()).await;
    assert_eq!(statuses(&ack), [Created, Created, Created]);
    assert_eq!((ack.batch_id, ack.created_count), (1, 3));
    let owners: Vec<_> = ack.results.iter().map(|r| r.carrier_id.as_str()).collect();
    assert_eq!(
        owners,
        ["acme-tel", "acme-tel", "bravo-tel"],
        "owner is the carrier of the tenant-side number"
    );

    let mut revised = first[0].clone();
    revised.version = 2;
    revised.media_streams = vec![pb::MediaStream {
        average_jitter: Some(Duration {
            seconds: 0,
            nanos: 45_000_000,
        }),
        ..Default::default()
    }];
    let mut conflicting = first[1].clone();
    conflicting.final_sip_phrase = "Changed".into(); // same version 1, other content
    let mut bad = call("c-bad", Inbound, ACME, FAR, &t1, 4_000);
    bad.caller_number = "12345".into();
    bad.version = 0;
    let unowned = call("c-none", Outbound, "+442079469999", FAR, &t1, 5_000);
    let mut ghost = call("c-ghost", Outbound, "+442079469999", FAR, &t1, 5_000);
    ghost.carrier_id = "ghost-tel".into();
    let mut explicit = call("c-explicit", Outbound, "+442079469999", FAR, &t1, 6_000);
    explicit.carrier_id = "bravo-tel".into();
    let batch = vec![
        first[2].clone(),                             // 0 duplicate
        revised.clone(),                              // 1 revision
        conflicting,                                  // 2 stale: same version, other content
        bad,                                          // 3 invalid fields
        unowned,                                      // 4 number of no carrier
        ghost,                                        // 5 explicit carrier that does not exist
        explicit,                                     // 6 explicit carrier decides ownership
        call("c-4", Outbound, ACME, FAR, &t1, 7_000), // 7 new
        first[0].clone(),                             // 8 stale: version 1 < stored 2
    ];
    let ack = ingest(&platform, batch).await;
    assert_eq!(
        statuses(&ack),
        [
            Unchanged, Revised, Rejected, Rejected, Rejected, Rejected, Created, Created, Rejected
        ]
    );
    assert_eq!(
        (
            ack.created_count,
            ack.revised_count,
            ack.unchanged_count,
            ack.rejected_count
        ),
        (2, 1, 1, 5)
    );
    let r = &ack.results;
    assert!(r[2].reason.contains("stale"), "{}", r[2].reason);
    assert!(r[8].reason.contains("stale"), "{}", r[8].reason);
    let fields: Vec<_> = r[3].violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(
        fields,
        ["call_records[3].version", "call_records[3].caller_number"]
    );
    assert!(
        r[4].reason.contains("belongs to no carrier"),
        "{}",
        r[4].reason
    );
    assert!(r[5].reason.contains("ghost-tel"), "{}", r[5].reason);
    assert_eq!(r[6].carrier_id, "bravo-tel");

    // Stored: the revision replaced version 1; the stale and invalid ones left no trace.
    let stored = a.client.get_call_record("", "c-1").await.expect("get");
    assert_eq!(stored.version, 2);
    assert_eq!(stored.quality, pb::QualityVerdict::Poor as i32);
    assert_eq!(
        a.client
            .get_call_record("", "c-2")
            .await
            .expect("get")
            .final_sip_phrase,
        "OK"
    );
    for missing in ["c-bad", "c-none", "c-ghost"] {
        assert_eq!(
            platform
                .get_call_record("acme-tel", missing)
                .await
                .expect_err("absent")
                .code(),
            Some(Code::NotFound)
        );
    }
    assert_eq!(
        b.client
            .get_call_record("", "c-explicit")
            .await
            .expect("explicit owner")
            .carrier_id,
        "bravo-tel"
    );
    let all: Vec<pb::CallRecord> = a
        .client
        .call_records(Default::default())
        .try_collect()
        .await
        .expect("list");
    assert_eq!(
        all.iter().map(|r| r.call_id.as_str()).collect::<Vec<_>>(),
        ["c-1", "c-2", "c-4"]
    );

    // A batch over the limit ends the stream with INVALID_ARGUMENT naming the limit.
    let big: Vec<_> = (0..1001)
        .map(|i| call(&format!("big-{i}"), Inbound, ACME, FAR, &t1, 9_000))
        .collect();
    let acks = platform
        .ingest_call_records(futures_util::stream::iter([big]))
        .await
        .expect("open");
    let err = Box::pin(acks)
        .next()
        .await
        .expect("an answer")
        .expect_err("over the limit");
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    assert!(
        err.violations()[0].description.contains("1000"),
        "{:?}",
        err.violations()
    );
    // A carrier key may not ingest.
    let denied = a
        .client
        .ingest_call_records(futures_util::stream::iter([vec![call(
            "x", Inbound, ACME, FAR, &t1, 1,
        )]]))
        .await;
    let code = match denied {
        Err(e) => e.code(),
        Ok(acks) => Box::pin(acks)
            .next()
            .await
            .and_then(|r| r.err())
            .and_then(|e| e.code()),
    };
    assert_eq!(code, Some(Code::PermissionDenied));
}

fn ms(millis: i32) -> Option<Duration> {
    Some(Duration {
        seconds: i64::from(millis / 1000),
        nanos: (millis % 1000) * 1_000_000,
    })
}

#[tokio::test]
async fn quality_verdicts_at_each_threshold() {
    let server = TestServer::start().await;
    let (platform, a, _) = setup(&server).await;
    let t1 = tenant(1);
    type Case = (
        &'static str,
        pb::MediaStream,
        pb::QualityVerdict,
        Vec<pb::QualityMetric>,
    );
    use pb::QualityMetric as M;
    use pb::QualityVerdict::{Good, Poor, Unclassified};
    let s = pb::MediaStream::default;
    let cases: Vec<Case> = vec![
        (
            "degradation-at",
            pb::MediaStream {
                average_audio_degradation: Some(1.0),
                ..s()
            },
            Good,
            vec![],
        ),
        (
            "degradation-over",
            pb::MediaStream {
                average_audio_degradation: Some(1.01),
                ..s()
            },
            Poor,
            vec![M::AudioDegradation],
        ),
        (
            "rtt-at",
            pb::MediaStream {
                average_round_trip_time: ms(500),
                ..s()
            },
            Good,
            vec![],
        ),
        (
            "rtt-over",
            pb::MediaStream {
                average_round_trip_time: ms(501),
                ..s()
            },
            Poor,
            vec![M::RoundTripTime],
        ),
        (
            "loss-at",
            pb::MediaStream {
                average_packet_loss_rate: Some(0.1),
                ..s()
            },
            Good,
            vec![],
        ),
        (
            "loss-over",
            pb::MediaStream {
                average_packet_loss_rate: Some(0.1001),
                ..s()
            },
            Poor,
            vec![M::PacketLossRate],
        ),
        (
            "jitter-at",
            pb::MediaStream {
                average_jitter: ms(30),
                ..s()
            },
            Good,
            vec![],
        ),
        (
            "jitter-over",
            pb::MediaStream {
                average_jitter: ms(31),
                ..s()
            },
            Poor,
            vec![M::Jitter],
        ),
        (
            "concealed-at",
            pb::MediaStream {
                average_ratio_of_concealed_samples: Some(0.07),
                ..s()
            },
            Good,
            vec![],
        ),
        (
            "concealed-over",
            pb::MediaStream {
                average_ratio_of_concealed_samples: Some(0.0701),
                ..s()
            },
            Poor,
            vec![M::ConcealedSamples],
        ),
        (
            "no-metrics",
            pb::MediaStream {
                codec: "OPUS".into(),
                mos: Some(4.2),
                ..s()
            },
            Unclassified,
            vec![],
        ),
        (
            "all-over",
            pb::MediaStream {
                average_audio_degradation: Some(2.0),
                average_round_trip_time: ms(900),
                average_packet_loss_rate: Some(0.3),
                average_jitter: ms(80),
                average_ratio_of_concealed_samples: Some(0.2),
                ..s()
            },
            Poor,
            vec![
                M::AudioDegradation,
                M::RoundTripTime,
                M::PacketLossRate,
                M::Jitter,
                M::ConcealedSamples,
            ],
        ),
    ];
    let mut records: Vec<pb::CallRecord> = cases
        .iter()
        .enumerate()
        .map(|(i, (id, stream, _, _))| {
            let mut r = call(id, Inbound, ACME, FAR, &t1, 1_000 + i as i64);
            // A good second stream never hides a poor first one.
            r.media_streams = vec![
                stream.clone(),
                pb::MediaStream {
                    average_jitter: ms(5),
                    mos: Some(4.4),
                    ..s()
                },
            ];
            if *id == "no-metrics" {
                r.media_streams.truncate(1);
            }
            r
        })
        .collect();
    let mut no_streams = call("no-streams", Outbound, ACME, FAR, &t1, 5_000);
    no_streams.media_streams.clear();
    records.push(no_streams);
    let ack = ingest(&platform, records).await;
    assert_eq!(
        ack.created_count as usize,
        cases.len() + 1,
        "{:?}",
        ack.results
    );
    for (id, _, verdict, due) in &cases {
        let r = a.client.get_call_record("", id).await.expect("get");
        assert_eq!(r.quality, *verdict as i32, "{id}");
        assert_eq!(
            r.poor_due_to,
            due.iter().map(|m| *m as i32).collect::<Vec<_>>(),
            "{id}"
        );
    }
    assert_eq!(
        a.client
            .get_call_record("", "no-streams")
            .await
            .expect("get")
            .quality,
        Unclassified as i32
    );

    // MOS: kept when sent, estimated (and flagged) when not, absent when nothing to estimate from.
    let r = a.client.get_call_record("", "rtt-over").await.expect("get");
    let (first, second) = (&r.media_streams[0], &r.media_streams[1]);
    assert!(
        first.mos_estimated && first.mos.is_some_and(|m| (1.0..4.5).contains(&m)),
        "{first:?}"
    );
    assert!(!second.mos_estimated && second.mos == Some(4.4));
    let r = a
        .client
        .get_call_record("", "degradation-at")
        .await
        .expect("get");
    assert!(
        r.media_streams[0].mos.is_none() && !r.media_streams[0].mos_estimated,
        "no delay/loss metrics: no estimate"
    );
    let good = a
        .client
        .get_call_record("", "jitter-at")
        .await
        .expect("get")
        .media_streams[0]
        .mos
        .expect("estimate");
    let bad = a
        .client
        .get_call_record("", "all-over")
        .await
        .expect("get")
        .media_streams[0]
        .mos
        .expect("estimate");
    assert!(good > bad, "{good} vs {bad}");
}

#[tokio::test]
async fn every_filter_and_pagination() {
    let server = TestServer::start().await;
    let (platform, a, _) = setup(&server).await;
    let t1 = tenant(1);
    consent(&platform, "acme-tel", &tenant(3)).await;
    provision(&a.client, &tenant(3), &["+442079460003".into()]).await;
    let mut records = Vec::new();
    for i in 0..120i64 {
        let (dir, number, t) = match i % 3 {
            0 => (Inbound, ACME, t1.clone()),
            1 => (Outbound, ACME2, t1.clone()),
            _ => (Outbound, "+442079460003", tenant(3)),
        };
        let mut r = call(
            &format!("call-{i:03}"),
            dir,
            number,
            FAR,
            &t,
            10_000 + (i / 2) * 10,
        ); // pairs share a start time
        if i % 4 == 0 {
            r.call_type = if dir == Inbound {
                pb::CallType::ConferenceIn as i32
            } else {
                pb::CallType::ConferenceOut as i32
            };
        }
        if i % 5 == 0 {
            r.media_streams = vec![pb::MediaStream {
                average_packet_loss_rate: Some(0.5),
                ..Default::default()
            }];
        } else if i % 5 == 1 {
            r.media_streams = vec![pb::MediaStream {
                average_jitter: ms(3),
                ..Default::default()
            }];
        }
        records.push(r);
    }
    let ack = ingest(&platform, records.clone()).await;
    assert_eq!(ack.created_count, 120);

    let list = |req: pb::ListCallRecordsRequest| {
        let c = a.client.clone();
        async move {
            let got: Vec<pb::CallRecord> = c.call_records(req).try_collect().await.expect("list");
            got.into_iter().map(|r| r.call_id).collect::<Vec<_>>()
        }
    };
    let expect = |keep: &dyn Fn(usize, &pb::CallRecord) -> bool| -> Vec<String> {
        records
            .iter()
            .enumerate()
            .filter(|(i, r)| keep(*i, r))
            .map(|(_, r)| r.call_id.clone())
            .collect()
    };
    let ts = |s: i64| {
        Some(prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        })
    };
    // No filter: everything, in start-time order (ties in ingestion order), across pages.
    assert_eq!(
        list(pb::ListCallRecordsRequest {
            page_size: 7,
            ..Default::default()
        })
        .await,
        expect(&|_, _| true)
    );
    // Time window [from, to).
    let window = pb::ListCallRecordsRequest {
        start_time_from: ts(10_100),
        start_time_to: ts(10_300),
        page_size: 9,
        ..Default::default()
    };
    let got = list(window).await;
    assert_eq!(got, expect(&|i, _| (10..30).contains(&(i / 2))));
    assert_eq!(got.len(), 40);
    // Tenant.
    let got = list(pb::ListCallRecordsRequest {
        tenant_id: tenant(3),
        ..Default::default()
    })
    .await;
    assert_eq!(got, expect(&|i, _| i % 3 == 2));
    // Number as caller (outbound from ACME2) or callee (inbound to ACME); FAR matches all.
    assert_eq!(
        list(pb::ListCallRecordsRequest {
            number: ACME.into(),
            ..Default::default()
        })
        .await,
        expect(&|i, _| i % 3 == 0)
    );
    assert_eq!(
        list(pb::ListCallRecordsRequest {
            number: ACME2.into(),
            ..Default::default()
        })
        .await,
        expect(&|i, _| i % 3 == 1)
    );
    assert_eq!(
        list(pb::ListCallRecordsRequest {
            number: FAR.into(),
            page_size: 50,
            ..Default::default()
        })
        .await
        .len(),
        120
    );
    // Direction and call type.
    let inbound = pb::ListCallRecordsRequest {
        direction: Inbound as i32,
        ..Default::default()
    };
    assert_eq!(list(inbound).await, expect(&|i, _| i % 3 == 0));
    let conf_out = pb::ListCallRecordsRequest {
        call_type: pb::CallType::ConferenceOut as i32,
        ..Default::default()
    };
    assert_eq!(
        list(conf_out).await,
        expect(&|i, _| i % 4 == 0 && i % 3 != 0)
    );
    // Quality.
    for (verdict, keep) in [
        (pb::QualityVerdict::Poor, 0usize),
        (pb::QualityVerdict::Good, 1),
    ] {
        let req = pb::ListCallRecordsRequest {
            quality: verdict as i32,
            ..Default::default()
        };
        assert_eq!(
            list(req).await,
            expect(&|i, _| i % 5 == keep),
            "{verdict:?}"
        );
    }
    let unclassified = pb::ListCallRecordsRequest {
        quality: pb::QualityVerdict::Unclassified as i32,
        ..Default::default()
    };
    assert_eq!(list(unclassified).await, expect(&|i, _| i % 5 >= 2));
    // Combined.
    let combined = pb::ListCallRecordsRequest {
        direction: Outbound as i32,
        tenant_id: t1.clone(),
        quality: pb::QualityVerdict::Poor as i32,
        ..Default::default()
    };
    assert_eq!(
        list(combined).await,
        expect(&|i, _| i % 3 == 1 && i % 5 == 0)
    );

    // Invalid filters: every violation at once.
    let err = a
        .client
        .list_call_records(pb::ListCallRecordsRequest {
            number: "x".into(),
            direction: 9,
            quality: 7,
            call_type: 99,
            page_size: -1,
            start_time_from: ts(10),
            start_time_to: ts(5),
            ..Default::default()
        })
        .await
        .expect_err("invalid");
    let fields: BTreeSet<_> = err.violations().iter().map(|v| v.field.as_str()).collect();
    assert_eq!(
        fields,
        BTreeSet::from([
            "start_time_to",
            "number",
            "direction",
            "call_type",
            "quality",
            "page_size"
        ])
    );

    // Paging while records arrive: nothing repeated, nothing that existed lost.
    let mut token = String::new();
    let mut seen = Vec::new();
    let mut n = 0;
    loop {
        let page = a
            .client
            .list_call_records(pb::ListCallRecordsRequest {
                page_size: 11,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("page");
        seen.extend(page.call_records.into_iter().map(|r| r.call_id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
        n += 1;
        ingest(
            &platform,
            vec![call(
                &format!("late-{n}"),
                Inbound,
                ACME,
                FAR,
                &t1,
                10_000 + n * 53,
            )],
        )
        .await;
    }
    let unique: BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "repeated records");
    for r in &records {
        assert!(unique.contains(&r.call_id), "{} lost", r.call_id);
    }
}

#[tokio::test]
async fn feed_replays_delivers_live_and_resumes_with_revisions() {
    let server = TestServer::start().await;
    let (platform, a, b) = setup(&server).await;
    let t1 = tenant(1);
    let batch: Vec<_> = (0..5)
        .map(|i| call(&format!("f-{i}"), Outbound, ACME, FAR, &t1, 100 + i))
        .collect();
    ingest(&platform, batch.clone()).await;
    ingest(
        &platform,
        vec![call("bravo-1", Inbound, BRAVO, FAR, &tenant(2), 50)],
    )
    .await;

    // Replay from 2: records 3, 4, 5 in commit order.
    let mut feed = Box::pin(a.client.stream_call_records("", 2).await.expect("feed"));
    let replay: Vec<pb::CallRecord> = (&mut feed).take(3).try_collect().await.expect("replay");
    assert_eq!(
        replay
            .iter()
            .map(|r| (r.feed_sequence, r.call_id.as_str()))
            .collect::<Vec<_>>(),
        [(3, "f-2"), (4, "f-3"), (5, "f-4")]
    );

    // Live: a new record and a revision of an old one arrive, in commit order.
    let mut revision = batch[0].clone();
    revision.version = 2;
    revision.media_streams = vec![pb::MediaStream {
        average_round_trip_time: ms(800),
        ..Default::default()
    }];
    ingest(&platform, vec![call("f-5", Inbound, ACME2, FAR, &t1, 200)]).await;
    ingest(&platform, vec![revision]).await;
    let live: Vec<pb::CallRecord> = (&mut feed).take(2).try_collect().await.expect("live");
    assert_eq!(
        live.iter()
            .map(|r| (r.feed_sequence, r.call_id.as_str(), r.version))
            .collect::<Vec<_>>(),
        [(6, "f-5", 1), (7, "f-0", 2)]
    );
    assert_eq!(live[1].quality, pb::QualityVerdict::Poor as i32);
    drop(feed);

    // While disconnected: two more. Resume after 7: exactly those, then live again.
    ingest(
        &platform,
        vec![
            call("f-6", Outbound, ACME, FAR, &t1, 300),
            call("f-7", Outbound, ACME, FAR, &t1, 301),
        ],
    )
    .await;
    let mut resumed = Box::pin(a.client.follow_call_records("", 7));
    let got: Vec<pb::CallRecord> = (&mut resumed).take(2).try_collect().await.expect("resumed");
    assert_eq!(
        got.iter().map(|r| r.call_id.as_str()).collect::<Vec<_>>(),
        ["f-6", "f-7"]
    );
    ingest(&platform, vec![call("f-8", Outbound, ACME, FAR, &t1, 302)]).await;
    let next = resumed.next().await.expect("live").expect("record");
    assert_eq!((next.feed_sequence, next.call_id.as_str()), (10, "f-8"));

    // A full replay now shows each record once, at its latest version (f-0 moved to 7).
    let all: Vec<pb::CallRecord> =
        Box::pin(a.client.stream_call_records("", 0).await.expect("feed"))
            .take(9)
            .try_collect()
            .await
            .expect("all");
    let ids: Vec<_> = all.iter().map(|r| r.call_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "f-1", "f-2", "f-3", "f-4", "f-5", "f-0", "f-6", "f-7", "f-8"
        ]
    );
    // Bravo's feed has only bravo's record, from its own sequence 1.
    let theirs = Box::pin(b.client.stream_call_records("", 0).await.expect("feed"))
        .next()
        .await
        .expect("one")
        .expect("record");
    assert_eq!(
        (theirs.feed_sequence, theirs.call_id.as_str()),
        (1, "bravo-1")
    );
    let err = a
        .client
        .stream_call_records("", -5)
        .await
        .map(|_| ())
        .expect_err("negative");
    assert_eq!(err.violations()[0].field, "after_sequence");
}

#[tokio::test]
async fn a_carrier_never_sees_another_carriers_records() {
    let server = TestServer::start().await;
    let (platform, a, b) = setup(&server).await;
    // Bravo's call involves acme's number as the far end: still bravo's record only.
    ingest(
        &platform,
        vec![
            call("theirs", Inbound, BRAVO, ACME, &tenant(2), 100),
            call("mine", Outbound, ACME, FAR, &tenant(1), 200),
        ],
    )
    .await;
    // Get: NOT_FOUND, same as a missing record.
    let err = a
        .client
        .get_call_record("", "theirs")
        .await
        .expect_err("not mine");
    let missing = a
        .client
        .get_call_record("", "nothing")
        .await
        .expect_err("missing");
    assert_eq!(err.code(), Some(Code::NotFound));
    assert_eq!(
        err.to_string().replace("theirs", "X"),
        missing.to_string().replace("nothing", "X")
    );
    // Naming the other carrier is PERMISSION_DENIED.
    assert_eq!(
        a.client
            .get_call_record("bravo-tel", "theirs")
            .await
            .expect_err("denied")
            .code(),
        Some(Code::PermissionDenied)
    );
    let other = pb::ListCallRecordsRequest {
        carrier_id: "bravo-tel".into(),
        ..Default::default()
    };
    assert_eq!(
        a.client
            .list_call_records(other)
            .await
            .expect_err("denied")
            .code(),
        Some(Code::PermissionDenied)
    );
    assert_eq!(
        a.client
            .stream_call_records("bravo-tel", 0)
            .await
            .map(|_| ())
            .expect_err("denied")
            .code(),
        Some(Code::PermissionDenied)
    );
    // List, and filters that match the other record's fields: only one's own.
    for req in [
        pb::ListCallRecordsRequest::default(),
        pb::ListCallRecordsRequest {
            number: ACME.into(),
            ..Default::default()
        },
        pb::ListCallRecordsRequest {
            number: BRAVO.into(),
            ..Default::default()
        },
        pb::ListCallRecordsRequest {
            tenant_id: tenant(2),
            ..Default::default()
        },
        pb::ListCallRecordsRequest {
            direction: Inbound as i32,
            ..Default::default()
        },
    ] {
        let got: Vec<pb::CallRecord> = a
            .client
            .call_records(req.clone())
            .try_collect()
            .await
            .expect("list");
        assert!(
            got.iter().all(|r| r.carrier_id == "acme-tel"),
            "{req:?}: {got:?}"
        );
        assert!(!got.iter().any(|r| r.call_id == "theirs"), "{req:?}");
    }
    // Feed: acme's first record is its own.
    let first = Box::pin(a.client.stream_call_records("", 0).await.expect("feed"))
        .next()
        .await
        .expect("one")
        .expect("record");
    assert_eq!(first.call_id, "mine");
    // The platform reads either.
    assert_eq!(
        platform
            .get_call_record("bravo-tel", "theirs")
            .await
            .expect("platform")
            .carrier_id,
        "bravo-tel"
    );
    assert_eq!(
        b.client
            .get_call_record("", "theirs")
            .await
            .expect("bravo")
            .call_id,
        "theirs"
    );
}

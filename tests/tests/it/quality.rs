//! GetQualitySummary end to end, on traffic whose every figure is worked out by hand below: the
//! KPIs (ASR, NER, ACD, connected minutes, post-dial delay), the Call Quality Dashboard's
//! counts and rates, and each metric's mean and percentiles; then a revision and an erasure
//! change the answer; buckets, groups, filters, scope and validation.

use ocx_client::pb;
use ocx_testkit::{TestServer, call, carrier, consent, ingest, provision, tenant};
use prost_types::{Duration, Timestamp};
use tonic::Code;

use pb::CallDirection::{Inbound, Outbound};
use pb::QualityDimension::{Codec, TrunkFqdn};

const ACME: &str = "+442079460001";
const ACME3: &str = "+442079460003";
const FAR: &str = "+33142685300";
const SBC1: &str = "sbc1.acme.example";
const SBC2: &str = "sbc2.acme.example";

/// A duration of `ms` milliseconds.
fn ms(ms: i64) -> Option<Duration> {
    Some(Duration {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

/// A stream with jitter, loss, round trip and MOS (and nothing else).
fn stream(codec: &str, jitter_ms: i64, loss: f64, rtt_ms: i64, mos: f64) -> pb::MediaStream {
    pb::MediaStream {
        codec: codec.into(),
        average_jitter: ms(jitter_ms),
        average_packet_loss_rate: Some(loss),
        average_round_trip_time: ms(rtt_ms),
        mos: Some(mos),
        ..Default::default()
    }
}

/// A call of `secs` connected seconds at `start`, on `trunk`, its INVITE `pdd_secs` before
/// (none when 0).
fn answered(
    id: &str,
    number: &str,
    tenant_id: &str,
    (start, secs, pdd_secs): (i64, i64, i64),
    trunk: &str,
    streams: Vec<pb::MediaStream>,
) -> pb::CallRecord {
    let mut r = call(id, Inbound, number, FAR, tenant_id, start);
    r.end_time = Some(Timestamp {
        seconds: start + secs,
        nanos: 0,
    });
    r.duration = ms(secs * 1000);
    r.invite_time = (pdd_secs > 0).then_some(Timestamp {
        seconds: start - pdd_secs,
        nanos: 0,
    });
    r.trunk_fqdn = trunk.into();
    r.media_streams = streams;
    r
}

/// A failed call at `start` on `trunk`, with its SIP code and Q.850 cause.
fn failed(id: &str, start: i64, trunk: &str, sip: i32, q850: i32) -> pb::CallRecord {
    let mut r = call(id, Outbound, ACME, FAR, &tenant(1), start);
    r.end_time = r.start_time;
    r.duration = ms(0);
    r.successful = false;
    r.final_sip_code = sip;
    r.final_sip_phrase = "Failed".into();
    r.q850_cause = q850;
    r.trunk_fqdn = trunk.into();
    r
}

/// Whether `got` is within 1% of `want` (the histogram's bound).
#[track_caller]
fn near(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 0.01 * want.abs() + 1e-9,
        "{what}: {got}, expected {want} within 1%"
    );
}

/// Whether `got` equals `want` up to floating rounding (means and rates are exact).
#[track_caller]
fn same(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() <= 1e-9, "{what}: {got}, expected {want}");
}

/// Seconds of a duration.
fn secs(d: &Option<Duration>) -> f64 {
    let d = d.expect("duration");
    d.seconds as f64 + f64::from(d.nanos) / 1e9
}

/// The request for `carrier_id` over `[from, to)` (seconds), bucketed and grouped.
fn request(
    carrier_id: &str,
    (from, to): (i64, i64),
    bucket: pb::TimeBucket,
    group_by: &[pb::QualityDimension],
) -> pb::GetQualitySummaryRequest {
    pb::GetQualitySummaryRequest {
        carrier_id: carrier_id.into(),
        start_time: Some(Timestamp {
            seconds: from,
            nanos: 0,
        }),
        end_time: Some(Timestamp {
            seconds: to,
            nanos: 0,
        }),
        bucket: bucket as i32,
        group_by: group_by.iter().map(|d| *d as i32).collect(),
        filter: None,
    }
}

#[tokio::test]
async fn figures_worked_out_by_hand_and_what_a_revision_and_an_erasure_change() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let acme = carrier(&platform, "acme-tel").await;
    let bravo = carrier(&platform, "bravo-tel").await;
    let (t1, t3) = (tenant(1), tenant(3));
    consent(&platform, "acme-tel", &t1).await;
    consent(&platform, "acme-tel", &t3).await;
    provision(&acme.client, &t1, &[ACME.into()]).await;
    provision(&acme.client, &t3, &[ACME3.into()]).await;

    // Two days ago, 00:00 UTC: hour 1 and hour 2 of that day hold the calls.
    let day = (ocx_testkit::now_secs() / 86_400 - 2) * 86_400;
    let (h1, h2) = (day + 3_600, day + 7_200);
    let c2 = answered(
        "c2",
        ACME,
        &t1,
        (h1 + 20, 120, 4),
        SBC1,
        vec![stream("OPUS", 50, 0.15, 200, 2.5)],
    );
    let records = vec![
        // sbc1: a good call, a poor one (jitter 50 ms > 30, loss 0.15 > 0.1), a user failure.
        answered(
            "c1",
            ACME,
            &t1,
            (h1 + 10, 60, 2),
            SBC1,
            vec![
                pb::MediaStream {
                    average_audio_degradation: Some(0.2),
                    ..stream("SILK", 10, 0.01, 100, 4.2)
                },
                stream("SILK", 20, 0.02, 120, 4.0),
            ],
        ),
        c2.clone(),
        failed("c3", h1 + 30, SBC1, 486, 17),
        // sbc2: a network failure, an answered call with no streams and no INVITE time, and
        // (tenant 3's) a good call in hour 2.
        failed("c4", h1 + 40, SBC2, 503, 34),
        answered("c5", ACME, &t1, (h1 + 50, 30, 0), SBC2, vec![]),
        answered(
            "c6",
            ACME3,
            &t3,
            (h2 + 10, 90, 1),
            SBC2,
            vec![stream("SILK", 5, 0.0, 80, 4.4)],
        ),
    ];
    let ack = ingest(&platform, records).await;
    assert_eq!(ack.created_count, 6);

    let whole_day = (day, day + 86_400);
    let by_trunk = request("", whole_day, pb::TimeBucket::Unspecified, &[TrunkFqdn]);
    let rows = acme
        .client
        .quality_summary(by_trunk.clone())
        .await
        .expect("summary");
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let (s1, s2) = (&rows[0], &rows[1]);
    assert_eq!(
        (s1.trunk_fqdn.as_str(), s2.trunk_fqdn.as_str()),
        (SBC1, SBC2)
    );
    assert_eq!(
        s1.bucket_start_time,
        Some(Timestamp {
            seconds: day,
            nanos: 0
        })
    );

    // sbc1: calls c1, c2, c3.
    assert_eq!(
        (
            s1.calls,
            s1.answered_calls,
            s1.failed_calls,
            s1.user_failed_calls
        ),
        (3, 2, 1, 1)
    );
    same(s1.asr, 2.0 / 3.0, "ASR");
    same(
        s1.ner,
        1.0,
        "NER: the busy call is not the network's failure",
    );
    same(s1.connected_minutes, 3.0, "60 s + 120 s");
    same(secs(&s1.acd), 90.0, "ACD");
    assert_eq!(s1.post_dial_delay_calls, 2);
    same(
        secs(&s1.post_dial_delay_mean),
        3.0,
        "PDD mean of 2 s and 4 s",
    );
    near(secs(&s1.post_dial_delay_p95), 4.0, "PDD p95: rank 2 of 2");
    assert_eq!(
        (s1.streams, s1.classified_streams, s1.poor_streams),
        (3, 3, 1)
    );
    same(s1.poor_stream_rate, 1.0 / 3.0, "poor stream rate");
    assert_eq!(
        (s1.good_calls, s1.poor_calls, s1.unclassified_calls),
        (1, 1, 1),
        "the failed call has no streams: unclassified"
    );
    same(s1.poor_call_rate, 0.5, "poor call rate");
    let due: Vec<_> = s1.poor_due_to.iter().map(|p| (p.metric, p.calls)).collect();
    assert_eq!(
        due,
        [
            (pb::QualityMetric::PacketLossRate as i32, 1),
            (pb::QualityMetric::Jitter as i32, 1)
        ]
    );
    let jitter = s1.jitter_ms.expect("jitter");
    assert_eq!(jitter.streams, 3);
    same(jitter.mean, 80.0 / 3.0, "jitter mean of 10, 20, 50 ms");
    near(jitter.p50, 20.0, "jitter p50: rank 2 of 3");
    near(jitter.p90, 50.0, "jitter p90: rank 3 of 3");
    near(jitter.p99, 50.0, "jitter p99");
    let loss = s1.packet_loss_rate.expect("loss");
    same(loss.mean, 0.06, "loss mean of 0.01, 0.02, 0.15");
    near(loss.p50, 0.02, "loss p50");
    let rtt = s1.round_trip_time_ms.expect("rtt");
    same(rtt.mean, 140.0, "round trip mean of 100, 120, 200 ms");
    near(rtt.p90, 200.0, "round trip p90");
    let degradation = s1.audio_degradation.expect("degradation");
    assert_eq!(degradation.streams, 1, "one stream measured it");
    near(degradation.p50, 0.2, "degradation p50");
    assert_eq!(s1.concealed_samples_ratio.expect("concealed").streams, 0);
    let mos = s1.mos.expect("mos");
    same(mos.mean, (4.2 + 4.0 + 2.5) / 3.0, "MOS mean");
    near(mos.p50, 4.0, "MOS p50");
    near(mos.p99, 4.2, "MOS p99");

    // sbc2: c4 (the network's failure), c5, c6.
    assert_eq!(
        (s2.calls, s2.answered_calls, s2.user_failed_calls),
        (3, 2, 0)
    );
    same(s2.asr, 2.0 / 3.0, "ASR");
    same(s2.ner, 2.0 / 3.0, "NER: 503 / cause 34 is the network's");
    same(secs(&s2.acd), 60.0, "ACD of 30 s and 90 s");
    assert_eq!(s2.post_dial_delay_calls, 1, "c5 has no INVITE time");
    assert_eq!(
        (s2.good_calls, s2.poor_calls, s2.unclassified_calls),
        (1, 0, 2)
    );

    // By hour: sbc2's calls fall in two hours; hours without calls are absent.
    let hourly = acme
        .client
        .quality_summary(request("", whole_day, pb::TimeBucket::Hour, &[TrunkFqdn]))
        .await
        .expect("hourly");
    let keys: Vec<_> = hourly
        .iter()
        .map(|r| {
            (
                r.bucket_start_time.expect("bucket").seconds,
                r.trunk_fqdn.as_str(),
                r.calls,
            )
        })
        .collect();
    assert_eq!(keys, [(h1, SBC1, 3), (h1, SBC2, 2), (h2, SBC2, 1)]);

    // By codec (a call's first stream's), filtered to answered-capable trunk sbc1 only.
    let mut by_codec = request("", whole_day, pb::TimeBucket::Day, &[Codec]);
    by_codec.filter = Some(pb::QualityFilter {
        trunk_fqdns: vec![SBC1.into()],
        ..Default::default()
    });
    let codecs = acme.client.quality_summary(by_codec).await.expect("codecs");
    let keys: Vec<_> = codecs.iter().map(|r| (r.codec.as_str(), r.calls)).collect();
    assert_eq!(keys, [("", 1), ("OPUS", 1), ("SILK", 1)]);

    // A revision replaces c2's figures: its stream is good now.
    let mut revised = c2;
    revised.version = 2;
    revised.media_streams = vec![stream("OPUS", 15, 0.01, 200, 4.1)];
    assert_eq!(ingest(&platform, vec![revised]).await.revised_count, 1);
    let rows = acme
        .client
        .quality_summary(by_trunk.clone())
        .await
        .expect("after the revision");
    let s1 = &rows[0];
    assert_eq!(
        (s1.calls, s1.good_calls, s1.poor_calls, s1.poor_streams),
        (3, 2, 0, 0)
    );
    assert!(s1.poor_due_to.is_empty());
    let jitter = s1.jitter_ms.expect("jitter");
    same(jitter.mean, 15.0, "jitter mean of 10, 20, 15 ms");
    near(jitter.p50, 15.0, "jitter p50");
    same(
        s1.mos.expect("mos").mean,
        (4.2 + 4.0 + 4.1) / 3.0,
        "MOS mean",
    );

    // Erasing tenant 3 takes c6 out of sbc2.
    platform.erase_tenant_data(&t3).await.expect("erase");
    let rows = acme
        .client
        .quality_summary(by_trunk.clone())
        .await
        .expect("after the erasure");
    let s2 = &rows[1];
    assert_eq!(
        (
            s2.calls,
            s2.answered_calls,
            s2.post_dial_delay_calls,
            s2.streams
        ),
        (2, 1, 0, 0)
    );
    same(s2.asr, 0.5, "ASR");
    same(secs(&s2.acd), 30.0, "ACD");
    assert_eq!(s2.jitter_ms.expect("jitter").streams, 0);

    // Another carrier sees none of it; the platform sees it for one carrier or for all.
    assert!(
        bravo
            .client
            .quality_summary(by_trunk.clone())
            .await
            .expect("bravo")
            .is_empty()
    );
    let denied = bravo
        .client
        .quality_summary(request(
            "acme-tel",
            whole_day,
            pb::TimeBucket::Unspecified,
            &[],
        ))
        .await
        .expect_err("another carrier's");
    assert_eq!(denied.code(), Some(Code::PermissionDenied));
    for carrier_id in ["acme-tel", ""] {
        let all = platform
            .quality_summary(request(
                carrier_id,
                whole_day,
                pb::TimeBucket::Unspecified,
                &[],
            ))
            .await
            .expect("platform");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].calls, 5, "c1..c5 (c6 erased)");
    }
}

#[tokio::test]
async fn invalid_questions_name_their_fields() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let acme = carrier(&platform, "acme-tel").await;
    let hour = (ocx_testkit::now_secs() / 3_600) * 3_600;
    let cases: Vec<(pb::GetQualitySummaryRequest, &[&str])> = vec![
        (
            pb::GetQualitySummaryRequest::default(),
            &["start_time", "end_time"],
        ),
        (
            request("", (hour - 3_600 + 1, hour), pb::TimeBucket::Hour, &[]),
            &["start_time"],
        ),
        (
            request("", (hour, hour), pb::TimeBucket::Hour, &[]),
            &["end_time"],
        ),
        (
            request("", (hour - 367 * 86_400, hour), pb::TimeBucket::Day, &[]),
            &["end_time"],
        ),
        (
            request(
                "",
                (hour - 3_600, hour),
                pb::TimeBucket::Hour,
                &[TrunkFqdn, pb::QualityDimension::Unspecified, TrunkFqdn],
            ),
            &["group_by[1]", "group_by[2]"],
        ),
        (
            pb::GetQualitySummaryRequest {
                filter: Some(pb::QualityFilter {
                    call_types: vec![0],
                    ..Default::default()
                }),
                ..request("", (hour - 3_600, hour), pb::TimeBucket::Hour, &[])
            },
            &["filter.call_types[0]"],
        ),
    ];
    for (req, fields) in cases {
        let err = acme
            .client
            .quality_summary(req.clone())
            .await
            .expect_err("invalid");
        assert_eq!(err.code(), Some(Code::InvalidArgument), "{req:?}");
        let named: Vec<&str> = err.violations().iter().map(|v| v.field.as_str()).collect();
        assert_eq!(named, fields, "{req:?}");
    }
    // The SDK's helper widens any period to whole hours.
    let (start, end) = ocx_client::whole_hours(
        &Timestamp {
            seconds: hour - 1_800,
            nanos: 5,
        },
        &Timestamp {
            seconds: hour + 1,
            nanos: 0,
        },
    );
    assert_eq!((start.seconds, end.seconds), (hour - 3_600, hour + 3_600));
    let fine = pb::GetQualitySummaryRequest {
        start_time: Some(start),
        end_time: Some(end),
        ..Default::default()
    };
    assert!(
        acme.client
            .quality_summary(fine)
            .await
            .expect("ok")
            .is_empty()
    );
}

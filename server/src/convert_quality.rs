//! GetQualitySummary's request and rows between the wire and the store.

use ocx_api::pb;

use crate::convert::{duration, required_enum, timestamp};
use crate::convert_durations::period;
use crate::domain::{
    CallDirection, CallType, DestinationContext, QualityBucket, QualityDimension, QualityFilter,
    QualityQuery,
};
use crate::error::Violations;
use crate::store::pairing::HOUR_US;
use crate::store::quality::{Distribution, Metric, QualityRow, group_enums};

/// The question of a GetQualitySummary request for `carrier_id` (`None`: every carrier);
/// violations for what is invalid.
pub fn quality_query(
    req: &pb::GetQualitySummaryRequest,
    carrier_id: Option<String>,
    v: &mut Violations,
) -> Option<QualityQuery> {
    let hours = period(&req.start_time, &req.end_time, v).map(|(start, end)| {
        let mut on_hour = |t: i64, field: &str| {
            if t.rem_euclid(HOUR_US) != 0 {
                v.add(
                    field,
                    format!(
                        "{field} must be on a whole UTC hour (e.g. 2026-12-01T10:00:00Z): figures are kept per hour"
                    ),
                );
            }
        };
        on_hour(start, "start_time");
        on_hour(end, "end_time");
        (start.div_euclid(HOUR_US), end.div_euclid(HOUR_US))
    });
    let bucket = match pb::TimeBucket::try_from(req.bucket) {
        Ok(pb::TimeBucket::Unspecified) => Some(QualityBucket::Whole),
        Ok(pb::TimeBucket::Hour) => Some(QualityBucket::Hour),
        Ok(pb::TimeBucket::Day) => Some(QualityBucket::Day),
        Err(_) => {
            v.add(
                "bucket",
                format!("{} is not a TimeBucket (see the proto)", req.bucket),
            );
            None
        }
    };
    let mut group_by = Vec::new();
    for (i, code) in req.group_by.iter().enumerate() {
        let field = format!("group_by[{i}]");
        if let Some(d) = required_enum(*code, &field, QualityDimension::from_code, v) {
            if group_by.contains(&d) {
                v.add(&field, "a dimension may be grouped by only once");
            }
            group_by.push(d);
        }
    }
    let f = req.filter.clone().unwrap_or_default();
    let filter = QualityFilter {
        destination_contexts: enums(
            &f.destination_contexts,
            "destination_contexts",
            DestinationContext::from_code,
            v,
        ),
        call_types: enums(&f.call_types, "call_types", CallType::from_code, v),
        directions: enums(&f.directions, "directions", CallDirection::from_code, v),
        trunk_fqdns: f.trunk_fqdns,
        usage_country_codes: f.usage_country_codes,
        codecs: f.codecs,
    };
    let (start_hour, end_hour) = hours?;
    Some(QualityQuery {
        carrier_id,
        start_hour,
        end_hour,
        bucket: bucket?,
        group_by,
        filter,
    })
}

/// A filter's list of enum values; a violation for each that is unknown or UNSPECIFIED.
fn enums<T>(codes: &[i32], name: &str, from: fn(i32) -> Option<T>, v: &mut Violations) -> Vec<T> {
    codes
        .iter()
        .enumerate()
        .filter_map(|(i, c)| required_enum(*c, &format!("filter.{name}[{i}]"), from, v))
        .collect()
}

/// `n / d`, 0 when `d` is 0.
fn ratio(n: i64, d: i64) -> f64 {
    if d == 0 { 0.0 } else { n as f64 / d as f64 }
}

/// A distribution on the wire, its values divided by `scale` (1,000 for µs to ms).
fn metric(d: Distribution, scale: f64) -> pb::MetricSummary {
    pb::MetricSummary {
        streams: d.count,
        mean: d.mean / scale,
        p50: d.p50 / scale,
        p90: d.p90 / scale,
        p99: d.p99 / scale,
    }
}

/// A summary row on the wire.
pub fn quality_row(row: QualityRow) -> pb::QualitySummaryRow {
    let t = &row.total;
    let (direction, call_type, destination_context) = group_enums(&row.group);
    let (good, poor, unclassified) = t.verdicts();
    let pdd = t.distribution(Metric::PostDialDelay);
    pb::QualitySummaryRow {
        bucket_start_time: Some(timestamp(row.bucket_start)),
        trunk_fqdn: row.group.trunk_fqdn.clone(),
        usage_country_code: row.group.usage_country_code.clone(),
        destination_context: destination_context.map_or(0, DestinationContext::code),
        call_type: call_type.map_or(0, CallType::code),
        direction: direction.map_or(0, CallDirection::code),
        codec: row.group.codec.clone(),
        calls: t.calls(),
        answered_calls: t.answered(),
        failed_calls: t.calls() - t.answered(),
        user_failed_calls: t.user_failed(),
        asr: ratio(t.answered(), t.calls()),
        ner: ratio(t.answered() + t.user_failed(), t.calls()),
        connected_minutes: t.connected_us() as f64 / 60e6,
        acd: Some(duration(if t.answered() == 0 {
            0
        } else {
            t.connected_us() / t.answered()
        })),
        post_dial_delay_calls: pdd.count,
        post_dial_delay_mean: Some(duration(if pdd.count == 0 {
            0
        } else {
            t.pdd_us() / pdd.count
        })),
        post_dial_delay_p95: Some(duration(pdd.p95.round() as i64)),
        streams: t.streams(),
        classified_streams: t.classified_streams(),
        poor_streams: t.poor_streams(),
        poor_stream_rate: ratio(t.poor_streams(), t.classified_streams()),
        good_calls: good,
        poor_calls: poor,
        unclassified_calls: unclassified,
        poor_call_rate: ratio(poor, good + poor),
        poor_due_to: t
            .poor_due_to()
            .into_iter()
            .map(|(m, calls)| pb::PoorDueToCount {
                metric: m.code(),
                calls,
            })
            .collect(),
        jitter_ms: Some(metric(t.distribution(Metric::Jitter), 1000.0)),
        packet_loss_rate: Some(metric(t.distribution(Metric::PacketLoss), 1.0)),
        round_trip_time_ms: Some(metric(t.distribution(Metric::RoundTrip), 1000.0)),
        audio_degradation: Some(metric(t.distribution(Metric::Degradation), 1.0)),
        concealed_samples_ratio: Some(metric(t.distribution(Metric::Concealed), 1.0)),
        mos: Some(metric(t.distribution(Metric::Mos), 1.0)),
    }
}

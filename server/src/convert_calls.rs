//! Call records between the wire and the domain: validation with field paths, the content
//! fingerprint, and the quality verdict derived on ingest.

use ocx_api::{pb, validate};
use prost::Message;
use prost_types::Duration;
use sha2::{Digest, Sha256};

use crate::convert::{
    duration, duration_us, filter_enum, micros, not_ahead, opt_timestamp, required_enum, timestamp,
};
use crate::domain::{
    CallDirection, CallRecord, CallType, DestinationContext, MediaStream, QualityVerdict,
    StreamDirection, now_micros,
};
use crate::error::Violations;
use crate::quality;

/// Longest `call_id` / `correlation_id`.
const MAX_ID_LEN: usize = 128;
/// Most media streams per record.
const MAX_STREAMS: usize = 16;
/// Longest accepted call: seven days (µs).
const MAX_DURATION_US: i64 = 7 * 24 * 3600 * 1_000_000;

/// A ratio or score within `range`; NaN and out-of-range values are violations.
fn bounded(
    value: Option<f64>,
    field: String,
    range: std::ops::RangeInclusive<f64>,
    v: &mut Violations,
) -> Option<f64> {
    let x = value?;
    if x.is_finite() && range.contains(&x) {
        Some(x)
    } else {
        v.add(
            field,
            format!("must be a number from {} to {}", range.start(), range.end()),
        );
        None
    }
}

fn media_stream(s: &pb::MediaStream, path: &str, v: &mut Violations) -> MediaStream {
    let d = |x: &Option<Duration>, name: &str, v: &mut Violations| {
        x.as_ref()
            .and_then(|x| duration_us(x, &format!("{path}.{name}"), (3_600_000_000, "1 hour"), v))
    };
    let ratio = |x: Option<f64>, name: &str, v: &mut Violations| {
        bounded(x, format!("{path}.{name}"), 0.0..=1.0, v)
    };
    v.check(format!("{path}.codec"), validate::text(&s.codec, 64));
    MediaStream {
        direction: filter_enum(
            s.direction,
            &format!("{path}.direction"),
            StreamDirection::from_code,
            v,
        ),
        codec: s.codec.clone(),
        average_jitter_us: d(&s.average_jitter, "average_jitter", v),
        max_jitter_us: d(&s.max_jitter, "max_jitter", v),
        average_packet_loss_rate: ratio(s.average_packet_loss_rate, "average_packet_loss_rate", v),
        max_packet_loss_rate: ratio(s.max_packet_loss_rate, "max_packet_loss_rate", v),
        average_round_trip_us: d(&s.average_round_trip_time, "average_round_trip_time", v),
        max_round_trip_us: d(&s.max_round_trip_time, "max_round_trip_time", v),
        average_audio_degradation: bounded(
            s.average_audio_degradation,
            format!("{path}.average_audio_degradation"),
            0.0..=5.0,
            v,
        ),
        average_ratio_of_concealed_samples: ratio(
            s.average_ratio_of_concealed_samples,
            "average_ratio_of_concealed_samples",
            v,
        ),
        mos: bounded(s.mos, format!("{path}.mos"), 1.0..=5.0, v),
        mos_estimated: false,
    }
}

/// SHA-256 (first 8 bytes) of the record as sent, without its version and output-only fields.
fn content_hash(record: &pb::CallRecord) -> i64 {
    let mut canonical = record.clone();
    canonical.version = 0;
    canonical.quality = 0;
    canonical.poor_due_to.clear();
    canonical.feed_sequence = 0;
    canonical.update_time = None;
    for s in &mut canonical.media_streams {
        s.mos_estimated = false;
    }
    let digest = Sha256::digest(canonical.encode_to_vec());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// Validates one ingested record whose path is `path` (e.g. `call_records[3]`), and derives its
/// quality. Returns the domain record or every violation it has.
pub fn call_record_in(r: &pb::CallRecord, path: &str) -> Result<CallRecord, Violations> {
    let mut v = Violations::new();
    let f = |name: &str| format!("{path}.{name}");
    if r.call_id.is_empty() {
        v.add(f("call_id"), "call_id is required");
    }
    v.check(f("call_id"), validate::text(&r.call_id, MAX_ID_LEN));
    v.check(
        f("correlation_id"),
        validate::text(&r.correlation_id, MAX_ID_LEN),
    );
    if r.version < 1 {
        v.add(f("version"), "version must be 1 or more");
    }
    if !r.carrier_id.is_empty() {
        v.check(f("carrier_id"), validate::carrier_id(&r.carrier_id));
    }
    v.check(f("tenant_id"), validate::tenant_id(&r.tenant_id));
    let call_type = required_enum(r.call_type, &f("call_type"), CallType::from_code, &mut v);
    let direction = required_enum(
        r.direction,
        &f("direction"),
        CallDirection::from_code,
        &mut v,
    );
    v.check(f("caller_number"), validate::e164(&r.caller_number));
    v.check(f("callee_number"), validate::e164(&r.callee_number));
    if !r.user_sip_uri.is_empty() {
        v.check(f("user_sip_uri"), validate::sip_uri(&r.user_sip_uri));
    }
    let invite_time = r
        .invite_time
        .as_ref()
        .and_then(|t| micros(t, &f("invite_time"), &mut v));
    let time = |t: &Option<prost_types::Timestamp>, name: &str, v: &mut Violations| match t {
        Some(t) => micros(t, &f(name), v),
        None => {
            v.add(f(name), format!("{name} is required"));
            None
        }
    };
    let start_time = time(&r.start_time, "start_time", &mut v);
    if let Some(start) = start_time {
        not_ahead(start, now_micros(), &f("start_time"), &mut v);
    }
    let end_time = time(&r.end_time, "end_time", &mut v);
    if let (Some(s), Some(e)) = (start_time, end_time)
        && e < s
    {
        v.add(f("end_time"), "end_time is before start_time");
    }
    let duration_us = match &r.duration {
        Some(d) => duration_us(d, &f("duration"), (MAX_DURATION_US, "7 days"), &mut v),
        // Derived from the times, the same limit holds: a record stored must be one that
        // would be accepted again when sent back.
        None => match (start_time, end_time) {
            (Some(s), Some(e)) if e >= s && e - s <= MAX_DURATION_US => Some(e - s),
            (Some(s), Some(e)) if e >= s => {
                v.add(
                    f("end_time"),
                    format!(
                        "the call lasts more than {} seconds; send duration or a nearer end_time",
                        MAX_DURATION_US / 1_000_000
                    ),
                );
                None
            }
            _ => None,
        },
    };
    if r.final_sip_code != 0 && !(100..=699).contains(&r.final_sip_code) {
        v.add(
            f("final_sip_code"),
            "final_sip_code must be 0 (unknown) or 100 to 699",
        );
    }
    v.check(
        f("final_sip_phrase"),
        validate::text(&r.final_sip_phrase, validate::MAX_TEXT_LEN),
    );
    if !(0..=127).contains(&r.q850_cause) {
        v.add(f("q850_cause"), "q850_cause must be 0 to 127");
    }
    let destination_context = filter_enum(
        r.destination_context,
        &f("destination_context"),
        DestinationContext::from_code,
        &mut v,
    );
    if !r.usage_country_code.is_empty() {
        v.check(
            f("usage_country_code"),
            validate::country_code(&r.usage_country_code),
        );
    }
    v.check(f("trunk_fqdn"), validate::text(&r.trunk_fqdn, 253));
    if r.media_streams.len() > MAX_STREAMS {
        v.add(
            f("media_streams"),
            format!("at most {MAX_STREAMS} media streams per record"),
        );
    }
    let mut streams: Vec<MediaStream> = r
        .media_streams
        .iter()
        .take(MAX_STREAMS)
        .enumerate()
        .map(|(i, s)| media_stream(s, &format!("{path}.media_streams[{i}]"), &mut v))
        .collect();
    let (Some(call_type), Some(direction), Some(start_time), Some(end_time), Some(duration_us)) =
        (call_type, direction, start_time, end_time, duration_us)
    else {
        return Err(v);
    };
    if !v.is_empty() {
        return Err(v);
    }
    let (quality, poor_due_to) = quality::assess(&mut streams);
    Ok(CallRecord {
        call_id: r.call_id.clone(),
        correlation_id: r.correlation_id.clone(),
        version: r.version,
        carrier_id: r.carrier_id.clone(),
        tenant_id: validate::normalize_tenant_id(&r.tenant_id),
        call_type,
        direction,
        caller_number: r.caller_number.clone(),
        callee_number: r.callee_number.clone(),
        user_sip_uri: r.user_sip_uri.clone(),
        invite_time,
        start_time,
        end_time,
        duration_us,
        final_sip_code: r.final_sip_code,
        final_sip_phrase: r.final_sip_phrase.clone(),
        q850_cause: r.q850_cause,
        successful: r.successful,
        destination_context,
        usage_country_code: r.usage_country_code.clone(),
        trunk_fqdn: r.trunk_fqdn.clone(),
        media_streams: streams,
        quality,
        poor_due_to,
        content_hash: content_hash(r),
        feed_sequence: 0,
        update_time: 0,
    })
}

fn media_stream_out(s: MediaStream) -> pb::MediaStream {
    pb::MediaStream {
        direction: s.direction.map_or(0, StreamDirection::code),
        codec: s.codec,
        average_jitter: s.average_jitter_us.map(duration),
        max_jitter: s.max_jitter_us.map(duration),
        average_packet_loss_rate: s.average_packet_loss_rate,
        max_packet_loss_rate: s.max_packet_loss_rate,
        average_round_trip_time: s.average_round_trip_us.map(duration),
        max_round_trip_time: s.max_round_trip_us.map(duration),
        average_audio_degradation: s.average_audio_degradation,
        average_ratio_of_concealed_samples: s.average_ratio_of_concealed_samples,
        mos: s.mos,
        mos_estimated: s.mos_estimated,
    }
}

/// A stored record to the wire.
pub fn call_record(r: CallRecord) -> pb::CallRecord {
    pb::CallRecord {
        call_id: r.call_id,
        correlation_id: r.correlation_id,
        version: r.version,
        carrier_id: r.carrier_id,
        tenant_id: r.tenant_id,
        call_type: r.call_type.code(),
        direction: r.direction.code(),
        caller_number: r.caller_number,
        callee_number: r.callee_number,
        user_sip_uri: r.user_sip_uri,
        invite_time: opt_timestamp(r.invite_time),
        start_time: Some(timestamp(r.start_time)),
        end_time: Some(timestamp(r.end_time)),
        duration: Some(duration(r.duration_us)),
        final_sip_code: r.final_sip_code,
        final_sip_phrase: r.final_sip_phrase,
        q850_cause: r.q850_cause,
        successful: r.successful,
        destination_context: r.destination_context.map_or(0, DestinationContext::code),
        usage_country_code: r.usage_country_code,
        trunk_fqdn: r.trunk_fqdn,
        media_streams: r.media_streams.into_iter().map(media_stream_out).collect(),
        quality: r.quality.code(),
        poor_due_to: r.poor_due_to.iter().map(|m| m.code()).collect(),
        feed_sequence: r.feed_sequence,
        update_time: Some(timestamp(r.update_time)),
    }
}

/// Keeps `QualityVerdict` and `QualityMetric` reachable for filters in the service.
pub fn quality_filter(code: i32, field: &str, v: &mut Violations) -> Option<QualityVerdict> {
    filter_enum(code, field, QualityVerdict::from_code, v)
}

//! Call quality: the Teams Call Quality Dashboard (CQD) stream classification, and an E-model
//! MOS estimate for streams that carry no MOS.
//!
//! CQD classifies an audio stream as poor when any of these averages is strictly above its
//! threshold: audio degradation 1.0, round trip 500 ms, packet loss rate 0.1, jitter 30 ms,
//! ratio of concealed samples 0.07. A call is poor when any stream is; it is unclassified when
//! no stream carries any of the five metrics; otherwise good.

use crate::domain::{MediaStream, QualityMetric, QualityVerdict};

/// Audio degradation threshold (MOS points).
pub const AUDIO_DEGRADATION: f64 = 1.0;
/// Round-trip threshold (µs): 500 ms.
pub const ROUND_TRIP_US: i64 = 500_000;
/// Packet loss rate threshold.
pub const PACKET_LOSS_RATE: f64 = 0.1;
/// Jitter threshold (µs): 30 ms.
pub const JITTER_US: i64 = 30_000;
/// Ratio of concealed samples threshold.
pub const CONCEALED_SAMPLES: f64 = 0.07;

/// The verdict and, when poor, the metrics (in code order, each once) that made it poor.
pub fn classify(streams: &[MediaStream]) -> (QualityVerdict, Vec<QualityMetric>) {
    let mut classified = false;
    let mut poor = Vec::new();
    let mut flag = |over: Option<bool>, metric: QualityMetric| {
        if let Some(over) = over {
            classified = true;
            if over && !poor.contains(&metric) {
                poor.push(metric);
            }
        }
    };
    for s in streams {
        flag(
            s.average_audio_degradation.map(|v| v > AUDIO_DEGRADATION),
            QualityMetric::AudioDegradation,
        );
        flag(
            s.average_round_trip_us.map(|v| v > ROUND_TRIP_US),
            QualityMetric::RoundTripTime,
        );
        flag(
            s.average_packet_loss_rate.map(|v| v > PACKET_LOSS_RATE),
            QualityMetric::PacketLossRate,
        );
        flag(
            s.average_jitter_us.map(|v| v > JITTER_US),
            QualityMetric::Jitter,
        );
        flag(
            s.average_ratio_of_concealed_samples
                .map(|v| v > CONCEALED_SAMPLES),
            QualityMetric::ConcealedSamples,
        );
    }
    poor.sort_by_key(|m| m.code());
    match (classified, poor.is_empty()) {
        (false, _) => (QualityVerdict::Unclassified, Vec::new()),
        (true, true) => (QualityVerdict::Good, Vec::new()),
        (true, false) => (QualityVerdict::Poor, poor),
    }
}

/// Estimates MOS with the ITU-T G.107 E-model, simplified as is usual for VoIP monitoring
/// (Cole & Rosenbluth, 2001): the delay impairment from the effective one-way latency
/// (RTT/2 + 2 × jitter + 10 ms codec allowance), the equipment impairment as 2.5 R points per
/// percent of packet loss, then R mapped to MOS by G.107 Annex B. `None` when the stream has
/// none of round trip, jitter and loss to estimate from.
pub fn estimate_mos(s: &MediaStream) -> Option<f64> {
    if s.average_round_trip_us.is_none()
        && s.average_jitter_us.is_none()
        && s.average_packet_loss_rate.is_none()
    {
        return None;
    }
    let ms = |us: Option<i64>| us.unwrap_or(0) as f64 / 1000.0;
    let effective = ms(s.average_round_trip_us) / 2.0 + 2.0 * ms(s.average_jitter_us) + 10.0;
    let mut r = if effective < 160.0 {
        93.2 - effective / 40.0
    } else {
        93.2 - (effective - 120.0) / 10.0
    };
    r -= 2.5 * s.average_packet_loss_rate.unwrap_or(0.0) * 100.0;
    Some((r_to_mos(r) * 100.0).round() / 100.0)
}

/// G.107 Annex B: MOS from the rating factor R.
pub fn r_to_mos(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6
    }
}

/// Fills in estimated MOS where missing and returns the verdict.
pub fn assess(streams: &mut [MediaStream]) -> (QualityVerdict, Vec<QualityMetric>) {
    for s in streams.iter_mut() {
        if s.mos.is_none() {
            s.mos = estimate_mos(s);
            s.mos_estimated = s.mos.is_some();
        }
    }
    classify(streams)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r_to_mos_matches_g107_reference_points() {
        assert!((r_to_mos(93.2) - 4.41).abs() < 0.01);
        assert!((r_to_mos(50.0) - 2.58).abs() < 0.01);
        assert_eq!(r_to_mos(-3.0), 1.0);
        assert_eq!(r_to_mos(120.0), 4.5);
    }

    #[test]
    fn estimates_fall_with_impairments() {
        let good = MediaStream {
            average_round_trip_us: Some(40_000),
            average_jitter_us: Some(2_000),
            average_packet_loss_rate: Some(0.0),
            ..Default::default()
        };
        let bad = MediaStream {
            average_round_trip_us: Some(600_000),
            average_jitter_us: Some(40_000),
            average_packet_loss_rate: Some(0.05),
            ..Default::default()
        };
        let (g, b) = (
            estimate_mos(&good).unwrap_or(0.0),
            estimate_mos(&bad).unwrap_or(5.0),
        );
        assert!(g > 4.3 && b < 3.0 && g > b, "{g} {b}");
        assert_eq!(estimate_mos(&MediaStream::default()), None);
    }
}

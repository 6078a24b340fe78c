//! # ocx-sample
//!
//! A deterministic generator of realistic call records, for demos (`ocx-server --demo`), load
//! (`ocx calls generate`, `ocx-bench`) and tests. A crate of its own, apart from the contract
//! crate every client links, and apart from the test kit (which needs the server, while the
//! server's `--demo` needs this).
//!
//! The same seed, lines and start time always give the same records, so a test can regenerate
//! what it sent and a demo database looks the same on every machine. The randomness is a
//! SplitMix64 stream written out in this crate ([`Rng`], in `rng`) rather than taken from one:
//! it is tiny, fast, stable across versions (a dependency's generator may change its output in
//! a minor release, which would silently change every seeded data set), and good enough for
//! test data. It is not for secrets. It is public so that tests draw their seeded choices from
//! the same stream.
//!
//! What the records look like, loosely after Microsoft Graph's PSTN call log rows and call
//! records, and the Teams Call Quality Dashboard (CQD):
//! - 55 % outbound (the tenant's line is the caller), 45 % inbound (the line is the callee); the
//!   call type is drawn per direction: mostly user calls, some conference, transfer, forwarding
//!   and voice-application calls, rare emergency calls;
//! - the far end is an E.164 number in +1, +44, +33 or +49 with a plausible length, in the
//!   line's own country four times out of five (emergency calls always);
//! - start times increase by exponentially distributed gaps (a Poisson arrival process);
//!   connected durations are log-normal, median 2.5 min, clamped to 3 s .. 2 h;
//! - 12 % of calls fail (486, 480, 404, 603 or 487, with a matching Q.850 cause) and last 0 s;
//! - connected calls carry two audio streams: in 85 % of calls every metric is good, in 10 % at
//!   least one metric of one stream is over a CQD threshold, and 5 % carry no metrics at all
//!   (streams without metrics, or no streams). Half of the streams carry a MOS.
//!
//! With [`CallRecordGenerator::with_incidents`] (what `--demo` and `ocx calls generate` use),
//! the traffic also has what a quality dashboard should show: trunk `sbc2.carrier.example`
//! degrades from the 6th to the 10th hour after the generator's start (60 % of its connected
//! calls poor, instead of 10 %), and calls on lines in France (+33) fail 35 % of the time
//! instead of 12 % (a low ASR). Each choice still takes the same draws, so the records are the
//! same as without incidents but for those outcomes.
//!
//! Times are whole milliseconds and metric durations whole milliseconds, so a record survives
//! a round trip through a store that keeps microseconds unchanged.

use prost_types::{Duration, Timestamp};

use ocx_api::pb;

pub mod rng;

pub use rng::Rng;

/// A tenant's number that calls are made from/to.
#[derive(Debug, Clone)]
pub struct Line {
    /// The tenant's GUID; every record on this line carries it.
    pub tenant_id: String,
    /// The number, E.164 (e.g. `+442079460000`): the caller of outbound calls, the callee of
    /// inbound ones. Its country code decides `usage_country_code` and domestic vs international.
    pub number: String,
}

impl Line {
    /// One line for each of `numbers`, all in `tenant_id`.
    pub fn all(tenant_id: &str, numbers: &[String]) -> Vec<Line> {
        numbers
            .iter()
            .map(|number| Line {
                tenant_id: tenant_id.to_owned(),
                number: number.clone(),
            })
            .collect()
    }
}

/// The duration report a carrier that agrees with the platform sends for `record`, under
/// `record_id`: the same call id, correlation id, numbers, start and duration.
pub fn report_for(record: &pb::CallRecord, record_id: String) -> pb::CallDurationReport {
    pb::CallDurationReport {
        record_id,
        call_id: record.call_id.clone(),
        correlation_id: record.correlation_id.clone(),
        caller_number: record.caller_number.clone(),
        callee_number: record.callee_number.clone(),
        start_time: record.start_time,
        duration: record.duration,
    }
}

/// Generates call records; see the module documentation for what they look like.
///
/// Also an endless [`Iterator`] of [`CallRecordGenerator::next_record`].
#[derive(Debug, Clone)]
pub struct CallRecordGenerator {
    /// The random stream every choice is drawn from, in a fixed order.
    rng: Rng,
    /// The tenant lines records are drawn for (never empty).
    lines: Vec<Line>,
    /// Start time of the last record (ms since the Unix epoch); the next one starts later.
    clock_ms: i64,
    /// Mean gap between consecutive start times.
    mean_gap_secs: f64,
    /// With [`CallRecordGenerator::within`]: where the time range starts (ms) and the width
    /// of each record's slot in it (ms).
    slots: Option<(i64, f64)>,
    /// Records made so far: folded into each `call_id` so that ids never repeat.
    count: u64,
    /// Mixed into the counter part of `call_id`s, so two seeds do not share id suffixes.
    salt: u64,
    /// Where the time range starts (ms): incidents are placed from it.
    origin_ms: i64,
    /// Whether the traffic has the incidents of the module documentation.
    incidents: bool,
}

/// Default mean gap between calls.
const DEFAULT_MEAN_GAP_SECS: f64 = 30.0;
/// Share of outbound calls.
const OUTBOUND_SHARE: f64 = 0.55;
/// Share of calls (emergency calls aside) that fail.
const FAILURE_SHARE: f64 = 0.12;
/// Share of far ends in the line's own country.
const DOMESTIC_SHARE: f64 = 0.8;
/// Share of calls whose streams are all good; [`POOR_SHARE`] are poor, the rest metric-less.
const GOOD_SHARE: f64 = 0.85;
/// Share of calls with at least one metric over a threshold.
const POOR_SHARE: f64 = 0.10;
/// With incidents: the degraded trunk's share of poor calls while it is degraded.
const DEGRADED_POOR_SHARE: f64 = 0.60;
/// With incidents: the trunk that degrades, and from when to when (ms after the start).
const DEGRADED_TRUNK: u64 = 2;
/// Hours after the start when the trunk degrades, and when it recovers.
const DEGRADED_HOURS: (i64, i64) = (6, 10);
/// With incidents: the share of calls that fail on lines in [`LOW_ASR_COUNTRY`].
const LOW_ASR_FAILURE_SHARE: f64 = 0.35;
/// With incidents: the calling code of the country whose calls fail more.
const LOW_ASR_COUNTRY: &str = "33";
/// Share of streams that carry a MOS.
const MOS_SHARE: f64 = 0.5;

/// Outbound call types with their weights.
const OUTBOUND_TYPES: &[(pb::CallType, u32)] = &[
    (pb::CallType::UserOut, 70),
    (pb::CallType::ConferenceOut, 9),
    (pb::CallType::Transfer, 8),
    (pb::CallType::Forwarding, 8),
    (pb::CallType::VoiceAppOut, 4),
    (pb::CallType::EmergencyOut, 1),
];
/// Inbound call types with their weights.
const INBOUND_TYPES: &[(pb::CallType, u32)] = &[
    (pb::CallType::UserIn, 75),
    (pb::CallType::ConferenceIn, 12),
    (pb::CallType::VoiceAppIn, 13),
];

/// A failed call: SIP code, reason phrase, Q.850 causes that go with it, weight.
struct Failure {
    /// Final SIP response code.
    code: i32,
    /// Its reason phrase.
    phrase: &'static str,
    /// Q.850 causes a gateway reports with it (one is drawn).
    causes: &'static [i32],
    /// Relative frequency.
    weight: u32,
}

/// How calls fail, roughly as often as they do.
const FAILURES: &[Failure] = &[
    Failure {
        code: 486,
        phrase: "Busy Here",
        causes: &[17],
        weight: 30,
    },
    Failure {
        code: 480,
        phrase: "Temporarily Unavailable",
        causes: &[18, 19],
        weight: 25,
    },
    Failure {
        code: 487,
        phrase: "Request Terminated",
        causes: &[31],
        weight: 20,
    },
    Failure {
        code: 603,
        phrase: "Decline",
        causes: &[21],
        weight: 15,
    },
    Failure {
        code: 404,
        phrase: "Not Found",
        causes: &[1],
        weight: 10,
    },
];

/// Audio codecs seen on Teams PSTN calls.
const CODECS: &[&str] = &["SILKWide", "OPUS", "G711", "G722"];

/// Countries far ends are drawn from (calling code without `+`).
const FAR_END_CODES: &[&str] = &["1", "44", "33", "49"];

/// Calling codes to ISO 3166-1 alpha-2, for `usage_country_code`. Country calling codes are a
/// prefix code, so at most one entry matches a number.
const COUNTRIES: &[(&str, &str)] = &[
    ("1", "US"),
    ("7", "RU"),
    ("20", "EG"),
    ("27", "ZA"),
    ("30", "GR"),
    ("31", "NL"),
    ("32", "BE"),
    ("33", "FR"),
    ("34", "ES"),
    ("36", "HU"),
    ("39", "IT"),
    ("40", "RO"),
    ("41", "CH"),
    ("43", "AT"),
    ("44", "GB"),
    ("45", "DK"),
    ("46", "SE"),
    ("47", "NO"),
    ("48", "PL"),
    ("49", "DE"),
    ("52", "MX"),
    ("55", "BR"),
    ("61", "AU"),
    ("64", "NZ"),
    ("65", "SG"),
    ("81", "JP"),
    ("82", "KR"),
    ("86", "CN"),
    ("91", "IN"),
    ("351", "PT"),
    ("352", "LU"),
    ("353", "IE"),
    ("354", "IS"),
    ("358", "FI"),
    ("420", "CZ"),
    ("971", "AE"),
    ("972", "IL"),
];

/// The five CQD metrics, for choosing which one a poor stream is poor on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Metric {
    /// Average jitter over 30 ms.
    Jitter,
    /// Average packet loss over 0.1.
    Loss,
    /// Average round trip over 500 ms.
    RoundTrip,
    /// Average audio degradation over 1.0.
    Degradation,
    /// Average ratio of concealed samples over 0.07.
    Concealed,
}

/// Every [`Metric`].
const METRICS: [Metric; 5] = [
    Metric::Jitter,
    Metric::Loss,
    Metric::RoundTrip,
    Metric::Degradation,
    Metric::Concealed,
];

impl CallRecordGenerator {
    /// `lines`: the tenant numbers (each record uses one as the tenant side); `start_unix_secs`:
    /// start of the time range; records are spread with increasing start times, on average
    /// `mean_gap_secs` apart.
    ///
    /// # Panics
    /// If `lines` is empty: there is no tenant to make calls for.
    pub fn new(seed: u64, lines: Vec<Line>, start_unix_secs: i64) -> Self {
        assert!(
            !lines.is_empty(),
            "CallRecordGenerator needs at least one line"
        );
        let mut rng = Rng::new(seed);
        let salt = rng.next_u64();
        CallRecordGenerator {
            rng,
            lines,
            clock_ms: start_unix_secs.saturating_mul(1000),
            mean_gap_secs: DEFAULT_MEAN_GAP_SECS,
            slots: None,
            count: 0,
            salt,
            origin_ms: start_unix_secs.saturating_mul(1000),
            incidents: false,
        }
    }

    /// Adds the incidents of the module documentation: a trunk degrading for a few hours, a
    /// country with a low ASR.
    pub fn with_incidents(mut self) -> Self {
        self.incidents = true;
        self
    }

    /// Like [`CallRecordGenerator::new`], but the first `count` records start within
    /// `[start_unix_secs, end_unix_secs)` and never after: the range is cut into `count` equal
    /// slots, and each record starts at a random moment of its own (later records continue at
    /// the same spacing). Start times increase as long as each slot is at least 2 ms wide.
    ///
    /// # Panics
    /// If `lines` is empty.
    pub fn within(
        seed: u64,
        lines: Vec<Line>,
        (start_unix_secs, end_unix_secs): (i64, i64),
        count: u64,
    ) -> Self {
        let mut generator = CallRecordGenerator::new(seed, lines, start_unix_secs);
        let span_ms = end_unix_secs
            .saturating_sub(start_unix_secs)
            .saturating_mul(1000);
        let slot_ms = span_ms.max(0) as f64 / count.max(1) as f64;
        generator.slots = Some((start_unix_secs.saturating_mul(1000), slot_ms));
        // Before the first slot, so that the first record may start at the range's start.
        generator.clock_ms = generator.clock_ms.saturating_sub(1);
        generator
    }

    /// Sets the mean gap between start times (default 30 s). Negative or NaN counts as 0;
    /// start times still increase by at least 1 ms.
    pub fn with_mean_gap_secs(mut self, secs: f64) -> Self {
        self.mean_gap_secs = if secs.is_finite() && secs > 0.0 {
            secs
        } else {
            0.0
        };
        self
    }

    /// The next record, version 1, carrier_id empty (the server derives it from the number).
    pub fn next_record(&mut self) -> pb::CallRecord {
        let slot = self.count as f64;
        self.count += 1;
        self.clock_ms = match self.slots {
            // A random moment of this record's slot, later than the record before.
            Some((from_ms, slot_ms)) => {
                let at = from_ms as f64 + slot_ms * (slot + self.rng.f64());
                (at.floor() as i64).max(self.clock_ms.saturating_add(1))
            }
            None => {
                let gap = self.rng.exponential(self.mean_gap_secs * 1000.0).round() as i64;
                self.clock_ms.saturating_add(gap.max(1))
            }
        };
        let start_ms = self.clock_ms;

        let line_index = self.rng.below(self.lines.len() as u64) as usize;
        let line = self.lines[line_index].clone();
        let outbound = self.rng.chance(OUTBOUND_SHARE);
        let (direction, call_type) = if outbound {
            (
                pb::CallDirection::Outbound,
                self.rng.weighted(OUTBOUND_TYPES),
            )
        } else {
            (pb::CallDirection::Inbound, self.rng.weighted(INBOUND_TYPES))
        };
        let emergency = call_type == pb::CallType::EmergencyOut;

        let line_code = calling_code(&line.number);
        let far_end = self.far_end(line_code, emergency);
        let domestic = line_code.is_some() && line_code == calling_code(&far_end);
        let (caller_number, callee_number) = if outbound {
            (line.number.clone(), far_end)
        } else {
            (far_end, line.number.clone())
        };
        let user_sip_uri = match call_type {
            pb::CallType::UserIn
            | pb::CallType::UserOut
            | pb::CallType::Transfer
            | pb::CallType::Forwarding
            | pb::CallType::EmergencyOut => format!("sip:user{}@contoso.example", line_index + 1),
            pb::CallType::VoiceAppIn | pb::CallType::VoiceAppOut => {
                format!("sip:voiceapp{}@contoso.example", line_index + 1)
            }
            pb::CallType::ConferenceIn
            | pb::CallType::ConferenceOut
            | pb::CallType::Unspecified => String::new(),
        };

        let invite_ms = start_ms - self.rng.range_i64(1000, 8000);
        // Emergency calls are always put through.
        let failure_share = if self.incidents && line_code == Some(LOW_ASR_COUNTRY) {
            LOW_ASR_FAILURE_SHARE
        } else {
            FAILURE_SHARE
        };
        let successful = emergency || !self.rng.chance(failure_share);
        let (duration_ms, final_sip_code, final_sip_phrase, q850_cause) = if successful {
            (self.connected_duration_ms(), 200, "OK", 16)
        } else {
            let failure = self.rng.weighted_by(FAILURES, |f| f.weight);
            let cause = *self.rng.pick(failure.causes);
            (0, failure.code, failure.phrase, cause)
        };

        let sbc = 1 + self.rng.below(2);
        let trunk_fqdn = format!("sbc{sbc}.carrier.example");
        let correlation_id = format!(
            "{:016x}{:016x}@{trunk_fqdn}",
            self.rng.next_u64(),
            self.rng.next_u64()
        );
        let call_id = self.call_id();
        let since_start_h = (start_ms - self.origin_ms) / 3_600_000;
        let degraded = self.incidents
            && sbc == DEGRADED_TRUNK
            && (DEGRADED_HOURS.0..DEGRADED_HOURS.1).contains(&since_start_h);
        let media_streams = if successful {
            let poor_share = if degraded {
                DEGRADED_POOR_SHARE
            } else {
                POOR_SHARE
            };
            self.media_streams(poor_share)
        } else {
            Vec::new()
        };

        pb::CallRecord {
            call_id,
            correlation_id,
            version: 1,
            carrier_id: String::new(),
            tenant_id: line.tenant_id,
            call_type: call_type.into(),
            direction: direction.into(),
            caller_number,
            callee_number,
            user_sip_uri,
            invite_time: Some(timestamp(invite_ms)),
            start_time: Some(timestamp(start_ms)),
            end_time: Some(timestamp(start_ms + duration_ms)),
            duration: Some(duration(duration_ms)),
            final_sip_code,
            final_sip_phrase: final_sip_phrase.to_owned(),
            q850_cause,
            successful,
            destination_context: if domestic {
                pb::DestinationContext::Domestic
            } else {
                pb::DestinationContext::International
            }
            .into(),
            usage_country_code: line_code.map(iso_country).unwrap_or_default().to_owned(),
            trunk_fqdn,
            media_streams,
            quality: 0,
            poor_due_to: Vec::new(),
            feed_sequence: 0,
            update_time: None,
        }
    }

    /// A revision of `record`: version + 1 with quality data changed (e.g. late media streams, or
    /// a stream that got worse) — same call_id, same times.
    ///
    /// - no streams: a connected call gets both streams with good metrics (they arrived late);
    ///   a failed one gets the early-media stream (ringback or announcement) it had;
    /// - streams without metrics: the metrics arrive, good ones;
    /// - otherwise one stream gets worse: one metric goes over its CQD threshold (and its MOS,
    ///   if it has one, drops into the poor range).
    ///
    /// Output-only fields (`quality`, `poor_due_to`, `feed_sequence`, `update_time`, estimated
    /// MOS) are cleared, so a record read back from the server can be revised and sent again.
    pub fn revise(&mut self, record: &pb::CallRecord) -> pb::CallRecord {
        let mut revised = record.clone();
        revised.version = record.version.saturating_add(1);
        revised.quality = 0;
        revised.poor_due_to.clear();
        revised.feed_sequence = 0;
        revised.update_time = None;
        for stream in &mut revised.media_streams {
            if stream.mos_estimated {
                stream.mos = None;
                stream.mos_estimated = false;
            }
        }
        if revised.media_streams.is_empty() {
            let codec = *self.rng.pick(CODECS);
            revised.media_streams = if revised.successful {
                vec![
                    self.good_stream(pb::StreamDirection::CallerToCallee, codec),
                    self.good_stream(pb::StreamDirection::CalleeToCaller, codec),
                ]
            } else {
                vec![self.good_stream(pb::StreamDirection::CalleeToCaller, codec)]
            };
        } else if !revised.media_streams.iter().any(has_metrics) {
            for stream in &mut revised.media_streams {
                let codec = if stream.codec.is_empty() {
                    *self.rng.pick(CODECS)
                } else {
                    stream.codec.as_str()
                };
                let filled = self.good_stream(stream.direction(), codec);
                *stream = filled;
            }
        } else {
            let with_metrics: Vec<usize> = (0..revised.media_streams.len())
                .filter(|&i| has_metrics(&revised.media_streams[i]))
                .collect();
            let index = *self.rng.pick(&with_metrics);
            let metric = *self.rng.pick(&METRICS);
            let stream = &mut revised.media_streams[index];
            make_poor(&mut self.rng, stream, metric);
            if stream.mos.is_some() {
                stream.mos = Some(round(self.rng.range_f64(1.5, 3.0), 2));
            }
        }
        revised
    }

    /// A far-end number: in the line's country with [`DOMESTIC_SHARE`] (always for emergency
    /// calls), else in another of [`FAR_END_CODES`].
    fn far_end(&mut self, line_code: Option<&'static str>, emergency: bool) -> String {
        let home = line_code.filter(|code| FAR_END_CODES.contains(code));
        let code = match home {
            Some(home) if emergency || self.rng.chance(DOMESTIC_SHARE) => home,
            Some(home) => {
                let others: Vec<&str> = FAR_END_CODES
                    .iter()
                    .copied()
                    .filter(|c| *c != home)
                    .collect();
                *self.rng.pick(&others)
            }
            None => *self.rng.pick(FAR_END_CODES),
        };
        let national = self.national_number(code);
        format!("+{code}{national}")
    }

    /// A national significant number of a plausible shape and length for `code`.
    fn national_number(&mut self, code: &str) -> String {
        let r = &mut self.rng;
        match code {
            // NANP: NPA-NXX-XXXX, area code and exchange not starting with 0 or 1.
            "1" => format!(
                "{}{:02}{}{:02}{:04}",
                r.range_i64(2, 9),
                r.below(100),
                r.range_i64(2, 9),
                r.below(100),
                r.below(10_000)
            ),
            // UK: mobile 7xxx xxxxxx, London 20 xxxx xxxx, Manchester 161 xxx xxxx.
            "44" => match r.below(3) {
                0 => format!("7{}{:08}", r.range_i64(4, 9), r.below(100_000_000)),
                1 => format!("20{}{:07}", r.pick(&[3, 7, 8]), r.below(10_000_000)),
                _ => format!("161{:07}", r.below(10_000_000)),
            },
            // France: nine digits, 1-5 geographic, 6-7 mobile.
            "33" => format!("{}{:08}", r.range_i64(1, 7), r.below(100_000_000)),
            // Germany: mobile 15x/16x/17x + 8 digits, Berlin 30 / Munich 89 + 8 digits.
            "49" => match r.below(2) {
                0 => format!(
                    "1{}{}{:08}",
                    r.range_i64(5, 7),
                    r.below(10),
                    r.below(100_000_000)
                ),
                _ => format!("{}{:08}", r.pick(&["30", "89"]), r.below(100_000_000)),
            },
            // Not drawn (see FAR_END_CODES); ten digits is valid everywhere E.164 is.
            _ => format!("{}{:09}", r.range_i64(1, 9), r.below(1_000_000_000)),
        }
    }

    /// A connected call's duration: log-normal with median 150 s, clamped to 3 s .. 2 h.
    fn connected_duration_ms(&mut self) -> i64 {
        let secs = (150f64.ln() + 1.1 * self.rng.normal()).exp();
        (secs.clamp(3.0, 7200.0) * 1000.0).round() as i64
    }

    /// The streams of a connected call: poor with `poor_share`, without metrics 5 % of the
    /// time, good otherwise.
    fn media_streams(&mut self, poor_share: f64) -> Vec<pb::MediaStream> {
        let good_share = 1.0 - poor_share - (1.0 - GOOD_SHARE - POOR_SHARE);
        let codec = *self.rng.pick(CODECS);
        let directions = [
            pb::StreamDirection::CallerToCallee,
            pb::StreamDirection::CalleeToCaller,
        ];
        let roll = self.rng.f64();
        if roll < good_share {
            directions
                .iter()
                .map(|&d| self.good_stream(d, codec))
                .collect()
        } else if roll < good_share + poor_share {
            // One stream, or now and then both, over one or more thresholds.
            let both = self.rng.chance(0.2);
            let poor_index = self.rng.below(2) as usize;
            directions
                .iter()
                .enumerate()
                .map(|(i, &d)| {
                    if both || i == poor_index {
                        self.poor_stream(d, codec)
                    } else {
                        self.good_stream(d, codec)
                    }
                })
                .collect()
        } else if self.rng.chance(0.5) {
            // Streams reported without any measurement.
            directions
                .iter()
                .map(|&d| pb::MediaStream {
                    direction: d.into(),
                    codec: codec.to_owned(),
                    ..Default::default()
                })
                .collect()
        } else {
            Vec::new()
        }
    }

    /// A stream with every metric within the CQD thresholds; a MOS half of the time.
    fn good_stream(&mut self, direction: pb::StreamDirection, codec: &str) -> pb::MediaStream {
        let r = &mut self.rng;
        let jitter = r.range_i64(2, 20);
        let loss = round(r.f64().powi(2) * 0.02, 4);
        let rtt = r.range_i64(20, 200);
        let max_jitter = (jitter as f64 * r.range_f64(1.5, 4.0)).round() as i64;
        let max_loss = round((loss * r.range_f64(1.0, 5.0)).min(1.0), 4);
        let max_rtt = (rtt as f64 * r.range_f64(1.2, 3.0)).round() as i64;
        let degradation = round(r.range_f64(0.0, 0.6), 2);
        let concealed = round(r.range_f64(0.0, 0.03), 4);
        let mos = r.chance(MOS_SHARE).then(|| round(r.range_f64(3.0, 4.5), 2));
        pb::MediaStream {
            direction: direction.into(),
            codec: codec.to_owned(),
            average_jitter: Some(millis(jitter)),
            max_jitter: Some(millis(max_jitter)),
            average_packet_loss_rate: Some(loss),
            max_packet_loss_rate: Some(max_loss),
            average_round_trip_time: Some(millis(rtt)),
            max_round_trip_time: Some(millis(max_rtt)),
            average_audio_degradation: Some(degradation),
            average_ratio_of_concealed_samples: Some(concealed),
            mos,
            mos_estimated: false,
        }
    }

    /// A stream with one to three metrics over their thresholds; a poor MOS half of the time.
    fn poor_stream(&mut self, direction: pb::StreamDirection, codec: &str) -> pb::MediaStream {
        let mut stream = self.good_stream(direction, codec);
        let r = &mut self.rng;
        let mut metrics = METRICS.to_vec();
        let how_many = 1 + r.below(3) as usize;
        for _ in 0..how_many {
            let metric = metrics.remove(r.below(metrics.len() as u64) as usize);
            make_poor(r, &mut stream, metric);
        }
        if stream.mos.is_some() {
            stream.mos = Some(round(r.range_f64(1.5, 3.0), 2));
        }
        stream
    }

    /// A UUID-looking id (version 4 layout) whose last group is a bijection of the record
    /// counter, so ids from one generator never repeat.
    fn call_id(&mut self) -> String {
        let a = self.rng.next_u64();
        let b = self.rng.next_u64();
        // Multiplying by an odd constant is a bijection modulo 2^48, and so is the XOR.
        let tail = (self.count.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.salt) & 0xFFFF_FFFF_FFFF;
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xFFFF,
            a & 0xFFF,
            0x8000 | (b & 0x3FFF),
            tail
        )
    }
}

impl Iterator for CallRecordGenerator {
    type Item = pb::CallRecord;

    /// Always `Some`: the generator never runs out.
    fn next(&mut self) -> Option<pb::CallRecord> {
        Some(self.next_record())
    }
}

/// Whether a stream carries any measurement.
fn has_metrics(s: &pb::MediaStream) -> bool {
    s.average_jitter.is_some()
        || s.max_jitter.is_some()
        || s.average_packet_loss_rate.is_some()
        || s.max_packet_loss_rate.is_some()
        || s.average_round_trip_time.is_some()
        || s.max_round_trip_time.is_some()
        || s.average_audio_degradation.is_some()
        || s.average_ratio_of_concealed_samples.is_some()
        || s.mos.is_some()
}

/// The calling code (without `+`) of an E.164 number, if it is in [`COUNTRIES`].
fn calling_code(number: &str) -> Option<&'static str> {
    let digits = number.strip_prefix('+')?;
    COUNTRIES
        .iter()
        .map(|(code, _)| *code)
        .find(|code| digits.starts_with(code))
}

/// The ISO 3166-1 alpha-2 code of a calling code from [`COUNTRIES`].
fn iso_country(code: &str) -> &'static str {
    COUNTRIES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("", |(_, iso)| *iso)
}

/// Milliseconds since the Unix epoch as a timestamp.
fn timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// Milliseconds as a (non-negative) duration.
fn duration(ms: i64) -> Duration {
    Duration {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// Whole milliseconds as a duration (metric values).
fn millis(ms: i64) -> Duration {
    duration(ms)
}

/// `x` rounded to `places` decimals, as a measurement would be reported.
fn round(x: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (x * scale).round() / scale
}

/// Pushes one metric of `stream` over its CQD threshold (its maximum follows).
fn make_poor(rng: &mut Rng, stream: &mut pb::MediaStream, metric: Metric) {
    match metric {
        Metric::Jitter => {
            let avg = rng.range_i64(31, 120);
            let max = (avg as f64 * rng.range_f64(1.5, 4.0)).round() as i64;
            stream.average_jitter = Some(millis(avg));
            stream.max_jitter = Some(millis(max));
        }
        Metric::Loss => {
            let avg = round(rng.range_f64(0.11, 0.35), 4);
            stream.average_packet_loss_rate = Some(avg);
            stream.max_packet_loss_rate = Some(round((avg * rng.range_f64(1.2, 2.5)).min(1.0), 4));
        }
        Metric::RoundTrip => {
            let avg = rng.range_i64(510, 1500);
            let max = (avg as f64 * rng.range_f64(1.1, 2.0)).round() as i64;
            stream.average_round_trip_time = Some(millis(avg));
            stream.max_round_trip_time = Some(millis(max));
        }
        Metric::Degradation => {
            stream.average_audio_degradation = Some(round(rng.range_f64(1.05, 2.5), 2));
        }
        Metric::Concealed => {
            stream.average_ratio_of_concealed_samples = Some(round(rng.range_f64(0.075, 0.25), 4));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    fn lines() -> Vec<Line> {
        [
            "+442079460001",
            "+14155550100",
            "+33142685300",
            "+493012345678",
        ]
        .iter()
        .map(|n| Line {
            tenant_id: TENANT.into(),
            number: (*n).into(),
        })
        .collect()
    }

    fn ms(d: &Option<Duration>) -> Option<i64> {
        d.as_ref()
            .map(|d| d.seconds * 1000 + i64::from(d.nanos) / 1_000_000)
    }

    fn micros(t: &Option<Timestamp>) -> i64 {
        let t = t.expect("time set");
        t.seconds * 1_000_000 + i64::from(t.nanos) / 1000
    }

    #[derive(Debug, PartialEq, Eq, Hash)]
    enum Verdict {
        Good,
        Poor,
        Unclassified,
    }

    /// The CQD rule, written independently of the generator.
    fn verdict(record: &pb::CallRecord) -> Verdict {
        let mut classified = false;
        let mut poor = false;
        for s in &record.media_streams {
            let checks = [
                ms(&s.average_jitter).map(|v| v > 30),
                s.average_packet_loss_rate.map(|v| v > 0.1),
                ms(&s.average_round_trip_time).map(|v| v > 500),
                s.average_audio_degradation.map(|v| v > 1.0),
                s.average_ratio_of_concealed_samples.map(|v| v > 0.07),
            ];
            for over in checks.into_iter().flatten() {
                classified = true;
                poor |= over;
            }
        }
        match (classified, poor) {
            (false, _) => Verdict::Unclassified,
            (true, false) => Verdict::Good,
            (true, true) => Verdict::Poor,
        }
    }

    #[test]
    fn same_seed_same_records() {
        let a: Vec<_> = CallRecordGenerator::new(42, lines(), 1_700_000_000)
            .take(500)
            .collect();
        let b: Vec<_> = CallRecordGenerator::new(42, lines(), 1_700_000_000)
            .take(500)
            .collect();
        assert_eq!(a, b);
        let c: Vec<_> = CallRecordGenerator::new(43, lines(), 1_700_000_000)
            .take(500)
            .collect();
        assert_ne!(a, c);
    }

    #[test]
    fn within_a_range_every_record_starts_inside_it_spread_over_it() {
        let (from, to) = (1_700_000_000, 1_700_003_600);
        for count in [1, 2, 7, 1000, 900_000] {
            let records: Vec<_> = CallRecordGenerator::within(5, lines(), (from, to), count)
                .take(count as usize)
                .collect();
            let starts: Vec<i64> = records.iter().map(|r| micros(&r.start_time)).collect();
            assert!(
                starts.windows(2).all(|w| w[0] < w[1]),
                "{count}: increasing"
            );
            assert!(
                starts[0] >= from * 1_000_000,
                "{count}: not before the range"
            );
            let last = *starts.last().expect("records");
            assert!(last < to * 1_000_000, "{count}: not after the range");
            // Spread over it: the last record is in the last slot.
            let slot = (to - from) * 1_000_000 / count as i64;
            assert!(last >= to * 1_000_000 - slot, "{count}: {last}");
        }
        let again: Vec<_> = CallRecordGenerator::within(5, lines(), (from, to), 7)
            .take(7)
            .collect();
        let first: Vec<_> = CallRecordGenerator::within(5, lines(), (from, to), 7)
            .take(7)
            .collect();
        assert_eq!(again, first, "the same seed gives the same records");
    }

    #[test]
    fn records_are_valid_unique_and_ordered() {
        let records: Vec<_> = CallRecordGenerator::new(7, lines(), 1_700_000_000)
            .take(10_000)
            .collect();
        let ids: HashSet<&str> = records.iter().map(|r| r.call_id.as_str()).collect();
        assert_eq!(ids.len(), records.len(), "call ids repeat");
        let mut previous_start = i64::MIN;
        for r in &records {
            ocx_api::validate::e164(&r.caller_number).expect("caller is E.164");
            ocx_api::validate::e164(&r.callee_number).expect("callee is E.164");
            ocx_api::validate::tenant_id(&r.tenant_id).expect("tenant");
            ocx_api::validate::country_code(&r.usage_country_code).expect("country");
            if !r.user_sip_uri.is_empty() {
                ocx_api::validate::sip_uri(&r.user_sip_uri).expect("sip uri");
            }
            let (invite, start, end) = (
                micros(&r.invite_time),
                micros(&r.start_time),
                micros(&r.end_time),
            );
            assert!(invite < start && start <= end, "{r:?}");
            assert!(start > previous_start, "start times increase");
            previous_start = start;
            assert_eq!(ms(&r.duration).map(|d| d * 1000), Some(end - start));
            assert_eq!(r.version, 1);
            assert!(r.carrier_id.is_empty());
            assert!(r.call_id.len() == 36 && r.call_id.split('-').count() == 5);
            assert!(r.correlation_id.ends_with(".carrier.example"));
            assert!(r.final_sip_phrase.len() <= ocx_api::validate::MAX_TEXT_LEN);
            let tenant_side = match r.direction() {
                pb::CallDirection::Outbound => &r.caller_number,
                pb::CallDirection::Inbound => &r.callee_number,
                pb::CallDirection::Unspecified => panic!("direction unset: {r:?}"),
            };
            assert!(lines().iter().any(|l| &l.number == tenant_side));
            if r.successful {
                assert_eq!((r.final_sip_code, r.q850_cause), (200, 16));
            } else {
                assert_eq!(start, end);
                assert!(r.media_streams.is_empty());
            }
            for s in &r.media_streams {
                for ratio in [
                    s.average_packet_loss_rate,
                    s.max_packet_loss_rate,
                    s.average_ratio_of_concealed_samples,
                ]
                .into_iter()
                .flatten()
                {
                    assert!((0.0..=1.0).contains(&ratio));
                }
                if let Some(mos) = s.mos {
                    assert!((1.0..=5.0).contains(&mos));
                }
                assert!(ms(&s.max_round_trip_time).unwrap_or(0) <= 3_600_000);
            }
        }
    }

    #[test]
    fn the_mix_is_realistic() {
        let records: Vec<_> = CallRecordGenerator::new(1, lines(), 1_700_000_000)
            .take(10_000)
            .collect();
        let share = |f: &dyn Fn(&pb::CallRecord) -> bool| {
            records.iter().filter(|r| f(r)).count() as f64 / records.len() as f64
        };
        let outbound = share(&|r| r.direction() == pb::CallDirection::Outbound);
        assert!((0.52..0.58).contains(&outbound), "{outbound}");
        let failed = share(&|r| !r.successful);
        assert!((0.10..0.14).contains(&failed), "{failed}");
        let connected: Vec<_> = records.iter().filter(|r| r.successful).collect();
        let of_connected = |v: Verdict| {
            connected.iter().filter(|r| verdict(r) == v).count() as f64 / connected.len() as f64
        };
        let (good, poor, none) = (
            of_connected(Verdict::Good),
            of_connected(Verdict::Poor),
            of_connected(Verdict::Unclassified),
        );
        assert!((0.82..0.88).contains(&good), "{good}");
        assert!((0.08..0.12).contains(&poor), "{poor}");
        assert!((0.035..0.065).contains(&none), "{none}");
        assert!(connected.iter().any(|r| r.media_streams.is_empty()));
        assert!(
            connected
                .iter()
                .any(|r| !r.media_streams.is_empty() && !r.media_streams.iter().any(has_metrics))
        );
        let international =
            share(&|r| r.destination_context() == pb::DestinationContext::International);
        assert!((0.15..0.25).contains(&international), "{international}");
        let types: HashSet<i32> = records.iter().map(|r| r.call_type).collect();
        assert_eq!(types.len(), 9, "every call type appears");
        let mut durations: Vec<i64> = connected.iter().filter_map(|r| ms(&r.duration)).collect();
        durations.sort_unstable();
        let median = durations[durations.len() / 2];
        assert!((120_000..=180_000).contains(&median), "{median}");
        assert!(durations[0] >= 3000 && durations[durations.len() - 1] <= 7_200_000);
        for r in &records {
            let (tenant_side, far_end) = match r.direction() {
                pb::CallDirection::Outbound => (&r.caller_number, &r.callee_number),
                _ => (&r.callee_number, &r.caller_number),
            };
            let country = |n: &str| calling_code(n).map(iso_country).unwrap_or_default();
            let expected = match &tenant_side[..3] {
                "+44" => "GB",
                "+33" => "FR",
                "+49" => "DE",
                _ => "US",
            };
            assert_eq!(r.usage_country_code, expected);
            let domestic = country(tenant_side) == country(far_end);
            assert_eq!(
                r.destination_context() == pb::DestinationContext::Domestic,
                domestic
            );
        }
    }

    #[test]
    fn revisions_change_quality_not_identity() {
        let mut generator = CallRecordGenerator::new(3, lines(), 1_700_000_000);
        let records: Vec<_> = generator.by_ref().take(2000).collect();
        let mut became_classified = 0;
        let mut became_poor = 0;
        for record in &records {
            let revised = generator.revise(record);
            assert_eq!(revised.version, 2);
            assert_eq!(revised.call_id, record.call_id);
            assert_eq!(revised.start_time, record.start_time);
            assert_eq!(revised.end_time, record.end_time);
            assert_eq!(revised.duration, record.duration);
            assert_ne!(revised.media_streams, record.media_streams);
            if verdict(record) == Verdict::Unclassified
                && verdict(&revised) != Verdict::Unclassified
            {
                became_classified += 1;
            }
            if verdict(record) == Verdict::Good && verdict(&revised) == Verdict::Poor {
                became_poor += 1;
            }
            assert_eq!(generator.revise(&revised).version, 3);
        }
        assert!(became_classified > 0 && became_poor > 0);
    }

    #[test]
    fn revising_a_stored_record_clears_output_fields() {
        let mut generator = CallRecordGenerator::new(9, lines(), 1_700_000_000);
        let mut stored = generator.next_record();
        stored.quality = pb::QualityVerdict::Good.into();
        stored.feed_sequence = 12;
        stored.update_time = Some(Timestamp::default());
        stored.carrier_id = "acme-tel".into();
        let revised = generator.revise(&stored);
        assert_eq!(
            (revised.quality, revised.feed_sequence, revised.update_time),
            (0, 0, None)
        );
        assert_eq!(revised.carrier_id, "acme-tel");
    }
}

//! Property tests of the server's edge: the shared format checks (`ocx_api::validate`) and the
//! wire → domain conversions (`convert::number_upload`, `convert_calls::call_record_in`,
//! `convert_durations::{report_in, period, tolerance}`).
//!
//! Inputs come from SplitMix64 streams with fixed seeds, so every run checks the same cases and
//! a failure prints the seed of the case that broke. Generators written here, not proptest, keep
//! the dev-dependencies as they are; `fuzz/` runs the same checks on inputs found by libFuzzer.
//!
//! For any input, however odd (huge strings, control characters, multi-byte characters at the
//! boundaries, unknown enum numbers, timestamps and durations at `i64::MIN`/`MAX`, nanos out of
//! range, corrupted wire bytes):
//! - nothing panics;
//! - `quote` stays within [`QUOTE_BOUND`] bytes, leaves no control character unescaped, and says
//!   how long a value it cut was;
//! - the simple validators agree with their documented rule, written out again here;
//! - a rejection lists at least one violation, every violation names a field under the path the
//!   caller gave, and no description swells past [`MAX_DESCRIPTION`].
//!
//! For valid input built by the generators: it is accepted, and the domain value carries back to
//! the wire exactly what was sent (the fields the wire form of the domain value carries).

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use ocx_api::pb;
use ocx_api::validate::{self, MAX_QUOTED, MAX_SIP_URI_LEN, MAX_TEXT_LEN};
use ocx_server::convert::number_upload;
use ocx_server::convert_calls::{call_record, call_record_in};
use ocx_server::convert_durations::{
    DEFAULT_TOLERANCE_US, MAX_DURATION_US, call_duration, period, report_in, tolerance,
};
use ocx_server::domain::{CallDuration, Capability, now_micros};
use ocx_server::error::Violations;
use ocx_testkit::sample::{CallRecordGenerator, Line};
use prost::Message;
use prost_types::{Duration, Timestamp};

/// Cases per property: every branch is hit many times, and a debug run stays well under 5 s.
const CASES: u64 = 3_000;

/// The most bytes `quote` may return: two quotes, [`MAX_QUOTED`] characters escaped at worst
/// to 10 bytes each (`\u{10ffff}`), and the suffix `… (N characters)` with N up to 20 digits.
const QUOTE_BOUND: usize = 2 + 10 * MAX_QUOTED + 40;

/// The longest violation description allowed: a quoted value and a sentence about it.
const MAX_DESCRIPTION: usize = QUOTE_BOUND + 200;

/// The last second the server accepts in a timestamp: 9999-12-31T23:59:59Z.
const MAX_TIMESTAMP_SECS: i64 = 253_402_300_799;

/// The longest accepted call: seven days (`convert_calls` allows no more).
const MAX_CALL_US: i64 = 7 * 24 * 3600 * 1_000_000;

/// Longest stream metric duration (`convert_calls` allows one hour).
const MAX_METRIC_US: i64 = 3600 * 1_000_000;

/// Longest tolerance (`convert_durations` allows one hour).
const MAX_TOLERANCE_US: i64 = 3600 * 1_000_000;

/// Longest reconciliation period (`convert_durations` allows 366 days).
const MAX_PERIOD_US: i64 = 366 * 24 * 3600 * 1_000_000;

/// Integers on the edges of the conversions: extremes, zero, and the ends of accepted ranges.
const EDGE_I64: &[i64] = &[
    i64::MIN,
    i64::MIN + 1,
    -MAX_TIMESTAMP_SECS - 1,
    -1_000_000,
    -1,
    0,
    1,
    3600,
    86_400,
    604_800,
    MAX_TIMESTAMP_SECS,
    MAX_TIMESTAMP_SECS + 1,
    i64::MAX / 1_000_000,
    i64::MAX / 1_000_000 + 1,
    i64::MAX - 1,
    i64::MAX,
];

/// 32-bit integers on the edges: nanos just inside and outside `0..1e9`, and enum numbers.
const EDGE_I32: &[i32] = &[
    i32::MIN,
    -1_000_000_000,
    -999_999_999,
    -1,
    0,
    1,
    2,
    3,
    6,
    7,
    10,
    99,
    100,
    127,
    128,
    699,
    700,
    999,
    1000,
    999_999_999,
    1_000_000_000,
    i32::MAX,
];

/// Floating-point values on the edges of the ratio, degradation and MOS ranges.
const EDGE_F64: &[f64] = &[
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    -0.0,
    0.0,
    f64::MIN_POSITIVE,
    -f64::MIN_POSITIVE,
    0.07,
    0.1,
    1.0,
    1.0 + f64::EPSILON,
    -1.0,
    5.0,
    5.000_001,
    f64::MAX,
    f64::MIN,
];

/// Characters that sit on the validators' edges: their separators, hex and non-hex letters,
/// whitespace and controls (C0, DEL, C1), non-ASCII digits and letters whose case mapping
/// changes length, combining and invisible marks, and the largest scalar value.
const TRICKY: &[char] = &[
    '+',
    '-',
    '@',
    ':',
    ';',
    '.',
    '[',
    ']',
    '=',
    ' ',
    '\t',
    '\n',
    '\0',
    '\u{7f}',
    '\u{85}',
    '0',
    '9',
    'a',
    'f',
    'g',
    'z',
    'A',
    'F',
    'G',
    'Z',
    'İ',
    'K',
    'ſ',
    '٣',
    '１',
    '\u{301}',
    '\u{200b}',
    '\u{2028}',
    '\u{feff}',
    '\u{fffd}',
    '🙂',
    '\u{10ffff}',
];

/// SplitMix64 (the generator `ocx_api::sample` uses): tiny, fast and deterministic.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    /// The next 64 random bits.
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; the modulo bias does not matter for test data).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `0..n`, as an index.
    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// Uniform in `lo..=hi` (a range narrower than `i64`'s).
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below(hi.abs_diff(lo) + 1) as i64
    }

    /// In `lo..=hi`, one of the two ends a quarter of the time: off-by-one errors live there.
    fn edgy(&mut self, lo: i64, hi: i64) -> i64 {
        match self.below(8) {
            0 => lo,
            1 => hi,
            _ => self.range(lo, hi),
        }
    }

    /// True one time in `n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// One element of a non-empty slice.
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.index(items.len())]
    }

    /// Any `i64`, an edge value half of the time.
    fn any_i64(&mut self) -> i64 {
        if self.one_in(2) {
            self.pick(EDGE_I64)
        } else {
            self.next_u64() as i64
        }
    }

    /// Any `i32`, an edge value half of the time.
    fn any_i32(&mut self) -> i32 {
        if self.one_in(2) {
            self.pick(EDGE_I32)
        } else {
            self.next_u64() as i32
        }
    }

    /// Any `f64`: an edge, any bit pattern (NaNs and subnormals included), or a plausible metric.
    fn any_f64(&mut self) -> f64 {
        match self.below(3) {
            0 => self.pick(EDGE_F64),
            1 => f64::from_bits(self.next_u64()),
            _ => self.unit() * 6.0 - 0.5,
        }
    }

    /// Uniform in `[0, 1]`, both ends included now and then.
    fn unit(&mut self) -> f64 {
        match self.below(20) {
            0 => 0.0,
            1 => 1.0,
            _ => (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64,
        }
    }

    /// Any character, weighted to the ones validators care about, of every UTF-8 length.
    fn any_char(&mut self) -> char {
        let code = match self.below(8) {
            0 => return self.pick(TRICKY),
            1 => self.below(0x20) as u32,
            2 | 3 => 0x20 + self.below(0x5f) as u32,
            4 => 0x80 + self.below(0x780) as u32,
            5 => 0x800 + self.below(0xf800) as u32,
            _ => 0x1_0000 + self.below(0x10_0000) as u32,
        };
        char::from_u32(code).unwrap_or('\u{fffd}')
    }

    /// Any string: empty, short, around `quote`'s cut, or far longer than every limit.
    fn any_string(&mut self) -> String {
        let len = match self.below(16) {
            0 => 0,
            1 => 500 + self.index(4_000),
            2 | 3 => MAX_QUOTED - 2 + self.index(5),
            _ => self.index(80),
        };
        (0..len).map(|_| self.any_char()).collect()
    }

    /// A near miss of `valid`: one character inserted, removed or replaced, cut short, doubled.
    fn mutate(&mut self, valid: &str) -> String {
        let mut chars: Vec<char> = valid.chars().collect();
        let at = self.index(chars.len() + 1);
        match self.below(5) {
            0 => chars.insert(at, self.any_char()),
            1 if at < chars.len() => {
                chars.remove(at);
            }
            2 if at < chars.len() => chars[at] = self.any_char(),
            3 => chars.truncate(at),
            _ => return valid.repeat(2),
        }
        chars.into_iter().collect()
    }

    /// `valid` itself, a near miss of it, or any string, a third of the time each.
    fn near(&mut self, valid: String) -> String {
        match self.below(3) {
            0 => valid,
            1 => self.mutate(&valid),
            _ => self.any_string(),
        }
    }

    /// `n` characters drawn from `alphabet`.
    fn chars_of(&mut self, alphabet: &[u8], n: usize) -> String {
        (0..n)
            .map(|_| char::from(self.pick(alphabet)))
            .collect::<String>()
    }

    /// A valid E.164 number: `+`, a digit 1-9, then 1 to 14 digits.
    fn e164(&mut self) -> String {
        let rest = self.index(14) + 1;
        format!(
            "+{}{}",
            self.range(1, 9),
            self.chars_of(b"0123456789", rest)
        )
    }

    /// A valid tenant id: a lower-case GUID.
    fn tenant_id(&mut self) -> String {
        let groups: Vec<String> = [8, 4, 4, 4, 12]
            .iter()
            .map(|&n| self.chars_of(b"0123456789abcdef", n))
            .collect();
        groups.join("-")
    }

    /// A valid carrier id: a letter, then `a-z0-9-`, ending in a letter or digit; 3 to 63 long.
    fn carrier_id(&mut self) -> String {
        let middle = self.index(61) + 1;
        format!(
            "{}{}{}",
            self.chars_of(b"abcdefghijklmnopqrstuvwxyz", 1),
            self.chars_of(b"abcdefghijklmnopqrstuvwxyz0123456789-", middle),
            self.chars_of(b"abcdefghijklmnopqrstuvwxyz0123456789", 1),
        )
    }

    /// A valid country code: two upper-case letters.
    fn country_code(&mut self) -> String {
        self.chars_of(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 2)
    }

    /// A valid host label: letters, digits and inner hyphens, in either case.
    fn host_label(&mut self) -> String {
        const EDGE: &[u8] = b"abcxyzABCXYZ0189";
        let inner = self.index(8);
        let mut label = self.chars_of(EDGE, 1);
        label += &self.chars_of(b"abcxyzABCXYZ0189-", inner);
        if inner > 0 {
            label += &self.chars_of(EDGE, 1);
        }
        label
    }

    /// A valid SIP URI: `sip:` or `sips:` in any case, a user, a domain, maybe a port and
    /// parameters.
    fn sip_uri(&mut self) -> String {
        let scheme = self.pick(&["sip", "sips", "SIP", "Sips"]);
        let user_len = self.index(20) + 1;
        let user = self.chars_of(b"abcXYZ019+._-%!~*'()&=$,?/", user_len);
        let labels: Vec<String> = (0..self.range(1, 4)).map(|_| self.host_label()).collect();
        let mut uri = format!("{scheme}:{user}@{}", labels.join("."));
        if self.one_in(2) {
            uri += &format!(":{}", self.range(1, 65_535));
        }
        if self.one_in(2) {
            uri += self.pick(&[";transport=tls", ";user=phone", ";lr", ";x=:@;"]);
        }
        uri
    }

    /// Valid free text: up to `max` characters, none of them a control character.
    fn text(&mut self, max: usize) -> String {
        let len = if self.one_in(10) {
            max
        } else {
            self.index(max.min(40) + 1)
        };
        let mut text = String::new();
        let mut count = 0;
        while count < len {
            let c = self.any_char();
            if !c.is_control() {
                text.push(c);
                count += 1;
            }
        }
        text
    }

    /// Valid non-empty free text.
    fn non_empty_text(&mut self, max: usize) -> String {
        let text = self.text(max);
        if text.is_empty() { "x".into() } else { text }
    }

    /// A string that breaks a text rule: one character too many, or a control character.
    fn bad_text(&mut self, max: usize) -> String {
        if self.one_in(2) {
            "x".repeat(max + 1)
        } else {
            format!("{}\u{7}{}", self.text(10), self.text(10))
        }
    }

    /// A timestamp the server accepts, at `lo..=hi` seconds, with any nanos.
    fn timestamp_between(&mut self, lo: i64, hi: i64) -> Timestamp {
        Timestamp {
            seconds: self.edgy(lo, hi),
            nanos: self.edgy(0, 999_999_999) as i32,
        }
    }

    /// Any timestamp: edge or random seconds and nanos.
    fn any_timestamp(&mut self) -> Timestamp {
        Timestamp {
            seconds: self.any_i64(),
            nanos: self.any_i32(),
        }
    }

    /// Any duration: edge or random seconds and nanos.
    fn any_duration(&mut self) -> Duration {
        Duration {
            seconds: self.any_i64(),
            nanos: self.any_i32(),
        }
    }

    /// A well-formed duration of `0..=max_us` microseconds plus up to 999 nanoseconds.
    fn duration_up_to(&mut self, max_us: i64) -> Duration {
        let us = self.edgy(0, max_us);
        Duration {
            seconds: us / 1_000_000,
            nanos: (us % 1_000_000) as i32 * 1000 + self.edgy(0, 999) as i32,
        }
    }

    /// A protobuf enum number: mostly known ones, sometimes 0, negative or unknown.
    fn code(&mut self, known: i32) -> i32 {
        if self.one_in(4) {
            self.any_i32()
        } else {
            self.range(1, i64::from(known)) as i32
        }
    }

    /// `make()` or nothing, even odds.
    fn maybe<T>(&mut self, make: impl FnOnce(&mut Rng) -> T) -> Option<T> {
        if self.one_in(2) {
            Some(make(self))
        } else {
            None
        }
    }

    /// A valid media stream, output-only `mos_estimated` set at random.
    fn media_stream(&mut self) -> pb::MediaStream {
        let d = |r: &mut Rng| r.maybe(|r| r.duration_up_to(MAX_METRIC_US));
        let ratio = |r: &mut Rng| r.maybe(Rng::unit);
        pb::MediaStream {
            direction: self.range(0, 2) as i32,
            codec: self.text(64),
            average_jitter: d(self),
            max_jitter: d(self),
            average_packet_loss_rate: ratio(self),
            max_packet_loss_rate: ratio(self),
            average_round_trip_time: d(self),
            max_round_trip_time: d(self),
            average_audio_degradation: self.maybe(|r| r.unit() * 5.0),
            average_ratio_of_concealed_samples: ratio(self),
            mos: self.maybe(|r| 1.0 + r.unit() * 4.0),
            mos_estimated: self.one_in(4),
        }
    }

    /// A valid call record with every optional part present or not, and junk in the output-only
    /// fields (the server ignores them on ingest).
    fn call_record(&mut self) -> pb::CallRecord {
        let start = self.timestamp_between(0, MAX_TIMESTAMP_SECS - 604_801);
        let end_us = micros_of(&start) + self.edgy(0, MAX_CALL_US);
        let end = Timestamp {
            seconds: end_us / 1_000_000,
            nanos: (end_us % 1_000_000) as i32 * 1000 + self.edgy(0, 999) as i32,
        };
        let tenant_id = self.tenant_id();
        pb::CallRecord {
            call_id: self.non_empty_text(128),
            correlation_id: self.text(128),
            version: self.range(1, i64::MAX - 1),
            carrier_id: if self.one_in(2) {
                self.carrier_id()
            } else {
                String::new()
            },
            tenant_id: if self.one_in(4) {
                tenant_id.to_uppercase()
            } else {
                tenant_id
            },
            call_type: self.range(1, 9) as i32,
            direction: self.range(1, 2) as i32,
            caller_number: self.e164(),
            callee_number: self.e164(),
            user_sip_uri: if self.one_in(2) {
                self.sip_uri()
            } else {
                String::new()
            },
            invite_time: self.maybe(|r| r.timestamp_between(0, MAX_TIMESTAMP_SECS)),
            start_time: Some(start),
            end_time: Some(end),
            duration: self.maybe(|r| r.duration_up_to(MAX_CALL_US)),
            final_sip_code: if self.one_in(4) {
                0
            } else {
                self.range(100, 699) as i32
            },
            final_sip_phrase: self.text(MAX_TEXT_LEN),
            q850_cause: self.range(0, 127) as i32,
            successful: self.one_in(2),
            destination_context: self.range(0, 2) as i32,
            usage_country_code: if self.one_in(2) {
                self.country_code()
            } else {
                String::new()
            },
            trunk_fqdn: self.text(253),
            media_streams: (0..self.index(17)).map(|_| self.media_stream()).collect(),
            quality: self.any_i32(),
            poor_due_to: vec![self.any_i32()],
            feed_sequence: self.any_i64(),
            update_time: self.maybe(Rng::any_timestamp),
        }
    }

    /// A call record that may break any rule: each field of a valid one is replaced by an
    /// arbitrary value one time in three.
    fn any_call_record(&mut self) -> pb::CallRecord {
        let mut r = self.call_record();
        let s = |g: &mut Rng, valid: String| if g.one_in(3) { g.near(valid) } else { valid };
        r.call_id = s(self, std::mem::take(&mut r.call_id));
        r.correlation_id = s(self, std::mem::take(&mut r.correlation_id));
        r.carrier_id = s(self, std::mem::take(&mut r.carrier_id));
        r.tenant_id = s(self, std::mem::take(&mut r.tenant_id));
        r.caller_number = s(self, std::mem::take(&mut r.caller_number));
        r.callee_number = s(self, std::mem::take(&mut r.callee_number));
        r.user_sip_uri = s(self, std::mem::take(&mut r.user_sip_uri));
        r.final_sip_phrase = s(self, std::mem::take(&mut r.final_sip_phrase));
        r.usage_country_code = s(self, std::mem::take(&mut r.usage_country_code));
        r.trunk_fqdn = s(self, std::mem::take(&mut r.trunk_fqdn));
        if self.one_in(3) {
            r.version = self.any_i64();
        }
        if self.one_in(3) {
            r.call_type = self.any_i32();
        }
        if self.one_in(3) {
            r.direction = self.any_i32();
        }
        if self.one_in(3) {
            r.final_sip_code = self.any_i32();
        }
        if self.one_in(3) {
            r.q850_cause = self.any_i32();
        }
        if self.one_in(3) {
            r.destination_context = self.any_i32();
        }
        for t in [&mut r.invite_time, &mut r.start_time, &mut r.end_time] {
            if self.one_in(3) {
                *t = self.maybe(Rng::any_timestamp);
            }
        }
        if self.one_in(3) {
            r.duration = self.maybe(Rng::any_duration);
        }
        if self.one_in(3) {
            let extra = self.index(20);
            r.media_streams
                .extend((0..extra).map(|_| self.any_media_stream()));
        }
        r
    }

    /// A media stream whose every field may be out of range.
    fn any_media_stream(&mut self) -> pb::MediaStream {
        let d = |r: &mut Rng| r.maybe(Rng::any_duration);
        let f = |r: &mut Rng| r.maybe(Rng::any_f64);
        pb::MediaStream {
            direction: self.any_i32(),
            codec: self.any_string(),
            average_jitter: d(self),
            max_jitter: d(self),
            average_packet_loss_rate: f(self),
            max_packet_loss_rate: f(self),
            average_round_trip_time: d(self),
            max_round_trip_time: d(self),
            average_audio_degradation: f(self),
            average_ratio_of_concealed_samples: f(self),
            mos: f(self),
            mos_estimated: self.one_in(2),
        }
    }

    /// A valid duration report, started up to ten years before now.
    fn report(&mut self) -> pb::CallDurationReport {
        let now_secs = now_micros() / 1_000_000;
        let (call_id, correlation_id) = match self.below(3) {
            0 => (self.non_empty_text(128), String::new()),
            1 => (String::new(), self.non_empty_text(128)),
            _ => (self.non_empty_text(128), self.non_empty_text(128)),
        };
        pb::CallDurationReport {
            record_id: self.non_empty_text(128),
            call_id,
            correlation_id,
            caller_number: self.e164(),
            callee_number: self.e164(),
            start_time: Some(self.timestamp_between(now_secs - 10 * 366 * 86_400, now_secs)),
            duration: Some(self.duration_up_to(MAX_DURATION_US)),
        }
    }

    /// A duration report whose every field may break a rule.
    fn any_report(&mut self) -> pb::CallDurationReport {
        let mut r = self.report();
        let s = |g: &mut Rng, valid: String| if g.one_in(3) { g.near(valid) } else { valid };
        r.record_id = s(self, std::mem::take(&mut r.record_id));
        r.call_id = s(self, std::mem::take(&mut r.call_id));
        r.correlation_id = s(self, std::mem::take(&mut r.correlation_id));
        r.caller_number = s(self, std::mem::take(&mut r.caller_number));
        r.callee_number = s(self, std::mem::take(&mut r.callee_number));
        if self.one_in(3) {
            r.start_time = self.maybe(Rng::any_timestamp);
        }
        if self.one_in(3) {
            r.duration = self.maybe(Rng::any_duration);
        }
        r
    }

    /// A valid number upload; capabilities may repeat, and the tenant id may be upper case.
    fn number_upload(&mut self) -> pb::NumberUpload {
        let tenant_id = self.tenant_id();
        pb::NumberUpload {
            number: self.e164(),
            tenant_id: if self.one_in(4) {
                tenant_id.to_uppercase()
            } else {
                tenant_id
            },
            capabilities: (0..self.index(8))
                .map(|_| self.range(1, 6) as i32)
                .collect(),
            civic_address_id: self.text(MAX_TEXT_LEN),
            location_id: self.text(MAX_TEXT_LEN),
            country_code: if self.one_in(2) {
                self.country_code()
            } else {
                String::new()
            },
        }
    }

    /// A number upload whose every field may break a rule.
    fn any_number_upload(&mut self) -> pb::NumberUpload {
        let valid = self.number_upload();
        let s = |g: &mut Rng, valid: String| if g.one_in(3) { g.near(valid) } else { valid };
        pb::NumberUpload {
            number: s(self, valid.number),
            tenant_id: s(self, valid.tenant_id),
            capabilities: (0..self.index(8)).map(|_| self.code(6)).collect(),
            civic_address_id: s(self, valid.civic_address_id),
            location_id: s(self, valid.location_id),
            country_code: s(self, valid.country_code),
        }
    }

    /// A field path such as a service would give: `items[3]`.
    fn path(&mut self) -> String {
        let name = self.pick(&["numbers", "call_records", "durations", "items"]);
        format!("{name}[{}]", self.below(2_000))
    }

    /// `message` encoded, a few bytes flipped, inserted or dropped, and decoded again, if it
    /// still decodes: what a broken or hostile client may send.
    fn corrupt<M: Message + Default>(&mut self, message: &M) -> Option<M> {
        let mut bytes = message.encode_to_vec();
        for _ in 0..self.range(1, 4) {
            let at = self.index(bytes.len() + 1);
            let byte = self.next_u64() as u8;
            match self.below(3) {
                0 => bytes.insert(at, byte),
                1 if at < bytes.len() => bytes[at] ^= byte,
                _ if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => bytes.push(byte),
            }
        }
        M::decode(bytes.as_slice()).ok()
    }
}

/// Runs `property` on [`CASES`] generators derived from `seed`; a failing case prints its seed,
/// and `Rng(seed)` with that value regenerates it.
fn for_all(seed: u64, property: impl Fn(&mut Rng)) {
    for case in 0..CASES {
        let case_seed = seed.wrapping_mul(0x1_0000_0001).wrapping_add(case);
        let run = catch_unwind(AssertUnwindSafe(|| property(&mut Rng(case_seed))));
        if let Err(panic) = run {
            eprintln!("property failed for case {case}: generator seed {case_seed:#x}");
            resume_unwind(panic);
        }
    }
}

/// `s` cut and quoted for an assertion message (a case may carry a 4000-character string).
fn shown(s: &str) -> String {
    validate::quote(s)
}

// ------------------------------------------------------------------------------------------
// The documented rules, written out again from the doc comments of `ocx_api::validate`, in a
// different shape (characters, not bytes), to compare the validators against.
// ------------------------------------------------------------------------------------------

/// A validator of `ocx_api::validate`.
type Check = fn(&str) -> Result<(), String>;

/// A documented rule: whether a string should pass.
type Rule = fn(&str) -> bool;

/// `^\+[1-9]\d{1,14}$`.
fn e164_rule(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    let digits: Vec<char> = digits.chars().collect();
    (2..=15).contains(&digits.len()) && digits.iter().all(char::is_ascii_digit) && digits[0] != '0'
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hex in either case.
fn tenant_id_rule(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    chars.len() == 36
        && chars.iter().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                *c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// Two upper-case ASCII letters.
fn country_code_rule(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    chars.len() == 2 && chars.iter().all(char::is_ascii_uppercase)
}

/// 3 to 63 of `a-z0-9-`, starting with a letter, not ending with `-`.
fn carrier_id_rule(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    (3..=63).contains(&chars.len())
        && chars[0].is_ascii_lowercase()
        && chars[chars.len() - 1] != '-'
        && chars
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
}

/// At most `max` characters, none a control character.
fn text_rule(s: &str, max: usize) -> bool {
    s.chars().count() <= max && !s.chars().any(char::is_control)
}

/// A rejection's violations, after checking there is at least one, each names a field under
/// `path`, and no description is longer than [`MAX_DESCRIPTION`]; returns the fields.
fn fields_under(v: Violations, path: &str) -> Vec<String> {
    let pairs = v.into_pairs();
    assert!(!pairs.is_empty(), "a rejection without any violation");
    let prefix = format!("{path}.");
    for (field, description) in &pairs {
        assert!(
            field.starts_with(&prefix),
            "violation of {field:?} is not under {path:?}: {description}"
        );
        assert!(
            description.len() <= MAX_DESCRIPTION,
            "description of {field:?} is {} bytes long",
            description.len()
        );
    }
    pairs.into_iter().map(|(field, _)| field).collect()
}

/// A timestamp cut to whole microseconds, as the server keeps it.
fn to_micros(t: &Timestamp) -> Timestamp {
    Timestamp {
        seconds: t.seconds,
        nanos: t.nanos / 1000 * 1000,
    }
}

/// A (non-negative, well-formed) duration cut to whole microseconds.
fn duration_to_micros(d: &Duration) -> Duration {
    Duration {
        seconds: d.seconds,
        nanos: d.nanos / 1000 * 1000,
    }
}

/// Microseconds of a valid timestamp.
fn micros_of(t: &Timestamp) -> i64 {
    t.seconds * 1_000_000 + i64::from(t.nanos) / 1000
}

// ------------------------------------------------------------------------------------------
// Validators.
// ------------------------------------------------------------------------------------------

/// No validator panics, whatever the string; one huge string included.
#[test]
fn validators_never_panic() {
    let check_all = |s: &str| {
        let _ = validate::e164(s);
        let _ = validate::tenant_id(s);
        let _ = validate::normalize_tenant_id(s);
        let _ = validate::sip_uri(s);
        let _ = validate::country_code(s);
        let _ = validate::carrier_id(s);
        let _ = validate::text(s, MAX_TEXT_LEN);
        let _ = validate::text(s, 0);
        let _ = validate::quote(s);
    };
    for_all(1, |rng| {
        let valid = match rng.below(3) {
            0 => rng.sip_uri(),
            1 => rng.tenant_id(),
            _ => rng.e164(),
        };
        check_all(&rng.near(valid));
    });
    check_all(&"é🙂\u{0}".repeat(400_000));
}

/// `quote` returns at most [`QUOTE_BOUND`] bytes, escapes every control character, shows the
/// value's first [`MAX_QUOTED`] characters exactly, and tells the length of a value it cut.
#[test]
fn quote_is_bounded_escaped_and_honest() {
    for_all(2, |rng| {
        let value = rng.any_string();
        let quoted = validate::quote(&value);
        let count = value.chars().count();
        assert!(quoted.len() <= QUOTE_BOUND, "{} bytes", quoted.len());
        assert!(
            !quoted.chars().any(char::is_control),
            "a control character left in {quoted}"
        );
        let head: String = value.chars().take(MAX_QUOTED).collect();
        if count <= MAX_QUOTED {
            assert_eq!(quoted, format!("{value:?}"));
        } else {
            assert!(quoted.starts_with(&format!("{head:?}")), "{quoted}");
            assert!(
                quoted.ends_with(&format!("({count} characters)")),
                "{quoted}"
            );
        }
    });
}

/// The simple validators accept exactly what their doc comment describes: checked on valid
/// values, near misses of them and arbitrary strings.
#[test]
fn simple_validators_follow_their_documented_rule() {
    for_all(3, |rng| {
        let cases: [(&str, String, Check, Rule); 4] = [
            ("e164", rng.e164(), validate::e164, e164_rule),
            (
                "tenant_id",
                rng.tenant_id(),
                validate::tenant_id,
                tenant_id_rule,
            ),
            (
                "country_code",
                rng.country_code(),
                validate::country_code,
                country_code_rule,
            ),
            (
                "carrier_id",
                rng.carrier_id(),
                validate::carrier_id,
                carrier_id_rule,
            ),
        ];
        for (name, valid, check, rule) in cases {
            let s = rng.near(valid);
            assert_eq!(check(&s).is_ok(), rule(&s), "{name}({})", shown(&s));
        }
        let max = rng.index(MAX_TEXT_LEN + 1);
        let valid = rng.text(max);
        let s = rng.near(valid);
        assert_eq!(
            validate::text(&s, max).is_ok(),
            text_rule(&s, max),
            "text({}, {max})",
            shown(&s)
        );
    });
}

/// Valid values built by the generators are accepted, in any letter case where case does not
/// matter (tenant ids, SIP schemes and hosts).
#[test]
fn generated_valid_values_are_accepted() {
    for_all(4, |rng| {
        let tenant = rng.tenant_id();
        let mut values = vec![
            ("e164", rng.e164()),
            ("tenant_id", tenant.to_uppercase()),
            ("tenant_id", tenant),
            ("sip_uri", rng.sip_uri()),
            ("country_code", rng.country_code()),
            ("carrier_id", rng.carrier_id()),
        ];
        values.push(("sip_uri", values[3].1.to_uppercase()));
        for (name, value) in values {
            let check = match name {
                "e164" => validate::e164,
                "tenant_id" => validate::tenant_id,
                "sip_uri" => validate::sip_uri,
                "country_code" => validate::country_code,
                _ => validate::carrier_id,
            };
            assert_eq!(check(&value), Ok(()), "{name}({value:?})");
        }
        let max = rng.index(MAX_TEXT_LEN + 1);
        let text = rng.text(max);
        assert_eq!(validate::text(&text, max), Ok(()), "text({text:?}, {max})");
    });
}

/// A valid SIP URI broken in exactly one part is rejected.
#[test]
fn sip_uri_rejects_each_broken_part() {
    for_all(5, |rng| {
        let uri = rng.sip_uri();
        let (scheme, rest) = uri.split_once(':').expect("generated URIs have a scheme");
        let (user, host_part) = rest.split_once('@').expect("generated URIs have a user");
        let host = host_part
            .split([':', ';'])
            .next()
            .expect("split yields at least one piece");
        let after_host = &host_part[host.len()..];
        let space = rng.pick(&[' ', '\t', '\n', '\0', '\u{7f}']);
        let at = rng.index(rest.len() + 1);
        let at = (0..=at)
            .rev()
            .find(|&i| rest.is_char_boundary(i))
            .unwrap_or(0);
        let broken = [
            ("no scheme", rest.to_owned()),
            ("other scheme", format!("tel:{rest}")),
            ("empty user", format!("{scheme}:@{host_part}")),
            ("no @", format!("{scheme}:{user}{host_part}")),
            ("empty host", format!("{scheme}:{user}@{after_host}")),
            (
                "empty label",
                format!("{scheme}:{user}@{host}..x{after_host}"),
            ),
            (
                "label with -",
                format!("{scheme}:{user}@-{host}{after_host}"),
            ),
            ("label -", format!("{scheme}:{user}@{host}-{after_host}")),
            (
                "bad host char",
                format!("{scheme}:{user}@{host}_x{after_host}"),
            ),
            ("port 0", format!("{scheme}:{user}@{host}:0")),
            ("port too big", format!("{scheme}:{user}@{host}:65536")),
            ("port not number", format!("{scheme}:{user}@{host}:5o6o")),
            (
                "whitespace",
                format!("{scheme}:{}{space}{}", &rest[..at], &rest[at..]),
            ),
            (
                "too long",
                format!("{uri};x={}", "a".repeat(MAX_SIP_URI_LEN)),
            ),
        ];
        for (what, s) in broken {
            assert!(validate::sip_uri(&s).is_err(), "{what}: {s:?} accepted");
        }
    });
}

/// Whether a string is a SIP URI does not depend on ASCII letter case (schemes and host names
/// are case-insensitive; the user part is not checked for case).
#[test]
fn sip_uri_ignores_ascii_case() {
    for_all(17, |rng| {
        let valid = rng.sip_uri();
        let s = rng.near(valid);
        let ok = validate::sip_uri(&s).is_ok();
        for other in [s.to_ascii_uppercase(), s.to_ascii_lowercase()] {
            assert_eq!(validate::sip_uri(&other).is_ok(), ok, "{}", shown(&s));
        }
    });
}

/// `normalize_tenant_id` is idempotent, keeps validity as it is, and gives a valid id in lower
/// case whatever the case it was sent in.
#[test]
fn normalize_tenant_id_is_idempotent_and_keeps_validity() {
    for_all(6, |rng| {
        let valid = rng.tenant_id();
        let s = rng.near(valid);
        let once = validate::normalize_tenant_id(&s);
        assert_eq!(validate::normalize_tenant_id(&once), once, "{}", shown(&s));
        assert_eq!(
            validate::tenant_id(&once).is_ok(),
            validate::tenant_id(&s).is_ok(),
            "{}",
            shown(&s)
        );
        let id = rng.tenant_id();
        let upper = validate::normalize_tenant_id(&id.to_uppercase());
        assert_eq!(upper, id);
        assert_eq!(validate::tenant_id(&upper), Ok(()));
    });
}

// ------------------------------------------------------------------------------------------
// Number uploads.
// ------------------------------------------------------------------------------------------

/// `number_upload` rejects exactly the items that break a rule, with one violation at each
/// broken field and nowhere else.
#[test]
fn number_upload_reports_exactly_the_broken_fields() {
    for_all(7, |rng| {
        let item = rng.any_number_upload();
        let path = rng.path();
        let f = |name: &str| format!("{path}.{name}");
        let mut expected = BTreeSet::new();
        if !e164_rule(&item.number) {
            expected.insert(f("number"));
        }
        if !tenant_id_rule(&item.tenant_id) {
            expected.insert(f("tenant_id"));
        }
        for (i, code) in item.capabilities.iter().enumerate() {
            if !(1..=6).contains(code) {
                expected.insert(f(&format!("capabilities[{i}]")));
            }
        }
        for (name, value) in [
            ("civic_address_id", &item.civic_address_id),
            ("location_id", &item.location_id),
        ] {
            if !text_rule(value, MAX_TEXT_LEN) {
                expected.insert(f(name));
            }
        }
        if !item.country_code.is_empty() && !country_code_rule(&item.country_code) {
            expected.insert(f("country_code"));
        }
        let found: BTreeSet<String> = match number_upload(item, &path) {
            Ok(_) => BTreeSet::new(),
            Err(v) => fields_under(v, &path).into_iter().collect(),
        };
        assert_eq!(found, expected);
    });
}

/// A valid upload keeps every field as sent, the tenant id in lower case, and its capabilities
/// sorted and de-duplicated (the defaults when it names none).
#[test]
fn number_upload_keeps_what_was_sent() {
    for_all(8, |rng| {
        let item = rng.number_upload();
        let path = rng.path();
        let upload = number_upload(item.clone(), &path)
            .map_err(|v| v.into_pairs())
            .expect("a generated upload is valid");
        let mut codes: Vec<i32> = item.capabilities.clone();
        codes.sort_unstable();
        codes.dedup();
        let capabilities: Vec<i32> = upload.capabilities.iter().map(|c| c.code()).collect();
        if codes.is_empty() {
            assert_eq!(upload.capabilities, Capability::DEFAULTS.to_vec());
        } else {
            assert_eq!(capabilities, codes);
        }
        assert_eq!(upload.number, item.number);
        assert_eq!(upload.tenant_id, item.tenant_id.to_ascii_lowercase());
        assert_eq!(upload.civic_address_id, item.civic_address_id);
        assert_eq!(upload.location_id, item.location_id);
        assert_eq!(upload.country_code, item.country_code);
    });
}

// ------------------------------------------------------------------------------------------
// Call records.
// ------------------------------------------------------------------------------------------

/// Clears what the server derives or assigns (quality, stored-at data, estimated MOS), as a
/// client does before sending a record it read back (see `CallRecordGenerator::revise`).
fn without_output_fields(mut r: pb::CallRecord) -> pb::CallRecord {
    r.quality = 0;
    r.poor_due_to.clear();
    r.feed_sequence = 0;
    r.update_time = None;
    for s in &mut r.media_streams {
        if s.mos_estimated {
            s.mos = None;
        }
        s.mos_estimated = false;
    }
    r
}

/// What reading back a valid record gives, output-only fields aside: the tenant id in lower
/// case, times and durations cut to microseconds, a missing duration derived from the times.
fn expected_back(sent: &pb::CallRecord) -> pb::CallRecord {
    let mut r = sent.clone();
    r.quality = 0;
    r.poor_due_to.clear();
    r.feed_sequence = 0;
    r.update_time = None;
    r.tenant_id = r.tenant_id.to_ascii_lowercase();
    r.invite_time = r.invite_time.as_ref().map(to_micros);
    r.start_time = r.start_time.as_ref().map(to_micros);
    r.end_time = r.end_time.as_ref().map(to_micros);
    let derived = || {
        let (start, end) = (sent.start_time.as_ref()?, sent.end_time.as_ref()?);
        let us = micros_of(end) - micros_of(start);
        Some(Duration {
            seconds: us / 1_000_000,
            nanos: (us % 1_000_000) as i32 * 1000,
        })
    };
    r.duration = r.duration.as_ref().map(duration_to_micros).or_else(derived);
    for s in &mut r.media_streams {
        // A MOS that was sent is kept and is not an estimate, whatever the client flagged.
        s.mos_estimated = false;
        for d in [
            &mut s.average_jitter,
            &mut s.max_jitter,
            &mut s.average_round_trip_time,
            &mut s.max_round_trip_time,
        ] {
            *d = d.as_ref().map(duration_to_micros);
        }
    }
    r
}

/// Converts a record that must be valid, showing every violation if it is not.
fn accept(r: &pb::CallRecord, path: &str) -> ocx_server::domain::CallRecord {
    call_record_in(r, path)
        .map_err(|v| v.into_pairs())
        .expect("a valid record is accepted")
}

/// Any record: no panic; a rejection is reported under the path; an accepted record read back
/// and sent again is the same record (its content hash aside: the sent bytes differ).
#[test]
fn call_record_in_never_panics_and_reports_under_the_path() {
    for_all(9, |rng| {
        let record = if rng.one_in(4) {
            let valid = rng.call_record();
            rng.corrupt(&valid).unwrap_or(valid)
        } else {
            rng.any_call_record()
        };
        let path = rng.path();
        match call_record_in(&record, &path) {
            Err(v) => {
                fields_under(v, &path);
            }
            Ok(domain) => {
                let again = without_output_fields(call_record(domain.clone()));
                let mut twice = accept(&again, &path);
                twice.content_hash = domain.content_hash;
                assert_eq!(twice, domain);
            }
        }
    });
}

/// A record sent without a duration gets one derived from its times, and that must obey the
/// seven-day limit of a duration that was sent; otherwise the server stores a record that it
/// refuses when it is sent back as read (found by the re-send property above, once its times
/// reached the limit).
#[test]
fn a_derived_duration_obeys_the_seven_day_limit() {
    let mut record = Rng(17).call_record();
    record.duration = None;
    record.start_time = Some(Timestamp {
        seconds: 0,
        nanos: 0,
    });
    record.end_time = Some(Timestamp {
        seconds: 30 * 86_400,
        nanos: 0,
    });
    assert!(
        call_record_in(&record, "r").is_err(),
        "a 30-day call without a duration field was accepted"
    );
}

/// Every rule of a call record is enforced and reported at the field that breaks it: a valid
/// record with one field broken is rejected with violations of that field only.
#[test]
fn call_record_in_rejects_each_broken_field_at_its_path() {
    /// Breaks one rule of a valid record (the field it breaks is named beside it).
    type Breaker = fn(&mut pb::CallRecord, &mut Rng);
    let breakers: &[(&str, Breaker)] = &[
        ("call_id", |r, _| r.call_id.clear()),
        ("call_id", |r, g| r.call_id = g.bad_text(128)),
        ("correlation_id", |r, g| r.correlation_id = g.bad_text(128)),
        ("version", |r, g| r.version = -g.range(0, i64::MAX)),
        ("carrier_id", |r, g| {
            r.carrier_id = g.carrier_id().to_uppercase()
        }),
        ("tenant_id", |r, g| {
            r.tenant_id = g.tenant_id().replace('-', "")
        }),
        ("tenant_id", |r, _| r.tenant_id.clear()),
        ("call_type", |r, g| {
            r.call_type = g.pick(&[0, 10, -1, i32::MAX])
        }),
        ("direction", |r, g| r.direction = g.pick(&[0, 3, i32::MIN])),
        ("caller_number", |r, g| {
            r.caller_number = g.e164().replacen('+', "+0", 1)
        }),
        ("callee_number", |r, g| {
            r.callee_number = g.e164()[1..].to_owned()
        }),
        ("user_sip_uri", |r, g| {
            r.user_sip_uri = g.sip_uri().replacen('@', "", 1)
        }),
        ("invite_time", |r, g| {
            r.invite_time = Some(Timestamp {
                seconds: g.pick(&[-1, MAX_TIMESTAMP_SECS + 1, i64::MIN, i64::MAX]),
                nanos: 0,
            })
        }),
        ("invite_time", |r, g| {
            r.invite_time = Some(Timestamp {
                seconds: 0,
                nanos: g.pick(&[-1, 1_000_000_000, i32::MIN]),
            })
        }),
        ("start_time", |r, _| r.start_time = None),
        ("start_time", |r, g| {
            r.start_time = Some(Timestamp {
                seconds: g.pick(&[-1, MAX_TIMESTAMP_SECS + 1, i64::MIN]),
                nanos: 0,
            })
        }),
        ("end_time", |r, _| r.end_time = None),
        ("end_time", |r, _| {
            let start = r.start_time.unwrap_or_default();
            r.end_time = Some(Timestamp {
                seconds: start.seconds - 1,
                nanos: start.nanos,
            })
        }),
        ("end_time", |r, g| {
            r.end_time = Some(Timestamp {
                seconds: g.pick(&[MAX_TIMESTAMP_SECS + 1, i64::MAX]),
                nanos: 0,
            })
        }),
        ("duration", |r, g| {
            r.duration = Some(Duration {
                seconds: g.pick(&[-1, MAX_CALL_US / 1_000_000 + 1, i64::MAX, i64::MIN]),
                nanos: 0,
            })
        }),
        ("duration", |r, g| {
            r.duration = Some(Duration {
                seconds: 1,
                nanos: g.pick(&[-1, 1_000_000_000, i32::MAX]),
            })
        }),
        ("final_sip_code", |r, g| {
            r.final_sip_code = g.pick(&[-1, 1, 99, 700, i32::MAX])
        }),
        ("final_sip_phrase", |r, g| {
            r.final_sip_phrase = g.bad_text(MAX_TEXT_LEN)
        }),
        ("q850_cause", |r, g| {
            r.q850_cause = g.pick(&[-1, 128, i32::MIN])
        }),
        ("destination_context", |r, g| {
            r.destination_context = g.pick(&[3, -1])
        }),
        ("usage_country_code", |r, g| {
            r.usage_country_code = g.country_code().to_lowercase()
        }),
        ("trunk_fqdn", |r, g| r.trunk_fqdn = g.bad_text(253)),
        ("media_streams", |r, _| {
            r.media_streams = vec![pb::MediaStream::default(); 17]
        }),
    ];
    /// Breaks one rule of a valid media stream.
    type StreamBreaker = fn(&mut pb::MediaStream, &mut Rng);
    /// A stream metric duration outside 0 to 1 hour.
    fn too_long(g: &mut Rng) -> Option<Duration> {
        Some(Duration {
            seconds: g.pick(&[-1, 3601, i64::MAX, i64::MIN]),
            nanos: 0,
        })
    }
    /// A ratio outside 0 to 1, or not a number.
    fn bad_ratio(g: &mut Rng) -> Option<f64> {
        Some(g.pick(&[f64::NAN, -0.1, 1.01, f64::INFINITY]))
    }
    let stream_breakers: &[(&str, StreamBreaker)] = &[
        ("codec", |s, g| s.codec = g.bad_text(64)),
        ("direction", |s, g| s.direction = g.pick(&[3, -1, i32::MAX])),
        ("average_jitter", |s, g| s.average_jitter = too_long(g)),
        ("max_jitter", |s, g| s.max_jitter = too_long(g)),
        ("average_round_trip_time", |s, g| {
            s.average_round_trip_time = too_long(g)
        }),
        ("max_round_trip_time", |s, g| {
            s.max_round_trip_time = too_long(g)
        }),
        ("average_packet_loss_rate", |s, g| {
            s.average_packet_loss_rate = bad_ratio(g)
        }),
        ("max_packet_loss_rate", |s, g| {
            s.max_packet_loss_rate = bad_ratio(g)
        }),
        ("average_ratio_of_concealed_samples", |s, g| {
            s.average_ratio_of_concealed_samples = bad_ratio(g)
        }),
        ("average_audio_degradation", |s, g| {
            s.average_audio_degradation = Some(g.pick(&[f64::NAN, -1.0, 5.01]))
        }),
        ("mos", |s, g| {
            s.mos = Some(g.pick(&[0.99, 5.01, f64::NEG_INFINITY]))
        }),
    ];
    for_all(10, |rng| {
        let mut record = rng.call_record();
        let pick = rng.index(breakers.len() + stream_breakers.len());
        let field = if let Some((field, breaker)) = breakers.get(pick) {
            breaker(&mut record, rng);
            (*field).to_owned()
        } else {
            let (field, breaker) = stream_breakers[pick - breakers.len()];
            record.media_streams = (0..rng.range(1, 16)).map(|_| rng.media_stream()).collect();
            let i = rng.index(record.media_streams.len());
            breaker(&mut record.media_streams[i], rng);
            format!("media_streams[{i}].{field}")
        };
        let path = rng.path();
        let v = call_record_in(&record, &path)
            .err()
            .unwrap_or_else(|| panic!("{field} broken, yet accepted"));
        let expected = format!("{path}.{field}");
        let fields = fields_under(v, &path);
        assert!(
            fields.iter().all(|f| *f == expected),
            "{field} broken, violations {fields:?}"
        );
    });
}

/// A record from `CallRecordGenerator` is accepted, reads back exactly as sent (output-only
/// fields aside), and sent again is the same record with the same content hash: a re-send is
/// recognised as a duplicate.
#[test]
fn generated_call_records_round_trip() {
    let mut rng = Rng(11);
    for _ in 0..30 {
        let lines: Vec<Line> = (0..rng.range(1, 4))
            .map(|_| Line {
                tenant_id: rng.tenant_id(),
                number: rng.e164(),
            })
            .collect();
        // Late enough that every INVITE (up to 8 s before the start) is after 1970.
        let start = rng.range(60, 4_000_000_000);
        let generator = CallRecordGenerator::new(rng.next_u64(), lines, start);
        for sent in generator.take(100) {
            let domain = accept(&sent, "call_records[0]");
            let back = without_output_fields(call_record(domain.clone()));
            assert_eq!(back, sent);
            assert_eq!(accept(&back, "call_records[0]"), domain);
        }
    }
}

/// A valid record of any shape (optional parts present or not, nanosecond times, the largest
/// values) is accepted and reads back as sent, cut to microseconds, its duration derived from
/// its times when it had none.
#[test]
fn random_valid_call_records_round_trip() {
    for_all(12, |rng| {
        let sent = rng.call_record();
        let domain = accept(&sent, &rng.path());
        let back = without_output_fields(call_record(domain));
        assert_eq!(back, expected_back(&sent));
    });
}

// ------------------------------------------------------------------------------------------
// Duration reports, periods and tolerances.
// ------------------------------------------------------------------------------------------

/// Whether a report's duration is accepted: 0 to 24 hours, nanos not negative. (The server
/// takes nanos of a second or more at their value: 0 s + 1.5e9 ns is 1.5 s.)
fn report_duration_rule(d: &Duration) -> bool {
    let us = d
        .seconds
        .checked_mul(1_000_000)
        .and_then(|s| s.checked_add(i64::from(d.nanos) / 1000));
    // Nanos are a fraction of a second: below one second, never a second or more.
    (0..1_000_000_000).contains(&d.nanos)
        && us.is_some_and(|us| (0..=MAX_DURATION_US).contains(&us))
}

/// The fields of a report that break a rule, under `path`.
fn broken_report_fields(r: &pb::CallDurationReport, path: &str) -> BTreeSet<String> {
    let f = |name: &str| format!("{path}.{name}");
    let mut broken = BTreeSet::new();
    if r.record_id.is_empty() || !text_rule(&r.record_id, 128) {
        broken.insert(f("record_id"));
    }
    let no_id = r.call_id.is_empty() && r.correlation_id.is_empty();
    if no_id || !text_rule(&r.call_id, 128) {
        broken.insert(f("call_id"));
    }
    if !text_rule(&r.correlation_id, 128) {
        broken.insert(f("correlation_id"));
    }
    for (name, number) in [
        ("caller_number", &r.caller_number),
        ("callee_number", &r.callee_number),
    ] {
        if !e164_rule(number) {
            broken.insert(f(name));
        }
    }
    let in_range = |t: &Timestamp| {
        (0..=MAX_TIMESTAMP_SECS).contains(&t.seconds) && (0..1_000_000_000).contains(&t.nanos)
    };
    let soon = now_micros() + 5 * 60 * 1_000_000;
    if !r
        .start_time
        .as_ref()
        .is_some_and(|t| in_range(t) && micros_of(t) <= soon)
    {
        broken.insert(f("start_time"));
    }
    if !r.duration.as_ref().is_some_and(report_duration_rule) {
        broken.insert(f("duration"));
    }
    broken
}

/// `report_in` never panics and rejects exactly the reports that break a rule, naming every
/// broken field under the path and no other.
#[test]
fn report_in_reports_exactly_the_broken_fields() {
    for_all(13, |rng| {
        let report = if rng.one_in(4) {
            let valid = rng.report();
            rng.corrupt(&valid).unwrap_or(valid)
        } else {
            rng.any_report()
        };
        let path = rng.path();
        let expected = broken_report_fields(&report, &path);
        let found: BTreeSet<String> = match report_in(&report, &path) {
            Ok(_) => BTreeSet::new(),
            Err(v) => fields_under(v, &path).into_iter().collect(),
        };
        assert_eq!(found, expected);
    });
}

/// A valid report is accepted and reads back (`call_duration`) with every field as sent, times
/// and durations cut to microseconds.
#[test]
fn reports_round_trip() {
    for_all(14, |rng| {
        let sent = rng.report();
        let report = report_in(&sent, &rng.path())
            .map_err(|v| v.into_pairs())
            .expect("a generated report is valid");
        let carrier_id = rng.carrier_id();
        let back = call_duration(CallDuration {
            report,
            carrier_id: carrier_id.clone(),
            corrections: 0,
            create_time: 0,
            update_time: 0,
        });
        assert_eq!(back.record_id, sent.record_id);
        assert_eq!(back.carrier_id, carrier_id);
        assert_eq!(back.call_id, sent.call_id);
        assert_eq!(back.correlation_id, sent.correlation_id);
        assert_eq!(back.caller_number, sent.caller_number);
        assert_eq!(back.callee_number, sent.callee_number);
        assert_eq!(back.start_time, sent.start_time.as_ref().map(to_micros));
        assert_eq!(
            back.duration,
            sent.duration.as_ref().map(duration_to_micros)
        );
    });
}

/// A period within the bounds is accepted exactly; any other pair is either accepted as a
/// period of positive length up to 366 days, or refused with violations of its two ends only.
#[test]
fn periods_are_bounded_and_exact() {
    for_all(15, |rng| {
        let start_us = rng.edgy(0, (MAX_TIMESTAMP_SECS + 1) * 1_000_000 - 1 - MAX_PERIOD_US);
        let end_us = start_us + rng.edgy(1, MAX_PERIOD_US);
        let ts = |us: i64| Timestamp {
            seconds: us / 1_000_000,
            nanos: (us % 1_000_000) as i32 * 1000,
        };
        let mut v = Violations::new();
        let window = period(&Some(ts(start_us)), &Some(ts(end_us)), &mut v);
        assert_eq!(window, Some((start_us, end_us)));
        assert!(v.is_empty());

        let any = |rng: &mut Rng| match rng.below(3) {
            0 => None,
            1 => Some(rng.timestamp_between(0, MAX_TIMESTAMP_SECS)),
            _ => Some(rng.any_timestamp()),
        };
        let (start, end) = (any(rng), any(rng));
        let mut v = Violations::new();
        match period(&start, &end, &mut v) {
            Some((s, e)) => {
                assert!(v.is_empty());
                assert!(s < e && e - s <= MAX_PERIOD_US, "{s}..{e}");
            }
            None => {
                let pairs = v.into_pairs();
                assert!(!pairs.is_empty(), "{start:?}..{end:?} refused silently");
                for (field, _) in pairs {
                    assert!(field == "start_time" || field == "end_time", "{field}");
                }
            }
        }
    });
}

/// A tolerance is the default when unset, exact when valid, and otherwise a violation of
/// `tolerance` and the default; whatever is returned is from 0 to 1 hour.
#[test]
fn tolerances_are_bounded_and_exact() {
    let mut v = Violations::new();
    assert_eq!(tolerance(&None, &mut v), DEFAULT_TOLERANCE_US);
    assert!(v.is_empty());
    for_all(16, |rng| {
        let valid = rng.duration_up_to(MAX_TOLERANCE_US);
        let mut v = Violations::new();
        let us = tolerance(&Some(valid), &mut v);
        assert_eq!(us, micros_of_duration(&valid));
        assert!(v.is_empty());

        let any = rng.any_duration();
        let mut v = Violations::new();
        let us = tolerance(&Some(any), &mut v);
        assert!((0..=MAX_TOLERANCE_US).contains(&us), "{any:?} gave {us}");
        let pairs = v.into_pairs();
        if !pairs.is_empty() {
            assert_eq!(us, DEFAULT_TOLERANCE_US);
            assert!(pairs.iter().all(|(field, _)| field == "tolerance"));
        }
    });
}

/// Microseconds of a well-formed duration.
fn micros_of_duration(d: &Duration) -> i64 {
    d.seconds * 1_000_000 + i64::from(d.nanos) / 1000
}

//! Property tests of the server's edge: the shared format checks (`ocx_api::validate`) and the
//! wire → domain conversions (`convert::number_upload`, `convert_calls::call_record_in`,
//! `convert_durations::{report_in, period, tolerance}`).
//!
//! Inputs come from proptest strategies written here, weighted to the values the rules turn
//! on. Every run starts from the same seed ([`SEED`]; `PROPTEST_RNG_SEED` picks another), so
//! CI checks the same cases each time, and a failure is shrunk to a small input before it is
//! printed; no `proptest-regressions/` file is written. `fuzz/` runs the same checks on inputs
//! found by libFuzzer.
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
//! For valid input built by the strategies: it is accepted, and the domain value carries back to
//! the wire exactly what was sent (the fields the wire form of the domain value carries).

use std::collections::BTreeSet;
use std::fmt::Debug;

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
use proptest::collection::{SizeRange, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{RngAlgorithm, RngSeed};
use prost::Message;
use prost_types::{Duration, Timestamp};

/// The seed every property starts from, so every run checks the same cases.
const SEED: u64 = 0x0C5E_ED00;

/// Cases per property: every branch is hit many times, and a debug run stays within seconds.
const CASES: u32 = 3_000;

/// `cases` cases from [`SEED`] (unless `PROPTEST_RNG_SEED` names another, or `PROPTEST_CASES`
/// another count), writing no `proptest-regressions/` file into the repository.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(SEED),
        // Much faster than the default ChaCha in a debug build; as deterministic.
        rng_algorithm: RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    }
}

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

// ------------------------------------------------------------------------------------------
// Strategies: numbers, characters and strings on the validators' edges.
//
// The leaves, drawn hundreds of times for one record, choose among their kinds with a small
// number (shrinking toward the first kind) rather than with `prop_oneof!`: a union's value tree
// carries a runner, random generator included, for each kind before the one picked, too heavy
// for a debug build at that rate. The larger choices are unions, boxed: unboxed, their value
// trees nested in a record's overflowed a test thread's stack.
// ------------------------------------------------------------------------------------------

/// In `lo..=hi`, one of the two ends a quarter of the time: off-by-one errors live there.
fn edgy(lo: i64, hi: i64) -> impl Strategy<Value = i64> + Clone {
    (any::<u8>(), lo..=hi).prop_map(move |(kind, n)| match kind % 8 {
        0 => lo,
        1 => hi,
        _ => n,
    })
}

/// Any `i64`, an edge value half of the time.
fn any_i64() -> impl Strategy<Value = i64> + Clone {
    (any::<bool>(), select(EDGE_I64), any::<i64>())
        .prop_map(|(random, edge, n)| if random { n } else { edge })
}

/// Any `i32`, an edge value half of the time.
fn any_i32() -> impl Strategy<Value = i32> + Clone {
    (any::<bool>(), select(EDGE_I32), any::<i32>())
        .prop_map(|(random, edge, n)| if random { n } else { edge })
}

/// Any `f64`: an edge, any bit pattern (NaNs and subnormals included), or a plausible metric,
/// a third of the time each.
fn any_f64() -> impl Strategy<Value = f64> + Clone {
    (0..3u8, select(EDGE_F64), any::<u64>(), unit()).prop_map(|(kind, edge, bits, u)| match kind {
        0 => edge,
        1 => f64::from_bits(bits),
        _ => u * 6.0 - 0.5,
    })
}

/// Uniform in `[0, 1]`, both ends included now and then. (The top 53 bits of a random `u64`:
/// a float range is several times slower to draw in a debug build.)
fn unit() -> impl Strategy<Value = f64> + Clone {
    (any::<u8>(), any::<u64>()).prop_map(|(kind, bits)| match kind % 20 {
        0 => 0.0,
        1 => 1.0,
        _ => (bits >> 11) as f64 / (1u64 << 53) as f64,
    })
}

/// A value of `s` or nothing, even odds (shrinking to nothing). Unlike `option::of`, the value
/// is drawn either way: for cheap values only.
fn maybe<S: Strategy + Clone>(s: S) -> impl Strategy<Value = Option<S::Value>> + Clone {
    (any::<bool>(), s).prop_map(|(some, value)| some.then_some(value))
}

/// The character at `code`, U+FFFD for a surrogate.
fn scalar(code: u32) -> char {
    char::from_u32(code).unwrap_or('\u{fffd}')
}

/// A character of a class, `n` choosing within it: 0-1 printable ASCII, 2 one of [`TRICKY`],
/// 3 a C0 control, 4 two UTF-8 bytes, 5 three (surrogates become U+FFFD), 6-7 four.
fn char_of_class(class: u8, n: u32) -> char {
    match class {
        0 | 1 => scalar(0x20 + n % 0x5f),
        2 => TRICKY[n as usize % TRICKY.len()],
        3 => scalar(n % 0x20),
        4 => scalar(0x80 + n % 0x780),
        5 => scalar(0x800 + n % 0xf800),
        _ => scalar(0x1_0000 + n % 0x10_0000),
    }
}

/// Any character, weighted to the ones validators care about, of every UTF-8 length. One
/// number gives both the class and the character (strings of thousands are drawn often); it
/// shrinks to a space.
fn any_char() -> impl Strategy<Value = char> + Clone {
    any::<u32>().prop_map(|n| char_of_class((n % 8) as u8, n / 8))
}

/// Any character but a control character, in the proportions of [`any_char`] without its
/// controls.
fn text_char() -> impl Strategy<Value = char> + Clone {
    let tricky: Vec<char> = TRICKY.iter().copied().filter(|c| !c.is_control()).collect();
    any::<u32>().prop_map(move |n| match n % 7 {
        0 | 1 => char_of_class(0, n / 7),
        2 => tricky[(n / 7) as usize % tricky.len()],
        // 0x80..0xa0 are the C1 controls.
        3 => scalar(0xa0 + n / 7 % 0x760),
        4 => char_of_class(5, n / 7),
        _ => char_of_class(6, n / 7),
    })
}

/// A string of `len` characters from `chars`.
fn string_of(
    chars: impl Strategy<Value = char> + Clone,
    len: impl Into<SizeRange>,
) -> impl Strategy<Value = String> + Clone {
    vec(chars, len).prop_map(String::from_iter)
}

/// Any string: empty, short, around `quote`'s cut, or far longer than every limit.
fn any_string() -> BoxedStrategy<String> {
    prop_oneof![
        1 => Just(String::new()),
        12 => string_of(any_char(), 0..80),
        2 => string_of(any_char(), MAX_QUOTED - 2..MAX_QUOTED + 3),
        1 => string_of(any_char(), 500..4_500),
    ]
    .boxed()
}

/// A near miss of a valid string: one character inserted, removed or replaced, cut short,
/// doubled.
#[derive(Debug, Clone)]
enum Mutation {
    /// A character inserted at a position (one past the end included).
    Insert(Index, char),
    /// The character at a position removed.
    Remove(Index),
    /// The character at a position replaced.
    Replace(Index, char),
    /// Cut at a position.
    Truncate(Index),
    /// The whole string twice.
    Double,
}

impl Mutation {
    /// `valid`, changed. A removal or replacement that falls past the end doubles it instead.
    fn apply(&self, valid: &str) -> String {
        let mut chars: Vec<char> = valid.chars().collect();
        let len = chars.len();
        match self {
            Mutation::Insert(at, c) => chars.insert(at.index(len + 1), *c),
            Mutation::Remove(at) if at.index(len + 1) < len => {
                chars.remove(at.index(len + 1));
            }
            Mutation::Replace(at, c) if at.index(len + 1) < len => chars[at.index(len + 1)] = *c,
            Mutation::Truncate(at) => chars.truncate(at.index(len + 1)),
            _ => return valid.repeat(2),
        }
        chars.into_iter().collect()
    }
}

/// Any [`Mutation`], each kind as likely.
fn mutation() -> BoxedStrategy<Mutation> {
    prop_oneof![
        (any::<Index>(), any_char()).prop_map(|(at, c)| Mutation::Insert(at, c)),
        any::<Index>().prop_map(Mutation::Remove),
        (any::<Index>(), any_char()).prop_map(|(at, c)| Mutation::Replace(at, c)),
        any::<Index>().prop_map(Mutation::Truncate),
        Just(Mutation::Double),
    ]
    .boxed()
}

/// What becomes of a valid string: kept, mutated into a near miss, or replaced by any string.
#[derive(Debug, Clone)]
enum Near {
    /// The valid string as it is.
    Valid,
    /// A near miss of it.
    Mutated(Mutation),
    /// Another string altogether.
    Any(String),
}

impl Near {
    /// `valid`, as this says.
    fn apply(self, valid: String) -> String {
        match self {
            Near::Valid => valid,
            Near::Mutated(m) => m.apply(&valid),
            Near::Any(s) => s,
        }
    }
}

/// Keep, mutate or replace, a third of the time each.
fn near_edit() -> BoxedStrategy<Near> {
    prop_oneof![
        Just(Near::Valid),
        mutation().prop_map(Near::Mutated),
        any_string().prop_map(Near::Any),
    ]
    .boxed()
}

/// [`near_edit`] one time in three, otherwise keep: how an arbitrary record treats each field.
fn sometimes_near() -> BoxedStrategy<Near> {
    prop_oneof![2 => Just(Near::Valid), 1 => near_edit()].boxed()
}

/// A value of `valid` itself, a near miss of one, or any string, a third of the time each.
fn near(valid: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (valid, near_edit()).prop_map(|(v, edit)| edit.apply(v))
}

/// `Some` one time in three: a field replaced by an arbitrary value.
fn sometimes<S: Strategy>(s: S) -> option::OptionStrategy<S> {
    option::weighted(1.0 / 3.0, s)
}

/// `valid` or the empty string, even odds.
fn or_empty(valid: impl Strategy<Value = String> + 'static) -> BoxedStrategy<String> {
    prop_oneof![Just(String::new()), valid].boxed()
}

// ------------------------------------------------------------------------------------------
// Strategies: valid values.
// ------------------------------------------------------------------------------------------

/// `len` characters drawn from `alphabet`.
fn chars_of(
    alphabet: &'static [u8],
    len: impl Into<SizeRange>,
) -> impl Strategy<Value = String> + Clone {
    vec(select(alphabet), len).prop_map(|bytes| bytes.into_iter().map(char::from).collect())
}

/// A valid E.164 number: `+`, a digit 1-9, then 1 to 14 digits.
fn e164() -> impl Strategy<Value = String> + Clone {
    (1..=9u8, 1..=14u32, any::<u64>())
        .prop_map(|(first, len, n)| format!("+{first}{:01$}", n % 10u64.pow(len), len as usize))
}

/// A valid tenant id: a lower-case GUID.
fn tenant_id() -> impl Strategy<Value = String> + Clone {
    any::<u128>().prop_map(|n| {
        let hex = format!("{n:032x}");
        let (a, rest) = hex.split_at(8);
        let (b, rest) = rest.split_at(4);
        let (c, rest) = rest.split_at(4);
        let (d, e) = rest.split_at(4);
        format!("{a}-{b}-{c}-{d}-{e}")
    })
}

/// A valid tenant id, in upper case one time in four.
fn tenant_id_any_case() -> impl Strategy<Value = String> + Clone {
    (tenant_id(), prop::bool::weighted(0.25))
        .prop_map(|(id, upper)| if upper { id.to_uppercase() } else { id })
}

/// A valid carrier id: a letter, then `a-z0-9-`, ending in a letter or digit; 3 to 63 long.
fn carrier_id() -> impl Strategy<Value = String> + Clone {
    (
        chars_of(b"abcdefghijklmnopqrstuvwxyz", 1),
        chars_of(b"abcdefghijklmnopqrstuvwxyz0123456789-", 1..=61),
        chars_of(b"abcdefghijklmnopqrstuvwxyz0123456789", 1),
    )
        .prop_map(|(first, middle, last)| format!("{first}{middle}{last}"))
}

/// A valid country code: two upper-case letters.
fn country_code() -> impl Strategy<Value = String> + Clone {
    chars_of(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 2)
}

/// A valid host label: letters, digits and inner hyphens, in either case.
fn host_label() -> impl Strategy<Value = String> + Clone {
    const EDGE: &[u8] = b"abcxyzABCXYZ0189";
    (
        chars_of(EDGE, 1),
        chars_of(b"abcxyzABCXYZ0189-", 0..8),
        chars_of(EDGE, 1),
    )
        .prop_map(|(first, inner, last)| {
            if inner.is_empty() {
                first
            } else {
                format!("{first}{inner}{last}")
            }
        })
}

/// A valid SIP URI: `sip:` or `sips:` in any case, a user, a domain, maybe a port and
/// parameters.
fn sip_uri() -> impl Strategy<Value = String> + Clone {
    (
        select(&["sip", "sips", "SIP", "Sips"][..]),
        chars_of(b"abcXYZ019+._-%!~*'()&=$,?/", 1..=20),
        vec(host_label(), 1..=4),
        maybe(1..=65_535u32),
        maybe(select(
            &[";transport=tls", ";user=phone", ";lr", ";x=:@;"][..],
        )),
    )
        .prop_map(|(scheme, user, labels, port, parameters)| {
            let mut uri = format!("{scheme}:{user}@{}", labels.join("."));
            if let Some(port) = port {
                uri += &format!(":{port}");
            }
            uri + parameters.unwrap_or("")
        })
}

/// Valid free text: up to `max` characters, none of them a control character.
fn text(max: usize) -> BoxedStrategy<String> {
    prop_oneof![
        9 => string_of(text_char(), 0..=max.min(40)),
        1 => string_of(text_char(), max),
    ]
    .boxed()
}

/// Valid non-empty free text.
fn non_empty_text(max: usize) -> impl Strategy<Value = String> + Clone {
    text(max).prop_map(|text| if text.is_empty() { "x".into() } else { text })
}

/// A text length limit from 0 to [`MAX_TEXT_LEN`], and valid text within it.
fn text_within_a_limit() -> impl Strategy<Value = (usize, String)> {
    (0..=MAX_TEXT_LEN).prop_flat_map(|max| (Just(max), text(max)))
}

/// A string that breaks a text rule of `max` characters: one character too many, or a control
/// character between two valid texts.
#[derive(Debug, Clone)]
enum BadText {
    /// `x`, one more than the limit.
    TooLong,
    /// BEL between two valid texts.
    Control(String, String),
}

impl BadText {
    /// The string, for a limit of `max` characters.
    fn of(&self, max: usize) -> String {
        match self {
            BadText::TooLong => "x".repeat(max + 1),
            BadText::Control(a, b) => format!("{a}\u{7}{b}"),
        }
    }
}

/// Either kind of [`BadText`], even odds.
fn bad_text() -> BoxedStrategy<BadText> {
    prop_oneof![
        Just(BadText::TooLong),
        (text(10), text(10)).prop_map(|(a, b)| BadText::Control(a, b)),
    ]
    .boxed()
}

/// A timestamp the server accepts, at `lo..=hi` seconds, with any nanos.
fn timestamp_between(lo: i64, hi: i64) -> impl Strategy<Value = Timestamp> + Clone {
    (edgy(lo, hi), edgy(0, 999_999_999)).prop_map(|(seconds, nanos)| Timestamp {
        seconds,
        nanos: nanos as i32,
    })
}

/// Any timestamp: edge or random seconds and nanos.
fn any_timestamp() -> impl Strategy<Value = Timestamp> + Clone {
    (any_i64(), any_i32()).prop_map(|(seconds, nanos)| Timestamp { seconds, nanos })
}

/// Any duration: edge or random seconds and nanos.
fn any_duration() -> impl Strategy<Value = Duration> + Clone {
    (any_i64(), any_i32()).prop_map(|(seconds, nanos)| Duration { seconds, nanos })
}

/// A well-formed duration from 0 to `max_us` microseconds exactly, up to 999 nanoseconds
/// above a whole microsecond below the maximum (the maximum is judged on the exact value).
fn duration_up_to(max_us: i64) -> impl Strategy<Value = Duration> + Clone {
    (edgy(0, max_us), edgy(0, 999)).prop_map(move |(us, ns)| Duration {
        seconds: us / 1_000_000,
        nanos: (us % 1_000_000) as i32 * 1000 + if us == max_us { 0 } else { ns as i32 },
    })
}

/// A duration of whole microseconds from 0 to `max_us`.
fn whole_micros_up_to(max_us: i64) -> impl Strategy<Value = Duration> + Clone {
    edgy(0, max_us).prop_map(|us| Duration {
        seconds: us / 1_000_000,
        nanos: (us % 1_000_000) as i32 * 1000,
    })
}

/// Seconds since the epoch now.
fn now_secs() -> i64 {
    now_micros() / 1_000_000
}

/// A protobuf enum number: mostly known ones, sometimes 0, negative or unknown.
fn code(known: i32) -> impl Strategy<Value = i32> + Clone {
    (0..4u8, 1..=known, any_i32()).prop_map(|(kind, code, any)| if kind == 3 { any } else { code })
}

/// A valid stream metric duration, or none.
fn metric() -> impl Strategy<Value = Option<Duration>> + Clone {
    maybe(duration_up_to(MAX_METRIC_US))
}

/// A valid ratio, or none.
fn ratio() -> impl Strategy<Value = Option<f64>> + Clone {
    maybe(unit())
}

prop_compose! {
    /// A valid media stream, output-only `mos_estimated` set at random.
    fn media_stream()(
        direction in 0..=2i32,
        codec in text(64),
        average_jitter in metric(),
        max_jitter in metric(),
        average_packet_loss_rate in ratio(),
        max_packet_loss_rate in ratio(),
        average_round_trip_time in metric(),
        max_round_trip_time in metric(),
        average_audio_degradation in maybe(unit().prop_map(|u| u * 5.0)),
        average_ratio_of_concealed_samples in ratio(),
        mos in maybe(unit().prop_map(|u| 1.0 + u * 4.0)),
        mos_estimated in prop::bool::weighted(0.25),
    ) -> pb::MediaStream {
        pb::MediaStream {
            direction,
            codec,
            average_jitter,
            max_jitter,
            average_packet_loss_rate,
            max_packet_loss_rate,
            average_round_trip_time,
            max_round_trip_time,
            average_audio_degradation,
            average_ratio_of_concealed_samples,
            mos,
            mos_estimated,
        }
    }
}

prop_compose! {
    /// A valid call record with every optional part present or not, and junk in the
    /// output-only fields (the server ignores them on ingest). It started in the past: a call
    /// does not start in the future.
    fn valid_call_record()(
        start in timestamp_between(0, now_secs()),
        length_us in edgy(0, MAX_CALL_US),
        end_ns in edgy(0, 999),
        call_id in non_empty_text(128),
        correlation_id in text(128),
        version in 1..=i64::MAX - 1,
        carrier_id in or_empty(carrier_id()),
        tenant_id in tenant_id_any_case(),
        call_type in 1..=9i32,
        direction in 1..=2i32,
        caller_number in e164(),
        callee_number in e164(),
        user_sip_uri in or_empty(sip_uri()),
        invite_time in maybe(timestamp_between(0, MAX_TIMESTAMP_SECS)),
        duration in maybe(duration_up_to(MAX_CALL_US)),
        final_sip_code in (0..4u8, 100..=699i32)
            .prop_map(|(kind, code)| if kind == 0 { 0 } else { code }),
        final_sip_phrase in text(MAX_TEXT_LEN),
        q850_cause in 0..=127i32,
        successful in any::<bool>(),
        destination_context in 0..=2i32,
        usage_country_code in or_empty(country_code()),
        trunk_fqdn in text(253),
        media_streams in vec(media_stream(), 0..17),
        quality in any_i32(),
        poor_due_to in any_i32(),
        feed_sequence in any_i64(),
        update_time in maybe(any_timestamp()),
    ) -> pb::CallRecord {
        let end_us = micros_of(&start) + length_us;
        let end = Timestamp {
            seconds: end_us / 1_000_000,
            nanos: (end_us % 1_000_000) as i32 * 1000 + end_ns as i32,
        };
        pb::CallRecord {
            call_id,
            correlation_id,
            version,
            carrier_id,
            tenant_id,
            call_type,
            direction,
            caller_number,
            callee_number,
            user_sip_uri,
            invite_time,
            start_time: Some(start),
            end_time: Some(end),
            duration,
            final_sip_code,
            final_sip_phrase,
            q850_cause,
            successful,
            destination_context,
            usage_country_code,
            trunk_fqdn,
            media_streams,
            quality,
            poor_due_to: vec![poor_due_to],
            feed_sequence,
            update_time,
        }
    }
}

prop_compose! {
    /// A media stream whose every field may be out of range.
    fn any_media_stream()(
        direction in any_i32(),
        codec in any_string(),
        average_jitter in maybe(any_duration()),
        max_jitter in maybe(any_duration()),
        average_packet_loss_rate in maybe(any_f64()),
        max_packet_loss_rate in maybe(any_f64()),
        average_round_trip_time in maybe(any_duration()),
        max_round_trip_time in maybe(any_duration()),
        average_audio_degradation in maybe(any_f64()),
        average_ratio_of_concealed_samples in maybe(any_f64()),
        mos in maybe(any_f64()),
        mos_estimated in any::<bool>(),
    ) -> pb::MediaStream {
        pb::MediaStream {
            direction,
            codec,
            average_jitter,
            max_jitter,
            average_packet_loss_rate,
            max_packet_loss_rate,
            average_round_trip_time,
            max_round_trip_time,
            average_audio_degradation,
            average_ratio_of_concealed_samples,
            mos,
            mos_estimated,
        }
    }
}

prop_compose! {
    /// A call record that may break any rule: each field of a valid one is replaced by an
    /// arbitrary value one time in three.
    fn any_call_record()(
        valid in valid_call_record(),
        strings in prop::array::uniform10(sometimes_near()),
        version in sometimes(any_i64()),
        codes in prop::array::uniform5(sometimes(any_i32())),
        times in prop::array::uniform3(sometimes(maybe(any_timestamp()))),
        duration in sometimes(maybe(any_duration())),
        extra_streams in sometimes(vec(any_media_stream(), 0..20)),
    ) -> pb::CallRecord {
        let mut r = valid;
        let fields = [
            &mut r.call_id,
            &mut r.correlation_id,
            &mut r.carrier_id,
            &mut r.tenant_id,
            &mut r.caller_number,
            &mut r.callee_number,
            &mut r.user_sip_uri,
            &mut r.final_sip_phrase,
            &mut r.usage_country_code,
            &mut r.trunk_fqdn,
        ];
        for (field, edit) in fields.into_iter().zip(strings) {
            *field = edit.apply(std::mem::take(field));
        }
        r.version = version.unwrap_or(r.version);
        let numbers = [
            &mut r.call_type,
            &mut r.direction,
            &mut r.final_sip_code,
            &mut r.q850_cause,
            &mut r.destination_context,
        ];
        for (field, any) in numbers.into_iter().zip(codes) {
            *field = any.unwrap_or(*field);
        }
        for (field, any) in [&mut r.invite_time, &mut r.start_time, &mut r.end_time]
            .into_iter()
            .zip(times)
        {
            if let Some(any) = any {
                *field = any;
            }
        }
        if let Some(any) = duration {
            r.duration = any;
        }
        r.media_streams.extend(extra_streams.unwrap_or_default());
        r
    }
}

/// A valid duration report, started up to ten years before now.
fn valid_report() -> impl Strategy<Value = pb::CallDurationReport> + Clone {
    let now_secs = now_micros() / 1_000_000;
    let ids = prop_oneof![
        non_empty_text(128).prop_map(|call_id| (call_id, String::new())),
        non_empty_text(128).prop_map(|correlation_id| (String::new(), correlation_id)),
        (non_empty_text(128), non_empty_text(128)),
    ]
    .boxed();
    (
        non_empty_text(128),
        ids,
        e164(),
        e164(),
        timestamp_between(now_secs - 10 * 366 * 86_400, now_secs),
        duration_up_to(MAX_DURATION_US),
    )
        .prop_map(
            |(record_id, (call_id, correlation_id), caller, callee, start, duration)| {
                pb::CallDurationReport {
                    record_id,
                    call_id,
                    correlation_id,
                    caller_number: caller,
                    callee_number: callee,
                    start_time: Some(start),
                    duration: Some(duration),
                }
            },
        )
}

/// A duration report whose every field may break a rule.
fn any_report() -> impl Strategy<Value = pb::CallDurationReport> + Clone {
    (
        valid_report(),
        prop::array::uniform5(sometimes_near()),
        sometimes(maybe(any_timestamp())),
        sometimes(maybe(any_duration())),
    )
        .prop_map(|(mut r, strings, start_time, duration)| {
            let fields = [
                &mut r.record_id,
                &mut r.call_id,
                &mut r.correlation_id,
                &mut r.caller_number,
                &mut r.callee_number,
            ];
            for (field, edit) in fields.into_iter().zip(strings) {
                *field = edit.apply(std::mem::take(field));
            }
            if let Some(any) = start_time {
                r.start_time = any;
            }
            if let Some(any) = duration {
                r.duration = any;
            }
            r
        })
}

prop_compose! {
    /// A valid number upload; capabilities may repeat, and the tenant id may be upper case.
    fn valid_number_upload()(
        number in e164(),
        tenant_id in tenant_id_any_case(),
        capabilities in vec(1..=6i32, 0..8),
        civic_address_id in text(MAX_TEXT_LEN),
        location_id in text(MAX_TEXT_LEN),
        country_code in or_empty(country_code()),
    ) -> pb::NumberUpload {
        pb::NumberUpload {
            number,
            tenant_id,
            capabilities,
            civic_address_id,
            location_id,
            country_code,
        }
    }
}

prop_compose! {
    /// A number upload whose every field may break a rule.
    fn any_number_upload()(
        valid in valid_number_upload(),
        [number, tenant_id, civic_address_id, location_id, country_code]
            in prop::array::uniform5(sometimes_near()),
        capabilities in vec(code(6), 0..8),
    ) -> pb::NumberUpload {
        pb::NumberUpload {
            number: number.apply(valid.number),
            tenant_id: tenant_id.apply(valid.tenant_id),
            capabilities,
            civic_address_id: civic_address_id.apply(valid.civic_address_id),
            location_id: location_id.apply(valid.location_id),
            country_code: country_code.apply(valid.country_code),
        }
    }
}

/// A field path such as a service would give: `items[3]`.
fn path() -> impl Strategy<Value = String> + Clone {
    (
        select(&["numbers", "call_records", "durations", "items"][..]),
        0..2_000u32,
    )
        .prop_map(|(name, i)| format!("{name}[{i}]"))
}

/// One change to encoded bytes: at a position, insert a byte, flip bits of one, or drop one
/// (past the end, append the byte).
#[derive(Debug, Clone)]
struct ByteEdit {
    /// Where, in the bytes as they are by then (one past the end included).
    at: Index,
    /// The byte inserted or appended, or the bits flipped.
    byte: u8,
    /// 0: insert; 1: flip; 2: drop.
    kind: u8,
}

/// `message` encoded, [`ByteEdit`]s applied, and decoded again, if it still decodes.
fn corrupt<M: Message + Default>(message: &M, edits: &[ByteEdit]) -> Option<M> {
    let mut bytes = message.encode_to_vec();
    for edit in edits {
        let at = edit.at.index(bytes.len() + 1);
        match edit.kind {
            0 => bytes.insert(at, edit.byte),
            1 if at < bytes.len() => bytes[at] ^= edit.byte,
            _ if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => bytes.push(edit.byte),
        }
    }
    M::decode(bytes.as_slice()).ok()
}

/// A value of `valid` with one to four bytes of its encoding changed, decoded again (or the
/// value itself when the result no longer decodes): what a broken or hostile client may send.
fn corrupted<M>(valid: impl Strategy<Value = M>) -> impl Strategy<Value = M>
where
    M: Message + Default + Debug + Clone,
{
    let edit = (any::<Index>(), any::<u8>(), 0..3u8).prop_map(|(at, byte, kind)| ByteEdit {
        at,
        byte,
        kind,
    });
    (valid, vec(edit, 1..=4)).prop_map(|(m, edits)| corrupt(&m, &edits).unwrap_or(m))
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
fn fields_under(v: Violations, path: &str) -> Result<Vec<String>, TestCaseError> {
    let pairs = v.into_pairs();
    prop_assert!(!pairs.is_empty(), "a rejection without any violation");
    let prefix = format!("{path}.");
    for (field, description) in &pairs {
        prop_assert!(
            field.starts_with(&prefix),
            "violation of {:?} is not under {:?}: {}",
            field,
            path,
            description
        );
        prop_assert!(
            description.len() <= MAX_DESCRIPTION,
            "description of {:?} is {} bytes long",
            field,
            description.len()
        );
    }
    Ok(pairs.into_iter().map(|(field, _)| field).collect())
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

/// Runs every validator on `s`, for a property that only asks that none of them panics.
fn check_all(s: &str) {
    let _ = validate::e164(s);
    let _ = validate::tenant_id(s);
    let _ = validate::normalize_tenant_id(s);
    let _ = validate::sip_uri(s);
    let _ = validate::country_code(s);
    let _ = validate::carrier_id(s);
    let _ = validate::text(s, MAX_TEXT_LEN);
    let _ = validate::text(s, 0);
    let _ = validate::quote(s);
}

/// No validator panics on a string of 1.2 million characters.
#[test]
fn validators_never_panic_on_a_huge_string() {
    check_all(&"é🙂\u{0}".repeat(400_000));
}

proptest! {
    #![proptest_config(config(CASES))]

    /// No validator panics, whatever the string (the huge one is checked above).
    #[test]
    fn validators_never_panic(s in near(prop_oneof![sip_uri(), tenant_id(), e164()])) {
        check_all(&s);
    }

    /// `quote` returns at most [`QUOTE_BOUND`] bytes, escapes every control character, shows
    /// the value's first [`MAX_QUOTED`] characters exactly, and tells the length of a value it
    /// cut.
    #[test]
    fn quote_is_bounded_escaped_and_honest(value in any_string()) {
        let quoted = validate::quote(&value);
        let count = value.chars().count();
        prop_assert!(quoted.len() <= QUOTE_BOUND, "{} bytes", quoted.len());
        prop_assert!(
            !quoted.chars().any(char::is_control),
            "a control character left in {}",
            quoted
        );
        let head: String = value.chars().take(MAX_QUOTED).collect();
        if count <= MAX_QUOTED {
            prop_assert_eq!(&quoted, &format!("{value:?}"));
        } else {
            prop_assert!(quoted.starts_with(&format!("{head:?}")), "{}", quoted);
            prop_assert!(
                quoted.ends_with(&format!("({count} characters)")),
                "{}",
                quoted
            );
        }
    }

    /// The simple validators accept exactly what their doc comment describes: checked on valid
    /// values, near misses of them and arbitrary strings.
    #[test]
    fn simple_validators_follow_their_documented_rule(
        e164_value in near(e164()),
        tenant_id_value in near(tenant_id()),
        country_code_value in near(country_code()),
        carrier_id_value in near(carrier_id()),
        (max, text_value) in (0..=MAX_TEXT_LEN).prop_flat_map(|max| (Just(max), near(text(max)))),
    ) {
        let cases: [(&str, String, Check, Rule); 4] = [
            ("e164", e164_value, validate::e164, e164_rule),
            ("tenant_id", tenant_id_value, validate::tenant_id, tenant_id_rule),
            (
                "country_code",
                country_code_value,
                validate::country_code,
                country_code_rule,
            ),
            ("carrier_id", carrier_id_value, validate::carrier_id, carrier_id_rule),
        ];
        for (name, s, check, rule) in cases {
            prop_assert_eq!(check(&s).is_ok(), rule(&s), "{}({})", name, shown(&s));
        }
        prop_assert_eq!(
            validate::text(&text_value, max).is_ok(),
            text_rule(&text_value, max),
            "text({}, {})",
            shown(&text_value),
            max
        );
    }

    /// Valid values built by the strategies are accepted, in any letter case where case does
    /// not matter (tenant ids, SIP schemes and hosts).
    #[test]
    fn generated_valid_values_are_accepted(
        e164 in e164(),
        tenant in tenant_id(),
        sip_uri in sip_uri(),
        country_code in country_code(),
        carrier_id in carrier_id(),
        (max, text) in text_within_a_limit(),
    ) {
        let values: [(&str, String, Check); 7] = [
            ("e164", e164, validate::e164),
            ("tenant_id", tenant.to_uppercase(), validate::tenant_id),
            ("tenant_id", tenant, validate::tenant_id),
            ("sip_uri", sip_uri.to_uppercase(), validate::sip_uri),
            ("sip_uri", sip_uri, validate::sip_uri),
            ("country_code", country_code, validate::country_code),
            ("carrier_id", carrier_id, validate::carrier_id),
        ];
        for (name, value, check) in values {
            prop_assert_eq!(check(&value), Ok(()), "{}({:?})", name, value);
        }
        prop_assert_eq!(validate::text(&text, max), Ok(()), "text({:?}, {})", text, max);
    }

    /// A valid SIP URI broken in exactly one part is rejected.
    #[test]
    fn sip_uri_rejects_each_broken_part(
        uri in sip_uri(),
        space in select(&[' ', '\t', '\n', '\0', '\u{7f}'][..]),
        at in any::<Index>(),
    ) {
        let (scheme, rest) = uri.split_once(':').expect("generated URIs have a scheme");
        let (user, host_part) = rest.split_once('@').expect("generated URIs have a user");
        let host = host_part
            .split([':', ';'])
            .next()
            .expect("split yields at least one piece");
        let after_host = &host_part[host.len()..];
        let at = at.index(rest.len() + 1);
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
            prop_assert!(validate::sip_uri(&s).is_err(), "{}: {:?} accepted", what, s);
        }
    }

    /// Whether a string is a SIP URI does not depend on ASCII letter case (schemes and host
    /// names are case-insensitive; the user part is not checked for case).
    #[test]
    fn sip_uri_ignores_ascii_case(s in near(sip_uri())) {
        let ok = validate::sip_uri(&s).is_ok();
        for other in [s.to_ascii_uppercase(), s.to_ascii_lowercase()] {
            prop_assert_eq!(validate::sip_uri(&other).is_ok(), ok, "{}", shown(&s));
        }
    }

    /// `normalize_tenant_id` is idempotent, keeps validity as it is, and gives a valid id in
    /// lower case whatever the case it was sent in.
    #[test]
    fn normalize_tenant_id_is_idempotent_and_keeps_validity(
        s in near(tenant_id()),
        id in tenant_id(),
    ) {
        let once = validate::normalize_tenant_id(&s);
        prop_assert_eq!(&validate::normalize_tenant_id(&once), &once, "{}", shown(&s));
        prop_assert_eq!(
            validate::tenant_id(&once).is_ok(),
            validate::tenant_id(&s).is_ok(),
            "{}",
            shown(&s)
        );
        let upper = validate::normalize_tenant_id(&id.to_uppercase());
        prop_assert_eq!(&upper, &id);
        prop_assert_eq!(validate::tenant_id(&upper), Ok(()));
    }
}

// ------------------------------------------------------------------------------------------
// Number uploads.
// ------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(CASES))]

    /// `number_upload` rejects exactly the items that break a rule, with one violation at each
    /// broken field and nowhere else.
    #[test]
    fn number_upload_reports_exactly_the_broken_fields(
        item in any_number_upload(),
        path in path(),
    ) {
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
            Err(v) => fields_under(v, &path)?.into_iter().collect(),
        };
        prop_assert_eq!(found, expected);
    }

    /// A valid upload keeps every field as sent, the tenant id in lower case, and its
    /// capabilities sorted and de-duplicated (the defaults when it names none).
    #[test]
    fn number_upload_keeps_what_was_sent(item in valid_number_upload(), path in path()) {
        let upload = match number_upload(item.clone(), &path) {
            Ok(upload) => upload,
            Err(v) => {
                return Err(TestCaseError::fail(format!(
                    "a generated upload is refused: {:?}",
                    v.into_pairs()
                )));
            }
        };
        let mut codes: Vec<i32> = item.capabilities.clone();
        codes.sort_unstable();
        codes.dedup();
        let capabilities: Vec<i32> = upload.capabilities.iter().map(|c| c.code()).collect();
        if codes.is_empty() {
            prop_assert_eq!(&upload.capabilities, &Capability::DEFAULTS.to_vec());
        } else {
            prop_assert_eq!(capabilities, codes);
        }
        prop_assert_eq!(&upload.number, &item.number);
        prop_assert_eq!(&upload.tenant_id, &item.tenant_id.to_ascii_lowercase());
        prop_assert_eq!(&upload.civic_address_id, &item.civic_address_id);
        prop_assert_eq!(&upload.location_id, &item.location_id);
        prop_assert_eq!(&upload.country_code, &item.country_code);
    }
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

/// Converts a record that must be valid; a test failure showing every violation if it is not.
fn accept(r: &pb::CallRecord, path: &str) -> Result<ocx_server::domain::CallRecord, TestCaseError> {
    call_record_in(r, path).map_err(|v| {
        TestCaseError::fail(format!("a valid record is refused: {:?}", v.into_pairs()))
    })
}

/// Breaks one rule of a valid record (the field it breaks is named beside it in [`BREAKERS`]),
/// with values drawn for the case.
type Breaker = fn(&mut pb::CallRecord, &Ingredients);

/// Breaks one rule of a valid media stream (the field is named beside it in
/// [`STREAM_BREAKERS`]).
type StreamBreaker = fn(&mut pb::MediaStream, &Ingredients);

/// What a breaker may draw on: the random parts of a broken value, drawn for each case.
#[derive(Debug, Clone)]
struct Ingredients {
    /// Picks one of a breaker's bad values.
    pick: Index,
    /// A string that breaks a text rule.
    bad_text: BadText,
    /// A non-negative number, negated for a bad version.
    magnitude: i64,
    /// A valid carrier id, to break by its case.
    carrier_id: String,
    /// A valid tenant id, to break by its hyphens.
    tenant_id: String,
    /// A valid E.164 number, to break by its leading digit or its `+`.
    e164: String,
    /// A valid SIP URI, to break by its `@`.
    sip_uri: String,
    /// A valid country code, to break by its case.
    country_code: String,
}

impl Ingredients {
    /// One element of a non-empty slice.
    fn pick<T: Copy>(&self, items: &[T]) -> T {
        *self.pick.get(items)
    }

    /// A string that breaks a text rule of `max` characters.
    fn bad_text(&self, max: usize) -> String {
        self.bad_text.of(max)
    }
}

prop_compose! {
    /// [`Ingredients`] for any breaker.
    fn ingredients()(
        pick in any::<Index>(),
        bad_text in bad_text(),
        magnitude in 0..=i64::MAX,
        carrier_id in carrier_id(),
        tenant_id in tenant_id(),
        e164 in e164(),
        sip_uri in sip_uri(),
        country_code in country_code(),
    ) -> Ingredients {
        Ingredients {
            pick,
            bad_text,
            magnitude,
            carrier_id,
            tenant_id,
            e164,
            sip_uri,
            country_code,
        }
    }
}

/// Every rule of a call record, as a breaker of a valid record.
static BREAKERS: &[(&str, Breaker)] = &[
    ("call_id", |r, _| r.call_id.clear()),
    ("call_id", |r, g| r.call_id = g.bad_text(128)),
    ("correlation_id", |r, g| r.correlation_id = g.bad_text(128)),
    ("version", |r, g| r.version = -g.magnitude),
    ("carrier_id", |r, g| {
        r.carrier_id = g.carrier_id.to_uppercase()
    }),
    ("tenant_id", |r, g| {
        r.tenant_id = g.tenant_id.replace('-', "")
    }),
    ("tenant_id", |r, _| r.tenant_id.clear()),
    ("call_type", |r, g| {
        r.call_type = g.pick(&[0, 10, -1, i32::MAX])
    }),
    ("direction", |r, g| r.direction = g.pick(&[0, 3, i32::MIN])),
    ("caller_number", |r, g| {
        r.caller_number = g.e164.replacen('+', "+0", 1)
    }),
    ("callee_number", |r, g| {
        r.callee_number = g.e164[1..].to_owned()
    }),
    ("user_sip_uri", |r, g| {
        r.user_sip_uri = g.sip_uri.replacen('@', "", 1)
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
    // More than 5 minutes ahead of the server's clock (the end moves along, so only the start
    // is wrong).
    ("start_time", |r, g| {
        let ahead = now_secs() + 301 + g.magnitude % 1_000_000_000;
        r.start_time = Some(Timestamp {
            seconds: ahead,
            nanos: 0,
        });
        r.end_time = Some(Timestamp {
            seconds: ahead + 60,
            nanos: 0,
        });
    }),
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
    // Over the maximum by less than a microsecond: judged before anything is dropped.
    ("duration", |r, g| {
        r.duration = Some(Duration {
            seconds: MAX_CALL_US / 1_000_000,
            nanos: g.pick(&[1, 999]),
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
        r.usage_country_code = g.country_code.to_lowercase()
    }),
    ("trunk_fqdn", |r, g| r.trunk_fqdn = g.bad_text(253)),
    ("media_streams", |r, _| {
        r.media_streams = vec![pb::MediaStream::default(); 17]
    }),
];

/// A stream metric duration outside 0 to 1 hour (1 hour and 1 ns included).
fn too_long(g: &Ingredients) -> Option<Duration> {
    let (seconds, nanos) = g.pick(&[(-1, 0), (3601, 0), (i64::MAX, 0), (i64::MIN, 0), (3600, 1)]);
    Some(Duration { seconds, nanos })
}

/// A ratio outside 0 to 1, or not a number.
fn bad_ratio(g: &Ingredients) -> Option<f64> {
    Some(g.pick(&[f64::NAN, -0.1, 1.01, f64::INFINITY]))
}

/// Every rule of a media stream, as a breaker of a valid stream.
static STREAM_BREAKERS: &[(&str, StreamBreaker)] = &[
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

/// Which rule a case breaks: one of [`BREAKERS`], or one of [`STREAM_BREAKERS`] in one of the
/// valid streams the record is given.
#[derive(Debug, Clone)]
enum BreakTarget {
    /// `BREAKERS[i]`.
    Record(usize),
    /// `STREAM_BREAKERS[i]` applied to one of these streams, which replace the record's.
    Stream(usize, Vec<pb::MediaStream>, Index),
}

/// Any [`BreakTarget`], every rule as likely (the streams are drawn only when used).
fn break_target() -> impl Strategy<Value = BreakTarget> {
    prop_oneof![
        BREAKERS.len() as u32 => (0..BREAKERS.len()).prop_map(BreakTarget::Record),
        STREAM_BREAKERS.len() as u32 => (
            0..STREAM_BREAKERS.len(),
            vec(media_stream(), 1..=16),
            any::<Index>(),
        )
            .prop_map(|(which, streams, i)| BreakTarget::Stream(which, streams, i)),
    ]
}

proptest! {
    #![proptest_config(config(CASES))]

    /// Any record: no panic; a rejection is reported under the path; an accepted record read
    /// back and sent again is the same record (its content hash aside: the sent bytes differ).
    #[test]
    fn call_record_in_never_panics_and_reports_under_the_path(
        record in prop_oneof![3 => any_call_record(), 1 => corrupted(valid_call_record())],
        path in path(),
    ) {
        match call_record_in(&record, &path) {
            Err(v) => {
                fields_under(v, &path)?;
            }
            Ok(domain) => {
                let again = without_output_fields(call_record(domain.clone()));
                let mut twice = accept(&again, &path)?;
                twice.content_hash = domain.content_hash;
                prop_assert_eq!(twice, domain);
            }
        }
    }
}

proptest! {
    #![proptest_config(config(100))]

    /// A record sent without a duration gets one derived from its times, and that must obey the
    /// seven-day limit of a duration that was sent; otherwise the server stores a record that
    /// it refuses when it is sent back as read (found by the re-send property above, once its
    /// times reached the limit).
    #[test]
    fn a_derived_duration_obeys_the_seven_day_limit(mut record in valid_call_record()) {
        record.duration = None;
        record.start_time = Some(Timestamp {
            seconds: 0,
            nanos: 0,
        });
        record.end_time = Some(Timestamp {
            seconds: 30 * 86_400,
            nanos: 0,
        });
        prop_assert!(
            call_record_in(&record, "r").is_err(),
            "a 30-day call without a duration field was accepted"
        );
    }
}

proptest! {
    #![proptest_config(config(CASES))]

    /// Every rule of a call record is enforced and reported at the field that breaks it: a
    /// valid record with one field broken is rejected with violations of that field only.
    #[test]
    fn call_record_in_rejects_each_broken_field_at_its_path(
        mut record in valid_call_record(),
        target in break_target(),
        g in ingredients(),
        path in path(),
    ) {
        let field = match target {
            BreakTarget::Record(which) => {
                let (field, breaker) = BREAKERS[which];
                breaker(&mut record, &g);
                field.to_owned()
            }
            BreakTarget::Stream(which, streams, stream) => {
                let (field, breaker) = STREAM_BREAKERS[which];
                record.media_streams = streams;
                let i = stream.index(record.media_streams.len());
                breaker(&mut record.media_streams[i], &g);
                format!("media_streams[{i}].{field}")
            }
        };
        let Err(v) = call_record_in(&record, &path) else {
            return Err(TestCaseError::fail(format!("{field} broken, yet accepted")));
        };
        let expected = format!("{path}.{field}");
        let fields = fields_under(v, &path)?;
        prop_assert!(
            fields.iter().all(|f| *f == expected),
            "{} broken, violations {:?}",
            field,
            fields
        );
    }
}

proptest! {
    #![proptest_config(config(30))]

    /// A record from `CallRecordGenerator` is accepted, reads back exactly as sent
    /// (output-only fields aside), and sent again is the same record with the same content
    /// hash: a re-send is recognised as a duplicate.
    #[test]
    fn generated_call_records_round_trip(
        lines in vec((tenant_id(), e164()), 1..=4),
        // Late enough that every INVITE (up to 8 s before the start) is after 1970, early
        // enough that 100 calls (about 30 s apart) all started before now.
        start in 60..=now_secs() - 86_400,
        seed in any::<u64>(),
    ) {
        let lines: Vec<Line> = lines
            .into_iter()
            .map(|(tenant_id, number)| Line { tenant_id, number })
            .collect();
        let generator = CallRecordGenerator::new(seed, lines, start);
        for sent in generator.take(100) {
            let domain = accept(&sent, "call_records[0]")?;
            let back = without_output_fields(call_record(domain.clone()));
            prop_assert_eq!(&back, &sent);
            prop_assert_eq!(accept(&back, "call_records[0]")?, domain);
        }
    }
}

proptest! {
    #![proptest_config(config(CASES))]

    /// A valid record of any shape (optional parts present or not, nanosecond times, the
    /// largest values) is accepted and reads back as sent, cut to microseconds, its duration
    /// derived from its times when it had none.
    #[test]
    fn random_valid_call_records_round_trip(sent in valid_call_record(), path in path()) {
        let domain = accept(&sent, &path)?;
        let back = without_output_fields(call_record(domain));
        prop_assert_eq!(back, expected_back(&sent));
    }
}

// ------------------------------------------------------------------------------------------
// Duration reports, periods and tolerances.
// ------------------------------------------------------------------------------------------

/// Whether a report's duration is accepted: 0 to 24 hours, judged on the exact value (24 hours
/// and 1 ns is over), nanos a fraction of a second (never negative, never a second or more).
fn report_duration_rule(d: &Duration) -> bool {
    let max = (
        MAX_DURATION_US / 1_000_000,
        MAX_DURATION_US % 1_000_000 * 1000,
    );
    (0..1_000_000_000).contains(&d.nanos)
        && d.seconds >= 0
        && (d.seconds, i64::from(d.nanos)) <= max
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

/// Microseconds of a well-formed duration.
fn micros_of_duration(d: &Duration) -> i64 {
    d.seconds * 1_000_000 + i64::from(d.nanos) / 1000
}

/// A period end as a request may carry it: missing, valid, or any timestamp at all.
fn period_end() -> BoxedStrategy<Option<Timestamp>> {
    prop_oneof![
        Just(None),
        timestamp_between(0, MAX_TIMESTAMP_SECS).prop_map(Some),
        any_timestamp().prop_map(Some),
    ]
    .boxed()
}

/// A tolerance is the default when none is sent.
#[test]
fn an_unset_tolerance_is_the_default() {
    let mut v = Violations::new();
    assert_eq!(tolerance(&None, &mut v), DEFAULT_TOLERANCE_US);
    assert!(v.is_empty());
}

proptest! {
    #![proptest_config(config(CASES))]

    /// `report_in` never panics and rejects exactly the reports that break a rule, naming
    /// every broken field under the path and no other.
    #[test]
    fn report_in_reports_exactly_the_broken_fields(
        report in prop_oneof![3 => any_report(), 1 => corrupted(valid_report())],
        path in path(),
    ) {
        let expected = broken_report_fields(&report, &path);
        let found: BTreeSet<String> = match report_in(&report, &path) {
            Ok(_) => BTreeSet::new(),
            Err(v) => fields_under(v, &path)?.into_iter().collect(),
        };
        prop_assert_eq!(found, expected);
    }

    /// A valid report is accepted and reads back (`call_duration`) with every field as sent,
    /// times and durations cut to microseconds.
    #[test]
    fn reports_round_trip(sent in valid_report(), path in path(), carrier_id in carrier_id()) {
        let report = match report_in(&sent, &path) {
            Ok(report) => report,
            Err(v) => {
                return Err(TestCaseError::fail(format!(
                    "a generated report is refused: {:?}",
                    v.into_pairs()
                )));
            }
        };
        let back = call_duration(CallDuration {
            report,
            carrier_id: carrier_id.clone(),
            corrections: 0,
            create_time: 0,
            update_time: 0,
        });
        prop_assert_eq!(&back.record_id, &sent.record_id);
        prop_assert_eq!(&back.carrier_id, &carrier_id);
        prop_assert_eq!(&back.call_id, &sent.call_id);
        prop_assert_eq!(&back.correlation_id, &sent.correlation_id);
        prop_assert_eq!(&back.caller_number, &sent.caller_number);
        prop_assert_eq!(&back.callee_number, &sent.callee_number);
        prop_assert_eq!(back.start_time, sent.start_time.as_ref().map(to_micros));
        prop_assert_eq!(back.duration, sent.duration.as_ref().map(duration_to_micros));
    }

    /// A period within the bounds is accepted exactly; any other pair is either accepted as a
    /// period of positive length up to 366 days, or refused with violations of its two ends
    /// only.
    #[test]
    fn periods_are_bounded_and_exact(
        start_us in edgy(0, (MAX_TIMESTAMP_SECS + 1) * 1_000_000 - 1 - MAX_PERIOD_US),
        length_us in edgy(1, MAX_PERIOD_US),
        start in period_end(),
        end in period_end(),
    ) {
        let end_us = start_us + length_us;
        let ts = |us: i64| Timestamp {
            seconds: us / 1_000_000,
            nanos: (us % 1_000_000) as i32 * 1000,
        };
        let mut v = Violations::new();
        let window = period(&Some(ts(start_us)), &Some(ts(end_us)), &mut v);
        prop_assert_eq!(window, Some((start_us, end_us)));
        prop_assert!(v.is_empty());

        let mut v = Violations::new();
        match period(&start, &end, &mut v) {
            Some((s, e)) => {
                prop_assert!(v.is_empty());
                prop_assert!(s < e && e - s <= MAX_PERIOD_US, "{}..{}", s, e);
            }
            None => {
                let pairs = v.into_pairs();
                prop_assert!(!pairs.is_empty(), "{:?}..{:?} refused silently", start, end);
                for (field, _) in pairs {
                    prop_assert!(field == "start_time" || field == "end_time", "{}", field);
                }
            }
        }
    }

    /// A tolerance is exact when valid, and otherwise a violation of `tolerance` and the
    /// default; whatever is returned is from 0 to 1 hour. (Unset, it is the default: see
    /// [`an_unset_tolerance_is_the_default`].)
    #[test]
    fn tolerances_are_bounded_and_exact(
        valid in whole_micros_up_to(MAX_TOLERANCE_US),
        below_a_microsecond in (whole_micros_up_to(MAX_TOLERANCE_US - 1), 1..=999i32),
        any in any_duration(),
    ) {
        // Echoed back as the tolerance used, so it must be exact: no part below a microsecond.
        let (mut part, ns) = below_a_microsecond;
        part.nanos += ns;
        let mut v = Violations::new();
        prop_assert_eq!(tolerance(&Some(part), &mut v), DEFAULT_TOLERANCE_US);
        prop_assert_eq!(
            v.into_pairs().into_iter().map(|(field, _)| field).collect::<Vec<_>>(),
            ["tolerance"]
        );

        let mut v = Violations::new();
        let us = tolerance(&Some(valid), &mut v);
        prop_assert_eq!(us, micros_of_duration(&valid));
        prop_assert!(v.is_empty());

        let mut v = Violations::new();
        let us = tolerance(&Some(any), &mut v);
        prop_assert!((0..=MAX_TOLERANCE_US).contains(&us), "{:?} gave {}", any, us);
        let pairs = v.into_pairs();
        if !pairs.is_empty() {
            prop_assert_eq!(us, DEFAULT_TOLERANCE_US);
            prop_assert!(pairs.iter().all(|(field, _)| field == "tolerance"));
        }
    }
}

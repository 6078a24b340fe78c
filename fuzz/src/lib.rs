//! Checks shared by the fuzz targets in `fuzz_targets/`.
//!
//! Each target feeds libFuzzer's bytes to one edge of OCX and asserts what must hold for any
//! input; a failed assertion is a crash libFuzzer saves and minimises. The same properties run
//! on generated inputs in `server/tests/it/convert_property.rs` with every `cargo test`; here they
//! meet inputs no generator thought of.
//!
//! ## Layout
//! - the documented format rules, written out again ([`e164_rule`], [`tenant_id_rule`], ...),
//!   to compare the validators against;
//! - [`check_validators`]: every validator on one string;
//! - [`fields_under`]: the shape of a rejection (violations under the caller's path, bounded);
//! - [`to_micros`], [`without_output_fields`]: what a round trip through the server keeps.

use ocx_api::pb;
use ocx_api::validate::{self, MAX_QUOTED, MAX_TEXT_LEN};
use ocx_server::error::Violations;
use prost_types::{Duration, Timestamp};

/// The most bytes `quote` may return: two quotes, [`MAX_QUOTED`] characters escaped at worst
/// to 10 bytes each (`\u{10ffff}`), and the suffix `… (N characters)` with N up to 20 digits.
pub const QUOTE_BOUND: usize = 2 + 10 * MAX_QUOTED + 40;

/// The longest violation description allowed: a quoted value and a sentence about it.
pub const MAX_DESCRIPTION: usize = QUOTE_BOUND + 200;

/// The path the targets convert under, as a service would give it for one batch item.
pub const PATH: &str = "items[7]";

/// A validator of `ocx_api::validate`.
pub type Check = fn(&str) -> Result<(), String>;

/// A documented rule: whether a string should pass.
pub type Rule = fn(&str) -> bool;

/// `^\+[1-9]\d{1,14}$`, the rule `validate::e164` documents.
pub fn e164_rule(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    let digits: Vec<char> = digits.chars().collect();
    (2..=15).contains(&digits.len()) && digits.iter().all(char::is_ascii_digit) && digits[0] != '0'
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in hex of either case (`validate::tenant_id`).
pub fn tenant_id_rule(s: &str) -> bool {
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

/// Two upper-case ASCII letters (`validate::country_code`).
pub fn country_code_rule(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    chars.len() == 2 && chars.iter().all(char::is_ascii_uppercase)
}

/// 3 to 63 of `a-z0-9-`, starting with a letter, not ending with `-` (`validate::carrier_id`).
pub fn carrier_id_rule(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    (3..=63).contains(&chars.len())
        && chars[0].is_ascii_lowercase()
        && chars[chars.len() - 1] != '-'
        && chars
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
}

/// At most `max` characters, none a control character (`validate::text`).
pub fn text_rule(s: &str, max: usize) -> bool {
    s.chars().count() <= max && !s.chars().any(char::is_control)
}

/// Runs every validator on `s` and checks what holds for any string: `quote` is bounded, escapes
/// control characters and tells a cut value's length; the simple validators follow their
/// documented rule; `normalize_tenant_id` is idempotent and keeps validity; a SIP URI's
/// validity does not depend on ASCII letter case.
pub fn check_validators(s: &str) {
    check_quote(s);
    let rules: [(Check, Rule, &str); 4] = [
        (validate::e164, e164_rule, "e164"),
        (validate::tenant_id, tenant_id_rule, "tenant_id"),
        (validate::country_code, country_code_rule, "country_code"),
        (validate::carrier_id, carrier_id_rule, "carrier_id"),
    ];
    for (check, rule, name) in rules {
        assert_eq!(check(s).is_ok(), rule(s), "{name}({})", validate::quote(s));
    }
    assert_eq!(
        validate::text(s, MAX_TEXT_LEN).is_ok(),
        text_rule(s, MAX_TEXT_LEN)
    );
    let normal = validate::normalize_tenant_id(s);
    assert_eq!(validate::normalize_tenant_id(&normal), normal);
    assert_eq!(
        validate::tenant_id(&normal).is_ok(),
        validate::tenant_id(s).is_ok()
    );
    assert_eq!(
        validate::sip_uri(s).is_ok(),
        validate::sip_uri(&s.to_ascii_uppercase()).is_ok()
    );
}

/// `quote(s)` is at most [`QUOTE_BOUND`] bytes, has no raw control character, shows the first
/// [`MAX_QUOTED`] characters exactly, and ends with the character count when it cut.
fn check_quote(s: &str) {
    let quoted = validate::quote(s);
    assert!(quoted.len() <= QUOTE_BOUND, "{} bytes", quoted.len());
    assert!(!quoted.chars().any(char::is_control), "{quoted}");
    let count = s.chars().count();
    if count <= MAX_QUOTED {
        assert_eq!(quoted, format!("{s:?}"));
    } else {
        let head: String = s.chars().take(MAX_QUOTED).collect();
        assert!(quoted.starts_with(&format!("{head:?}")), "{quoted}");
        assert!(
            quoted.ends_with(&format!("({count} characters)")),
            "{quoted}"
        );
    }
}

/// A rejection's fields, after checking that it has at least one violation, that each names a
/// field under `path`, and that no description is longer than [`MAX_DESCRIPTION`].
pub fn fields_under(v: Violations, path: &str) -> Vec<String> {
    let pairs = v.into_pairs();
    assert!(!pairs.is_empty(), "a rejection without any violation");
    let prefix = format!("{path}.");
    for (field, description) in &pairs {
        assert!(
            field.starts_with(&prefix),
            "{field:?} is not under {path:?}"
        );
        assert!(
            description.len() <= MAX_DESCRIPTION,
            "description of {field:?} is {} bytes",
            description.len()
        );
    }
    pairs.into_iter().map(|(field, _)| field).collect()
}

/// A timestamp the server accepted, cut to whole microseconds as the server keeps it.
pub fn to_micros(t: &Timestamp) -> Timestamp {
    Timestamp {
        seconds: t.seconds,
        nanos: t.nanos / 1000 * 1000,
    }
}

/// A duration the server accepted, as it reads back: whole microseconds, nanos normalised.
pub fn duration_to_micros(d: &Duration) -> Duration {
    let us = d.seconds * 1_000_000 + i64::from(d.nanos) / 1000;
    Duration {
        seconds: us.div_euclid(1_000_000),
        nanos: (us.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// A record read back, with what the server derives or assigns cleared (quality, stored-at
/// data, estimated MOS), as a client clears it before sending the record again.
pub fn without_output_fields(mut r: pb::CallRecord) -> pb::CallRecord {
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

//! Conversions between the wire (`ocx_api::pb`) and the domain, at the edge of the services.
//!
//! Domain → wire is infallible (`From`-like functions). Wire → domain validates and records
//! every problem in [`Violations`] with its field path from the request root (e.g.
//! `numbers[3].number`), so callers can report all of them at once.

use ocx_api::{pb, validate};
use prost_types::Timestamp;
use tonic::Status;

use crate::domain::{
    ApiKey, AssignmentType, Capability, Carrier, Consent, ConsentStatus, Contact, Micros,
    NumberEvent, NumberState, NumberUpload, PhoneNumber, Role,
};
use crate::domain::{AuditEvent, RetentionPolicy};
use crate::error::Violations;

/// Micros to a protobuf timestamp.
pub fn timestamp(micros: Micros) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// µs to a protobuf duration.
pub fn duration(us: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: us.div_euclid(1_000_000),
        nanos: (us.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// Optional micros to an optional timestamp.
pub fn opt_timestamp(micros: Option<Micros>) -> Option<Timestamp> {
    micros.map(timestamp)
}

/// A protobuf timestamp to micros; `None` (with a violation) if out of range.
pub fn micros(ts: &Timestamp, field: &str, v: &mut Violations) -> Option<Micros> {
    if !(0..1_000_000_000).contains(&ts.nanos) || !(0..=253_402_300_799).contains(&ts.seconds) {
        v.add(
            field,
            "timestamp out of range (years 1970 to 9999, nanos 0 to 999999999)",
        );
        return None;
    }
    Some(ts.seconds * 1_000_000 + i64::from(ts.nanos) / 1000)
}

/// How far ahead of the server's clock a call may start, on the platform's call records and
/// the carriers' reports alike: clocks drift a little; calls do not start in the future.
pub const MAX_FUTURE_SKEW_US: i64 = 5 * 60 * 1_000_000;

/// Records a violation on `field` if a call's `start` is more than [`MAX_FUTURE_SKEW_US`]
/// ahead of `now` (the server's clock).
pub fn not_ahead(start: Micros, now: Micros, field: &str, v: &mut Violations) {
    if start > now.saturating_add(MAX_FUTURE_SKEW_US) {
        v.add(
            field,
            "start_time is in the future (more than 5 minutes ahead of the server's clock)",
        );
    }
}

/// A protobuf duration from 0 to `max_us` (worded `max_words`) in microseconds, judged on its
/// exact value before the part below a microsecond is dropped (OCX keeps durations to the
/// microsecond): 1 hour and 1 ns is over 1 hour. `None`, with a violation on `field`, if it is
/// malformed (nanos beyond ±999,999,999 or of the other sign than the seconds), negative, or
/// over the maximum.
pub fn duration_us(
    d: &prost_types::Duration,
    field: &str,
    (max_us, max_words): (i64, &str),
    v: &mut Violations,
) -> Option<Micros> {
    let sign_clash = (d.seconds > 0 && d.nanos < 0) || (d.seconds < 0 && d.nanos > 0);
    if d.nanos.unsigned_abs() >= 1_000_000_000 || sign_clash {
        v.add(
            field,
            "malformed duration: nanos must be within ±999,999,999 and of the sign of seconds",
        );
        return None;
    }
    let max = (
        max_us.div_euclid(1_000_000),
        max_us.rem_euclid(1_000_000) * 1000,
    );
    if d.seconds < 0 || d.nanos < 0 || (d.seconds, i64::from(d.nanos)) > max {
        v.add(field, format!("must be from 0 to {max_words}"));
        return None;
    }
    Some(d.seconds * 1_000_000 + i64::from(d.nanos) / 1000)
}

/// A list filter's optional time range `[from, to]`, each end named by its field; an end
/// before the start is a violation on the end's field (every list answers it alike).
pub fn time_range(
    (from, from_field): (Option<&Timestamp>, &str),
    (to, to_field): (Option<&Timestamp>, &str),
    v: &mut Violations,
) -> (Option<Micros>, Option<Micros>) {
    let from = from.and_then(|t| micros(t, from_field, v));
    let to = to.and_then(|t| micros(t, to_field, v));
    if let (Some(from), Some(to)) = (from, to)
        && to < from
    {
        v.add(to_field, format!("{to_field} is before {from_field}"));
    }
    (from, to)
}

/// Wire code to a domain enum, recording a violation for 0 and unknown values.
pub fn required_enum<T>(
    code: i32,
    field: &str,
    from: fn(i32) -> Option<T>,
    v: &mut Violations,
) -> Option<T> {
    let value = from(code);
    if value.is_none() {
        v.add(
            field,
            format!("{code} is not a valid value here (see the enum in the proto)"),
        );
    }
    value
}

/// Wire code to an optional filter: 0 means "any"; unknown values are violations.
pub fn filter_enum<T>(
    code: i32,
    field: &str,
    from: fn(i32) -> Option<T>,
    v: &mut Violations,
) -> Option<T> {
    if code == 0 {
        None
    } else {
        required_enum(code, field, from, v)
    }
}

/// Validates and normalises a tenant id.
pub fn tenant_id(id: &str, field: &str, v: &mut Violations) -> String {
    v.check(field, validate::tenant_id(id));
    validate::normalize_tenant_id(id)
}

/// Domain carrier to wire.
pub fn carrier(c: Carrier) -> pb::Carrier {
    pb::Carrier {
        carrier_id: c.carrier_id,
        display_name: c.display_name,
        create_time: Some(timestamp(c.create_time)),
    }
}

/// Domain key to wire (never the hash); `last_use` overrides the stored last-use time.
pub fn api_key(k: ApiKey, last_use: Option<Micros>) -> pb::ApiKey {
    let role = match k.role {
        Role::Platform => pb::ApiKeyRole::Platform,
        Role::Carrier => pb::ApiKeyRole::Carrier,
    };
    pb::ApiKey {
        key_id: k.key_id,
        role: role as i32,
        carrier_id: k.carrier_id.unwrap_or_default(),
        display_name: k.display_name,
        create_time: Some(timestamp(k.create_time)),
        last_use_time: opt_timestamp(last_use.max(k.last_use_time)),
        revoke_time: opt_timestamp(k.revoke_time),
    }
}

/// Wire contact to domain, validating each field.
pub fn contact_in(c: Option<pb::Contact>, field: &str, v: &mut Violations) -> Contact {
    let c = c.unwrap_or_default();
    for (name, value, max) in [
        ("full_name", &c.full_name, validate::MAX_TEXT_LEN),
        ("email", &c.email, 254),
        ("company_name", &c.company_name, validate::MAX_TEXT_LEN),
    ] {
        v.check(format!("{field}.{name}"), validate::text(value, max));
    }
    if !c.email.is_empty() && !c.email.contains('@') {
        v.add(
            format!("{field}.email"),
            format!("{:?} is not an e-mail address", c.email),
        );
    }
    if !c.telephone_number.is_empty() {
        v.check(
            format!("{field}.telephone_number"),
            validate::e164(&c.telephone_number),
        );
    }
    Contact {
        full_name: c.full_name,
        email: c.email,
        telephone_number: c.telephone_number,
        company_name: c.company_name,
    }
}

/// Domain consent to wire.
pub fn consent(c: Consent) -> pb::Consent {
    let status = match c.status {
        ConsentStatus::Active => pb::ConsentStatus::Active,
        ConsentStatus::Suspended => pb::ConsentStatus::Suspended,
        ConsentStatus::Removed => pb::ConsentStatus::Removed,
    };
    pb::Consent {
        carrier_id: c.carrier_id,
        tenant_id: c.tenant_id,
        status: status as i32,
        consented_countries: c.countries,
        contact: Some(pb::Contact {
            full_name: c.contact.full_name,
            email: c.contact.email,
            telephone_number: c.contact.telephone_number,
            company_name: c.contact.company_name,
        }),
        consent_time: Some(timestamp(c.consent_time)),
        update_time: Some(timestamp(c.update_time)),
    }
}

/// Domain number to wire.
pub fn phone_number(n: PhoneNumber) -> pb::PhoneNumber {
    let (assignment_type, sip_uri, user_id, assign_time) = match n.assignment {
        Some(a) => (
            a.assignment_type.code(),
            a.sip_uri,
            a.user_id,
            Some(timestamp(a.assign_time)),
        ),
        None => (0, String::new(), String::new(), None),
    };
    pb::PhoneNumber {
        number: n.number,
        carrier_id: n.carrier_id,
        tenant_id: n.tenant_id,
        state: n.state.code(),
        assignment_type,
        sip_uri,
        user_id,
        capabilities: n.capabilities.iter().map(|c| c.code()).collect(),
        civic_address_id: n.civic_address_id,
        location_id: n.location_id,
        country_code: n.country_code,
        provision_time: Some(timestamp(n.provision_time)),
        assign_time,
        update_time: Some(timestamp(n.update_time)),
        version: n.version,
    }
}

/// Domain event to wire.
pub fn number_event(e: NumberEvent) -> pb::NumberEvent {
    pb::NumberEvent {
        sequence: e.sequence,
        r#type: e.event_type.code(),
        phone_number: Some(phone_number(e.number)),
        event_time: Some(timestamp(e.event_time)),
    }
}

/// Validates one upload item whose path is `path` (e.g. `numbers[3]`): the domain item, or
/// every violation it has.
pub fn number_upload(item: pb::NumberUpload, path: &str) -> Result<NumberUpload, Violations> {
    let mut v = Violations::new();
    v.check(format!("{path}.number"), validate::e164(&item.number));
    let tenant_id = tenant_id(&item.tenant_id, &format!("{path}.tenant_id"), &mut v);
    let mut capabilities = Vec::new();
    for (i, code) in item.capabilities.iter().enumerate() {
        let field = format!("{path}.capabilities[{i}]");
        capabilities.extend(required_enum(*code, &field, Capability::from_code, &mut v));
    }
    capabilities.sort_by_key(|c| c.code());
    capabilities.dedup();
    if capabilities.is_empty() {
        capabilities = Capability::DEFAULTS.to_vec();
    }
    for (name, value) in [
        ("civic_address_id", &item.civic_address_id),
        ("location_id", &item.location_id),
    ] {
        v.check(
            format!("{path}.{name}"),
            validate::text(value, validate::MAX_TEXT_LEN),
        );
    }
    if !item.country_code.is_empty() {
        v.check(
            format!("{path}.country_code"),
            validate::country_code(&item.country_code),
        );
    }
    if !v.is_empty() {
        return Err(v);
    }
    Ok(NumberUpload {
        number: item.number,
        tenant_id,
        capabilities,
        civic_address_id: item.civic_address_id,
        location_id: item.location_id,
        country_code: item.country_code,
    })
}

/// Assignment types on the wire.
pub fn assignment_type(code: i32, field: &str, v: &mut Violations) -> Option<AssignmentType> {
    required_enum(code, field, AssignmentType::from_code, v)
}

/// Number states on the wire, as a filter.
pub fn number_state_filter(code: i32, field: &str, v: &mut Violations) -> Option<NumberState> {
    filter_enum(code, field, NumberState::from_code, v)
}

/// The retention policy on the wire.
pub fn retention_policy(p: RetentionPolicy) -> pb::RetentionPolicy {
    pb::RetentionPolicy {
        call_record_days: p.call_record_days,
        call_duration_days: p.call_duration_days,
        released_number_days: p.released_number_days,
        audit_event_days: p.audit_event_days,
        update_time: opt_timestamp(p.update_time),
    }
}

/// A new retention policy from the wire: every period required and within its bounds.
pub fn retention_policy_in(p: Option<pb::RetentionPolicy>) -> Result<RetentionPolicy, Status> {
    let mut v = Violations::new();
    let Some(p) = p else {
        v.add("policy", "policy is required");
        return Err(v
            .into_result()
            .err()
            .unwrap_or_else(|| Status::invalid_argument("policy is required")));
    };
    let mut days = |field: &str, value: i32, min: i32| {
        if !(min..=RetentionPolicy::MAX_DAYS).contains(&value) {
            v.add(
                format!("policy.{field}"),
                format!(
                    "{value} days: keep it between {min} and {} days",
                    RetentionPolicy::MAX_DAYS
                ),
            );
        }
        value
    };
    let policy = RetentionPolicy {
        call_record_days: days(
            "call_record_days",
            p.call_record_days,
            RetentionPolicy::MIN_DAYS,
        ),
        call_duration_days: days(
            "call_duration_days",
            p.call_duration_days,
            RetentionPolicy::MIN_DAYS,
        ),
        released_number_days: days(
            "released_number_days",
            p.released_number_days,
            RetentionPolicy::MIN_DAYS,
        ),
        audit_event_days: days(
            "audit_event_days",
            p.audit_event_days,
            RetentionPolicy::MIN_AUDIT_DAYS,
        ),
        update_time: None,
    };
    v.into_result()?;
    Ok(policy)
}

/// An audit event on the wire.
pub fn audit_event(e: AuditEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        id: e.id,
        time: Some(timestamp(e.time)),
        key_id: e.key_id,
        carrier_id: e.carrier_id,
        role: e.role,
        rpc: e.rpc,
        resource_kind: e.resource_kind,
        item_count: e.item_count,
        outcome: e.outcome,
        source: e.source,
    }
}

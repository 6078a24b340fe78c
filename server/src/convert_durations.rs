//! Duration reports, reconciliation and usage between the wire and the domain.

use ocx_api::{pb, validate};
use prost_types::Duration;

use crate::convert::{duration, duration_us, micros, not_ahead, timestamp};
use crate::domain::{
    CallDuration, Discrepancy, DurationReport, Micros, ReconciliationChange, ReconciliationEntry,
    ReconciliationPeriod, ReconciliationSummary, UsageRow, now_micros,
};
use crate::error::Violations;

/// Longest accepted duration: 24 hours (µs). Longer is not a phone call but a stuck record.
pub const MAX_DURATION_US: i64 = 24 * 3600 * 1_000_000;
/// Tolerance when the request leaves it unset: 1 s.
pub const DEFAULT_TOLERANCE_US: i64 = 1_000_000;
/// Largest tolerance: 1 hour.
const MAX_TOLERANCE_US: i64 = 3600 * 1_000_000;
/// Longest reconciliation or usage period: 366 days.
const MAX_PERIOD_US: i64 = 366 * 24 * 3600 * 1_000_000;

/// Validates one report whose path is `path` (e.g. `durations[2]`).
pub fn report_in(r: &pb::CallDurationReport, path: &str) -> Result<DurationReport, Violations> {
    let mut v = Violations::new();
    let f = |name: &str| format!("{path}.{name}");
    if r.record_id.is_empty() {
        v.add(
            f("record_id"),
            "record_id is required: the carrier's own id of the record",
        );
    }
    v.check(f("record_id"), validate::text(&r.record_id, 128));
    v.check(f("call_id"), validate::text(&r.call_id, 128));
    v.check(f("correlation_id"), validate::text(&r.correlation_id, 128));
    if r.call_id.is_empty() && r.correlation_id.is_empty() {
        v.add(f("call_id"), "a report needs call_id or correlation_id (or both) to be matched with the platform's record");
    }
    v.check(f("caller_number"), validate::e164(&r.caller_number));
    v.check(f("callee_number"), validate::e164(&r.callee_number));
    let start_time = match &r.start_time {
        None => {
            v.add(f("start_time"), "start_time is required");
            None
        }
        Some(t) => micros(t, &f("start_time"), &mut v),
    };
    if let Some(start) = start_time {
        not_ahead(start, now_micros(), &f("start_time"), &mut v);
    }
    let duration_us = match &r.duration {
        None => {
            v.add(f("duration"), "duration is required");
            None
        }
        Some(d) => duration_us(d, &f("duration"), (MAX_DURATION_US, "24 hours"), &mut v),
    };
    match (start_time, duration_us) {
        (Some(start_time), Some(duration_us)) if v.is_empty() => Ok(DurationReport {
            record_id: r.record_id.clone(),
            call_id: r.call_id.clone(),
            correlation_id: r.correlation_id.clone(),
            caller_number: r.caller_number.clone(),
            callee_number: r.callee_number.clone(),
            start_time,
            duration_us,
        }),
        _ => Err(v),
    }
}

/// A stored report to the wire.
pub fn call_duration(d: CallDuration) -> pb::CallDuration {
    let r = d.report;
    pb::CallDuration {
        record_id: r.record_id,
        carrier_id: d.carrier_id,
        call_id: r.call_id,
        correlation_id: r.correlation_id,
        caller_number: r.caller_number,
        callee_number: r.callee_number,
        start_time: Some(timestamp(r.start_time)),
        duration: Some(duration(r.duration_us)),
        corrections: d.corrections,
        create_time: Some(timestamp(d.create_time)),
        update_time: Some(timestamp(d.update_time)),
    }
}

/// Validates a period: both ends required, end after start, at most 366 days.
pub fn period(
    start: &Option<prost_types::Timestamp>,
    end: &Option<prost_types::Timestamp>,
    v: &mut Violations,
) -> Option<(Micros, Micros)> {
    let mut one = |t: &Option<prost_types::Timestamp>, name: &str| match t {
        None => {
            v.add(name, format!("{name} is required"));
            None
        }
        Some(t) => micros(t, name, v),
    };
    // Both ends are checked before giving up, so every violation is reported at once.
    let (s, e) = (one(start, "start_time"), one(end, "end_time"));
    let (s, e) = (s?, e?);
    if e <= s {
        v.add("end_time", "end_time must be after start_time");
        return None;
    }
    if e - s > MAX_PERIOD_US {
        v.add(
            "end_time",
            "the period is longer than 366 days; ask for shorter periods",
        );
        return None;
    }
    Some((s, e))
}

/// Validates a tolerance (default 1 s, 0 to 1 hour).
pub fn tolerance(t: &Option<Duration>, v: &mut Violations) -> i64 {
    let Some(t) = t else {
        return DEFAULT_TOLERANCE_US;
    };
    let Some(us) = duration_us(t, "tolerance", (MAX_TOLERANCE_US, "1 hour"), v) else {
        return DEFAULT_TOLERANCE_US;
    };
    // The summary echoes the tolerance it used: it must be the one asked for, to the digit.
    if t.nanos % 1000 != 0 {
        v.add(
            "tolerance",
            "must be whole microseconds (OCX compares durations to the microsecond)",
        );
        return DEFAULT_TOLERANCE_US;
    }
    us
}

/// A summary to the wire.
pub fn summary(p: &ReconciliationPeriod, s: ReconciliationSummary) -> pb::ReconciliationSummary {
    let calls = s.matched + s.mismatched + s.missing_on_carrier + s.missing_on_platform;
    pb::ReconciliationSummary {
        start_time: Some(timestamp(p.start)),
        end_time: Some(timestamp(p.end)),
        tolerance: Some(duration(p.tolerance_us)),
        platform_count: s.platform_count,
        platform_duration: Some(duration(s.platform_duration_us)),
        carrier_count: s.carrier_count,
        carrier_duration: Some(duration(s.carrier_duration_us)),
        matched_count: s.matched,
        mismatched_count: s.mismatched,
        missing_on_carrier_count: s.missing_on_carrier,
        missing_on_platform_count: s.missing_on_platform,
        agreement_rate: if calls == 0 {
            1.0
        } else {
            s.matched as f64 / calls as f64
        },
    }
}

/// A discrepancy to the wire.
pub fn discrepancy(d: Discrepancy) -> pb::Discrepancy {
    pb::Discrepancy {
        kind: d.kind.code(),
        call_id: d.call_id,
        correlation_id: d.correlation_id,
        record_id: d.record_id,
        start_time: Some(timestamp(d.start_time)),
        caller_number: d.caller_number,
        callee_number: d.callee_number,
        platform_duration: d.platform_duration_us.map(duration),
        carrier_duration: d.carrier_duration_us.map(duration),
    }
}

/// A change of a carrier's reconciliation to the wire, its state under `tolerance_us`.
pub fn change(c: ReconciliationChange, tolerance_us: i64) -> pb::ReconciliationChange {
    let state = if c.removed {
        pb::ReconciliationState::Removed
    } else {
        match (c.platform_duration_us, c.carrier_duration_us) {
            (Some(p), Some(d)) if p.abs_diff(d) <= tolerance_us.unsigned_abs() => {
                pb::ReconciliationState::Matched
            }
            (Some(_), Some(_)) => pb::ReconciliationState::Mismatched,
            (Some(_), None) => pb::ReconciliationState::MissingOnCarrier,
            (None, _) => pb::ReconciliationState::MissingOnPlatform,
        }
    };
    let entry = match c.entry {
        ReconciliationEntry::Record => pb::ReconciliationEntry::PlatformRecord,
        ReconciliationEntry::Report => pb::ReconciliationEntry::CarrierReport,
    };
    pb::ReconciliationChange {
        sequence: c.sequence,
        entry: entry.into(),
        state: state.into(),
        call_id: c.call_id,
        correlation_id: c.correlation_id,
        record_id: c.record_id,
        start_time: Some(timestamp(c.start_time)),
        platform_duration: c.platform_duration_us.map(duration),
        carrier_duration: c.carrier_duration_us.map(duration),
    }
}

/// A usage row to the wire.
pub fn usage_row(r: UsageRow) -> pb::UsageRow {
    let platform_count = r.calls - r.operator_count;
    let source = match (r.operator_count, platform_count) {
        (_, 0) => pb::DurationSource::Operator,
        (0, _) => pb::DurationSource::Platform,
        _ => pb::DurationSource::Mixed,
    };
    pb::UsageRow {
        day: r.day,
        number: r.number,
        direction: r.direction.map_or(0, |d| d.code()),
        call_count: r.calls,
        total_duration: Some(duration(r.duration_us)),
        source: source as i32,
        operator_count: r.operator_count,
        platform_count,
    }
}

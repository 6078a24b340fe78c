//! `convert_durations::{period, tolerance}` on any `GetReconciliationSummaryRequest` the bytes
//! decode to: no panic; a period is accepted only with a positive length up to 366 days and is
//! otherwise refused with violations of its ends; a tolerance is always from 0 to 1 hour, the
//! default when unset or refused.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ocx_api::pb;
use ocx_server::convert_durations::{DEFAULT_TOLERANCE_US, period, tolerance};
use ocx_server::error::Violations;
use prost::Message;

/// Longest period: 366 days (µs).
const MAX_PERIOD_US: i64 = 366 * 24 * 3600 * 1_000_000;

/// Longest tolerance: one hour (µs).
const MAX_TOLERANCE_US: i64 = 3600 * 1_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = pb::GetReconciliationSummaryRequest::decode(data) else {
        return;
    };
    let mut v = Violations::new();
    match period(&request.start_time, &request.end_time, &mut v) {
        Some((start, end)) => {
            assert!(v.is_empty());
            assert!(
                start < end && end - start <= MAX_PERIOD_US,
                "{start}..{end}"
            );
        }
        None => {
            let pairs = v.into_pairs();
            assert!(!pairs.is_empty(), "a period refused without a violation");
            assert!(
                pairs
                    .iter()
                    .all(|(field, _)| field == "start_time" || field == "end_time")
            );
        }
    }

    let mut v = Violations::new();
    let us = tolerance(&request.tolerance, &mut v);
    assert!((0..=MAX_TOLERANCE_US).contains(&us), "{us}");
    let pairs = v.into_pairs();
    if request.tolerance.is_none() || !pairs.is_empty() {
        assert_eq!(us, DEFAULT_TOLERANCE_US);
    }
    assert!(pairs.iter().all(|(field, _)| field == "tolerance"));
});

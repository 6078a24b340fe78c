//! `convert_durations::report_in` on any `CallDurationReport` the bytes decode to: no panic;
//! every violation under the report's path; an accepted report reads back
//! (`call_duration`) with every field as sent.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ocx_api::pb;
use ocx_fuzz::{PATH, duration_to_micros, fields_under, to_micros};
use ocx_server::convert_durations::{MAX_DURATION_US, call_duration, report_in};
use ocx_server::domain::CallDuration;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(sent) = pb::CallDurationReport::decode(data) else {
        return;
    };
    let report = match report_in(&sent, PATH) {
        Err(v) => {
            fields_under(v, PATH);
            return;
        }
        Ok(report) => report,
    };
    assert!((0..=MAX_DURATION_US).contains(&report.duration_us));
    let back = call_duration(CallDuration {
        report,
        carrier_id: "contoso".into(),
        corrections: 0,
        create_time: 0,
        update_time: 0,
    });
    assert_eq!(back.record_id, sent.record_id);
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

//! `convert_calls::call_record_in` on any `CallRecord` the bytes decode to: no panic; every
//! violation under the record's path; an accepted record read back (`call_record`) and sent
//! again is accepted as the same record.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ocx_api::pb;
use ocx_fuzz::{PATH, fields_under, without_output_fields};
use ocx_server::convert_calls::{call_record, call_record_in};
use prost::Message;

/// The longest call `call_record_in` accepts in a `duration` field: seven days (µs).
const MAX_CALL_US: i64 = 7 * 24 * 3600 * 1_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = pb::CallRecord::decode(data) else {
        return;
    };
    let domain = match call_record_in(&record, PATH) {
        Err(v) => {
            fields_under(v, PATH);
            return;
        }
        Ok(domain) => domain,
    };
    // A duration derived from start and end obeys the same limit as one that was sent.
    assert!(domain.duration_us <= MAX_CALL_US, "a call longer than seven days was accepted");
    let again = without_output_fields(call_record(domain.clone()));
    let mut twice = match call_record_in(&again, PATH) {
        Ok(twice) => twice,
        Err(v) => panic!("a record read back is refused: {:?}", v.into_pairs()),
    };
    // The hash is of the bytes sent, and those differ (times cut to µs, derived duration).
    twice.content_hash = domain.content_hash;
    assert_eq!(twice, domain);
});

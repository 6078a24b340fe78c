//! Every validator of `ocx_api::validate` on arbitrary text: no panic, `quote` bounded and
//! escaped, the simple validators as documented, `normalize_tenant_id` idempotent.
//!
//! Bytes that are not UTF-8 are decoded lossily: the validators take `&str`, and U+FFFD is one
//! more multi-byte character to meet.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ocx_fuzz::check_validators(&String::from_utf8_lossy(data));
});

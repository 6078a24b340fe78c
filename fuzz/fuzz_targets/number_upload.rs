//! `convert::number_upload` on any `NumberUpload` the bytes decode to: no panic; rejected exactly
//! when a field breaks its documented rule, with every violation under the item's path; an
//! accepted item keeps what was sent.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ocx_api::pb;
use ocx_api::validate::MAX_TEXT_LEN;
use ocx_fuzz::{PATH, country_code_rule, e164_rule, fields_under, tenant_id_rule, text_rule};
use ocx_server::convert::number_upload;
use ocx_server::domain::Capability;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(item) = pb::NumberUpload::decode(data) else {
        return;
    };
    let valid = e164_rule(&item.number)
        && tenant_id_rule(&item.tenant_id)
        && item.capabilities.iter().all(|c| (1..=6).contains(c))
        && text_rule(&item.civic_address_id, MAX_TEXT_LEN)
        && text_rule(&item.location_id, MAX_TEXT_LEN)
        && (item.country_code.is_empty() || country_code_rule(&item.country_code));
    match number_upload(item.clone(), PATH) {
        Err(v) => {
            fields_under(v, PATH);
            assert!(!valid, "a valid item was rejected: {item:?}");
        }
        Ok(upload) => {
            assert!(valid, "an invalid item was accepted: {item:?}");
            let mut codes = item.capabilities.clone();
            codes.sort_unstable();
            codes.dedup();
            let kept: Vec<i32> = upload.capabilities.iter().map(|c| c.code()).collect();
            if codes.is_empty() {
                assert_eq!(upload.capabilities, Capability::DEFAULTS.to_vec());
            } else {
                assert_eq!(kept, codes);
            }
            assert_eq!(upload.number, item.number);
            assert_eq!(upload.tenant_id, item.tenant_id.to_ascii_lowercase());
            assert_eq!(upload.civic_address_id, item.civic_address_id);
            assert_eq!(upload.location_id, item.location_id);
            assert_eq!(upload.country_code, item.country_code);
        }
    }
});

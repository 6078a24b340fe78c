//! Flag value checks: early feedback, in the same words the server would use, from the
//! contract's own validators (`ocx_api::validate`), as clap value parsers.

use ocx_api::validate;

/// Adapts a validator from `ocx_api::validate` to a clap value parser.
fn checked(value: &str, check: fn(&str) -> Result<(), String>) -> Result<String, String> {
    check(value).map(|()| value.to_owned())
}

/// An E.164 number.
pub fn e164(value: &str) -> Result<String, String> {
    checked(value, validate::e164)
}

/// A tenant GUID.
pub fn tenant_id(value: &str) -> Result<String, String> {
    checked(value, validate::tenant_id)
}

/// A carrier id.
pub fn carrier_id(value: &str) -> Result<String, String> {
    checked(value, validate::carrier_id)
}

/// A `sip:` URI.
pub fn sip_uri(value: &str) -> Result<String, String> {
    checked(value, validate::sip_uri)
}

/// An ISO 3166-1 alpha-2 country code.
pub fn country_code(value: &str) -> Result<String, String> {
    checked(value, validate::country_code)
}

/// An RFC 3339 UTC time as a protobuf timestamp.
pub fn rfc3339(value: &str) -> Result<prost_types::Timestamp, String> {
    humantime::parse_rfc3339(value)
        .map(prost_types::Timestamp::from)
        .map_err(|e| format!("{e}: expected an RFC 3339 UTC time such as 2024-05-01T00:00:00Z"))
}

//! Page sizes and page tokens (AIP-158).
//!
//! Lists are keyset-paginated: a token carries the sort key of the last item served, so a page
//! is `WHERE key > last ORDER BY key LIMIT n`. Items that exist throughout a listing are served
//! exactly once however the data changes between pages. The token also carries a fingerprint of
//! the request's filters: reusing it with other filters is INVALID_ARGUMENT, as AIP-158 asks.
//! Tokens are opaque to clients (hex of a small text), not secret: the scope of a listing always
//! comes from the caller's key, never from the token.

use tonic::Status;

use crate::error::{Violations, invalid};

/// The page size to use: 0 means the default (or `max`, if smaller); above `max` is clamped to
/// `max` (AIP-158: a page size is a ceiling the server may lower, and a client that asks for
/// "everything you can" should get the largest page, not an error); negative is invalid.
pub fn page_size(requested: i32, max: usize, violations: &mut Violations) -> usize {
    let default = ocx_api::DEFAULT_PAGE_SIZE.min(max);
    match usize::try_from(requested) {
        Ok(0) => default,
        Ok(n) => n.min(max),
        Err(_) => {
            violations.add(
                "page_size",
                format!(
                    "page_size must not be negative (0 means {default}; larger than {max} is served as {max})"
                ),
            );
            default
        }
    }
}

/// FNV-1a, enough to notice that filters changed between pages.
fn fingerprint(filters: &str) -> u64 {
    filters.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The token for the page after `last_key`, under `filters` (any stable text of the filters).
pub fn encode(filters: &str, last_key: &str) -> String {
    hex::encode(format!("{:016x}{last_key}", fingerprint(filters)))
}

/// The last key a token names, or INVALID_ARGUMENT if it is not ours or the filters changed.
pub fn decode(filters: &str, token: &str) -> Result<Option<String>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || {
        invalid(
            "page_token",
            "page_token is not a token this list returned; start again with an empty token",
        )
    };
    let text = hex::decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    let (fp, key) = text.split_at_checked(16).ok_or_else(bad)?;
    if fp != format!("{:016x}", fingerprint(filters)) {
        return Err(invalid(
            "page_token",
            "page_token was issued for different filters; repeat the filters of the first page or start again",
        ));
    }
    Ok(Some(key.to_owned()))
}

/// The `next_page_token` for a page: empty when there is no more.
pub fn next_token<T>(
    page: &crate::domain::Page<T>,
    filters: &str,
    key: impl Fn(&T) -> &str,
) -> String {
    match page.items.last() {
        Some(last) if page.more => encode(filters, key(last)),
        _ => String::new(),
    }
}

/// The cursor inside a page token of call records or duration reports: `start_micros:id`.
pub fn time_and_id(key: &str) -> Result<(i64, i64), Status> {
    key.split_once(':')
        .and_then(|(s, i)| Some((s.parse().ok()?, i.parse().ok()?)))
        .ok_or_else(|| invalid("page_token", "page_token is not a token this list returned"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_default_clamp_and_refuse_negatives() {
        let mut v = Violations::default();
        assert_eq!(page_size(0, 1000, &mut v), ocx_api::DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(0, 5, &mut v), 5);
        assert_eq!(page_size(7, 1000, &mut v), 7);
        assert_eq!(page_size(1001, 1000, &mut v), 1000);
        assert_eq!(page_size(i32::MAX, 1000, &mut v), 1000);
        assert!(v.is_empty());
        page_size(-1, 1000, &mut v);
        assert!(!v.is_empty());
    }

    #[test]
    fn tokens_round_trip_and_bind_filters() {
        let t = encode("tenant=a", "+4420");
        assert_eq!(
            decode("tenant=a", &t).ok().flatten().as_deref(),
            Some("+4420")
        );
        assert!(decode("tenant=b", &t).is_err());
        assert!(decode("tenant=a", "zz").is_err());
        assert_eq!(decode("x", "").ok().flatten(), None);
    }
}

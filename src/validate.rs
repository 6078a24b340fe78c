//! Format checks shared by the server (authoritative), the SDK and the CLI (early feedback).
//!
//! Each check returns `Err(description)` with a sentence a person can act on; callers attach
//! the field path. They are hand-written rather than regexes: the formats are small, and this
//! keeps a regex engine out of every client.

/// Longest SIP URI accepted (RFC 3261 sets no limit; Teams' own limit is far below this).
pub const MAX_SIP_URI_LEN: usize = 512;
/// Longest free-text field (names, labels, address ids).
pub const MAX_TEXT_LEN: usize = 200;

/// Longest part of a rejected value quoted back in an error message: long enough to recognise,
/// short enough that a huge value cannot swell the response (gRPC trailers are size-limited).
pub const MAX_QUOTED: usize = 40;

/// `value` Debug-quoted for an error message, cut to [`MAX_QUOTED`] characters.
pub fn quote(value: &str) -> String {
    if value.chars().count() <= MAX_QUOTED {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(MAX_QUOTED).collect();
        format!("{head:?}… ({} characters)", value.chars().count())
    }
}

/// E.164: `+`, then 2 to 15 digits, the first not `0` (`^\+[1-9]\d{1,14}$`).
pub fn e164(number: &str) -> Result<(), String> {
    let shown = quote(number);
    let digits = number.strip_prefix('+').ok_or_else(|| {
        format!("{shown} is not an E.164 number: it must start with '+' then the country code")
    })?;
    let ok = (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{shown} is not an E.164 number: expected '+' and 2 to 15 digits, the first not 0"
        ))
    }
}

/// Whether `id` is a GUID (a UUID): `8-4-4-4-12` hexadecimal digits, either case.
pub fn is_guid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    groups.len() == lens.len()
        && groups
            .iter()
            .zip(lens)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A Microsoft Entra tenant id: a GUID written `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex).
pub fn tenant_id(id: &str) -> Result<(), String> {
    let shown = quote(id);
    if id.is_empty() {
        return Err(
            "tenant id is required (a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47)".into(),
        );
    }
    if is_guid(id) {
        Ok(())
    } else {
        Err(format!(
            "{shown} is not a tenant id: expected a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47"
        ))
    }
}

/// Normal form of a tenant id (GUIDs compare case-insensitively; we store lower case).
pub fn normalize_tenant_id(id: &str) -> String {
    id.to_ascii_lowercase()
}

/// A `sip:` or `sips:` URI with a user part and a host: `sip:alice@contoso.com[:port][;params]`.
pub fn sip_uri(uri: &str) -> Result<(), String> {
    let shown = quote(uri);
    let fail = |why: &str| {
        Err(format!(
            "{shown} is not a SIP URI: {why} (e.g. sip:alice@contoso.com)"
        ))
    };
    if uri.is_empty() {
        return Err("a SIP URI is required (e.g. sip:alice@contoso.com)".into());
    }
    if uri.len() > MAX_SIP_URI_LEN {
        return fail(&format!("longer than {MAX_SIP_URI_LEN} characters"));
    }
    let lower = uri.to_ascii_lowercase();
    let rest = if let Some(r) = lower.strip_prefix("sips:") {
        r
    } else if let Some(r) = lower.strip_prefix("sip:") {
        r
    } else {
        return fail("it must start with 'sip:' or 'sips:'");
    };
    if rest
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return fail("it contains whitespace or control characters");
    }
    let Some((user, host_part)) = rest.split_once('@') else {
        return fail("it needs a user part and a host separated by '@'");
    };
    if user.is_empty() {
        return fail("the user part is empty");
    }
    let host_port = host_part.split(';').next().unwrap_or_default();
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
        _ => (host_port, None),
    };
    if let Some(port) = port
        && !matches!(port.parse::<u16>(), Ok(p) if p > 0)
    {
        return fail("the port is not a number from 1 to 65535");
    }
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !host_ok {
        return fail("the host is not a valid domain name");
    }
    Ok(())
}

/// ISO 3166-1 alpha-2 format: two upper-case letters.
pub fn country_code(code: &str) -> Result<(), String> {
    let shown = quote(code);
    if code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!(
            "{shown} is not an ISO 3166-1 alpha-2 country code: expected two upper-case letters such as GB"
        ))
    }
}

/// A carrier id: 3 to 63 of `a-z`, `0-9`, `-`, starting with a letter, not ending with `-`.
pub fn carrier_id(id: &str) -> Result<(), String> {
    let shown = quote(id);
    let ok = (3..=63).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{shown} is not a carrier id: use 3 to 63 characters of a-z, 0-9 and '-', starting with a letter"
        ))
    }
}

/// Free text: at most [`MAX_TEXT_LEN`] characters, no control characters.
pub fn text(value: &str, max: usize) -> Result<(), String> {
    if value.chars().count() > max {
        return Err(format!("at most {max} characters are allowed"));
    }
    if value.chars().any(char::is_control) {
        return Err("control characters are not allowed".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_accepts_and_rejects() {
        for ok in ["+14255550100", "+44", "+123456789012345"] {
            assert!(e164(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "14255550100",
            "+0123",
            "+1",
            "+1234567890123456",
            "+1 425",
            "+1a",
        ] {
            assert!(e164(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sip_uris() {
        for ok in [
            "sip:alice@contoso.com",
            "sips:bob@contoso.com:5061;transport=tls",
            "SIP:a@b",
        ] {
            assert!(sip_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "alice@contoso.com",
            "sip:@contoso.com",
            "sip:alice",
            "sip:a@",
            "sip:a b@c.com",
            "sip:a@c..com",
            "sip:a@c.com:0",
            "sip:a@c.com:99999",
        ] {
            assert!(sip_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tenant_ids() {
        assert!(tenant_id("72f988bf-86f1-41af-91ab-2d7cd011db47").is_ok());
        assert!(tenant_id("72F988BF-86F1-41AF-91AB-2D7CD011DB47").is_ok());
        for bad in [
            "",
            "72f988bf86f141af91ab2d7cd011db47",
            "72f988bf-86f1-41af-91ab-2d7cd011db4g",
            "x",
        ] {
            assert!(tenant_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn carrier_ids_and_countries() {
        assert!(carrier_id("contoso-telecom").is_ok());
        for bad in ["ab", "1abc", "Abc", "abc-", "a_bc"] {
            assert!(carrier_id(bad).is_err(), "{bad}");
        }
        assert!(country_code("GB").is_ok());
        assert!(country_code("gb").is_err());
        assert!(country_code("GBR").is_err());
    }
}

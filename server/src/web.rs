//! Browsers and gRPC-Web clients. gRPC-Web (tonic-web) is served on the same listener as
//! gRPC, over HTTP/1.1 as well as HTTP/2, and translated to gRPC before the gate, so a
//! gRPC-Web call passes the same keys, limits, roles and audit as any other; server streams
//! (the feeds) work over it.
//!
//! CORS answers browsers for the origins the operator lists (`--cors-origin`), none by default:
//! then `Access-Control-Allow-Origin` is never sent (preflights still get the other CORS
//! headers), so a page on another origin cannot call OCX (its browser refuses), while clients
//! that are not browsers (`buf curl --protocol grpcweb`, proxies) can. With TLS the listener
//! offers HTTP/2 only (ALPN `h2`); plaintext serves HTTP/1.1 too.
//! The allowed request headers are those gRPC-Web sends (the key in `authorization`); the
//! exposed ones are the status trailers a browser client must read.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may keep a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// Headers a gRPC-Web client sends.
const REQUEST_HEADERS: [&str; 8] = [
    "authorization",
    "content-type",
    "grpc-timeout",
    "x-grpc-web",
    "x-user-agent",
    "x-request-id",
    // W3C Trace Context: a browser's span joins the server's (see `telemetry`).
    "traceparent",
    "tracestate",
];

/// Headers a browser client must be allowed to read: the call's status and its details.
const EXPOSED_HEADERS: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// Whether `origin` is an origin as browsers send it: `scheme://host[:port]`, nothing after.
pub fn is_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', ' ', '*'])
        && HeaderValue::from_str(origin).is_ok()
}

/// The CORS layer for `origins` (each checked with [`is_origin`]; others are left out).
pub fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter(|o| is_origin(o))
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::POST])
        .allow_headers(REQUEST_HEADERS.map(HeaderName::from_static))
        .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static))
        .max_age(PREFLIGHT_MAX_AGE)
}

#[cfg(test)]
mod tests {
    use super::is_origin;

    #[test]
    fn an_origin_is_a_scheme_and_a_host_and_nothing_else() {
        for ok in [
            "https://noc.carrier.example",
            "http://localhost:3000",
            "https://[::1]:8443",
        ] {
            assert!(is_origin(ok), "{ok}");
        }
        for bad in [
            "",
            "*",
            "noc.carrier.example",
            "https://",
            "https://noc.carrier.example/",
            "https://a.example/path",
            "ftp://a.example",
            "https://*.example",
        ] {
            assert!(!is_origin(bad), "{bad}");
        }
    }
}

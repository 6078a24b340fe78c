//! # ocx-api
//!
//! The OCX contract (`proto/ocx/v1/*.proto`, package `ocx.v1`) compiled to Rust, shared by the
//! server, the client SDK and the `ocx` command-line tool.
//!
//! ## Layout
//! - [`pb`]: the generated messages, clients and servers (tonic + prost), untouched.
//! - [`codec`]: the servers' codec (a request that cannot be decoded is INVALID_ARGUMENT).
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, served by gRPC reflection.
//! - [`validate`]: the format checks every side agrees on (E.164, SIP URI, tenant id, ...).
//! - [`metadata`]: wire constants (header names).

pub mod codec;
pub mod validate;

/// Generated code for package `ocx.v1`. Kept in its own module so lints stay off it.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("ocx.v1");
    include!(concat!(env!("OUT_DIR"), "/servers/ocx.v1.rs"));
}

/// The encoded `FileDescriptorSet` of every `.proto` in `proto/`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ocx_descriptor");

/// Names that appear on the wire, written once.
pub mod metadata {
    /// The metadata key that carries `Bearer <key>`.
    pub const AUTHORIZATION: &str = "authorization";
    /// The scheme prefix of the authorization value.
    pub const BEARER_PREFIX: &str = "Bearer ";

    /// The token of an authorization value `Bearer <token>`: the scheme in any case
    /// (RFC 7235 makes it case-insensitive), one or more spaces, the token without the spaces
    /// around it. `None` for another scheme or no token.
    pub fn bearer_token(value: &str) -> Option<&str> {
        let (scheme, token) = value.trim_start().split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    }

    #[cfg(test)]
    mod tests {
        use super::bearer_token;

        #[test]
        fn the_scheme_is_case_insensitive_and_the_token_is_trimmed() {
            for value in [
                "Bearer t",
                "bearer t",
                "BEARER t",
                "bEaReR   t ",
                " Bearer t",
            ] {
                assert_eq!(bearer_token(value), Some("t"), "{value:?}");
            }
            for value in ["Basic t", "Bearer", "Bearer ", "Bearert", "", "t"] {
                assert_eq!(bearer_token(value), None, "{value:?}");
            }
        }
    }
}

/// Largest number of items one batch (numbers uploaded or released, call records ingested,
/// durations reported) may carry by default; servers may set another with `--max-batch`.
pub const MAX_BATCH_ITEMS: usize = 1000;
/// Page size used when a list request leaves `page_size` at 0.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest `page_size` a list request may ask for.
pub const MAX_PAGE_SIZE: usize = 1000;

/// The requests that carry a `request_id` (AIP-155): every unary write. Lets the SDK set one
/// and the server take it out, the same way for each.
pub trait RequestId {
    /// The request's `request_id` field.
    fn request_id_mut(&mut self) -> &mut String;
}

macro_rules! request_id {
    ($($t:ident),* $(,)?) => {$(
        impl RequestId for pb::$t {
            fn request_id_mut(&mut self) -> &mut String {
                &mut self.request_id
            }
        }
    )*};
}

request_id!(
    CreateCarrierRequest,
    CreateApiKeyRequest,
    RevokeApiKeyRequest,
    SetRetentionPolicyRequest,
    PurgeExpiredDataRequest,
    EraseTenantDataRequest,
    GrantConsentRequest,
    RevokeConsentRequest,
    UploadNumbersRequest,
    ReleaseNumbersRequest,
    AssignNumberRequest,
    UnassignNumberRequest,
    ReportCallDurationsRequest,
);

//! The SDK's one error type: what a call can fail with, and the conversion from a gRPC status
//! that keeps the server's field violations (`google.rpc.BadRequest`) so callers can point at
//! the exact field, e.g. `numbers[3].number`.

use tonic::Code;
use tonic_types::StatusExt;

/// One invalid field reported by the server in a `google.rpc.BadRequest` detail.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldViolation {
    /// Path of the offending field from the request root, e.g. `numbers[3].number`.
    pub field: String,
    /// What is wrong and how to fix it, written for a person.
    pub description: String,
}

/// Why an SDK call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with a non-OK status.
    #[error("{code:?}: {message}")]
    Status {
        /// The gRPC status code.
        code: Code,
        /// The status message, for a person.
        message: String,
        /// The invalid fields, when the server attached a `google.rpc.BadRequest`; else empty.
        violations: Vec<FieldViolation>,
    },
    /// Could not connect / transport failure.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The endpoint string or the key cannot be used (e.g. key has characters not valid in a
    /// header).
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    /// The gRPC status code, if the server (or the channel on its behalf) answered with one.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Status { code, .. } => Some(*code),
            Error::Transport(_) | Error::Config(_) => None,
        }
    }

    /// The field violations the server reported; empty for anything but `INVALID_ARGUMENT`-like
    /// statuses that carry a `google.rpc.BadRequest`.
    pub fn violations(&self) -> &[FieldViolation] {
        match self {
            Error::Status { violations, .. } => violations,
            Error::Transport(_) | Error::Config(_) => &[],
        }
    }

    /// An `INTERNAL` error for a response that is missing a field the contract promises.
    pub(crate) fn missing(what: &str) -> Error {
        Error::Status {
            code: Code::Internal,
            message: format!("server response lacked {what}"),
            violations: Vec::new(),
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Error {
        // Undecodable details are not worth failing over: the code and message still stand.
        let violations = status
            .get_error_details()
            .bad_request()
            .map(|bad| {
                bad.field_violations
                    .iter()
                    .map(|v| FieldViolation {
                        field: v.field.clone(),
                        description: v.description.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Error::Status {
            code: status.code(),
            message: status.message().to_owned(),
            violations,
        }
    }
}

/// The SDK's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::ErrorDetails;

    #[test]
    fn status_with_bad_request_keeps_every_violation() {
        let mut details =
            ErrorDetails::with_bad_request_violation("numbers[0].number", "not E.164");
        details.add_bad_request_violation("numbers[2].tenant_id", "not a GUID");
        let status = tonic::Status::with_error_details(Code::InvalidArgument, "bad batch", details);

        let error = Error::from(status);
        assert_eq!(error.code(), Some(Code::InvalidArgument));
        assert_eq!(error.to_string(), "InvalidArgument: bad batch");
        assert_eq!(
            error.violations(),
            [
                FieldViolation {
                    field: "numbers[0].number".into(),
                    description: "not E.164".into(),
                },
                FieldViolation {
                    field: "numbers[2].tenant_id".into(),
                    description: "not a GUID".into(),
                },
            ]
        );
    }

    #[test]
    fn status_without_details_has_no_violations() {
        let error = Error::from(tonic::Status::not_found("no such number"));
        assert_eq!(error.code(), Some(Code::NotFound));
        assert!(error.violations().is_empty());
    }
}

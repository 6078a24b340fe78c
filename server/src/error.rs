//! Errors to gRPC statuses: the one place where a failure becomes a code and a message.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::store::StoreError;

/// Maps a store error to a status. Exhaustive on purpose: a new variant must be placed here.
/// Internal errors are logged with their cause and returned opaque.
pub fn store_status(error: StoreError) -> Status {
    match error {
        StoreError::NotFound(m) => Status::not_found(m),
        StoreError::InvalidArgument(m) => Status::invalid_argument(m),
        StoreError::AlreadyExists(m) => Status::already_exists(m),
        StoreError::FailedPrecondition(m) => Status::failed_precondition(m),
        StoreError::Unavailable(m) => {
            tracing::warn!(error = %m, "store unavailable");
            Status::unavailable(format!("{m}; retry later"))
        }
        StoreError::Cancelled(m) => Status::cancelled(m),
        StoreError::Internal(m) => {
            tracing::error!(error = %m, "internal store error");
            Status::internal("internal error; it has been logged")
        }
    }
}

/// Collects every invalid field of a request, so the caller hears of all of them at once.
#[derive(Debug, Default)]
pub struct Violations {
    /// (field path, description) pairs, in the order found.
    items: Vec<FieldViolation>,
}

impl Violations {
    /// An empty set.
    pub fn new() -> Violations {
        Violations::default()
    }

    /// Records a violation of `field`.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.items.push(FieldViolation::new(field, description));
    }

    /// Records `check`'s error, if any, against `field`.
    pub fn check(&mut self, field: impl Into<String>, check: Result<(), String>) {
        if let Err(description) = check {
            self.add(field, description);
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// `value` if nothing was recorded; otherwise these violations.
    pub fn into_value<T>(self, value: T) -> Result<T, Violations> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    /// The recorded violations as (field, description) pairs.
    pub fn into_pairs(self) -> Vec<(String, String)> {
        self.items
            .into_iter()
            .map(|v| (v.field, v.description))
            .collect()
    }

    /// `Ok` if empty; otherwise INVALID_ARGUMENT with a `google.rpc.BadRequest` listing them.
    pub fn into_result(self) -> Result<(), Status> {
        if self.items.is_empty() {
            return Ok(());
        }
        let summary = self
            .items
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect::<Vec<_>>()
            .join("; ");
        let details = ErrorDetails::with_bad_request(self.items);
        Err(Status::with_error_details(
            Code::InvalidArgument,
            summary,
            details,
        ))
    }
}

/// INVALID_ARGUMENT for one field.
pub fn invalid(field: &str, description: impl Into<String>) -> Status {
    let mut v = Violations::new();
    v.add(field, description);
    v.into_result()
        .err()
        .unwrap_or_else(|| Status::invalid_argument("invalid request"))
}

//! Store errors and refusals to gRPC statuses: the one place where the store's answers get a
//! code and words (the gate, the stream plumbing and the handlers' field checks word their
//! own refusals, of the request rather than of the data).

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::domain::{CallDirection, Refusal};
use crate::store::StoreError;

/// Maps a store error to a status. Exhaustive on purpose: a new variant must be placed here.
/// Internal errors are logged with their cause and returned opaque.
pub fn store_status(error: StoreError) -> Status {
    match error {
        StoreError::Refused(r) => Status::new(refusal_code(&r), refusal(&r)),
        StoreError::InvalidArgument(m) => Status::invalid_argument(m),
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

/// The status code of a refusal that fails a whole call.
pub fn refusal_code(r: &Refusal) -> Code {
    match r {
        Refusal::CarrierExists { .. } | Refusal::RequestIdReused { .. } => Code::AlreadyExists,
        Refusal::CarrierNotFound { .. }
        | Refusal::KeyNotFound { .. }
        | Refusal::ConsentNotFound { .. }
        | Refusal::NumberNotProvisioned { .. } => Code::NotFound,
        // The rest refuse one item of a batch (its result says why) or a call the current
        // state forbids.
        Refusal::NumberReleased { .. }
        | Refusal::NumberNotInTenant { .. }
        | Refusal::NoConsent { .. }
        | Refusal::ConsentInactive { .. }
        | Refusal::CountryRequired { .. }
        | Refusal::CountryNotConsented { .. }
        | Refusal::NumberUnavailable
        | Refusal::NumberAssignedInTenant { .. }
        | Refusal::NumberNotFound
        | Refusal::NumberStillAssigned
        | Refusal::UnknownCarrier { .. }
        | Refusal::NoCarrierForNumber { .. }
        | Refusal::OlderVersion { .. }
        | Refusal::VersionConflict { .. }
        | Refusal::InWords(_) => Code::FailedPrecondition,
    }
}

/// A refusal reads as its words wherever it is shown (logs, the command line, panics).
impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&refusal(self))
    }
}

/// A request-id record keeps a refusal in its words: a replay answers word for word, and
/// servers from before refusals were typed (which recorded a string) read the same records.
impl serde::Serialize for Refusal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&refusal(self))
    }
}

/// A refusal in words a person can act on: the only place they are written.
pub fn refusal(r: &Refusal) -> String {
    match r {
        Refusal::CarrierExists { carrier_id } => format!("carrier {carrier_id:?} already exists"),
        Refusal::CarrierNotFound { carrier_id } => format!("carrier {carrier_id:?} not found"),
        Refusal::KeyNotFound { key_id } => format!("API key {key_id:?} not found"),
        Refusal::ConsentNotFound {
            carrier_id,
            tenant_id,
        } => format!("tenant {tenant_id} has no consent for carrier {carrier_id:?}"),
        Refusal::RequestIdReused { request_id, rpc } => format!(
            "request_id {request_id} was already used by this API key for a different request ({rpc}); \
             use a new request_id for a new request"
        ),
        Refusal::NoConsent { tenant_id } => {
            format!("tenant {tenant_id} has not consented to this carrier")
        }
        Refusal::ConsentInactive { tenant_id } => format!(
            "the consent of tenant {tenant_id} is not active; numbers can be uploaded only to tenants with an active consent"
        ),
        Refusal::CountryRequired {
            tenant_id,
            countries,
        } => format!("tenant {tenant_id} consented only to numbers from {countries}: set country_code"),
        Refusal::CountryNotConsented {
            tenant_id,
            country_code,
            countries,
        } => format!(
            "tenant {tenant_id} has not consented to numbers from {country_code} (consented: {countries})"
        ),
        Refusal::NumberUnavailable => "the number is not available to this carrier".into(),
        Refusal::NumberAssignedInTenant { tenant_id } => format!(
            "the number is assigned in tenant {tenant_id}; it must be unassigned there and released before it can move"
        ),
        Refusal::NumberNotFound => "number not found".into(),
        Refusal::NumberStillAssigned => "the number is assigned in its tenant; the tenant must unassign it before it can be released".into(),
        Refusal::NumberNotProvisioned { number } => {
            format!("number {number} is not provisioned by any carrier")
        }
        Refusal::NumberReleased { number } => {
            format!("number {number} has been released by its carrier")
        }
        Refusal::NumberNotInTenant { number, tenant_id } => {
            format!("number {number} is not provisioned to tenant {tenant_id}")
        }
        Refusal::UnknownCarrier { carrier_id } => format!("carrier {carrier_id:?} does not exist"),
        Refusal::NoCarrierForNumber { direction, number } => {
            let side = match direction {
                CallDirection::Inbound => "callee",
                CallDirection::Outbound => "caller",
            };
            format!(
                "the tenant's number on this call ({side} {number}) belongs to no carrier; provision it or set carrier_id"
            )
        }
        Refusal::OlderVersion { version, stored } => {
            format!("stale: version {version} is older than the stored version {stored}")
        }
        Refusal::VersionConflict { version } => format!(
            "stale: version {version} is stored with other content; send a higher version to revise it"
        ),
        Refusal::InWords(words) => words.clone(),
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

    /// The value a request's checks parsed, once they all passed: INVALID_ARGUMENT with every
    /// violation otherwise. `value` is what the checks produced (`None` where a check failed,
    /// and a failed check always records why).
    pub fn finish<T>(self, value: Option<T>) -> Result<T, Status> {
        self.into_result()?;
        value.ok_or_else(|| Status::invalid_argument("the request is not valid"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_in_words_and_codes() {
        let t1 = || "t1".to_owned();
        let cases = [
            (
                Refusal::NoConsent { tenant_id: t1() },
                Code::FailedPrecondition,
                "tenant t1 has not consented to this carrier",
            ),
            (
                Refusal::CountryRequired {
                    tenant_id: t1(),
                    countries: "CH,DE".into(),
                },
                Code::FailedPrecondition,
                "tenant t1 consented only to numbers from CH,DE: set country_code",
            ),
            (
                Refusal::CountryNotConsented {
                    tenant_id: t1(),
                    country_code: "FR".into(),
                    countries: "CH,DE".into(),
                },
                Code::FailedPrecondition,
                "tenant t1 has not consented to numbers from FR (consented: CH,DE)",
            ),
            (
                Refusal::CarrierExists {
                    carrier_id: "acme".into(),
                },
                Code::AlreadyExists,
                "carrier \"acme\" already exists",
            ),
            (
                Refusal::NumberNotProvisioned {
                    number: "+41445551234".into(),
                },
                Code::NotFound,
                "number +41445551234 is not provisioned by any carrier",
            ),
            (
                Refusal::InWords("as recorded".into()),
                Code::FailedPrecondition,
                "as recorded",
            ),
        ];
        for (r, code, words) in cases {
            assert_eq!(refusal(&r), words);
            let status = store_status(StoreError::Refused(r));
            assert_eq!((status.code(), status.message()), (code, words));
        }
        assert!(
            refusal(&Refusal::ConsentInactive { tenant_id: t1() })
                .starts_with("the consent of tenant t1 is not active")
        );
    }

    #[test]
    fn a_recorded_refusal_is_its_words_as_before_refusals_were_typed() {
        let outcome = crate::domain::ItemOutcome::Rejected(Refusal::NumberNotFound);
        let json = serde_json::to_string(&outcome).expect("encode");
        assert_eq!(json, r#"{"Rejected":"number not found"}"#);
        let back: crate::domain::ItemOutcome = serde_json::from_str(&json).expect("decode");
        let crate::domain::ItemOutcome::Rejected(again) = back else {
            panic!("{back:?}")
        };
        assert_eq!(refusal(&again), "number not found");
        assert_eq!(
            Refusal::CarrierExists {
                carrier_id: "acme".into()
            }
            .to_string(),
            "carrier \"acme\" already exists"
        );
    }
}

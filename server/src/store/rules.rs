//! The decisions both backends make the same way, written once: each backend reads the facts a
//! decision needs (in its own SQL, under its own locks), passes them here, and writes what
//! comes back. Nothing here touches a database or calls back into one, so the SQLite and
//! PostgreSQL backends cannot drift apart in what they decide. A refusal comes back typed
//! ([`Refusal`]); the error layer words it.

use crate::domain::{
    ApiKey, AssignRequest, Assignment, CallRecord, Consent, ConsentStatus, DurationOutcome,
    DurationReport, IngestOutcome, ItemOutcome, Micros, NumberEventType, NumberState, NumberUpload,
    PhoneNumber, PurgeCounts, Refusal,
};
use crate::store::retention::Expiring;
use crate::store::{StoreError, StoreResult};

/// Why the carrier may not put `item` in its tenant now, or `None` if it may. `consent` is the
/// carrier's consent in the item's tenant as stored (status code, comma-separated countries),
/// if there is one.
pub fn consent_problem(consent: Option<(i64, &str)>, item: &NumberUpload) -> Option<Refusal> {
    let tenant_id = item.tenant_id.clone();
    match consent {
        None => Some(Refusal::NoConsent { tenant_id }),
        Some((status, _)) if status != i64::from(ConsentStatus::Active.code()) => {
            Some(Refusal::ConsentInactive { tenant_id })
        }
        Some((_, countries)) if !countries.is_empty() && item.country_code.is_empty() => {
            Some(Refusal::CountryRequired {
                tenant_id,
                countries: countries.to_owned(),
            })
        }
        Some((_, countries))
            if !countries.is_empty() && !countries.split(',').any(|c| c == item.country_code) =>
        {
            Some(Refusal::CountryNotConsented {
                tenant_id,
                country_code: item.country_code.clone(),
                countries: countries.to_owned(),
            })
        }
        Some(_) => None,
    }
}

/// `CreateCarrier` of `carrier_id`, when that id is `taken` (by a carrier that exists) or not.
pub fn new_carrier(carrier_id: &str, taken: bool) -> StoreResult<()> {
    if taken {
        return Err(Refusal::CarrierExists {
            carrier_id: carrier_id.to_owned(),
        }
        .into());
    }
    Ok(())
}

/// A write naming carrier `carrier_id`, which `exists` or not.
pub fn existing_carrier(carrier_id: &str, exists: bool) -> StoreResult<()> {
    if !exists {
        return Err(Refusal::CarrierNotFound {
            carrier_id: carrier_id.to_owned(),
        }
        .into());
    }
    Ok(())
}

/// The key `key_id` a write changed, as found after it (`None`: there is no such key).
pub fn existing_key(key_id: &str, found: Option<ApiKey>) -> StoreResult<ApiKey> {
    found.ok_or_else(|| {
        Refusal::KeyNotFound {
            key_id: key_id.to_owned(),
        }
        .into()
    })
}

/// The consent a revocation changed, as found after it (`None`: the tenant has none).
pub fn existing_consent(
    carrier_id: &str,
    tenant_id: &str,
    found: Option<Consent>,
) -> StoreResult<Consent> {
    found.ok_or_else(|| {
        Refusal::ConsentNotFound {
            carrier_id: carrier_id.to_owned(),
            tenant_id: tenant_id.to_owned(),
        }
        .into()
    })
}

/// What a write does with one number.
#[derive(Debug, Clone, PartialEq)]
pub enum NumberChange {
    /// Nothing to write: the item's outcome as it stands.
    Answer(ItemOutcome),
    /// Provision the number afresh: save it (version + 1) with a `Provisioned` event and answer
    /// `Created`.
    Create(PhoneNumber),
    /// Change the number: save it (version + 1) with this event and answer `Updated`.
    Update(NumberEventType, PhoneNumber),
}

/// What uploading `item` by `carrier_id` does, at `now`, given the carrier's own row of the
/// number (`own`: its history, released or not) and the number's current holder (`held`: the
/// row of any carrier that holds it, released rows aside). Each carrier keeps its own history
/// of a number: provisioning a number another carrier released starts at version 1, and the
/// other carrier's released row stays readable to it until the retention policy purges it.
/// The consent is checked before ([`consent_problem`]).
pub fn upload(
    carrier_id: &str,
    item: &NumberUpload,
    own: Option<PhoneNumber>,
    held: Option<&PhoneNumber>,
    now: Micros,
) -> NumberChange {
    let fresh = |version: i64| PhoneNumber {
        number: item.number.clone(),
        carrier_id: carrier_id.to_owned(),
        tenant_id: item.tenant_id.clone(),
        state: NumberState::Provisioned,
        assignment: None,
        capabilities: item.capabilities.clone(),
        civic_address_id: item.civic_address_id.clone(),
        location_id: item.location_id.clone(),
        country_code: item.country_code.clone(),
        provision_time: now,
        update_time: now,
        version,
    };
    // Held by another carrier: say no without saying who.
    if held.is_some_and(|h| h.state != NumberState::Released && h.carrier_id != carrier_id) {
        return NumberChange::Answer(ItemOutcome::Rejected(Refusal::NumberUnavailable));
    }
    match own {
        // New to this carrier, or released by it and free to provision again: its history
        // goes on.
        None => NumberChange::Create(fresh(0)),
        Some(old) if old.state == NumberState::Released => NumberChange::Create(fresh(old.version)),
        Some(old) => {
            let same = old.tenant_id == item.tenant_id
                && old.capabilities == item.capabilities
                && old.civic_address_id == item.civic_address_id
                && old.location_id == item.location_id
                && old.country_code == item.country_code;
            if same {
                NumberChange::Answer(ItemOutcome::Unchanged(old))
            } else if old.state == NumberState::Assigned && old.tenant_id != item.tenant_id {
                NumberChange::Answer(ItemOutcome::Rejected(Refusal::NumberAssignedInTenant {
                    tenant_id: old.tenant_id,
                }))
            } else {
                NumberChange::Update(
                    NumberEventType::Updated,
                    PhoneNumber {
                        tenant_id: item.tenant_id.clone(),
                        capabilities: item.capabilities.clone(),
                        civic_address_id: item.civic_address_id.clone(),
                        location_id: item.location_id.clone(),
                        country_code: item.country_code.clone(),
                        ..old
                    },
                )
            }
        }
    }
}

/// The row that speaks for a number now, of `rows` (carriers' rows of one number): the row of
/// the carrier that holds it (at most one is not released), else the one released last.
/// `facts` says of a row whether it is released and when it last changed.
pub fn current_row<T>(
    rows: impl IntoIterator<Item = T>,
    facts: impl Fn(&T) -> (bool, Micros),
) -> Option<T> {
    rows.into_iter().min_by_key(|row| {
        let (released, changed) = facts(row);
        (released, std::cmp::Reverse(changed))
    })
}

/// [`current_row`] of a number's rows as read.
pub fn current_number<'a>(
    rows: impl IntoIterator<Item = &'a PhoneNumber>,
) -> Option<&'a PhoneNumber> {
    current_row(rows, |n| (n.state == NumberState::Released, n.update_time))
}

/// The carrier that owns a call on `number` when the record names none, of the number's rows
/// as (carrier, state code, update time): the [`current_row`]'s carrier.
pub fn number_holder(rows: Vec<(String, i64, Micros)>) -> Option<String> {
    let released = i64::from(NumberState::Released.code());
    current_row(rows, |(_, state, changed)| (*state == released, *changed))
        .map(|(carrier, _, _)| carrier)
}

/// What releasing a number by `carrier_id` does to the carrier's own row of it (`own`, `None`
/// if it has none).
pub fn release(carrier_id: &str, own: Option<PhoneNumber>) -> NumberChange {
    match own.filter(|n| n.carrier_id == carrier_id) {
        None => NumberChange::Answer(ItemOutcome::Rejected(Refusal::NumberNotFound)),
        Some(n) if n.state == NumberState::Released => {
            NumberChange::Answer(ItemOutcome::Unchanged(n))
        }
        Some(n) if n.state == NumberState::Assigned => {
            NumberChange::Answer(ItemOutcome::Rejected(Refusal::NumberStillAssigned))
        }
        Some(n) => NumberChange::Update(
            NumberEventType::Released,
            PhoneNumber {
                state: NumberState::Released,
                ..n
            },
        ),
    }
}

/// `number` as it is now (`current`: its holder's row, else the latest released row, `None`
/// if it has none) if the platform may (un)assign it in `tenant_id`; why not otherwise.
pub fn assignable(
    number: &str,
    tenant_id: &str,
    current: Option<PhoneNumber>,
) -> Result<PhoneNumber, StoreError> {
    let number = number.to_owned();
    let n = current.ok_or_else(|| Refusal::NumberNotProvisioned {
        number: number.clone(),
    })?;
    if n.state == NumberState::Released {
        return Err(Refusal::NumberReleased { number }.into());
    }
    if n.tenant_id != tenant_id {
        return Err(Refusal::NumberNotInTenant {
            number,
            tenant_id: tenant_id.to_owned(),
        }
        .into());
    }
    Ok(n)
}

/// `n` (from [`assignable`]) assigned as `req` says at `now`, to save with an `Assigned`
/// event; `None` if it is assigned so already.
pub fn assigned(n: &PhoneNumber, req: &AssignRequest, now: Micros) -> Option<PhoneNumber> {
    if let Some(a) = &n.assignment
        && a.assignment_type == req.assignment_type
        && a.sip_uri == req.sip_uri
        && a.user_id == req.user_id
    {
        return None;
    }
    Some(PhoneNumber {
        state: NumberState::Assigned,
        assignment: Some(Assignment {
            assignment_type: req.assignment_type,
            sip_uri: req.sip_uri.clone(),
            user_id: req.user_id.clone(),
            assign_time: now,
        }),
        ..n.clone()
    })
}

/// `n` (from [`assignable`]) unassigned, to save with an `Unassigned` event; `None` if it is
/// not assigned.
pub fn unassigned(n: &PhoneNumber) -> Option<PhoneNumber> {
    if n.state != NumberState::Assigned {
        return None;
    }
    Some(PhoneNumber {
        state: NumberState::Provisioned,
        assignment: None,
        ..n.clone()
    })
}

/// The one fact deciding the owner of a call record takes: whether the carrier it names
/// exists, or (when it names none) which carrier holds its tenant-side number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerQuestion<'a> {
    /// Does this carrier exist?
    CarrierExists(&'a str),
    /// Which carrier holds this number?
    NumberHolder(&'a str),
}

/// The answer a backend found to an [`OwnerQuestion`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerFact {
    /// Whether the named carrier exists.
    CarrierExists(bool),
    /// The carrier holding the number, if any.
    NumberHolder(Option<String>),
}

/// What to look up to decide the owner of `r` ([`call_owner`]).
pub fn owner_question(r: &CallRecord) -> OwnerQuestion<'_> {
    if r.carrier_id.is_empty() {
        OwnerQuestion::NumberHolder(r.tenant_number())
    } else {
        OwnerQuestion::CarrierExists(&r.carrier_id)
    }
}

/// The owner of call record `r`, given the answer to its [`owner_question`]: the carrier it
/// names, if that carrier exists; otherwise the carrier of its tenant-side number.
pub fn call_owner(r: &CallRecord, fact: OwnerFact) -> Result<String, Refusal> {
    match fact {
        OwnerFact::CarrierExists(true) => Ok(r.carrier_id.clone()),
        OwnerFact::CarrierExists(false) => Err(Refusal::UnknownCarrier {
            carrier_id: r.carrier_id.clone(),
        }),
        OwnerFact::NumberHolder(Some(carrier_id)) => Ok(carrier_id),
        OwnerFact::NumberHolder(None) => Err(Refusal::NoCarrierForNumber {
            direction: r.direction,
            number: r.tenant_number().to_owned(),
        }),
    }
}

/// The answer to ingesting `r` when it is not written, given the record stored under its call
/// id as `(version, content hash, owner)`: the same version and content is `Unchanged`, an
/// older version or the same version with other content is stale. `None`: `r` is written
/// (created when nothing is stored, revised otherwise).
pub fn ingest_refusal(stored: Option<(i64, i64, &str)>, r: &CallRecord) -> Option<IngestOutcome> {
    match stored {
        Some((version, hash, owner)) if version == r.version && hash == r.content_hash => {
            Some(IngestOutcome::Unchanged(owner.to_owned()))
        }
        Some((stored, _, _)) if stored > r.version => {
            Some(IngestOutcome::Rejected(Refusal::OlderVersion {
                version: r.version,
                stored,
            }))
        }
        Some((version, _, _)) if version == r.version => {
            Some(IngestOutcome::Rejected(Refusal::VersionConflict {
                version,
            }))
        }
        _ => None,
    }
}

/// What storing report `r` is, given the content stored under its record id (`None` if
/// none): new, a duplicate, or a correction.
pub fn duration_outcome(stored: Option<&DurationReport>, r: &DurationReport) -> DurationOutcome {
    match stored {
        None => DurationOutcome::Created,
        Some(old) if old == r => DurationOutcome::Unchanged,
        Some(_) => DurationOutcome::Corrected,
    }
}

/// Adds one purge step of `kind` to `counts`: `rows` deleted and `secondary` rows deleted with
/// them (counted for released numbers' events only).
pub fn count_purged(counts: &mut PurgeCounts, kind: Expiring, rows: i64, secondary: i64) {
    match kind {
        Expiring::CallRecords => counts.call_records += rows,
        Expiring::CallDurations => counts.call_durations += rows,
        Expiring::ReleasedNumbers => {
            counts.released_numbers += rows;
            counts.number_events += secondary;
        }
        Expiring::AuditEvents => counts.audit_events += rows,
        // Bookkeeping of the pairing state, not personal data a policy names.
        Expiring::ReconciliationRemovals => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(country_code: &str) -> NumberUpload {
        NumberUpload {
            number: "+41445551234".into(),
            tenant_id: "t1".into(),
            capabilities: Vec::new(),
            civic_address_id: String::new(),
            location_id: String::new(),
            country_code: country_code.into(),
        }
    }

    #[test]
    fn consent_problems_in_order() {
        let active = i64::from(ConsentStatus::Active.code());
        let suspended = i64::from(ConsentStatus::Suspended.code());
        let t1 = || "t1".to_owned();
        assert_eq!(
            consent_problem(None, &item("CH")),
            Some(Refusal::NoConsent { tenant_id: t1() })
        );
        assert_eq!(
            consent_problem(Some((suspended, "")), &item("CH")),
            Some(Refusal::ConsentInactive { tenant_id: t1() })
        );
        assert_eq!(
            consent_problem(Some((active, "CH,DE")), &item("")),
            Some(Refusal::CountryRequired {
                tenant_id: t1(),
                countries: "CH,DE".into()
            })
        );
        assert_eq!(
            consent_problem(Some((active, "CH,DE")), &item("FR")),
            Some(Refusal::CountryNotConsented {
                tenant_id: t1(),
                country_code: "FR".into(),
                countries: "CH,DE".into()
            })
        );
        assert_eq!(consent_problem(Some((active, "CH,DE")), &item("DE")), None);
        assert_eq!(consent_problem(Some((active, "")), &item("")), None);
    }

    #[test]
    fn duration_outcomes() {
        let r = DurationReport {
            record_id: "r1".into(),
            call_id: "c1".into(),
            correlation_id: String::new(),
            caller_number: "+41445551234".into(),
            callee_number: "+41445554321".into(),
            start_time: 1,
            duration_us: 2,
        };
        let corrected = DurationReport {
            duration_us: 3,
            ..r.clone()
        };
        assert_eq!(duration_outcome(None, &r), DurationOutcome::Created);
        assert_eq!(duration_outcome(Some(&r), &r), DurationOutcome::Unchanged);
        assert_eq!(
            duration_outcome(Some(&r), &corrected),
            DurationOutcome::Corrected
        );
    }
}

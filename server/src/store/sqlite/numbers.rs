//! Numbers and their events. Every function that changes a number appends the event in the
//! same transaction, so the event log and the numbers table can never disagree.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::domain::{
    AssignRequest, Assignment, AssignmentType, Capability, ConsentStatus, ItemOutcome, NumberEvent,
    NumberEventType, NumberFilter, NumberState, NumberUpload, PhoneNumber, now_micros,
};
use crate::store::{StoreError, StoreResult};

const COLUMNS: &str = "number, carrier_id, tenant_id, state, assignment_type, sip_uri, user_id, \
    assign_time, capabilities, civic_address_id, location_id, country_code, provision_time, \
    update_time, version";

fn from_row(row: &Row<'_>) -> rusqlite::Result<PhoneNumber> {
    let state: i32 = row.get(3)?;
    let state = NumberState::from_code(state).unwrap_or(NumberState::Released);
    let assignment_type: Option<i32> = row.get(4)?;
    let assignment = match (state, assignment_type.and_then(AssignmentType::from_code)) {
        (NumberState::Assigned, Some(assignment_type)) => Some(Assignment {
            assignment_type,
            sip_uri: row.get::<_, Option<String>>(5)?.unwrap_or_default(),
            user_id: row.get::<_, Option<String>>(6)?.unwrap_or_default(),
            assign_time: row.get::<_, Option<i64>>(7)?.unwrap_or_default(),
        }),
        _ => None,
    };
    Ok(PhoneNumber {
        number: row.get(0)?,
        carrier_id: row.get(1)?,
        tenant_id: row.get(2)?,
        state,
        assignment,
        capabilities: Capability::from_mask(row.get(8)?),
        civic_address_id: row.get(9)?,
        location_id: row.get(10)?,
        country_code: row.get(11)?,
        provision_time: row.get(12)?,
        update_time: row.get(13)?,
        version: row.get(14)?,
    })
}

/// One number, whoever owns it.
pub fn get(conn: &Connection, number: &str) -> StoreResult<Option<PhoneNumber>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM numbers WHERE number = ?1"))?
        .query_row([number], from_row)
        .optional()?)
}

/// Writes the whole row (insert or replace) as `n` says.
fn put(conn: &Connection, n: &PhoneNumber) -> StoreResult<()> {
    let a = n.assignment.as_ref();
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO numbers ({COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
    ))?
    .execute(params![
        n.number,
        n.carrier_id,
        n.tenant_id,
        n.state.code(),
        a.map(|a| a.assignment_type.code()),
        a.map(|a| a.sip_uri.as_str()),
        a.map(|a| a.user_id.as_str()),
        a.map(|a| a.assign_time),
        Capability::to_mask(&n.capabilities),
        n.civic_address_id,
        n.location_id,
        n.country_code,
        n.provision_time,
        n.update_time,
        n.version
    ])?;
    Ok(())
}

/// Appends the next event of the number's carrier. The sequence comes from the carrier's row in
/// `carrier_heads`, inside the writer's transaction: with a single writer it is gapless and
/// strictly increasing, and a sequence is never drawn twice, even after retention or erasure
/// deleted the events that had the latest ones.
fn append_event(
    conn: &Connection,
    event_type: NumberEventType,
    n: &PhoneNumber,
) -> StoreResult<()> {
    let snapshot = serde_json::to_string(n).map_err(|e| StoreError::Internal(e.to_string()))?;
    let sequence: i64 = conn
        .prepare_cached(
            "INSERT INTO carrier_heads (carrier_id, number_event_seq) VALUES (?1, 1)
             ON CONFLICT (carrier_id) DO UPDATE SET number_event_seq = number_event_seq + 1
             RETURNING number_event_seq",
        )?
        .query_row([&n.carrier_id], |r| r.get(0))?;
    conn.prepare_cached(
        "INSERT INTO number_events (carrier_id, sequence, event_type, snapshot, event_time)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        n.carrier_id,
        sequence,
        event_type.code(),
        snapshot,
        n.update_time
    ])?;
    Ok(())
}

/// Saves a change (version + 1) and its event.
fn commit_change(
    conn: &Connection,
    event_type: NumberEventType,
    n: &mut PhoneNumber,
) -> StoreResult<()> {
    n.version += 1;
    n.update_time = now_micros();
    put(conn, n)?;
    append_event(conn, event_type, n)
}

/// Whether the carrier may put a number with `country` in `tenant` now; the reason if not.
fn consent_problem(
    conn: &Connection,
    carrier_id: &str,
    item: &NumberUpload,
) -> StoreResult<Option<String>> {
    let row: Option<(i32, String)> = conn
        .prepare_cached(
            "SELECT status, countries FROM consents WHERE carrier_id = ?1 AND tenant_id = ?2",
        )?
        .query_row([carrier_id, &item.tenant_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(match row {
        None => Some(format!(
            "tenant {} has not consented to this carrier",
            item.tenant_id
        )),
        Some((status, _)) if status != ConsentStatus::Active.code() => Some(format!(
            "the consent of tenant {} is not active; numbers can be uploaded only to tenants with an active consent",
            item.tenant_id
        )),
        Some((_, countries)) if !countries.is_empty() && item.country_code.is_empty() => {
            Some(format!(
                "tenant {} consented only to numbers from {countries}: set country_code",
                item.tenant_id
            ))
        }
        Some((_, countries))
            if !countries.is_empty() && !countries.split(',').any(|c| c == item.country_code) =>
        {
            Some(format!(
                "tenant {} has not consented to numbers from {} (consented: {countries})",
                item.tenant_id, item.country_code
            ))
        }
        Some(_) => None,
    })
}

/// Provisions each item independently.
pub fn upload(
    conn: &Connection,
    carrier_id: &str,
    items: &[NumberUpload],
) -> StoreResult<Vec<ItemOutcome>> {
    let mut outcomes = Vec::with_capacity(items.len());
    for item in items {
        if let Some(reason) = consent_problem(conn, carrier_id, item)? {
            outcomes.push(ItemOutcome::Rejected(reason));
            continue;
        }
        let now = now_micros();
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
        let outcome = match get(conn, &item.number)? {
            // New, or released (by anyone) and free to provision again.
            None => {
                let mut n = fresh(0);
                commit_change(conn, NumberEventType::Provisioned, &mut n)?;
                ItemOutcome::Created(n)
            }
            Some(old) if old.state == NumberState::Released => {
                let mut n = fresh(old.version);
                commit_change(conn, NumberEventType::Provisioned, &mut n)?;
                ItemOutcome::Created(n)
            }
            // Held by another carrier: say no without saying who.
            Some(old) if old.carrier_id != carrier_id => {
                ItemOutcome::Rejected("the number is not available to this carrier".into())
            }
            Some(old) => {
                let same = old.tenant_id == item.tenant_id
                    && old.capabilities == item.capabilities
                    && old.civic_address_id == item.civic_address_id
                    && old.location_id == item.location_id
                    && old.country_code == item.country_code;
                if same {
                    ItemOutcome::Unchanged(old)
                } else if old.state == NumberState::Assigned && old.tenant_id != item.tenant_id {
                    ItemOutcome::Rejected(format!(
                        "the number is assigned in tenant {}; it must be unassigned there and released before it can move",
                        old.tenant_id
                    ))
                } else {
                    let mut n = PhoneNumber {
                        tenant_id: item.tenant_id.clone(),
                        capabilities: item.capabilities.clone(),
                        civic_address_id: item.civic_address_id.clone(),
                        location_id: item.location_id.clone(),
                        country_code: item.country_code.clone(),
                        ..old
                    };
                    commit_change(conn, NumberEventType::Updated, &mut n)?;
                    ItemOutcome::Updated(n)
                }
            }
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Releases each item independently.
pub fn release(
    conn: &Connection,
    carrier_id: &str,
    numbers: &[String],
) -> StoreResult<Vec<ItemOutcome>> {
    let mut outcomes = Vec::with_capacity(numbers.len());
    for number in numbers {
        let outcome = match get(conn, number)?.filter(|n| n.carrier_id == carrier_id) {
            None => ItemOutcome::Rejected("number not found".into()),
            Some(n) if n.state == NumberState::Released => ItemOutcome::Unchanged(n),
            Some(n) if n.state == NumberState::Assigned => ItemOutcome::Rejected(
                "the number is assigned in its tenant; the tenant must unassign it before it can be released".into(),
            ),
            Some(mut n) => {
                n.state = NumberState::Released;
                commit_change(conn, NumberEventType::Released, &mut n)?;
                ItemOutcome::Updated(n)
            }
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// A number the platform may (un)assign in `tenant_id`.
fn assignable(conn: &Connection, number: &str, tenant_id: &str) -> StoreResult<PhoneNumber> {
    let n = get(conn, number)?.ok_or_else(|| {
        StoreError::NotFound(format!("number {number} is not provisioned by any carrier"))
    })?;
    if n.state == NumberState::Released {
        return Err(StoreError::FailedPrecondition(format!(
            "number {number} has been released by its carrier"
        )));
    }
    if n.tenant_id != tenant_id {
        return Err(StoreError::FailedPrecondition(format!(
            "number {number} is not provisioned to tenant {tenant_id}"
        )));
    }
    Ok(n)
}

/// Assigns a number; returns it and whether anything changed.
pub fn assign(conn: &Connection, req: &AssignRequest) -> StoreResult<(PhoneNumber, bool)> {
    let mut n = assignable(conn, &req.number, &req.tenant_id)?;
    if let Some(a) = &n.assignment
        && a.assignment_type == req.assignment_type
        && a.sip_uri == req.sip_uri
        && a.user_id == req.user_id
    {
        return Ok((n, false));
    }
    n.state = NumberState::Assigned;
    n.assignment = Some(Assignment {
        assignment_type: req.assignment_type,
        sip_uri: req.sip_uri.clone(),
        user_id: req.user_id.clone(),
        assign_time: now_micros(),
    });
    commit_change(conn, NumberEventType::Assigned, &mut n)?;
    Ok((n, true))
}

/// Unassigns a number; returns it and whether anything changed.
pub fn unassign(
    conn: &Connection,
    number: &str,
    tenant_id: &str,
) -> StoreResult<(PhoneNumber, bool)> {
    let mut n = assignable(conn, number, tenant_id)?;
    if n.state != NumberState::Assigned {
        return Ok((n, false));
    }
    n.state = NumberState::Provisioned;
    n.assignment = None;
    commit_change(conn, NumberEventType::Unassigned, &mut n)?;
    Ok((n, true))
}

/// A page of a carrier's numbers (`fetch` rows at most) and the total matching the filter.
pub fn list(
    conn: &Connection,
    carrier_id: &str,
    filter: &NumberFilter,
    after: Option<&str>,
    fetch: usize,
) -> StoreResult<(Vec<PhoneNumber>, i64)> {
    const WHERE: &str = "carrier_id = ?1 AND (?2 IS NULL OR tenant_id = ?2)
        AND (?3 IS NULL OR state = ?3) AND (?4 IS NULL OR update_time >= ?4)";
    let state = filter.state.map(NumberState::code);
    let items = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM numbers WHERE {WHERE} AND (?5 IS NULL OR number > ?5)
             ORDER BY number LIMIT ?6"
        ))?
        .query_map(
            params![
                carrier_id,
                filter.tenant_id,
                state,
                filter.updated_since,
                after,
                fetch as i64
            ],
            from_row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let total = conn
        .prepare_cached(&format!("SELECT count(*) FROM numbers WHERE {WHERE}"))?
        .query_row(
            params![carrier_id, filter.tenant_id, state, filter.updated_since],
            |r| r.get(0),
        )?;
    Ok((items, total))
}

/// A carrier's events after `after`, in sequence order.
pub fn events_after(
    conn: &Connection,
    carrier_id: &str,
    after: i64,
    limit: usize,
) -> StoreResult<Vec<NumberEvent>> {
    let rows = conn
        .prepare_cached(
            "SELECT sequence, event_type, snapshot, event_time FROM number_events
             WHERE carrier_id = ?1 AND sequence > ?2 ORDER BY sequence LIMIT ?3",
        )?
        .query_map(params![carrier_id, after, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i32>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(sequence, code, snapshot, event_time)| {
            let event_type = NumberEventType::from_code(code)
                .ok_or_else(|| StoreError::Internal(format!("unknown event type {code}")))?;
            let number = serde_json::from_str(&snapshot)
                .map_err(|e| StoreError::Internal(format!("event {sequence}: {e}")))?;
            Ok(NumberEvent {
                sequence,
                event_type,
                number,
                event_time,
            })
        })
        .collect()
}

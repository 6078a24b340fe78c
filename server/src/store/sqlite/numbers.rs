//! Numbers and their events. Every function that changes a number appends the event in the
//! same transaction, so the event log and the numbers table can never disagree.

use rusqlite::{Connection, OptionalExtension, params};

use super::query;
use crate::domain::{
    AssignRequest, Capability, ItemOutcome, NumberEvent, NumberEventType, NumberFilter,
    NumberState, NumberUpload, PhoneNumber, Refusal, now_micros,
};
use crate::store::rows;
use crate::store::rules::{self, NumberChange};
use crate::store::{StoreError, StoreResult};

const COLUMNS: &str = "number, carrier_id, tenant_id, state, assignment_type, sip_uri, user_id, \
    assign_time, capabilities, civic_address_id, location_id, country_code, provision_time, \
    update_time, version";

/// A carrier's own row of a number (its history of it, released or not).
pub fn own(conn: &Connection, carrier_id: &str, number: &str) -> StoreResult<Option<PhoneNumber>> {
    let sql = format!("SELECT {COLUMNS} FROM numbers WHERE carrier_id = ?1 AND number = ?2");
    query::first(conn, &sql, [carrier_id, number], rows::phone_number)
}

/// Every carrier's row of a number (one holds it at most; others may keep a released row).
fn rows_of(conn: &Connection, number: &str) -> StoreResult<Vec<PhoneNumber>> {
    let sql = format!("SELECT {COLUMNS} FROM numbers WHERE number = ?1");
    query::all(conn, &sql, [number], rows::phone_number)
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
) -> StoreResult<Option<Refusal>> {
    let row: Option<(i32, String)> = conn
        .prepare_cached(
            "SELECT status, countries FROM consents WHERE carrier_id = ?1 AND tenant_id = ?2",
        )?
        .query_row([carrier_id, &item.tenant_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(rules::consent_problem(
        row.as_ref()
            .map(|(status, countries)| (i64::from(*status), countries.as_str())),
        item,
    ))
}

/// Saves what `change` says (if anything) and returns the item's outcome.
fn apply(conn: &Connection, change: NumberChange) -> StoreResult<ItemOutcome> {
    Ok(match change {
        NumberChange::Answer(outcome) => outcome,
        NumberChange::Create(mut n) => {
            commit_change(conn, NumberEventType::Provisioned, &mut n)?;
            ItemOutcome::Created(n)
        }
        NumberChange::Update(event_type, mut n) => {
            commit_change(conn, event_type, &mut n)?;
            ItemOutcome::Updated(n)
        }
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
        let rows = rows_of(conn, &item.number)?;
        let own = rows.iter().find(|n| n.carrier_id == carrier_id).cloned();
        let held = rules::current_number(&rows);
        let change = rules::upload(carrier_id, item, own, held, now);
        outcomes.push(apply(conn, change)?);
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
        let change = rules::release(carrier_id, own(conn, carrier_id, number)?);
        outcomes.push(apply(conn, change)?);
    }
    Ok(outcomes)
}

/// A number the platform may (un)assign in `tenant_id`.
fn assignable(conn: &Connection, number: &str, tenant_id: &str) -> StoreResult<PhoneNumber> {
    let rows = rows_of(conn, number)?;
    rules::assignable(number, tenant_id, rules::current_number(&rows).cloned())
}

/// Assigns a number; returns it and whether anything changed.
pub fn assign(conn: &Connection, req: &AssignRequest) -> StoreResult<(PhoneNumber, bool)> {
    let now = now_micros();
    let change = |n: &PhoneNumber| rules::assigned(n, req, now);
    set_assignment(
        conn,
        &req.number,
        &req.tenant_id,
        NumberEventType::Assigned,
        change,
    )
}

/// Unassigns a number; returns it and whether anything changed.
pub fn unassign(
    conn: &Connection,
    number: &str,
    tenant_id: &str,
) -> StoreResult<(PhoneNumber, bool)> {
    let change = rules::unassigned;
    set_assignment(conn, number, tenant_id, NumberEventType::Unassigned, change)
}

/// Applies `change` (a rule's answer: the number as it becomes, or `None` if it stays) to
/// `number` in `tenant_id`, with an `event`.
fn set_assignment(
    conn: &Connection,
    number: &str,
    tenant_id: &str,
    event: NumberEventType,
    change: impl FnOnce(&PhoneNumber) -> Option<PhoneNumber>,
) -> StoreResult<(PhoneNumber, bool)> {
    let n = assignable(conn, number, tenant_id)?;
    let Some(mut n) = change(&n) else {
        return Ok((n, false));
    };
    commit_change(conn, event, &mut n)?;
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
    let sql = format!(
        "SELECT {COLUMNS} FROM numbers WHERE {WHERE} AND (?5 IS NULL OR number > ?5)
         ORDER BY number LIMIT ?6"
    );
    let params = params![
        carrier_id,
        filter.tenant_id,
        state,
        filter.updated_since,
        after,
        fetch as i64
    ];
    let items = query::all(conn, &sql, params, rows::phone_number)?;
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
    let sql = "SELECT sequence, event_type, snapshot, event_time FROM number_events
               WHERE carrier_id = ?1 AND sequence > ?2 ORDER BY sequence LIMIT ?3";
    query::all(
        conn,
        sql,
        params![carrier_id, after, limit as i64],
        rows::number_event,
    )
}

/// The carrier's last number-event sequence (0 before its first event).
pub fn event_head(conn: &Connection, carrier_id: &str) -> StoreResult<i64> {
    let sql = "SELECT number_event_seq FROM carrier_heads WHERE carrier_id = ?1";
    Ok(query::first(conn, sql, [carrier_id], rows::int)?.unwrap_or(0))
}

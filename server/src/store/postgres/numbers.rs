//! Numbers and number events (the port of `sqlite::numbers`). Every function that changes a
//! number appends its event in the same transaction, so the event log and the numbers table
//! can never disagree.
//!
//! Concurrency (see the module `postgres`): a write locks the rows of the numbers it names
//! (`FOR UPDATE`, in number order) before deciding, so two writers of one number decide one
//! after the other on what the first committed. A number that has no row yet is inserted with a
//! plain `INSERT`: a concurrent transaction inserting the same number makes one of them fail on
//! the primary key, and its rerun sees the winner's row (another carrier's number is then
//! rejected, as on SQLite). Event sequences are drawn from `carrier_heads` after the numbers
//! are written, a whole batch's range at once.

use std::collections::{BTreeMap, HashMap, HashSet};

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::types::ToSql;

use super::listen::{Channel, notify};
use super::pool::PgResult;
use super::query;
use crate::domain::{
    AssignRequest, Capability, ItemOutcome, NumberEvent, NumberEventType, NumberFilter,
    NumberState, NumberUpload, PhoneNumber, now_micros,
};
use crate::store::StoreError;
use crate::store::rows;
use crate::store::rules::{self, NumberChange};

const COLUMNS: &str = "number, carrier_id, tenant_id, state, assignment_type, sip_uri, user_id, \
    assign_time, capabilities, civic_address_id, location_id, country_code, provision_time, \
    update_time, version";

/// The column list with each column typed as an array, for `unnest`.
const UNNEST: &str = "unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[], \
    $6::TEXT[], $7::TEXT[], $8::BIGINT[], $9::BIGINT[], $10::TEXT[], $11::TEXT[], $12::TEXT[], \
    $13::BIGINT[], $14::BIGINT[], $15::BIGINT[])";

/// A number's row: each carrier keeps its own (its history of the number, released or not).
type RowKey = (String, String);

/// The key of `n`'s row: (carrier, number).
fn row_key(n: &PhoneNumber) -> RowKey {
    (n.carrier_id.clone(), n.number.clone())
}

/// A carrier's own row of a number.
pub async fn own(
    db: &impl GenericClient,
    carrier_id: &str,
    number: &str,
) -> PgResult<Option<PhoneNumber>> {
    let sql = format!("SELECT {COLUMNS} FROM numbers WHERE carrier_id = $1 AND number = $2");
    query::first(db, &sql, &[&carrier_id, &number], rows::phone_number).await
}

/// Every carrier's rows of `numbers`, locked until commit (in carrier and number order, so
/// that two writers of overlapping batches do not deadlock).
async fn lock(tx: &Transaction<'_>, numbers: &[String]) -> PgResult<HashMap<RowKey, PhoneNumber>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM numbers WHERE number = ANY($1)
          ORDER BY carrier_id, number FOR UPDATE"
    );
    let rows = query::all(tx, &sql, &[&numbers], rows::phone_number).await?;
    Ok(rows.into_iter().map(|n| (row_key(&n), n)).collect())
}

/// Numbers as the columns of the `numbers` table, one array per column.
#[derive(Default)]
struct NumberColumns {
    number: Vec<String>,
    carrier_id: Vec<String>,
    tenant_id: Vec<String>,
    state: Vec<i64>,
    assignment_type: Vec<Option<i64>>,
    sip_uri: Vec<Option<String>>,
    user_id: Vec<Option<String>>,
    assign_time: Vec<Option<i64>>,
    capabilities: Vec<i64>,
    civic_address_id: Vec<String>,
    location_id: Vec<String>,
    country_code: Vec<String>,
    provision_time: Vec<i64>,
    update_time: Vec<i64>,
    version: Vec<i64>,
}

impl NumberColumns {
    fn push(&mut self, n: &PhoneNumber) {
        let a = n.assignment.as_ref();
        self.number.push(n.number.clone());
        self.carrier_id.push(n.carrier_id.clone());
        self.tenant_id.push(n.tenant_id.clone());
        self.state.push(i64::from(n.state.code()));
        self.assignment_type
            .push(a.map(|a| i64::from(a.assignment_type.code())));
        self.sip_uri.push(a.map(|a| a.sip_uri.clone()));
        self.user_id.push(a.map(|a| a.user_id.clone()));
        self.assign_time.push(a.map(|a| a.assign_time));
        self.capabilities.push(Capability::to_mask(&n.capabilities));
        self.civic_address_id.push(n.civic_address_id.clone());
        self.location_id.push(n.location_id.clone());
        self.country_code.push(n.country_code.clone());
        self.provision_time.push(n.provision_time);
        self.update_time.push(n.update_time);
        self.version.push(n.version);
    }

    fn is_empty(&self) -> bool {
        self.number.is_empty()
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 15] {
        [
            &self.number,
            &self.carrier_id,
            &self.tenant_id,
            &self.state,
            &self.assignment_type,
            &self.sip_uri,
            &self.user_id,
            &self.assign_time,
            &self.capabilities,
            &self.civic_address_id,
            &self.location_id,
            &self.country_code,
            &self.provision_time,
            &self.update_time,
            &self.version,
        ]
    }
}

/// The changes a write makes, in order, on top of the rows it locked.
struct Changes {
    /// The rows that existed when locked.
    existed: HashSet<RowKey>,
    /// Each row as it is now (locked rows, then every change applied).
    current: HashMap<RowKey, PhoneNumber>,
    /// The carriers with a row of each number (keys of `current`, by number).
    carriers: HashMap<String, Vec<String>>,
    /// The events, in the order the changes were made.
    events: Vec<(NumberEventType, PhoneNumber)>,
}

impl Changes {
    fn new(locked: HashMap<RowKey, PhoneNumber>) -> Changes {
        let mut carriers: HashMap<String, Vec<String>> = HashMap::new();
        for (carrier_id, number) in locked.keys() {
            carriers
                .entry(number.clone())
                .or_default()
                .push(carrier_id.clone());
        }
        Changes {
            existed: locked.keys().cloned().collect(),
            carriers,
            current: locked,
            events: Vec::new(),
        }
    }

    /// Records a change (version + 1) and its event.
    fn commit(&mut self, event_type: NumberEventType, mut n: PhoneNumber) -> PhoneNumber {
        n.version += 1;
        n.update_time = now_micros();
        if self.current.insert(row_key(&n), n.clone()).is_none() {
            self.carriers
                .entry(n.number.clone())
                .or_default()
                .push(n.carrier_id.clone());
        }
        self.events.push((event_type, n.clone()));
        n
    }

    /// A carrier's own row of `number`, as it is now.
    fn own(&self, carrier_id: &str, number: &str) -> Option<PhoneNumber> {
        self.current
            .get(&(carrier_id.to_owned(), number.to_owned()))
            .cloned()
    }

    /// `number` as it is now: its holder's row, else the row released last.
    fn number(&self, number: &str) -> Option<&PhoneNumber> {
        let carriers = self.carriers.get(number)?;
        let rows = carriers
            .iter()
            .filter_map(|c| self.current.get(&(c.clone(), number.to_owned())));
        rules::current_number(rows)
    }

    /// Records what `change` says (if anything) and returns the item's outcome.
    fn apply(&mut self, change: NumberChange) -> ItemOutcome {
        match change {
            NumberChange::Answer(outcome) => outcome,
            NumberChange::Create(n) => {
                ItemOutcome::Created(self.commit(NumberEventType::Provisioned, n))
            }
            NumberChange::Update(event_type, n) => ItemOutcome::Updated(self.commit(event_type, n)),
        }
    }

    /// Writes the changed numbers, then appends the events with sequences drawn from the
    /// carriers' heads (in carrier order) and announces them. Returns whether events were
    /// appended.
    async fn save(self, tx: &Transaction<'_>) -> PgResult<bool> {
        if self.events.is_empty() {
            return Ok(false);
        }
        let mut changed: Vec<RowKey> = self
            .events
            .iter()
            .map(|(_, n)| row_key(n))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        changed.sort();
        let (mut updates, mut inserts) = (NumberColumns::default(), NumberColumns::default());
        for key in &changed {
            let Some(n) = self.current.get(key) else {
                continue;
            };
            if self.existed.contains(key) {
                updates.push(n);
            } else {
                inserts.push(n);
            }
        }
        if !updates.is_empty() {
            let stmt = tx
                .prepare_cached(&format!(
                    "UPDATE numbers AS n SET
                        carrier_id = u.carrier_id, tenant_id = u.tenant_id, state = u.state,
                        assignment_type = u.assignment_type, sip_uri = u.sip_uri,
                        user_id = u.user_id, assign_time = u.assign_time,
                        capabilities = u.capabilities, civic_address_id = u.civic_address_id,
                        location_id = u.location_id, country_code = u.country_code,
                        provision_time = u.provision_time, update_time = u.update_time,
                        version = u.version
                       FROM {UNNEST} AS u({COLUMNS})
                      WHERE n.carrier_id = u.carrier_id AND n.number = u.number"
                ))
                .await?;
            tx.execute(&stmt, &updates.params()).await?;
        }
        if !inserts.is_empty() {
            // A plain INSERT: a concurrent writer of the same new number makes one of the two
            // fail on the `numbers_held` index, and its rerun sees the other's row.
            let stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO numbers ({COLUMNS}) SELECT * FROM {UNNEST}"
                ))
                .await?;
            tx.execute(&stmt, &inserts.params()).await?;
        }
        let mut by_carrier: BTreeMap<&str, Vec<&(NumberEventType, PhoneNumber)>> = BTreeMap::new();
        for event in &self.events {
            by_carrier
                .entry(event.1.carrier_id.as_str())
                .or_default()
                .push(event);
        }
        for (carrier_id, events) in by_carrier {
            append_events(tx, carrier_id, &events).await?;
        }
        notify(tx, Channel::NumberEvents).await?;
        Ok(true)
    }
}

/// Appends a carrier's events, in order, with the next sequences of its head.
async fn append_events(
    tx: &Transaction<'_>,
    carrier_id: &str,
    events: &[&(NumberEventType, PhoneNumber)],
) -> PgResult<()> {
    let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
    let draw = tx
        .prepare_cached(
            "INSERT INTO carrier_heads (carrier_id, number_event_seq) VALUES ($1, $2)
             ON CONFLICT (carrier_id) DO UPDATE
               SET number_event_seq = carrier_heads.number_event_seq + excluded.number_event_seq
             RETURNING number_event_seq",
        )
        .await?;
    let last: i64 = tx.query_one(&draw, &[&carrier_id, &count]).await?.get(0);
    let first = last - count + 1;
    let mut sequences = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut snapshots = Vec::with_capacity(events.len());
    let mut times = Vec::with_capacity(events.len());
    for (sequence, (event_type, n)) in (first..).zip(events) {
        sequences.push(sequence);
        types.push(i64::from(event_type.code()));
        snapshots.push(serde_json::to_string(n).map_err(|e| StoreError::Internal(e.to_string()))?);
        times.push(n.update_time);
    }
    let insert = tx
        .prepare_cached(
            "INSERT INTO number_events (carrier_id, sequence, event_type, snapshot, event_time)
             SELECT $1::TEXT, * FROM unnest($2::BIGINT[], $3::BIGINT[], $4::TEXT[], $5::BIGINT[])",
        )
        .await?;
    tx.execute(
        &insert,
        &[&carrier_id, &sequences, &types, &snapshots, &times],
    )
    .await?;
    Ok(())
}

/// Provisions each item independently (in order: an item sees the ones before it).
pub async fn upload(
    tx: &Transaction<'_>,
    carrier_id: &str,
    items: &[NumberUpload],
) -> PgResult<Vec<ItemOutcome>> {
    // The consents, held (FOR SHARE) so that a revocation commits before or after this
    // upload, never in between.
    let mut tenants: Vec<String> = items.iter().map(|i| i.tenant_id.clone()).collect();
    tenants.sort();
    tenants.dedup();
    let stmt = tx
        .prepare_cached(
            "SELECT tenant_id, status, countries FROM consents
              WHERE carrier_id = $1 AND tenant_id = ANY($2) ORDER BY tenant_id FOR SHARE",
        )
        .await?;
    let consents: HashMap<String, (i64, String)> = tx
        .query(&stmt, &[&carrier_id, &tenants])
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let numbers: Vec<String> = items.iter().map(|i| i.number.clone()).collect();
    let mut changes = Changes::new(lock(tx, &numbers).await?);
    let mut outcomes = Vec::with_capacity(items.len());
    for item in items {
        let consent = consents
            .get(&item.tenant_id)
            .map(|(status, countries)| (*status, countries.as_str()));
        if let Some(reason) = rules::consent_problem(consent, item) {
            outcomes.push(ItemOutcome::Rejected(reason));
            continue;
        }
        let now = now_micros();
        let own = changes.own(carrier_id, &item.number);
        let change = rules::upload(carrier_id, item, own, changes.number(&item.number), now);
        outcomes.push(changes.apply(change));
    }
    changes.save(tx).await?;
    Ok(outcomes)
}

/// Releases each item independently (in order).
pub async fn release(
    tx: &Transaction<'_>,
    carrier_id: &str,
    numbers: &[String],
) -> PgResult<Vec<ItemOutcome>> {
    let mut changes = Changes::new(lock(tx, numbers).await?);
    let mut outcomes = Vec::with_capacity(numbers.len());
    for number in numbers {
        let change = rules::release(carrier_id, changes.own(carrier_id, number));
        outcomes.push(changes.apply(change));
    }
    changes.save(tx).await?;
    Ok(outcomes)
}

/// A number the platform may (un)assign in `tenant_id`, locked, with the changes to make.
async fn assignable(
    tx: &Transaction<'_>,
    number: &str,
    tenant_id: &str,
) -> PgResult<(PhoneNumber, Changes)> {
    let changes = Changes::new(lock(tx, &[number.to_owned()]).await?);
    let n = rules::assignable(number, tenant_id, changes.number(number).cloned())?;
    Ok((n, changes))
}

/// Assigns a number; returns it as it is now.
pub async fn assign(tx: &Transaction<'_>, req: &AssignRequest) -> PgResult<PhoneNumber> {
    let (n, mut changes) = assignable(tx, &req.number, &req.tenant_id).await?;
    let Some(n) = rules::assigned(&n, req, now_micros()) else {
        return Ok(n);
    };
    let n = changes.commit(NumberEventType::Assigned, n);
    changes.save(tx).await?;
    Ok(n)
}

/// Unassigns a number; returns it as it is now.
pub async fn unassign(
    tx: &Transaction<'_>,
    number: &str,
    tenant_id: &str,
) -> PgResult<PhoneNumber> {
    let (n, mut changes) = assignable(tx, number, tenant_id).await?;
    let Some(n) = rules::unassigned(&n) else {
        return Ok(n);
    };
    let n = changes.commit(NumberEventType::Unassigned, n);
    changes.save(tx).await?;
    Ok(n)
}

/// Unassigns every assigned number of `tenant_id` (for erasure), one event each; returns how
/// many.
pub async fn unassign_tenant(tx: &Transaction<'_>, tenant_id: &str) -> PgResult<i64> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM numbers WHERE tenant_id = $1 AND state = $2
              ORDER BY carrier_id, number FOR UPDATE"
        ))
        .await?;
    let rows = tx
        .query(
            &stmt,
            &[&tenant_id, &i64::from(NumberState::Assigned.code())],
        )
        .await?;
    let locked: HashMap<RowKey, PhoneNumber> = query::decode_all(&rows, rows::phone_number)?
        .into_iter()
        .map(|n| (row_key(&n), n))
        .collect();
    let mut assigned: Vec<PhoneNumber> = locked.values().cloned().collect();
    assigned.sort_by(|a, b| a.number.cmp(&b.number));
    let mut changes = Changes::new(locked);
    // Every one is assigned (selected so, and locked).
    for n in assigned.iter().filter_map(rules::unassigned) {
        changes.commit(NumberEventType::Unassigned, n);
    }
    changes.save(tx).await?;
    Ok(i64::try_from(assigned.len()).unwrap_or(i64::MAX))
}

/// A page of a carrier's numbers (`fetch` rows at most) and the total matching the filter.
pub async fn list(
    db: &impl GenericClient,
    carrier_id: &str,
    filter: &NumberFilter,
    after: Option<&str>,
    fetch: usize,
) -> PgResult<(Vec<PhoneNumber>, i64)> {
    const WHERE: &str = "carrier_id = $1 AND ($2::TEXT IS NULL OR tenant_id = $2)
        AND ($3::BIGINT IS NULL OR state = $3) AND ($4::BIGINT IS NULL OR update_time >= $4)";
    let state = filter.state.map(|s| i64::from(s.code()));
    let fetch = i64::try_from(fetch).unwrap_or(i64::MAX);
    let stmt = db
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM numbers WHERE {WHERE} AND ($5::TEXT IS NULL OR number > $5)
             ORDER BY number LIMIT $6"
        ))
        .await?;
    let items = db
        .query(
            &stmt,
            &[
                &carrier_id,
                &filter.tenant_id,
                &state,
                &filter.updated_since,
                &after,
                &fetch,
            ],
        )
        .await?;
    let items = query::decode_all(&items, rows::phone_number)?;
    let count = db
        .prepare_cached(&format!("SELECT count(*) FROM numbers WHERE {WHERE}"))
        .await?;
    let total: i64 = db
        .query_one(
            &count,
            &[
                &carrier_id,
                &filter.tenant_id,
                &state,
                &filter.updated_since,
            ],
        )
        .await?
        .get(0);
    Ok((items, total))
}

/// A carrier's events after `after`, in sequence order.
pub async fn events_after(
    db: &impl GenericClient,
    carrier_id: &str,
    after: i64,
    limit: usize,
) -> PgResult<Vec<NumberEvent>> {
    let sql = "SELECT sequence, event_type, snapshot, event_time FROM number_events
               WHERE carrier_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3";
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    query::all(db, sql, &[&carrier_id, &after, &limit], rows::number_event).await
}

/// The carrier's last number-event sequence (0 before its first event).
pub async fn event_head(db: &impl GenericClient, carrier_id: &str) -> PgResult<i64> {
    let sql = "SELECT number_event_seq FROM carrier_heads WHERE carrier_id = $1";
    Ok(query::first(db, sql, &[&carrier_id], rows::int)
        .await?
        .unwrap_or(0))
}

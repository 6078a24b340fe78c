//! Call records (the port of `sqlite::calls`): ingestion (ownership, create / revise /
//! duplicate / stale), reads, the feed, and the quality aggregates built or recomputed from them.
//!
//! A batch is ingested set-based, in a fixed number of round trips whatever its size: one
//! lookup of the named carriers, one of the tenant-side numbers, one of the stored call ids;
//! the outcomes are then decided in memory, record by record in batch order, exactly as the
//! SQLite backend decides them one row at a time (a later record of the batch sees what an
//! earlier one wrote); then one draw of each carrier's feed sequences, one multi-row INSERT of
//! the new records and one multi-row UPDATE of the revised ones.
//!
//! Concurrency (see the module docs of `postgres`): the stored rows are read without locks; a
//! revision's UPDATE only applies to the version it was decided against, and finding fewer
//! rows than decided makes the transaction run again ([`PgError::Conflict`]); a new call id
//! that a concurrent transaction inserted first hits the unique index and runs again too. The
//! rerun sees the winner's row and answers `Unchanged`, stale or `Revised` as SQLite would.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::types::ToSql;

use super::pool::{PgError, PgResult};
use super::query;
use crate::domain::{
    CallRecord, CallRecordFilter, IngestOutcome, QualityMetric, Refusal, now_micros,
};
use crate::store::media;
use crate::store::rules::{self, OwnerFact, OwnerQuestion};
use crate::store::{CallRecordCursor, KeyedPage, StoreError};
use crate::store::{rows, sql};

/// Every stored column but `id`, with its type (for `unnest` casts), in `store::rows::call_record`'s order.
const COLUMN_TYPES: [(&str, &str); 27] = [
    ("call_id", "TEXT"),
    ("carrier_id", "TEXT"),
    ("feed_sequence", "BIGINT"),
    ("version", "BIGINT"),
    ("content_hash", "BIGINT"),
    ("correlation_id", "TEXT"),
    ("tenant_id", "TEXT"),
    ("call_type", "BIGINT"),
    ("direction", "BIGINT"),
    ("caller_number", "TEXT"),
    ("callee_number", "TEXT"),
    ("user_sip_uri", "TEXT"),
    ("invite_time", "BIGINT"),
    ("start_time", "BIGINT"),
    ("end_time", "BIGINT"),
    ("duration_us", "BIGINT"),
    ("final_sip_code", "BIGINT"),
    ("final_sip_phrase", "TEXT"),
    ("q850_cause", "BIGINT"),
    ("successful", "BOOLEAN"),
    ("destination_context", "BIGINT"),
    ("usage_country_code", "TEXT"),
    ("trunk_fqdn", "TEXT"),
    ("media_streams", "BYTEA"),
    ("quality", "BIGINT"),
    ("poor_due_to", "BIGINT"),
    ("update_time", "BIGINT"),
];

/// The columns of [`COLUMN_TYPES`], comma-separated.
static COLUMNS: LazyLock<String> = LazyLock::new(|| {
    COLUMN_TYPES
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
});

/// The columns a call record is read with (`store::rows::call_record`), comma-separated.
pub(super) fn columns() -> &'static str {
    &COLUMNS
}

/// `$first::T1[], $first+1::T2[], ...` for the columns of [`COLUMN_TYPES`].
fn array_params(first: usize) -> String {
    COLUMN_TYPES
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| format!("${}::{ty}[]", first + i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// New records, one array per column; the identity column numbers them in array order.
static INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO call_records ({}) SELECT * FROM unnest({})",
        *COLUMNS,
        array_params(1)
    )
});

/// Revisions, in place (the row keeps its `id`, the listing's tie-breaker): `$1` the ids, `$2`
/// the versions the revisions were decided against, then one array per column.
static UPDATE: LazyLock<String> = LazyLock::new(|| {
    let set = COLUMN_TYPES
        .iter()
        .filter(|(name, _)| *name != "call_id")
        .map(|(name, _)| format!("{name} = u.{name}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "UPDATE call_records AS c SET {set}
           FROM unnest($1::BIGINT[], $2::BIGINT[], {}) AS u(id, old_version, {})
          WHERE c.id = u.id AND c.version = u.old_version",
        array_params(3),
        *COLUMNS
    )
});

/// Rows to write, one array per column of [`COLUMN_TYPES`] (in that order).
#[derive(Default)]
struct Columns<'a> {
    call_id: Vec<&'a str>,
    carrier_id: Vec<&'a str>,
    feed_sequence: Vec<i64>,
    version: Vec<i64>,
    content_hash: Vec<i64>,
    correlation_id: Vec<&'a str>,
    tenant_id: Vec<&'a str>,
    call_type: Vec<i64>,
    direction: Vec<i64>,
    caller_number: Vec<&'a str>,
    callee_number: Vec<&'a str>,
    user_sip_uri: Vec<&'a str>,
    invite_time: Vec<Option<i64>>,
    start_time: Vec<i64>,
    end_time: Vec<i64>,
    duration_us: Vec<i64>,
    final_sip_code: Vec<i64>,
    final_sip_phrase: Vec<&'a str>,
    q850_cause: Vec<i64>,
    successful: Vec<bool>,
    destination_context: Vec<Option<i64>>,
    usage_country_code: Vec<&'a str>,
    trunk_fqdn: Vec<&'a str>,
    media_streams: Vec<Vec<u8>>,
    quality: Vec<i64>,
    poor_due_to: Vec<i64>,
    update_time: Vec<i64>,
}

impl<'a> Columns<'a> {
    /// Adds `r` as stored for `carrier_id` at `feed_sequence`, at `now`.
    fn push(&mut self, r: &'a CallRecord, carrier_id: &'a str, feed_sequence: i64, now: i64) {
        self.call_id.push(&r.call_id);
        self.carrier_id.push(carrier_id);
        self.feed_sequence.push(feed_sequence);
        self.version.push(r.version);
        self.content_hash.push(r.content_hash);
        self.correlation_id.push(&r.correlation_id);
        self.tenant_id.push(&r.tenant_id);
        self.call_type.push(i64::from(r.call_type.code()));
        self.direction.push(i64::from(r.direction.code()));
        self.caller_number.push(&r.caller_number);
        self.callee_number.push(&r.callee_number);
        self.user_sip_uri.push(&r.user_sip_uri);
        self.invite_time.push(r.invite_time);
        self.start_time.push(r.start_time);
        self.end_time.push(r.end_time);
        self.duration_us.push(r.duration_us);
        self.final_sip_code.push(i64::from(r.final_sip_code));
        self.final_sip_phrase.push(&r.final_sip_phrase);
        self.q850_cause.push(i64::from(r.q850_cause));
        self.successful.push(r.successful);
        self.destination_context
            .push(r.destination_context.map(|c| i64::from(c.code())));
        self.usage_country_code.push(&r.usage_country_code);
        self.trunk_fqdn.push(&r.trunk_fqdn);
        self.media_streams.push(media::encode(&r.media_streams));
        self.quality.push(i64::from(r.quality.code()));
        self.poor_due_to
            .push(QualityMetric::to_mask(&r.poor_due_to));
        self.update_time.push(now);
    }

    /// The arrays as query parameters, in [`COLUMN_TYPES`] order.
    fn params(&self) -> [&(dyn ToSql + Sync); 27] {
        [
            &self.call_id,
            &self.carrier_id,
            &self.feed_sequence,
            &self.version,
            &self.content_hash,
            &self.correlation_id,
            &self.tenant_id,
            &self.call_type,
            &self.direction,
            &self.caller_number,
            &self.callee_number,
            &self.user_sip_uri,
            &self.invite_time,
            &self.start_time,
            &self.end_time,
            &self.duration_us,
            &self.final_sip_code,
            &self.final_sip_phrase,
            &self.q850_cause,
            &self.successful,
            &self.destination_context,
            &self.usage_country_code,
            &self.trunk_fqdn,
            &self.media_streams,
            &self.quality,
            &self.poor_due_to,
            &self.update_time,
        ]
    }
}

/// What the batch knows of one call id: as stored, then as each of the batch's records
/// leaves it.
struct Slot<'a> {
    /// The stored row's id; `None` for a call id this batch creates.
    id: Option<i64>,
    /// The stored row's version (what a revision's UPDATE is decided against).
    stored_version: i64,
    /// The current version, content hash and owner.
    version: i64,
    hash: i64,
    carrier_id: String,
    /// The stored row's owner and correlation id (what the pairing state must re-pair).
    stored: Option<(String, String)>,
    /// The batch's last write of this call id: the record and its feed sequence slot.
    write: Option<(&'a CallRecord, usize)>,
}

/// The owner of `r` or why it has none, from the carriers and numbers the batch looked up.
fn owner(
    r: &CallRecord,
    carriers: &HashSet<String>,
    numbers: &HashMap<String, String>,
) -> Result<String, Refusal> {
    let fact = match rules::owner_question(r) {
        OwnerQuestion::CarrierExists(carrier_id) => {
            OwnerFact::CarrierExists(carriers.contains(carrier_id))
        }
        OwnerQuestion::NumberHolder(number) => {
            OwnerFact::NumberHolder(numbers.get(number).cloned())
        }
    };
    rules::call_owner(r, fact)
}

/// Ingests each record independently (one outcome per record, in order).
pub async fn ingest(tx: &Transaction<'_>, records: &[CallRecord]) -> PgResult<Vec<IngestOutcome>> {
    let now = now_micros();

    // Who owns what: the named carriers that exist, the carriers of the tenant-side numbers.
    let named: Vec<&str> = distinct(
        records
            .iter()
            .filter(|r| !r.carrier_id.is_empty())
            .map(|r| r.carrier_id.as_str()),
    );
    let carriers: HashSet<String> = if named.is_empty() {
        HashSet::new()
    } else {
        let sql = "SELECT carrier_id FROM carriers WHERE carrier_id = ANY($1)";
        let found = query::all(tx, sql, &[&named], rows::text).await?;
        found.into_iter().collect()
    };
    let by_number: Vec<&str> = distinct(
        records
            .iter()
            .filter(|r| r.carrier_id.is_empty())
            .map(CallRecord::tenant_number),
    );
    let numbers: HashMap<String, String> = if by_number.is_empty() {
        HashMap::new()
    } else {
        // Every carrier's row of each number; the holder decided as on SQLite.
        let sql = "SELECT number, carrier_id, state, update_time FROM numbers
                    WHERE number = ANY($1)";
        let found = query::all(tx, sql, &[&by_number], rows::numbered_row).await?;
        let mut rows: HashMap<String, Vec<(String, i64, i64)>> = HashMap::new();
        for (number, row) in found {
            rows.entry(number).or_default().push(row);
        }
        rows.into_iter()
            .filter_map(|(number, rows)| Some((number, rules::number_holder(rows)?)))
            .collect()
    };

    // The stored rows of the batch's call ids.
    let call_ids: Vec<&str> = distinct(records.iter().map(|r| r.call_id.as_str()));
    let stmt = tx
        .prepare_cached(
            "SELECT call_id, id, version, content_hash, carrier_id, correlation_id
               FROM call_records WHERE call_id = ANY($1)",
        )
        .await?;
    let mut slots: HashMap<String, Slot<'_>> = tx
        .query(&stmt, &[&call_ids])
        .await?
        .iter()
        .map(|row| {
            let version: i64 = row.get(2);
            let slot = Slot {
                id: Some(row.get(1)),
                stored_version: version,
                version,
                hash: row.get(3),
                carrier_id: row.get(4),
                stored: Some((row.get(4), row.get(5))),
                write: None,
            };
            (row.get(0), slot)
        })
        .collect();

    // Decide, record by record. `writes` holds each write's carrier, in batch order: every
    // write draws the next sequence of its carrier, even one a later write of the same call id
    // replaces (as on SQLite, where each write takes the next sequence).
    let mut outcomes = Vec::with_capacity(records.len());
    let mut writes: Vec<String> = Vec::new();
    // Call ids in the order of their first write (new rows get ids in this order).
    let mut written: Vec<&str> = Vec::new();
    for r in records {
        let carrier_id = match owner(r, &carriers, &numbers) {
            Ok(carrier_id) => carrier_id,
            Err(reason) => {
                outcomes.push(IngestOutcome::Rejected(reason));
                continue;
            }
        };
        let outcome = match slots.entry(r.call_id.clone()) {
            Entry::Occupied(mut e) => {
                let slot = e.get_mut();
                let stored = (slot.version, slot.hash, slot.carrier_id.as_str());
                if let Some(refusal) = rules::ingest_refusal(Some(stored), r) {
                    refusal
                } else {
                    if slot.write.is_none() {
                        written.push(&r.call_id);
                    }
                    slot.version = r.version;
                    slot.hash = r.content_hash;
                    slot.carrier_id.clone_from(&carrier_id);
                    slot.write = Some((r, writes.len()));
                    writes.push(carrier_id.clone());
                    IngestOutcome::Revised(carrier_id)
                }
            }
            Entry::Vacant(e) => {
                written.push(&r.call_id);
                e.insert(Slot {
                    id: None,
                    stored_version: 0,
                    version: r.version,
                    hash: r.content_hash,
                    carrier_id: carrier_id.clone(),
                    stored: None,
                    write: Some((r, writes.len())),
                });
                writes.push(carrier_id.clone());
                IngestOutcome::Created(carrier_id)
            }
        };
        outcomes.push(outcome);
    }
    if writes.is_empty() {
        return Ok(outcomes);
    }

    // Each carrier's feed sequences for the batch, drawn in one statement that locks the
    // carriers' heads in ascending id order (until commit: feeds append in commit order).
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for carrier_id in &writes {
        *counts.entry(carrier_id.as_str()).or_default() += 1;
    }
    let (heads, counts): (Vec<&str>, Vec<i64>) = counts.into_iter().unzip();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO carrier_heads AS h (carrier_id, call_record_seq)
             SELECT c, n FROM unnest($1::TEXT[], $2::BIGINT[]) AS u(c, n) ORDER BY c
             ON CONFLICT (carrier_id) DO UPDATE
               SET call_record_seq = h.call_record_seq + excluded.call_record_seq
             RETURNING carrier_id, call_record_seq",
        )
        .await?;
    // Carrier id → the next sequence to hand out.
    let mut next: HashMap<String, i64> = HashMap::with_capacity(heads.len());
    for row in tx.query(&stmt, &[&heads, &counts]).await? {
        let carrier_id: String = row.get(0);
        let last: i64 = row.get(1);
        let n = heads
            .iter()
            .position(|c| *c == carrier_id)
            .map_or(0, |i| counts[i]);
        next.insert(carrier_id, last - n + 1);
    }
    let mut sequences = Vec::with_capacity(writes.len());
    for carrier_id in &writes {
        let seq = next.get_mut(carrier_id).ok_or_else(|| {
            PgError::Store(StoreError::Internal(format!(
                "no feed head drawn for carrier {carrier_id:?}"
            )))
        })?;
        sequences.push(*seq);
        *seq += 1;
    }

    // Write each call id's last version.
    let mut inserts = Columns::default();
    let mut updates = Columns::default();
    let mut update_ids: Vec<i64> = Vec::new();
    let mut update_versions: Vec<i64> = Vec::new();
    for call_id in written {
        let Some(slot) = slots.get(call_id) else {
            continue;
        };
        let Some((r, w)) = slot.write else {
            continue;
        };
        let (carrier_id, seq) = (writes[w].as_str(), sequences[w]);
        match slot.id {
            None => inserts.push(r, carrier_id, seq, now),
            Some(id) => {
                update_ids.push(id);
                update_versions.push(slot.stored_version);
                updates.push(r, carrier_id, seq, now);
            }
        }
    }
    if !inserts.call_id.is_empty() {
        let stmt = tx.prepare_cached(&INSERT).await?;
        tx.execute(&stmt, &inserts.params()).await?;
    }
    // The quality aggregates: each revised record's version as stored goes out (read before
    // it is replaced; the UPDATE below checks it is still the version decided against), each
    // written one comes in.
    let mut quality = crate::store::quality::Changes::default();
    if !update_ids.is_empty() {
        let sql = format!("SELECT {} FROM call_records WHERE id = ANY($1)", *COLUMNS);
        for old in query::all(tx, &sql, &[&update_ids], rows::call_record).await? {
            quality.record(&old.carrier_id, &old, -1);
        }
    }
    for slot in slots.values() {
        if let Some((r, w)) = slot.write {
            quality.record(&writes[w], r, 1);
        }
    }
    if !update_ids.is_empty() {
        let stmt = tx.prepare_cached(&UPDATE).await?;
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&update_ids, &update_versions];
        params.extend(updates.params());
        let updated = tx.execute(&stmt, &params).await?;
        if updated != update_ids.len() as u64 {
            // A concurrent writer revised (or removed) a row since it was read: decide again.
            return Err(PgError::Conflict);
        }
    }
    super::listen::notify(tx, super::listen::Channel::CallRecords).await?;
    // The pairing state: the written records' keys as they were and as they are.
    let mut touched = super::pairing::Touched::default();
    for slot in slots.values() {
        let Some((r, w)) = slot.write else {
            continue;
        };
        touched.note(&writes[w], &r.call_id, &r.correlation_id);
        if let (Some(id), Some((owner, correlation_id))) = (slot.id, &slot.stored) {
            touched.note_old(owner, &r.call_id, correlation_id);
            if *correlation_id != r.correlation_id {
                touched.refreshed_record(id);
            }
        }
    }
    if super::pairing::repair(tx, &touched).await? {
        super::listen::notify(tx, super::listen::Channel::Reconciliation).await?;
    }
    super::quality::apply(tx, quality).await?;
    Ok(outcomes)
}

/// The distinct values of `items`, in first-seen order.
fn distinct<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    items.filter(|item| seen.insert(*item)).collect()
}

/// One record of a carrier.
pub async fn get(
    db: &impl GenericClient,
    carrier_id: &str,
    call_id: &str,
) -> PgResult<Option<CallRecord>> {
    let stmt = db
        .prepare_cached(&format!(
            "SELECT {} FROM call_records WHERE call_id = $1 AND carrier_id = $2",
            *COLUMNS
        ))
        .await?;
    let row = db.query_opt(&stmt, &[&call_id, &carrier_id]).await?;
    Ok(row.map(|r| rows::call_record(&r)).transpose()?)
}

/// A page of a carrier's records by (start time, id). Only the filters that are set become SQL
/// conditions (one prepared statement per combination), so the planner can use the
/// (carrier_id, start_time, id) index for the window and the cursor.
pub async fn list(
    db: &impl GenericClient,
    carrier_id: &str,
    f: &CallRecordFilter,
    after: Option<CallRecordCursor>,
    limit: usize,
) -> PgResult<KeyedPage<CallRecord, CallRecordCursor>> {
    let mut sql = format!(
        "SELECT {}, id FROM call_records WHERE carrier_id = $1",
        *COLUMNS
    );
    let mut args: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(carrier_id.to_owned())];
    // Each ` AND clause`, its `?`s becoming the next numbered parameters.
    for (clause, values) in sql::call_record_conditions(f, after) {
        sql.push_str(" AND ");
        let mut parts = clause.split('?');
        sql.push_str(parts.next().unwrap_or_default());
        for (part, value) in parts.zip(values) {
            args.push(match value {
                sql::Bound::Int(i) => Box::new(i),
                sql::Bound::Text(t) => Box::new(t),
            });
            sql.push_str(&format!("${}{part}", args.len()));
        }
    }
    args.push(Box::new(rows::fetch(limit)));
    sql.push_str(&format!(" ORDER BY start_time, id LIMIT ${}", args.len()));
    let stmt = db.prepare_cached(&sql).await?;
    let params: Vec<&(dyn ToSql + Sync)> = args
        .iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let found = db.query(&stmt, &params).await?;
    let page = query::decode_all(&found, rows::call_record_listed)?;
    Ok(rows::limited(page, limit))
}

/// A carrier's feed after `after`.
pub async fn feed(
    db: &impl GenericClient,
    carrier_id: &str,
    after: i64,
    limit: usize,
) -> PgResult<Vec<CallRecord>> {
    let stmt = db
        .prepare_cached(&format!(
            "SELECT {} FROM call_records WHERE carrier_id = $1 AND feed_sequence > $2
             ORDER BY feed_sequence LIMIT $3",
            *COLUMNS
        ))
        .await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let found = db.query(&stmt, &[&carrier_id, &after, &limit]).await?;
    query::decode_all(&found, rows::call_record)
}

/// The carrier's last feed sequence (0 before its first record).
pub async fn head(db: &impl GenericClient, carrier_id: &str) -> PgResult<i64> {
    let sql = "SELECT call_record_seq FROM carrier_heads WHERE carrier_id = $1";
    Ok(query::first(db, sql, &[&carrier_id], rows::int)
        .await?
        .unwrap_or(0))
}

/// The question answered from the records themselves, every record of the period read and
/// aggregated: the reference (see [`crate::store::quality::recomputed`]).
pub async fn quality_reference(
    db: &impl GenericClient,
    q: &crate::domain::QualityQuery,
) -> PgResult<Vec<crate::store::quality::QualityRow>> {
    let carriers: Vec<String> = match &q.carrier_id {
        Some(c) => vec![c.clone()],
        None => db
            .query("SELECT carrier_id FROM carriers", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect(),
    };
    let hour = crate::store::pairing::HOUR_US;
    let (from, to) = (q.start_hour * hour, q.end_hour * hour);
    let sql = format!(
        "SELECT {}, id FROM call_records
          WHERE carrier_id = $1 AND start_time >= $2 AND start_time < $3 AND id > $4
          ORDER BY id LIMIT 10000",
        columns()
    );
    let mut changes = crate::store::quality::Changes::default();
    for carrier_id in &carriers {
        let mut after = 0_i64;
        loop {
            let rows = query::all(
                db,
                &sql,
                &[carrier_id, &from, &to, &after],
                crate::store::rows::call_record_listed,
            )
            .await?;
            let Some((_, (_, last))) = rows.last() else {
                break;
            };
            after = *last;
            for (record, _) in &rows {
                changes.record(carrier_id, record, 1);
            }
        }
    }
    Ok(crate::store::quality::recomputed(q, changes).map_err(StoreError::from)?)
}

/// Builds every carrier's cells (empty before) from the stored records, 10,000 at a time: the
/// migration that adds them runs it once, logging each carrier.
pub async fn build_quality(db: &impl GenericClient) -> PgResult<()> {
    let carriers: Vec<String> = db
        .query(
            "SELECT DISTINCT carrier_id FROM call_records ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let total = carriers.len();
    let sql = format!(
        "SELECT {}, id FROM call_records WHERE carrier_id = $1 AND id > $2 ORDER BY id LIMIT 10000",
        columns()
    );
    for (n, carrier_id) in carriers.iter().enumerate() {
        let started = std::time::Instant::now();
        let (mut after, mut records) = (0_i64, 0_u64);
        loop {
            let rows = query::all(
                db,
                &sql,
                &[carrier_id, &after],
                crate::store::rows::call_record_listed,
            )
            .await?;
            let Some((_, (_, last))) = rows.last() else {
                break;
            };
            after = *last;
            let mut changes = crate::store::quality::Changes::default();
            for (record, _) in &rows {
                changes.record(carrier_id, record, 1);
            }
            records += rows.len() as u64;
            super::quality::apply(db, changes).await?;
        }
        tracing::info!(
            carrier = %carrier_id,
            records,
            took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            done = n + 1,
            of = total,
            "quality aggregates built for a carrier"
        );
    }
    Ok(())
}

//! Stored rows to domain values, written once for both backends.
//!
//! Both schemas keep the same columns in the same order (each area's `COLUMNS`), so how a row
//! becomes a carrier, a key, a consent, a number, a call record, a duration report, an audit
//! event, a discrepancy or a summary is decided here, including what an unknown stored code
//! reads as. A backend only adapts its driver's row to [`Row`].

use crate::domain::{
    ApiKey, Assignment, AssignmentType, AuditEvent, CallDirection, CallDuration, CallRecord,
    CallType, Capability, Carrier, Consent, ConsentStatus, Contact, DestinationContext,
    Discrepancy, DiscrepancyCursor, DiscrepancyKind, DurationReport, MediaStream, Micros,
    NumberEvent, NumberEventType, NumberState, PhoneNumber, QualityMetric, QualityVerdict,
    ReconciliationChange, ReconciliationEntry, Role, UsageRow,
};

use crate::store::{CallRecordCursor, StoreError, StoreResult};

/// How many rows a page of `limit` asks the database for: one more, which says whether more
/// follow.
pub fn fetch(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1
}

/// A page from `limit + 1` fetched rows ([`fetch`]), and how many match in all.
pub fn page<T>(items: Vec<T>, limit: usize, total: i64) -> crate::domain::Page<T> {
    let (items, more) = limited(items, limit);
    crate::domain::Page { items, more, total }
}

/// At most `limit` of `limit + 1` fetched rows ([`fetch`]), and whether more follow (the extra
/// row says so): a keyset page.
pub fn limited<T>(mut rows: Vec<T>, limit: usize) -> (Vec<T>, bool) {
    let more = rows.len() > limit;
    rows.truncate(limit);
    (rows, more)
}

/// The figures a reconciliation summary query returns, in its column order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SummaryCounts {
    /// The platform's records of the period.
    pub platform_count: i64,
    /// Their summed durations.
    pub platform_duration_us: i64,
    /// Pairs whose durations agree within the tolerance.
    pub matched: i64,
    /// Pairs whose durations differ by more.
    pub mismatched: i64,
    /// The summed durations of the paired reports.
    pub paired_report_us: i64,
    /// The carrier's reports of the period that paired with nothing.
    pub unmatched: i64,
    /// Their summed durations.
    pub unmatched_us: i64,
}

impl From<SummaryCounts> for crate::domain::ReconciliationSummary {
    fn from(c: SummaryCounts) -> Self {
        crate::domain::ReconciliationSummary {
            platform_count: c.platform_count,
            platform_duration_us: c.platform_duration_us,
            carrier_count: c.matched + c.mismatched + c.unmatched,
            carrier_duration_us: c.paired_report_us + c.unmatched_us,
            matched: c.matched,
            mismatched: c.mismatched,
            missing_on_carrier: c.platform_count - c.matched - c.mismatched,
            missing_on_platform: c.unmatched,
        }
    }
}

/// A consent's contact as it is stored (JSON).
pub fn contact_json(contact: &Contact) -> Result<String, StoreError> {
    serde_json::to_string(contact).map_err(|e| StoreError::Internal(e.to_string()))
}

/// A shared decoder: one stored row to one value.
pub type Decode<T> = fn(&dyn Row) -> StoreResult<T>;

/// A result row of either backend, read by column position. Object-safe, so that one decoder
/// (`fn(&dyn Row)`) serves both drivers' rows; each read goes straight to the driver (the feed
/// decodes millions of columns a second).
pub trait Row {
    /// Column `i`, an integer; `None` for NULL.
    fn int(&self, i: usize) -> StoreResult<Option<i64>>;
    /// Column `i`, text; `None` for NULL.
    fn text(&self, i: usize) -> StoreResult<Option<String>>;
    /// Column `i`, bytes; `None` for NULL.
    fn bytes(&self, i: usize) -> StoreResult<Option<Vec<u8>>>;
    /// Column `i`, a boolean (SQLite keeps 0 or 1); `None` for NULL.
    fn flag(&self, i: usize) -> StoreResult<Option<bool>>;
    /// Column `i` holding a call record's media streams (their encodings differ by backend).
    fn media_streams(&self, i: usize) -> StoreResult<Vec<MediaStream>>;
}

impl dyn Row + '_ {
    /// Column `i` as `T`: a NULL where `T` wants none, or a value of another type, is an error
    /// that names the column.
    pub fn col<T: Column>(&self, i: usize) -> StoreResult<T> {
        T::read(self, i)
    }
}

/// A Rust value a column reads as.
pub trait Column: Sized {
    /// Column `i` of `r`.
    fn read(r: &dyn Row, i: usize) -> StoreResult<Self>;
}

/// A NULL where a value was wanted.
fn null(i: usize) -> StoreError {
    StoreError::Internal(format!("column {i} is NULL"))
}

impl Column for Option<i64> {
    fn read(r: &dyn Row, i: usize) -> StoreResult<Self> {
        r.int(i)
    }
}

impl Column for i64 {
    fn read(r: &dyn Row, i: usize) -> StoreResult<Self> {
        r.int(i)?.ok_or_else(|| null(i))
    }
}

impl Column for Option<String> {
    fn read(r: &dyn Row, i: usize) -> StoreResult<Self> {
        r.text(i)
    }
}

impl Column for String {
    fn read(r: &dyn Row, i: usize) -> StoreResult<Self> {
        r.text(i)?.ok_or_else(|| null(i))
    }
}

impl Column for Vec<u8> {
    fn read(r: &dyn Row, i: usize) -> StoreResult<Self> {
        r.bytes(i)?.ok_or_else(|| null(i))
    }
}

impl Column for bool {
    fn read(r: &dyn Row, i: usize) -> StoreResult<Self> {
        r.flag(i)?.ok_or_else(|| null(i))
    }
}

/// rusqlite checks each value's type itself (text must be UTF-8; an integer that a bool is
/// read from must be 0 or 1) and names the column when it does not read.
impl Row for rusqlite::Row<'_> {
    fn int(&self, i: usize) -> StoreResult<Option<i64>> {
        Ok(self.get(i)?)
    }

    fn text(&self, i: usize) -> StoreResult<Option<String>> {
        Ok(self.get(i)?)
    }

    fn bytes(&self, i: usize) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.get(i)?)
    }

    fn flag(&self, i: usize) -> StoreResult<Option<bool>> {
        Ok(self.get(i)?)
    }

    fn media_streams(&self, i: usize) -> StoreResult<Vec<MediaStream>> {
        Ok(crate::store::media::decode_sqlite(self.get_ref(i)?))
    }
}

/// tokio-postgres checks each column's declared type against the Rust type; integers of any
/// width read as `i64`. A column of another type (an uncast NUMERIC `sum`, a float, a time)
/// is an error that names its type: the queries cast what they select.
impl Row for tokio_postgres::Row {
    fn int(&self, i: usize) -> StoreResult<Option<i64>> {
        use tokio_postgres::types::Type;
        match self.columns().get(i).map(|c| c.type_()) {
            Some(&Type::INT4) => Ok(pg(self.try_get::<_, Option<i32>>(i), i)?.map(i64::from)),
            Some(&Type::INT2) => Ok(pg(self.try_get::<_, Option<i16>>(i), i)?.map(i64::from)),
            _ => pg(self.try_get(i), i),
        }
    }

    fn text(&self, i: usize) -> StoreResult<Option<String>> {
        pg(self.try_get(i), i)
    }

    fn bytes(&self, i: usize) -> StoreResult<Option<Vec<u8>>> {
        pg(self.try_get(i), i)
    }

    fn flag(&self, i: usize) -> StoreResult<Option<bool>> {
        pg(self.try_get(i), i)
    }

    fn media_streams(&self, i: usize) -> StoreResult<Vec<MediaStream>> {
        let bytes: &[u8] = pg(self.try_get(i), i)?;
        Ok(crate::store::media::decode(bytes))
    }
}

/// A PostgreSQL column read, its error naming the column.
fn pg<T>(read: Result<T, tokio_postgres::Error>, i: usize) -> StoreResult<T> {
    read.map_err(|e| StoreError::Internal(format!("column {i}: {e}")))
}

/// A stored code column: `None` when it is out of range. It then reads as the caller's default,
/// like any unknown code, on both backends: a row that a newer version wrote with a code this
/// one does not know still reads (a call type as a user call, a state as released, ...).
fn code(r: &dyn Row, i: usize) -> StoreResult<Option<i32>> {
    Ok(i32::try_from(r.col::<i64>(i)?).ok())
}

/// A nullable code column.
fn optional_code(r: &dyn Row, i: usize) -> StoreResult<Option<i32>> {
    Ok(r.col::<Option<i64>>(i)?.and_then(|c| i32::try_from(c).ok()))
}

/// The first column, an integer (a count, a sequence head, an id).
pub fn int(r: &dyn Row) -> StoreResult<i64> {
    r.col(0)
}

/// The first column, text.
pub fn text(r: &dyn Row) -> StoreResult<String> {
    r.col(0)
}

/// The first two columns, text.
pub fn text_pair(r: &dyn Row) -> StoreResult<(String, String)> {
    Ok((r.col(0)?, r.col(1)?))
}

/// `carrier_id, state, update_time` of a number's row (for [`super::rules::number_holder`]).
pub fn number_row(r: &dyn Row) -> StoreResult<(String, i64, i64)> {
    Ok((r.col(0)?, r.col(1)?, r.col(2)?))
}

/// `number, carrier_id, state, update_time` of a number's row.
pub fn numbered_row(r: &dyn Row) -> StoreResult<(String, (String, i64, i64))> {
    Ok((r.col(0)?, (r.col(1)?, r.col(2)?, r.col(3)?)))
}

/// `sequence, event_type, snapshot, event_time` of a number event: an unknown event type or a
/// snapshot that does not read is an error, the same way for both backends.
pub fn number_event(r: &dyn Row) -> StoreResult<NumberEvent> {
    let sequence: i64 = r.col(0)?;
    let code: i64 = r.col(1)?;
    let event_type = i32::try_from(code)
        .ok()
        .and_then(NumberEventType::from_code)
        .ok_or_else(|| StoreError::Internal(format!("unknown event type {code}")))?;
    let snapshot: String = r.col(2)?;
    let number = serde_json::from_str(&snapshot)
        .map_err(|e| StoreError::Internal(format!("event {sequence}: {e}")))?;
    Ok(NumberEvent {
        sequence,
        event_type,
        number,
        event_time: r.col(3)?,
    })
}

/// `carrier_id, display_name, create_time`.
pub fn carrier(r: &dyn Row) -> StoreResult<Carrier> {
    Ok(Carrier {
        carrier_id: r.col(0)?,
        display_name: r.col(1)?,
        create_time: r.col(2)?,
    })
}

/// `key_id, role, carrier_id, display_name, secret_hash, create_time, last_use_time,
/// revoke_time`. A role or hash that does not decode is an error, never a guess: guessing could
/// grant access.
pub fn api_key(r: &dyn Row) -> StoreResult<ApiKey> {
    let code: i64 = r.col(1)?;
    let role = i32::try_from(code)
        .ok()
        .and_then(Role::from_code)
        .ok_or_else(|| StoreError::Internal(format!("an API key has role code {code}")))?;
    let hash: Vec<u8> = r.col(4)?;
    let secret_hash: [u8; 32] = hash.try_into().map_err(|h: Vec<u8>| {
        StoreError::Internal(format!("an API key's secret_hash has {} bytes", h.len()))
    })?;
    Ok(ApiKey {
        key_id: r.col(0)?,
        role,
        carrier_id: r.col(2)?,
        display_name: r.col(3)?,
        secret_hash,
        create_time: r.col(5)?,
        last_use_time: r.col(6)?,
        revoke_time: r.col(7)?,
    })
}

/// `carrier_id, tenant_id, status, countries, contact, consent_time, update_time`: the status
/// code, the countries comma-separated, the contact as JSON. An unknown status reads as
/// removed (it grants nothing); a contact that does not read is empty.
pub fn consent(r: &dyn Row) -> StoreResult<Consent> {
    let countries: String = r.col(3)?;
    let contact: String = r.col(4)?;
    Ok(Consent {
        carrier_id: r.col(0)?,
        tenant_id: r.col(1)?,
        status: code(r, 2)?
            .and_then(ConsentStatus::from_code)
            .unwrap_or(ConsentStatus::Removed),
        countries: countries
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect(),
        contact: serde_json::from_str(&contact).unwrap_or_default(),
        consent_time: r.col(5)?,
        update_time: r.col(6)?,
    })
}

/// `number, carrier_id, tenant_id, state, assignment_type, sip_uri, user_id, assign_time,
/// capabilities, civic_address_id, location_id, country_code, provision_time, update_time,
/// version`. An unknown state reads as released; the assignment is kept only while assigned.
pub fn phone_number(r: &dyn Row) -> StoreResult<PhoneNumber> {
    let state = code(r, 3)?
        .and_then(NumberState::from_code)
        .unwrap_or(NumberState::Released);
    let assignment_type = optional_code(r, 4)?.and_then(AssignmentType::from_code);
    let assignment = match (state, assignment_type) {
        (NumberState::Assigned, Some(assignment_type)) => Some(Assignment {
            assignment_type,
            sip_uri: r.col::<Option<String>>(5)?.unwrap_or_default(),
            user_id: r.col::<Option<String>>(6)?.unwrap_or_default(),
            assign_time: r.col::<Option<i64>>(7)?.unwrap_or_default(),
        }),
        _ => None,
    };
    Ok(PhoneNumber {
        number: r.col(0)?,
        carrier_id: r.col(1)?,
        tenant_id: r.col(2)?,
        state,
        assignment,
        capabilities: Capability::from_mask(r.col(8)?),
        civic_address_id: r.col(9)?,
        location_id: r.col(10)?,
        country_code: r.col(11)?,
        provision_time: r.col(12)?,
        update_time: r.col(13)?,
        version: r.col(14)?,
    })
}

/// The call-record columns (`calls::COLUMNS`, 27 of them, media streams at 23).
pub fn call_record(r: &dyn Row) -> StoreResult<CallRecord> {
    Ok(CallRecord {
        call_id: r.col(0)?,
        carrier_id: r.col(1)?,
        feed_sequence: r.col(2)?,
        version: r.col(3)?,
        content_hash: r.col(4)?,
        correlation_id: r.col(5)?,
        tenant_id: r.col(6)?,
        call_type: code(r, 7)?
            .and_then(CallType::from_code)
            .unwrap_or(CallType::UserOut),
        direction: code(r, 8)?
            .and_then(CallDirection::from_code)
            .unwrap_or(CallDirection::Outbound),
        caller_number: r.col(9)?,
        callee_number: r.col(10)?,
        user_sip_uri: r.col(11)?,
        invite_time: r.col(12)?,
        start_time: r.col(13)?,
        end_time: r.col(14)?,
        duration_us: r.col(15)?,
        final_sip_code: code(r, 16)?.unwrap_or_default(),
        final_sip_phrase: r.col(17)?,
        q850_cause: code(r, 18)?.unwrap_or_default(),
        successful: r.col(19)?,
        destination_context: optional_code(r, 20)?.and_then(DestinationContext::from_code),
        usage_country_code: r.col(21)?,
        trunk_fqdn: r.col(22)?,
        media_streams: r.media_streams(23)?,
        quality: code(r, 24)?
            .and_then(QualityVerdict::from_code)
            .unwrap_or(QualityVerdict::Unclassified),
        poor_due_to: QualityMetric::from_mask(r.col(25)?),
        update_time: r.col(26)?,
    })
}

/// A listed call record: its columns, then its row `id` (column 27), and its cursor.
pub fn call_record_listed(r: &dyn Row) -> StoreResult<(CallRecord, CallRecordCursor)> {
    let record = call_record(r)?;
    let cursor = (record.start_time, r.col(27)?);
    Ok((record, cursor))
}

/// A duration report in columns `first..first + 7`: `record_id, call_id, correlation_id,
/// caller_number, callee_number, start_time, duration_us`.
pub fn duration_report(r: &dyn Row, first: usize) -> StoreResult<DurationReport> {
    Ok(DurationReport {
        record_id: r.col(first)?,
        call_id: r.col(first + 1)?,
        correlation_id: r.col(first + 2)?,
        caller_number: r.col(first + 3)?,
        callee_number: r.col(first + 4)?,
        start_time: r.col(first + 5)?,
        duration_us: r.col(first + 6)?,
    })
}

/// A stored report: its report columns, then `carrier_id, corrections, create_time,
/// update_time`.
pub fn call_duration(r: &dyn Row) -> StoreResult<CallDuration> {
    Ok(CallDuration {
        report: duration_report(r, 0)?,
        carrier_id: r.col(7)?,
        corrections: i32::try_from(r.col::<i64>(8)?).unwrap_or(i32::MAX),
        create_time: r.col(9)?,
        update_time: r.col(10)?,
    })
}

/// A listed stored report: its columns, then its row `id` (column 11), and its cursor
/// `(start_time, id)`.
pub fn call_duration_listed(r: &dyn Row) -> StoreResult<(CallDuration, (Micros, i64))> {
    let d = call_duration(r)?;
    let cursor = (d.report.start_time, r.col(11)?);
    Ok((d, cursor))
}

/// `id, time, key_id, carrier_id, role, rpc, resource_kind, item_count, outcome, source`.
pub fn audit_event(r: &dyn Row) -> StoreResult<AuditEvent> {
    Ok(AuditEvent {
        id: r.col(0)?,
        time: r.col(1)?,
        key_id: r.col(2)?,
        carrier_id: r.col(3)?,
        role: r.col(4)?,
        rpc: r.col(5)?,
        resource_kind: r.col(6)?,
        item_count: r.col(7)?,
        outcome: r.col(8)?,
        source: r.col(9)?,
    })
}

/// A discrepancy query's row, `kind, start_time, key, call_id, correlation_id, record_id,
/// caller_number, callee_number, platform duration, carrier duration`, and its cursor.
pub fn discrepancy(r: &dyn Row) -> StoreResult<(Discrepancy, DiscrepancyCursor)> {
    let kind_code = code(r, 0)?.unwrap_or_default();
    let start_time: i64 = r.col(1)?;
    let key: i64 = r.col(2)?;
    Ok((
        Discrepancy {
            kind: DiscrepancyKind::from_code(kind_code).unwrap_or(DiscrepancyKind::Mismatched),
            start_time,
            call_id: r.col(3)?,
            correlation_id: r.col(4)?,
            record_id: r.col(5)?,
            caller_number: r.col(6)?,
            callee_number: r.col(7)?,
            platform_duration_us: r.col(8)?,
            carrier_duration_us: r.col(9)?,
        },
        (start_time, kind_code, key),
    ))
}

/// A change of the reconciliation feed: `sequence, entry (1 a record's, 2 a lone report's),
/// removed (0 or 1), call_id, correlation_id, record_id, start_time, platform_us, carrier_us`.
pub fn reconciliation_change(r: &dyn Row) -> StoreResult<ReconciliationChange> {
    let entry: i64 = r.col(1)?;
    let removed: i64 = r.col(2)?;
    Ok(ReconciliationChange {
        sequence: r.col(0)?,
        entry: if entry == 1 {
            ReconciliationEntry::Record
        } else {
            ReconciliationEntry::Report
        },
        removed: removed != 0,
        call_id: r.col(3)?,
        correlation_id: r.col(4)?,
        record_id: r.col(5)?,
        start_time: r.col(6)?,
        platform_duration_us: r.col(7)?,
        carrier_duration_us: r.col(8)?,
    })
}

/// A summary query's one row, in [`SummaryCounts`]' order.
pub fn summary_counts(r: &dyn Row) -> StoreResult<SummaryCounts> {
    Ok(SummaryCounts {
        platform_count: r.col(0)?,
        platform_duration_us: r.col(1)?,
        matched: r.col(2)?,
        mismatched: r.col(3)?,
        paired_report_us: r.col(4)?,
        unmatched: r.col(5)?,
        unmatched_us: r.col(6)?,
    })
}

/// A usage query's row: `day, number, direction, calls, duration, operator count`.
pub fn usage_row(r: &dyn Row) -> StoreResult<UsageRow> {
    Ok(UsageRow {
        day: r.col(0)?,
        number: r.col(1)?,
        direction: code(r, 2)?.and_then(CallDirection::from_code),
        calls: r.col(3)?,
        duration_us: r.col(4)?,
        operator_count: r.col(5)?,
    })
}

//! SQL that both backends build alike: the conditions of a call-record listing, and who a
//! reconciliation query covers. Each backend writes its own placeholders and dialect.

/// Who a reconciliation query covers: one carrier (its records and reports), or one tenant
/// (its records, for usage; reports only count through their match). Each backend's
/// `pairs_cte` writes its SQL for either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A carrier's period.
    Carrier,
    /// A tenant's period.
    Tenant,
}

/// A value a listing's condition compares a column with.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    /// An integer column (times, codes, ids).
    Int(i64),
    /// A text column.
    Text(String),
}

/// The conditions of a call-record listing after `carrier_id = ?`: only the filters that are
/// set (so each combination is its own prepared statement and the planner can use the
/// `(carrier_id, start_time)` index), then the cursor. Each is SQL with `?` placeholders and
/// the values they take, in order.
pub fn call_record_conditions(
    f: &crate::domain::CallRecordFilter,
    after: Option<super::CallRecordCursor>,
) -> Vec<(&'static str, Vec<Bound>)> {
    let mut out = Vec::new();
    if let Some(from) = f.from {
        out.push(("start_time >= ?", vec![Bound::Int(from)]));
    }
    if let Some(to) = f.to {
        out.push(("start_time < ?", vec![Bound::Int(to)]));
    }
    if let Some(t) = &f.tenant_id {
        out.push(("tenant_id = ?", vec![Bound::Text(t.clone())]));
    }
    if let Some(n) = &f.number {
        out.push((
            "(caller_number = ? OR callee_number = ?)",
            vec![Bound::Text(n.clone()), Bound::Text(n.clone())],
        ));
    }
    if let Some(d) = f.direction {
        out.push(("direction = ?", vec![Bound::Int(i64::from(d.code()))]));
    }
    if let Some(t) = f.call_type {
        out.push(("call_type = ?", vec![Bound::Int(i64::from(t.code()))]));
    }
    if let Some(q) = f.quality {
        out.push(("quality = ?", vec![Bound::Int(i64::from(q.code()))]));
    }
    if let Some((start, id)) = after {
        out.push((
            "(start_time, id) > (?, ?)",
            vec![Bound::Int(start), Bound::Int(id)],
        ));
    }
    out
}

//! What the retention policy expires, shared by the backends: each kind of data and its cutoff.

use crate::domain::{Micros, RetentionPolicy};

/// Rows one purge step deletes at most: a large purge never holds the writer for long.
pub const PURGE_CHUNK: i64 = 5_000;

/// What aged out, for one kind of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiring {
    /// Call records older than the cutoff.
    CallRecords,
    /// Duration reports (with their history).
    CallDurations,
    /// Entries removed from the carriers' reconciliation feeds, kept for the longer of the
    /// records' and the reports' retention after their removal (a follower that resumes within
    /// it misses nothing; one further behind is told to replay); and the tenants' usage lines
    /// left with no call.
    ReconciliationRemovals,
    /// Released numbers (with their events).
    ReleasedNumbers,
    /// Audit events.
    AuditEvents,
}

impl Expiring {
    /// Every kind, in purge order.
    pub const ALL: [Expiring; 5] = [
        Expiring::CallRecords,
        Expiring::CallDurations,
        Expiring::ReconciliationRemovals,
        Expiring::ReleasedNumbers,
        Expiring::AuditEvents,
    ];

    /// The cutoff for this kind under `policy` at `now`: older than this goes.
    pub fn cutoff(self, policy: &RetentionPolicy, now: Micros) -> Micros {
        let days = match self {
            Expiring::CallRecords => policy.call_record_days,
            Expiring::CallDurations => policy.call_duration_days,
            Expiring::ReconciliationRemovals => {
                policy.call_record_days.max(policy.call_duration_days)
            }
            Expiring::ReleasedNumbers => policy.released_number_days,
            Expiring::AuditEvents => policy.audit_event_days,
        };
        now.saturating_sub(i64::from(days).saturating_mul(crate::domain::DAY_US))
    }
}

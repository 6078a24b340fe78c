//! Schema migrations (rusqlite_migration keeps the version in `PRAGMA user_version`).
//!
//! Append new migrations; never edit one that has shipped.

use rusqlite_migration::{M, Migrations};

/// Every migration, in order.
pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            r#"
CREATE TABLE carriers (
    carrier_id   TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    create_time  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE api_keys (
    key_id        TEXT PRIMARY KEY,
    role          INTEGER NOT NULL,
    carrier_id    TEXT REFERENCES carriers(carrier_id),
    display_name  TEXT NOT NULL,
    secret_hash   BLOB NOT NULL,
    create_time   INTEGER NOT NULL,
    last_use_time INTEGER,
    revoke_time   INTEGER
) WITHOUT ROWID;
CREATE INDEX api_keys_by_carrier ON api_keys(carrier_id, key_id);

CREATE TABLE consents (
    carrier_id      TEXT NOT NULL REFERENCES carriers(carrier_id),
    tenant_id       TEXT NOT NULL,
    status          INTEGER NOT NULL,
    countries       TEXT NOT NULL,
    contact         TEXT NOT NULL,
    consent_time    INTEGER NOT NULL,
    update_time     INTEGER NOT NULL,
    PRIMARY KEY (carrier_id, tenant_id)
) WITHOUT ROWID;

CREATE TABLE numbers (
    number           TEXT PRIMARY KEY,
    carrier_id       TEXT NOT NULL REFERENCES carriers(carrier_id),
    tenant_id        TEXT NOT NULL,
    state            INTEGER NOT NULL,
    assignment_type  INTEGER,
    sip_uri          TEXT,
    user_id          TEXT,
    assign_time      INTEGER,
    capabilities     INTEGER NOT NULL,
    civic_address_id TEXT NOT NULL,
    location_id      TEXT NOT NULL,
    country_code     TEXT NOT NULL,
    provision_time   INTEGER NOT NULL,
    update_time      INTEGER NOT NULL,
    version          INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX numbers_by_carrier ON numbers(carrier_id, number);

-- The number as it became is kept as JSON: events are immutable history, read back whole.
CREATE TABLE number_events (
    carrier_id  TEXT NOT NULL,
    sequence    INTEGER NOT NULL,
    event_type  INTEGER NOT NULL,
    snapshot    TEXT NOT NULL,
    event_time  INTEGER NOT NULL,
    PRIMARY KEY (carrier_id, sequence)
) WITHOUT ROWID;
"#,
        ),
        // Call records. A rowid table (not WITHOUT ROWID on the random `call_id`): inserts append
        // to the table b-tree, and only the `call_id` index takes random writes.
        M::up(
            r#"
CREATE TABLE call_records (
    id                  INTEGER PRIMARY KEY,
    call_id             TEXT NOT NULL UNIQUE,
    carrier_id          TEXT NOT NULL,
    feed_sequence       INTEGER NOT NULL,
    version             INTEGER NOT NULL,
    content_hash        INTEGER NOT NULL,
    correlation_id      TEXT NOT NULL,
    tenant_id           TEXT NOT NULL,
    call_type           INTEGER NOT NULL,
    direction           INTEGER NOT NULL,
    caller_number       TEXT NOT NULL,
    callee_number       TEXT NOT NULL,
    user_sip_uri        TEXT NOT NULL,
    invite_time         INTEGER,
    start_time          INTEGER NOT NULL,
    end_time            INTEGER NOT NULL,
    duration_us         INTEGER NOT NULL,
    final_sip_code      INTEGER NOT NULL,
    final_sip_phrase    TEXT NOT NULL,
    q850_cause          INTEGER NOT NULL,
    successful          INTEGER NOT NULL,
    destination_context INTEGER,
    usage_country_code  TEXT NOT NULL,
    trunk_fqdn          TEXT NOT NULL,
    media_streams       TEXT NOT NULL,
    quality             INTEGER NOT NULL,
    poor_due_to         INTEGER NOT NULL,
    update_time         INTEGER NOT NULL
);
-- The feed: a carrier's records in commit order.
CREATE UNIQUE INDEX call_records_feed ON call_records(carrier_id, feed_sequence);
-- Listings: a carrier's records by start time (the rowid breaks ties, in every index).
CREATE INDEX call_records_by_start ON call_records(carrier_id, start_time);
"#,
        ),
        // Carriers' duration reports, their correction history, and the indexes reconciliation
        // and usage join on.
        M::up(
            r#"
CREATE TABLE call_durations (
    id             INTEGER PRIMARY KEY,
    carrier_id     TEXT NOT NULL,
    record_id      TEXT NOT NULL,
    call_id        TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    caller_number  TEXT NOT NULL,
    callee_number  TEXT NOT NULL,
    start_time     INTEGER NOT NULL,
    duration_us    INTEGER NOT NULL,
    corrections    INTEGER NOT NULL,
    create_time    INTEGER NOT NULL,
    update_time    INTEGER NOT NULL
);
CREATE UNIQUE INDEX call_durations_record ON call_durations(carrier_id, record_id);
CREATE INDEX call_durations_by_start ON call_durations(carrier_id, start_time);
CREATE INDEX call_durations_by_call ON call_durations(carrier_id, call_id);
CREATE INDEX call_durations_by_correlation ON call_durations(carrier_id, correlation_id);

-- Earlier content of corrected reports: one row per replaced version.
CREATE TABLE call_duration_history (
    duration_id    INTEGER NOT NULL,
    correction     INTEGER NOT NULL,
    call_id        TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    caller_number  TEXT NOT NULL,
    callee_number  TEXT NOT NULL,
    start_time     INTEGER NOT NULL,
    duration_us    INTEGER NOT NULL,
    replaced_time  INTEGER NOT NULL,
    PRIMARY KEY (duration_id, correction)
) WITHOUT ROWID;

CREATE INDEX call_records_by_correlation ON call_records(carrier_id, correlation_id);
CREATE INDEX call_records_by_tenant ON call_records(tenant_id, start_time);
"#,
        ),
        // Retention policy (one row once set) and the audit trail.
        M::up(
            r#"
CREATE TABLE retention_policy (
    id                   INTEGER PRIMARY KEY CHECK (id = 1),
    call_record_days     INTEGER NOT NULL,
    call_duration_days   INTEGER NOT NULL,
    released_number_days INTEGER NOT NULL,
    audit_event_days     INTEGER NOT NULL,
    update_time          INTEGER NOT NULL
);

CREATE TABLE audit_events (
    id            INTEGER PRIMARY KEY,
    time          INTEGER NOT NULL,
    key_id        TEXT NOT NULL,
    carrier_id    TEXT NOT NULL,
    role          TEXT NOT NULL,
    rpc           TEXT NOT NULL,
    resource_kind TEXT NOT NULL,
    item_count    INTEGER NOT NULL,
    outcome       TEXT NOT NULL
);
-- Purging by age; listings walk the rowid backwards and filter.
CREATE INDEX audit_events_by_time ON audit_events(time);
"#,
        ),
        // Request ids (AIP-155): the outcome of each write made with one, to answer retries.
        M::up(
            r#"
CREATE TABLE request_ids (
    key_id      TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    rpc         TEXT NOT NULL,
    fingerprint BLOB NOT NULL,
    outcome     TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    PRIMARY KEY (key_id, request_id)
) WITHOUT ROWID;
CREATE INDEX request_ids_by_time ON request_ids(create_time);
"#,
        ),
        // Each carrier's last number-event and feed sequence. Before this, the next sequence was
        // the largest one still stored + 1, so after retention or erasure deleted a carrier's
        // newest events or records, sequences that followers had already passed were drawn
        // again, and those followers missed what came under them.
        M::up(
            r#"
CREATE TABLE carrier_heads (
    carrier_id       TEXT PRIMARY KEY,
    number_event_seq INTEGER NOT NULL DEFAULT 0,
    call_record_seq  INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO carrier_heads (carrier_id, number_event_seq, call_record_seq)
SELECT carrier_id, max(e), max(r) FROM (
    SELECT carrier_id, max(sequence) AS e, 0 AS r FROM number_events GROUP BY carrier_id
    UNION ALL
    SELECT carrier_id, 0, max(feed_sequence) FROM call_records GROUP BY carrier_id
) GROUP BY carrier_id;
"#,
        ),
        // A row per carrier and number: each carrier keeps its own history of a number (a
        // released row stays readable to its carrier until purged, and another carrier that
        // provisions the number starts its own at version 1). At most one carrier holds a
        // number at a time (state 3 is released).
        M::up(
            r#"
CREATE TABLE numbers_per_carrier (
    number           TEXT NOT NULL,
    carrier_id       TEXT NOT NULL REFERENCES carriers(carrier_id),
    tenant_id        TEXT NOT NULL,
    state            INTEGER NOT NULL,
    assignment_type  INTEGER,
    sip_uri          TEXT,
    user_id          TEXT,
    assign_time      INTEGER,
    capabilities     INTEGER NOT NULL,
    civic_address_id TEXT NOT NULL,
    location_id      TEXT NOT NULL,
    country_code     TEXT NOT NULL,
    provision_time   INTEGER NOT NULL,
    update_time      INTEGER NOT NULL,
    version          INTEGER NOT NULL,
    PRIMARY KEY (carrier_id, number)
) WITHOUT ROWID;
INSERT INTO numbers_per_carrier SELECT number, carrier_id, tenant_id, state, assignment_type,
    sip_uri, user_id, assign_time, capabilities, civic_address_id, location_id, country_code,
    provision_time, update_time, version FROM numbers;
DROP TABLE numbers;
ALTER TABLE numbers_per_carrier RENAME TO numbers;
CREATE UNIQUE INDEX numbers_held ON numbers(number) WHERE state <> 3;
CREATE INDEX numbers_by_number ON numbers(number, update_time);
"#,
        ),
        // The client's address on each audit event (and on the per-minute summaries of calls
        // refused before a key was accepted).
        M::up("ALTER TABLE audit_events ADD COLUMN source TEXT NOT NULL DEFAULT '';"),
        // The pairing state of reconciliation, kept at write time (`pairing.rs`): an item per
        // platform record (with the report paired with it, if any) and per report paired with
        // no record, each at the position of its last change in the carrier's reconciliation
        // feed (with the removed ones), the hour aggregates beside them, and the tenants'
        // usage per line and hour or day. Built here once from the stored records and reports
        // by the set-based query, carrier by carrier.
        M::up_with_hook(
            r#"
CREATE TABLE recon_items (
    id          INTEGER PRIMARY KEY,
    carrier_id  TEXT NOT NULL,
    record_id   INTEGER UNIQUE,
    report_id   INTEGER UNIQUE,
    -- 1: a record and its report; 2: a record alone; 3: a report alone (as DiscrepancyKind).
    kind        INTEGER NOT NULL,
    -- The record's row id, or a lone report's: a discrepancy's key.
    item_key    INTEGER NOT NULL,
    period_time INTEGER NOT NULL,
    platform_us INTEGER,
    carrier_us  INTEGER,
    -- |platform_us - carrier_us| for a pair, and its class (store::pairing::difference_class).
    diff_us     INTEGER,
    diff_class  INTEGER,
    -- The record's usage line (usage_lines), for an item with a record.
    line_id     INTEGER,
    -- The item's position in the carrier's reconciliation feed: the last change of its
    -- record's or lone report's entry (WatchReconciliation).
    sequence    INTEGER NOT NULL,
    -- How a pair was made: 1 by call id, 2 by correlation id; 0 for an item alone.
    stage       INTEGER NOT NULL
);
CREATE UNIQUE INDEX recon_items_feed ON recon_items(carrier_id, sequence);
-- Entries gone from the feed (a lone report now paired, a record or report deleted or moved
-- to another carrier): entry 1 is a record's, keyed by its call id; 2 a lone report's, keyed
-- by the carrier's record id. Kept for the longer of the records' and the reports' retention
-- after their removal; the carrier's recon_floor is the last position purged.
CREATE TABLE recon_removed (
    carrier_id  TEXT NOT NULL,
    sequence    INTEGER NOT NULL,
    entry       INTEGER NOT NULL,
    entry_key   TEXT NOT NULL,
    period_time INTEGER NOT NULL,
    remove_time INTEGER NOT NULL,
    PRIMARY KEY (carrier_id, sequence)
) WITHOUT ROWID;
CREATE INDEX recon_removed_by_time ON recon_removed(remove_time);
ALTER TABLE carrier_heads ADD COLUMN recon_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE carrier_heads ADD COLUMN recon_floor INTEGER NOT NULL DEFAULT 0;
-- Periods in time order, covering what the summary and the discrepancy pages read.
CREATE INDEX recon_items_by_time
    ON recon_items(carrier_id, period_time, kind, item_key, diff_us, platform_us, carrier_us);
-- The pairs of one difference class in time order: a summary reads those of its tolerance's.
CREATE INDEX recon_items_by_class
    ON recon_items(carrier_id, diff_class, period_time, diff_us) WHERE kind = 1;
-- Per carrier and UTC hour (period_time / 3,600,000,000, rounded down): the items' counts and
-- sums, and the pairs per difference class; a summary adds up the whole hours of its period.
CREATE TABLE recon_hours (
    carrier_id        TEXT NOT NULL,
    hour              INTEGER NOT NULL,
    platform_count    INTEGER NOT NULL,
    platform_us       INTEGER NOT NULL,
    paired_count      INTEGER NOT NULL,
    paired_carrier_us INTEGER NOT NULL,
    lone_count        INTEGER NOT NULL,
    lone_us           INTEGER NOT NULL,
    PRIMARY KEY (carrier_id, hour)
) WITHOUT ROWID;
CREATE TABLE recon_classes (
    carrier_id TEXT NOT NULL,
    hour       INTEGER NOT NULL,
    diff_class INTEGER NOT NULL,
    pairs      INTEGER NOT NULL,
    PRIMARY KEY (carrier_id, hour, diff_class)
) WITHOUT ROWID;
-- A tenant's line: one of its numbers in one direction (the callee of inbound calls, the
-- caller of outbound ones), as tenant usage groups calls.
CREATE TABLE usage_lines (
    id        INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    number    TEXT NOT NULL,
    direction INTEGER NOT NULL,
    UNIQUE (tenant_id, number, direction)
);
-- Per line and UTC hour (level 0) or UTC day (level 1), and the tenant's totals (line 0) per
-- hour (level 2) and day (level 3): the calls, those whose duration is the carrier's report,
-- and the durations summed as usage counts them. A row that comes to no call is deleted.
-- Keyed by tenant and time first: a query reads one range, and a write's rows (calls of a few
-- hours) sit on a few pages.
CREATE TABLE usage_sums (
    tenant_id      TEXT NOT NULL,
    level          INTEGER NOT NULL,
    bucket         INTEGER NOT NULL,
    line_id        INTEGER NOT NULL,
    calls          INTEGER NOT NULL,
    operator_calls INTEGER NOT NULL,
    total_us       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, level, bucket, line_id)
) WITHOUT ROWID;
"#,
            |tx: &rusqlite::Transaction| -> rusqlite_migration::HookResult {
                super::pairing::build(tx)
                    .map_err(|e| rusqlite_migration::HookError::Hook(e.to_string()))
            },
        ),
        // The quality aggregates (GetQualitySummary): per carrier, group of calls and UTC hour
        // or day, the figures of the calls that started then (store::quality). Built here once
        // from the stored records.
        M::up_with_hook(
            r#"
-- A carrier's group of calls: the dimensions GetQualitySummary groups and filters by
-- (destination context, call type and direction by their codes; codec: the first the call's
-- streams name).
CREATE TABLE quality_groups (
    id                  INTEGER PRIMARY KEY,
    carrier_id          TEXT NOT NULL,
    trunk_fqdn          TEXT NOT NULL,
    usage_country_code  TEXT NOT NULL,
    destination_context INTEGER NOT NULL,
    call_type           INTEGER NOT NULL,
    direction           INTEGER NOT NULL,
    codec               TEXT NOT NULL,
    UNIQUE (carrier_id, trunk_fqdn, usage_country_code, destination_context, call_type,
            direction, codec)
);
-- Level 0: a UTC hour (hours since the epoch in bucket); 1: a UTC day. `figures` holds the
-- counts, sums and histograms (store::quality::Figures::encode); `calls` its count of calls,
-- apart, so that a cell that comes to none is found and deleted.
CREATE TABLE quality_cells (
    carrier_id TEXT NOT NULL,
    level      INTEGER NOT NULL,
    bucket     INTEGER NOT NULL,
    group_id   INTEGER NOT NULL,
    calls      INTEGER NOT NULL,
    figures    BLOB NOT NULL,
    PRIMARY KEY (carrier_id, level, bucket, group_id)
) WITHOUT ROWID;
"#,
            |tx: &rusqlite::Transaction| -> rusqlite_migration::HookResult {
                super::calls::build_quality(tx)
                    .map_err(|e| rusqlite_migration::HookError::Hook(e.to_string()))
            },
        ),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        assert!(super::migrations().validate().is_ok());
    }
}

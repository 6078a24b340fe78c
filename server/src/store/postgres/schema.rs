//! The PostgreSQL schema and its migrations.
//!
//! The same tables as the SQLite backend, with PostgreSQL's types: every integer is `BIGINT`
//! (read as `i64`), times are microseconds since the Unix epoch, hashes and protobuf blobs are
//! `BYTEA`. One table more, `carrier_heads`, holds each carrier's last number-event and feed
//! sequence: a write takes the carrier's row lock to draw its sequences, so concurrent writers
//! on any replica append gaplessly, in commit order.
//!
//! Migrations run in one transaction under an advisory lock, so replicas starting together
//! migrate once. Append new migrations; never edit one that has shipped.

use deadpool_postgres::Client;

use super::pool::PgResult;

/// Advisory lock key held while migrating ("OCX" in ASCII).
const MIGRATION_LOCK: i64 = 0x004f_4358;

/// Every migration, in order; its index + 1 is its version.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE carriers (
    carrier_id   TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    create_time  BIGINT NOT NULL
);

-- Each carrier's last number-event sequence and call-record feed sequence. Writers lock the
-- row (UPDATE ... RETURNING) to draw the next ones.
CREATE TABLE carrier_heads (
    carrier_id       TEXT PRIMARY KEY,
    number_event_seq BIGINT NOT NULL DEFAULT 0,
    call_record_seq  BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE api_keys (
    key_id        TEXT PRIMARY KEY,
    role          BIGINT NOT NULL,
    carrier_id    TEXT REFERENCES carriers(carrier_id),
    display_name  TEXT NOT NULL,
    secret_hash   BYTEA NOT NULL,
    create_time   BIGINT NOT NULL,
    last_use_time BIGINT,
    revoke_time   BIGINT
);
CREATE INDEX api_keys_by_carrier ON api_keys(carrier_id, key_id);

CREATE TABLE consents (
    carrier_id   TEXT NOT NULL REFERENCES carriers(carrier_id),
    tenant_id    TEXT NOT NULL,
    status       BIGINT NOT NULL,
    countries    TEXT NOT NULL,
    contact      TEXT NOT NULL,
    consent_time BIGINT NOT NULL,
    update_time  BIGINT NOT NULL,
    PRIMARY KEY (carrier_id, tenant_id)
);

CREATE TABLE numbers (
    number           TEXT PRIMARY KEY,
    carrier_id       TEXT NOT NULL REFERENCES carriers(carrier_id),
    tenant_id        TEXT NOT NULL,
    state            BIGINT NOT NULL,
    assignment_type  BIGINT,
    sip_uri          TEXT,
    user_id          TEXT,
    assign_time      BIGINT,
    capabilities     BIGINT NOT NULL,
    civic_address_id TEXT NOT NULL,
    location_id      TEXT NOT NULL,
    country_code     TEXT NOT NULL,
    provision_time   BIGINT NOT NULL,
    update_time      BIGINT NOT NULL,
    version          BIGINT NOT NULL
);
CREATE INDEX numbers_by_carrier ON numbers(carrier_id, number);

-- The number as it became, as JSON (the same text the SQLite backend stores).
CREATE TABLE number_events (
    carrier_id TEXT NOT NULL,
    sequence   BIGINT NOT NULL,
    event_type BIGINT NOT NULL,
    snapshot   TEXT NOT NULL,
    event_time BIGINT NOT NULL,
    PRIMARY KEY (carrier_id, sequence)
);

CREATE TABLE call_records (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id             TEXT NOT NULL UNIQUE,
    carrier_id          TEXT NOT NULL,
    feed_sequence       BIGINT NOT NULL,
    version             BIGINT NOT NULL,
    content_hash        BIGINT NOT NULL,
    correlation_id      TEXT NOT NULL,
    tenant_id           TEXT NOT NULL,
    call_type           BIGINT NOT NULL,
    direction           BIGINT NOT NULL,
    caller_number       TEXT NOT NULL,
    callee_number       TEXT NOT NULL,
    user_sip_uri        TEXT NOT NULL,
    invite_time         BIGINT,
    start_time          BIGINT NOT NULL,
    end_time            BIGINT NOT NULL,
    duration_us         BIGINT NOT NULL,
    final_sip_code      BIGINT NOT NULL,
    final_sip_phrase    TEXT NOT NULL,
    q850_cause          BIGINT NOT NULL,
    successful          BOOLEAN NOT NULL,
    destination_context BIGINT,
    usage_country_code  TEXT NOT NULL,
    trunk_fqdn          TEXT NOT NULL,
    -- ocx.v1 MediaStream messages, length-delimited (the SQLite backend's encoding).
    media_streams       BYTEA NOT NULL,
    quality             BIGINT NOT NULL,
    poor_due_to         BIGINT NOT NULL,
    update_time         BIGINT NOT NULL
);
CREATE UNIQUE INDEX call_records_feed ON call_records(carrier_id, feed_sequence);
CREATE INDEX call_records_by_start ON call_records(carrier_id, start_time, id);
CREATE INDEX call_records_by_correlation ON call_records(carrier_id, correlation_id);
CREATE INDEX call_records_by_tenant ON call_records(tenant_id, start_time);

CREATE TABLE call_durations (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    carrier_id     TEXT NOT NULL,
    record_id      TEXT NOT NULL,
    call_id        TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    caller_number  TEXT NOT NULL,
    callee_number  TEXT NOT NULL,
    start_time     BIGINT NOT NULL,
    duration_us    BIGINT NOT NULL,
    corrections    BIGINT NOT NULL,
    create_time    BIGINT NOT NULL,
    update_time    BIGINT NOT NULL
);
CREATE UNIQUE INDEX call_durations_record ON call_durations(carrier_id, record_id);
CREATE INDEX call_durations_by_start ON call_durations(carrier_id, start_time, id);
CREATE INDEX call_durations_by_call ON call_durations(carrier_id, call_id);
CREATE INDEX call_durations_by_correlation ON call_durations(carrier_id, correlation_id);

CREATE TABLE call_duration_history (
    duration_id    BIGINT NOT NULL,
    correction     BIGINT NOT NULL,
    call_id        TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    caller_number  TEXT NOT NULL,
    callee_number  TEXT NOT NULL,
    start_time     BIGINT NOT NULL,
    duration_us    BIGINT NOT NULL,
    replaced_time  BIGINT NOT NULL,
    PRIMARY KEY (duration_id, correction)
);

CREATE TABLE retention_policy (
    id                   BIGINT PRIMARY KEY CHECK (id = 1),
    call_record_days     BIGINT NOT NULL,
    call_duration_days   BIGINT NOT NULL,
    released_number_days BIGINT NOT NULL,
    audit_event_days     BIGINT NOT NULL,
    update_time          BIGINT NOT NULL
);

CREATE TABLE audit_events (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time          BIGINT NOT NULL,
    key_id        TEXT NOT NULL,
    carrier_id    TEXT NOT NULL,
    role          TEXT NOT NULL,
    rpc           TEXT NOT NULL,
    resource_kind TEXT NOT NULL,
    item_count    BIGINT NOT NULL,
    outcome       TEXT NOT NULL
);
CREATE INDEX audit_events_by_time ON audit_events(time);

CREATE TABLE request_ids (
    key_id      TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    rpc         TEXT NOT NULL,
    fingerprint BYTEA NOT NULL,
    outcome     TEXT NOT NULL,
    create_time BIGINT NOT NULL,
    PRIMARY KEY (key_id, request_id)
);
CREATE INDEX request_ids_by_time ON request_ids(create_time);
"#,
    // A row per carrier and number: each carrier keeps its own history of a number (a released
    // row stays readable to its carrier until purged; another carrier that provisions the
    // number starts its own at version 1). At most one carrier holds a number at a time (state
    // 3 is released).
    r#"
ALTER TABLE numbers DROP CONSTRAINT numbers_pkey;
ALTER TABLE numbers ADD PRIMARY KEY (carrier_id, number);
DROP INDEX numbers_by_carrier;
CREATE UNIQUE INDEX numbers_held ON numbers(number) WHERE state <> 3;
CREATE INDEX numbers_by_number ON numbers(number, update_time);
"#,
    // The client's address on each audit event (and on the per-minute summaries of calls
    // refused before a key was accepted).
    "ALTER TABLE audit_events ADD COLUMN source TEXT NOT NULL DEFAULT '';",
    // The pairing state of reconciliation, kept at write time (`pairing.rs`), as on SQLite
    // (see its migration for each table). Built once by [`PAIRING_STATE`]'s hook.
    r#"
CREATE TABLE recon_items (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    carrier_id  TEXT NOT NULL,
    record_id   BIGINT UNIQUE,
    report_id   BIGINT UNIQUE,
    kind        BIGINT NOT NULL,
    item_key    BIGINT NOT NULL,
    period_time BIGINT NOT NULL,
    platform_us BIGINT,
    carrier_us  BIGINT,
    diff_us     BIGINT,
    diff_class  BIGINT,
    line_id     BIGINT,
    sequence    BIGINT NOT NULL,
    stage       BIGINT NOT NULL
);
CREATE UNIQUE INDEX recon_items_feed ON recon_items(carrier_id, sequence);
CREATE INDEX recon_items_by_time ON recon_items(carrier_id, period_time, kind, item_key)
    INCLUDE (diff_us, platform_us, carrier_us);
CREATE INDEX recon_items_by_class ON recon_items(carrier_id, diff_class, period_time)
    INCLUDE (diff_us) WHERE kind = 1;
CREATE TABLE recon_removed (
    carrier_id  TEXT NOT NULL,
    sequence    BIGINT NOT NULL,
    entry       BIGINT NOT NULL,
    entry_key   TEXT NOT NULL,
    period_time BIGINT NOT NULL,
    remove_time BIGINT NOT NULL,
    PRIMARY KEY (carrier_id, sequence)
);
CREATE INDEX recon_removed_by_time ON recon_removed(remove_time);
ALTER TABLE carrier_heads ADD COLUMN recon_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE carrier_heads ADD COLUMN recon_floor BIGINT NOT NULL DEFAULT 0;
CREATE TABLE recon_hours (
    carrier_id        TEXT NOT NULL,
    hour              BIGINT NOT NULL,
    platform_count    BIGINT NOT NULL,
    platform_us       BIGINT NOT NULL,
    paired_count      BIGINT NOT NULL,
    paired_carrier_us BIGINT NOT NULL,
    lone_count        BIGINT NOT NULL,
    lone_us           BIGINT NOT NULL,
    PRIMARY KEY (carrier_id, hour)
);
CREATE TABLE recon_classes (
    carrier_id TEXT NOT NULL,
    hour       BIGINT NOT NULL,
    diff_class BIGINT NOT NULL,
    pairs      BIGINT NOT NULL,
    PRIMARY KEY (carrier_id, hour, diff_class)
);
CREATE TABLE usage_lines (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    number    TEXT NOT NULL,
    direction BIGINT NOT NULL,
    UNIQUE (tenant_id, number, direction)
);
CREATE TABLE usage_sums (
    tenant_id      TEXT NOT NULL,
    level          BIGINT NOT NULL,
    bucket         BIGINT NOT NULL,
    line_id        BIGINT NOT NULL,
    calls          BIGINT NOT NULL,
    operator_calls BIGINT NOT NULL,
    total_us       BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, level, bucket, line_id)
);
"#,
    // The quality aggregates (GetQualitySummary), as on SQLite: per carrier, group of calls and
    // UTC hour (level 0) or day (1), the calls' figures (store::quality::Figures::encode).
    r#"
CREATE TABLE quality_groups (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    carrier_id          TEXT NOT NULL,
    trunk_fqdn          TEXT NOT NULL,
    usage_country_code  TEXT NOT NULL,
    destination_context BIGINT NOT NULL,
    call_type           BIGINT NOT NULL,
    direction           BIGINT NOT NULL,
    codec               TEXT NOT NULL,
    UNIQUE (carrier_id, trunk_fqdn, usage_country_code, destination_context, call_type,
            direction, codec)
);
CREATE TABLE quality_cells (
    carrier_id TEXT NOT NULL,
    level      BIGINT NOT NULL,
    bucket     BIGINT NOT NULL,
    group_id   BIGINT NOT NULL,
    figures    BYTEA NOT NULL,
    PRIMARY KEY (carrier_id, level, bucket, group_id)
);
"#,
];

/// The version of the migration that adds the pairing state: after it runs, the state is
/// built from the stored records and reports ([`super::pairing::build`]).
const PAIRING_STATE: usize = 4;
/// The version of the migration that adds the quality aggregates, built after it from the
/// stored records ([`super::quality::build`]).
const QUALITY_AGGREGATES: usize = 5;

/// Brings the database to the current schema; returns the version it was at.
pub async fn migrate(client: &mut Client) -> PgResult<i64> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS ocx_schema_version (
             version    BIGINT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let current: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM ocx_schema_version",
            &[],
        )
        .await?
        .get(0);
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(super::pool::PgError::Store(
            crate::store::StoreError::Internal(format!(
                "the database's schema is version {current}, newer than this server's {known}: \
             run a newer ocx-server"
            )),
        ));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql).await?;
        if index + 1 == PAIRING_STATE {
            super::pairing::build(&tx).await?;
        }
        if index + 1 == QUALITY_AGGREGATES {
            super::calls::build_quality(&tx).await?;
        }
        tx.execute(
            "INSERT INTO ocx_schema_version (version) VALUES ($1)",
            &[&(index as i64 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(current)
}

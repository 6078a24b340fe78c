//! Carriers, their API keys, and tenants' consents to them.

use rusqlite::{Connection, params};

use super::query;
use crate::domain::{
    ApiKey, Carrier, Consent, ConsentGrant, ConsentStatus, Micros, Page, now_micros,
};
use crate::store::rows;
use crate::store::rows::page;
use crate::store::rules;
use crate::store::{StoreError, StoreResult};

const CARRIER_COLUMNS: &str = "carrier_id, display_name, create_time";

/// Whether carrier `carrier_id` exists.
pub fn exists(conn: &Connection, carrier_id: &str) -> StoreResult<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM carriers WHERE carrier_id = ?1")?
        .exists([carrier_id])?)
}

/// Creates `carrier`; ALREADY_EXISTS if its id is taken.
pub fn create(conn: &Connection, carrier: Carrier) -> StoreResult<Carrier> {
    rules::new_carrier(&carrier.carrier_id, exists(conn, &carrier.carrier_id)?)?;
    conn.prepare_cached(&format!(
        "INSERT INTO carriers ({CARRIER_COLUMNS}) VALUES (?1, ?2, ?3)"
    ))?
    .execute(params![
        carrier.carrier_id,
        carrier.display_name,
        carrier.create_time
    ])?;
    Ok(carrier)
}

/// Carrier `carrier_id`, if it exists.
pub fn get(conn: &Connection, carrier_id: &str) -> StoreResult<Option<Carrier>> {
    query::first(
        conn,
        &format!("SELECT {CARRIER_COLUMNS} FROM carriers WHERE carrier_id = ?1"),
        [carrier_id],
        rows::carrier,
    )
}

/// A page of carriers in id order, after `after`.
pub fn list(conn: &Connection, after: Option<&str>, limit: usize) -> StoreResult<Page<Carrier>> {
    let items = query::all(
        conn,
        &format!(
            "SELECT {CARRIER_COLUMNS} FROM carriers
             WHERE ?1 IS NULL OR carrier_id > ?1 ORDER BY carrier_id LIMIT ?2"
        ),
        params![after, rows::fetch(limit)],
        rows::carrier,
    )?;
    let total = conn.query_row("SELECT count(*) FROM carriers", [], |r| r.get(0))?;
    Ok(page(items, limit, total))
}

const KEY_COLUMNS: &str =
    "key_id, role, carrier_id, display_name, secret_hash, create_time, last_use_time, revoke_time";

fn get_key(conn: &Connection, key_id: &str) -> StoreResult<Option<ApiKey>> {
    query::first(
        conn,
        &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = ?1"),
        [key_id],
        rows::api_key,
    )
}

/// Stores `key` (its secret only as a hash); NOT_FOUND if it names a carrier that does not
/// exist.
pub fn insert_key(conn: &Connection, key: ApiKey) -> StoreResult<ApiKey> {
    if let Some(carrier) = &key.carrier_id {
        rules::existing_carrier(carrier, exists(conn, carrier)?)?;
    }
    conn.prepare_cached(&format!(
        "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
    ))?
    .execute(params![
        key.key_id,
        key.role.code(),
        key.carrier_id,
        key.display_name,
        &key.secret_hash[..],
        key.create_time,
        key.last_use_time,
        key.revoke_time
    ])?;
    Ok(key)
}

/// Revokes key `key_id` (once: a second revocation keeps the first time); the key as it is.
pub fn revoke_key(conn: &Connection, key_id: &str) -> StoreResult<ApiKey> {
    conn.prepare_cached(
        "UPDATE api_keys SET revoke_time = ?2 WHERE key_id = ?1 AND revoke_time IS NULL",
    )?
    .execute(params![key_id, now_micros()])?;
    rules::existing_key(key_id, get_key(conn, key_id)?)
}

/// A page of keys in id order (of one carrier, or all), after `after`.
pub fn list_keys(
    conn: &Connection,
    carrier_id: Option<&str>,
    after: Option<&str>,
    limit: usize,
) -> StoreResult<Page<ApiKey>> {
    let items = query::all(
        conn,
        &format!(
            "SELECT {KEY_COLUMNS} FROM api_keys
             WHERE (?1 IS NULL OR carrier_id = ?1) AND (?2 IS NULL OR key_id > ?2)
             ORDER BY key_id LIMIT ?3"
        ),
        params![carrier_id, after, rows::fetch(limit)],
        rows::api_key,
    )?;
    let total = conn
        .prepare_cached("SELECT count(*) FROM api_keys WHERE ?1 IS NULL OR carrier_id = ?1")?
        .query_row([&carrier_id], |r| r.get(0))?;
    Ok(page(items, limit, total))
}

/// Every key not revoked.
pub fn active_keys(conn: &Connection) -> StoreResult<Vec<ApiKey>> {
    query::all(
        conn,
        &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE revoke_time IS NULL"),
        [],
        rows::api_key,
    )
}

/// Moves keys' last-use times forward (never back).
pub fn record_key_use(conn: &Connection, uses: &[(String, Micros)]) -> StoreResult<()> {
    let mut stmt = conn.prepare_cached(
        "UPDATE api_keys SET last_use_time = ?2
         WHERE key_id = ?1 AND (last_use_time IS NULL OR last_use_time < ?2)",
    )?;
    for (key_id, at) in uses {
        stmt.execute(params![key_id, at])?;
    }
    Ok(())
}

const CONSENT_COLUMNS: &str =
    "carrier_id, tenant_id, status, countries, contact, consent_time, update_time";

fn get_consent(
    conn: &Connection,
    carrier_id: &str,
    tenant_id: &str,
) -> StoreResult<Option<Consent>> {
    query::first(
        conn,
        &format!("SELECT {CONSENT_COLUMNS} FROM consents WHERE carrier_id = ?1 AND tenant_id = ?2"),
        [carrier_id, tenant_id],
        rows::consent,
    )
}

/// Grants (or changes) a tenant's consent; NOT_FOUND if the carrier does not exist.
pub fn grant_consent(conn: &Connection, grant: &ConsentGrant) -> StoreResult<Consent> {
    rules::existing_carrier(&grant.carrier_id, exists(conn, &grant.carrier_id)?)?;
    conn.prepare_cached(&format!(
        "INSERT INTO consents ({CONSENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
         ON CONFLICT (carrier_id, tenant_id) DO UPDATE SET
           status = excluded.status, countries = excluded.countries,
           contact = excluded.contact, update_time = excluded.update_time"
    ))?
    .execute(params![
        grant.carrier_id,
        grant.tenant_id,
        grant.status.code(),
        grant.countries.join(","),
        rows::contact_json(&grant.contact)?,
        now_micros()
    ])?;
    get_consent(conn, &grant.carrier_id, &grant.tenant_id)?
        .ok_or_else(|| StoreError::Internal("consent vanished after upsert".into()))
}

/// Marks a tenant's consent removed; NOT_FOUND if it has none.
pub fn revoke_consent(
    conn: &Connection,
    carrier_id: &str,
    tenant_id: &str,
) -> StoreResult<Consent> {
    conn.prepare_cached(
        "UPDATE consents SET status = ?3, update_time = ?4
         WHERE carrier_id = ?1 AND tenant_id = ?2 AND status != ?3",
    )?
    .execute(params![
        carrier_id,
        tenant_id,
        ConsentStatus::Removed.code(),
        now_micros()
    ])?;
    rules::existing_consent(
        carrier_id,
        tenant_id,
        get_consent(conn, carrier_id, tenant_id)?,
    )
}

/// A page of a carrier's consents in tenant order (of one status, or all), after `after`.
pub fn list_consents(
    conn: &Connection,
    carrier_id: &str,
    status: Option<ConsentStatus>,
    after: Option<&str>,
    limit: usize,
) -> StoreResult<Page<Consent>> {
    let status = status.map(ConsentStatus::code);
    let items = query::all(
        conn,
        &format!(
            "SELECT {CONSENT_COLUMNS} FROM consents
             WHERE carrier_id = ?1 AND (?2 IS NULL OR status = ?2)
               AND (?3 IS NULL OR tenant_id > ?3)
             ORDER BY tenant_id LIMIT ?4"
        ),
        params![carrier_id, status, after, rows::fetch(limit)],
        rows::consent,
    )?;
    let total = conn
        .prepare_cached(
            "SELECT count(*) FROM consents WHERE carrier_id = ?1 AND (?2 IS NULL OR status = ?2)",
        )?
        .query_row(params![carrier_id, status], |r| r.get(0))?;
    Ok(page(items, limit, total))
}

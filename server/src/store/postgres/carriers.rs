//! Carriers, their API keys, and tenants' consents to them.

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::listen::{Channel, notify};
use super::pool::{PgError, PgResult};
use super::query;
use crate::domain::{
    ApiKey, Carrier, Consent, ConsentGrant, ConsentStatus, Micros, Page, now_micros,
};
use crate::store::rows::page;
use crate::store::rules;
use crate::store::{StoreError, rows};

const CARRIER_COLUMNS: &str = "carrier_id, display_name, create_time";

/// Whether carrier `carrier_id` exists.
pub async fn exists(db: &impl GenericClient, carrier_id: &str) -> PgResult<bool> {
    let stmt = db
        .prepare_cached("SELECT 1 FROM carriers WHERE carrier_id = $1")
        .await?;
    Ok(db.query_opt(&stmt, &[&carrier_id]).await?.is_some())
}

/// Creates `carrier` and its sequence heads; ALREADY_EXISTS if its id is taken.
pub async fn create(db: &impl GenericClient, carrier: &Carrier) -> PgResult<Carrier> {
    let inserted = db
        .execute(
            &format!(
                "INSERT INTO carriers ({CARRIER_COLUMNS}) VALUES ($1, $2, $3)
                 ON CONFLICT (carrier_id) DO NOTHING"
            ),
            &[
                &carrier.carrier_id,
                &carrier.display_name,
                &carrier.create_time,
            ],
        )
        .await?;
    rules::new_carrier(&carrier.carrier_id, inserted == 0)?;
    db.execute(
        "INSERT INTO carrier_heads (carrier_id) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&carrier.carrier_id],
    )
    .await?;
    Ok(carrier.clone())
}

/// Carrier `carrier_id`, if it exists.
pub async fn get(db: &impl GenericClient, carrier_id: &str) -> PgResult<Option<Carrier>> {
    let sql = format!("SELECT {CARRIER_COLUMNS} FROM carriers WHERE carrier_id = $1");
    query::first(db, &sql, &[&carrier_id], rows::carrier).await
}

/// A page of carriers in id order, after `after`.
pub async fn list(
    db: &impl GenericClient,
    after: Option<&str>,
    limit: usize,
) -> PgResult<Page<Carrier>> {
    let sql = format!(
        "SELECT {CARRIER_COLUMNS} FROM carriers
         WHERE $1::TEXT IS NULL OR carrier_id > $1 ORDER BY carrier_id LIMIT $2"
    );
    let params: [&(dyn ToSql + Sync); 2] = [&after, &rows::fetch(limit)];
    let items = query::all(db, &sql, &params, rows::carrier).await?;
    let total: i64 = db
        .query_one("SELECT count(*) FROM carriers", &[])
        .await?
        .get(0);
    Ok(page(items, limit, total))
}

const KEY_COLUMNS: &str =
    "key_id, role, carrier_id, display_name, secret_hash, create_time, last_use_time, revoke_time";

async fn get_key(db: &impl GenericClient, key_id: &str) -> PgResult<Option<ApiKey>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = $1");
    query::first(db, &sql, &[&key_id], rows::api_key).await
}

/// Stores `key` (its secret only as a hash) and tells the other replicas; NOT_FOUND if it
/// names a carrier that does not exist.
pub async fn insert_key(db: &impl GenericClient, key: &ApiKey) -> PgResult<ApiKey> {
    if let Some(carrier) = &key.carrier_id {
        rules::existing_carrier(carrier, exists(db, carrier).await?)?;
    }
    db.execute(
        &format!("INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
        &[
            &key.key_id,
            &i64::from(key.role.code()),
            &key.carrier_id,
            &key.display_name,
            &&key.secret_hash[..],
            &key.create_time,
            &key.last_use_time,
            &key.revoke_time,
        ],
    )
    .await?;
    notify(db, Channel::ApiKeys).await?;
    Ok(key.clone())
}

/// Revokes key `key_id` (once: a second revocation keeps the first time) and tells the other
/// replicas; the key as it is.
pub async fn revoke_key(db: &impl GenericClient, key_id: &str) -> PgResult<ApiKey> {
    db.execute(
        "UPDATE api_keys SET revoke_time = $2 WHERE key_id = $1 AND revoke_time IS NULL",
        &[&key_id, &now_micros()],
    )
    .await?;
    let key = rules::existing_key(key_id, get_key(db, key_id).await?)?;
    notify(db, Channel::ApiKeys).await?;
    Ok(key)
}

/// A page of keys in id order (of one carrier, or all), after `after`.
pub async fn list_keys(
    db: &impl GenericClient,
    carrier_id: Option<&str>,
    after: Option<&str>,
    limit: usize,
) -> PgResult<Page<ApiKey>> {
    let sql = format!(
        "SELECT {KEY_COLUMNS} FROM api_keys
         WHERE ($1::TEXT IS NULL OR carrier_id = $1) AND ($2::TEXT IS NULL OR key_id > $2)
         ORDER BY key_id LIMIT $3"
    );
    let params: [&(dyn ToSql + Sync); 3] = [&carrier_id, &after, &rows::fetch(limit)];
    let items = query::all(db, &sql, &params, rows::api_key).await?;
    let total: i64 = db
        .query_one(
            "SELECT count(*) FROM api_keys WHERE $1::TEXT IS NULL OR carrier_id = $1",
            &[&carrier_id],
        )
        .await?
        .get(0);
    Ok(page(items, limit, total))
}

/// Every key not revoked.
pub async fn active_keys(db: &impl GenericClient) -> PgResult<Vec<ApiKey>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE revoke_time IS NULL");
    query::all(db, &sql, &[], rows::api_key).await
}

/// Moves keys' last-use times forward (never back).
pub async fn record_key_use(db: &impl GenericClient, uses: &[(String, Micros)]) -> PgResult<()> {
    let (ids, times): (Vec<&str>, Vec<Micros>) = uses.iter().map(|(k, t)| (k.as_str(), *t)).unzip();
    // Keys in id order, so two replicas flushing at once lock rows in the same order.
    db.execute(
        "UPDATE api_keys AS k SET last_use_time = u.at
           FROM (SELECT key_id, max(at) AS at FROM unnest($1::TEXT[], $2::BIGINT[]) AS u(key_id, at)
                 GROUP BY key_id ORDER BY key_id) AS u
          WHERE k.key_id = u.key_id AND (k.last_use_time IS NULL OR k.last_use_time < u.at)",
        &[&ids, &times],
    )
    .await?;
    Ok(())
}

const CONSENT_COLUMNS: &str =
    "carrier_id, tenant_id, status, countries, contact, consent_time, update_time";

async fn get_consent(
    db: &impl GenericClient,
    carrier_id: &str,
    tenant_id: &str,
) -> PgResult<Option<Consent>> {
    let sql =
        format!("SELECT {CONSENT_COLUMNS} FROM consents WHERE carrier_id = $1 AND tenant_id = $2");
    query::first(db, &sql, &[&carrier_id, &tenant_id], rows::consent).await
}

/// Grants (or changes) a tenant's consent; NOT_FOUND if the carrier does not exist.
pub async fn grant_consent(db: &impl GenericClient, grant: &ConsentGrant) -> PgResult<Consent> {
    rules::existing_carrier(&grant.carrier_id, exists(db, &grant.carrier_id).await?)?;
    db.execute(
        &format!(
            "INSERT INTO consents ({CONSENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $6)
             ON CONFLICT (carrier_id, tenant_id) DO UPDATE SET
               status = excluded.status, countries = excluded.countries,
               contact = excluded.contact, update_time = excluded.update_time"
        ),
        &[
            &grant.carrier_id,
            &grant.tenant_id,
            &i64::from(grant.status.code()),
            &grant.countries.join(","),
            &rows::contact_json(&grant.contact)?,
            &now_micros(),
        ],
    )
    .await?;
    get_consent(db, &grant.carrier_id, &grant.tenant_id)
        .await?
        .ok_or_else(|| PgError::Store(StoreError::Internal("consent vanished after upsert".into())))
}

/// Marks a tenant's consent removed; NOT_FOUND if it has none.
pub async fn revoke_consent(
    db: &impl GenericClient,
    carrier_id: &str,
    tenant_id: &str,
) -> PgResult<Consent> {
    let removed = i64::from(ConsentStatus::Removed.code());
    db.execute(
        "UPDATE consents SET status = $3, update_time = $4
         WHERE carrier_id = $1 AND tenant_id = $2 AND status != $3",
        &[&carrier_id, &tenant_id, &removed, &now_micros()],
    )
    .await?;
    let found = get_consent(db, carrier_id, tenant_id).await?;
    Ok(rules::existing_consent(carrier_id, tenant_id, found)?)
}

/// A page of a carrier's consents in tenant order (of one status, or all), after `after`.
pub async fn list_consents(
    db: &impl GenericClient,
    carrier_id: &str,
    status: Option<ConsentStatus>,
    after: Option<&str>,
    limit: usize,
) -> PgResult<Page<Consent>> {
    let status = status.map(|s| i64::from(s.code()));
    let sql = format!(
        "SELECT {CONSENT_COLUMNS} FROM consents
         WHERE carrier_id = $1 AND ($2::BIGINT IS NULL OR status = $2)
           AND ($3::TEXT IS NULL OR tenant_id > $3)
         ORDER BY tenant_id LIMIT $4"
    );
    let params: [&(dyn ToSql + Sync); 4] = [&carrier_id, &status, &after, &rows::fetch(limit)];
    let items = query::all(db, &sql, &params, rows::consent).await?;
    let total: i64 = db
        .query_one(
            "SELECT count(*) FROM consents WHERE carrier_id = $1 AND ($2::BIGINT IS NULL OR status = $2)",
            &[&carrier_id, &status],
        )
        .await?
        .get(0);
    Ok(page(items, limit, total))
}

//! The PostgreSQL backend: for deployments that outgrow one machine, several stateless
//! `ocx-server` replicas share one PostgreSQL database.
//!
//! ## How it keeps the SQLite backend's guarantees with several writers
//! - **Transactions.** Every write is one transaction at READ COMMITTED, run by
//!   [`transaction!`], which retries the whole transaction when PostgreSQL reports a conflict
//!   another writer won (serialization failure, deadlock, or a unique key a concurrent
//!   transaction inserted first): the retry then sees the winner's rows and answers as the
//!   SQLite backend would (`Unchanged`, a stale version, a number taken).
//! - **Gapless sequences.** A carrier's number-event and feed sequences are drawn from its row
//!   in `carrier_heads` with `UPDATE ... RETURNING`, which holds the row lock until commit: two
//!   writers for one carrier, on any replica, append one after the other, in commit order, and a
//!   rolled-back transaction gives its numbers back.
//! - **Request ids.** [`write_once!`] looks the id up and records the outcome in the write's
//!   transaction, so a retry on another replica finds it; two replicas racing on one id both
//!   insert the record, one of them hits the primary key, retries, and replays.
//! - **Live feeds.** A write that appends number events or call records sends a NOTIFY in its
//!   transaction (delivered on commit). Each replica holds one LISTEN connection ([`listen`])
//!   and wakes its local watchers; they then read from the database, which stays the source of
//!   truth. After the listener reconnects it wakes everyone, so nothing waits on a lost
//!   notification. API-key changes are announced the same way, so a key created or revoked
//!   through one replica is known to the others at once.
//!
//! ## Layout
//! - this module: [`PgStore`], errors, the transaction macros, carriers, keys and consents;
//! - `listen`: the LISTEN connection;
//! - `schema`: migrations;
//! - `numbers`, `calls`, `durations`, `reconcile`, `privacy`, `requests`: as in the SQLite
//!   backend.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::watch;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::domain::{
    ApiKey, AssignRequest, CallDuration, CallRecord, CallRecordFilter, Carrier, Consent,
    ConsentGrant, ConsentStatus, Discrepancy, DiscrepancyCursor, DiscrepancyKind, DurationOutcome,
    DurationReport, IngestOutcome, ItemOutcome, Micros, NumberEvent, NumberFilter, NumberUpload,
    Page, PhoneNumber, ReconciliationPeriod, ReconciliationSummary, UsageGrouping, UsageRow,
    now_micros,
};
use crate::domain::{AuditEvent, AuditFilter, EraseCounts, PurgeCounts, RetentionPolicy};
use crate::store::rules::{self, page};
use crate::store::{CallRecordCursor, KeyedPage, Store, StoreError, StoreResult};

/// How many times a transaction that lost a conflict is run again before the caller gets
/// UNAVAILABLE.
const MAX_ATTEMPTS: u32 = 10;

/// Runs `$body` (an expression of type `PgResult<T>` using `$tx: &Transaction`) in one
/// transaction and commits it; runs it again, in a new transaction, when it lost a conflict
/// to a concurrent writer (see [`PgError::is_conflict`]). Evaluates to `StoreResult<T>`.
macro_rules! transaction {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut attempt = 0u32;
        loop {
            let result: $crate::store::postgres::PgResult<_> = async {
                let mut client = $store.client().await?;
                let $tx = client.transaction().await?;
                let value = $crate::store::postgres::pg_result({
                    let $tx = &$tx;
                    $body
                })?;
                $tx.commit().await?;
                Ok(value)
            }
            .await;
            match result {
                Ok(value) => break Ok(value),
                Err(e)
                    if e.is_conflict() && attempt + 1 < $crate::store::postgres::MAX_ATTEMPTS =>
                {
                    attempt += 1;
                    $crate::store::postgres::backoff(attempt).await;
                }
                Err(e) => break Err($crate::store::StoreError::from(e)),
            }
        }
    }};
}

/// [`transaction!`] for a write that honours request ids (see `store::request`): a retry of a
/// recorded request gets the recorded outcome and `$body` does not run; otherwise the outcome
/// is recorded in the same transaction.
macro_rules! write_once {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let request = $crate::store::request::take_request();
        transaction!($store, |$tx| {
            let recorded = match &request {
                Some(key) => $crate::store::postgres::requests::replay($tx, key).await?,
                None => None,
            };
            match recorded {
                Some(recorded) => Ok(recorded),
                None => match $crate::store::postgres::pg_result($body) {
                    Ok(value) => {
                        if let Some(key) = &request {
                            $crate::store::postgres::requests::record($tx, key, &value).await?;
                        }
                        Ok(value)
                    }
                    // The body refused (not found, already exists, ...). If a twin of this
                    // request (the same id, sent to another replica) committed meanwhile, the
                    // refusal may be its doing: its recorded outcome is the answer.
                    Err($crate::store::postgres::PgError::Store(refusal)) => {
                        let twin = match &request {
                            Some(key) => {
                                $crate::store::postgres::requests::replay($tx, key).await?
                            }
                            None => None,
                        };
                        twin.ok_or($crate::store::postgres::PgError::Store(refusal))
                    }
                    Err(e) => Err(e),
                },
            }
        })
    }};
}

mod calls;
mod durations;
mod listen;
mod numbers;
mod privacy;
mod reconcile;
mod requests;
pub use self::reconcile::summary_sql;
mod schema;

/// Why a PostgreSQL operation failed, before it becomes a [`StoreError`].
#[derive(Debug)]
pub enum PgError {
    /// The database said no.
    Db(tokio_postgres::Error),
    /// No connection could be had from the pool.
    Pool(deadpool_postgres::PoolError),
    /// A domain answer (not found, already exists, ...).
    Store(StoreError),
    /// The transaction found that a concurrent one got there first: run it again.
    Conflict,
}

/// Results inside the PostgreSQL backend.
pub type PgResult<T> = Result<T, PgError>;

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::Db(e)
    }
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        PgError::Pool(e)
    }
}

impl From<StoreError> for PgError {
    fn from(e: StoreError) -> Self {
        PgError::Store(e)
    }
}

impl PgError {
    /// The transaction lost to a concurrent one and is worth running again: serialization
    /// failure, deadlock, or a unique key that a concurrent transaction committed first.
    pub fn is_conflict(&self) -> bool {
        matches!(self, PgError::Conflict)
            || matches!(self, PgError::Db(e) if matches!(
                e.code(),
                Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::UNIQUE_VIOLATION
            ))
    }
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> Self {
        match e {
            PgError::Store(e) => e,
            PgError::Conflict => StoreError::Unavailable(
                "the database is busy with conflicting writes; nothing of this request was stored: retry"
                    .into(),
            ),
            PgError::Pool(e) => {
                // The pool's error can name the database user: logged, not sent.
                tracing::warn!(error = %e, "no database connection");
                StoreError::Unavailable(
                    "the server cannot reach its database; nothing of this request was stored: retry later"
                        .into(),
                )
            }
            PgError::Db(e) => from_db(&e),
        }
    }
}

/// A database error as clients see it: by SQLSTATE class, with the code but never the
/// database's own text (its DETAIL can quote the row's values: numbers, SIP URIs).
fn from_db(e: &tokio_postgres::Error) -> StoreError {
    let Some(code) = e.code() else {
        tracing::warn!(error = %e, "database connection failed");
        return StoreError::Unavailable(
            "the server lost its database connection; the outcome of this request is unknown: \
             retry it (with the same request_id, if it had one)"
                .into(),
        );
    };
    let sqlstate = code.code();
    let class = &sqlstate[..2.min(sqlstate.len())];
    if *code == SqlState::DISK_FULL {
        tracing::warn!(error = %e, "database storage full");
        return StoreError::Unavailable(
            "the server's storage is full; nothing of this request was stored: retry later".into(),
        );
    }
    match class {
        // Data exceptions: a value PostgreSQL cannot hold (a NUL character in text, say).
        "22" => StoreError::InvalidArgument(format!(
            "a value in the request cannot be stored or searched for (SQLSTATE {sqlstate}): \
             remove control characters"
        )),
        // Conflicts past the retries, connection loss, lack of resources, shutdown, timeouts,
        // operator intervention, system errors, a plan invalidated by a migration: transient.
        "40" | "08" | "53" | "57" | "58" | "55" | "25" | "0A" => {
            tracing::warn!(error = %e, "database unavailable");
            StoreError::Unavailable(format!(
                "the database cannot serve this request now (SQLSTATE {sqlstate}); nothing of it was stored: retry later"
            ))
        }
        "23" => StoreError::Unavailable(format!(
            "the database is busy with conflicting writes (SQLSTATE {sqlstate}); nothing of this request was stored: retry"
        )),
        _ => StoreError::Internal(format!("{e:?}")),
    }
}

/// Pins a transaction body's error type (for the macros' type inference).
pub fn pg_result<T>(result: PgResult<T>) -> PgResult<T> {
    result
}

/// Waits a little before running a transaction again: 1, 2, 4 ... ms, at most 50, with
/// jitter so that two losers do not collide again.
pub async fn backoff(attempt: u32) {
    let base = (1u64 << attempt.min(6)).min(50);
    let mut jitter = [0u8; 1];
    let _ = getrandom::fill(&mut jitter);
    let micros = base * 1000 + u64::from(jitter[0]) * 4;
    tokio::time::sleep(Duration::from_micros(micros)).await;
}

/// Settings of the PostgreSQL backend.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections in the pool (each replica has its own pool).
    pub pool_size: usize,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions { pool_size: 16 }
    }
}

/// The LISTEN/NOTIFY channels.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Channel {
    /// Number events were appended.
    NumberEvents,
    /// Call records were created or revised.
    CallRecords,
    /// An API key was created or revoked.
    ApiKeys,
}

impl Channel {
    const ALL: [Channel; 3] = [
        Channel::NumberEvents,
        Channel::CallRecords,
        Channel::ApiKeys,
    ];

    fn name(self) -> &'static str {
        match self {
            Channel::NumberEvents => "ocx_number_events",
            Channel::CallRecords => "ocx_call_records",
            Channel::ApiKeys => "ocx_api_keys",
        }
    }
}

/// Announces a change on `channel` to every replica when the transaction commits. PostgreSQL
/// folds identical notifications of one transaction into one.
pub(crate) async fn notify(tx: &impl GenericClient, channel: Channel) -> PgResult<()> {
    tx.batch_execute(&format!("NOTIFY {}", channel.name()))
        .await?;
    Ok(())
}

/// The wake-up channels of this replica.
#[derive(Debug)]
pub(crate) struct Signals {
    number_events: watch::Sender<u64>,
    call_records: watch::Sender<u64>,
    api_keys: watch::Sender<u64>,
}

impl Signals {
    fn new() -> Signals {
        Signals {
            number_events: watch::channel(0).0,
            call_records: watch::channel(0).0,
            api_keys: watch::channel(0).0,
        }
    }

    fn sender(&self, channel: Channel) -> &watch::Sender<u64> {
        match channel {
            Channel::NumberEvents => &self.number_events,
            Channel::CallRecords => &self.call_records,
            Channel::ApiKeys => &self.api_keys,
        }
    }

    /// Wakes the watchers of `channel`.
    pub(crate) fn bump(&self, channel: Channel) {
        self.sender(channel).send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Wakes everyone (after a gap in notifications).
    pub(crate) fn bump_all(&self) {
        for channel in Channel::ALL {
            self.bump(channel);
        }
    }
}

/// What clones of a [`PgStore`] share; stops the listener when the last one goes.
struct Shared {
    signals: Arc<Signals>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// The PostgreSQL store. Cheap to clone: clones share the pool and the listener.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    shared: Arc<Shared>,
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`, with
    /// the usual libpq parameters), migrates it to the current schema, and starts listening
    /// for other replicas' changes.
    pub async fn connect(url: &str, options: PgOptions) -> StoreResult<PgStore> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Internal(format!("the database URL does not read: {e}")))?;
        config.application_name("ocx-server");
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        // A dead database host is noticed in about a minute, not the system's two hours.
        config.keepalives_idle(Duration::from_secs(30));
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| StoreError::Internal(format!("building the connection pool: {e}")))?;
        {
            let mut client = pool.get().await.map_err(PgError::from)?;
            schema::migrate(&mut client).await?;
        }
        let signals = Arc::new(Signals::new());
        let listener = listen::start(config, Arc::clone(&signals)).await?;
        Ok(PgStore {
            pool,
            shared: Arc::new(Shared { signals, listener }),
        })
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> PgResult<deadpool_postgres::Client> {
        Ok(self.pool.get().await?)
    }

    /// Runs `read` on a pooled connection. If the caller stops waiting (its deadline passed,
    /// the client went away) the query is cancelled, and the connection is closed rather than
    /// returned to the pool, so the cancellation can never hit the next borrower's query.
    async fn read<T>(
        &self,
        read: impl AsyncFnOnce(&deadpool_postgres::Client) -> PgResult<T>,
    ) -> StoreResult<T> {
        let mut guard = CancelOnDrop(Some(self.client().await?));
        let result = match &guard.0 {
            Some(client) => read(client).await,
            None => Err(StoreError::Internal("a read lost its connection".into()).into()),
        };
        // Finished: the connection goes back to the pool as usual.
        drop(guard.0.take());
        Ok(result?)
    }
}

/// Holds a pooled connection while a read runs; dropped early (the read's future was dropped),
/// it takes the connection out of the pool, cancels its query and closes it.
struct CancelOnDrop(Option<deadpool_postgres::Client>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            let cancel = client.cancel_token();
            let detached = deadpool_postgres::Object::take(client);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = cancel.cancel_query(NoTls).await;
                    drop(detached);
                });
            }
        }
    }
}

/// `limit + 1` as a query parameter: one row more than asked tells whether more follow.
fn plus_one(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1
}

fn carrier_from_row(row: &tokio_postgres::Row) -> Carrier {
    Carrier {
        carrier_id: row.get(0),
        display_name: row.get(1),
        create_time: row.get(2),
    }
}

const KEY_COLUMNS: &str =
    "key_id, role, carrier_id, display_name, secret_hash, create_time, last_use_time, revoke_time";

fn key_from_row(row: &tokio_postgres::Row) -> PgResult<ApiKey> {
    let (role, secret_hash) = rules::key_secrets(row.get(1), row.get(4))?;
    Ok(ApiKey {
        key_id: row.get(0),
        role,
        carrier_id: row.get(2),
        display_name: row.get(3),
        secret_hash,
        create_time: row.get(5),
        last_use_time: row.get(6),
        revoke_time: row.get(7),
    })
}

async fn get_key(db: &impl GenericClient, key_id: &str) -> PgResult<Option<ApiKey>> {
    let stmt = db
        .prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = $1"
        ))
        .await?;
    db.query_opt(&stmt, &[&key_id])
        .await?
        .map(|r| key_from_row(&r))
        .transpose()
}

const CONSENT_COLUMNS: &str =
    "carrier_id, tenant_id, status, countries, contact, consent_time, update_time";

fn consent_from_row(row: &tokio_postgres::Row) -> Consent {
    rules::StoredConsent {
        carrier_id: row.get(0),
        tenant_id: row.get(1),
        status: row.get(2),
        countries: row.get(3),
        contact: row.get(4),
        consent_time: row.get(5),
        update_time: row.get(6),
    }
    .into()
}

async fn get_consent(
    db: &impl GenericClient,
    carrier_id: &str,
    tenant_id: &str,
) -> PgResult<Option<Consent>> {
    let stmt = db
        .prepare_cached(&format!(
            "SELECT {CONSENT_COLUMNS} FROM consents WHERE carrier_id = $1 AND tenant_id = $2"
        ))
        .await?;
    Ok(db
        .query_opt(&stmt, &[&carrier_id, &tenant_id])
        .await?
        .map(|r| consent_from_row(&r)))
}

async fn carrier_exists(db: &impl GenericClient, carrier_id: &str) -> PgResult<bool> {
    let stmt = db
        .prepare_cached("SELECT 1 FROM carriers WHERE carrier_id = $1")
        .await?;
    Ok(db.query_opt(&stmt, &[&carrier_id]).await?.is_some())
}

fn not_found_carrier(carrier_id: &str) -> PgError {
    PgError::Store(StoreError::NotFound(format!(
        "carrier {carrier_id:?} not found"
    )))
}

#[async_trait]
impl Store for PgStore {
    async fn create_carrier(&self, carrier: Carrier) -> StoreResult<Carrier> {
        write_once!(self, |tx| async {
            let inserted = tx
                .execute(
                    "INSERT INTO carriers (carrier_id, display_name, create_time)
                     VALUES ($1, $2, $3) ON CONFLICT (carrier_id) DO NOTHING",
                    &[
                        &carrier.carrier_id,
                        &carrier.display_name,
                        &carrier.create_time,
                    ],
                )
                .await?;
            if inserted == 0 {
                return Err(PgError::Store(StoreError::AlreadyExists(format!(
                    "carrier {:?} already exists",
                    carrier.carrier_id
                ))));
            }
            tx.execute(
                "INSERT INTO carrier_heads (carrier_id) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&carrier.carrier_id],
            )
            .await?;
            Ok(carrier.clone())
        }
        .await)
    }

    async fn get_carrier(&self, carrier_id: &str) -> StoreResult<Option<Carrier>> {
        self.read(async |db| {
            let stmt = db
                .prepare_cached(
                    "SELECT carrier_id, display_name, create_time FROM carriers WHERE carrier_id = $1",
                )
                .await?;
            Ok(db
                .query_opt(&stmt, &[&carrier_id])
                .await?
                .map(|r| carrier_from_row(&r)))
        })
        .await
    }

    async fn list_carriers(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Page<Carrier>> {
        self.read(async |db| {
            let stmt = db
                .prepare_cached(
                    "SELECT carrier_id, display_name, create_time FROM carriers
                     WHERE $1::TEXT IS NULL OR carrier_id > $1 ORDER BY carrier_id LIMIT $2",
                )
                .await?;
            let items = db
                .query(&stmt, &[&after, &plus_one(limit)])
                .await?
                .iter()
                .map(carrier_from_row)
                .collect();
            let total: i64 = db
                .query_one("SELECT count(*) FROM carriers", &[])
                .await?
                .get(0);
            Ok(page(items, limit, total))
        })
        .await
    }

    async fn insert_api_key(&self, key: ApiKey) -> StoreResult<ApiKey> {
        write_once!(self, |tx| async {
            if let Some(carrier) = &key.carrier_id
                && !carrier_exists(tx, carrier).await?
            {
                return Err(not_found_carrier(carrier));
            }
            tx.execute(
                &format!(
                    "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ),
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
            notify(tx, Channel::ApiKeys).await?;
            Ok(key.clone())
        }
        .await)
    }

    async fn revoke_api_key(&self, key_id: &str) -> StoreResult<ApiKey> {
        write_once!(self, |tx| async {
            tx.execute(
                "UPDATE api_keys SET revoke_time = $2 WHERE key_id = $1 AND revoke_time IS NULL",
                &[&key_id, &now_micros()],
            )
            .await?;
            let key = get_key(tx, key_id).await?.ok_or_else(|| {
                PgError::Store(StoreError::NotFound(format!(
                    "API key {key_id:?} not found"
                )))
            })?;
            notify(tx, Channel::ApiKeys).await?;
            Ok(key)
        }
        .await)
    }

    async fn list_api_keys(
        &self,
        carrier_id: Option<String>,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Page<ApiKey>> {
        self.read(async |db| {
            let stmt = db
                .prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys
                     WHERE ($1::TEXT IS NULL OR carrier_id = $1) AND ($2::TEXT IS NULL OR key_id > $2)
                     ORDER BY key_id LIMIT $3"
                ))
                .await?;
            let items = db
                .query(&stmt, &[&carrier_id, &after, &plus_one(limit)])
                .await?
                .iter()
                .map(key_from_row)
                .collect::<PgResult<Vec<_>>>()?;
            let total: i64 = db
                .query_one(
                    "SELECT count(*) FROM api_keys WHERE $1::TEXT IS NULL OR carrier_id = $1",
                    &[&carrier_id],
                )
                .await?
                .get(0);
            Ok(page(items, limit, total))
        })
        .await
    }

    async fn active_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        self.read(async |db| {
            db.query(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE revoke_time IS NULL"),
                &[],
            )
            .await?
            .iter()
            .map(key_from_row)
            .collect()
        })
        .await
    }

    async fn record_key_use(&self, uses: Vec<(String, Micros)>) -> StoreResult<()> {
        let (ids, times): (Vec<String>, Vec<Micros>) = uses.into_iter().unzip();
        transaction!(self, |tx| {
            async {
            // Keys in id order, so two replicas flushing at once lock rows in the same order.
            tx.execute(
                "UPDATE api_keys AS k SET last_use_time = u.at
                   FROM (SELECT key_id, max(at) AS at FROM unnest($1::TEXT[], $2::BIGINT[]) AS u(key_id, at)
                         GROUP BY key_id ORDER BY key_id) AS u
                  WHERE k.key_id = u.key_id AND (k.last_use_time IS NULL OR k.last_use_time < u.at)",
                &[&ids, &times],
            )
            .await?;
            Ok(())
        }
        .await
        })
    }

    async fn grant_consent(&self, grant: ConsentGrant) -> StoreResult<Consent> {
        write_once!(self, |tx| async {
            if !carrier_exists(tx, &grant.carrier_id).await? {
                return Err(not_found_carrier(&grant.carrier_id));
            }
            let contact = rules::contact_json(&grant.contact)?;
            let now = now_micros();
            tx.execute(
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
                    &contact,
                    &now,
                ],
            )
            .await?;
            get_consent(tx, &grant.carrier_id, &grant.tenant_id)
                .await?
                .ok_or_else(|| {
                    PgError::Store(StoreError::Internal("consent vanished after upsert".into()))
                })
        }
        .await)
    }

    async fn revoke_consent(&self, carrier_id: &str, tenant_id: &str) -> StoreResult<Consent> {
        write_once!(self, |tx| async {
            let removed = i64::from(ConsentStatus::Removed.code());
            tx.execute(
                "UPDATE consents SET status = $3, update_time = $4
                 WHERE carrier_id = $1 AND tenant_id = $2 AND status != $3",
                &[&carrier_id, &tenant_id, &removed, &now_micros()],
            )
            .await?;
            get_consent(tx, carrier_id, tenant_id)
                .await?
                .ok_or_else(|| {
                    PgError::Store(StoreError::NotFound(format!(
                        "tenant {tenant_id} has no consent for carrier {carrier_id:?}"
                    )))
                })
        }
        .await)
    }

    async fn list_consents(
        &self,
        carrier_id: &str,
        status: Option<ConsentStatus>,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Page<Consent>> {
        let status = status.map(|s| i64::from(s.code()));
        self.read(async |db| {
            let stmt = db
                .prepare_cached(&format!(
                    "SELECT {CONSENT_COLUMNS} FROM consents
                     WHERE carrier_id = $1 AND ($2::BIGINT IS NULL OR status = $2)
                       AND ($3::TEXT IS NULL OR tenant_id > $3)
                     ORDER BY tenant_id LIMIT $4"
                ))
                .await?;
            let items = db
                .query(&stmt, &[&carrier_id, &status, &after, &plus_one(limit)])
                .await?
                .iter()
                .map(consent_from_row)
                .collect();
            let total: i64 = db
                .query_one(
                    "SELECT count(*) FROM consents WHERE carrier_id = $1 AND ($2::BIGINT IS NULL OR status = $2)",
                    &[&carrier_id, &status],
                )
                .await?
                .get(0);
            Ok(page(items, limit, total))
        })
        .await
    }

    async fn upload_numbers(
        &self,
        carrier_id: &str,
        items: Vec<NumberUpload>,
    ) -> StoreResult<Vec<ItemOutcome>> {
        write_once!(self, |tx| numbers::upload(tx, carrier_id, &items).await)
    }

    async fn release_numbers(
        &self,
        carrier_id: &str,
        items: Vec<String>,
    ) -> StoreResult<Vec<ItemOutcome>> {
        write_once!(self, |tx| numbers::release(tx, carrier_id, &items).await)
    }

    async fn get_number(&self, carrier_id: &str, number: &str) -> StoreResult<Option<PhoneNumber>> {
        self.read(async |db| {
            Ok(numbers::get(db, number)
                .await?
                .filter(|n| n.carrier_id == carrier_id))
        })
        .await
    }

    async fn list_numbers(
        &self,
        carrier_id: &str,
        filter: NumberFilter,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Page<PhoneNumber>> {
        self.read(async |db| {
            let (items, total) =
                numbers::list(db, carrier_id, &filter, after.as_deref(), limit + 1).await?;
            Ok(page(items, limit, total))
        })
        .await
    }

    async fn assign_number(&self, request: AssignRequest) -> StoreResult<PhoneNumber> {
        write_once!(self, |tx| numbers::assign(tx, &request).await)
    }

    async fn unassign_number(&self, number: &str, tenant_id: &str) -> StoreResult<PhoneNumber> {
        write_once!(self, |tx| numbers::unassign(tx, number, tenant_id).await)
    }

    async fn number_event_head(&self, carrier_id: &str) -> StoreResult<i64> {
        self.read(async |db| {
            let stmt = db
                .prepare_cached(
                    "SELECT coalesce((SELECT number_event_seq FROM carrier_heads WHERE carrier_id = $1), 0)",
                )
                .await?;
            Ok(db.query_one(&stmt, &[&carrier_id]).await?.get(0))
        })
        .await
    }

    async fn call_record_head(&self, carrier_id: &str) -> StoreResult<i64> {
        self.read(async |db| {
            let stmt = db
                .prepare_cached(
                    "SELECT coalesce((SELECT call_record_seq FROM carrier_heads WHERE carrier_id = $1), 0)",
                )
                .await?;
            Ok(db.query_one(&stmt, &[&carrier_id]).await?.get(0))
        })
        .await
    }

    async fn number_events_after(
        &self,
        carrier_id: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<NumberEvent>> {
        self.read(async |db| numbers::events_after(db, carrier_id, after, limit).await)
            .await
    }

    fn number_event_signal(&self) -> watch::Receiver<u64> {
        self.shared.signals.number_events.subscribe()
    }

    async fn ingest_call_records(
        &self,
        records: Vec<CallRecord>,
    ) -> StoreResult<Vec<IngestOutcome>> {
        transaction!(self, |tx| calls::ingest(tx, &records).await)
    }

    async fn get_call_record(
        &self,
        carrier_id: &str,
        call_id: &str,
    ) -> StoreResult<Option<CallRecord>> {
        self.read(async |db| calls::get(db, carrier_id, call_id).await)
            .await
    }

    async fn list_call_records(
        &self,
        carrier_id: &str,
        filter: CallRecordFilter,
        after: Option<CallRecordCursor>,
        limit: usize,
    ) -> StoreResult<KeyedPage<CallRecord, CallRecordCursor>> {
        self.read(async |db| calls::list(db, carrier_id, &filter, after, limit).await)
            .await
    }

    async fn call_records_after(
        &self,
        carrier_id: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<CallRecord>> {
        self.read(async |db| calls::feed(db, carrier_id, after, limit).await)
            .await
    }

    fn call_record_signal(&self) -> watch::Receiver<u64> {
        self.shared.signals.call_records.subscribe()
    }

    fn api_key_signal(&self) -> watch::Receiver<u64> {
        self.shared.signals.api_keys.subscribe()
    }

    async fn report_call_durations(
        &self,
        carrier_id: &str,
        reports: Vec<DurationReport>,
    ) -> StoreResult<Vec<DurationOutcome>> {
        write_once!(self, |tx| durations::report(tx, carrier_id, &reports).await)
    }

    async fn list_call_durations(
        &self,
        carrier_id: &str,
        window: (Option<Micros>, Option<Micros>),
        after: Option<(Micros, i64)>,
        limit: usize,
    ) -> StoreResult<KeyedPage<CallDuration, (Micros, i64)>> {
        self.read(async |db| {
            durations::list(db, carrier_id, window.0, window.1, after, limit).await
        })
        .await
    }

    async fn reconciliation_summary(
        &self,
        p: ReconciliationPeriod,
    ) -> StoreResult<ReconciliationSummary> {
        self.read(async |db| {
            reconcile::summary(db, &p.carrier_id, p.start, p.end, p.tolerance_us).await
        })
        .await
    }

    async fn list_discrepancies(
        &self,
        p: ReconciliationPeriod,
        kind: Option<DiscrepancyKind>,
        after: Option<DiscrepancyCursor>,
        limit: usize,
    ) -> StoreResult<KeyedPage<Discrepancy, DiscrepancyCursor>> {
        self.read(async |db| {
            reconcile::discrepancies(
                db,
                &p.carrier_id,
                p.start,
                p.end,
                p.tolerance_us,
                kind,
                after,
                limit,
            )
            .await
        })
        .await
    }

    async fn tenant_usage(
        &self,
        tenant_id: &str,
        window: (Micros, Micros),
        grouping: UsageGrouping,
    ) -> StoreResult<Vec<UsageRow>> {
        self.read(async |db| reconcile::usage(db, tenant_id, window.0, window.1, grouping).await)
            .await
    }

    async fn retention_policy(&self) -> StoreResult<RetentionPolicy> {
        self.read(async |db| privacy::policy(db).await).await
    }

    async fn set_retention_policy(&self, policy: RetentionPolicy) -> StoreResult<RetentionPolicy> {
        write_once!(self, |tx| privacy::set_policy(tx, &policy).await)
    }

    async fn purge_expired(&self, now: Micros) -> StoreResult<PurgeCounts> {
        privacy::purge_expired(self, now).await
    }

    async fn erase_tenant(&self, tenant_id: &str) -> StoreResult<EraseCounts> {
        write_once!(self, |tx| privacy::erase_tenant(tx, tenant_id).await)
    }

    async fn append_audit_events(&self, events: Vec<AuditEvent>) -> StoreResult<()> {
        transaction!(self, |tx| privacy::append_audit(tx, &events).await)
    }

    async fn list_audit_events(
        &self,
        filter: AuditFilter,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<(Vec<AuditEvent>, bool)> {
        self.read(async |db| privacy::list_audit(db, &filter, before, limit).await)
            .await
    }
}

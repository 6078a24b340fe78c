//! Connections and transactions: errors as the backend sees them, the transaction macros
//! that run a write again when it lost a conflict, and reads that cancel their query when the
//! caller stops waiting. The SQLite backend's counterpart is its `actor` (one writer thread,
//! reader threads).

use std::time::Duration;

use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::store::{StoreError, StoreResult};

/// How many times a transaction that lost a conflict is run again before the caller gets
/// UNAVAILABLE.
pub const MAX_ATTEMPTS: u32 = 10;

/// Runs `$body` (an expression of type `PgResult<T>` using `$tx: &Transaction`) in one
/// transaction and commits it; runs it again, in a new transaction, when it lost a conflict
/// to a concurrent writer (see [`PgError::is_conflict`]). Evaluates to `StoreResult<T>`.
macro_rules! transaction {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut attempt = 0u32;
        loop {
            let result: $crate::store::postgres::pool::PgResult<_> =
                ::tracing::Instrument::instrument(
                    async {
                        let mut client = $store.client().await?;
                        let $tx = client.transaction().await?;
                        let value = $crate::store::postgres::pool::pg_result({
                            let $tx = &$tx;
                            $body
                        })?;
                        ::tracing::Instrument::instrument(
                            $tx.commit(),
                            if ::tracing::Span::current().is_none() {
                                ::tracing::Span::none()
                            } else {
                                ::tracing::debug_span!("store.commit", db.system = "postgresql")
                            },
                        )
                        .await?;
                        Ok(value)
                    },
                    // Only a call's work is traced (see the SQLite writer's).
                    if ::tracing::Span::current().is_none() {
                        ::tracing::Span::none()
                    } else {
                        ::tracing::debug_span!(
                            "store.transaction",
                            db.system = "postgresql",
                            ocx.attempt = attempt + 1
                        )
                    },
                )
                .await;
            match result {
                Ok(value) => break Ok(value),
                Err(e)
                    if e.is_conflict()
                        && attempt + 1 < $crate::store::postgres::pool::MAX_ATTEMPTS =>
                {
                    attempt += 1;
                    $crate::store::postgres::pool::backoff(attempt).await;
                }
                Err(e) => break Err($crate::store::StoreError::from(e)),
            }
        }
    }};
}

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

/// The connection pool: where transactions (the macros above) and reads get a connection.
#[derive(Clone)]
pub struct Db(pub deadpool_postgres::Pool);

impl Db {
    /// A pooled connection.
    pub async fn client(&self) -> PgResult<deadpool_postgres::Client> {
        Ok(self.0.get().await?)
    }

    /// Runs `read` on a pooled connection. If the caller stops waiting (its deadline passed,
    /// the client went away) the query is cancelled, and the connection is closed rather than
    /// returned to the pool, so the cancellation can never hit the next borrower's query.
    pub async fn read<T>(
        &self,
        read: impl AsyncFnOnce(&deadpool_postgres::Client) -> PgResult<T>,
    ) -> StoreResult<T> {
        let span = if tracing::Span::current().is_none() {
            tracing::Span::none()
        } else {
            tracing::debug_span!("store.read", db.system = "postgresql")
        };
        let mut guard = CancelOnDrop(Some(
            tracing::Instrument::instrument(self.client(), span.clone()).await?,
        ));
        let result = match &guard.0 {
            Some(client) => tracing::Instrument::instrument(read(client), span).await,
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

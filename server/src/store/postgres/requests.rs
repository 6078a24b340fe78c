//! Request-id records (see `store::request`), read and written in the write's transaction by
//! [`write_once!`](super::write_once). The rules are the SQLite backend's (`sqlite::requests`);
//! the window is the same.

use deadpool_postgres::GenericClient;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::pool::{PgError, PgResult};
use crate::domain::now_micros;
use crate::store::StoreError;
use crate::store::request::{RequestKey, window_start};

/// `transaction!` for a write that honours request ids (see `store::request`): a retry of a
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
                None => match $crate::store::postgres::pool::pg_result($body) {
                    Ok(value) => {
                        if let Some(key) = &request {
                            $crate::store::postgres::requests::record($tx, key, &value).await?;
                        }
                        Ok(value)
                    }
                    // The body refused (not found, already exists, ...). If a twin of this
                    // request (the same id, sent to another replica) committed meanwhile, the
                    // refusal may be its doing: its recorded outcome is the answer.
                    Err($crate::store::postgres::pool::PgError::Store(refusal)) => {
                        let twin = match &request {
                            Some(key) => {
                                $crate::store::postgres::requests::replay($tx, key).await?
                            }
                            None => None,
                        };
                        twin.ok_or($crate::store::postgres::pool::PgError::Store(refusal))
                    }
                    Err(e) => Err(e),
                },
            }
        })
    }};
}

/// The recorded outcome for `key` (within the window), or ALREADY_EXISTS if the id was used
/// for a different request.
pub async fn replay<T: DeserializeOwned>(
    db: &impl GenericClient,
    key: &RequestKey,
) -> PgResult<Option<T>> {
    let stmt = db
        .prepare_cached(
            "SELECT rpc, fingerprint, outcome FROM request_ids
              WHERE key_id = $1 AND request_id = $2 AND create_time >= $3",
        )
        .await?;
    let row = db
        .query_opt(
            &stmt,
            &[&key.key_id, &key.request_id, &window_start(now_micros())],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let (rpc, fingerprint, outcome): (String, Vec<u8>, String) =
        (row.get(0), row.get(1), row.get(2));
    crate::store::request::recorded(key, &rpc, &fingerprint, &outcome)
        .map(Some)
        .map_err(PgError::Store)
}

/// Records `outcome` for `key`. A record left from an earlier window is replaced; a record of
/// a concurrent transaction makes this one fail with a unique violation, so it is retried and
/// replays that record.
pub async fn record<T: Serialize>(
    db: &impl GenericClient,
    key: &RequestKey,
    outcome: &T,
) -> PgResult<()> {
    let outcome = serde_json::to_string(outcome)
        .map_err(|e| StoreError::Internal(format!("recording an outcome: {e}")))?;
    let now = now_micros();
    let stmt = db
        .prepare_cached(
            "INSERT INTO request_ids (key_id, request_id, rpc, fingerprint, outcome, create_time)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (key_id, request_id) DO UPDATE SET
               rpc = excluded.rpc, fingerprint = excluded.fingerprint,
               outcome = excluded.outcome, create_time = excluded.create_time
             WHERE request_ids.create_time < $7",
        )
        .await?;
    let written = db
        .execute(
            &stmt,
            &[
                &key.key_id,
                &key.request_id,
                &key.rpc,
                &key.fingerprint.as_slice(),
                &outcome,
                &now,
                &window_start(now),
            ],
        )
        .await?;
    if written == 0 {
        // A live record appeared after this transaction looked: a concurrent retry won. Run
        // again (as a conflict), and the next attempt replays the winner's outcome.
        return Err(PgError::Conflict);
    }
    Ok(())
}

/// Deletes records past the window; returns how many.
pub async fn purge(db: &impl GenericClient, now: i64) -> PgResult<u64> {
    Ok(db
        .execute(
            "DELETE FROM request_ids WHERE create_time < $1",
            &[&window_start(now)],
        )
        .await?)
}

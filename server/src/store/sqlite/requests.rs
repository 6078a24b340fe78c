//! Request-id records (see `store::request`): looked up and written in the same transaction as
//! the write they belong to.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::actor::Touched;
use crate::domain::now_micros;
use crate::store::request::{RequestKey, recorded, window_start};
use crate::store::{StoreError, StoreResult};

/// Runs `work` once for `key`: a retry gets the recorded outcome and `work` does not run.
pub fn once<T, F>(conn: &Connection, key: &RequestKey, work: F) -> StoreResult<(T, Touched)>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce(&Connection) -> StoreResult<(T, Touched)>,
{
    if let Some(value) = replay(conn, key)? {
        return Ok((value, Touched::default()));
    }
    let (value, touched) = work(conn)?;
    record(conn, key, &value)?;
    Ok((value, touched))
}

/// The recorded outcome for `key` (within the window), or ALREADY_EXISTS if the id was used
/// for a different request.
pub fn replay<T: DeserializeOwned>(conn: &Connection, key: &RequestKey) -> StoreResult<Option<T>> {
    let row: Option<(String, Vec<u8>, String)> = conn
        .prepare_cached(
            "SELECT rpc, fingerprint, outcome FROM request_ids
              WHERE key_id = ?1 AND request_id = ?2 AND create_time >= ?3",
        )?
        .query_row(
            params![key.key_id, key.request_id, window_start(now_micros())],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    row.map(|(rpc, fingerprint, outcome)| recorded(key, &rpc, &fingerprint, &outcome))
        .transpose()
}

/// Records `outcome` for `key`: inside the write's transaction ([`once`]), or on its own for a
/// write that spans several transactions and is harmless to run twice (a purge).
pub fn record<T: Serialize>(conn: &Connection, key: &RequestKey, outcome: &T) -> StoreResult<()> {
    let outcome = serde_json::to_string(outcome)
        .map_err(|e| StoreError::Internal(format!("recording an outcome: {e}")))?;
    conn.prepare_cached(
        "INSERT OR REPLACE INTO request_ids (key_id, request_id, rpc, fingerprint, outcome, create_time)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        key.key_id,
        key.request_id,
        key.rpc,
        key.fingerprint.as_slice(),
        outcome,
        now_micros()
    ])?;
    Ok(())
}

/// Deletes records past the window; returns how many.
pub fn purge(conn: &Connection, now: i64) -> StoreResult<usize> {
    Ok(conn
        .prepare_cached("DELETE FROM request_ids WHERE create_time < ?1")?
        .execute([window_start(now)])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(request_id: &str) -> RequestKey {
        RequestKey {
            key_id: "k1".into(),
            request_id: request_id.into(),
            rpc: "UploadNumbers",
            fingerprint: [7; 32],
        }
    }

    #[test]
    fn records_are_honoured_within_the_window_and_purged_after_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = super::super::baseline::open(&dir.path().join("t.db")).expect("open");
        let (fresh, stale) = (key("a"), key("b"));
        record(&conn, &fresh, &41).expect("record");
        record(&conn, &stale, &42).expect("record");
        // The stale one was written just past the window.
        let past =
            now_micros() - crate::store::request::REQUEST_ID_DAYS * crate::domain::DAY_US - 1;
        conn.execute(
            "UPDATE request_ids SET create_time = ?1 WHERE request_id = 'b'",
            [past],
        )
        .expect("age it");
        assert_eq!(replay::<i32>(&conn, &fresh).expect("replay"), Some(41));
        assert_eq!(replay::<i32>(&conn, &stale).expect("replay"), None);
        let other = RequestKey {
            fingerprint: [8; 32],
            ..fresh.clone()
        };
        assert!(matches!(
            replay::<i32>(&conn, &other),
            Err(StoreError::Refused(
                crate::domain::Refusal::RequestIdReused { .. }
            ))
        ));
        assert_eq!(purge(&conn, now_micros()).expect("purge"), 1);
        assert_eq!(replay::<i32>(&conn, &fresh).expect("replay"), Some(41));
    }
}

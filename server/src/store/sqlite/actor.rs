//! The threads that own the SQLite connections.
//!
//! - One **writer thread** owns the only write connection. Jobs arrive over a bounded channel;
//!   the writer drains whatever is queued (up to [`MAX_GROUP`] jobs), runs them in one
//!   `BEGIN IMMEDIATE` transaction, each inside its own savepoint so that one failing job rolls
//!   back alone, commits once (one fsync for the group: "group commit"), and only then replies
//!   to each job. A reply therefore always means "durably committed".
//! - **Readers** are a small pool of read-only connections used from `spawn_blocking`, bounded
//!   by a semaphore. WAL mode lets them read while the writer writes.
//!
//! rusqlite is blocking, so none of this runs on the async executor threads: the writer is a
//! plain OS thread and readers run on tokio's blocking pool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::store::{StoreError, StoreResult};

/// Most jobs committed together in one transaction.
pub const MAX_GROUP: usize = 512;
/// Jobs that may wait for the writer before senders are slowed down (backpressure).
const QUEUE_DEPTH: usize = 1024;
/// Read connections kept open at most.
const MAX_READERS: usize = 8;

/// What a write job touched, so the writer can wake the right watchers after the commit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Touched {
    /// Number events were appended.
    pub number_events: bool,
    /// Call records were created or revised.
    pub call_records: bool,
    /// Personal data was deleted: checkpoint the write-ahead log into the database and truncate
    /// it after the commit, so no copy of the deleted rows stays in the log.
    pub checkpoint: bool,
}

/// One unit of work for the writer; type-erased so jobs of any result type share a queue.
trait Job: Send {
    /// Runs inside the group transaction (the writer wraps it in a savepoint).
    fn run(&mut self, conn: &Connection) -> Result<Touched, ()>;
    /// Delivers the result once the group's commit is known.
    fn finish(self: Box<Self>, commit: Result<(), String>);
}

/// A job built from a closure; keeps the closure's result until the commit is known.
struct ClosureJob<T, F> {
    /// The work; taken when it runs.
    work: Option<F>,
    /// The work's result, held until commit.
    result: Option<StoreResult<(T, Touched)>>,
    /// Where the caller waits.
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Job for ClosureJob<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> StoreResult<(T, Touched)> + Send,
{
    fn run(&mut self, conn: &Connection) -> Result<Touched, ()> {
        let result = match self.work.take() {
            Some(work) => work(conn),
            None => Err(StoreError::Internal("job ran twice".into())),
        };
        let outcome = match &result {
            Ok((_, touched)) => Ok(*touched),
            Err(_) => Err(()),
        };
        self.result = Some(result);
        outcome
    }

    fn finish(self: Box<Self>, commit: Result<(), String>) {
        let result = match (self.result, commit) {
            (Some(Ok((value, _))), Ok(())) => Ok(value),
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(_)), Err(e)) => Err(StoreError::Unavailable(format!(
                "the write was not committed: {e}"
            ))),
            (None, _) => Err(StoreError::Internal("job never ran".into())),
        };
        // The caller may have gone away (cancelled request); the write stands regardless.
        let _ = self.reply.send(result);
    }
}

/// Opens a connection with the pragmas every connection needs.
/// Opens a connection with `flags` plus `NO_MUTEX`, as rusqlite's defaults have it:
/// each connection is used by one thread at a time (a `Connection` is `Send`, not `Sync`), so
/// SQLite's per-connection mutex, taken on every call (every column of every row) in its
/// serialized mode, is pure cost: a sixth of the feed's CPU before it was turned off.
fn open(path: &Path, flags: OpenFlags) -> rusqlite::Result<Connection> {
    let flags = flags | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: the WAL is synced at every commit, so an acknowledged write survives
    /// a crash of the process or of the machine. What the server always uses.
    #[default]
    Full,
    /// `synchronous=NORMAL`: an acknowledged write survives a crash of the process but not a
    /// power loss. Only for measuring what durability costs (`ocx-bench`).
    Normal,
}

/// Opens the write connection: WAL, `synchronous` per `durability`, foreign keys on.
pub fn open_writer(path: &Path, durability: Durability) -> rusqlite::Result<Connection> {
    let conn = open(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    )?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let synchronous = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "cache_size", -65536)?; // 64 MiB
    // Deleted personal data is overwritten with zeros, not left in free space.
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(conn)
}

/// Handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    /// Queue to the writer thread; bounded for backpressure.
    tx: mpsc::Sender<Box<dyn Job>>,
    /// Bumped after each commit that appended number events.
    number_events: Arc<watch::Sender<u64>>,
    /// Bumped after each commit that created or revised call records.
    call_records: Arc<watch::Sender<u64>>,
}

impl Writer {
    /// Starts the writer thread on an open connection.
    pub fn start(conn: Connection) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let number_events = Arc::new(watch::channel(0u64).0);
        let call_records = Arc::new(watch::channel(0u64).0);
        let signals = Signals {
            number_events: Arc::clone(&number_events),
            call_records: Arc::clone(&call_records),
        };
        std::thread::Builder::new()
            .name("ocx-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, &signals))?;
        Ok(Writer {
            tx,
            number_events,
            call_records,
        })
    }

    /// Runs `work` in the next group transaction and returns its result after the commit.
    pub async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<(T, Touched)> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(ClosureJob {
            work: Some(work),
            result: None,
            reply,
        });
        self.tx
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the database writer has stopped".into()))?;
        rx.await.map_err(|_| {
            StoreError::Unavailable("the database writer stopped before committing".into())
        })?
    }

    /// A receiver that changes after each commit that appended number events.
    pub fn number_event_signal(&self) -> watch::Receiver<u64> {
        self.number_events.subscribe()
    }

    /// A receiver that changes after each commit that created or revised call records.
    pub fn call_record_signal(&self) -> watch::Receiver<u64> {
        self.call_records.subscribe()
    }
}

/// The wake-up channels the writer bumps after commits.
struct Signals {
    /// Number events appended.
    number_events: Arc<watch::Sender<u64>>,
    /// Call records created or revised.
    call_records: Arc<watch::Sender<u64>>,
}

fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<Box<dyn Job>>, signals: &Signals) {
    let mut group: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let commit = run_group(&conn, &mut group);
        let touched = commit.as_ref().ok().copied().unwrap_or_default();
        let commit = commit.map(|_| ());
        if let Err(e) = &commit {
            tracing::error!(error = %e, jobs = group.len(), "group commit failed");
        }
        if touched.number_events {
            signals
                .number_events
                .send_modify(|v| *v = v.wrapping_add(1));
        }
        if touched.call_records {
            signals.call_records.send_modify(|v| *v = v.wrapping_add(1));
        }
        if touched.checkpoint {
            truncate_wal(&conn);
        }
        for job in group.drain(..) {
            job.finish(commit.clone());
        }
    }
    tracing::debug!("database writer stopped");
}

/// Copies the whole write-ahead log into the database and truncates it to nothing (waiting up
/// to the busy timeout for readers of older snapshots), so that rows deleted for privacy leave
/// no copy in the log; with `secure_delete` their space in the database is already zeroed.
fn truncate_wal(conn: &Connection) {
    let result = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    });
    match result {
        Ok(0) => {}
        Ok(_) => tracing::warn!(
            "readers kept the write-ahead log from being truncated; the next purge retries"
        ),
        Err(e) => tracing::warn!(error = %e, "could not checkpoint the write-ahead log"),
    }
}

/// Ends a failed transaction. If the connection cannot get back to autocommit, it is in a
/// state nobody can reason about, so the process stops rather than acknowledge on top of it
/// (a supervisor restarts it; SQLite recovers from the WAL on open).
fn abandon(conn: &Connection) {
    let _ = conn.execute_batch("ROLLBACK");
    if !conn.is_autocommit() {
        tracing::error!("the write connection is stuck inside a transaction; stopping the process");
        std::process::abort();
    }
}

/// Runs one job inside its savepoint. A panicking job is rolled back like a failing one and its
/// caller gets an error; the writer thread and the other jobs carry on.
fn run_job(conn: &Connection, job: &mut Box<dyn Job>) -> Result<Touched, ()> {
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(conn)));
    run.unwrap_or_else(|_| {
        tracing::error!("a write job panicked; it was rolled back");
        Err(())
    })
}

/// Runs a group in one transaction; returns what the committed jobs touched.
fn run_group(conn: &Connection, group: &mut [Box<dyn Job>]) -> Result<Touched, String> {
    if !conn.is_autocommit() {
        abandon(conn);
    }
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| e.to_string())?;
    let mut touched = Touched::default();
    for job in group.iter_mut() {
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            abandon(conn);
            return Err(e.to_string());
        }
        let end = match run_job(conn, job) {
            Ok(t) => {
                touched.number_events |= t.number_events;
                touched.call_records |= t.call_records;
                touched.checkpoint |= t.checkpoint;
                "RELEASE job"
            }
            Err(()) => "ROLLBACK TO job; RELEASE job",
        };
        if let Err(e) = conn.execute_batch(end) {
            abandon(conn);
            return Err(e.to_string());
        }
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => Ok(touched),
        Err(e) => {
            // An I/O error while committing (a failed fsync) leaves the file in a state that
            // retrying on the same connection cannot be trusted with: stop, and let recovery
            // on the next open decide what was committed. Anything else (disk full) rolls back.
            if e.sqlite_error_code() == Some(rusqlite::ErrorCode::SystemIoFailure) {
                tracing::error!(error = %e, "I/O error during commit; stopping the process");
                std::process::abort();
            }
            abandon(conn);
            Err(e.to_string())
        }
    }
}

/// A pool of read-only connections, used from tokio's blocking threads.
#[derive(Clone)]
pub struct Readers {
    /// Database file.
    path: PathBuf,
    /// Idle connections. A std `Mutex`: it is held only to push or pop, never across `.await`.
    idle: Arc<Mutex<Vec<Connection>>>,
    /// Bounds concurrent readers (and so open connections).
    permits: Arc<Semaphore>,
    /// Bumped each time a query is interrupted because its caller stopped waiting.
    interrupted: Arc<watch::Sender<u64>>,
}

impl Readers {
    /// A pool for the database at `path` (which the writer has already created).
    pub fn new(path: &Path) -> Readers {
        Readers {
            path: path.to_path_buf(),
            idle: Arc::new(Mutex::new(Vec::new())),
            permits: Arc::new(Semaphore::new(MAX_READERS)),
            interrupted: Arc::new(watch::channel(0).0),
        }
    }

    /// A receiver that changes each time a query is interrupted because its caller stopped
    /// waiting (for tests and metrics).
    pub fn interrupted(&self) -> watch::Receiver<u64> {
        self.interrupted.subscribe()
    }

    /// Runs `query` on a read connection off the executor threads.
    ///
    /// If the returned future is dropped before the query ends (the caller's deadline passed,
    /// or the client went away), the query is interrupted (`sqlite3_interrupt`) so the
    /// blocking thread and the connection are released at once rather than when it finishes.
    pub async fn read<T, F>(&self, query: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("the reader pool is closed".into()))?;
        let pool = self.clone();
        let running = Arc::new(Mutex::new(None::<rusqlite::InterruptHandle>));
        let guard = InterruptOnDrop {
            running: Arc::clone(&running),
            armed: true,
        };
        let mut guard = guard;
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = match pool
                .idle
                .lock()
                .map_err(|_| ())
                .and_then(|mut v| v.pop().ok_or(()))
            {
                Ok(conn) => conn,
                Err(()) => open(&pool.path, OpenFlags::SQLITE_OPEN_READ_ONLY)?,
            };
            if let Ok(mut slot) = running.lock() {
                *slot = Some(conn.get_interrupt_handle());
            }
            // One read transaction per query closure: a page and its total see one snapshot.
            let result = conn
                .execute_batch("BEGIN DEFERRED")
                .map_err(StoreError::from)
                .and_then(|()| query(&conn));
            // Disarm before anything else runs on this connection.
            if let Ok(mut slot) = running.lock() {
                *slot = None;
            }
            let _ = conn.execute_batch("COMMIT");
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            if matches!(result, Err(StoreError::Cancelled(_))) {
                pool.interrupted.send_modify(|n| *n += 1);
            }
            // A connection that cannot get back to autocommit is closed, not reused.
            if conn.is_autocommit()
                && let Ok(mut idle) = pool.idle.lock()
            {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Internal(format!("reader task failed: {e}")))?;
        guard.armed = false;
        result
    }
}

/// Interrupts a running read query when dropped while armed.
struct InterruptOnDrop {
    /// The running query's interrupt handle, while it runs.
    running: Arc<Mutex<Option<rusqlite::InterruptHandle>>>,
    /// Whether the read is still awaited (disarmed once its result arrived).
    armed: bool,
}

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(slot) = self.running.lock()
            && let Some(handle) = slot.as_ref()
        {
            handle.interrupt();
            tracing::debug!("read abandoned by its caller; query interrupted");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_writer_is_durable_wal_with_full_sync() {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn =
            super::open_writer(&dir.path().join("t.db"), super::Durability::Full).expect("open");
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .expect("journal_mode");
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .expect("synchronous");
        assert_eq!(
            (mode.as_str(), sync),
            ("wal", 2),
            "WAL with synchronous=FULL"
        );
    }
}

//! The threads that own the SQLite connections.
//!
//! - One **writer thread** owns the only write connection. Jobs arrive over a bounded channel;
//!   the writer drains whatever is queued (up to [`MAX_GROUP`] jobs), runs them in one
//!   `BEGIN IMMEDIATE` transaction, commits once (one fsync for the group: "group commit"),
//!   and only then replies to each job. A reply therefore always means "durably committed".
//!   One failing job rolls back alone: when a job fails after changing rows, the writer rolls
//!   the transaction back and runs the group again with each job in its own savepoint (see
//!   [`run_group`]).
//! - **Readers** are dedicated threads, each with its own read-only connection, in two lanes:
//!   short reads (point reads, pages, feeds) and long ones (reconciliation, usage), so that a
//!   long query never holds up a short one. WAL mode lets them read while the writer writes.
//!
//! rusqlite is blocking, so none of this runs on the async executor threads: the writer and
//! the readers are plain OS threads, reached over channels.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot, watch};

use crate::store::{StoreError, StoreResult};

/// How long a connection waits for a lock held by another before SQLITE_BUSY. In WAL mode only
/// checkpoints and recovery take such locks; readers and the single writer never wait on each
/// other, so clients never see BUSY (`tests/tests/it/contention.rs`).
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Past this size the writer tries to restart the write-ahead log (see `restart_wal`).
const WAL_RESTART_BYTES: u64 = 4 << 20;
/// Past this size the writer waits for readers as long as it takes (up to the busy timeout) to
/// restart the log: the bound on its size, give or take one group commit.
const WAL_LIMIT_BYTES: u64 = 16 << 20;
/// How long a log restart may wait for readers of older snapshots.
const WAL_RESTART_WAIT: std::time::Duration = std::time::Duration::from_millis(50);
/// Most jobs committed together in one transaction.
pub const MAX_GROUP: usize = 512;
/// Jobs that may wait for the writer before senders are slowed down (backpressure).
const QUEUE_DEPTH: usize = 1024;
/// Reader threads (and connections) for short reads. Three measured best for `GetNumber` at 64
/// calls in flight on two cores (two and four were within a few percent; tokio's blocking
/// pool, a thread per read, was a third slower).
const SHORT_READERS: usize = 3;
/// Reader threads (and connections) for long reads: this many reconciliations at once, the
/// rest queue.
const LONG_READERS: usize = 4;

/// What a write job touched, so the writer can wake the right watchers after the commit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Touched {
    /// Number events were appended.
    pub number_events: bool,
    /// Call records were created or revised.
    pub call_records: bool,
    /// The pairing state of reconciliation changed (the feed of WatchReconciliation moved).
    pub reconciliation: bool,
    /// Personal data was deleted: checkpoint the write-ahead log into the database and truncate
    /// it after the commit, so no copy of the deleted rows stays in the log.
    pub checkpoint: bool,
}

impl Touched {
    /// Number events were appended if `changed`.
    pub fn number_events(changed: bool) -> Touched {
        Touched {
            number_events: changed,
            ..Touched::default()
        }
    }
}

/// One unit of work for the writer; type-erased so jobs of any result type share a queue.
trait Job: Send {
    /// Runs inside the group transaction; may run a second time, after a rollback, when
    /// another job of its group failed (see [`run_group`]).
    fn run(&mut self, conn: &Connection) -> Result<Touched, ()>;
    /// Delivers the result once the group's commit is known.
    fn finish(self: Box<Self>, commit: Result<(), String>);
    /// The span of the call that asked for the write: the job's transaction and commit spans
    /// are its children (see `telemetry`).
    fn span(&self) -> &tracing::Span;
}

/// A job built from a closure; keeps the closure's result until the commit is known.
struct ClosureJob<T, F> {
    /// The work: all of it happens in the database, so running it again after a rollback
    /// gives what running it once would have.
    work: F,
    /// The work's result (of its last run), held until commit.
    result: Option<StoreResult<(T, Touched)>>,
    /// Where the caller waits.
    reply: oneshot::Sender<StoreResult<T>>,
    /// The caller's span.
    span: tracing::Span,
}

impl<T, F> Job for ClosureJob<T, F>
where
    T: Send,
    F: FnMut(&Connection) -> StoreResult<(T, Touched)> + Send,
{
    fn run(&mut self, conn: &Connection) -> Result<Touched, ()> {
        let result = (self.work)(conn);
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

    fn span(&self) -> &tracing::Span {
        &self.span
    }
}

/// Opens a connection with `flags` plus `NO_MUTEX`, as rusqlite's defaults have it:
/// each connection is used by one thread at a time (a `Connection` is `Send`, not `Sync`), so
/// SQLite's per-connection mutex, taken on every call (every column of every row) in its
/// serialized mode, is pure cost: a sixth of the feed's CPU before it was turned off.
fn open(path: &Path, flags: OpenFlags) -> rusqlite::Result<Connection> {
    let flags = flags | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
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
    // When the log starts over, its file is cut back to this (see `restart_wal`).
    conn.pragma_update(None, "journal_size_limit", WAL_RESTART_BYTES as i64)?;
    // Deleted personal data is overwritten with zeros, not left in free space.
    conn.pragma_update(None, "secure_delete", "ON")?;
    // The quality cells' UPSERT merges a cell with its change in SQLite.
    super::quality::register_merge(&conn)?;
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
    /// Bumped after each commit that changed the pairing state.
    reconciliation: Arc<watch::Sender<u64>>,
}

impl Writer {
    /// Starts the writer thread on an open connection.
    pub fn start(conn: Connection) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let number_events = Arc::new(watch::channel(0u64).0);
        let call_records = Arc::new(watch::channel(0u64).0);
        let reconciliation = Arc::new(watch::channel(0u64).0);
        let signals = Signals {
            number_events: Arc::clone(&number_events),
            call_records: Arc::clone(&call_records),
            reconciliation: Arc::clone(&reconciliation),
        };
        std::thread::Builder::new()
            .name("ocx-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, &signals))?;
        Ok(Writer {
            tx,
            number_events,
            call_records,
            reconciliation,
        })
    }

    /// Runs `work` in the next group transaction and returns its result after the commit.
    /// `work` changes nothing but the database: it may run twice (see [`run_group`]).
    pub async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> StoreResult<(T, Touched)> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(ClosureJob {
            work,
            result: None,
            reply,
            span: tracing::Span::current(),
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

    /// A receiver that changes after each commit that changed the pairing state.
    pub fn reconciliation_signal(&self) -> watch::Receiver<u64> {
        self.reconciliation.subscribe()
    }
}

/// The wake-up channels the writer bumps after commits.
struct Signals {
    /// Number events appended.
    number_events: Arc<watch::Sender<u64>>,
    /// Call records created or revised.
    call_records: Arc<watch::Sender<u64>>,
    /// The pairing state changed.
    reconciliation: Arc<watch::Sender<u64>>,
}

fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<Box<dyn Job>>, signals: &Signals) {
    let mut group: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_GROUP);
    let wal = conn
        .path()
        .filter(|p| !p.is_empty())
        .map(|p| std::path::PathBuf::from(format!("{p}-wal")));
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
        if touched.reconciliation {
            signals
                .reconciliation
                .send_modify(|v| *v = v.wrapping_add(1));
        }
        if touched.checkpoint {
            truncate_wal(&conn);
        }
        for job in group.drain(..) {
            job.finish(commit.clone());
        }
        if let Some(size) = wal
            .as_ref()
            .and_then(|w| std::fs::metadata(w).ok())
            .map(|m| m.len())
            && size > WAL_RESTART_BYTES
        {
            let wait = if size > WAL_LIMIT_BYTES {
                BUSY_TIMEOUT
            } else {
                WAL_RESTART_WAIT
            };
            restart_wal(&conn, wait);
        }
    }
    tracing::debug!("database writer stopped");
}

/// Starts the write-ahead log over from its beginning once everything in it is in the database.
///
/// SQLite's automatic checkpoints copy the log into the database after each 1,000 pages, but
/// the log only starts over when no reader is using it at that moment. Under steady writes with
/// steady reads that moment may never come, and the log grows without bound (the contention
/// soak saw it reach the size of the database). A RESTART checkpoint waits for the readers of
/// older snapshots to finish: for at most `wait`, short ([`WAL_RESTART_WAIT`]) so that writes
/// are not held up behind a long reconciliation, and the next commit tries again; but once the
/// log is past [`WAL_LIMIT_BYTES`], as long as the busy timeout, because back-to-back long
/// reads would otherwise keep it from ever starting over. While the checkpoint waits, new
/// readers read from the database file, so the wait ends with the longest read already
/// running. `journal_size_limit` then cuts the file back when the log starts over.
fn restart_wal(conn: &Connection, wait: std::time::Duration) {
    let _ = conn.busy_timeout(wait);
    let result = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0));
    let _ = conn.busy_timeout(BUSY_TIMEOUT);
    match result {
        Ok(0) => tracing::debug!("write-ahead log restarted"),
        Ok(_) => {
            tracing::debug!("readers kept the write-ahead log from restarting; retrying later")
        }
        Err(e) => tracing::warn!(error = %e, "could not checkpoint the write-ahead log"),
    }
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

/// Whether `e` is a failed fsync (of the log or of its directory).
fn is_fsync_failure(e: &rusqlite::Error) -> bool {
    use rusqlite::ffi::{SQLITE_IOERR_DIR_FSYNC, SQLITE_IOERR_FSYNC};
    matches!(
        e.sqlite_error().map(|e| e.extended_code),
        Some(SQLITE_IOERR_FSYNC | SQLITE_IOERR_DIR_FSYNC)
    )
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

/// Runs one job. A panicking job is rolled back like a failing one and its caller gets an
/// error; the writer thread and the other jobs carry on.
fn run_job(conn: &Connection, job: &mut Box<dyn Job>) -> Result<Touched, ()> {
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(conn)));
    run.unwrap_or_else(|_| {
        tracing::error!("a write job panicked; it was rolled back");
        Err(())
    })
}

/// Runs a group in one transaction; returns what the committed jobs touched.
///
/// The jobs run one after the other, straight in the transaction. A job that fails having
/// changed no row leaves nothing to undo. One that fails after changing rows must be undone
/// alone, so the transaction is rolled back and the group runs again with each job in its own
/// savepoint, where a failing job rolls back to its start. Savepoints are not the first way
/// because they cost: SQLite keeps the pages a savepoint changed in a journal that, past
/// 64 KiB, it writes to a temporary file, and writing it was a third of the writer's time at
/// 1,000 records a job (perf, R1 at 300,000 records).
fn run_group(conn: &Connection, group: &mut [Box<dyn Job>]) -> Result<Touched, String> {
    if !conn.is_autocommit() {
        abandon(conn);
    }
    begin(conn)?;
    let touched = match run_jobs(conn, group, false)? {
        Some(touched) => touched,
        None => {
            if let Err(e) = conn.execute_batch("ROLLBACK") {
                abandon(conn);
                return Err(e.to_string());
            }
            begin(conn)?;
            run_jobs(conn, group, true)?.unwrap_or_default()
        }
    };
    // One commit span per job, each under its own call's span: the commit is all of theirs.
    let commits: Vec<tracing::Span> = group
        .iter()
        .filter(|job| !job.span().is_none())
        .map(|job| {
            tracing::debug_span!(parent: job.span(), "store.commit", db.system = "sqlite",
                ocx.group_jobs = group.len())
        })
        .collect();
    let committed = conn.execute_batch("COMMIT");
    drop(commits);
    match committed {
        Ok(()) => Ok(touched),
        Err(e) => {
            // A failed fsync leaves the file in a state that retrying on the same connection
            // cannot be trusted with (the kernel may have dropped the dirty pages): stop, and
            // let recovery on the next open decide what was committed. Anything else (a write
            // refused because the disk is full or the file system went read-only) rolls back
            // cleanly: nothing was acknowledged, reads go on, and writes resume when the
            // storage does.
            if is_fsync_failure(&e) {
                tracing::error!(error = %e, "I/O error during commit; stopping the process");
                std::process::abort();
            }
            abandon(conn);
            Err(e.to_string())
        }
    }
}

/// Starts the group's transaction.
fn begin(conn: &Connection) -> Result<(), String> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| e.to_string())
}

/// Runs each job of `group` in the open transaction, in its own savepoint if `savepoints`;
/// what the jobs that succeeded touched, or `None` (only without savepoints) when a job failed
/// after changing rows and the transaction must start over.
fn run_jobs(
    conn: &Connection,
    group: &mut [Box<dyn Job>],
    savepoints: bool,
) -> Result<Option<Touched>, String> {
    let execute = |sql: &str| {
        conn.execute_batch(sql).map_err(|e| {
            abandon(conn);
            e.to_string()
        })
    };
    let mut touched = Touched::default();
    for job in group.iter_mut() {
        if savepoints {
            execute("SAVEPOINT job")?;
        }
        let changes = conn.total_changes();
        // Only a call's work is traced: a background write (the audit log's, retention's)
        // would start a trace of its own at each commit.
        let transaction = if job.span().is_none() {
            tracing::Span::none()
        } else {
            tracing::debug_span!(parent: job.span(), "store.transaction", db.system = "sqlite")
        };
        let ran = transaction.in_scope(|| run_job(conn, job));
        drop(transaction);
        match ran {
            Ok(t) => {
                touched.number_events |= t.number_events;
                touched.call_records |= t.call_records;
                touched.reconciliation |= t.reconciliation;
                touched.checkpoint |= t.checkpoint;
                if savepoints {
                    execute("RELEASE job")?;
                }
            }
            Err(()) if savepoints => execute("ROLLBACK TO job; RELEASE job")?,
            // SQLite rolls a whole transaction back on some errors (a full disk, I/O): the
            // jobs before were undone with it.
            Err(()) if conn.is_autocommit() => {
                return Err("the transaction was rolled back by a failing write".into());
            }
            Err(()) if conn.total_changes() == changes => {}
            Err(()) => return Ok(None),
        }
    }
    Ok(Some(touched))
}

/// Which reader threads run a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Point reads, pages and feed reads: milliseconds each.
    Short,
    /// Reconciliation and usage: seconds over a large period. Apart, so that they never hold
    /// up the short reads.
    Long,
}

/// A read job: runs on a reader thread with that thread's connection (opened on first use).
type ReadJob = Box<dyn FnOnce(&mut Option<Connection>) + Send>;

/// Read-only connections, each owned by a dedicated reader thread, in two lanes (see [`Lane`]).
///
/// Dedicated threads rather than tokio's blocking pool: that pool wakes an idle thread for
/// every read, and on two cores those context switches were most of a `GetNumber`; a few
/// threads fed by one queue stay busy under load and take the next read without sleeping
/// (R5 in `ocx-bench requests`: +33%).
#[derive(Clone)]
pub struct Readers {
    /// The short lane's queue.
    short: crossbeam_channel::Sender<ReadJob>,
    /// The long lane's queue.
    long: crossbeam_channel::Sender<ReadJob>,
    /// Bumped each time a query is interrupted because its caller stopped waiting.
    interrupted: Arc<watch::Sender<u64>>,
}

impl Readers {
    /// The reader threads for the database at `path` (which the writer has already created).
    /// They end when the last clone of the returned handle is dropped.
    pub fn new(path: &Path) -> std::io::Result<Readers> {
        let lane = |name: &str, threads: usize| -> std::io::Result<_> {
            let (tx, rx) = crossbeam_channel::unbounded::<ReadJob>();
            for i in 0..threads {
                let (rx, path) = (rx.clone(), path.to_path_buf());
                std::thread::Builder::new()
                    .name(format!("ocx-read-{name}-{i}"))
                    .spawn(move || reader_thread(&path, &rx))?;
            }
            Ok(tx)
        };
        Ok(Readers {
            short: lane("short", SHORT_READERS)?,
            long: lane("long", LONG_READERS)?,
            interrupted: Arc::new(watch::channel(0).0),
        })
    }

    /// A receiver that changes each time a query is interrupted because its caller stopped
    /// waiting (for tests and metrics).
    pub fn interrupted(&self) -> watch::Receiver<u64> {
        self.interrupted.subscribe()
    }

    /// Runs `query` on a short-lane reader thread, in one read transaction (a page and its
    /// total see one snapshot).
    ///
    /// If the returned future is dropped before the query ends (the caller's deadline passed,
    /// or the client went away), the query is interrupted (`sqlite3_interrupt`) so the thread
    /// and the connection are released at once rather than when it finishes; a query whose
    /// caller left before it started does not run at all.
    pub async fn read<T, F>(&self, query: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.read_in(Lane::Short, query).await
    }

    /// [`Readers::read`] in `lane`.
    pub async fn read_in<T, F>(&self, lane: Lane, query: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let running = Arc::new(Mutex::new(None::<rusqlite::InterruptHandle>));
        let (tx, rx) = oneshot::channel();
        let interrupted = Arc::clone(&self.interrupted);
        let slot = Arc::clone(&running);
        let caller = tracing::Span::current();
        let job: ReadJob = Box::new(move |conn: &mut Option<Connection>| {
            if tx.is_closed() {
                return;
            }
            let span = if caller.is_none() {
                tracing::Span::none()
            } else {
                tracing::debug_span!(parent: &caller, "store.read", db.system = "sqlite")
            };
            let result = span.in_scope(|| run_read(conn, &slot, query));
            if matches!(result, Err(StoreError::Cancelled(_))) {
                interrupted.send_modify(|n| *n += 1);
            }
            let _ = tx.send(result);
        });
        let queue = match lane {
            Lane::Short => &self.short,
            Lane::Long => &self.long,
        };
        queue
            .send(job)
            .map_err(|_| StoreError::Unavailable("the readers have stopped".into()))?;
        let mut guard = InterruptOnDrop {
            running,
            armed: true,
        };
        let result = rx
            .await
            .map_err(|_| StoreError::Internal("a reader thread stopped".into()))?;
        guard.armed = false;
        result
    }
}

/// A reader thread: runs jobs until every handle to the readers is dropped.
fn reader_thread(path: &Path, jobs: &crossbeam_channel::Receiver<ReadJob>) {
    let mut conn: Option<Connection> = None;
    while let Ok(job) = jobs.recv() {
        if conn.is_none() {
            match open(path, OpenFlags::SQLITE_OPEN_READ_ONLY) {
                Ok(opened) => conn = Some(opened),
                Err(e) => tracing::warn!(error = %e, "opening a read connection"),
            }
        }
        job(&mut conn);
    }
}

/// Runs one read job's query in a read transaction on `conn` (none: it could not be opened),
/// with its interrupt handle in `running` while it runs. A query that panics is an internal
/// error, not the end of the thread; a connection left in a transaction is closed.
fn run_read<T>(
    conn: &mut Option<Connection>,
    running: &Mutex<Option<rusqlite::InterruptHandle>>,
    query: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    let Some(c) = conn.as_ref() else {
        return Err(StoreError::Unavailable(
            "the database cannot be opened for reading".into(),
        ));
    };
    if let Ok(mut slot) = running.lock() {
        *slot = Some(c.get_interrupt_handle());
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        exec_cached(c, "BEGIN DEFERRED")?;
        query(c)
    }))
    .unwrap_or_else(|_| Err(StoreError::Internal("a read query panicked".into())));
    // Disarm before anything else runs on this connection.
    if let Ok(mut slot) = running.lock() {
        *slot = None;
    }
    if exec_cached(c, "COMMIT").is_err() || !c.is_autocommit() {
        let _ = c.execute_batch("ROLLBACK");
    }
    if !c.is_autocommit() {
        *conn = None;
    }
    result
}

/// Runs a statement without parameters through the connection's statement cache.
fn exec_cached(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
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
    use super::*;

    /// Readers on a fresh database (the writer creates the file).
    fn readers() -> (tempfile::TempDir, Readers) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.db");
        let conn = open_writer(&path, Durability::Full).expect("open");
        conn.execute_batch("CREATE TABLE t (x INTEGER)")
            .expect("create");
        (dir, Readers::new(&path).expect("readers"))
    }

    #[tokio::test]
    async fn a_panicking_query_is_an_error_and_its_thread_lives_on() {
        let (_dir, readers) = readers();
        for _ in 0..SHORT_READERS * 2 {
            let err = readers
                .read(|_| -> StoreResult<()> { panic!("boom") })
                .await
                .expect_err("a panic is an error");
            assert!(matches!(err, StoreError::Internal(_)), "{err:?}");
        }
        for _ in 0..SHORT_READERS * 2 {
            let n: i64 = readers
                .read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
                .await
                .expect("every thread still reads");
            assert_eq!(n, 0);
        }
    }

    #[tokio::test]
    async fn long_reads_never_hold_up_short_ones() {
        let (_dir, readers) = readers();
        // Fill every long-lane thread (and its queue) with a query that waits for a release.
        let (release, wait) = crossbeam_channel::bounded::<()>(0);
        let mut long = Vec::new();
        for _ in 0..=LONG_READERS {
            let (readers, wait) = (readers.clone(), wait.clone());
            long.push(tokio::spawn(async move {
                readers
                    .read_in(Lane::Long, move |_| {
                        let _ = wait.recv();
                        Ok(())
                    })
                    .await
            }));
        }
        // The short lane still answers, many times over (the timeout only turns a hang into a
        // failure).
        for _ in 0..20 {
            let read = readers.read(|c| Ok(c.query_row("SELECT 41 + 1", [], |r| r.get(0))?));
            let n: i64 = tokio::time::timeout(std::time::Duration::from_secs(30), read)
                .await
                .expect("a short read waited behind long ones")
                .expect("short read");
            assert_eq!(n, 42);
        }
        drop(release);
        for task in long {
            task.await.expect("task").expect("long read");
        }
    }

    /// A job inserting `values` into `t` in turn (failing where one is there already), and
    /// where its reply arrives; counts its runs in `runs`.
    fn inserting(
        values: &'static [i64],
        runs: &Arc<std::sync::atomic::AtomicUsize>,
    ) -> (Box<dyn Job>, oneshot::Receiver<StoreResult<()>>) {
        let (reply, rx) = oneshot::channel();
        let runs = Arc::clone(runs);
        let work = move |conn: &Connection| {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            for v in values {
                conn.execute("INSERT INTO t (x) VALUES (?1)", [v])?;
            }
            Ok(((), Touched::default()))
        };
        let job = ClosureJob {
            work,
            result: None,
            reply,
            span: tracing::Span::none(),
        };
        (Box::new(job), rx)
    }

    /// Runs jobs inserting each list of values as one group; each job's reply, the runs of
    /// the first job, and the values stored.
    fn group(lists: &[&'static [i64]]) -> (Vec<bool>, usize, Vec<i64>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = open_writer(&dir.path().join("t.db"), Durability::Full).expect("open");
        conn.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY)")
            .expect("create");
        let runs: Vec<_> = lists.iter().map(|_| Arc::default()).collect();
        let (mut jobs, replies): (Vec<_>, Vec<_>) = lists
            .iter()
            .zip(&runs)
            .map(|(values, runs)| inserting(values, runs))
            .unzip();
        let commit = run_group(&conn, &mut jobs).map(|_| ());
        for job in jobs {
            job.finish(commit.clone());
        }
        let ok = replies
            .into_iter()
            .map(|mut rx| rx.try_recv().expect("replied").is_ok())
            .collect();
        let stored = conn
            .prepare("SELECT x FROM t ORDER BY x")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("read");
        let first_runs = runs[0].load(std::sync::atomic::Ordering::SeqCst);
        (ok, first_runs, stored)
    }

    #[test]
    fn a_job_that_fails_after_changing_rows_rolls_back_alone() {
        // The second job stores 2, then fails on 1 (the first job's): the group runs again in
        // savepoints, and only the second job's rows are gone.
        let (ok, first_runs, stored) = group(&[&[1], &[2, 1], &[3]]);
        assert_eq!(ok, [true, false, true]);
        assert_eq!(stored, [1, 3]);
        assert_eq!(first_runs, 2, "the group ran again, in savepoints");
        // And when the failing job is the last, or fails again in its savepoint.
        let (ok, _, stored) = group(&[&[1], &[3], &[4, 3]]);
        assert_eq!((ok, stored), (vec![true, true, false], vec![1, 3]));
    }

    #[test]
    fn a_job_that_fails_before_changing_a_row_leaves_nothing_to_undo() {
        let (ok, first_runs, stored) = group(&[&[1], &[1, 2], &[3]]);
        assert_eq!(ok, [true, false, true]);
        assert_eq!(stored, [1, 3]);
        assert_eq!(first_runs, 1, "nothing to undo: the group ran once");
    }

    #[test]
    fn the_writer_is_durable_wal_with_full_sync() {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = open_writer(&dir.path().join("t.db"), Durability::Full).expect("open");
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

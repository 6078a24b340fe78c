//! Online backup: a consistent copy of the database while the server serves and ingests.
//!
//! `VACUUM INTO` on a read-only connection: it reads the whole database in one read transaction
//! (WAL lets the writer go on meanwhile), so the copy holds exactly what was committed when it
//! began, every acknowledged write included. The copy is compact and has no free pages, so no
//! erased data rides along in it. It is written beside the target under a temporary name,
//! checked with `PRAGMA integrity_check`, synced, and only then renamed into place: a target
//! that exists is always a whole, checked backup.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::store::{StoreError, StoreResult};

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// Bytes written.
    pub bytes: u64,
    /// Call records in the copy.
    pub call_records: i64,
    /// Duration reports in the copy.
    pub call_durations: i64,
    /// Numbers in the copy.
    pub numbers: i64,
}

/// Why a backup was not made. The operator's command line words these, not the API's error
/// layer: a backup is not a gRPC call.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Nothing to copy.
    #[error("no database at {}", .0.display())]
    NoDatabase(PathBuf),
    /// A backup never overwrites.
    #[error("{} already exists; choose a new file (a backup never overwrites)", .0.display())]
    TargetExists(PathBuf),
    /// SQLite's `VACUUM INTO` takes the path as text.
    #[error("the backup path is not valid UTF-8")]
    NotUtf8,
    /// Reading, copying or checking failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Copies the database at `database` to `to`, which must not exist yet.
pub fn backup(database: &Path, to: &Path) -> Result<BackupSummary, BackupError> {
    if !database.exists() {
        return Err(BackupError::NoDatabase(database.to_path_buf()));
    }
    if to.exists() {
        return Err(BackupError::TargetExists(to.to_path_buf()));
    }
    let partial = partial_path(to);
    let _ = std::fs::remove_file(&partial);
    let result = copy_and_check(database, &partial).and_then(|summary| {
        std::fs::rename(&partial, to).map_err(io("renaming the backup into place"))?;
        if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The rename is durable once the directory is.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("syncing the backup's directory"))?;
        }
        Ok(summary)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// `<to>.partial`.
fn partial_path(to: &Path) -> PathBuf {
    let mut name = to.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

fn copy_and_check(database: &Path, partial: &Path) -> Result<BackupSummary, BackupError> {
    let target = partial.to_str().ok_or(BackupError::NotUtf8)?;
    Ok(copy_to(database, partial, target)?)
}

fn copy_to(database: &Path, partial: &Path, target: &str) -> StoreResult<BackupSummary> {
    let source = Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    source.busy_timeout(std::time::Duration::from_secs(30))?;
    source.execute("VACUUM INTO ?1", [target])?;
    drop(source);

    let copy = Connection::open_with_flags(
        partial,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let check: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(StoreError::Internal(format!(
            "the backup failed its integrity check: {check}"
        )));
    }
    let count = |table: &str| -> StoreResult<i64> {
        Ok(copy.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
    };
    let summary = BackupSummary {
        bytes: 0,
        call_records: count("call_records")?,
        call_durations: count("call_durations")?,
        numbers: count("numbers")?,
    };
    drop(copy);
    let file = std::fs::File::open(partial).map_err(io("opening the backup"))?;
    file.sync_all().map_err(io("syncing the backup"))?;
    let bytes = file
        .metadata()
        .map_err(io("reading the backup's size"))?
        .len();
    Ok(BackupSummary { bytes, ..summary })
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> StoreError {
    move |e| StoreError::Unavailable(format!("{what}: {e}"))
}

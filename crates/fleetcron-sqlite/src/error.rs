//! Mapping of SQLite and sqlx failures onto [`StoreError`], always naming the database file.

use fleetcron_core::StoreError;
use sqlx::error::ErrorKind;

// SQLite primary result codes (the low byte of an extended code).
const SQLITE_ERROR: i32 = 1;
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_READONLY: i32 = 8;
const SQLITE_IOERR: i32 = 10;
const SQLITE_CORRUPT: i32 = 11;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;
const SQLITE_CONSTRAINT: i32 = 19;
const SQLITE_NOTADB: i32 = 26;

/// The primary SQLite result code of a database error, if it is one.
pub(crate) fn primary_code(error: &sqlx::Error) -> Option<i32> {
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .map(|code| code & 0xff),
        _ => None,
    }
}

/// Whether the error is SQLite's "busy"/"locked" (another connection holds the lock past the timeout).
pub(crate) fn is_busy(error: &sqlx::Error) -> bool {
    matches!(primary_code(error), Some(SQLITE_BUSY | SQLITE_LOCKED))
}

/// Whether the error is a unique or primary-key violation.
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => matches!(db.kind(), ErrorKind::UniqueViolation),
        _ => false,
    }
}

/// Whether the error says a table is missing (the schema was never migrated).
pub(crate) fn is_missing_table(error: &sqlx::Error) -> bool {
    primary_code(error) == Some(SQLITE_ERROR)
        && matches!(error, sqlx::Error::Database(db) if db.message().contains("no such table"))
}

/// Maps a failure of an operation on the database at `path` (`what` says which operation).
pub(crate) fn map(path: &str, what: &str, error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(db) => {
            let message = db.message();
            match primary_code(&error) {
                Some(SQLITE_BUSY | SQLITE_LOCKED) => StoreError::Unavailable(format!(
                    "SQLite database {path}: {what}: {message} (another connection held the lock longer \
                     than the busy timeout; retry)"
                )),
                Some(SQLITE_READONLY) => StoreError::ReadOnly(format!(
                    "SQLite database {path}: {what}: {message} (check the permissions of the file, its \
                     -wal and -shm files and its directory)"
                )),
                // Transient: the engine retries with backoff, and the write succeeds once space is free
                // (a failed COMMIT never leaves a connection in a transaction: see `tx.rs`).
                Some(SQLITE_FULL) => StoreError::Unavailable(format!(
                    "SQLite database {path}: {what}: the disk is full: {message}; free space on the file \
                     system that holds the database and its -wal file (fleetcron retries meanwhile)"
                )),
                Some(SQLITE_IOERR) => StoreError::Unavailable(format!(
                    "SQLite database {path}: {what}: I/O error: {message}; check the disk and the file \
                     system that hold the database (fleetcron retries meanwhile)"
                )),
                Some(SQLITE_CANTOPEN) => StoreError::Unavailable(format!(
                    "SQLite database {path}: {what}: {message} (check that the file and its directory exist \
                     and are writable)"
                )),
                Some(SQLITE_CORRUPT | SQLITE_NOTADB) => {
                    StoreError::Corrupt(format!("SQLite database {path}: {what}: {message}"))
                }
                Some(SQLITE_CONSTRAINT) if is_unique_violation(&error) => {
                    StoreError::Duplicate(format!("SQLite database {path}: {what}: {message}"))
                }
                _ if is_missing_table(&error) => StoreError::Config(format!(
                    "SQLite database {path}: {what}: {message}: the fleetcron schema is missing; run \
                     `fleetcron migrate` (or Store::migrate) first"
                )),
                _ => StoreError::Unavailable(format!("SQLite database {path}: {what}: {message}")),
            }
        }
        sqlx::Error::PoolTimedOut => StoreError::Unavailable(format!(
            "SQLite database {path}: {what}: timed out waiting for a free connection"
        )),
        sqlx::Error::PoolClosed => {
            StoreError::Unavailable(format!("SQLite database {path}: {what}: the store was closed"))
        }
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
            StoreError::ReadOnly(format!("SQLite database {path}: {what}: {io}"))
        }
        sqlx::Error::Configuration(reason) => StoreError::Config(format!("SQLite database {path}: {what}: {reason}")),
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(format!("SQLite database {path}: {what}: {error}")),
        _ => StoreError::Unavailable(format!("SQLite database {path}: {what}: {error}")),
    }
}

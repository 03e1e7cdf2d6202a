//! Integration tests of the SQLite store. Each test works in its own temporary directory, so they run
//! in parallel.

mod concurrency;
mod conformance;
mod disk_full;
mod open;
mod operations;

use chrono::{DateTime, Duration, Utc};
pub(crate) use fleetcron_conformance::store_fixtures::*;
use fleetcron_core::{Clock, Mutation, RunKind, RunRecord, RunStatus, SharedClock, Store, TaskState, Timestamp};
use fleetcron_sqlite::{SqliteOptions, SqliteStore};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A temporary directory and the database path inside it.
pub(crate) struct TestDb {
    _dir: tempfile::TempDir,
    pub(crate) path: PathBuf,
}

pub(crate) fn test_db() -> TestDb {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("fleetcron.db");
    TestDb { _dir: dir, path }
}

/// A clock tests set by hand.
#[derive(Debug)]
pub(crate) struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    pub(crate) fn new(at: Timestamp) -> Arc<Self> {
        Arc::new(Self(Mutex::new(at)))
    }

    pub(crate) fn set(&self, at: Timestamp) {
        *self.0.lock().expect("clock mutex") = at;
    }

    pub(crate) fn advance(&self, by: Duration) {
        let mut now = self.0.lock().expect("clock mutex");
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock mutex")
    }
}

/// Opens and migrates a store on `path` with `clock`.
pub(crate) async fn store_with_clock(path: &Path, clock: SharedClock) -> SqliteStore {
    let store = SqliteStore::open_with(path, SqliteOptions::default().with_clock(clock))
        .await
        .expect("open the store");
    store.migrate().await.expect("migrate");
    store
}

/// Opens and migrates a store on `path` with the system clock.
pub(crate) async fn store(path: &Path) -> SqliteStore {
    let store = SqliteStore::open(path).await.expect("open the store");
    store.migrate().await.expect("migrate");
    store
}

/// Raw access to the file, for tests that tamper with it.
pub(crate) async fn raw_connection(path: &Path) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
    sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("raw connection")
}

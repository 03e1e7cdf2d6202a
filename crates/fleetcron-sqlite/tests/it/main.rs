//! Integration tests of the SQLite store. Each test works in its own temporary directory, so they run
//! in parallel. The store suite and the engine-level conformance suite run on [`SqliteHarness`]; the
//! modules hold what only SQLite has (files, WAL, the busy timeout, a full disk, its query plans).

mod disk_full;
mod open;
mod operations;

pub(crate) use fleetcron_conformance::store_fixtures::*;
use fleetcron_conformance::store_suite::{Capabilities, ClaimSkipping, LockHolder, StoreHarness, StoreNamespace};
use fleetcron_conformance::BoxedFuture;
use fleetcron_core::{SharedClock, Store};
use fleetcron_sqlite::{SqliteOptions, SqliteStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fleetcron_conformance::backend_suites!(crate::SqliteHarness);

/// SQLite under the suites: a namespace is a database file of its own; each store opens the file (as
/// another process would) with the namespace's clock injected. Claims skip tasks by whole seconds.
pub(crate) struct SqliteHarness;

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

pub(crate) struct FileNamespace {
    db: TestDb,
    clock: SharedClock,
}

impl StoreHarness for SqliteHarness {
    type Namespace = FileNamespace;
    const CAPABILITIES: Capabilities = Capabilities {
        claim_skipping: ClaimSkipping::WholeSeconds,
        ..Capabilities::EMBEDDED
    };

    fn namespace(&self, clock: SharedClock) -> BoxedFuture<'_, FileNamespace> {
        Box::pin(async move { FileNamespace { db: test_db(), clock } })
    }
}

impl FileNamespace {
    /// A store on the file that waits up to `busy_timeout` for another connection's write lock.
    fn open_waiting(&self, busy_timeout: Duration) -> BoxedFuture<'_, Arc<SqliteStore>> {
        let options = SqliteOptions::default()
            .with_clock(self.clock.clone())
            .with_busy_timeout(busy_timeout);
        Box::pin(async move {
            Arc::new(
                SqliteStore::open_with(&self.db.path, options)
                    .await
                    .expect("open the file"),
            )
        })
    }
}

impl StoreNamespace for FileNamespace {
    type Store = SqliteStore;

    fn open(&self) -> BoxedFuture<'_, Arc<SqliteStore>> {
        self.open_waiting(SqliteOptions::default().busy_timeout)
    }

    fn open_impatient(&self) -> BoxedFuture<'_, Arc<SqliteStore>> {
        self.open_waiting(Duration::from_millis(300))
    }

    /// Another connection takes the file's write lock (`BEGIN IMMEDIATE`): every writer waits.
    fn hold_lock(&self, _task_id: &str) -> BoxedFuture<'_, LockHolder> {
        Box::pin(async move {
            let mut conn = raw_connection(&self.db.path).await;
            sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await.expect("lock");
            Box::new(conn) as LockHolder
        })
    }

    fn schema_from_the_future(&self) -> BoxedFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query("INSERT INTO fleetcron_schema (version, applied_at) VALUES (?1, 0)")
                .bind(fleetcron_sqlite::SCHEMA_VERSION + 5)
                .execute(&mut raw_connection(&self.db.path).await)
                .await
                .expect("write a newer version");
        })
    }

    fn corrupt_state(&self, task_id: &str) -> BoxedFuture<'_, ()> {
        let task_id = task_id.to_owned();
        Box::pin(async move {
            sqlx::query("UPDATE fleetcron_tasks SET state = '{not json' WHERE id = ?1")
                .bind(task_id)
                .execute(&mut raw_connection(&self.db.path).await)
                .await
                .expect("tamper");
        })
    }

    fn label(&self) -> Option<String> {
        Some(self.db.path.display().to_string())
    }
}

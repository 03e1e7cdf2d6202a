//! The public conformance suite against the SQLite store. Every worker of a test opens its own
//! [`SqliteStore`] on the test's file, as separate processes would.

use fleetcron_conformance::{Backend, BoxedFuture, Namespace};
use fleetcron_core::{EngineConfig, SchedulerStrategy, SharedClock};
use fleetcron_sqlite::{SqliteOptions, SqliteStore, SqliteStrategy};
use std::path::PathBuf;
use std::sync::Arc;

struct SqliteBackend;

struct SqliteNamespace {
    _dir: tempfile::TempDir,
    path: PathBuf,
    clock: SharedClock,
}

impl Namespace for SqliteNamespace {
    fn strategy(&self, config: EngineConfig) -> BoxedFuture<'_, Arc<dyn SchedulerStrategy>> {
        Box::pin(async move {
            let options = SqliteOptions::default().with_clock(self.clock.clone());
            let store = SqliteStore::open_with(&self.path, options)
                .await
                .expect("open the namespace's store");
            Arc::new(SqliteStrategy::with_config(Arc::new(store), config)) as Arc<dyn SchedulerStrategy>
        })
    }
}

impl Backend for SqliteBackend {
    fn namespace(&self, store_clock: SharedClock) -> BoxedFuture<'_, Arc<dyn Namespace>> {
        Box::pin(async move {
            let dir = tempfile::tempdir().expect("temporary directory");
            let path = dir.path().join("conformance.db");
            Arc::new(SqliteNamespace {
                _dir: dir,
                path,
                clock: store_clock,
            }) as Arc<dyn Namespace>
        })
    }
}

fleetcron_conformance::conformance_tests!(crate::conformance::SqliteBackend);

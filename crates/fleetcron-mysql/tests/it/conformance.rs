//! The public conformance suite against the MySQL store. Every test gets its own database; every worker
//! of a test connects its own [`MysqlStore`] to it, as separate processes would.
//!
//! The store's clock is the server's; the suite's store clock is injected as
//! [`MysqlOptions::clock_offset`](fleetcron_mysql::MysqlOptions) (`store_clock − system clock`), so the
//! cases that move the store to a DST date run on the server's clock, shifted.

use crate::{options, server_available, TestDb};
use chrono::Utc;
use fleetcron_conformance::{Backend, BoxedFuture, Namespace};
use fleetcron_core::{EngineConfig, SchedulerStrategy, SharedClock};
use fleetcron_mysql::{MysqlOptions, MysqlStore, MysqlStrategy};
use std::sync::Arc;

pub(crate) struct MysqlBackend;

/// One test's database, and how its workers connect to it.
pub(crate) struct MysqlNamespace {
    pub(crate) _db: Arc<TestDb>,
    pub(crate) url: String,
    pub(crate) options: MysqlOptions,
}

impl Namespace for MysqlNamespace {
    fn strategy(&self, config: EngineConfig) -> BoxedFuture<'_, Arc<dyn SchedulerStrategy>> {
        Box::pin(async move {
            let store = MysqlStore::connect_with(&self.url, self.options.clone())
                .await
                .expect("connect the namespace's store");
            Arc::new(MysqlStrategy::with_config(Arc::new(store), config)) as Arc<dyn SchedulerStrategy>
        })
    }
}

impl Backend for MysqlBackend {
    fn namespace(&self, store_clock: SharedClock) -> BoxedFuture<'_, Arc<dyn Namespace>> {
        Box::pin(async move {
            let offset = store_clock.now() - Utc::now();
            let db = TestDb::create("conformance namespace")
                .await
                .expect("the server answered a moment ago");
            let url = db.url.clone();
            Arc::new(MysqlNamespace {
                _db: Arc::new(db),
                url,
                options: options().with_clock_offset(offset),
            }) as Arc<dyn Namespace>
        })
    }

    fn injectable_store_clock(&self) -> bool {
        true
    }

    fn available(&self) -> BoxedFuture<'_, Result<(), String>> {
        Box::pin(server_available())
    }
}

fleetcron_conformance::conformance_tests!(crate::conformance::MysqlBackend);

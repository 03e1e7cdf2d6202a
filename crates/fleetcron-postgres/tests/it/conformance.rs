//! The public conformance suite against the PostgreSQL store. Each case gets a schema of its own;
//! every worker of a case opens its own [`PostgresStore`] on it, as separate processes would.
//!
//! The store's clock is the server's. The suite's store clock is injected as the clock offset
//! (`store_clock.now() - Utc::now()`): the server and the tests share this machine's clock, so the
//! store then reads the suite's clock, which lets the cases that move the store to a DST date run.

use fleetcron_conformance::{Backend, BoxedFuture, Namespace};
use fleetcron_core::{EngineConfig, SchedulerStrategy, SharedClock};
use fleetcron_postgres::{PostgresOptions, PostgresStore, PostgresStrategy};
use std::sync::Arc;

struct PostgresBackend;

struct PostgresNamespace {
    schema: crate::TestSchema,
    clock: SharedClock,
}

impl Namespace for PostgresNamespace {
    fn strategy(&self, config: EngineConfig) -> BoxedFuture<'_, Arc<dyn SchedulerStrategy>> {
        Box::pin(async move {
            let offset = self.clock.now() - chrono::Utc::now();
            let options = PostgresOptions::default()
                .with_schema(self.schema.name.clone())
                .with_max_connections(4)
                .with_clock_offset(offset);
            let store = PostgresStore::connect_with(&crate::server_url(), options)
                .await
                .expect("connect the namespace's store");
            Arc::new(PostgresStrategy::with_config(Arc::new(store), config)) as Arc<dyn SchedulerStrategy>
        })
    }
}

impl Backend for PostgresBackend {
    fn namespace(&self, store_clock: SharedClock) -> BoxedFuture<'_, Arc<dyn Namespace>> {
        Box::pin(async move {
            Arc::new(PostgresNamespace {
                schema: crate::TestSchema::new(),
                clock: store_clock,
            }) as Arc<dyn Namespace>
        })
    }

    fn injectable_store_clock(&self) -> bool {
        true
    }

    fn available(&self) -> BoxedFuture<'_, Result<(), String>> {
        Box::pin(crate::server_available())
    }
}

fleetcron_conformance::conformance_tests!(crate::conformance::PostgresBackend);

//! Integration tests of the PostgreSQL store. Each test works in its own schema (`fc_t_<random>`,
//! dropped at the end), so they run in parallel on one server. The store suite and the engine-level
//! conformance suite run on [`PostgresHarness`]; the modules hold what only PostgreSQL has (schemas,
//! advisory locks, its query plans and types).
//!
//! The server is `FLEETCRON_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! When it cannot be reached a test prints `*** SKIPPED` and passes — unless
//! `FLEETCRON_REQUIRE_SERVICES=1` (as in CI), which makes it fail.

mod concurrency;
mod open;
mod operations;

pub(crate) use fleetcron_conformance::store_fixtures::*;
use fleetcron_conformance::store_suite::{
    clock_offset, url_address, url_via, AttentionOrder, Capabilities, ClaimSkipping, StoreHarness, StoreNamespace,
};
use fleetcron_conformance::BoxedFuture;
use fleetcron_core::{SharedClock, Store, StoreError};
use fleetcron_postgres::{PostgresOptions, PostgresStore};
use sqlx::Connection;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

mod store_suite {
    fleetcron_conformance::store_suite!(crate::PostgresHarness);
}

mod conformance {
    fleetcron_conformance::conformance_tests!(fleetcron_conformance::store_suite::StoreBackend(crate::PostgresHarness));
}

/// The test server's URL.
pub(crate) fn server_url() -> String {
    std::env::var("FLEETCRON_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Whether the test server answers: `Err(reason)` when it does not.
pub(crate) async fn server_available() -> Result<(), String> {
    let url = server_url();
    let connecting = tokio::time::timeout(StdDuration::from_secs(5), sqlx::PgConnection::connect(&url)).await;
    match connecting {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(error)) => Err(format!("{url}: {error}")),
        Err(_) => Err(format!("{url}: no answer within 5 s")),
    }
}

/// Runs the rest of the test only when the server is there (the suites' service policy).
#[macro_export]
macro_rules! require_server {
    ($test:expr) => {
        if !fleetcron_conformance::service_policy($crate::server_available().await, $test) {
            return;
        }
    };
}

/// A schema of its own for one test, dropped (best effort) when this value is dropped.
pub(crate) struct TestSchema {
    pub(crate) name: String,
}

impl TestSchema {
    pub(crate) fn new() -> Self {
        Self {
            name: format!("fc_t_{}", uuid::Uuid::now_v7().simple()),
        }
    }

    /// The server URL selecting this schema.
    pub(crate) fn url(&self) -> String {
        with_schema(&server_url(), &self.name)
    }

    /// Options for this schema: a small pool (many tests share the server).
    pub(crate) fn options(&self) -> PostgresOptions {
        PostgresOptions::default()
            .with_schema(self.name.clone())
            .with_max_connections(4)
    }

    /// A store on this schema with `options` (whose schema is replaced by this one), not migrated.
    pub(crate) async fn connect_with(&self, options: PostgresOptions) -> PostgresStore {
        PostgresStore::connect_with(&server_url(), options.with_schema(self.name.clone()))
            .await
            .expect("connect to the test server")
    }

    /// A store on this schema, not migrated.
    pub(crate) async fn connect(&self) -> PostgresStore {
        self.connect_with(self.options()).await
    }

    /// A migrated store on this schema.
    pub(crate) async fn store(&self) -> PostgresStore {
        let store = self.connect().await;
        store.migrate().await.expect("migrate");
        store
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        drop_schema_blocking(&self.name);
    }
}

/// Drops `schema` from a thread of its own (usable from `Drop`, inside or outside a runtime).
pub(crate) fn drop_schema_blocking(schema: &str) {
    let statement = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    let url = server_url();
    let dropping = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        runtime.block_on(async move {
            let work = async {
                let mut conn = sqlx::PgConnection::connect(&url).await.ok()?;
                sqlx::query("SET lock_timeout = '5s'").execute(&mut conn).await.ok()?;
                sqlx::query(&statement).execute(&mut conn).await.ok()?;
                conn.close().await.ok()
            };
            let _ = tokio::time::timeout(StdDuration::from_secs(10), work).await;
        });
    });
    let _ = dropping.join();
}

/// `url` with `?schema=NAME` (or `&schema=NAME`) appended.
pub(crate) fn with_schema(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}schema={schema}")
}

/// A raw connection to the test server, for tests that look behind the store or tamper with it.
pub(crate) async fn raw_connection() -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&server_url())
        .await
        .expect("raw connection")
}

/// The lock keys of the store's documented protocol (FNV-1a), for tests that take a task's lock from
/// outside.
pub(crate) fn fnv1a_32(bytes: &[u8]) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    i32::from_ne_bytes(hash.to_ne_bytes())
}

/// PostgreSQL under the suites: a namespace is a schema; each store connects its own pool, its clock
/// the server's plus the namespace clock's offset (which it can follow while open).
pub(crate) struct PostgresHarness;

pub(crate) struct SchemaNamespace {
    schema: TestSchema,
    clock: SharedClock,
}

impl StoreHarness for PostgresHarness {
    type Store = PostgresStore;
    type Namespace = SchemaNamespace;

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            injectable_clock: false,
            push: true,
            claim_skipping: ClaimSkipping::Exact,
            attention_order: AttentionOrder::ById,
            proxy: true,
            server_transactions: true,
            reconnects_at_once: true,
            ..Capabilities::default()
        }
    }

    fn available(&self) -> BoxedFuture<'_, Result<(), String>> {
        Box::pin(server_available())
    }

    fn namespace(&self, clock: SharedClock) -> BoxedFuture<'_, SchemaNamespace> {
        Box::pin(async move {
            SchemaNamespace {
                schema: TestSchema::new(),
                clock,
            }
        })
    }
}

impl SchemaNamespace {
    /// This schema's options on the namespace clock; a generous statement timeout (a debug build on a
    /// loaded machine encodes a 75 MiB batch slowly).
    fn options(&self) -> PostgresOptions {
        self.schema
            .options()
            .with_clock_offset(clock_offset(&*self.clock))
            .with_statement_timeout(StdDuration::from_secs(120))
    }

    /// Runs `statement` (its `SCHEMA` replaced by this schema's name) on a raw connection.
    async fn execute(&self, statement: &str, bind: Option<String>) {
        let statement = statement.replace("SCHEMA", &self.schema.name);
        let mut query = sqlx::query(&statement);
        if let Some(value) = bind {
            query = query.bind(value);
        }
        query
            .execute(&mut raw_connection().await)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
}

impl StoreNamespace for SchemaNamespace {
    type Store = PostgresStore;

    fn open(&self) -> BoxedFuture<'_, Arc<PostgresStore>> {
        Box::pin(async move { Arc::new(self.schema.connect_with(self.options()).await) })
    }

    fn follow_clock(&self, store: &PostgresStore) -> bool {
        store.set_clock_offset(clock_offset(&*self.clock)).is_ok()
    }

    fn upstream(&self) -> Option<SocketAddr> {
        Some(url_address(&server_url(), 5432))
    }

    fn open_via(&self, address: SocketAddr) -> BoxedFuture<'_, Result<Arc<PostgresStore>, StoreError>> {
        let options = self
            .options()
            .with_statement_timeout(StdDuration::from_secs(1))
            .with_acquire_timeout(StdDuration::from_secs(1));
        Box::pin(async move {
            PostgresStore::connect_with(&url_via(&server_url(), address), options)
                .await
                .map(Arc::new)
        })
    }

    fn schema_from_the_future(&self) -> BoxedFuture<'_, ()> {
        let version = fleetcron_postgres::SCHEMA_VERSION + 5;
        let statement =
            format!("INSERT INTO \"SCHEMA\".fleetcron_schema (version, description) VALUES ({version}, 'future')");
        Box::pin(async move { self.execute(&statement, None).await })
    }

    fn corrupt_state(&self, task_id: &str) -> BoxedFuture<'_, ()> {
        let task_id = task_id.to_owned();
        Box::pin(async move {
            let statement = "UPDATE \"SCHEMA\".fleetcron_tasks SET state = '{\"not\": \"a state\"}' WHERE id = $1";
            self.execute(statement, Some(task_id)).await;
        })
    }

    fn label(&self) -> Option<String> {
        Some(self.schema.name.clone())
    }
}

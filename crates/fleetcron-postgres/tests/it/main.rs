//! Integration tests of the PostgreSQL store. Each test works in its own schema (`fc_t_<random>`,
//! dropped at the end), so they run in parallel on one server. The store suite and the engine-level
//! conformance suite run on [`PostgresHarness`]; the modules hold what only PostgreSQL has (schemas,
//! advisory locks, its query plans and types).
//!
//! The server is `FLEETCRON_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! When it cannot be reached a test prints `*** SKIPPED` and passes — unless
//! `FLEETCRON_REQUIRE_SERVICES=1` (as in CI), which makes it fail.

mod open;
mod operations;

use fleetcron_conformance::namespace_or_skip;
pub(crate) use fleetcron_conformance::store_fixtures::*;
use fleetcron_conformance::store_suite::{
    clock_offset, migrated, url_address, url_via, Capabilities, ClaimSkipping, LockHolder, StoreHarness, StoreNamespace,
};
use fleetcron_conformance::BoxedFuture;
use fleetcron_core::{SharedClock, Store, StoreError};
use fleetcron_postgres::{PostgresOptions, PostgresStore};
use sqlx::Connection;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

fleetcron_conformance::backend_suites!(crate::PostgresHarness);

/// PostgreSQL under the suites: a namespace is a schema; each store connects its own pool, its clock
/// the server's plus the namespace clock's offset (which it can follow while open).
pub(crate) struct PostgresHarness;

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

/// A schema of its own for one test (a namespace of [`PostgresHarness`]), on a clock; dropped (best
/// effort) when this value is dropped.
pub(crate) struct TestSchema {
    pub(crate) name: String,
    clock: SharedClock,
}

impl TestSchema {
    /// The server URL selecting this schema.
    pub(crate) fn url(&self) -> String {
        with_schema(&server_url(), &self.name)
    }

    /// Options for this schema: a small pool (many tests share the server), the clock's offset, and a
    /// generous statement timeout (a debug build on a loaded machine encodes a 75 MiB batch slowly).
    pub(crate) fn options(&self) -> PostgresOptions {
        PostgresOptions::default()
            .with_schema(self.name.clone())
            .with_max_connections(4)
            .with_clock_offset(clock_offset(&*self.clock))
            .with_statement_timeout(StdDuration::from_secs(120))
    }

    /// A store with `options` (this schema's, changed), not migrated.
    pub(crate) async fn connect_with(&self, options: PostgresOptions) -> PostgresStore {
        let url = server_url();
        PostgresStore::connect_with(&url, options)
            .await
            .expect("connect to the test server")
    }

    /// This schema's options with the short timeouts of the fault cases.
    fn fault_options(&self) -> PostgresOptions {
        let second = StdDuration::from_secs(1);
        self.options()
            .with_statement_timeout(second)
            .with_acquire_timeout(second)
    }

    /// A store on this schema, not migrated.
    pub(crate) async fn connect(&self) -> PostgresStore {
        self.connect_with(self.options()).await
    }

    /// Runs `statement` (its `SCHEMA` replaced by this schema's name) on a raw connection.
    async fn execute(&self, statement: &str, bind: Option<String>) {
        let statement = statement.replace("SCHEMA", &self.name);
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

/// The lock keys of the store's documented protocol (FNV-1a), to take a task's lock from outside.
pub(crate) fn fnv1a_32(bytes: &[u8]) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    i32::from_ne_bytes(hash.to_ne_bytes())
}

impl StoreHarness for PostgresHarness {
    type Namespace = TestSchema;
    const CAPABILITIES: Capabilities = Capabilities {
        push: true,
        claim_skipping: ClaimSkipping::Exact,
        ..Capabilities::SERVER
    };

    fn available(&self) -> BoxedFuture<'_, Result<(), String>> {
        Box::pin(server_available())
    }

    fn upstream(&self) -> Option<SocketAddr> {
        Some(url_address(&server_url(), 5432))
    }

    fn namespace(&self, clock: SharedClock) -> BoxedFuture<'_, TestSchema> {
        let name = format!("fc_t_{}", uuid::Uuid::now_v7().simple());
        Box::pin(async move { TestSchema { name, clock } })
    }
}

impl StoreNamespace for TestSchema {
    type Store = PostgresStore;

    fn open(&self) -> BoxedFuture<'_, Arc<PostgresStore>> {
        Box::pin(async move { Arc::new(self.connect().await) })
    }

    fn open_impatient(&self) -> BoxedFuture<'_, Arc<PostgresStore>> {
        let options = self.options().with_statement_timeout(StdDuration::from_millis(300));
        Box::pin(async move { Arc::new(self.connect_with(options).await) })
    }

    /// Another session takes the task's transaction advisory lock (the documented key).
    fn hold_lock(&self, task_id: &str) -> BoxedFuture<'_, LockHolder> {
        let keys = (
            fnv1a_32(format!("fleetcron:{}", self.name).as_bytes()),
            fnv1a_32(task_id.as_bytes()),
        );
        Box::pin(async move {
            let mut holder = raw_connection().await;
            sqlx::query("BEGIN").execute(&mut holder).await.expect("begin");
            sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
                .bind(keys.0)
                .bind(keys.1)
                .execute(&mut holder)
                .await
                .expect("lock the task");
            Box::new(holder) as LockHolder
        })
    }

    fn follow_clock(&self, store: &PostgresStore) -> bool {
        store.set_clock_offset(clock_offset(&*self.clock)).is_ok()
    }

    fn open_via(&self, address: SocketAddr) -> BoxedFuture<'_, Result<Arc<PostgresStore>, StoreError>> {
        let url = url_via(&server_url(), address);
        Box::pin(async move {
            PostgresStore::connect_with(&url, self.fault_options())
                .await
                .map(Arc::new)
        })
    }

    fn label(&self) -> Option<String> {
        Some(self.name.clone())
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
}

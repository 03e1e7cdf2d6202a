//! Integration tests of the PostgreSQL store. Each test works in its own schema (`fc_t_<random>`,
//! dropped at the end), so they run in parallel on one server.
//!
//! The server is `FLEETCRON_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! When it cannot be reached a test prints `*** SKIPPED` and passes — unless
//! `FLEETCRON_REQUIRE_SERVICES=1` (as in CI), which makes it fail.

mod concurrency;
mod conformance;
mod faults;
mod open;
mod operations;
mod push;

use chrono::{Duration, Utc};
pub(crate) use fleetcron_conformance::store_fixtures::*;
use fleetcron_core::{Mutation, RunKind, RunLease, RunRecord, RunStatus, Store, TaskState, Timestamp};
use fleetcron_postgres::{PostgresOptions, PostgresStore};
use sqlx::Connection;
use std::sync::Arc;

/// The test server's URL.
pub(crate) fn server_url() -> String {
    std::env::var("FLEETCRON_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Whether the test server answers: `Err(reason)` when it does not.
pub(crate) async fn server_available() -> Result<(), String> {
    let url = server_url();
    let connecting = tokio::time::timeout(std::time::Duration::from_secs(5), sqlx::PgConnection::connect(&url)).await;
    match connecting {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(error)) => Err(format!("{url}: {error}")),
        Err(_) => Err(format!("{url}: no answer within 5 s")),
    }
}

/// The service policy of these tests: true to run; false (after a loud message) to skip; a panic when
/// the server is required (`FLEETCRON_REQUIRE_SERVICES=1`) but unreachable.
pub(crate) async fn ready(test: &str) -> bool {
    match server_available().await {
        Ok(()) => true,
        Err(reason) => {
            if std::env::var("FLEETCRON_REQUIRE_SERVICES").is_ok_and(|value| value == "1") {
                panic!("{test}: PostgreSQL is required (FLEETCRON_REQUIRE_SERVICES=1) but unreachable: {reason}");
            }
            eprintln!("\n*** SKIPPED {test}: PostgreSQL is unreachable: {reason}");
            eprintln!("*** (set FLEETCRON_REQUIRE_SERVICES=1 to make this a failure, as CI does)\n");
            false
        }
    }
}

/// Runs the rest of the test only when the server is there (see [`ready`]).
#[macro_export]
macro_rules! require_server {
    ($test:expr) => {
        if !$crate::ready($test).await {
            return;
        }
    };
}

/// A fresh schema name: `fc_t_` and 32 random-ish hex digits.
pub(crate) fn schema_name() -> String {
    format!("fc_t_{}", uuid::Uuid::now_v7().simple())
}

/// A schema of its own for one test, dropped (best effort) when this value is dropped.
pub(crate) struct TestSchema {
    pub(crate) name: String,
}

impl TestSchema {
    pub(crate) fn new() -> Self {
        Self { name: schema_name() }
    }

    /// The server URL selecting this schema.
    pub(crate) fn url(&self) -> String {
        with_schema(&server_url(), &self.name)
    }

    /// Options for this schema.
    pub(crate) fn options(&self) -> PostgresOptions {
        PostgresOptions::default()
            .with_schema(self.name.clone())
            .with_max_connections(4)
    }

    /// A store on this schema, not migrated.
    pub(crate) async fn connect(&self) -> PostgresStore {
        self.connect_with(self.options()).await
    }

    /// A store on this schema with `options` (whose schema is replaced by this one), not migrated.
    pub(crate) async fn connect_with(&self, options: PostgresOptions) -> PostgresStore {
        PostgresStore::connect_with(&server_url(), options.with_schema(self.name.clone()))
            .await
            .expect("connect to the test server")
    }

    /// A migrated store on this schema.
    pub(crate) async fn store(&self) -> PostgresStore {
        let store = self.connect().await;
        store.migrate().await.expect("migrate");
        store
    }

    /// A migrated store on this schema whose clock reads `offset` later than the server's.
    pub(crate) async fn store_with_offset(&self, offset: Duration) -> PostgresStore {
        let store = self.connect_with(self.options().with_clock_offset(offset)).await;
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
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), work).await;
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

/// Shares a store between tasks.
pub(crate) fn shared(store: PostgresStore) -> Arc<PostgresStore> {
    Arc::new(store)
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

/// Percentile of sorted durations (nearest rank).
pub(crate) fn percentile(sorted: &[std::time::Duration], percent: usize) -> std::time::Duration {
    if sorted.is_empty() {
        return std::time::Duration::ZERO;
    }
    let rank = (sorted.len() * percent).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

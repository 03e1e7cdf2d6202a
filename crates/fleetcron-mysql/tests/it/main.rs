//! Integration tests of the MySQL / MariaDB store. Each test works under its own table prefix
//! (`fc<random>_`) in the server's test database (its tables dropped at the end), so they run in
//! parallel on one server. The store suite and the engine-level conformance suite run on
//! [`MysqlHarness`]; the modules hold what only MySQL has (row locks, packets, the server's idle
//! timeout, URLs and table prefixes, its query plans).
//!
//! The server comes from `FLEETCRON_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`). When it
//! cannot be reached a test fails under `FLEETCRON_REQUIRE_SERVICES=1` (as in CI) and is skipped with a
//! loud message otherwise.

mod bounded;
mod faults;
mod open;
mod operations;

use fleetcron_conformance::namespace_or_skip;
pub(crate) use fleetcron_conformance::store_fixtures::*;
use fleetcron_conformance::store_suite::{
    clock_offset, migrated, url_address, url_via, Capabilities, LockHolder, StoreHarness, StoreNamespace,
};
use fleetcron_conformance::BoxedFuture;
use fleetcron_core::{SharedClock, Store, StoreError};
use fleetcron_mysql::{MysqlOptions, MysqlStore};
use sqlx::{Connection, MySqlConnection};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

fleetcron_conformance::backend_suites!(crate::MysqlHarness);

/// MySQL / MariaDB under the suites: a namespace is a table prefix; each store connects its own pool,
/// its clock the server's plus the namespace clock's offset (fixed while it is open). Polling only.
pub(crate) struct MysqlHarness;

/// The server tests run against.
pub(crate) fn server_url() -> String {
    std::env::var("FLEETCRON_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

/// A plain connection to the test database.
pub(crate) async fn raw() -> Result<MySqlConnection, String> {
    let url = server_url();
    match tokio::time::timeout(StdDuration::from_secs(5), MySqlConnection::connect(&url)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(error)) => Err(format!("cannot connect to {url}: {error}")),
        Err(_) => Err(format!("cannot connect to {url}: no answer within 5 s")),
    }
}

/// Whether the server answers.
pub(crate) async fn server_available() -> Result<(), String> {
    let _ = raw().await?.close().await;
    Ok(())
}

/// One test's tables: a fresh table prefix in the test database, on a clock; every table under the
/// prefix is dropped (best effort) when this value is dropped.
pub(crate) struct Tables {
    pub(crate) prefix: String,
    clock: SharedClock,
}

impl Tables {
    /// Options for these tables: a small pool (many tests share one server; MariaDB's default
    /// max_connections is 151), the clock's offset, and time for a 75 MiB batch in a debug build.
    pub(crate) fn options(&self) -> MysqlOptions {
        MysqlOptions::default()
            .with_max_connections(4)
            .with_table_prefix(self.prefix.clone())
            .with_clock_offset(clock_offset(&*self.clock))
            .with_operation_timeout(StdDuration::from_secs(120))
    }

    /// A store with `options` (these tables', changed), not migrated.
    pub(crate) async fn connect_with(&self, options: MysqlOptions) -> MysqlStore {
        MysqlStore::connect_with(&server_url(), options).await.expect("connect")
    }

    /// A plain connection to the test database, for tests that look at or tamper with the tables.
    pub(crate) async fn raw(&self) -> MySqlConnection {
        raw().await.expect("raw connection")
    }

    /// Runs `statement`, its `P_` replaced by the prefix, on a plain connection.
    pub(crate) async fn execute(&self, statement: &str, bind: Option<String>) {
        let statement = statement.replace("P_", &self.prefix);
        let mut query = sqlx::query(&statement);
        if let Some(value) = bind {
            query = query.bind(value);
        }
        query
            .execute(&mut self.raw().await)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
}

impl Drop for Tables {
    fn drop(&mut self) {
        let pattern = format!("{}%", self.prefix.replace('_', "\\_"));
        // Drop runs outside any async context we could await in: a thread with its own runtime.
        let dropping = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                let Ok(mut conn) = raw().await else {
                    return;
                };
                let names: Vec<Vec<u8>> = sqlx::query_scalar(
                    "SELECT CAST(table_name AS BINARY) FROM information_schema.tables
                     WHERE table_schema = DATABASE() AND table_name LIKE ?",
                )
                .bind(pattern)
                .fetch_all(&mut conn)
                .await
                .unwrap_or_default();
                let _ = sqlx::query("SET SESSION lock_wait_timeout = 10")
                    .execute(&mut conn)
                    .await;
                for name in names {
                    let name = String::from_utf8_lossy(&name).into_owned();
                    let _ = sqlx::query(&format!("DROP TABLE IF EXISTS `{name}`"))
                        .execute(&mut conn)
                        .await;
                }
                let _ = conn.close().await;
            });
        });
        let _ = dropping.join();
    }
}

impl StoreHarness for MysqlHarness {
    type Namespace = Tables;
    const CAPABILITIES: Capabilities = Capabilities {
        claim_skipping: fleetcron_conformance::store_suite::ClaimSkipping::Exact,
        ..Capabilities::SERVER
    };

    fn upstream(&self) -> Option<SocketAddr> {
        Some(url_address(&server_url(), 3306))
    }

    fn namespace(&self, clock: SharedClock) -> BoxedFuture<'_, Tables> {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let prefix = format!("fc{}_", &id[8..]);
        Box::pin(async move { Tables { prefix, clock } })
    }

    fn available(&self) -> BoxedFuture<'_, Result<(), String>> {
        Box::pin(server_available())
    }
}

impl StoreNamespace for Tables {
    type Store = MysqlStore;

    fn open(&self) -> BoxedFuture<'_, Arc<MysqlStore>> {
        Box::pin(async move { Arc::new(self.connect_with(self.options()).await) })
    }

    fn open_via(&self, address: SocketAddr) -> BoxedFuture<'_, Result<Arc<MysqlStore>, StoreError>> {
        let (url, options) = (url_via(&server_url(), address), quick(self.options()));
        Box::pin(async move { Ok(Arc::new(MysqlStore::connect_with(&url, options).await?)) })
    }

    /// Another session locks the task's row (`SELECT … FOR UPDATE` in a transaction).
    fn hold_lock(&self, task_id: &str) -> BoxedFuture<'_, LockHolder> {
        let statement = format!("SELECT id FROM {}tasks WHERE id = ? FOR UPDATE", self.prefix);
        let task_id = task_id.to_owned();
        Box::pin(async move {
            let mut holder = self.raw().await;
            sqlx::query("BEGIN").execute(&mut holder).await.expect("begin");
            let locked = sqlx::query(&statement).bind(task_id).fetch_all(&mut holder).await;
            assert_eq!(locked.expect("lock the row").len(), 1, "the task is stored");
            Box::new(holder) as LockHolder
        })
    }

    /// InnoDB counts lock waits in whole seconds: one.
    fn open_impatient(&self) -> BoxedFuture<'_, Arc<MysqlStore>> {
        let options = self.options().with_lock_timeout(StdDuration::from_secs(1));
        Box::pin(async move { Arc::new(self.connect_with(options).await) })
    }

    fn corrupt_state(&self, task_id: &str) -> BoxedFuture<'_, ()> {
        let task_id = task_id.to_owned();
        Box::pin(async move {
            self.execute("UPDATE P_tasks SET state = '{not json' WHERE id = ?", Some(task_id))
                .await
        })
    }

    fn schema_from_the_future(&self) -> BoxedFuture<'_, ()> {
        let version = fleetcron_mysql::SCHEMA_VERSION + 5;
        let statement =
            format!("INSERT INTO P_schema (version, description, applied_at) VALUES ({version}, 'future', NOW(3))");
        Box::pin(async move { self.execute(&statement, None).await })
    }

    fn label(&self) -> Option<String> {
        let url = server_url();
        let database = url.rsplit('/').next().unwrap_or_default();
        Some(database.split('?').next().unwrap_or_default().to_owned())
    }
}

/// `options` with timeouts short enough that faults show within a second or two.
pub(crate) fn quick(options: MysqlOptions) -> MysqlOptions {
    options
        .with_acquire_timeout(StdDuration::from_secs(1))
        .with_operation_timeout(StdDuration::from_secs(1))
        .with_lock_timeout(StdDuration::from_secs(1))
}

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
mod concurrency;
mod faults;
mod open;
mod operations;

pub(crate) use fleetcron_conformance::store_fixtures::*;
use fleetcron_conformance::store_suite::{
    clock_offset, url_address, url_via, Capabilities, StoreHarness, StoreNamespace,
};
use fleetcron_conformance::BoxedFuture;
use fleetcron_core::{SharedClock, Store, StoreError};
use fleetcron_mysql::{MysqlOptions, MysqlStore};
use sqlx::{Connection, MySqlConnection};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

mod store_suite {
    fleetcron_conformance::store_suite!(crate::MysqlHarness);
}

mod conformance {
    fleetcron_conformance::conformance_tests!(fleetcron_conformance::store_suite::StoreBackend(crate::MysqlHarness));
}

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
    /// Fresh tables on the system clock, or `None` (after a loud message) when the server cannot be
    /// reached and services are not required; a panic when they are.
    pub(crate) async fn create(test: &str) -> Option<Tables> {
        fleetcron_conformance::service_policy(server_available().await, test)
            .then(|| Tables::on(fleetcron_core::clock::system_clock()))
    }

    fn on(clock: SharedClock) -> Tables {
        let id = uuid::Uuid::now_v7().simple().to_string();
        Tables {
            prefix: format!("fc{}_", &id[8..]),
            clock,
        }
    }

    /// Options for these tables: a small pool (many tests share one server; MariaDB's default
    /// max_connections is 151), the clock's offset, and time for a 75 MiB batch in a debug build.
    pub(crate) fn options(&self) -> MysqlOptions {
        MysqlOptions::default()
            .with_max_connections(4)
            .with_table_prefix(self.prefix.clone())
            .with_clock_offset(clock_offset(&*self.clock))
            .with_operation_timeout(StdDuration::from_secs(120))
    }

    /// A store on these tables with `options` (whose prefix is replaced by these tables'), not migrated.
    pub(crate) async fn connect_with(&self, options: MysqlOptions) -> MysqlStore {
        MysqlStore::connect_with(&server_url(), options.with_table_prefix(self.prefix.clone()))
            .await
            .expect("connect")
    }

    /// A migrated store on these tables.
    pub(crate) async fn store(&self) -> MysqlStore {
        let store = self.connect_with(self.options()).await;
        store.migrate().await.expect("migrate");
        store
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

/// MySQL / MariaDB under the suites: a namespace is a table prefix; each store connects its own pool,
/// its clock the server's plus the namespace clock's offset (fixed while it is open). Polling only.
pub(crate) struct MysqlHarness;

impl StoreHarness for MysqlHarness {
    type Store = MysqlStore;
    type Namespace = Tables;

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            injectable_clock: false,
            proxy: true,
            server_transactions: true,
            reconnects_at_once: true,
            ..Capabilities::default()
        }
    }

    fn available(&self) -> BoxedFuture<'_, Result<(), String>> {
        Box::pin(server_available())
    }

    fn namespace(&self, clock: SharedClock) -> BoxedFuture<'_, Tables> {
        Box::pin(async move { Tables::on(clock) })
    }
}

impl StoreNamespace for Tables {
    type Store = MysqlStore;

    fn open(&self) -> BoxedFuture<'_, Arc<MysqlStore>> {
        Box::pin(async move { Arc::new(self.connect_with(self.options()).await) })
    }

    fn upstream(&self) -> Option<SocketAddr> {
        Some(url_address(&server_url(), 3306))
    }

    fn open_via(&self, address: SocketAddr) -> BoxedFuture<'_, Result<Arc<MysqlStore>, StoreError>> {
        let options = quick(self.options());
        Box::pin(async move {
            MysqlStore::connect_with(&url_via(&server_url(), address), options)
                .await
                .map(Arc::new)
        })
    }

    fn schema_from_the_future(&self) -> BoxedFuture<'_, ()> {
        let version = fleetcron_mysql::SCHEMA_VERSION + 5;
        let statement =
            format!("INSERT INTO P_schema (version, description, applied_at) VALUES ({version}, 'future', NOW(3))");
        Box::pin(async move { self.execute(&statement, None).await })
    }

    fn corrupt_state(&self, task_id: &str) -> BoxedFuture<'_, ()> {
        let task_id = task_id.to_owned();
        Box::pin(async move {
            self.execute("UPDATE P_tasks SET state = '{not json' WHERE id = ?", Some(task_id))
                .await
        })
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

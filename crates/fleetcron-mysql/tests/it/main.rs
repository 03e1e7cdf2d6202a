//! Integration tests of the MySQL / MariaDB store. Each test works in its own database
//! (`fc_t_<random>`, created at the start and dropped at the end), so they run in parallel on one server.
//!
//! The server comes from `FLEETCRON_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`). When it
//! cannot be reached a test fails under `FLEETCRON_REQUIRE_SERVICES=1` (as in CI) and is skipped with a
//! loud message otherwise.

mod bounded;
mod concurrency;
mod conformance;
mod faults;
mod open;
mod operations;

use chrono::{Duration, Utc};
pub(crate) use fleetcron_conformance::store_fixtures::*;
use fleetcron_core::{Mutation, RunKind, RunLease, RunRecord, RunStatus, Store, TaskState, Timestamp};
use fleetcron_mysql::{MysqlOptions, MysqlStore};
use sqlx::{Connection, MySqlConnection};
use std::time::Duration as StdDuration;

/// The server tests run against.
pub(crate) fn server_url() -> String {
    std::env::var("FLEETCRON_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

fn services_required() -> bool {
    std::env::var("FLEETCRON_REQUIRE_SERVICES").is_ok_and(|value| value == "1")
}

/// `url` with its host and port replaced by `host_port` (when given) and its database by `database`.
pub(crate) fn url_with(url: &str, host_port: Option<&str>, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("the test URL has a scheme");
    let (location, query) = match rest.split_once('?') {
        Some((location, query)) => (location, format!("?{query}")),
        None => (rest, String::new()),
    };
    let authority = location.split('/').next().unwrap_or(location);
    let authority = match (host_port, authority.rsplit_once('@')) {
        (Some(host_port), Some((userinfo, _))) => format!("{userinfo}@{host_port}"),
        (Some(host_port), None) => host_port.to_owned(),
        (None, _) => authority.to_owned(),
    };
    format!("{scheme}://{authority}/{database}{query}")
}

/// The server's `host:port`, resolved.
pub(crate) fn server_address() -> std::net::SocketAddr {
    use std::net::ToSocketAddrs;
    let url = server_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:3306")
    };
    host_port
        .to_socket_addrs()
        .expect("resolve the test server")
        .next()
        .expect("the test server has an address")
}

async fn admin_connection() -> Result<MySqlConnection, String> {
    let url = server_url();
    match tokio::time::timeout(StdDuration::from_secs(5), MySqlConnection::connect(&url)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(error)) => Err(format!("cannot connect to {url}: {error}")),
        Err(_) => Err(format!("cannot connect to {url}: no answer within 5 s")),
    }
}

/// Whether the server answers (for [`fleetcron_conformance::Backend::available`]).
pub(crate) async fn server_available() -> Result<(), String> {
    let conn = admin_connection().await?;
    let _ = conn.close().await;
    Ok(())
}

/// A database of one test: created on the server, dropped (best effort) when this value is dropped.
pub(crate) struct TestDb {
    pub(crate) name: String,
    pub(crate) url: String,
}

impl TestDb {
    /// Creates a fresh database, or returns `None` (after a loud message) when the server cannot be
    /// reached and services are not required. Panics when they are.
    pub(crate) async fn create(test: &str) -> Option<TestDb> {
        let mut conn = match admin_connection().await {
            Ok(conn) => conn,
            Err(reason) if services_required() => {
                panic!("{test}: MySQL/MariaDB is required (FLEETCRON_REQUIRE_SERVICES=1) but unreachable: {reason}")
            }
            Err(reason) => {
                eprintln!("\n*** SKIPPED {test}: MySQL/MariaDB is unreachable: {reason}");
                eprintln!("*** (set FLEETCRON_REQUIRE_SERVICES=1 to make this a failure, as CI does)\n");
                return None;
            }
        };
        let name = format!("fc_t_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(&format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let _ = conn.close().await;
        let url = url_with(&server_url(), None, &name);
        Some(TestDb { name, url })
    }

    /// The database's URL through another `host:port` (a proxy).
    pub(crate) fn url_via(&self, host_port: &str) -> String {
        url_with(&server_url(), Some(host_port), &self.name)
    }

    /// A plain connection to the database, for tests that look at or tamper with the tables.
    pub(crate) async fn raw(&self) -> MySqlConnection {
        MySqlConnection::connect(&self.url).await.expect("raw connection")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any async context we could await in: a thread with its own runtime.
        let dropping = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut conn) = admin_connection().await {
                    // A failed test may leave sessions in a transaction, holding the tables' metadata
                    // locks (its runtime stopped before the rollback was sent): end them first.
                    let sessions: Vec<u64> = sqlx::query_scalar(
                        "SELECT CAST(id AS UNSIGNED) FROM information_schema.processlist WHERE db = ?",
                    )
                    .bind(&name)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap_or_default();
                    for session in sessions {
                        let _ = sqlx::query(&format!("KILL CONNECTION {session}"))
                            .execute(&mut conn)
                            .await;
                    }
                    let _ = sqlx::query("SET SESSION lock_wait_timeout = 10")
                        .execute(&mut conn)
                        .await;
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = dropping.join();
    }
}

/// Small pools: many tests share one server (MariaDB's default max_connections is 151).
pub(crate) fn options() -> MysqlOptions {
    MysqlOptions::default().with_max_connections(4)
}

/// Connects and migrates a store on `db` with `options`.
pub(crate) async fn store_with(db: &TestDb, options: MysqlOptions) -> MysqlStore {
    let store = MysqlStore::connect_with(&db.url, options).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

/// Connects and migrates a store on `db` with the test options.
pub(crate) async fn store(db: &TestDb) -> MysqlStore {
    store_with(db, options()).await
}

/// A store on `db` whose clock reads `offset` later than the server's.
pub(crate) async fn store_at_offset(db: &TestDb, offset: Duration) -> MysqlStore {
    store_with(db, options().with_clock_offset(offset)).await
}

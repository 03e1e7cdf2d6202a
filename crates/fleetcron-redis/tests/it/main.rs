//! Integration tests of the Redis store. Each test works under its own key prefix `fc_t_<random>`
//! (deleted when the test ends, best effort), so they run in parallel on one server.
//!
//! The server is `FLEETCRON_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`). When it cannot be
//! reached a test prints a loud `*** SKIPPED` and passes, unless `FLEETCRON_REQUIRE_SERVICES=1` (as in
//! CI), which makes it fail.

mod concurrency;
mod conformance;
mod faults;
mod isolation;
mod open;
mod operations;
mod push;

use chrono::{Duration, Utc};
pub(crate) use fleetcron_conformance::store_fixtures::*;
use fleetcron_core::{Mutation, RunRecord, RunStatus, RunUpdate, Store, TaskState, Timestamp};
use fleetcron_redis::{RedisOptions, RedisStore};
use std::sync::Arc;

/// The test server's URL.
pub(crate) fn redis_url() -> String {
    std::env::var("FLEETCRON_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A fresh prefix `fc_t_<random>`.
pub(crate) fn random_prefix() -> String {
    format!("fc_t_{}", uuid::Uuid::now_v7().simple())
}

/// Whether the test server answers a PING within two seconds.
pub(crate) async fn server_reachable() -> Result<(), String> {
    let url = redis_url();
    let client = redis::Client::open(url.as_str()).map_err(|error| format!("{url}: {error}"))?;
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(std::time::Duration::from_secs(2), ping).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("{url}: {error}")),
        Err(_) => Err(format!("{url}: no answer within 2 s")),
    }
}

/// The service policy: true to run; false (after a loud message) to skip; a panic when the service is
/// required (`FLEETCRON_REQUIRE_SERVICES=1`) but unreachable.
pub(crate) async fn redis_ready(test: &str) -> bool {
    match server_reachable().await {
        Ok(()) => true,
        Err(reason) => {
            if std::env::var("FLEETCRON_REQUIRE_SERVICES").is_ok_and(|value| value == "1") {
                panic!("{test}: Redis is required (FLEETCRON_REQUIRE_SERVICES=1) but unreachable: {reason}");
            }
            eprintln!("\n*** SKIPPED {test}: Redis is unreachable: {reason}");
            eprintln!("*** (set FLEETCRON_REQUIRE_SERVICES=1 to make this a failure, as CI does)\n");
            false
        }
    }
}

/// One test's key prefix; its keys are deleted when it is dropped.
pub(crate) struct Namespace {
    pub(crate) prefix: String,
}

impl Namespace {
    /// A namespace, or `None` when Redis is unreachable and not required (the test then returns).
    pub(crate) async fn new(test: &str) -> Option<Self> {
        redis_ready(test).await.then(|| Self {
            prefix: random_prefix(),
        })
    }

    pub(crate) fn options(&self) -> RedisOptions {
        RedisOptions::default().with_key_prefix(self.prefix.clone())
    }

    /// A new store (another worker) on this namespace, not migrated.
    pub(crate) async fn open_with(&self, options: RedisOptions) -> RedisStore {
        RedisStore::connect_with(&redis_url(), options)
            .await
            .expect("connect to the test server")
    }

    /// A new, migrated store on this namespace.
    pub(crate) async fn store(&self) -> RedisStore {
        self.store_with(self.options()).await
    }

    /// A new, migrated store on this namespace with `options`.
    pub(crate) async fn store_with(&self, options: RedisOptions) -> RedisStore {
        let store = self.open_with(options).await;
        store.migrate().await.expect("migrate");
        store
    }

    /// A raw connection to the test server, for tests that look at or tamper with keys.
    pub(crate) async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(redis_url().as_str())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("raw connection")
    }

    /// Every key under the prefix, sorted.
    pub(crate) async fn keys(&self) -> Vec<String> {
        let mut conn = self.raw().await;
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{}[}}:]*", self.prefix))
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        keys.sort();
        keys
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let pattern = format!("{{{}[}}:]*", self.prefix);
        // A plain thread with the blocking client: this runs on panics too, inside or outside a runtime.
        let cleanup = std::thread::spawn(move || {
            let Ok(client) = redis::Client::open(redis_url().as_str()) else {
                return;
            };
            let Ok(mut conn) = client.get_connection_with_timeout(std::time::Duration::from_secs(2)) else {
                return;
            };
            let mut cursor = 0u64;
            loop {
                let Ok((next, keys)) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query::<(u64, Vec<String>)>(&mut conn)
                else {
                    return;
                };
                if !keys.is_empty() && redis::cmd("UNLINK").arg(&keys).query::<i64>(&mut conn).is_err() {
                    return;
                }
                if next == 0 {
                    return;
                }
                cursor = next;
            }
        });
        let _ = cleanup.join();
    }
}

/// The stored state of `id`, if any.
pub(crate) async fn state_of<S: Store>(store: &S, id: &str) -> Option<TaskState> {
    let (_, states) = store.load(Some(&[id.to_owned()])).await.expect("load");
    states.into_iter().next()
}

/// Shared handle used by tests that spawn.
pub(crate) type Shared = Arc<RedisStore>;

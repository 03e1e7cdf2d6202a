//! Integration tests of the Redis store. Each test works under its own key prefix `fc_t_<random>`
//! (its keys deleted when the test ends, best effort), so they run in parallel on one server. The
//! store suite and the engine-level conformance suite run on [`RedisHarness`]; the modules hold what
//! only Redis has (its key layout, prefixes as namespaces, URLs, its scripts' answers).
//!
//! The server is `FLEETCRON_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`). When it cannot be
//! reached a test prints a loud `*** SKIPPED` and passes, unless `FLEETCRON_REQUIRE_SERVICES=1` (as in
//! CI), which makes it fail.

mod isolation;
mod open;
mod operations;

use fleetcron_conformance::namespace_or_skip;
pub(crate) use fleetcron_conformance::store_fixtures::*;
use fleetcron_conformance::store_suite::{
    clock_offset, migrated, url_address, url_via, AttentionOrder, Capabilities, Locks, StoreHarness, StoreNamespace,
};
use fleetcron_conformance::BoxedFuture;
use fleetcron_core::{SharedClock, Store, StoreError};
use fleetcron_redis::{RedisOptions, RedisStore};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

fleetcron_conformance::backend_suites!(crate::RedisHarness);

/// Redis under the suites: a namespace is a key prefix; each store connects its own connection
/// manager, its clock the server's `TIME` plus the namespace clock's offset (which it can follow while
/// open); optimistic commits, pub/sub wake-ups, the most overdue task first in the idle poll.
pub(crate) struct RedisHarness;

/// The test server's URL.
pub(crate) fn redis_url() -> String {
    std::env::var("FLEETCRON_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Whether the test server answers a PING within two seconds.
pub(crate) async fn server_reachable() -> Result<(), String> {
    let url = redis_url();
    let client = redis::Client::open(url.as_str()).map_err(|error| format!("{url}: {error}"))?;
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(StdDuration::from_secs(2), ping).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("{url}: {error}")),
        Err(_) => Err(format!("{url}: no answer within 2 s")),
    }
}

/// One test's key prefix, on a clock; its keys are deleted when it is dropped.
pub(crate) struct Namespace {
    pub(crate) prefix: String,
    clock: SharedClock,
}

impl Namespace {
    /// The namespace of `prefix`, on `clock`.
    pub(crate) fn with_prefix(prefix: String, clock: SharedClock) -> Self {
        Self { prefix, clock }
    }

    pub(crate) fn options(&self) -> RedisOptions {
        RedisOptions::default()
            .with_key_prefix(self.prefix.clone())
            .with_clock_offset(clock_offset(&*self.clock))
    }

    /// A new store (another worker) on this namespace with `options`, not migrated.
    pub(crate) async fn open_with(&self, options: RedisOptions) -> RedisStore {
        RedisStore::connect_with(&redis_url(), options)
            .await
            .expect("connect to the test server")
    }

    /// A raw connection to the test server, for tests that look at or tamper with keys.
    pub(crate) async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(redis_url().as_str())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("raw connection")
    }

    /// Runs a command on a raw connection.
    pub(crate) async fn command(&self, command: &mut redis::Cmd) {
        let _: redis::Value = command.query_async(&mut self.raw().await).await.expect("command");
    }

    /// Every key under the prefix, sorted.
    pub(crate) async fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{}[}}:]*", self.prefix))
            .query_async(&mut self.raw().await)
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
            let Ok(mut conn) = client.get_connection_with_timeout(StdDuration::from_secs(2)) else {
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

impl StoreHarness for RedisHarness {
    type Namespace = Namespace;
    const CAPABILITIES: Capabilities = Capabilities {
        push: true,
        claim_skipping: fleetcron_conformance::store_suite::ClaimSkipping::Exact,
        attention_order: AttentionOrder::MostOverdueFirst,
        refuses_before_migrate: false,
        server_transactions: false,
        reconnects_at_once: false,
        locks: Locks::None,
        ..Capabilities::SERVER
    };

    fn namespace(&self, clock: SharedClock) -> BoxedFuture<'_, Namespace> {
        let prefix = format!("fc_t_{}", uuid::Uuid::now_v7().simple());
        Box::pin(async move { Namespace::with_prefix(prefix, clock) })
    }

    fn available(&self) -> BoxedFuture<'_, Result<(), String>> {
        Box::pin(server_reachable())
    }

    fn upstream(&self) -> Option<SocketAddr> {
        Some(url_address(&redis_url(), 6379))
    }
}

impl StoreNamespace for Namespace {
    type Store = RedisStore;

    fn open(&self) -> BoxedFuture<'_, Arc<RedisStore>> {
        Box::pin(async move { Arc::new(self.open_with(self.options()).await) })
    }

    fn follow_clock(&self, store: &RedisStore) -> bool {
        store.set_clock_offset(clock_offset(&*self.clock));
        true
    }

    fn label(&self) -> Option<String> {
        Some(self.prefix.clone())
    }

    fn corrupt_state(&self, task_id: &str) -> BoxedFuture<'_, ()> {
        let key = format!("{{{}:{task_id}}}:state", self.prefix);
        Box::pin(async move {
            self.command(redis::cmd("HSET").arg(key).arg("doc").arg("{not json"))
                .await
        })
    }

    fn schema_from_the_future(&self) -> BoxedFuture<'_, ()> {
        let key = format!("{{{}}}:schema", self.prefix);
        Box::pin(async move {
            self.command(redis::cmd("SET").arg(key).arg(fleetcron_redis::SCHEMA_VERSION + 5))
                .await
        })
    }

    /// Through `address`, a command unanswered for 600 ms (a connection for 300 ms) is `Unavailable`.
    fn open_via(&self, address: SocketAddr) -> BoxedFuture<'_, Result<Arc<RedisStore>, StoreError>> {
        let url = url_via(&redis_url(), address);
        let options = self
            .options()
            .with_response_timeout(StdDuration::from_millis(600))
            .with_connection_timeout(StdDuration::from_millis(300));
        Box::pin(async move { RedisStore::connect_with(&url, options).await.map(Arc::new) })
    }
}

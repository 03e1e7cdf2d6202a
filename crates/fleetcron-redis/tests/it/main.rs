//! Integration tests of the Redis store. Each test works under its own key prefix `fc_t_<random>`
//! (deleted when the test ends, best effort), so they run in parallel on one server.
//!
//! The server is `FLEETCRON_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`). When it cannot be
//! reached a test prints a loud `*** SKIPPED` and passes, unless `FLEETCRON_REQUIRE_SERVICES=1` (as in
//! CI), which makes it fail.

mod concurrency;
mod conformance;
mod faults;
mod open;
mod operations;
mod push;

use chrono::{Duration, TimeZone, Utc};
use fleetcron_core::model::PendingRun;
use fleetcron_core::task::TaskDefinition;
use fleetcron_core::{Mutation, RunKind, RunLease, RunRecord, RunStatus, RunUpdate, Store, TaskState, Timestamp};
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

/// 2030-01-01T00:00:00Z.
pub(crate) fn epoch() -> Timestamp {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).single().expect("valid date")
}

pub(crate) fn ms(n: i64) -> Duration {
    Duration::milliseconds(n)
}

pub(crate) fn definition(id: &str) -> TaskDefinition {
    TaskDefinition {
        id: id.to_owned(),
        schedule: "* * * * *".to_owned(),
        timezone: "UTC".to_owned(),
        description: format!("task {id}"),
    }
}

pub(crate) fn new_state(id: &str, now: Timestamp) -> TaskState {
    TaskState::new(definition(id), now)
}

/// A state that wants attention at `at` (a pending run requested then).
pub(crate) fn state_wanting_attention(id: &str, now: Timestamp, at: Timestamp) -> TaskState {
    let mut state = new_state(id, now);
    state.pending.push(PendingRun {
        run_id: format!("{id}-pending"),
        kind: RunKind::Manual,
        slot: None,
        attempt: 1,
        trigger_id: Some(format!("trigger-{id}")),
        requested_at: at,
    });
    state
}

/// A state holding a lease until `until`.
pub(crate) fn state_with_lease(id: &str, now: Timestamp, until: Timestamp) -> TaskState {
    let mut state = new_state(id, now);
    state.fence = 1;
    state.running.push(RunLease {
        run_id: format!("{id}-lease"),
        fence: 1,
        worker: "w1".to_owned(),
        kind: RunKind::Scheduled,
        slot: Some(now),
        attempt: 1,
        trigger_id: None,
        started_at: now,
        lease_until: until,
    });
    state
}

/// A history row; `slot_ms` is an offset from [`epoch`].
pub(crate) fn run(task_id: &str, run_id: &str, slot_ms: Option<i64>, attempt: u32, status: RunStatus) -> RunRecord {
    RunRecord {
        run_id: run_id.to_owned(),
        task_id: task_id.to_owned(),
        kind: if slot_ms.is_some() {
            RunKind::Scheduled
        } else {
            RunKind::Manual
        },
        slot: slot_ms.map(|offset| epoch() + ms(offset)),
        attempt,
        fence: 1,
        worker: Some("w1".to_owned()),
        trigger_id: None,
        claimed_at: Some(epoch()),
        started_at: Some(epoch()),
        finished_at: None,
        status,
        reason: None,
        result: None,
        error: None,
    }
}

/// A finished history row whose run ended at `finished`.
pub(crate) fn finished_run(task_id: &str, run_id: &str, finished: Timestamp) -> RunRecord {
    RunRecord {
        finished_at: Some(finished),
        ..run(task_id, run_id, None, 1, RunStatus::Succeeded)
    }
}

pub(crate) fn finish(run_id: &str, status: RunStatus, at: Timestamp) -> RunUpdate {
    RunUpdate {
        run_id: run_id.to_owned(),
        status,
        fence: 1,
        worker: Some("w1".to_owned()),
        claimed_at: Some(epoch()),
        started_at: Some(epoch()),
        finished_at: Some(at),
        reason: None,
        result: None,
        error: None,
    }
}

/// Inserts `runs` for `task_id` (creating no state) in one mutation.
pub(crate) async fn insert_runs<S: Store>(store: &S, task_id: &str, runs: Vec<RunRecord>) {
    try_insert_runs(store, task_id, runs).await.expect("insert runs");
}

/// Inserts `runs` for `task_id` (creating no state) in one mutation, returning the store's answer.
pub(crate) async fn try_insert_runs<S: Store>(
    store: &S,
    task_id: &str,
    runs: Vec<RunRecord>,
) -> Result<Timestamp, fleetcron_core::StoreError> {
    store
        .mutate(&[task_id.to_owned()], &mut |_, _, _| Mutation {
            insert_runs: runs.clone(),
            ..Mutation::none()
        })
        .await
}

/// Writes `state` for its task.
pub(crate) async fn put_state<S: Store>(store: &S, state: TaskState) {
    let id = state.definition.id.clone();
    store
        .mutate(&[id], &mut |_, _, _| Mutation {
            state: Some(state.clone()),
            ..Mutation::none()
        })
        .await
        .expect("write state");
}

/// Increments the task's fence (creating the task at fence 1) and records a run for the new fence
/// whose slot is `epoch + fence ms`, so a lost update would also collide on the unique key.
pub(crate) async fn increment<S: Store>(store: &S, id: &str, worker: &str) -> Result<u64, fleetcron_core::StoreError> {
    let mut fence = 0;
    store
        .mutate(&[id.to_owned()], &mut |now, task_id, stored| {
            let mut state = stored.cloned().unwrap_or_else(|| new_state(task_id, now));
            state.fence += 1;
            fence = state.fence;
            let fence_ms = i64::try_from(state.fence).expect("small fence");
            let mut record = run(
                task_id,
                &format!("{fence_ms:012}"),
                Some(fence_ms),
                1,
                RunStatus::Succeeded,
            );
            record.fence = state.fence;
            record.worker = Some(worker.to_owned());
            Mutation {
                state: Some(state),
                insert_runs: vec![record],
                update_runs: Vec::new(),
            }
        })
        .await?;
    Ok(fence)
}

/// The stored state of `id`, if any.
pub(crate) async fn state_of<S: Store>(store: &S, id: &str) -> Option<TaskState> {
    let (_, states) = store.load(Some(&[id.to_owned()])).await.expect("load");
    states.into_iter().next()
}

/// Shared handle used by tests that spawn.
pub(crate) type Shared = Arc<RedisStore>;

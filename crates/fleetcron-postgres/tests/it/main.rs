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

use chrono::{Duration, TimeZone, Utc};
use fleetcron_core::model::PendingRun;
use fleetcron_core::task::TaskDefinition;
use fleetcron_core::{Mutation, RunKind, RunLease, RunRecord, RunStatus, RunUpdate, Store, TaskState, Timestamp};
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
    let mut runs = Some(runs);
    store
        .mutate(&[task_id.to_owned()], &mut |_, _, _| Mutation {
            insert_runs: runs.take().unwrap_or_default(),
            ..Mutation::none()
        })
        .await
        .expect("insert runs");
}

/// Writes `state` for its task.
pub(crate) async fn put_state<S: Store>(store: &S, state: TaskState) {
    let id = state.definition.id.clone();
    let mut state = Some(state);
    store
        .mutate(&[id], &mut |_, _, _| Mutation {
            state: state.take(),
            ..Mutation::none()
        })
        .await
        .expect("write state");
}

/// Increments the task's fence (creating the task at fence 1) and records a run for the new fence
/// whose slot is `epoch + fence ms`, so a lost update would also collide on the unique key.
pub(crate) async fn increment<S: Store + ?Sized>(
    store: &S,
    id: &str,
    worker: &str,
) -> Result<u64, fleetcron_core::StoreError> {
    let mut fence = 0;
    store
        .mutate(&[id.to_owned()], &mut |now, task_id, stored| {
            let mut state = stored.cloned().unwrap_or_else(|| new_state(task_id, now));
            state.fence += 1;
            fence = state.fence;
            let fence_ms = i64::try_from(state.fence).expect("small fence");
            let mut record = run(
                task_id,
                &format!("{task_id}-{fence_ms:012}"),
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

/// The stored fence of a task (0 when it does not exist).
pub(crate) async fn final_fence<S: Store>(store: &S, id: &str) -> u64 {
    let (_, states) = store.load(Some(&[id.to_owned()])).await.expect("load");
    states.first().map_or(0, |state| state.fence)
}

/// Asserts one history row per fence value 1..=total: none lost, none doubled.
pub(crate) async fn assert_one_run_per_fence<S: Store>(store: &S, id: &str, total: u64) {
    let runs = store
        .runs(
            id,
            &fleetcron_core::RunQuery {
                limit: 100_000,
                before: None,
            },
        )
        .await
        .expect("runs");
    let mut fences: Vec<u64> = runs.iter().map(|run| run.fence).collect();
    fences.sort_unstable();
    assert_eq!(fences, (1..=total).collect::<Vec<_>>(), "task {id}");
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

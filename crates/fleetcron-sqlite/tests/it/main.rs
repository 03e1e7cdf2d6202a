//! Integration tests of the SQLite store. Each test works in its own temporary directory, so they run
//! in parallel.

mod concurrency;
mod conformance;
mod open;
mod operations;

use chrono::{DateTime, Duration, TimeZone, Utc};
use fleetcron_core::model::PendingRun;
use fleetcron_core::task::TaskDefinition;
use fleetcron_core::{
    Clock, Mutation, RunKind, RunLease, RunRecord, RunStatus, RunUpdate, SharedClock, Store, TaskState, Timestamp,
};
use fleetcron_sqlite::{SqliteOptions, SqliteStore};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A temporary directory and the database path inside it.
pub(crate) struct TestDb {
    _dir: tempfile::TempDir,
    pub(crate) path: PathBuf,
}

pub(crate) fn test_db() -> TestDb {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("fleetcron.db");
    TestDb { _dir: dir, path }
}

/// A clock tests set by hand.
#[derive(Debug)]
pub(crate) struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    pub(crate) fn new(at: Timestamp) -> Arc<Self> {
        Arc::new(Self(Mutex::new(at)))
    }

    pub(crate) fn set(&self, at: Timestamp) {
        *self.0.lock().expect("clock mutex") = at;
    }

    pub(crate) fn advance(&self, by: Duration) {
        let mut now = self.0.lock().expect("clock mutex");
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock mutex")
    }
}

/// 2030-01-01T00:00:00Z.
pub(crate) fn epoch() -> Timestamp {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).single().expect("valid date")
}

pub(crate) fn ms(n: i64) -> Duration {
    Duration::milliseconds(n)
}

/// Opens and migrates a store on `path` with `clock`.
pub(crate) async fn store_with_clock(path: &Path, clock: SharedClock) -> SqliteStore {
    let store = SqliteStore::open_with(path, SqliteOptions::default().with_clock(clock))
        .await
        .expect("open the store");
    store.migrate().await.expect("migrate");
    store
}

/// Opens and migrates a store on `path` with the system clock.
pub(crate) async fn store(path: &Path) -> SqliteStore {
    let store = SqliteStore::open(path).await.expect("open the store");
    store.migrate().await.expect("migrate");
    store
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

/// Raw access to the file, for tests that tamper with it.
pub(crate) async fn raw_connection(path: &Path) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
    sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("raw connection")
}

//! Fixtures of the store suite, also for the store crates' own tests: fixed instants, task states,
//! history rows and small mutations built on [`Store::mutate`]. Every helper is safe on optimistic
//! stores (a `decide` that runs more than once produces the same mutation).

use chrono::{Duration, TimeZone, Utc};
use fleetcron_core::model::PendingRun;
use fleetcron_core::{
    Mutation, RunKind, RunLease, RunQuery, RunRecord, RunStatus, RunUpdate, Store, StoreError, TaskDefinition,
    TaskState, Timestamp,
};

/// 2030-01-01T00:00:00Z.
pub fn epoch() -> Timestamp {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).single().expect("valid date")
}

/// `n` milliseconds.
pub fn ms(n: i64) -> Duration {
    Duration::milliseconds(n)
}

/// A definition of task `id`: every minute, UTC.
pub fn definition(id: &str) -> TaskDefinition {
    TaskDefinition {
        id: id.to_owned(),
        schedule: "* * * * *".to_owned(),
        timezone: "UTC".to_owned(),
        description: format!("task {id}"),
    }
}

/// A new task's state, registered at `now`.
pub fn new_state(id: &str, now: Timestamp) -> TaskState {
    TaskState::new(definition(id), now)
}

/// A state that wants attention at `at` (a pending run requested then).
pub fn state_wanting_attention(id: &str, now: Timestamp, at: Timestamp) -> TaskState {
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
pub fn state_with_lease(id: &str, now: Timestamp, until: Timestamp) -> TaskState {
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
pub fn run(task_id: &str, run_id: &str, slot_ms: Option<i64>, attempt: u32, status: RunStatus) -> RunRecord {
    RunRecord {
        run_id: run_id.to_owned(),
        task_id: task_id.to_owned(),
        kind: if slot_ms.is_some() {
            RunKind::Scheduled
        } else {
            RunKind::Manual
        },
        slot: slot_ms.map(|offset| epoch() + ms(offset)),
        slot_until: None,
        slot_count: None,
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
pub fn finished_run(task_id: &str, run_id: &str, finished: Timestamp) -> RunRecord {
    RunRecord {
        finished_at: Some(finished),
        ..run(task_id, run_id, None, 1, RunStatus::Succeeded)
    }
}

/// An update that ends run `run_id` with `status` at `at` (fence 1, worker `w1`).
pub fn finish(run_id: &str, status: RunStatus, at: Timestamp) -> RunUpdate {
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
pub async fn insert_runs<S: Store + ?Sized>(store: &S, task_id: &str, runs: Vec<RunRecord>) {
    try_insert_runs(store, task_id, runs).await.expect("insert runs");
}

/// Inserts `runs` for `task_id` (creating no state) in one mutation, returning the store's answer.
pub async fn try_insert_runs<S: Store + ?Sized>(
    store: &S,
    task_id: &str,
    runs: Vec<RunRecord>,
) -> Result<Timestamp, StoreError> {
    store
        .mutate(&[task_id.to_owned()], &mut |_, _, _| Mutation {
            insert_runs: runs.clone(),
            ..Mutation::none()
        })
        .await
}

/// Writes `state` for its task.
pub async fn put_state<S: Store + ?Sized>(store: &S, state: TaskState) {
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
pub async fn increment<S: Store + ?Sized>(store: &S, id: &str, worker: &str) -> Result<u64, StoreError> {
    increment_with(store, id, worker, || {}).await
}

/// [`increment`], calling `meanwhile` inside `decide` (between the store's read and its write).
pub async fn increment_with<S: Store + ?Sized>(
    store: &S,
    id: &str,
    worker: &str,
    mut meanwhile: impl FnMut() + Send,
) -> Result<u64, StoreError> {
    let mut fence = 0;
    store
        .mutate(&[id.to_owned()], &mut |now, task_id, stored| {
            meanwhile();
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
pub async fn final_fence<S: Store + ?Sized>(store: &S, id: &str) -> u64 {
    state_of(store, id).await.map_or(0, |state| state.fence)
}

/// The stored state of `id`, if any.
pub async fn state_of<S: Store + ?Sized>(store: &S, id: &str) -> Option<TaskState> {
    let (_, states) = store.load(Some(&[id.to_owned()])).await.expect("load");
    states.into_iter().next()
}

/// The ids of a task's history rows, newest first.
pub async fn run_ids<S: Store + ?Sized>(store: &S, task: &str) -> Vec<String> {
    all_runs(store, task).await.into_iter().map(|run| run.run_id).collect()
}

/// A task's whole history, newest first.
pub async fn all_runs<S: Store + ?Sized>(store: &S, task: &str) -> Vec<RunRecord> {
    let query = RunQuery {
        limit: 100_000,
        before: None,
    };
    store.runs(task, &query).await.expect("runs")
}

/// Whether `at` is a whole millisecond.
pub fn whole_ms(at: Timestamp) -> bool {
    at.timestamp_subsec_nanos() % 1_000_000 == 0
}

/// [`increment`] as the engine transacts: `Unavailable` is retried after 50 ms, for up to `limit`.
/// Returns the new fence and how many attempts failed first.
pub async fn increment_retrying<S: Store + ?Sized>(
    store: &S,
    id: &str,
    limit: std::time::Duration,
) -> Result<(u64, usize), StoreError> {
    let started = std::time::Instant::now();
    let mut failures = 0;
    loop {
        match increment(store, id, "w").await {
            Ok(fence) => return Ok((fence, failures)),
            Err(StoreError::Unavailable(message)) if started.elapsed() < limit => {
                failures += 1;
                eprintln!("retrying after: {message}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Asserts one history row per fence value 1..=total: none lost, none doubled.
pub async fn assert_one_run_per_fence<S: Store + ?Sized>(store: &S, id: &str, total: u64) {
    let runs = all_runs(store, id).await;
    let mut fences: Vec<u64> = runs.iter().map(|run| run.fence).collect();
    fences.sort_unstable();
    assert_eq!(fences, (1..=total).collect::<Vec<_>>(), "task {id}");
}

/// Prunes `store` under `retention` as the engine does: the plan decided at the store's own time.
pub async fn prune<S: Store + ?Sized>(
    store: &S,
    retention: &fleetcron_core::Retention,
) -> Result<u64, fleetcron_core::StoreError> {
    let now = store.now().await?;
    store
        .prune_runs(&fleetcron_core::decide::prune_plan(retention, now))
        .await
}

/// Asserts that `result` is a `Config` error whose message says `expected` and never shows `secret`.
pub fn assert_config_error<T: std::fmt::Debug>(result: Result<T, StoreError>, expected: &str, secret: &str) {
    match result {
        Err(StoreError::Config(message)) => {
            assert!(message.contains(expected), "{message}: does not say {expected}");
            assert!(!message.contains(secret), "{message}: shows the secret");
        }
        other => panic!("expected a Config error saying {expected}, got {other:?}"),
    }
}

/// Asserts that `result` is an error, and that neither its message nor its debug form shows `secret`.
pub fn assert_refused_without<T>(result: Result<T, StoreError>, secret: &str, what: &str) {
    match result {
        Err(error) => {
            let text = format!("{error} {error:?}");
            assert!(!text.contains(secret), "{what}: {text}");
        }
        Ok(_) => panic!("{what}: accepted"),
    }
}

/// A port of this machine that nothing listens on (bound, then let go).
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

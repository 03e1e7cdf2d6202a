//! Fixtures the store crates' own tests share: fixed instants, task states, history rows and small
//! mutations built on [`Store::mutate`]. Every helper is safe on optimistic stores (a `decide` that runs
//! more than once produces the same mutation).

#![allow(missing_docs)]

use chrono::{Duration, TimeZone, Utc};
use fleetcron_core::model::PendingRun;
use fleetcron_core::{
    Mutation, RunKind, RunLease, RunRecord, RunStatus, RunUpdate, Store, StoreError, TaskDefinition, TaskState,
    Timestamp,
};

/// 2030-01-01T00:00:00Z.
pub fn epoch() -> Timestamp {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).single().expect("valid date")
}

pub fn ms(n: i64) -> Duration {
    Duration::milliseconds(n)
}

pub fn definition(id: &str) -> TaskDefinition {
    TaskDefinition {
        id: id.to_owned(),
        schedule: "* * * * *".to_owned(),
        timezone: "UTC".to_owned(),
        description: format!("task {id}"),
    }
}

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
pub async fn final_fence<S: Store + ?Sized>(store: &S, id: &str) -> u64 {
    let (_, states) = store.load(Some(&[id.to_owned()])).await.expect("load");
    states.first().map_or(0, |state| state.fence)
}

/// Asserts one history row per fence value 1..=total: none lost, none doubled.
pub async fn assert_one_run_per_fence<S: Store + ?Sized>(store: &S, id: &str, total: u64) {
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

/// Prunes `store` under `retention` as the engine does: the plan decided at the store's own time.
pub async fn prune(
    store: &dyn fleetcron_core::Store,
    retention: &fleetcron_core::Retention,
) -> Result<u64, fleetcron_core::StoreError> {
    let now = store.now().await?;
    store
        .prune_runs(&fleetcron_core::decide::prune_plan(retention, now))
        .await
}

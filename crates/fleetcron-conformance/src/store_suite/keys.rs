//! The unique keys of the history, and batches that commit all or nothing.

use super::fixtures::*;
use super::{StoreHarness, StoreNamespace, Suite};
use fleetcron_core::{Mutation, RunRecord, RunStatus, Store, StoreError, TaskState};

/// The message of a `Duplicate`, or a panic naming what came instead.
fn duplicate<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) -> String {
    match result {
        Err(StoreError::Duplicate(message)) => message,
        other => panic!("{what}: expected Duplicate, got {other:?}"),
    }
}

/// `(task_id, slot, attempt)` is unique, and so is a run id in its task's history: a second row for a
/// slot and attempt (stored, or twice in one mutation) and a reused run id (stored, or twice in one
/// mutation) are refused with a message naming them, and nothing of a refused mutation lands. Another
/// attempt of the slot, another slot, any number of slot-less (manual) runs and the same slot of
/// another task are fine.
pub async fn the_unique_key_refuses_a_second_row_for_a_slot_and_attempt<H: StoreHarness>(suite: &Suite<'_, H>) {
    let fresh = suite.fresh(epoch()).await;
    let store = &*fresh.store;
    insert_runs(store, "t", vec![run("t", "r1", Some(0), 1, RunStatus::Running)]).await;

    let message = duplicate(
        try_insert_runs(store, "t", vec![run("t", "r2", Some(0), 1, RunStatus::Running)]).await,
        "the same slot and attempt under another run id",
    );
    for part in ["task t", "2030-01-01T00:00:00", "attempt 1"] {
        assert!(message.contains(part), "{message} does not name {part}");
    }
    if let Some(label) = fresh.ns.label() {
        assert!(message.contains(&label), "{message} does not name the store {label}");
    }
    let within = vec![
        run("t", "r3", Some(7), 1, RunStatus::Skipped),
        run("t", "r4", Some(7), 1, RunStatus::Skipped),
    ];
    let message = duplicate(
        try_insert_runs(store, "t", within).await,
        "one slot twice in one mutation",
    );
    assert!(message.contains("task t") && message.contains("attempt 1"), "{message}");
    let message = duplicate(
        try_insert_runs(store, "t", vec![run("t", "r1", Some(9), 1, RunStatus::Running)]).await,
        "a reused run id",
    );
    assert!(message.contains("run id r1"), "{message}");
    let twice = vec![
        run("t", "r9", Some(10), 1, RunStatus::Running),
        run("t", "r9", Some(11), 1, RunStatus::Running),
    ];
    let message = duplicate(
        try_insert_runs(store, "t", twice).await,
        "one run id twice in one mutation",
    );
    assert!(message.contains("run id r9"), "{message}");
    assert_eq!(run_ids(store, "t").await, ["r1"], "a refused mutation writes no row");

    insert_runs(
        store,
        "t",
        vec![
            run("t", "r5", Some(0), 2, RunStatus::Running),
            run("t", "r6", Some(1), 1, RunStatus::Running),
            run("t", "r7", None, 1, RunStatus::Running),
            run("t", "r8", None, 1, RunStatus::Running),
        ],
    )
    .await;
    insert_runs(store, "u", vec![run("u", "u1", Some(0), 1, RunStatus::Running)]).await;
    assert_eq!(run_ids(store, "t").await, ["r8", "r7", "r6", "r5", "r1"]);
}

/// What a case reads back to see that a refused batch left no trace.
async fn snapshot<S: fleetcron_core::Store + ?Sized>(store: &S, ids: &[&str]) -> (Vec<TaskState>, Vec<Vec<RunRecord>>) {
    let (_, states) = store.load(None).await.expect("load");
    let mut runs = Vec::new();
    for id in ids {
        runs.push(all_runs(store, id).await);
    }
    (states, runs)
}

/// A batch whose middle task hits the unique key writes nothing for any of its tasks: not the first
/// task's new state or row, not the last one's new fence, no finish; and the store works on.
pub async fn a_duplicate_in_the_middle_of_a_batch_leaves_nothing_written<H: StoreHarness>(suite: &Suite<'_, H>) {
    let fresh = suite.fresh(epoch()).await;
    let store = &*fresh.store;
    insert_runs(store, "b", vec![run("b", "b-1", Some(1_000), 1, RunStatus::Succeeded)]).await;
    put_state(store, new_state("c", epoch())).await;
    let before = snapshot(store, &["a", "b", "c"]).await;

    let ids: Vec<String> = ["a", "b", "c"].map(str::to_owned).to_vec();
    let result = store
        .mutate(&ids, &mut |now, id, _| {
            let mut state = new_state(id, now);
            state.fence = 7;
            Mutation {
                state: Some(state),
                insert_runs: vec![run(id, &format!("{id}-2"), Some(1_000), 1, RunStatus::Running)],
                update_runs: vec![finish(&format!("{id}-1"), RunStatus::Failed, now)],
            }
        })
        .await;
    let message = duplicate(result, "b's second row for its slot");
    for part in ["task b", "attempt 1", "2030-01-01T00:00:01"] {
        assert!(message.contains(part), "{message} does not name {part}");
    }
    if let Some(label) = fresh.ns.label() {
        assert!(message.contains(&label), "{message} does not name the store {label}");
    }
    assert_eq!(
        snapshot(store, &["a", "b", "c"]).await,
        before,
        "nothing of the batch landed"
    );
    // The store still works, on the same connections.
    for _ in 0..6 {
        increment(store, "c", "w").await.expect("later mutations commit");
    }
    assert_eq!(final_fence(store, "c").await, 6);
}

/// The invariant the engine's claim batches stand on: a batch refused by its LAST task (a second row
/// for a slot) leaves nothing of the batch written — no task before it got its new state (a lease
/// nobody would run), its inserted rows or its updated rows. The same batch without the duplicate then
/// commits whole.
pub async fn a_batch_refused_by_its_last_task_leaves_nothing_written<H: StoreHarness>(suite: &Suite<'_, H>) {
    let fresh = suite.fresh(epoch()).await;
    let store = &*fresh.store;
    let names = ["x", "y", "z"];
    let mut x = new_state("x", epoch());
    x.fence = 3;
    put_state(store, x).await;
    insert_runs(store, "x", vec![run("x", "x-1", Some(0), 1, RunStatus::Running)]).await;
    put_state(store, new_state("z", epoch())).await;
    insert_runs(store, "z", vec![run("z", "z-1", Some(5_000), 1, RunStatus::Succeeded)]).await;
    let before = snapshot(store, &names).await;

    let claim = |z_slot_ms: i64| {
        move |now: fleetcron_core::Timestamp, id: &str, stored: Option<&TaskState>| {
            let mut state = stored.cloned().unwrap_or_else(|| new_state(id, now));
            state.fence += 1;
            let (slot_ms, update) = match id {
                "x" => (1_000, vec![finish("x-1", RunStatus::Failed, now)]),
                "y" => (1_000, Vec::new()),
                _ => (z_slot_ms, Vec::new()),
            };
            if id == "x" {
                state.running = state_with_lease(id, now, now + chrono::Duration::seconds(30)).running;
            }
            let mut record = run(id, &format!("{id}-2"), Some(slot_ms), 1, RunStatus::Running);
            record.fence = state.fence;
            Mutation {
                state: Some(state),
                insert_runs: vec![record],
                update_runs: update,
            }
        }
    };
    let ids: Vec<String> = names.map(str::to_owned).to_vec();
    let message = duplicate(
        store.mutate(&ids, &mut claim(5_000)).await,
        "z's second row for its slot",
    );
    eprintln!("{}: refused with: {message}", suite.case);
    let after = snapshot(store, &names).await;
    assert_eq!(after.0, before.0, "no state of the batch changed");
    assert_eq!(after.1, before.1, "no row of the batch was inserted or updated");

    store
        .mutate(&ids, &mut claim(6_000))
        .await
        .expect("the batch without the duplicate");
    let (states, runs) = snapshot(store, &names).await;
    let fences: Vec<u64> = states.iter().map(|state| state.fence).collect();
    assert_eq!(fences, [4, 1, 1]);
    assert_eq!(states[0].running.len(), 1, "x holds its lease");
    assert_eq!(
        runs[0].iter().map(|run| run.status).collect::<Vec<_>>(),
        [RunStatus::Running, RunStatus::Failed]
    );
    assert_eq!(runs.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1, 2]);
}

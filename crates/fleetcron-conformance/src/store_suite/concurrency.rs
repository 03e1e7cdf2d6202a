//! Several stores on one namespace, as several worker processes have them: mutations of one task
//! serialise, a new task is created once, batches never deadlock and a slot is claimed once.

use super::fixtures::*;
use super::{migrated, StoreHarness, StoreNamespace, Suite};
use fleetcron_core::{Mutation, RunStatus, Store, StoreError, TaskState, Timestamp};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// [`increment`], retrying `Unavailable` (a lock wait past its timeout, optimistic commits that kept
/// meeting newer versions) as the engine would, at most 20 times.
async fn increment_patiently<S: Store + ?Sized>(store: &S, id: &str, worker: &str) -> Result<u64, StoreError> {
    let mut transient = 0;
    loop {
        match increment(store, id, worker).await {
            Err(StoreError::Unavailable(reason)) if transient < 20 => {
                transient += 1;
                eprintln!("retrying after: {reason}");
            }
            other => return other,
        }
    }
}

/// 8 tasks on two stores increment one task's fence 25 times each: every increment commits exactly
/// once, and the unique key never fires (it would if two increments read the same fence).
async fn two_stores_serialise_200_increments<H: StoreHarness>(suite: &Suite<'_, H>, existing: bool) {
    let fresh = suite.fresh(epoch()).await;
    let first = fresh.store.clone();
    let second = fresh.ns.open().await;
    if existing {
        put_state(&*first, new_state("counter", epoch())).await;
    }
    let mut handles = Vec::new();
    for task in 0..8 {
        let store = Arc::clone(if task % 2 == 0 { &first } else { &second });
        handles.push(tokio::spawn(async move {
            let worker = format!("task-{task}");
            for _ in 0..25 {
                increment_patiently(&*store, "counter", &worker).await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for handle in handles {
        handle.await.expect("join").expect("every increment commits");
    }
    assert_eq!(final_fence(&*first, "counter").await, 200);
    assert_eq!(final_fence(&*second, "counter").await, 200);
    assert_one_run_per_fence(&*first, "counter", 200).await;
}

/// Two stores serialise 200 increments of a task that is stored already.
pub async fn two_stores_serialise_200_increments_of_an_existing_task<H: StoreHarness>(suite: &Suite<'_, H>) {
    two_stores_serialise_200_increments(suite, true).await;
}

/// Two stores serialise 200 increments of a task that does not exist yet (the first increment of
/// each store races to create it).
pub async fn two_stores_serialise_200_increments_of_a_new_task<H: StoreHarness>(suite: &Suite<'_, H>) {
    two_stores_serialise_200_increments(suite, false).await;
}

/// Eight workers on four stores register one new task at the same moment, five times: exactly one
/// creates it (with its row), and each of the other seven sees the stored task (its fence + 1 lands).
pub async fn racing_registrations_create_a_new_task_once<H: StoreHarness>(suite: &Suite<'_, H>) {
    let fresh = suite.fresh(epoch()).await;
    let mut stores = vec![fresh.store.clone()];
    for _ in 1..4 {
        stores.push(fresh.ns.open().await);
    }
    for round in 0..5 {
        let id = format!("new-{round}");
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|worker| {
                let (store, barrier, id) = (stores[worker % 4].clone(), barrier.clone(), id.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let mut created = false;
                    store
                        .mutate(std::slice::from_ref(&id), &mut |now, id, stored| {
                            created = stored.is_none();
                            let Some(stored) = stored else {
                                let mut state = new_state(id, now);
                                state.definition.description = format!("worker {worker}");
                                let registered = run(id, &format!("{id}-registered"), Some(0), 1, RunStatus::Skipped);
                                return Mutation {
                                    state: Some(state),
                                    insert_runs: vec![registered],
                                    update_runs: Vec::new(),
                                };
                            };
                            let mut state = stored.clone();
                            state.fence += 1;
                            Mutation {
                                state: Some(state),
                                ..Mutation::none()
                            }
                        })
                        .await
                        .map(|_| created.then_some(worker))
                })
            })
            .collect();
        let mut creators = Vec::new();
        for handle in handles {
            creators.extend(handle.await.expect("join").expect("registration commits"));
        }
        assert_eq!(
            creators.len(),
            1,
            "{id}: exactly one worker creates the task: {creators:?}"
        );
        let state = state_of(&*stores[3], &id).await.expect("registered");
        assert_eq!(state.definition.description, format!("worker {}", creators[0]));
        assert_eq!(state.fence, 7, "{id}: the seven others each saw the stored task");
        assert_eq!(all_runs(&*stores[1], &id).await.len(), 1);
    }
}

/// Claims `slot_ms` for every id whose mark is before it: fence + 1, a `running` row for the slot.
/// Returns how many claims this call committed.
async fn claim_all<S: Store + ?Sized>(
    store: &S,
    ids: &[String],
    slot_ms: i64,
    worker: &str,
) -> Result<usize, StoreError> {
    let slot = epoch() + ms(slot_ms);
    let mut claimed: HashMap<String, bool> = HashMap::new();
    store
        .mutate(ids, &mut |now: Timestamp, id: &str, stored: Option<&TaskState>| {
            let mut state = stored.cloned().unwrap_or_else(|| new_state(id, now));
            let wins = stored.is_none() || state.high_water < slot;
            claimed.insert(id.to_owned(), wins);
            if !wins {
                return Mutation::none();
            }
            state.high_water = slot;
            state.fence += 1;
            let mut record = run(
                id,
                &format!("{id}-{slot_ms}-{worker}"),
                Some(slot_ms),
                1,
                RunStatus::Running,
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
    Ok(claimed.values().filter(|won| **won).count())
}

/// Three stores claim the same four slots of 500 tasks, each slot of every task in one batch per
/// store: every slot is claimed exactly once in all, no batch fails, each task ends with its four rows.
pub async fn stores_racing_for_the_same_slots_claim_each_once<H: StoreHarness>(suite: &Suite<'_, H>) {
    let fresh = suite.fresh(epoch()).await;
    let ids: Arc<Vec<String>> = Arc::new((0..500).map(|n| format!("race-{n:03}")).collect());
    let total = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for worker in 0..3 {
        let store = migrated(&fresh.ns).await;
        let (ids, total) = (ids.clone(), total.clone());
        handles.push(tokio::spawn(async move {
            for slot in 1..=4 {
                let won = claim_all(&*store, &ids, slot, &format!("w{worker}")).await?;
                total.fetch_add(won, Ordering::SeqCst);
            }
            Ok::<_, StoreError>(())
        }));
    }
    for handle in handles {
        handle.await.expect("join").expect("claims commit");
    }
    assert_eq!(total.load(Ordering::SeqCst), 500 * 4);
    for id in ids.iter().step_by(50) {
        let mut slots: Vec<_> = all_runs(&*fresh.store, id).await.iter().map(|run| run.slot).collect();
        slots.sort();
        assert_eq!(slots, (1..=4).map(|n| Some(epoch() + ms(n))).collect::<Vec<_>>());
        assert_eq!(final_fence(&*fresh.store, id).await, 4);
    }
}

/// Two stores mutate the same 40 tasks in opposite orders, 30 times: no deadlock, no failure, and
/// every increment lands.
pub async fn batches_in_opposite_orders_never_deadlock<H: StoreHarness>(suite: &Suite<'_, H>) {
    let fresh = suite.fresh(epoch()).await;
    let second = fresh.ns.open().await;
    let ids: Vec<String> = (0..40).map(|n| format!("t{n:02}")).collect();
    let mut reversed = ids.clone();
    reversed.reverse();
    let rounds = 30;
    let mut handles = Vec::new();
    for (store, order) in [(fresh.store.clone(), ids.clone()), (second, reversed)] {
        handles.push(tokio::spawn(async move {
            for _ in 0..rounds {
                store
                    .mutate(&order, &mut |now, id, stored| {
                        let mut state = stored.cloned().unwrap_or_else(|| new_state(id, now));
                        state.fence += 1;
                        Mutation {
                            state: Some(state),
                            ..Mutation::none()
                        }
                    })
                    .await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for handle in handles {
        handle.await.expect("join").expect("no deadlock, no failure");
    }
    let (_, states) = fresh.store.load(None).await.expect("load");
    assert_eq!(states.len(), ids.len());
    assert!(
        states.iter().all(|state| state.fence == 2 * rounds),
        "every increment landed"
    );
}

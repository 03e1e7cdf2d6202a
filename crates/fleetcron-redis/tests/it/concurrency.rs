//! Several stores (workers) on one prefix: lost updates, registration races, batch claims.

use crate::*;
use fleetcron_core::{RunQuery, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Every increment's run row: one per fence value, none lost, none doubled.
async fn assert_one_run_per_fence(store: &RedisStore, id: &str, total: u64) {
    let runs = store
        .runs(
            id,
            &RunQuery {
                limit: 10_000,
                before: None,
            },
        )
        .await
        .expect("runs");
    let mut fences: Vec<u64> = runs.iter().map(|run| run.fence).collect();
    fences.sort_unstable();
    assert_eq!(fences, (1..=total).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_serialise_200_increments_of_a_task_that_did_not_exist() {
    let Some(ns) = Namespace::new("two_stores_serialise_200_increments_of_a_task_that_did_not_exist").await else {
        return;
    };
    let first: Shared = Arc::new(ns.store().await);
    let second: Shared = Arc::new(ns.store().await);

    let mut handles = Vec::new();
    for task in 0..8 {
        let store = Arc::clone(if task % 2 == 0 { &first } else { &second });
        handles.push(tokio::spawn(async move {
            let worker = format!("task-{task}");
            for _ in 0..25 {
                increment(store.as_ref(), "counter", &worker).await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for handle in handles {
        handle.await.expect("join").expect("every increment commits");
    }
    assert_eq!(state_of(first.as_ref(), "counter").await.map(|s| s.fence), Some(200));
    assert_eq!(state_of(second.as_ref(), "counter").await.map(|s| s.fence), Some(200));
    assert_one_run_per_fence(&first, "counter", 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_registration_of_a_new_task_wins() {
    let Some(ns) = Namespace::new("exactly_one_registration_of_a_new_task_wins").await else {
        return;
    };
    for round in 0..5 {
        let id = format!("fresh-{round}");
        let mut handles = Vec::new();
        for worker in 0..6 {
            let store = ns.store().await;
            let id = id.clone();
            handles.push(tokio::spawn(async move {
                // Registration: create the task when it is missing, else leave it alone.
                let mut created = false;
                store
                    .mutate(std::slice::from_ref(&id), &mut |now, task_id, stored| {
                        created = stored.is_none();
                        match stored {
                            Some(_) => Mutation::none(),
                            None => {
                                let mut state = new_state(task_id, now);
                                state.definition.description = format!("worker-{worker}");
                                Mutation {
                                    state: Some(state),
                                    ..Mutation::none()
                                }
                            }
                        }
                    })
                    .await
                    .expect("register");
                created.then(|| format!("worker-{worker}"))
            }));
        }
        let mut winners = Vec::new();
        for handle in handles {
            if let Some(winner) = handle.await.expect("join") {
                winners.push(winner);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let store = ns.store().await;
        let stored = state_of(&store, &id).await.expect("registered");
        assert_eq!(stored.definition.description, winners[0]);
    }
}

/// Claims `slot_ms` for every id that has not claimed it yet: the state's fence grows and a run row
/// with the slot is inserted. Returns how many claims this call committed.
async fn claim_all(store: &RedisStore, ids: &[String], slot_ms: i64, worker: &str) -> Result<usize, StoreError> {
    let slot = epoch() + ms(slot_ms);
    let mut claimed: HashMap<String, bool> = HashMap::new();
    store
        .mutate(ids, &mut |now, id, stored| {
            let mut state = stored.cloned().unwrap_or_else(|| new_state(id, now));
            if state.high_water >= slot && stored.is_some() {
                claimed.insert(id.to_owned(), false);
                return Mutation::none();
            }
            state.high_water = slot;
            state.fence += 1;
            let mut record = run(
                id,
                &uuid::Uuid::now_v7().to_string(),
                Some(slot_ms),
                1,
                RunStatus::Running,
            );
            record.fence = state.fence;
            record.worker = Some(worker.to_owned());
            claimed.insert(id.to_owned(), true);
            Mutation {
                state: Some(state),
                insert_runs: vec![record],
                update_runs: Vec::new(),
            }
        })
        .await?;
    Ok(claimed.values().filter(|claimed| **claimed).count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_1000_new_tasks_claims_in_one_mutation() {
    let Some(ns) = Namespace::new("a_batch_of_1000_new_tasks_claims_in_one_mutation").await else {
        return;
    };
    // The slot lies in the store's past (1 ms after the epoch; the store's clock reads a minute later).
    let store = ns
        .store_with(
            ns.options()
                .with_clock_offset(epoch() + Duration::minutes(1) - Utc::now()),
        )
        .await;
    let ids: Vec<String> = (0..1000).map(|n| format!("bulk-{n:04}")).collect();

    let started = Instant::now();
    assert_eq!(claim_all(&store, &ids, 1, "w").await.expect("register and claim"), 1000);
    let create = started.elapsed();

    let mut steady = Vec::new();
    for slot in 2..=6 {
        let started = Instant::now();
        assert_eq!(claim_all(&store, &ids, slot, "w").await.expect("claim"), 1000);
        steady.push(started.elapsed());
    }
    steady.sort();
    let median = steady[steady.len() / 2];
    println!(
        "redis batch claim, 1,000 tasks in one mutation: create+claim {:.1} ms ({:.0} slots/s); \
         steady-state claim median {:.1} ms ({:.0} slots/s)",
        create.as_secs_f64() * 1e3,
        1000.0 / create.as_secs_f64(),
        median.as_secs_f64() * 1e3,
        1000.0 / median.as_secs_f64()
    );

    let (_, states) = store.load(None).await.expect("load");
    assert_eq!(states.len(), 1000);
    assert!(states.iter().all(|state| state.fence == 6));
    let runs = store.runs("bulk-0999", &RunQuery::default()).await.expect("runs");
    assert_eq!(runs.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_stores_racing_for_500_slots_claim_each_exactly_once() {
    let Some(ns) = Namespace::new("three_stores_racing_for_500_slots_claim_each_exactly_once").await else {
        return;
    };
    let ids: Arc<Vec<String>> = Arc::new((0..500).map(|n| format!("race-{n:03}")).collect());
    let total = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for worker in 0..3 {
        let store = ns.store().await;
        let (ids, total) = (ids.clone(), total.clone());
        handles.push(tokio::spawn(async move {
            for slot in 1..=4 {
                // Every worker claims every task's slot in one batch; exactly one wins each.
                let won = claim_all(&store, &ids, slot, &format!("w{worker}")).await?;
                total.fetch_add(won, Ordering::SeqCst);
            }
            Ok::<_, StoreError>(())
        }));
    }
    for handle in handles {
        handle.await.expect("join").expect("claims commit");
    }
    assert_eq!(total.load(Ordering::SeqCst), 500 * 4);
    let store = ns.store().await;
    for id in ids.iter().step_by(50) {
        let runs = store.runs(id, &RunQuery::default()).await.expect("runs");
        let mut slots: Vec<_> = runs.iter().map(|run| run.slot).collect();
        slots.sort();
        assert_eq!(slots, (1..=4).map(|n| Some(epoch() + ms(n))).collect::<Vec<_>>());
        assert_eq!(state_of(&store, id).await.map(|s| s.fence), Some(4));
    }
}

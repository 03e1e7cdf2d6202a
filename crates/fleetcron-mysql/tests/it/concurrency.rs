//! Several stores (workers) on one database: serialised increments, registration races, lock waits,
//! and batch throughput.

use crate::*;
use fleetcron_core::{RunQuery, StoreError};
use std::sync::Arc;
use std::time::Instant;

/// 8 tasks on two stores, 25 increments each, on one task id: the final fence is exactly 200 and there
/// is one history row per fence.
async fn two_stores_serialise_200_increments(test: &str, create_first: bool) {
    let Some(db) = TestDb::create(test).await else {
        return;
    };
    let first = Arc::new(store(&db).await);
    let second = Arc::new(
        MysqlStore::connect_with(&db.url, options())
            .await
            .expect("second store"),
    );
    if create_first {
        put_state(first.as_ref(), new_state("counter", epoch())).await;
    }
    let mut handles = Vec::new();
    for task in 0..8 {
        let store = Arc::clone(if task % 2 == 0 { &first } else { &second });
        handles.push(tokio::spawn(async move {
            let worker = format!("task-{task}");
            let mut done = 0;
            let mut transient = 0;
            while done < 25 {
                match increment(store.as_ref(), "counter", &worker).await {
                    Ok(_) => done += 1,
                    // A lock wait past the timeout is a retry, as in the engine; anything else fails.
                    Err(StoreError::Unavailable(reason)) if transient < 20 => {
                        transient += 1;
                        eprintln!("retrying after: {reason}");
                    }
                    Err(error) => return Err(error),
                }
            }
            Ok::<_, StoreError>(())
        }));
    }
    for handle in handles {
        handle.await.expect("join").expect("every increment commits");
    }
    assert_eq!(final_fence(first.as_ref(), "counter").await, 200);
    assert_eq!(final_fence(second.as_ref(), "counter").await, 200);
    assert_one_run_per_fence(first.as_ref(), "counter", 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_serialise_200_increments_of_an_existing_task() {
    two_stores_serialise_200_increments("two_stores_serialise_200_increments_of_an_existing_task", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_serialise_200_increments_registering_the_task() {
    two_stores_serialise_200_increments("two_stores_serialise_200_increments_registering_the_task", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_workers_registering_one_new_task_serialise() {
    let Some(db) = TestDb::create("eight_workers_registering_one_new_task_serialise").await else {
        return;
    };
    let first = store(&db).await;
    let stores: Vec<Arc<MysqlStore>> = {
        let mut stores = vec![Arc::new(first)];
        for _ in 1..8 {
            stores.push(Arc::new(
                MysqlStore::connect_with(&db.url, options().with_max_connections(2))
                    .await
                    .expect("connect"),
            ));
        }
        stores
    };
    for round in 0..5 {
        let id = format!("new-task-{round}");
        let barrier = Arc::new(tokio::sync::Barrier::new(stores.len()));
        let handles: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(worker, store)| {
                let store = Arc::clone(store);
                let barrier = Arc::clone(&barrier);
                let id = id.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    // Register: the first creates the task; every later one must see it and only record
                    // itself as a conflicting registration.
                    let mut created = false;
                    store
                        .mutate(std::slice::from_ref(&id), &mut |now, task_id, stored| {
                            let state = match stored {
                                None => {
                                    created = true;
                                    let mut state = new_state(task_id, now);
                                    state.definition.description = format!("worker {worker}");
                                    state
                                }
                                Some(stored) => {
                                    created = false;
                                    let mut state = stored.clone();
                                    state.fence += 1;
                                    state
                                }
                            };
                            Mutation {
                                state: Some(state),
                                ..Mutation::none()
                            }
                        })
                        .await
                        .map(|_| created)
                })
            })
            .collect();
        let mut creators = 0;
        for handle in handles {
            if handle.await.expect("join").expect("registration commits") {
                creators += 1;
            }
        }
        assert_eq!(creators, 1, "round {round}: exactly one worker created the task");
        let (_, states) = stores[0].load(Some(std::slice::from_ref(&id))).await.expect("load");
        assert_eq!(states.len(), 1);
        assert_eq!(
            states[0].fence, 7,
            "round {round}: the seven others each saw the stored task"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_1000_new_tasks_and_1000_claims() {
    let Some(db) = TestDb::create("a_batch_of_1000_new_tasks_and_1000_claims").await else {
        return;
    };
    let store = store(&db).await;
    let ids: Vec<String> = (0..1000).map(|n| format!("batch-task-{n:04}")).collect();

    // Registration: 1,000 tasks that do not exist yet, one mutation.
    let started = Instant::now();
    store
        .mutate(&ids, &mut |now, id, stored| {
            assert!(stored.is_none());
            Mutation {
                state: Some(new_state(id, now)),
                ..Mutation::none()
            }
        })
        .await
        .expect("register 1000 tasks");
    let registered = started.elapsed();

    // A claim of one slot for each (the previous run ended): 1,000 locked rows updated and 1,000 history
    // rows, one mutation.
    let slot_claim = |slot_ms: i64| {
        move |now: Timestamp, id: &str, stored: Option<&TaskState>| {
            let mut state = stored.cloned().expect("registered");
            state.fence += 1;
            let mut record = run(id, &format!("{id}-{slot_ms}"), Some(slot_ms), 1, RunStatus::Running);
            record.fence = state.fence;
            record.claimed_at = Some(now);
            state.running = vec![RunLease {
                run_id: record.run_id.clone(),
                fence: state.fence,
                worker: "w1".to_owned(),
                kind: RunKind::Scheduled,
                slot: record.slot,
                attempt: 1,
                trigger_id: None,
                started_at: now,
                lease_until: now + Duration::seconds(30),
            }];
            Mutation {
                state: Some(state),
                insert_runs: vec![record],
                update_runs: Vec::new(),
            }
        }
    };
    let rounds = 5;
    let mut claims = Vec::new();
    for round in 1..=rounds {
        let started = Instant::now();
        store
            .mutate(&ids, &mut slot_claim(60_000 * round))
            .await
            .expect("claim 1000 slots");
        claims.push(started.elapsed());
    }
    let per_second = |elapsed: std::time::Duration| 1000.0 / elapsed.as_secs_f64();
    let first = claims[0];
    claims.sort();
    let median = claims[claims.len() / 2];
    println!(
        "1,000-task batch: register {registered:?} ({:.0} tasks/s); claim, first {first:?} ({:.0} slots/s), \
         median of {rounds} {median:?} ({:.0} slots/s), best {:?} ({:.0} slots/s)",
        per_second(registered),
        per_second(first),
        per_second(median),
        claims[0],
        per_second(claims[0]),
    );

    let (_, states) = store.load(None).await.expect("load");
    assert_eq!(states.len(), 1000);
    let fence = u64::try_from(rounds).expect("small");
    assert!(states
        .iter()
        .all(|state| state.fence == fence && state.running.len() == 1));
    let runs = store.runs("batch-task-0999", &RunQuery::default()).await.expect("runs");
    assert_eq!(runs.len(), 5);
    // A repeated claim of a slot is refused as a whole.
    let result = store.mutate(&ids, &mut slot_claim(60_000)).await;
    assert!(matches!(result, Err(StoreError::Duplicate(_))), "{result:?}");
    let (_, states) = store.load(None).await.expect("load");
    assert!(states.iter().all(|state| state.fence == fence));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_lock_held_past_the_lock_timeout_is_unavailable() {
    let Some(db) = TestDb::create("a_row_lock_held_past_the_lock_timeout_is_unavailable").await else {
        return;
    };
    let store = store_with(&db, options().with_lock_timeout(std::time::Duration::from_secs(1))).await;
    put_state(&store, new_state("t", epoch())).await;

    let mut conn = db.raw().await;
    sqlx::query("BEGIN").execute(&mut conn).await.expect("begin");
    sqlx::query("SELECT id FROM fleetcron_tasks WHERE id = 't' FOR UPDATE")
        .fetch_all(&mut conn)
        .await
        .expect("lock the row");
    let started = Instant::now();
    let error = increment(&store, "t", "w").await.expect_err("locked out");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(error.is_transient());
    assert!(error.to_string().contains(&db.name), "{error}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    // Other tasks, reads and the idle poll are not blocked by the lock.
    assert_eq!(increment(&store, "other", "w").await.expect("another task"), 1);
    store.load(None).await.expect("read during a write");
    store.due_for_attention(10).await.expect("poll during a write");
    sqlx::query("ROLLBACK").execute(&mut conn).await.expect("unlock");

    assert_eq!(increment(&store, "t", "w").await.expect("lock released"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_waits_for_the_lock_within_the_lock_timeout() {
    let Some(db) = TestDb::create("a_writer_waits_for_the_lock_within_the_lock_timeout").await else {
        return;
    };
    let store = store(&db).await;
    put_state(&store, new_state("t", epoch())).await;
    let mut conn = db.raw().await;
    sqlx::query("BEGIN").execute(&mut conn).await.expect("begin");
    sqlx::query("SELECT id FROM fleetcron_tasks WHERE id = 't' FOR UPDATE")
        .fetch_all(&mut conn)
        .await
        .expect("lock the row");
    let releaser = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        sqlx::query("UPDATE fleetcron_tasks SET state = JSON_SET(state, '$.fence', 41) WHERE id = 't'")
            .execute(&mut conn)
            .await
            .expect("write");
        sqlx::query("COMMIT").execute(&mut conn).await.expect("unlock");
    });
    let started = Instant::now();
    let mut seen_fence = None;
    let at = store
        .mutate(&["t".to_owned()], &mut |_, _, stored| {
            seen_fence = stored.map(|state| state.fence);
            Mutation::none()
        })
        .await
        .expect("waits, then reads");
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
    // The decision saw the other transaction's committed write, and its clock was read after the wait.
    assert_eq!(seen_fence, Some(41));
    let after = store.now().await.expect("now");
    assert!(after - at < Duration::milliseconds(200), "decided at {at}, now {after}");
    releaser.await.expect("join");
}

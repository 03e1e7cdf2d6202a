//! Several stores (as separate worker processes would have) on one schema: serialised increments, the
//! registration race, batches in opposite orders, lock waits, and the throughput of a batched claim.

use crate::*;
use fleetcron_core::StoreError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration as StdDuration;

/// 8 tasks on two stores increment one task's fence 25 times each: every increment commits exactly
/// once, and the unique key never fires (it would if two increments read the same fence).
async fn two_stores_serialise_200_increments(schema: &TestSchema, id: &str) {
    let first = shared(schema.store().await);
    let second = shared(schema.connect().await);
    let mut handles = Vec::new();
    for task in 0..8 {
        let store = Arc::clone(if task % 2 == 0 { &first } else { &second });
        let id = id.to_owned();
        handles.push(tokio::spawn(async move {
            let worker = format!("task-{task}");
            for _ in 0..25 {
                increment(store.as_ref(), &id, &worker).await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for handle in handles {
        handle.await.expect("join").expect("every increment commits");
    }
    assert_eq!(final_fence(first.as_ref(), id).await, 200);
    assert_eq!(final_fence(second.as_ref(), id).await, 200);
    assert_one_run_per_fence(first.as_ref(), id, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_serialise_200_increments_of_an_existing_task() {
    require_server!("two_stores_serialise_200_increments_of_an_existing_task");
    let schema = TestSchema::new();
    let store = schema.store().await;
    put_state(&store, new_state("counter", epoch())).await;
    two_stores_serialise_200_increments(&schema, "counter").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_serialise_200_increments_of_a_task_that_does_not_exist_yet() {
    require_server!("two_stores_serialise_200_increments_of_a_task_that_does_not_exist_yet");
    let schema = TestSchema::new();
    two_stores_serialise_200_increments(&schema, "fresh").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_workers_registering_one_new_task_create_it_once() {
    require_server!("eight_workers_registering_one_new_task_create_it_once");
    let schema = TestSchema::new();
    let first = shared(schema.store().await);
    let second = shared(schema.connect().await);
    for round in 0..5 {
        let id = format!("new-{round}");
        let created = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for worker in 0..8 {
            let store = Arc::clone(if worker % 2 == 0 { &first } else { &second });
            let (id, created) = (id.clone(), created.clone());
            handles.push(tokio::spawn(async move {
                let mut created_here = false;
                store
                    .mutate(&[id], &mut |now, id, stored| {
                        // Registration: create when missing, otherwise leave alone.
                        created_here = stored.is_none();
                        if stored.is_some() {
                            return Mutation::none();
                        }
                        let mut state = new_state(id, now);
                        state.definition.description = format!("registered by worker {worker}");
                        Mutation {
                            state: Some(state),
                            insert_runs: vec![run(id, &format!("{id}-registered"), Some(0), 1, RunStatus::Skipped)],
                            update_runs: Vec::new(),
                        }
                    })
                    .await?;
                if created_here {
                    created.fetch_add(1, Ordering::SeqCst);
                }
                Ok::<_, StoreError>(())
            }));
        }
        for handle in handles {
            handle.await.expect("join").expect("no registration fails");
        }
        assert_eq!(
            created.load(Ordering::SeqCst),
            1,
            "{id}: exactly one worker creates the task"
        );
        let runs = first
            .runs(&id, &fleetcron_core::RunQuery::default())
            .await
            .expect("runs");
        assert_eq!(runs.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_in_opposite_orders_never_deadlock() {
    require_server!("batches_in_opposite_orders_never_deadlock");
    let schema = TestSchema::new();
    let first = shared(schema.store().await);
    let second = shared(schema.connect().await);
    let ids: Vec<String> = (0..40).map(|n| format!("t{n:02}")).collect();
    let mut reversed = ids.clone();
    reversed.reverse();
    let rounds = 30;
    let mut handles = Vec::new();
    for (store, order) in [(first.clone(), ids.clone()), (second.clone(), reversed)] {
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
    let (_, states) = first.load(None).await.expect("load");
    assert_eq!(states.len(), ids.len());
    assert!(
        states.iter().all(|state| state.fence == 2 * rounds),
        "every increment landed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_lock_held_past_the_statement_timeout_is_unavailable() {
    require_server!("a_task_lock_held_past_the_statement_timeout_is_unavailable");
    let schema = TestSchema::new();
    let options = schema.options().with_statement_timeout(StdDuration::from_millis(300));
    let store = schema.connect_with(options).await;
    store.migrate().await.expect("migrate");

    // Another session holds task t's lock (the documented key), e.g. a worker stuck mid-transaction.
    let mut holder = raw_connection().await;
    sqlx::query("BEGIN").execute(&mut holder).await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(fnv1a_32(format!("fleetcron:{}", schema.name).as_bytes()))
        .bind(fnv1a_32(b"t"))
        .execute(&mut holder)
        .await
        .expect("lock t");
    let started = std::time::Instant::now();
    let error = increment(&store, "t", "w").await.expect_err("locked out");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(error.is_transient());
    assert!(error.to_string().contains(&schema.name), "{error}");
    let waited = started.elapsed();
    assert!(waited >= StdDuration::from_millis(250), "{waited:?}");
    assert!(waited < StdDuration::from_secs(3), "{waited:?}");
    // Other tasks and reads are not blocked.
    increment(&store, "u", "w").await.expect("another task");
    store.load(None).await.expect("read while t is locked");
    store.due_for_attention(10).await.expect("poll while t is locked");
    sqlx::query("ROLLBACK").execute(&mut holder).await.expect("unlock");

    assert_eq!(increment(&store, "t", "w").await.expect("lock released"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_waits_for_the_lock_within_the_statement_timeout() {
    require_server!("a_writer_waits_for_the_lock_within_the_statement_timeout");
    let schema = TestSchema::new();
    let store = schema.store().await;
    let mut holder = raw_connection().await;
    sqlx::query("BEGIN").execute(&mut holder).await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(fnv1a_32(format!("fleetcron:{}", schema.name).as_bytes()))
        .bind(fnv1a_32(b"t"))
        .execute(&mut holder)
        .await
        .expect("lock t");
    let releaser = tokio::spawn(async move {
        tokio::time::sleep(StdDuration::from_millis(300)).await;
        sqlx::query("COMMIT").execute(&mut holder).await.expect("unlock");
    });
    assert_eq!(increment(&store, "t", "w").await.expect("waits, then commits"), 1);
    releaser.await.expect("join");
}

/// The engine's batched claim, as a store sees it: 1,000 tasks due at one instant, each getting a new
/// state (fence + 1, a lease) and a `running` history row, in one mutation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_1000_new_tasks_and_1000_claims_in_one_mutation() {
    require_server!("a_batch_of_1000_new_tasks_and_1000_claims_in_one_mutation");
    let schema = TestSchema::new();
    let store = schema.store().await;
    let ids: Vec<String> = (0..1_000).map(|n| format!("batch-{n:04}")).collect();

    let started = std::time::Instant::now();
    store
        .mutate(&ids, &mut |now, id, stored| {
            assert!(stored.is_none());
            Mutation {
                state: Some(new_state(id, now)),
                ..Mutation::none()
            }
        })
        .await
        .expect("register 1,000 tasks");
    let registration = started.elapsed();

    let mut timings = Vec::new();
    for round in 1..=5_i64 {
        let started = std::time::Instant::now();
        store
            .mutate(&ids, &mut |now, id, stored| {
                let mut state = stored.cloned().expect("registered");
                state.fence += 1;
                let slot = epoch() + Duration::seconds(round);
                let run_id = format!("{id}-{round}");
                state.running = vec![RunLease {
                    run_id: run_id.clone(),
                    fence: state.fence,
                    worker: "w1".to_owned(),
                    kind: RunKind::Scheduled,
                    slot: Some(slot),
                    attempt: 1,
                    trigger_id: None,
                    started_at: now,
                    lease_until: now + Duration::seconds(30),
                }];
                state.high_water = slot;
                let mut record = run(id, &run_id, Some(round * 1000), 1, RunStatus::Running);
                record.fence = state.fence;
                Mutation {
                    state: Some(state),
                    insert_runs: vec![record],
                    update_runs: Vec::new(),
                }
            })
            .await
            .expect("claim 1,000 slots");
        timings.push(started.elapsed());
    }
    timings.sort();
    let median = timings[timings.len() / 2];
    let best = timings[0];
    println!(
        "1,000-task batch: registration {registration:?}; claim (1,000 state upserts + 1,000 history inserts, one \
         transaction) median {median:?} = {:.0} slots/s, best {best:?} = {:.0} slots/s",
        1_000.0 / median.as_secs_f64(),
        1_000.0 / best.as_secs_f64()
    );
    let (_, states) = store.load(None).await.expect("load");
    assert_eq!(states.len(), 1_000);
    assert!(states.iter().all(|state| state.fence == 5 && state.running.len() == 1));
    let runs = store
        .runs("batch-0999", &fleetcron_core::RunQuery::default())
        .await
        .expect("runs");
    assert_eq!(runs.len(), 5);
    // Generous bound: the point is one round trip per statement, not per task.
    assert!(median < StdDuration::from_secs(5), "{median:?}");
}

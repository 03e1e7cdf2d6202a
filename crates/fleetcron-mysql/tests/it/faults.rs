//! Connection faults through a fault-injecting TCP proxy between the store and the shared server: cuts
//! (a network cut or a server restart, seen from the client), stalls and refused connections. The shared
//! server itself is never stopped.

use crate::conformance::MysqlNamespace;
use crate::*;
use fleetcron_conformance::proxy::FaultProxy;
use fleetcron_conformance::support::{
    assert_contiguous_once, count_status, eventually, fast_config, history, recorded, Recorder, TaskFactory, Worker,
    WorkerOptions,
};
use fleetcron_conformance::Namespace;
use fleetcron_core::{RunStatus, ScheduledTask, StoreError, TaskContext};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

async fn proxy() -> Arc<FaultProxy> {
    Arc::new(FaultProxy::start(server_address()).await.expect("start the proxy"))
}

/// Short timeouts, so faults show within a second or two.
fn quick() -> MysqlOptions {
    options()
        .with_acquire_timeout(StdDuration::from_secs(1))
        .with_operation_timeout(StdDuration::from_secs(1))
        .with_lock_timeout(StdDuration::from_secs(1))
}

async fn proxied_store(db: &TestDb, proxy: &FaultProxy, options: MysqlOptions) -> MysqlStore {
    MysqlStore::connect_with(&db.url_via(&proxy.address().to_string()), options)
        .await
        .expect("connect through the proxy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_in_the_middle_of_a_mutation_commits_nothing_and_the_next_one_reconnects() {
    let Some(db) =
        TestDb::create("a_cut_in_the_middle_of_a_mutation_commits_nothing_and_the_next_one_reconnects").await
    else {
        return;
    };
    let direct = store(&db).await;
    let proxy = proxy().await;
    let store = proxied_store(&db, &proxy, quick()).await;
    assert_eq!(increment(&store, "t", "w").await.expect("through the proxy"), 1);

    for round in 0..10u64 {
        // The cut lands while the transaction holds the row lock, between the read and the writes.
        let started = Instant::now();
        let result = store
            .mutate(&["t".to_owned()], &mut |now, id, stored| {
                proxy.cut();
                let mut state = stored.cloned().unwrap_or_else(|| new_state(id, now));
                state.fence += 100;
                Mutation {
                    state: Some(state),
                    insert_runs: vec![run(id, &format!("cut-{round}"), Some(-1), 1, RunStatus::Running)],
                    update_runs: Vec::new(),
                }
            })
            .await;
        match result {
            Err(error @ StoreError::Unavailable(_)) => assert!(error.is_transient()),
            other => panic!("round {round}: expected Unavailable, got {other:?}"),
        }
        assert!(started.elapsed() < StdDuration::from_secs(3), "{:?}", started.elapsed());
        // Nothing of it landed, and its row lock is gone (the server rolled back the cut session).
        assert_eq!(final_fence(&direct, "t").await, round + 1);
        // The next operation opens a new connection and succeeds.
        assert_eq!(
            increment(&store, "t", "w").await.expect("reconnects after the cut"),
            round + 2
        );
    }
    assert_one_run_per_fence(&direct, "t", 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuts_at_random_moments_never_duplicate_or_lose_an_increment() {
    let Some(db) = TestDb::create("cuts_at_random_moments_never_duplicate_or_lose_an_increment").await else {
        return;
    };
    let direct = store(&db).await;
    let proxy = proxy().await;
    let store = proxied_store(&db, &proxy, quick()).await;
    let mut committed = 0u64;
    let mut unavailable = 0u64;
    for round in 0..60u64 {
        // Cut after 0 to ~3 ms: before, during or after the transaction, its commit or its answer.
        let delay = StdDuration::from_micros((round * 7919) % 3000);
        let cutter = {
            let proxy = Arc::clone(&proxy);
            tokio::task::spawn_blocking(move || {
                let start = Instant::now();
                while start.elapsed() < delay {
                    std::hint::spin_loop();
                }
                proxy.cut();
            })
        };
        match increment(&store, "t", "w").await {
            Ok(_) => committed += 1,
            Err(StoreError::Unavailable(_)) => unavailable += 1,
            Err(other) => panic!("round {round}: a cut must be Unavailable, got {other:?}"),
        }
        cutter.await.expect("cutter");
        // The retry the engine would make succeeds on a new connection.
        increment(&store, "t", "w").await.expect("reconnects after the cut");
        committed += 1;
    }
    // An Unavailable increment may or may not have committed (a cut between COMMIT and its answer);
    // either way the fence and the history agree, with one row per fence.
    let fence = final_fence(&direct, "t").await;
    assert!(
        fence >= committed && fence <= committed + unavailable,
        "{fence} vs {committed} + {unavailable}"
    );
    assert_one_run_per_fence(&direct, "t", fence).await;
    println!("random cuts: {committed} increments committed, {unavailable} cut (Unavailable), final fence {fence}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_beyond_the_timeouts_is_unavailable_and_resume_works() {
    let Some(db) = TestDb::create("a_stall_beyond_the_timeouts_is_unavailable_and_resume_works").await else {
        return;
    };
    let direct = store(&db).await;
    let proxy = proxy().await;
    let store = proxied_store(&db, &proxy, quick()).await;
    assert_eq!(increment(&store, "t", "w").await.expect("before the stall"), 1);

    proxy.stall();
    for attempt in 0..3 {
        let started = Instant::now();
        match increment(&store, "t", "w").await {
            Err(error @ StoreError::Unavailable(_)) => assert!(error.is_transient()),
            other => panic!("attempt {attempt}: expected Unavailable, got {other:?}"),
        }
        // Bounded by the acquire timeout (idle connection check, new connection) plus the operation timeout.
        let elapsed = started.elapsed();
        assert!(elapsed >= StdDuration::from_millis(900), "{elapsed:?}");
        assert!(elapsed < StdDuration::from_secs(4), "{elapsed:?}");
    }
    let started = Instant::now();
    assert!(matches!(
        store.due_for_attention(10).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(started.elapsed() < StdDuration::from_secs(4));
    // The direct store is not affected by the stalled connections.
    assert_eq!(final_fence(&direct, "t").await, 1);

    proxy.resume();
    let resumed = eventually(StdDuration::from_secs(5), || async {
        increment(&store, "t", "w").await.is_ok()
    })
    .await;
    assert!(resumed, "the store works again once the network does");
    let fence = final_fence(&direct, "t").await;
    assert!(fence >= 2);
    assert_one_run_per_fence(&direct, "t", fence).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_in_the_middle_of_a_mutation_times_out_and_commits_nothing() {
    let Some(db) = TestDb::create("a_stall_in_the_middle_of_a_mutation_times_out_and_commits_nothing").await else {
        return;
    };
    let direct = store(&db).await;
    let proxy = proxy().await;
    let store = proxied_store(&db, &proxy, quick()).await;
    assert_eq!(increment(&store, "t", "w").await.expect("before the stall"), 1);

    // The network stalls while the transaction holds the row lock, before its writes reach the server.
    let started = Instant::now();
    let result = store
        .mutate(&["t".to_owned()], &mut |now, id, stored| {
            proxy.stall();
            let mut state = stored.cloned().unwrap_or_else(|| new_state(id, now));
            state.fence += 100;
            Mutation {
                state: Some(state),
                ..Mutation::none()
            }
        })
        .await;
    let elapsed = started.elapsed();
    match result {
        Err(error @ StoreError::Unavailable(_)) => assert!(error.to_string().contains("timeout"), "{error}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(elapsed >= StdDuration::from_millis(900), "{elapsed:?}");
    assert!(elapsed < StdDuration::from_secs(3), "{elapsed:?}");

    // Once the network is back the server sees the abandoned session end, rolls it back and frees the
    // row; the late write never commits.
    proxy.resume();
    let freed = eventually(StdDuration::from_secs(10), || async {
        increment(&direct, "t", "direct").await.is_ok()
    })
    .await;
    assert!(freed, "the row lock of the abandoned transaction is released");
    assert_eq!(final_fence(&direct, "t").await, 2);
    assert_eq!(
        increment(&store, "t", "w")
            .await
            .expect("the proxied store works again"),
        3
    );
    assert_one_run_per_fence(&direct, "t", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_vanishes_mid_transaction_holds_its_rows_only_for_the_server_idle_timeout() {
    let Some(db) =
        TestDb::create("a_worker_that_vanishes_mid_transaction_holds_its_rows_only_for_the_server_idle_timeout").await
    else {
        return;
    };
    let direct = store_with(&db, options().with_lock_timeout(StdDuration::from_secs(1))).await;
    let proxy = proxy().await;
    let store = proxied_store(&db, &proxy, quick().with_server_idle_timeout(StdDuration::from_secs(3))).await;
    assert_eq!(increment(&store, "t", "w").await.expect("before the partition"), 1);

    // A partition that never heals: the transaction holding the row is left open on the server.
    let result = store
        .mutate(&["t".to_owned()], &mut |_, _, stored| {
            proxy.stall();
            Mutation {
                state: stored.cloned(),
                ..Mutation::none()
            }
        })
        .await;
    assert!(matches!(result, Err(StoreError::Unavailable(_))), "{result:?}");
    let started = Instant::now();
    // The row is still locked by the silent session (a 1 s lock wait, well within its 3 s).
    assert!(matches!(
        increment(&direct, "t", "direct").await,
        Err(StoreError::Unavailable(_))
    ));
    // The server ends the silent session after its wait_timeout (3 s here, 60 s by default) and rolls it
    // back; meanwhile other workers' mutations of the row time out and are retried.
    let freed = eventually(StdDuration::from_secs(10), || async {
        increment(&direct, "t", "direct").await.is_ok()
    })
    .await;
    assert!(freed, "the abandoned transaction's row lock is released");
    assert!(started.elapsed() < StdDuration::from_secs(6), "{:?}", started.elapsed());
    assert_eq!(final_fence(&direct, "t").await, 2);
    proxy.resume();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_connections_is_unavailable_until_it_is_back() {
    let Some(db) = TestDb::create("a_server_that_refuses_connections_is_unavailable_until_it_is_back").await else {
        return;
    };
    let _direct = store(&db).await;
    let proxy = proxy().await;
    let store = proxied_store(&db, &proxy, quick()).await;
    assert_eq!(increment(&store, "t", "w").await.expect("before the outage"), 1);

    // The server goes away: every connection is cut, new ones are refused.
    proxy.refuse();
    proxy.cut();
    for _ in 0..3 {
        let started = Instant::now();
        match store.now().await {
            Err(error @ StoreError::Unavailable(_)) => assert!(error.to_string().contains(&db.name), "{error}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert!(started.elapsed() < StdDuration::from_secs(3), "{:?}", started.elapsed());
        assert!(matches!(
            increment(&store, "t", "w").await,
            Err(StoreError::Unavailable(_))
        ));
    }
    // It is back: the pool reconnects.
    proxy.resume();
    assert_eq!(increment(&store, "t", "w").await.expect("after the outage"), 2);
    assert!(store.due_for_attention(10).await.expect("poll").1.is_empty());
}

fn factory(build: impl Fn() -> Vec<ScheduledTask> + Send + Sync + 'static) -> TaskFactory {
    Arc::new(build)
}

/// Namespaces on one database: one whose workers connect through `proxy`, one direct.
fn namespaces(db: &Arc<TestDb>, proxy: &FaultProxy) -> (Arc<dyn Namespace>, Arc<dyn Namespace>) {
    let proxied = Arc::new(MysqlNamespace {
        _db: Arc::clone(db),
        url: db.url_via(&proxy.address().to_string()),
        options: quick(),
    }) as Arc<dyn Namespace>;
    let direct = Arc::new(MysqlNamespace {
        _db: Arc::clone(db),
        url: db.url.clone(),
        options: options(),
    }) as Arc<dyn Namespace>;
    (proxied, direct)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_connections_are_cut_keeps_its_runs_and_runs_each_slot_once() {
    let Some(db) = TestDb::create("a_worker_whose_connections_are_cut_keeps_its_runs_and_runs_each_slot_once").await
    else {
        return;
    };
    let db = Arc::new(db);
    let proxy = proxy().await;
    let (proxied, direct) = namespaces(&db, &proxy);
    let admin = direct.strategy(fast_config()).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || {
            vec![recorded("steady", &recorder, StdDuration::from_millis(400))
                .build()
                .expect("valid task")]
        })
    };
    let worker = Worker::start("flaky", &proxied, make, WorkerOptions::default()).await;
    tokio::time::sleep(StdDuration::from_millis(700)).await;
    // Brief cuts, shorter than the lease (1.5 s): the worker reconnects at once and must not lose a run.
    for _ in 0..8 {
        tokio::time::sleep(StdDuration::from_millis(550)).await;
        proxy.cut();
    }
    tokio::time::sleep(StdDuration::from_millis(1500)).await;
    worker.stop().await;

    assert_eq!(recorder.duplicates(), vec![], "no slot may run twice");
    let runs = history(&admin, "steady").await;
    let slots = assert_contiguous_once("steady", &runs);
    assert!(slots >= 4, "only {slots} slots accounted");
    // Every handler that started finished normally: none was cancelled for a lease it still held.
    let events = recorder.of("steady");
    assert!(events.len() >= 4, "{events:?}");
    for event in &events {
        let row = runs.iter().find(|run| run.run_id == event.run_id).expect("history row");
        assert_eq!(row.status, RunStatus::Succeeded, "{row:?}");
    }
    assert_eq!(count_status(&runs, RunStatus::Cancelled), 0);
    assert_eq!(count_status(&runs, RunStatus::Failed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_lease_cancels_the_run_and_another_worker_abandons_it() {
    let Some(db) =
        TestDb::create("an_outage_longer_than_the_lease_cancels_the_run_and_another_worker_abandons_it").await
    else {
        return;
    };
    let db = Arc::new(db);
    let proxy = proxy().await;
    let (proxied, direct) = namespaces(&db, &proxy);
    let admin = direct.strategy(fast_config()).await;
    let recorder = Recorder::new();
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let make = {
        let (recorder, saw_cancel) = (recorder.clone(), Arc::clone(&saw_cancel));
        factory(move || {
            let (recorder, saw_cancel) = (recorder.clone(), Arc::clone(&saw_cancel));
            vec![ScheduledTask::builder("long")
                .schedule("0 0 1 1 *")
                .handler(move |context: TaskContext| {
                    recorder.record(&context);
                    let saw_cancel = Arc::clone(&saw_cancel);
                    async move {
                        tokio::select! {
                            () = tokio::time::sleep(StdDuration::from_secs(8)) => {}
                            () = context.cancellation.cancelled() => saw_cancel.store(true, Ordering::SeqCst),
                        }
                        Ok(json!("late result"))
                    }
                })
                .build()
                .expect("valid task")]
        })
    };
    let flaky = Worker::start("flaky", &proxied, make.clone(), WorkerOptions::default()).await;
    admin.trigger_task("long").await.expect("trigger");
    assert!(
        eventually(StdDuration::from_secs(5), || async { !recorder.of("long").is_empty() }).await,
        "the run starts on the proxied worker"
    );
    let survivor = Worker::start("survivor", &direct, make, WorkerOptions::default()).await;

    // The flaky worker's server goes away for longer than the lease.
    proxy.refuse();
    proxy.cut();
    assert!(
        eventually(StdDuration::from_secs(5), || async {
            saw_cancel.load(Ordering::SeqCst)
        })
        .await,
        "a handler whose lease could not be renewed for the lease's duration is cancelled"
    );
    let abandoned = eventually(StdDuration::from_secs(6), || async {
        history(&admin, "long")
            .await
            .iter()
            .any(|run| run.status == RunStatus::Abandoned)
    })
    .await;
    assert!(abandoned, "the survivor marks the lost run abandoned");
    proxy.resume();
    tokio::time::sleep(StdDuration::from_millis(1500)).await;
    flaky.stop().await;
    survivor.stop().await;

    // The late completion was refused by the fence, and the run did not run again (at-most-once).
    let runs = history(&admin, "long").await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].status, RunStatus::Abandoned);
    assert_eq!(recorder.of("long").len(), 1);
    let _ = &db;
}

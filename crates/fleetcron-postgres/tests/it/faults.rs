//! Connection faults, injected with the conformance crate's TCP proxy between the store and the shared
//! server (never by stopping the server): cuts, stalls and refused connections surface as
//! `Unavailable`, commit nothing half-way, and the store works again once the network does.

use crate::push::{next_task_id, wake_up};
use crate::*;
use fleetcron_conformance::proxy::FaultProxy;
use fleetcron_core::StoreError;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration as StdDuration;

/// The test server's socket address.
async fn upstream() -> SocketAddr {
    let options = sqlx::postgres::PgConnectOptions::from_str(&server_url()).expect("valid test URL");
    let host = options.get_host().to_owned();
    let port = options.get_port();
    let mut addresses = tokio::net::lookup_host((host.as_str(), port))
        .await
        .expect("resolve the test server");
    addresses.next().expect("an address")
}

/// `url` with its host and port replaced by `address`.
fn via(url: &str, address: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let user = authority
        .rsplit_once('@')
        .map(|(user, _)| format!("{user}@"))
        .unwrap_or_default();
    format!("{scheme}://{user}{address}{tail}")
}

/// A proxy in front of the server and a migrated store connected through it.
async fn proxied(schema: &TestSchema, statement_timeout: StdDuration) -> (FaultProxy, PostgresStore) {
    let proxy = FaultProxy::start(upstream().await).await.expect("start the proxy");
    let options = schema
        .options()
        .with_statement_timeout(statement_timeout)
        .with_acquire_timeout(StdDuration::from_secs(1));
    let store = PostgresStore::connect_with(&via(&server_url(), proxy.address()), options)
        .await
        .expect("connect through the proxy");
    store.migrate().await.expect("migrate through the proxy");
    (proxy, store)
}

/// Increments like the engine transacts: retries `Unavailable` with a short backoff, up to `limit`.
async fn increment_retrying(store: &PostgresStore, id: &str, limit: StdDuration) -> Result<(u64, usize), StoreError> {
    let started = std::time::Instant::now();
    let mut failures = 0;
    loop {
        match increment(store, id, "w").await {
            Ok(fence) => return Ok((fence, failures)),
            Err(StoreError::Unavailable(message)) if started.elapsed() < limit => {
                failures += 1;
                eprintln!("retrying after: {message}");
                tokio::time::sleep(StdDuration::from_millis(50)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_mid_transaction_commits_nothing_and_the_retry_commits_once() {
    require_server!("a_cut_mid_transaction_commits_nothing_and_the_retry_commits_once");
    let schema = TestSchema::new();
    let (proxy, store) = proxied(&schema, StdDuration::from_secs(2)).await;
    let direct = schema.connect().await;
    // Warm several pooled connections, so the retry meets dead idle ones.
    for _ in 0..3 {
        increment(&store, "t", "w").await.expect("warm up");
    }
    let (a, b, c) = tokio::join!(store.load(None), store.now(), store.due_for_attention(10));
    a.expect("load");
    b.expect("now");
    c.expect("poll");

    // The connection is cut after the locks and the read, before the writes reach the server.
    let started = std::time::Instant::now();
    let result = store
        .mutate(&["t".to_owned()], &mut |now, id, stored| {
            proxy.cut();
            let mut state = stored.cloned().unwrap_or_else(|| new_state(id, now));
            state.fence += 1;
            Mutation {
                state: Some(state),
                insert_runs: vec![run(id, "cut-run", Some(4), 1, RunStatus::Succeeded)],
                update_runs: Vec::new(),
            }
        })
        .await;
    match result {
        Err(error @ StoreError::Unavailable(_)) => assert!(error.is_transient()),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < StdDuration::from_secs(5), "{:?}", started.elapsed());
    // The server rolled the transaction back: nothing of it is visible, and its lock is free.
    assert_eq!(final_fence(&direct, "t").await, 3);
    assert_one_run_per_fence(&direct, "t", 3).await;
    increment(&direct, "t", "direct")
        .await
        .expect("the task's lock was released");

    // The next attempt through the proxy reconnects and commits exactly once.
    let (fence, failures) = increment_retrying(&store, "t", StdDuration::from_secs(10))
        .await
        .expect("the retry commits");
    assert_eq!(fence, 5);
    assert!(
        failures <= 1,
        "dead pooled connections are replaced, not each failed: {failures} failures"
    );
    assert_one_run_per_fence(&direct, "t", 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_cuts_during_concurrent_increments_lose_and_double_nothing() {
    require_server!("repeated_cuts_during_concurrent_increments_lose_and_double_nothing");
    let schema = TestSchema::new();
    let (proxy, store) = proxied(&schema, StdDuration::from_secs(2)).await;
    let store = shared(store);
    let direct = schema.connect().await;
    let mut handles = Vec::new();
    for worker in 0..4 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut committed = 0_u64;
            for _ in 0..30 {
                increment_retrying(&store, "counter", StdDuration::from_secs(20))
                    .await
                    .map_err(|error| format!("worker {worker}: {error}"))?;
                committed += 1;
            }
            Ok::<u64, String>(committed)
        }));
    }
    for _ in 0..8 {
        tokio::time::sleep(StdDuration::from_millis(150)).await;
        proxy.cut();
    }
    let mut committed = 0;
    for handle in handles {
        committed += handle.await.expect("join").expect("only Unavailable, then success");
    }
    // An increment whose commit was in flight during a cut may have landed although it reported
    // Unavailable, and then its retry counts again: never fewer, and the history has exactly one row per
    // fence (no lost update, no duplicate).
    let fence = final_fence(&direct, "counter").await;
    assert!(fence >= committed, "{fence} >= {committed}");
    assert!(
        fence <= committed + 8,
        "at most one ambiguous commit per cut: {fence} vs {committed}"
    );
    assert_one_run_per_fence(&direct, "counter", fence).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_longer_than_the_timeout_is_unavailable_then_resume_works() {
    require_server!("a_stall_longer_than_the_timeout_is_unavailable_then_resume_works");
    let schema = TestSchema::new();
    let (proxy, store) = proxied(&schema, StdDuration::from_millis(500)).await;
    let direct = schema.connect().await;
    increment(&store, "t", "w").await.expect("warm up");

    proxy.stall();
    let started = std::time::Instant::now();
    match increment(&store, "t", "w").await {
        Err(error @ StoreError::Unavailable(_)) => assert!(error.to_string().contains(&schema.name), "{error}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited < StdDuration::from_secs(4),
        "bounded by the timeouts: {waited:?}"
    );
    let started = std::time::Instant::now();
    let poll = store.due_for_attention(10).await;
    assert!(matches!(poll, Err(StoreError::Unavailable(_))), "{poll:?}");
    assert!(started.elapsed() < StdDuration::from_secs(4), "{:?}", started.elapsed());

    proxy.resume();
    let (fence, _) = increment_retrying(&store, "t", StdDuration::from_secs(10))
        .await
        .expect("works once traffic flows again");
    // The stalled increment never committed: its connection was given up and the server rolled back.
    assert_eq!(fence, 2);
    assert_one_run_per_fence(&direct, "t", 2).await;
    store.due_for_attention(10).await.expect("poll");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_unavailable_until_the_server_is_back() {
    require_server!("refused_connections_are_unavailable_until_the_server_is_back");
    let schema = TestSchema::new();
    let (proxy, store) = proxied(&schema, StdDuration::from_secs(2)).await;
    increment(&store, "t", "w").await.expect("warm up");

    // The server goes away: open connections drop, new ones are refused.
    proxy.refuse();
    proxy.cut();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        match increment(&store, "t", "w").await {
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert!(started.elapsed() < StdDuration::from_secs(5), "{:?}", started.elapsed());
    }
    assert!(matches!(store.now().await, Err(StoreError::Unavailable(_))));

    proxy.resume();
    let (fence, _) = increment_retrying(&store, "t", StdDuration::from_secs(10))
        .await
        .expect("works once the server is back");
    assert_eq!(fence, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_reconnects_after_a_cut_and_wakes_its_subscribers() {
    require_server!("the_listener_reconnects_after_a_cut_and_wakes_its_subscribers");
    let schema = TestSchema::new();
    let (proxy, store) = proxied(&schema, StdDuration::from_secs(2)).await;
    let notifier = schema.connect().await;
    let mut receiver = store.subscribe().expect("PostgreSQL pushes");
    let limit = StdDuration::from_secs(10);
    assert!(wake_up(&mut receiver, limit).await, "first connection");
    notifier.notify("before").await.expect("notify");
    assert_eq!(next_task_id(&mut receiver, limit).await.as_deref(), Some("before"));

    proxy.cut();
    // Notifications sent while the listener is away are lost: the wake-up tells the engine to poll.
    assert!(wake_up(&mut receiver, limit).await, "a wake-up after reconnecting");
    notifier.notify("after").await.expect("notify");
    assert_eq!(next_task_id(&mut receiver, limit).await.as_deref(), Some("after"));

    // While new connections are refused, the listener keeps retrying with backoff.
    proxy.refuse();
    proxy.cut();
    tokio::time::sleep(StdDuration::from_millis(700)).await;
    proxy.resume();
    assert!(wake_up(&mut receiver, limit).await, "a wake-up once the server is back");
    notifier.notify("back").await.expect("notify");
    assert_eq!(next_task_id(&mut receiver, limit).await.as_deref(), Some("back"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_does_not_cancel_a_running_handler_whose_lease_survives() {
    use fleetcron_conformance::support::{eventually, fast_config};
    use fleetcron_core::{RunQuery, ScheduledTask, Scheduler, SchedulerStrategy, TaskContext, TaskError};
    use std::sync::atomic::{AtomicBool, Ordering};
    require_server!("a_cut_does_not_cancel_a_running_handler_whose_lease_survives");
    let schema = TestSchema::new();
    let (proxy, store) = proxied(&schema, StdDuration::from_secs(2)).await;
    let started_flag = Arc::new(AtomicBool::new(false));
    let cancelled_flag = Arc::new(AtomicBool::new(false));
    let task = {
        let (started_flag, cancelled_flag) = (started_flag.clone(), cancelled_flag.clone());
        ScheduledTask::builder("long")
            .schedule("0 0 1 1 *")
            .handler(move |context: TaskContext| {
                let (started_flag, cancelled_flag) = (started_flag.clone(), cancelled_flag.clone());
                async move {
                    started_flag.store(true, Ordering::SeqCst);
                    tokio::select! {
                        () = tokio::time::sleep(StdDuration::from_secs(4)) => Ok(serde_json::json!("done")),
                        () = context.cancellation.cancelled() => {
                            cancelled_flag.store(true, Ordering::SeqCst);
                            Err(TaskError::new("cancelled"))
                        }
                    }
                }
            })
            .build()
            .expect("valid task")
    };
    // Lease 1.5 s, renewed every 0.5 s: the cuts below each cost a renewal attempt, not the lease.
    let config = fast_config();
    let worker = Scheduler::builder()
        .strategy(fleetcron_postgres::PostgresStrategy::with_config(
            Arc::new(store),
            config.clone(),
        ))
        .worker_id("worker")
        .task(task)
        .retention_schedule(None)
        .build()
        .expect("scheduler");
    let running = worker.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(async move {
        running
            .run_until(async {
                let _ = stopped.await;
            })
            .await
    });
    worker.ready().await;
    let admin = fleetcron_postgres::PostgresStrategy::with_config(Arc::new(schema.connect().await), config);
    admin.trigger_task("long").await.expect("trigger");
    assert!(
        eventually(StdDuration::from_secs(10), || {
            let started_flag = started_flag.clone();
            async move { started_flag.load(Ordering::SeqCst) }
        })
        .await,
        "the run starts"
    );
    for _ in 0..3 {
        tokio::time::sleep(StdDuration::from_millis(700)).await;
        proxy.cut();
    }
    let finished = eventually(StdDuration::from_secs(15), || {
        let admin = &admin;
        async move {
            admin
                .runs("long", RunQuery::default())
                .await
                .map(|runs| runs.first().is_some_and(|run| run.finished_at.is_some()))
                .unwrap_or(false)
        }
    })
    .await;
    assert!(finished, "the run ends");
    let runs = admin.runs("long", RunQuery::default()).await.expect("runs");
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0].status, RunStatus::Succeeded, "{runs:#?}");
    assert!(!cancelled_flag.load(Ordering::SeqCst), "the handler was not cancelled");
    let _ = stop.send(());
    run.await.expect("join").expect("the worker stops cleanly");
}

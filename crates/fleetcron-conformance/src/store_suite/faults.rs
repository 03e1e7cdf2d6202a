//! Connection faults, injected with a [`FaultProxy`] between a server store and its server (never by
//! stopping the shared server): cuts, stalls and refused connections are `Unavailable`, bounded in
//! time, commit nothing half-way, and the store works again once the network does.

use super::engine::engine_namespace;
use super::fixtures::*;
use super::{StoreHarness, StoreNamespace, Suite};
use crate::support::{
    assert_contiguous_once, count_status, eventually, fast_config, history, recorded, Recorder, TaskFactory, Worker,
    WorkerOptions,
};
use fleetcron_core::{RunStatus, ScheduledTask, Store, StoreError, TaskContext};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an operation through a faulty proxy may take to fail (the harness's timeouts are about a
/// second; a debug build on a loaded machine gets the rest).
const BOUND: Duration = Duration::from_secs(5);

fn assert_unavailable<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) -> StoreError {
    match result {
        Err(error @ StoreError::Unavailable(_)) => {
            assert!(error.is_transient());
            error
        }
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
}

/// The connection is cut inside a mutation, after the store read the state and before its writes
/// reach the server: the mutation is `Unavailable` and nothing of it lands (its locks go with the
/// session), and the retry commits exactly once — three times over, with warmed pools.
pub async fn a_cut_mid_mutation_commits_nothing_and_the_retry_commits_once<H: StoreHarness>(suite: &Suite<'_, H>) {
    if !suite.needs(suite.capabilities.proxy, "`proxy`") {
        return;
    }
    let fresh = suite.fresh(epoch()).await;
    let (proxy, store) = suite.proxied(&fresh.ns).await;
    let direct = &*fresh.store;
    for _ in 0..3 {
        increment(&*store, "t", "w").await.expect("warm up");
    }
    // Several pooled connections, so the retry meets dead idle ones.
    let (a, b, c) = tokio::join!(store.load(None), store.now(), store.due_for_attention(10));
    a.expect("load");
    b.expect("now");
    c.expect("poll");
    let mut fence = 3;
    for _ in 0..3 {
        let started = Instant::now();
        match increment_with(&*store, "t", "w", || proxy.cut()).await {
            Err(StoreError::Unavailable(_)) => {
                assert_eq!(
                    final_fence(direct, "t").await,
                    fence,
                    "nothing of the cut mutation landed"
                );
            }
            // A store without server transactions may reconnect and send its commit after the cut.
            Ok(committed) if !suite.capabilities.server_transactions => {
                fence += 1;
                assert_eq!(committed, fence);
            }
            other => panic!("a mutation cut between its read and its writes: expected Unavailable, got {other:?}"),
        }
        assert!(started.elapsed() < BOUND, "{:?}", started.elapsed());
        fence = increment(direct, "t", "direct")
            .await
            .expect("the task's locks went with the cut session");
        let (committed, failures) = increment_retrying(&*store, "t", Duration::from_secs(10))
            .await
            .expect("the retry commits");
        fence += 1;
        assert_eq!(committed, fence, "the retry commits once");
        if suite.capabilities.reconnects_at_once {
            assert!(
                failures <= 1,
                "dead pooled connections are replaced, not each failed: {failures} failures"
            );
        }
    }
    assert_one_run_per_fence(direct, "t", fence).await;
}

/// The server goes away (open connections cut, new ones refused): every operation is `Unavailable`
/// within the timeouts, naming the store, for as long as it is away; once it is back the store
/// reconnects and works, without a lost or doubled increment.
pub async fn refused_connections_are_unavailable_until_the_server_is_back<H: StoreHarness>(suite: &Suite<'_, H>) {
    if !suite.needs(suite.capabilities.proxy, "`proxy`") {
        return;
    }
    let fresh = suite.fresh(epoch()).await;
    let (proxy, store) = suite.proxied(&fresh.ns).await;
    assert_eq!(increment(&*store, "t", "w").await.expect("before the outage"), 1);
    proxy.refuse();
    proxy.cut();
    for _ in 0..3 {
        let started = Instant::now();
        let error = assert_unavailable(
            increment(&*store, "t", "w").await,
            "an increment while the server is away",
        );
        if let Some(label) = fresh.ns.label() {
            assert!(error.to_string().contains(&label), "{error} does not name {label}");
        }
        assert_unavailable(store.now().await, "the clock while the server is away");
        assert_unavailable(
            store.due_for_attention(10).await,
            "the idle poll while the server is away",
        );
        assert!(started.elapsed() < 3 * BOUND, "{:?}", started.elapsed());
    }
    proxy.resume();
    let (fence, _) = increment_retrying(&*store, "t", Duration::from_secs(10))
        .await
        .expect("works once the server is back");
    assert_eq!(fence, 2);
    assert_one_run_per_fence(&*fresh.store, "t", 2).await;
    assert!(store.due_for_attention(10).await.expect("poll").1.is_empty());
}

/// Traffic stalls (bytes held, not lost) past the store's timeouts: operations are `Unavailable`
/// within a bound and name the store; once traffic flows the store works again. A stalled batch that
/// was a server transaction never commits; any store's history keeps one row per fence.
pub async fn a_stall_beyond_the_timeout_is_unavailable_then_resume_works<H: StoreHarness>(suite: &Suite<'_, H>) {
    if !suite.needs(suite.capabilities.proxy, "`proxy`") {
        return;
    }
    let fresh = suite.fresh(epoch()).await;
    let (proxy, store) = suite.proxied(&fresh.ns).await;
    increment(&*store, "t", "w").await.expect("warm up");
    proxy.stall();
    let started = Instant::now();
    let error = assert_unavailable(increment(&*store, "t", "w").await, "an increment while traffic stalls");
    assert!(
        started.elapsed() < BOUND,
        "bounded by the timeouts: {:?}",
        started.elapsed()
    );
    if let Some(label) = fresh.ns.label() {
        assert!(error.to_string().contains(&label), "{error} does not name {label}");
    }
    let started = Instant::now();
    assert_unavailable(store.due_for_attention(10).await, "the idle poll while traffic stalls");
    assert!(started.elapsed() < BOUND, "{:?}", started.elapsed());
    assert_eq!(
        final_fence(&*fresh.store, "t").await,
        1,
        "a direct store is not stalled"
    );

    proxy.resume();
    let (fence, _) = increment_retrying(&*store, "t", Duration::from_secs(10))
        .await
        .expect("works once traffic flows again");
    if suite.capabilities.server_transactions {
        assert_eq!(fence, 2, "the stalled transaction was given up and rolled back");
    }
    assert_one_run_per_fence(&*fresh.store, "t", fence).await;
    store.due_for_attention(10).await.expect("poll");
}

/// Four tasks increment one counter through the proxy (retrying `Unavailable`) while the proxy cuts
/// every connection eight times: no increment is lost or doubled — an increment whose commit was in
/// flight during a cut may have landed although it reported `Unavailable`, and its retry then counts
/// again, but the history has exactly one row per fence.
pub async fn cuts_during_concurrent_increments_lose_and_double_nothing<H: StoreHarness>(suite: &Suite<'_, H>) {
    if !suite.needs(suite.capabilities.proxy, "`proxy`") {
        return;
    }
    let fresh = suite.fresh(epoch()).await;
    let (proxy, store) = suite.proxied(&fresh.ns).await;
    let mut handles = Vec::new();
    for worker in 0..4 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..30 {
                increment_retrying(&*store, "counter", Duration::from_secs(20))
                    .await
                    .map_err(|error| format!("worker {worker}: {error}"))?;
            }
            Ok::<u64, String>(30)
        }));
    }
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        proxy.cut();
    }
    let mut committed = 0;
    for handle in handles {
        committed += handle.await.expect("join").expect("only Unavailable, then success");
    }
    let fence = final_fence(&*fresh.store, "counter").await;
    assert!(fence >= committed, "{fence} >= {committed}");
    assert!(
        fence <= committed + 8 * 4,
        "at most one ambiguous commit per cut and task: {fence} vs {committed}"
    );
    assert_one_run_per_fence(&*fresh.store, "counter", fence).await;
}

/// A store whose server does not answer at all (a port nothing listens on) is `Unavailable` within
/// the timeouts, naming the address, never a hang or a configuration error.
pub async fn an_unreachable_server_is_unavailable_within_the_timeouts<H: StoreHarness>(suite: &Suite<'_, H>) {
    if !suite.needs(suite.capabilities.proxy, "`proxy`") {
        return;
    }
    let (_clock, ns) = suite.namespace(epoch()).await;
    let closed = std::net::SocketAddr::from(([127, 0, 0, 1], closed_port()));
    let started = Instant::now();
    let outcome = match ns.open_via(closed).await {
        Ok(store) => store.migrate().await,
        Err(error) => Err(error),
    };
    let error = assert_unavailable(outcome, "a store whose server is not there");
    assert!(
        error.to_string().contains(&closed.to_string()),
        "{error} does not name {closed}"
    );
    assert!(started.elapsed() < BOUND, "{:?}", started.elapsed());
}

fn factory(build: impl Fn() -> Vec<ScheduledTask> + Send + Sync + 'static) -> TaskFactory {
    Arc::new(build)
}

/// A worker whose connections are cut now and then (more briefly than its lease) keeps its runs:
/// every slot runs once and succeeds, and no handler is cancelled for a lease it still holds.
pub async fn brief_cuts_never_cancel_a_run_whose_lease_survives<H: StoreHarness>(suite: &Suite<'_, H>) {
    if !suite.needs(suite.capabilities.proxy, "`proxy`") {
        return;
    }
    let (_clock, ns) = suite.namespace(chrono::Utc::now()).await;
    let ns = Arc::new(ns);
    let proxy = suite.proxy().await;
    let (proxied, direct) = (
        engine_namespace(ns.clone(), Some(proxy.address())),
        engine_namespace(ns, None),
    );
    let admin = direct.strategy(fast_config()).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || {
            vec![recorded("steady", &recorder, Duration::from_millis(400))
                .build()
                .expect("valid task")]
        })
    };
    let worker = Worker::start("flaky", &proxied, make, WorkerOptions::default()).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Brief cuts, shorter than the lease (1.5 s, renewed every 0.5 s): each costs a renewal, not the lease.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(550)).await;
        proxy.cut();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    worker.stop().await;

    assert_eq!(recorder.duplicates(), vec![], "no slot may run twice");
    let runs = history(&admin, "steady").await;
    let slots = assert_contiguous_once("steady", &runs);
    assert!(slots >= 4, "only {slots} slots accounted");
    let events = recorder.of("steady");
    assert!(events.len() >= 4, "{events:?}");
    for event in &events {
        let row = runs.iter().find(|run| run.run_id == event.run_id).expect("history row");
        assert_eq!(row.status, RunStatus::Succeeded, "{row:?}");
    }
    assert_eq!(count_status(&runs, RunStatus::Cancelled), 0);
    assert_eq!(count_status(&runs, RunStatus::Failed), 0);
}

/// A worker whose server goes away for longer than the lease cancels its handler; another worker
/// marks the lost run `abandoned`; the late completion is refused by the fence and the run does not
/// run again.
pub async fn an_outage_longer_than_the_lease_cancels_the_run_and_another_worker_abandons_it<H: StoreHarness>(
    suite: &Suite<'_, H>,
) {
    if !suite.needs(suite.capabilities.proxy, "`proxy`") {
        return;
    }
    let (_clock, ns) = suite.namespace(chrono::Utc::now()).await;
    let ns = Arc::new(ns);
    let proxy = suite.proxy().await;
    let (proxied, direct) = (
        engine_namespace(ns.clone(), Some(proxy.address())),
        engine_namespace(ns, None),
    );
    let admin = direct.strategy(fast_config()).await;
    let recorder = Recorder::new();
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let make = {
        let (recorder, saw_cancel) = (recorder.clone(), saw_cancel.clone());
        factory(move || {
            let (recorder, saw_cancel) = (recorder.clone(), saw_cancel.clone());
            vec![ScheduledTask::builder("long")
                .schedule("0 0 1 1 *")
                .handler(move |context: TaskContext| {
                    recorder.record(&context);
                    let saw_cancel = saw_cancel.clone();
                    async move {
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(8)) => {}
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
    let started = eventually(Duration::from_secs(5), || async { !recorder.of("long").is_empty() }).await;
    assert!(started, "the run starts on the proxied worker");
    let survivor = Worker::start("survivor", &direct, make, WorkerOptions::default()).await;

    proxy.refuse();
    proxy.cut();
    let cancelled = eventually(Duration::from_secs(5), || async { saw_cancel.load(Ordering::SeqCst) }).await;
    assert!(
        cancelled,
        "a handler whose lease could not be renewed for the lease's duration is cancelled"
    );
    let abandoned = eventually(Duration::from_secs(6), || async {
        history(&admin, "long")
            .await
            .iter()
            .any(|run| run.status == RunStatus::Abandoned)
    })
    .await;
    assert!(abandoned, "the survivor marks the lost run abandoned");
    proxy.resume();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    flaky.stop().await;
    survivor.stop().await;

    let runs = history(&admin, "long").await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].status, RunStatus::Abandoned);
    assert_eq!(recorder.of("long").len(), 1, "the run did not run again");
}

//! Push wake-ups: `notify` on one store reaches the subscribers of every store of the namespace (and of
//! no other), within milliseconds, and again after the subscription lost its connection.

use super::engine::engine_namespace;
use super::fixtures::*;
use super::{StoreHarness, StoreNamespace, StoreOf, Suite};
use crate::support::{eventually, fast_config, recorded, Recorder, WorkerOptions};
use fleetcron_core::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::{error::RecvError, Receiver};

/// What [`live`] sends until every subscriber has heard it.
const PROBE: &str = "probe";

/// The next payload that is neither a wake-up (`""`) nor a [`PROBE`], at most `limit`.
async fn next_task_id(receiver: &mut Receiver<String>, limit: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Ok(payload)) if payload.is_empty() || payload == PROBE => continue,
            Ok(Ok(payload)) => return Some(payload),
            Ok(Err(RecvError::Lagged(_))) => continue,
            Ok(Err(RecvError::Closed)) | Err(_) => return None,
        }
    }
}

/// Waits for a wake-up (`""`: "messages may have been lost, poll"), at most `limit`.
async fn wake_up(receiver: &mut Receiver<String>, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Ok(payload)) if payload.is_empty() => return true,
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => continue,
            Ok(Err(RecvError::Closed)) | Err(_) => return false,
        }
    }
}

/// Notifies [`PROBE`] from `notifier` every 100 ms until every receiver heard one (their subscriptions
/// are live), at most 10 s.
async fn live<S: Store + ?Sized>(notifier: &S, receivers: &mut [&mut Receiver<String>]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for receiver in receivers.iter_mut() {
        'heard: loop {
            assert!(Instant::now() < deadline, "a subscription did not go live within 10 s");
            notifier.notify(PROBE).await.expect("notify");
            let round = tokio::time::Instant::now() + Duration::from_millis(100);
            while let Ok(Ok(payload)) = tokio::time::timeout_at(round, receiver.recv()).await {
                if payload == PROBE {
                    break 'heard;
                }
            }
        }
    }
}

fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    let rank = (sorted.len() * percent).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A notification reaches the subscribers of every store of the namespace (several subscribers of one
/// store share its listener) and nobody of another namespace; notifying without subscribers is fine;
/// 100 notifications arrive with p99 under half a second.
pub async fn a_notification_reaches_every_store_of_the_namespace_only<H: StoreHarness>(suite: &Suite<'_, H>) {
    if !suite.needs(suite.capabilities.push, "`push`") {
        return;
    }
    let fresh = suite.fresh(epoch()).await;
    let other = suite.fresh(epoch()).await;
    let notifier = fresh.ns.open().await;
    notifier
        .notify("nobody-listens")
        .await
        .expect("notify without subscribers");
    let also = fresh.ns.open().await;
    let subscribe = |store: &StoreOf<H>| store.subscribe().expect("a store with push subscribes");
    let (mut first, mut second, mut unrelated) = (subscribe(&fresh.store), subscribe(&also), subscribe(&other.store));
    live(&*notifier, &mut [&mut first, &mut second]).await;
    live(&*other.store, &mut [&mut unrelated]).await;

    let limit = Duration::from_secs(5);
    notifier.notify("job-1").await.expect("notify");
    assert_eq!(next_task_id(&mut first, limit).await.as_deref(), Some("job-1"));
    assert_eq!(next_task_id(&mut second, limit).await.as_deref(), Some("job-1"));
    let elsewhere = next_task_id(&mut unrelated, Duration::from_millis(300)).await;
    assert_eq!(elsewhere, None, "another namespace hears nothing");
    let mut third = subscribe(&fresh.store);
    notifier.notify("job-2").await.expect("notify");
    assert_eq!(next_task_id(&mut third, limit).await.as_deref(), Some("job-2"));
    assert_eq!(next_task_id(&mut first, limit).await.as_deref(), Some("job-2"));

    let mut latencies = Vec::new();
    for n in 0..100 {
        let id = format!("task-{n}");
        let started = Instant::now();
        notifier.notify(&id).await.expect("notify");
        assert_eq!(next_task_id(&mut first, limit).await, Some(id));
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 50), percentile(&latencies, 99));
    println!(
        "{}: notify to receipt over 100 notifications: p50 {p50:?}, p99 {p99:?}",
        suite.case
    );
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?}");
}

/// A subscription whose connection is cut reconnects and says so with a wake-up (notifications sent
/// meanwhile are lost: the engine polls), keeps retrying while connections are refused, and hears
/// notifications again once it is back.
pub async fn subscriptions_reconnect_after_a_cut_and_wake_their_subscribers<H: StoreHarness>(suite: &Suite<'_, H>) {
    if !suite.needs(
        suite.capabilities.push && suite.capabilities.proxy,
        "`push` and `proxy`",
    ) {
        return;
    }
    let fresh = suite.fresh(epoch()).await;
    let (proxy, listening) = suite.proxied(&fresh.ns).await;
    let notifier = &*fresh.store;
    let mut receiver = listening.subscribe().expect("a store with push subscribes");
    let limit = Duration::from_secs(10);
    live(notifier, &mut [&mut receiver]).await;

    proxy.cut();
    assert!(wake_up(&mut receiver, limit).await, "a wake-up after reconnecting");
    live(notifier, &mut [&mut receiver]).await;
    notifier.notify("after").await.expect("notify");
    assert_eq!(next_task_id(&mut receiver, limit).await.as_deref(), Some("after"));

    proxy.refuse();
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(700)).await;
    proxy.resume();
    assert!(wake_up(&mut receiver, limit).await, "a wake-up once the server is back");
    live(notifier, &mut [&mut receiver]).await;
    notifier.notify("back").await.expect("notify");
    assert_eq!(next_task_id(&mut receiver, limit).await.as_deref(), Some("back"));
}

/// A manual trigger from another process starts the run on a worker that polls only once a minute,
/// within seconds: pushed, not polled.
pub async fn a_manual_trigger_wakes_another_worker_through_push<H: StoreHarness>(suite: &Suite<'_, H>) {
    if !suite.needs(suite.capabilities.push, "`push`") {
        return;
    }
    let (_clock, ns) = suite.namespace(chrono::Utc::now()).await;
    let namespace = engine_namespace(Arc::new(ns), None);
    let config = fast_config().poll_interval(Duration::from_secs(60));
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        Arc::new(move || {
            vec![recorded("manual", &recorder, Duration::ZERO)
                .schedule("0 0 1 1 *")
                .build()
                .expect("valid task")]
        })
    };
    let options = WorkerOptions {
        config: config.clone(),
        ..WorkerOptions::default()
    };
    let worker = crate::support::Worker::start("worker", &namespace, make, options).await;
    // Give the worker's subscription its first connection.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let admin = namespace.strategy(config).await;
    let started = Instant::now();
    admin.trigger_task("manual").await.expect("trigger");
    let ran = eventually(Duration::from_secs(10), || async { !recorder.of("manual").is_empty() }).await;
    assert!(ran, "the triggered run starts");
    let lag = started.elapsed();
    println!(
        "{}: manual trigger (other worker, poll interval 60 s) to handler start: {lag:?}",
        suite.case
    );
    assert!(lag < Duration::from_secs(5), "{lag:?}: pushed, not polled");
    worker.stop().await;
}

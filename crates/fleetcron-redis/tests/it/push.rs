//! Wake-ups over pub/sub: latency, and a wake-up after the subscription reconnects.

use crate::*;
use std::time::{Duration as StdDuration, Instant};
use tokio::sync::broadcast;

/// The next wake-up, or a panic after `within`.
pub(crate) async fn next_wakeup(receiver: &mut broadcast::Receiver<String>, within: StdDuration) -> String {
    match tokio::time::timeout(within, receiver.recv()).await {
        Ok(Ok(id)) => id,
        Ok(Err(error)) => panic!("wake-up channel failed: {error}"),
        Err(_) => panic!("no wake-up within {within:?}"),
    }
}

fn percentile(sorted: &[StdDuration], p: f64) -> StdDuration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_reaches_another_store_within_milliseconds() {
    let Some(ns) = Namespace::new("a_notify_reaches_another_store_within_milliseconds").await else {
        return;
    };
    let listener = ns.store().await;
    let publisher = ns.store().await;
    let mut wakeups = listener.subscribe().expect("the Redis store pushes");
    // The first wake-up (empty) says the subscription is live.
    assert_eq!(next_wakeup(&mut wakeups, StdDuration::from_secs(5)).await, "");

    let mut latencies = Vec::new();
    for n in 0..100 {
        let id = format!("task-{n}");
        let started = Instant::now();
        publisher.notify(&id).await.expect("notify");
        assert_eq!(next_wakeup(&mut wakeups, StdDuration::from_secs(2)).await, id);
        latencies.push(started.elapsed());
    }
    latencies.sort();
    println!(
        "redis pub/sub wake-up latency over 100 notifies: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        percentile(&latencies, 1.0).as_secs_f64() * 1e3
    );
    assert!(percentile(&latencies, 0.99) < StdDuration::from_millis(500));

    // A store of another prefix hears nothing of this one.
    let other = Namespace::new("a_notify_reaches_another_store_within_milliseconds")
        .await
        .expect("reachable")
        .store()
        .await;
    let mut foreign = other.subscribe().expect("pushes");
    assert_eq!(next_wakeup(&mut foreign, StdDuration::from_secs(5)).await, "");
    publisher.notify("not-yours").await.expect("notify");
    assert_eq!(next_wakeup(&mut wakeups, StdDuration::from_secs(2)).await, "not-yours");
    assert!(tokio::time::timeout(StdDuration::from_millis(200), foreign.recv())
        .await
        .is_err());
}

#[tokio::test]
async fn notify_without_subscribers_is_fine_and_subscribers_share_one_listener() {
    let Some(ns) = Namespace::new("notify_without_subscribers_is_fine_and_subscribers_share_one_listener").await else {
        return;
    };
    let store = ns.store().await;
    store.notify("nobody-listens").await.expect("notify");
    let mut first = store.subscribe().expect("pushes");
    let mut second = store.subscribe().expect("pushes");
    assert_eq!(next_wakeup(&mut first, StdDuration::from_secs(5)).await, "");
    assert_eq!(next_wakeup(&mut second, StdDuration::from_secs(5)).await, "");
    store.notify("t").await.expect("notify");
    assert_eq!(next_wakeup(&mut first, StdDuration::from_secs(2)).await, "t");
    assert_eq!(next_wakeup(&mut second, StdDuration::from_secs(2)).await, "t");
}

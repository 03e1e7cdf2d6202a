//! Connection faults through a fault-injecting proxy: cut, stall, refuse, resume. A lost connection is
//! `Unavailable` (never a panic or a hang past the response timeout), the connection manager
//! reconnects, and a retried mutation never duplicates a run.

use crate::push::next_wakeup;
use crate::*;
use fleetcron_conformance::proxy::FaultProxy;
use fleetcron_core::{RunQuery, StoreError};
use std::net::SocketAddr;
use std::time::{Duration as StdDuration, Instant};

const RESPONSE_TIMEOUT: StdDuration = StdDuration::from_millis(600);

/// The test server's address and the test URL with it replaced by `{}`.
async fn upstream() -> (SocketAddr, String) {
    let url = redis_url();
    let (scheme, rest) = url.split_once("://").expect("URL with a scheme");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (location, tail) = rest.split_at(end);
    let (credentials, host) = match location.rsplit_once('@') {
        Some((credentials, host)) => (format!("{credentials}@"), host),
        None => (String::new(), location),
    };
    let host = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:6379")
    };
    let address = tokio::net::lookup_host(host.as_str())
        .await
        .expect("resolve the test server")
        .next()
        .expect("an address");
    (address, format!("{scheme}://{credentials}{{}}{tail}"))
}

/// A proxy in front of the test server and a migrated store that connects through it.
async fn proxied(ns: &Namespace) -> (FaultProxy, RedisStore) {
    let (address, template) = upstream().await;
    let proxy = FaultProxy::start(address).await.expect("start the proxy");
    let url = template.replace("{}", &proxy.address().to_string());
    let options = ns
        .options()
        .with_response_timeout(RESPONSE_TIMEOUT)
        .with_connection_timeout(StdDuration::from_millis(300));
    let store = RedisStore::connect_with(&url, options)
        .await
        .expect("connect through the proxy");
    store.migrate().await.expect("migrate");
    (proxy, store)
}

/// Retries `increment` until it commits (within `within`); every failure must be `Unavailable`.
async fn increment_until_it_commits(store: &RedisStore, within: StdDuration) -> u64 {
    let started = Instant::now();
    loop {
        match increment(store, "t", "w").await {
            Ok(fence) => return fence,
            Err(StoreError::Unavailable(_)) if started.elapsed() < within => {
                tokio::time::sleep(StdDuration::from_millis(50)).await;
            }
            Err(error) => panic!("no commit within {within:?}: {error:?}"),
        }
    }
}

async fn assert_fences_without_duplicates(store: &RedisStore) -> u64 {
    let fence = state_of(store, "t").await.expect("stored").fence;
    let runs = store.runs("t", &RunQuery::default()).await.expect("runs");
    let mut fences: Vec<u64> = runs.iter().map(|run| run.fence).collect();
    fences.sort_unstable();
    assert_eq!(fences, (1..=fence).collect::<Vec<_>>(), "one run per fence");
    fence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_is_unavailable_then_reconnects() {
    let Some(ns) = Namespace::new("a_cut_connection_is_unavailable_then_reconnects").await else {
        return;
    };
    let (proxy, store) = proxied(&ns).await;
    assert_eq!(increment(&store, "t", "w").await.expect("through the proxy"), 1);

    // The server goes away: cut every connection and refuse new ones.
    proxy.refuse();
    proxy.cut();
    for _ in 0..3 {
        let started = Instant::now();
        let error = increment(&store, "t", "w").await.expect_err("the server is gone");
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
        assert!(started.elapsed() < RESPONSE_TIMEOUT + StdDuration::from_millis(500));
        let error = store.due_for_attention(10).await.expect_err("the server is gone");
        assert!(error.is_transient(), "{error:?}");
    }

    // It comes back: the connection manager reconnects and work goes on, without a duplicate.
    proxy.resume();
    let fence = increment_until_it_commits(&store, StdDuration::from_secs(10)).await;
    assert_eq!(fence, 2);
    assert_eq!(assert_fences_without_duplicates(&store).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_in_flight_fails_promptly_and_a_retry_does_not_duplicate() {
    let Some(ns) = Namespace::new("a_cut_in_flight_fails_promptly_and_a_retry_does_not_duplicate").await else {
        return;
    };
    let (proxy, store) = proxied(&ns).await;
    let store = Arc::new(store);
    increment(store.as_ref(), "t", "w").await.expect("through the proxy");
    for _ in 0..3 {
        // A mutation whose bytes are held in the proxy when the connection is cut.
        proxy.stall();
        let in_flight = {
            let store = store.clone();
            tokio::spawn(async move { increment(store.as_ref(), "t", "w").await })
        };
        tokio::time::sleep(StdDuration::from_millis(100)).await;
        let started = Instant::now();
        proxy.cut();
        proxy.resume();
        let outcome = in_flight.await.expect("join");
        assert!(started.elapsed() < RESPONSE_TIMEOUT + StdDuration::from_millis(500));
        if let Err(error) = outcome {
            assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
        }
        increment_until_it_commits(store.as_ref(), StdDuration::from_secs(10)).await;
    }
    assert!(assert_fences_without_duplicates(store.as_ref()).await >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_beyond_the_response_timeout_is_unavailable_and_resume_works() {
    let Some(ns) = Namespace::new("a_stall_beyond_the_response_timeout_is_unavailable_and_resume_works").await else {
        return;
    };
    let (proxy, store) = proxied(&ns).await;
    increment(&store, "t", "w").await.expect("through the proxy");

    proxy.stall();
    let started = Instant::now();
    let error = increment(&store, "t", "w").await.expect_err("stalled");
    let waited = started.elapsed();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(error.to_string().contains(&ns.prefix), "{error}");
    assert!(waited >= RESPONSE_TIMEOUT - StdDuration::from_millis(50), "{waited:?}");
    assert!(
        waited < RESPONSE_TIMEOUT * 2 + StdDuration::from_millis(500),
        "{waited:?}"
    );
    let error = store.now().await.expect_err("still stalled");
    assert!(error.is_transient(), "{error:?}");

    // Traffic flows again: the held requests are answered (and discarded), new ones work.
    proxy.resume();
    increment_until_it_commits(&store, StdDuration::from_secs(10)).await;
    // The stalled mutation's outcome was unknown to the caller; whether or not it committed, the
    // history has one run per fence.
    assert!(assert_fences_without_duplicates(&store).await >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wakeup_subscription_reconnects_and_says_so() {
    let Some(ns) = Namespace::new("the_wakeup_subscription_reconnects_and_says_so").await else {
        return;
    };
    let (proxy, listener) = proxied(&ns).await;
    let publisher = ns.store().await;
    let mut wakeups = listener.subscribe().expect("pushes");
    assert_eq!(next_wakeup(&mut wakeups, StdDuration::from_secs(5)).await, "");
    publisher.notify("before").await.expect("notify");
    assert_eq!(next_wakeup(&mut wakeups, StdDuration::from_secs(2)).await, "before");

    proxy.cut();
    // After the reconnection one empty wake-up says "messages may have been lost: poll".
    assert_eq!(next_wakeup(&mut wakeups, StdDuration::from_secs(10)).await, "");
    publisher.notify("after").await.expect("notify");
    assert_eq!(next_wakeup(&mut wakeups, StdDuration::from_secs(2)).await, "after");
}

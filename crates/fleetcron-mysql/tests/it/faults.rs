//! Faults only MySQL has, through a fault-injecting TCP proxy between the store and the shared server:
//! a stall while a transaction holds its row locks times out and commits nothing, and the server's
//! idle timeout bounds how long a vanished worker's transaction holds its rows. Cuts, stalls and
//! refused connections in general are cases of the store suite.

use crate::*;
use fleetcron_conformance::proxy::FaultProxy;
use fleetcron_conformance::store_suite::{url_address, url_via};
use fleetcron_conformance::support::eventually;
use fleetcron_core::{Mutation, StoreError};
use std::time::Instant;

/// A proxy in front of the server and a migrated store with `options` connected through it.
async fn proxied(options: MysqlOptions) -> (FaultProxy, MysqlStore) {
    let proxy = FaultProxy::start(url_address(&server_url(), 3306))
        .await
        .expect("start the proxy");
    let store = MysqlStore::connect_with(&url_via(&server_url(), proxy.address()), options)
        .await
        .expect("connect through the proxy");
    store.migrate().await.expect("migrate through the proxy");
    (proxy, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_in_the_middle_of_a_mutation_times_out_and_commits_nothing() {
    let tables = namespace_or_skip!(MysqlHarness);
    let direct = migrated(&tables).await;
    let (proxy, store) = proxied(quick(tables.options())).await;
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
        increment(&*direct, "t", "direct").await.is_ok()
    })
    .await;
    assert!(freed, "the row lock of the abandoned transaction is released");
    assert_eq!(final_fence(&*direct, "t").await, 2);
    assert_eq!(
        increment(&store, "t", "w")
            .await
            .expect("the proxied store works again"),
        3
    );
    assert_one_run_per_fence(&*direct, "t", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_vanishes_mid_transaction_holds_its_rows_only_for_the_server_idle_timeout() {
    let tables = namespace_or_skip!(MysqlHarness);
    let direct = tables
        .connect_with(tables.options().with_lock_timeout(StdDuration::from_secs(1)))
        .await;
    direct.migrate().await.expect("migrate");
    let idle = quick(tables.options()).with_server_idle_timeout(StdDuration::from_secs(3));
    let (proxy, store) = proxied(idle).await;
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

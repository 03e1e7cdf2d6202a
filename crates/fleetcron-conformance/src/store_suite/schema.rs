//! Migrations and what a store makes of data it cannot read.

use super::fixtures::*;
use super::{migrated, StoreHarness, StoreNamespace, Suite};
use fleetcron_core::{Mutation, RunQuery, Store, StoreError};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

/// Eight stores open a fresh namespace at once and migrate it at once: every migrate succeeds, a ninth
/// migrates again as a no-op, and the schema works.
pub async fn concurrent_migrations_apply_each_version_once<H: StoreHarness>(suite: &Suite<'_, H>) {
    let (_clock, ns) = suite.namespace(epoch()).await;
    let ns = Arc::new(ns);
    let opening: Vec<_> = (0..8)
        .map(|_| {
            let ns = ns.clone();
            tokio::spawn(async move { ns.open().await })
        })
        .collect();
    let mut stores = Vec::new();
    for handle in opening {
        stores.push(handle.await.expect("open concurrently"));
    }
    let migrating: Vec<_> = stores
        .iter()
        .map(|store| {
            let store = store.clone();
            tokio::spawn(async move { store.migrate().await })
        })
        .collect();
    for handle in migrating {
        handle.await.expect("join").expect("every concurrent migrate succeeds");
    }
    let late = migrated(&*ns).await;
    late.migrate().await.expect("migrating again is a no-op");
    increment(&*stores[7], "t", "w").await.expect("the schema works");
    assert_eq!(final_fence(&*late, "t").await, 1);
}

/// A namespace written by a newer build is refused with `SchemaTooNew` (naming both versions) by a
/// store that migrated it before and by a new one, and stays as it is.
pub async fn a_schema_newer_than_this_build_is_refused<H: StoreHarness>(suite: &Suite<'_, H>) {
    if !suite.needs(suite.capabilities.persistent, "`persistent` (a versioned schema)") {
        return;
    }
    let fresh = suite.fresh(epoch()).await;
    fresh.ns.schema_from_the_future().await;
    for store in [fresh.store.clone(), fresh.ns.open().await, fresh.ns.open().await] {
        match store.migrate().await {
            Err(StoreError::SchemaTooNew { found, supported }) => {
                assert_eq!(found, supported + 5, "found {found}, supported {supported}");
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }
}

/// Before `migrate`, every operation fails with a `Config` error that says to migrate (not a driver
/// error about a missing table); `migrate` then works, twice.
pub async fn operations_before_migrate_say_to_migrate<H: StoreHarness>(suite: &Suite<'_, H>) {
    if !suite.needs(suite.capabilities.refuses_before_migrate, "`refuses_before_migrate`") {
        return;
    }
    let (_clock, ns) = suite.namespace(epoch()).await;
    let store = ns.open().await;
    match store.mutate(&["t".to_owned()], &mut |_, _, _| Mutation::none()).await {
        Err(StoreError::Config(message)) => assert!(message.contains("migrate"), "{message}"),
        other => panic!("expected Config, got {other:?}"),
    }
    let errors = [
        store.due_for_attention(10).await.map(|_| ()),
        store.runs("t", &RunQuery::default()).await.map(|_| ()),
        store.load(None).await.map(|_| ()),
    ];
    for error in errors {
        assert!(matches!(error, Err(StoreError::Config(_))), "{error:?}");
    }
    store.migrate().await.expect("migrate");
    store.migrate().await.expect("migrate again is a no-op");
    increment(&*store, "t", "w").await.expect("the schema works");
    assert!(store.due_for_attention(10).await.expect("poll").1.is_empty());
}

/// A state document that does not decode is `Corrupt` (naming the task) for `load` and for a
/// mutation of it, promptly and every time; the failed mutation holds nothing (other tasks work).
pub async fn a_corrupt_state_document_is_corrupt<H: StoreHarness>(suite: &Suite<'_, H>) {
    if !suite.needs(suite.capabilities.persistent, "`persistent` (encoded documents)") {
        return;
    }
    let fresh = suite.fresh(epoch()).await;
    let store = &*fresh.store;
    put_state(store, new_state("t", epoch())).await;
    fresh.ns.corrupt_state("t").await;
    match store.load(None).await {
        Err(error @ StoreError::Corrupt(_)) => {
            assert!(error.to_string().contains("task t"), "{error}");
            assert!(!error.is_transient());
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    for _ in 0..3 {
        let started = Instant::now();
        let result = store.mutate(&["t".to_owned()], &mut |_, _, _| Mutation::none()).await;
        assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
        assert!(started.elapsed() < StdDuration::from_secs(2), "{:?}", started.elapsed());
    }
    increment(store, "other", "w").await.expect("another task");
    let other = fresh.ns.open().await;
    assert_eq!(increment(&*other, "other", "w").await.expect("from another store"), 2);
}

//! Writers that wait: a lock another session holds makes a writer wait, within its timeout, and past
//! it be `Unavailable`, while reads (and, with per-task locks, other tasks) go on.

use super::fixtures::*;
use super::{migrated, Locks, StoreHarness, StoreNamespace, Suite};
use fleetcron_core::{Mutation, Store, StoreError};
use std::time::{Duration, Instant};

/// A writer that cannot get a task's lock (another session holds it) is `Unavailable`, naming the
/// store, once its lock timeout passes — not sooner, and not much later — while reads go on and, where
/// locks are per task, so do other tasks; once the lock is free the write commits.
pub async fn a_lock_held_elsewhere_makes_a_writer_unavailable_past_its_timeout<H: StoreHarness>(suite: &Suite<'_, H>) {
    if !suite.needs(suite.capabilities.locks != Locks::None, "`locks`") {
        return;
    }
    let fresh = suite.fresh(epoch()).await;
    put_state(&*fresh.store, new_state("t", epoch())).await;
    put_state(&*fresh.store, new_state("u", epoch())).await;
    let impatient = fresh.ns.open_impatient().await;
    impatient.migrate().await.expect("migrate");
    let holder = fresh.ns.hold_lock("t").await;

    let started = Instant::now();
    let error = match increment(&*impatient, "t", "w").await {
        Err(error @ StoreError::Unavailable(_)) => error,
        other => panic!("a write of a task locked elsewhere: expected Unavailable, got {other:?}"),
    };
    let waited = started.elapsed();
    assert!(error.is_transient());
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    if let Some(label) = fresh.ns.label() {
        assert!(error.to_string().contains(&label), "{error} does not name {label}");
    }
    impatient
        .load(None)
        .await
        .expect("a read while a writer holds the lock");
    impatient
        .due_for_attention(10)
        .await
        .expect("the idle poll while a writer holds the lock");
    if suite.capabilities.locks == Locks::PerTask {
        assert_eq!(increment(&*impatient, "u", "w").await.expect("another task"), 1);
    }
    drop(holder);
    assert_eq!(increment(&*fresh.store, "t", "w").await.expect("the lock is free"), 1);
}

/// A writer waits for a lock another session holds for less than its timeout, then commits; a server
/// store reads its clock after the wait, so the wait never ages the decision.
pub async fn a_writer_waits_for_a_lock_within_its_timeout<H: StoreHarness>(suite: &Suite<'_, H>) {
    if !suite.needs(suite.capabilities.locks != Locks::None, "`locks`") {
        return;
    }
    let fresh = suite.fresh(epoch()).await;
    put_state(&*fresh.store, new_state("t", epoch())).await;
    let store = migrated(&fresh.ns).await;
    let holder = fresh.ns.hold_lock("t").await;
    let releaser = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(holder);
    });
    let started = Instant::now();
    let at = store
        .mutate(&["t".to_owned()], &mut |_, _, stored| Mutation {
            state: stored.map(|state| fleetcron_core::TaskState {
                fence: state.fence + 1,
                ..state.clone()
            }),
            ..Mutation::none()
        })
        .await
        .expect("waits, then commits");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    releaser.await.expect("join");
    assert_eq!(final_fence(&*store, "t").await, 1);
    let after = store.now().await.expect("now");
    assert!(
        after - at < chrono::Duration::milliseconds(200),
        "decided at {at}, now {after}: the clock was read before the wait"
    );
}

//! Row locks: a task's row locked by another session makes a writer wait within the lock timeout
//! (its clock read after the wait) and past it be `Unavailable` while other tasks and reads go on.
//! Stores racing on one namespace are cases of the store suite.

use crate::*;
use chrono::Duration;
use fleetcron_core::{Mutation, StoreError};
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_lock_held_past_the_lock_timeout_is_unavailable() {
    let Some(tables) = Tables::create("a_row_lock_held_past_the_lock_timeout_is_unavailable").await else {
        return;
    };
    let store = tables
        .connect_with(tables.options().with_lock_timeout(std::time::Duration::from_secs(1)))
        .await;
    store.migrate().await.expect("migrate");
    put_state(&store, new_state("t", epoch())).await;

    let mut conn = tables.raw().await;
    sqlx::query("BEGIN").execute(&mut conn).await.expect("begin");
    sqlx::query(&format!(
        "SELECT id FROM {}tasks WHERE id = 't' FOR UPDATE",
        tables.prefix
    ))
    .fetch_all(&mut conn)
    .await
    .expect("lock the row");
    let started = Instant::now();
    let error = increment(&store, "t", "w").await.expect_err("locked out");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(error.is_transient());
    assert!(error.to_string().contains("MySQL store"), "{error}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    // Other tasks, reads and the idle poll are not blocked by the lock.
    assert_eq!(increment(&store, "other", "w").await.expect("another task"), 1);
    store.load(None).await.expect("read during a write");
    store.due_for_attention(10).await.expect("poll during a write");
    sqlx::query("ROLLBACK").execute(&mut conn).await.expect("unlock");

    assert_eq!(increment(&store, "t", "w").await.expect("lock released"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_waits_for_the_lock_within_the_lock_timeout() {
    let Some(tables) = Tables::create("a_writer_waits_for_the_lock_within_the_lock_timeout").await else {
        return;
    };
    let store = tables.store().await;
    put_state(&store, new_state("t", epoch())).await;
    let mut conn = tables.raw().await;
    sqlx::query("BEGIN").execute(&mut conn).await.expect("begin");
    sqlx::query(&format!(
        "SELECT id FROM {}tasks WHERE id = 't' FOR UPDATE",
        tables.prefix
    ))
    .fetch_all(&mut conn)
    .await
    .expect("lock the row");
    let prefix = tables.prefix.clone();
    let releaser = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        sqlx::query(&format!(
            "UPDATE {prefix}tasks SET state = JSON_SET(state, '$.fence', 41) WHERE id = 't'"
        ))
        .execute(&mut conn)
        .await
        .expect("write");
        sqlx::query("COMMIT").execute(&mut conn).await.expect("unlock");
    });
    let started = Instant::now();
    let mut seen_fence = None;
    let at = store
        .mutate(&["t".to_owned()], &mut |_, _, stored| {
            seen_fence = stored.map(|state| state.fence);
            Mutation::none()
        })
        .await
        .expect("waits, then reads");
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
    // The decision saw the other transaction's committed write, and its clock was read after the wait.
    assert_eq!(seen_fence, Some(41));
    let after = store.now().await.expect("now");
    assert!(after - at < Duration::milliseconds(200), "decided at {at}, now {after}");
    releaser.await.expect("join");
}

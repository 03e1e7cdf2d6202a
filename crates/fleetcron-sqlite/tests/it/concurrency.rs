//! The busy timeout: a writer waits for another connection's write lock, and past the timeout is
//! `Unavailable` while reads go on (WAL). Stores racing on one file are cases of the store suite.

use crate::*;
use fleetcron_core::StoreError;
use fleetcron_sqlite::SqliteOptions;
use std::time::Duration as StdDuration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_held_past_the_busy_timeout_is_unavailable() {
    let db = test_db();
    let options = SqliteOptions::default().with_busy_timeout(StdDuration::from_millis(200));
    let store = SqliteStore::open_with(&db.path, options).await.expect("open");
    store.migrate().await.expect("migrate");

    let mut conn = raw_connection(&db.path).await;
    sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await.expect("lock");
    let started = std::time::Instant::now();
    let error = increment(&store, "t", "w").await.expect_err("locked out");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(error.is_transient());
    assert!(error.to_string().contains(&db.path.display().to_string()), "{error}");
    assert!(started.elapsed() >= StdDuration::from_millis(150));
    // Reads still work while another connection writes (WAL).
    store.load(None).await.expect("read during a write");
    store.due_for_attention(10).await.expect("poll during a write");
    sqlx::query("ROLLBACK").execute(&mut conn).await.expect("unlock");

    assert_eq!(increment(&store, "t", "w").await.expect("lock released"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_waits_for_the_lock_within_the_busy_timeout() {
    let db = test_db();
    let store = store(&db.path).await;
    let mut conn = raw_connection(&db.path).await;
    sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await.expect("lock");
    let releaser = tokio::spawn(async move {
        tokio::time::sleep(StdDuration::from_millis(300)).await;
        sqlx::query("COMMIT").execute(&mut conn).await.expect("unlock");
    });
    assert_eq!(increment(&store, "t", "w").await.expect("waits, then commits"), 1);
    releaser.await.expect("join");
}

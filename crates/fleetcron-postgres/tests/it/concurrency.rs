//! Task locks: PostgreSQL's per-task advisory locks, taken by another session, make a writer wait
//! within the statement timeout and past it be `Unavailable` while other tasks and reads go on. Stores
//! racing on one schema are cases of the store suite.

use crate::*;
use fleetcron_core::StoreError;

/// Takes task `t`'s lock of `schema` (the documented key) in a transaction of `holder`.
async fn lock_task_t(holder: &mut sqlx::PgConnection, schema: &TestSchema) {
    sqlx::query("BEGIN").execute(&mut *holder).await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(fnv1a_32(format!("fleetcron:{}", schema.name).as_bytes()))
        .bind(fnv1a_32(b"t"))
        .execute(&mut *holder)
        .await
        .expect("lock t");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_lock_held_past_the_statement_timeout_is_unavailable() {
    require_server!("a_task_lock_held_past_the_statement_timeout_is_unavailable");
    let schema = TestSchema::new();
    let options = schema
        .options()
        .with_statement_timeout(std::time::Duration::from_millis(300));
    let store = schema.connect_with(options).await;
    store.migrate().await.expect("migrate");

    // Another session holds task t's lock (the documented key), e.g. a worker stuck mid-transaction.
    let mut holder = raw_connection().await;
    lock_task_t(&mut holder, &schema).await;
    let started = std::time::Instant::now();
    let error = increment(&store, "t", "w").await.expect_err("locked out");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(error.is_transient());
    assert!(error.to_string().contains(&schema.name), "{error}");
    let waited = started.elapsed();
    assert!(waited >= std::time::Duration::from_millis(250), "{waited:?}");
    assert!(waited < std::time::Duration::from_secs(3), "{waited:?}");
    // Other tasks and reads are not blocked.
    increment(&store, "u", "w").await.expect("another task");
    store.load(None).await.expect("read while t is locked");
    store.due_for_attention(10).await.expect("poll while t is locked");
    sqlx::query("ROLLBACK").execute(&mut holder).await.expect("unlock");

    assert_eq!(increment(&store, "t", "w").await.expect("lock released"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_waits_for_the_lock_within_the_statement_timeout() {
    require_server!("a_writer_waits_for_the_lock_within_the_statement_timeout");
    let schema = TestSchema::new();
    let store = schema.store().await;
    let mut holder = raw_connection().await;
    lock_task_t(&mut holder, &schema).await;
    let releaser = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        sqlx::query("COMMIT").execute(&mut holder).await.expect("unlock");
    });
    assert_eq!(increment(&store, "t", "w").await.expect("waits, then commits"), 1);
    releaser.await.expect("join");
}

//! Several stores and tasks on one file (several processes: the CLI's multi-process test).

use crate::*;
use fleetcron_core::{RunQuery, StoreError};
use std::time::Duration as StdDuration;

async fn final_fence(store: &SqliteStore, id: &str) -> u64 {
    let (_, states) = store.load(Some(&[id.to_owned()])).await.expect("load");
    states.first().map_or(0, |state| state.fence)
}

/// Every increment's run row, oldest first: one per fence value, none lost, none doubled.
async fn assert_one_run_per_fence(store: &SqliteStore, id: &str, total: u64) {
    let runs = store
        .runs(
            id,
            &RunQuery {
                limit: 10_000,
                before: None,
            },
        )
        .await
        .expect("runs");
    let mut fences: Vec<u64> = runs.iter().map(|run| run.fence).collect();
    fences.sort_unstable();
    assert_eq!(fences, (1..=total).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_serialise_200_increments() {
    let db = test_db();
    let first = Arc::new(store(&db.path).await);
    let second = Arc::new(SqliteStore::open(&db.path).await.expect("open the second store"));

    let mut handles = Vec::new();
    for task in 0..8 {
        let store = Arc::clone(if task % 2 == 0 { &first } else { &second });
        handles.push(tokio::spawn(async move {
            let worker = format!("task-{task}");
            for _ in 0..25 {
                increment(store.as_ref(), "counter", &worker).await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for handle in handles {
        handle.await.expect("join").expect("every increment commits");
    }
    assert_eq!(final_fence(&first, "counter").await, 200);
    assert_eq!(final_fence(&second, "counter").await, 200);
    assert_one_run_per_fence(&first, "counter", 200).await;
}

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

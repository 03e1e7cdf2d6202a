//! What only SQLite's query planner shows; every store operation itself is a case of the store suite.

use crate::*;

#[tokio::test]
async fn the_idle_poll_reads_the_attention_index() {
    use sqlx::Row;
    let db = test_db();
    let _store = store(&db.path).await;
    let mut conn = raw_connection(&db.path).await;
    // The statement SqliteStore::due_for_attention runs (kept in step with src/sql.rs).
    let plan = sqlx::query(
        "EXPLAIN QUERY PLAN SELECT id FROM fleetcron_tasks INDEXED BY fleetcron_tasks_attention_at
         WHERE attention_at <= ?1 ORDER BY id LIMIT ?2",
    )
    .bind(0_i64)
    .bind(10_i64)
    .fetch_all(&mut conn)
    .await
    .expect("query plan");
    let details: Vec<String> = plan.iter().map(|row| row.get::<String, _>("detail")).collect();
    assert!(
        details
            .iter()
            .any(|detail| detail.contains("fleetcron_tasks_attention_at")),
        "{details:?}"
    );
}

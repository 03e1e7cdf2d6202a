//! What only MySQL shows: the idle poll's plan on the attention index, and table prefixes that keep
//! stores apart in one database. Every store operation itself is a case of the store suite.

use crate::*;
use fleetcron_core::TaskState;

#[tokio::test]
async fn the_idle_poll_is_one_statement_on_the_attention_index() {
    let tables = namespace_or_skip!(MysqlHarness);
    let store = migrated(&tables).await;
    for n in 0..50 {
        put_state(&*store, new_state(&format!("idle-{n:02}"), epoch())).await;
    }
    let mut conn = tables.raw().await;
    // The statement MysqlStore::due_for_attention runs (kept in step with src/sql.rs).
    let plan = sqlx::query(&format!(
        "EXPLAIN SELECT c.now, t.id
         FROM (SELECT CAST(GREATEST(UTC_TIMESTAMP(3) + INTERVAL ? MICROSECOND, ?) AS DATETIME(3)) AS now) AS c
         LEFT JOIN {}tasks AS t FORCE INDEX (attention_at) ON t.attention_at <= c.now
         ORDER BY t.id LIMIT ?",
        tables.prefix
    ))
    .bind(0_i64)
    .bind(epoch().naive_utc())
    .bind(10_i64)
    .fetch_all(&mut conn)
    .await
    .expect("query plan");
    let keys: Vec<String> = plan
        .iter()
        .map(|row| {
            use sqlx::Row;
            let key: Option<Vec<u8>> = row.try_get("key").unwrap_or(None);
            String::from_utf8_lossy(&key.unwrap_or_default()).into_owned()
        })
        .collect();
    assert!(keys.iter().any(|key| key == "attention_at"), "{keys:?}");

    // Its cost, idle: nothing is due.
    for _ in 0..20 {
        store.due_for_attention(1000).await.expect("warm up");
    }
    let polls = 200;
    let started = std::time::Instant::now();
    for _ in 0..polls {
        let (_, ids) = store.due_for_attention(1000).await.expect("poll");
        assert!(ids.is_empty());
    }
    let each = started.elapsed() / polls;
    println!("idle poll (due_for_attention, 50 idle tasks): {each:?} per call");
}

#[tokio::test]
async fn table_prefixes_keep_stores_apart_in_one_database() {
    let tables = namespace_or_skip!(MysqlHarness);
    let p = tables.prefix.clone();
    let first = migrated(&tables).await;
    let other = MysqlStore::connect_with(&format!("{}?table_prefix={p}o_", server_url()), tables.options())
        .await
        .expect("connect with a prefix");
    assert_eq!(
        other.table_prefix(),
        format!("{p}o_"),
        "the URL's prefix wins over the option"
    );
    other.migrate().await.expect("migrate");
    let by_option = MysqlStore::connect_with(&server_url(), tables.options().with_table_prefix(format!("{p}t_")))
        .await
        .expect("connect");
    by_option.migrate().await.expect("migrate");
    assert_eq!(by_option.table_prefix(), format!("{p}t_"));

    put_state(&*first, new_state("only-first", epoch())).await;
    put_state(&other, new_state("only-other", epoch())).await;
    let ids = |states: Vec<TaskState>| states.into_iter().map(|s| s.definition.id).collect::<Vec<_>>();
    assert_eq!(ids(first.load(None).await.expect("load").1), ["only-first"]);
    assert_eq!(ids(other.load(None).await.expect("load").1), ["only-other"]);
    assert!(by_option.load(None).await.expect("load").1.is_empty());

    let tables_found: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT CAST(table_name AS BINARY), CAST(engine AS BINARY), CAST(table_collation AS BINARY)
         FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name LIKE ?",
    )
    .bind(format!("{}%", p.replace('_', "\\_")))
    .fetch_all(&mut tables.raw().await)
    .await
    .expect("tables");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let mut names: Vec<String> = tables_found.iter().map(|(name, _, _)| text(name)).collect();
    names.sort();
    let mut expected: Vec<String> = [
        "o_runs", "o_schema", "o_tasks", "runs", "schema", "t_runs", "t_schema", "t_tasks", "tasks",
    ]
    .iter()
    .map(|table| format!("{p}{table}"))
    .collect();
    expected.sort();
    assert_eq!(names, expected);
    for (name, engine, collation) in &tables_found {
        assert_eq!(text(engine), "InnoDB", "{}", text(name));
        assert_eq!(text(collation), "utf8mb4_bin", "{}", text(name));
    }
}

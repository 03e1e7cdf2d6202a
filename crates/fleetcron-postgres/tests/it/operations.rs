//! What only PostgreSQL shows: the idle poll's plan on the attention index, NUL characters (which
//! `text` and `jsonb` refuse) and instants outside its range. Every store operation itself is a case
//! of the store suite.

use crate::*;
use chrono::{Duration, Utc};
use fleetcron_core::{Mutation, RunQuery, RunRecord, RunStatus, StoreError};
use serde_json::json;

#[tokio::test]
async fn the_idle_poll_reads_the_attention_index_and_is_fast() {
    use sqlx::Row;
    let schema = namespace_or_skip!(PostgresHarness);
    let store = migrated(&schema).await;
    // 5,000 idle tasks and 3 that want attention, registered in one batch.
    let ids: Vec<String> = (0..5_003).map(|n| format!("task-{n:05}")).collect();
    store
        .mutate(&ids, &mut |now, id, _| {
            let state = if id >= "task-05000" {
                state_wanting_attention(id, now, now - Duration::seconds(1))
            } else {
                new_state(id, now)
            };
            Mutation {
                state: Some(state),
                ..Mutation::none()
            }
        })
        .await
        .expect("register");
    let mut conn = raw_connection().await;
    sqlx::query(&format!("ANALYZE \"{}\".fleetcron_tasks", schema.name))
        .execute(&mut conn)
        .await
        .expect("analyze");
    // The statement PostgresStore::due_for_attention runs (kept in step with src/sql.rs).
    let plan = sqlx::query(&format!(
        "EXPLAIN WITH clock AS MATERIALIZED (SELECT GREATEST(date_trunc('milliseconds', clock_timestamp() + \
         0::int8 * interval '1 microsecond'), NULL::timestamptz) AS now),
         due AS MATERIALIZED (SELECT t.id FROM \"{0}\".fleetcron_tasks AS t, clock WHERE t.attention_at <= clock.now)
         SELECT clock.now, ARRAY(SELECT id FROM due ORDER BY id LIMIT 1000::int8) FROM clock",
        schema.name
    ))
    .fetch_all(&mut conn)
    .await
    .expect("query plan");
    let lines: Vec<String> = plan.iter().map(|row| row.get::<String, _>(0)).collect();
    assert!(
        lines.iter().any(|line| line.contains("fleetcron_tasks_attention_at")),
        "{lines:#?}"
    );

    let (_, due) = store.due_for_attention(1000).await.expect("poll");
    assert_eq!(due, ["task-05000", "task-05001", "task-05002"]);
    let polls = 200;
    let started = std::time::Instant::now();
    for _ in 0..polls {
        store.due_for_attention(1000).await.expect("poll");
    }
    let per_poll = started.elapsed() / polls;
    println!("idle poll (due_for_attention, 5,003 tasks, 3 due): {per_poll:?} per poll over {polls} polls");
}

#[tokio::test]
async fn nul_characters_in_texts_and_results_are_stored_not_refused() {
    let schema = namespace_or_skip!(PostgresHarness);
    let store = migrated(&schema).await;
    let mut record = run("t", "r1", Some(0), 1, RunStatus::Failed);
    record.error = Some("bad\0byte".to_owned());
    record.result = Some(json!({"out": "a\u{0}b"}));
    let mut state = new_state("t", epoch());
    state.last_run = Some(fleetcron_core::LastRun {
        run_id: "r1".to_owned(),
        status: RunStatus::Failed,
        started_at: epoch(),
        finished_at: epoch(),
        result: Some(json!("x\u{0}")),
        error: Some("bad\0byte".to_owned()),
    });
    let mut pending = Some((state, record));
    store
        .mutate(&["t".to_owned()], &mut |_, _, _| {
            let (state, record) = pending.take().expect("called once");
            Mutation {
                state: Some(state),
                insert_runs: vec![record],
                update_runs: Vec::new(),
            }
        })
        .await
        .expect("NUL characters do not refuse the write");
    let runs = store.runs("t", &RunQuery::default()).await.expect("runs");
    assert_eq!(runs[0].error.as_deref(), Some("bad\u{fffd}byte"));
    assert_eq!(runs[0].result, Some(json!({"out": "a\u{fffd}b"})));
    let (_, states) = store.load(None).await.expect("load");
    let last = states[0].last_run.as_ref().expect("last run");
    assert_eq!(last.result, Some(json!("x\u{fffd}")));
}

#[tokio::test]
async fn an_instant_postgresql_cannot_store_is_refused_not_retried() {
    let schema = namespace_or_skip!(PostgresHarness);
    let store = migrated(&schema).await;
    for slot in [chrono::DateTime::<Utc>::MIN_UTC, chrono::DateTime::<Utc>::MAX_UTC] {
        let mut record = Some(RunRecord {
            slot: Some(slot),
            slot_until: None,
            slot_count: None,
            ..run("t", "r1", None, 1, RunStatus::Running)
        });
        let result = store
            .mutate(&["t".to_owned()], &mut |_, _, _| Mutation {
                insert_runs: record.take().into_iter().collect(),
                ..Mutation::none()
            })
            .await;
        match result {
            Err(error @ StoreError::Corrupt(_)) => assert!(!error.is_transient()),
            Ok(_) => {
                // Within PostgreSQL's range (up to 294276 AD): stored and read back exactly.
                let runs = store.runs("t", &RunQuery::default()).await.expect("runs");
                assert_eq!(
                    runs[0].slot.map(|at| at.timestamp_micros()),
                    Some(slot.timestamp_micros())
                );
            }
            Err(other) => panic!("{slot}: expected Corrupt, got {other:?}"),
        }
    }
    assert!(store.runs("t", &RunQuery::default()).await.expect("runs").len() <= 1);
}

//! The store operations, one by one, and differentially against the in-memory reference store.

use crate::*;
use fleetcron_core::clock::OffsetClock;
use fleetcron_core::{MemoryStore, Retention, RunQuery, RunUpdate, SharedClock, StoreError};
use serde_json::json;

fn whole_ms(at: Timestamp) -> bool {
    at.timestamp_subsec_nanos() % 1_000_000 == 0
}

#[tokio::test]
async fn mutate_round_trips_state_runs_and_finish() {
    require_server!("mutate_round_trips_state_runs_and_finish");
    let schema = TestSchema::new();
    let store = schema.store().await;
    let ids = vec!["a".to_owned(), "b".to_owned()];

    // First mutation: create `a` with a run; `b` stays missing.
    let mut seen = Vec::new();
    let mut written = None;
    let mut record = None;
    let before = store.now().await.expect("now");
    let at = store
        .mutate(&ids, &mut |now, id, stored| {
            seen.push((now, id.to_owned(), stored.cloned()));
            if id != "a" {
                return Mutation::none();
            }
            let state = state_with_lease(id, now, now + Duration::seconds(30));
            let mut run = run(id, "r1", Some(60_000), 1, RunStatus::Running);
            run.claimed_at = Some(now);
            run.started_at = Some(now);
            run.trigger_id = Some("t-1".to_owned());
            run.reason = Some("first".to_owned());
            written = Some(state.clone());
            record = Some(run.clone());
            Mutation {
                state: Some(state),
                insert_runs: vec![run],
                update_runs: Vec::new(),
            }
        })
        .await
        .expect("first mutation");
    // The store keeps milliseconds, and its clock does not go back.
    assert!(whole_ms(at), "{at}");
    assert!(at >= before);
    assert!((Utc::now() - at).num_seconds().abs() < 5, "the server's clock: {at}");
    assert_eq!(
        seen,
        vec![(at, "a".to_owned(), None), (at, "b".to_owned(), None)],
        "decide sees every id in order, with the store's now"
    );

    let (_, states) = store.load(None).await.expect("load");
    assert_eq!(states, vec![written.clone().expect("state written")]);
    let (_, states) = store.load(Some(&ids)).await.expect("load some");
    assert_eq!(states, vec![written.clone().expect("state written")]);
    let runs = store.runs("a", &RunQuery::default()).await.expect("runs");
    assert_eq!(runs, vec![record.clone().expect("run written")]);
    assert!(store.runs("b", &RunQuery::default()).await.expect("runs").is_empty());

    // Second mutation: decide sees the stored state; end the run with a result.
    let mut seen_state = None;
    let at2 = store
        .mutate(&ids[..1], &mut |now, _, stored| {
            seen_state = stored.cloned();
            let mut state = stored.cloned().expect("a is stored");
            state.running.clear();
            Mutation {
                state: Some(state),
                insert_runs: Vec::new(),
                update_runs: vec![RunUpdate {
                    result: Some(json!({"rows": 3, "note": "ok", "nested": [1, "two", null, 2.5, u64::MAX]})),
                    fence: 9,
                    worker: Some("w2".to_owned()),
                    claimed_at: Some(at),
                    started_at: Some(at + ms(3)),
                    ..finish("r1", RunStatus::Succeeded, now)
                }],
            }
        })
        .await
        .expect("second mutation");
    assert!(at2 >= at);
    assert_eq!(seen_state, written);
    let runs = store.runs("a", &RunQuery::default()).await.expect("runs");
    let expected = RunRecord {
        status: RunStatus::Succeeded,
        fence: 9,
        worker: Some("w2".to_owned()),
        claimed_at: Some(at),
        started_at: Some(at + ms(3)),
        finished_at: Some(at2),
        result: Some(json!({"rows": 3, "note": "ok", "nested": [1, "two", null, 2.5, u64::MAX]})),
        // Every mutable column is set: no reason in the update clears the stored one.
        reason: None,
        error: None,
        // Identity columns never change.
        ..record.expect("run written")
    };
    assert_eq!(runs, vec![expected]);
    let (_, states) = store.load(None).await.expect("load");
    assert!(states[0].running.is_empty());

    // A JSON string result stays a string; an error text and a reason are kept.
    store
        .mutate(&ids[..1], &mut |now, _, _| Mutation {
            update_runs: vec![RunUpdate {
                result: Some(json!("just text")),
                error: Some("boom".to_owned()),
                reason: Some("second".to_owned()),
                ..finish("r1", RunStatus::Failed, now)
            }],
            ..Mutation::none()
        })
        .await
        .expect("third mutation");
    let runs = store.runs("a", &RunQuery::default()).await.expect("runs");
    assert_eq!(runs[0].result, Some(json!("just text")));
    assert_eq!(runs[0].error.as_deref(), Some("boom"));
    assert_eq!(runs[0].reason.as_deref(), Some("second"));
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert_eq!(runs[0].trigger_id.as_deref(), Some("t-1"));
}

#[tokio::test]
async fn a_pending_row_starts_and_ends_like_in_the_reference_store() {
    require_server!("a_pending_row_starts_and_ends_like_in_the_reference_store");
    let schema = TestSchema::new();
    let pending = RunRecord {
        status: RunStatus::Pending,
        worker: None,
        claimed_at: None,
        started_at: None,
        fence: 0,
        kind: RunKind::Manual,
        trigger_id: Some("trigger-1".to_owned()),
        ..run("t", "p1", None, 1, RunStatus::Pending)
    };
    let (postgres, memory) = both_stores(&schema, Duration::zero(), &[("t", pending)]).await;

    async fn start_then_end<S: Store>(store: &S) -> Vec<RunRecord> {
        let start = RunUpdate {
            status: RunStatus::Running,
            fence: 4,
            worker: Some("w9".to_owned()),
            claimed_at: Some(epoch() + ms(10)),
            started_at: Some(epoch() + ms(11)),
            finished_at: None,
            ..finish("p1", RunStatus::Running, epoch())
        };
        store
            .mutate(&["t".to_owned()], &mut |_, _, _| Mutation {
                update_runs: vec![start.clone()],
                ..Mutation::none()
            })
            .await
            .expect("start");
        let mut history = store.runs("t", &RunQuery::default()).await.expect("runs");
        store
            .mutate(&["t".to_owned()], &mut |_, _, _| Mutation {
                update_runs: vec![RunUpdate {
                    status: RunStatus::TimedOut,
                    finished_at: Some(epoch() + ms(99)),
                    error: Some("timed out after 88 ms".to_owned()),
                    ..start.clone()
                }],
                ..Mutation::none()
            })
            .await
            .expect("end");
        history.extend(store.runs("t", &RunQuery::default()).await.expect("runs"));
        history
    }
    let from_postgres = start_then_end(&postgres).await;
    assert_eq!(from_postgres, start_then_end(&memory).await);
    assert_eq!(from_postgres[0].status, RunStatus::Running);
    assert_eq!(from_postgres[0].worker.as_deref(), Some("w9"));
    assert_eq!(from_postgres[1].status, RunStatus::TimedOut);
    assert_eq!(from_postgres[1].trigger_id.as_deref(), Some("trigger-1"));
}

#[tokio::test]
async fn a_run_inserted_and_updated_in_one_mutation_is_updated() {
    require_server!("a_run_inserted_and_updated_in_one_mutation_is_updated");
    let schema = TestSchema::new();
    let (postgres, memory) = both_stores(&schema, Duration::zero(), &[]).await;
    async fn insert_and_start<S: Store>(store: &S) -> Vec<RunRecord> {
        store
            .mutate(&["t".to_owned()], &mut |now, id, _| Mutation {
                state: Some(new_state(id, now)),
                insert_runs: vec![run("t", "r1", Some(0), 1, RunStatus::Pending)],
                update_runs: vec![finish("r1", RunStatus::Succeeded, epoch() + ms(5))],
            })
            .await
            .expect("mutate");
        store.runs("t", &RunQuery::default()).await.expect("runs")
    }
    let from_postgres = insert_and_start(&postgres).await;
    assert_eq!(from_postgres, insert_and_start(&memory).await);
    assert_eq!(from_postgres[0].status, RunStatus::Succeeded);
}

#[tokio::test]
async fn a_duplicate_in_the_middle_of_a_batch_leaves_nothing_written() {
    require_server!("a_duplicate_in_the_middle_of_a_batch_leaves_nothing_written");
    let schema = TestSchema::new();
    let store = schema.store().await;
    insert_runs(&store, "b", vec![run("b", "b-1", Some(1_000), 1, RunStatus::Succeeded)]).await;
    put_state(&store, new_state("c", epoch())).await;

    let ids: Vec<String> = ["a", "b", "c"].map(str::to_owned).to_vec();
    let result = store
        .mutate(&ids, &mut |now, id, _| {
            let mut state = new_state(id, now);
            state.fence = 7;
            Mutation {
                state: Some(state),
                insert_runs: vec![run(id, &format!("{id}-2"), Some(1_000), 1, RunStatus::Running)],
                update_runs: vec![finish(&format!("{id}-1"), RunStatus::Failed, now)],
            }
        })
        .await;
    match result {
        Err(StoreError::Duplicate(message)) => {
            assert!(message.contains("task b"), "{message}");
            assert!(message.contains("attempt 1"), "{message}");
            assert!(message.contains("2030-01-01T00:00:01"), "{message}");
            assert!(message.contains(&schema.name), "{message}");
        }
        other => panic!("expected Duplicate, got {other:?}"),
    }
    // Nothing of the batch landed: not a's state, not c's new fence, no run, no finish.
    let (_, states) = store.load(None).await.expect("load");
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].definition.id, "c");
    assert_eq!(states[0].fence, 0);
    assert!(store.runs("a", &RunQuery::default()).await.expect("runs").is_empty());
    let b_runs = store.runs("b", &RunQuery::default()).await.expect("runs");
    assert_eq!(b_runs.len(), 1);
    assert_eq!(b_runs[0].status, RunStatus::Succeeded);
    assert!(store.runs("c", &RunQuery::default()).await.expect("runs").is_empty());
    // The store still works, on the same pooled connections.
    for _ in 0..6 {
        increment(&store, "c", "w").await.expect("later mutations commit");
    }
    assert_eq!(final_fence(&store, "c").await, 6);
}

#[tokio::test]
async fn the_unique_key_refuses_a_second_row_for_a_slot_and_attempt() {
    require_server!("the_unique_key_refuses_a_second_row_for_a_slot_and_attempt");
    let schema = TestSchema::new();
    let store = schema.store().await;
    insert_runs(&store, "t", vec![run("t", "r1", Some(0), 1, RunStatus::Running)]).await;

    let try_insert = |runs: Vec<RunRecord>| {
        let store = &store;
        async move {
            let mut runs = Some(runs);
            store
                .mutate(&["t".to_owned()], &mut |_, _, _| Mutation {
                    insert_runs: runs.take().unwrap_or_default(),
                    ..Mutation::none()
                })
                .await
        }
    };
    // The same slot and attempt under another run id: refused.
    match try_insert(vec![run("t", "r2", Some(0), 1, RunStatus::Running)]).await {
        Err(StoreError::Duplicate(message)) => {
            assert!(message.contains("task t slot 2030-01-01T00:00:00"), "{message}");
        }
        other => panic!("expected Duplicate, got {other:?}"),
    }
    // Twice within one mutation: refused, and nothing of it lands.
    match try_insert(vec![
        run("t", "r3", Some(7), 1, RunStatus::Running),
        run("t", "r4", Some(7), 1, RunStatus::Running),
    ])
    .await
    {
        Err(StoreError::Duplicate(message)) => assert!(message.contains("task t slot"), "{message}"),
        other => panic!("expected Duplicate, got {other:?}"),
    }
    // A reused run id: refused.
    match try_insert(vec![run("t", "r1", Some(9), 1, RunStatus::Running)]).await {
        Err(StoreError::Duplicate(message)) => assert!(message.contains("run id r1"), "{message}"),
        other => panic!("expected Duplicate, got {other:?}"),
    }
    match try_insert(vec![
        run("t", "r9", Some(10), 1, RunStatus::Running),
        run("t", "r9", Some(11), 1, RunStatus::Running),
    ])
    .await
    {
        Err(StoreError::Duplicate(message)) => assert!(message.contains("run id r9 appears twice"), "{message}"),
        other => panic!("expected Duplicate, got {other:?}"),
    }
    // Another attempt of the slot, another slot, and any number of slot-less (manual) runs are fine.
    try_insert(vec![
        run("t", "r5", Some(0), 2, RunStatus::Running),
        run("t", "r6", Some(1), 1, RunStatus::Running),
        run("t", "r7", None, 1, RunStatus::Running),
        run("t", "r8", None, 1, RunStatus::Running),
    ])
    .await
    .expect("distinct keys are accepted");
    // The same slot of another task is another key.
    insert_runs(&store, "u", vec![run("u", "u1", Some(0), 1, RunStatus::Running)]).await;
    let ids: Vec<String> = store
        .runs("t", &RunQuery::default())
        .await
        .expect("runs")
        .into_iter()
        .map(|run| run.run_id)
        .collect();
    assert_eq!(ids, ["r8", "r7", "r6", "r5", "r1"]);
}

#[tokio::test]
async fn due_for_attention_returns_due_ids_in_id_order_up_to_the_limit() {
    require_server!("due_for_attention_returns_due_ids_in_id_order_up_to_the_limit");
    let schema = TestSchema::new();
    let store = schema.store().await;
    let now = store.now().await.expect("now");
    put_state(
        &store,
        state_wanting_attention("p-past", now, now - Duration::seconds(1)),
    )
    .await;
    put_state(&store, state_wanting_attention("p-now", now, now)).await;
    put_state(
        &store,
        state_wanting_attention("p-future", now, now + Duration::seconds(30)),
    )
    .await;
    put_state(&store, state_with_lease("l-expired", now, now - Duration::seconds(3))).await;
    put_state(&store, state_with_lease("l-live", now, now + Duration::seconds(30))).await;
    put_state(&store, new_state("idle", now)).await;

    let (at, ids) = store.due_for_attention(100).await.expect("poll");
    assert!(at >= now && whole_ms(at), "{at}");
    assert_eq!(ids, ["l-expired", "p-now", "p-past"]);
    let (_, ids) = store.due_for_attention(2).await.expect("poll");
    assert_eq!(ids, ["l-expired", "p-now"]);
    assert!(store.due_for_attention(0).await.expect("poll").1.is_empty());

    // A store whose clock is a minute ahead sees the rest as due.
    let ahead = schema.store_with_offset(Duration::seconds(60)).await;
    let (ahead_at, ids) = ahead.due_for_attention(100).await.expect("poll");
    assert!(ahead_at >= now + Duration::seconds(59), "{ahead_at}");
    assert_eq!(ids, ["l-expired", "l-live", "p-future", "p-now", "p-past"]);

    // Half a millisecond late: due only once the whole millisecond has passed, as with exact instants.
    let late = schema.store_with_offset(Duration::seconds(-3600)).await;
    let late_now = late.now().await.expect("now");
    put_state(
        &store,
        state_wanting_attention("p-sub-ms", now, late_now + Duration::microseconds(500)),
    )
    .await;
    // Every later reading of `late` is past late_now + 1 ms (a round trip takes longer).
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (late_at, ids) = late.due_for_attention(100).await.expect("poll");
    assert!(late_at >= late_now + ms(1));
    assert!(ids.contains(&"p-sub-ms".to_owned()), "{ids:?}");
    assert!(!ids.contains(&"p-past".to_owned()), "an hour behind: {ids:?}");

    // Clearing the pending work clears the attention mark.
    put_state(&store, new_state("p-now", now)).await;
    let (_, ids) = store.due_for_attention(100).await.expect("poll");
    assert!(!ids.contains(&"p-now".to_owned()));

    // Same answers as the reference store, a day ahead (everything due) and now.
    for offset in [Duration::days(1), Duration::zero()] {
        let memory = MemoryStore::with_clock(Arc::new(OffsetClock::new(offset)));
        let postgres = schema.store_with_offset(offset).await;
        let (_, states) = postgres.load(None).await.expect("load");
        for state in states {
            put_state(&memory, state).await;
        }
        for limit in [0, 1, 3, 100] {
            assert_eq!(
                memory.due_for_attention(limit).await.expect("memory poll").1,
                postgres.due_for_attention(limit).await.expect("poll").1,
                "offset {offset}, limit {limit}"
            );
        }
    }
}

#[tokio::test]
async fn the_idle_poll_reads_the_attention_index_and_is_fast() {
    use sqlx::Row;
    require_server!("the_idle_poll_reads_the_attention_index_and_is_fast");
    let schema = TestSchema::new();
    let store = schema.store().await;
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
async fn load_sorts_by_id_and_skips_unknown_ids() {
    require_server!("load_sorts_by_id_and_skips_unknown_ids");
    let schema = TestSchema::new();
    let store = schema.store().await;
    let (at, states) = store.load(None).await.expect("load an empty store");
    assert!(states.is_empty() && whole_ms(at));
    // Byte order, whatever the database's locale: upper case before lower case, '-' before digits.
    for id in ["m", "b", "z", "a", "B", "a-1", "a0"] {
        put_state(&store, new_state(id, epoch())).await;
    }
    let ids = |states: Vec<TaskState>| states.into_iter().map(|s| s.definition.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.load(None).await.expect("load").1),
        ["B", "a", "a-1", "a0", "b", "m", "z"]
    );
    let wanted: Vec<String> = ["z", "nope", "b"].map(str::to_owned).to_vec();
    assert_eq!(ids(store.load(Some(&wanted)).await.expect("load").1), ["b", "z"]);
    assert!(store.load(Some(&[])).await.expect("load").1.is_empty());
}

#[tokio::test]
async fn runs_page_newest_first() {
    require_server!("runs_page_newest_first");
    let schema = TestSchema::new();
    let store = schema.store().await;
    for batch in 0..5 {
        let records = (0..5)
            .map(|i| {
                let n = batch * 5 + i;
                run("t", &format!("run-{n:03}"), Some(n * 1_000), 1, RunStatus::Succeeded)
            })
            .collect();
        insert_runs(&store, "t", records).await;
    }
    insert_runs(
        &store,
        "other",
        vec![run("other", "run-999", Some(0), 1, RunStatus::Failed)],
    )
    .await;

    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .runs(
                "t",
                &RunQuery {
                    limit: 10,
                    before: before.clone(),
                },
            )
            .await
            .expect("page");
        if page.is_empty() {
            break;
        }
        before = page.last().map(|run| run.run_id.clone());
        pages.push(page.into_iter().map(|run| run.run_id).collect::<Vec<_>>());
    }
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[0].len(), 10);
    assert_eq!(pages[2].len(), 5);
    let all: Vec<String> = pages.concat();
    let expected: Vec<String> = (0..25).rev().map(|n| format!("run-{n:03}")).collect();
    assert_eq!(all, expected);
    assert!(store
        .runs("t", &RunQuery { limit: 0, before: None })
        .await
        .expect("empty page")
        .is_empty());
    assert!(store
        .runs("nobody", &RunQuery::default())
        .await
        .expect("runs")
        .is_empty());
}

/// The same history in a PostgreSQL store and a memory store whose clocks read `offset` ahead of the
/// system's, for differential checks.
async fn both_stores(
    schema: &TestSchema,
    offset: Duration,
    rows: &[(&str, RunRecord)],
) -> (PostgresStore, MemoryStore) {
    let postgres = schema.store_with_offset(offset).await;
    let clock: SharedClock = Arc::new(OffsetClock::new(offset));
    let memory = MemoryStore::with_clock(clock);
    for (task, record) in rows {
        insert_runs(&postgres, task, vec![record.clone()]).await;
        insert_runs(&memory, task, vec![record.clone()]).await;
    }
    (postgres, memory)
}

async fn run_ids<S: Store>(store: &S, task: &str) -> Vec<String> {
    store
        .runs(
            task,
            &RunQuery {
                limit: 1000,
                before: None,
            },
        )
        .await
        .expect("runs")
        .into_iter()
        .map(|run| run.run_id)
        .collect()
}

#[tokio::test]
async fn prune_keep_last_keeps_the_newest_rows_and_every_running_row() {
    require_server!("prune_keep_last_keeps_the_newest_rows_and_every_running_row");
    let schema = TestSchema::new();
    let mut rows = Vec::new();
    for n in 0..8 {
        rows.push(("a", finished_run("a", &format!("a{n}"), epoch() + Duration::minutes(n))));
    }
    // A running row among the oldest, and a row with no end time.
    rows.push(("a", run("a", "a00-running", Some(0), 1, RunStatus::Running)));
    rows.push(("a", run("a", "a05-skipped", Some(5), 1, RunStatus::Skipped)));
    for n in 0..2 {
        rows.push(("b", finished_run("b", &format!("b{n}"), epoch())));
    }
    let offset = (epoch() + Duration::days(1)) - Utc::now();
    let (postgres, memory) = both_stores(&schema, offset, &rows).await;

    let retention = Retention {
        keep_last: Some(3),
        max_age: None,
    };
    let removed = fleetcron_conformance::store_fixtures::prune(&postgres, &retention)
        .await
        .expect("prune");
    assert_eq!(
        removed,
        fleetcron_conformance::store_fixtures::prune(&memory, &retention)
            .await
            .expect("memory prune")
    );
    assert_eq!(removed, 6);
    assert_eq!(run_ids(&postgres, "a").await, ["a7", "a6", "a5", "a00-running"]);
    assert_eq!(run_ids(&postgres, "a").await, run_ids(&memory, "a").await);
    assert_eq!(run_ids(&postgres, "b").await, ["b1", "b0"]);

    // keep_last = 0 removes everything but running rows; pruning again removes nothing more.
    let none_kept = Retention {
        keep_last: Some(0),
        max_age: None,
    };
    assert_eq!(
        fleetcron_conformance::store_fixtures::prune(&postgres, &none_kept)
            .await
            .expect("prune"),
        5
    );
    assert_eq!(run_ids(&postgres, "a").await, ["a00-running"]);
    assert_eq!(
        fleetcron_conformance::store_fixtures::prune(&postgres, &none_kept)
            .await
            .expect("prune"),
        0
    );

    // A freed slot key can be used again.
    insert_runs(&postgres, "a", vec![run("a", "a99", Some(5), 1, RunStatus::Running)]).await;
}

#[tokio::test]
async fn prune_max_age_uses_the_store_clock_and_end_times() {
    require_server!("prune_max_age_uses_the_store_clock_and_end_times");
    let schema = TestSchema::new();
    let now = epoch() + Duration::days(40);
    let rows = vec![
        ("a", finished_run("a", "a1", now - Duration::days(31))),
        ("a", finished_run("a", "a2", now - Duration::days(29))),
        // Never finished, still running although very old: kept.
        ("a", run("a", "a3", Some(0), 1, RunStatus::Running)),
        // No end time (skipped slot recorded without one): kept by age.
        ("a", run("a", "a4", Some(1), 1, RunStatus::Skipped)),
        ("a", finished_run("a", "a5", now - Duration::days(35))),
        ("a", finished_run("a", "a6", now - Duration::hours(1))),
        ("b", finished_run("b", "b1", now - Duration::days(300))),
    ];
    // The store's clock is moved 40 days past the epoch with the clock offset.
    let (postgres, memory) = both_stores(&schema, now - Utc::now(), &rows).await;

    let retention = Retention {
        keep_last: None,
        max_age: Some(std::time::Duration::from_secs(30 * 24 * 3600)),
    };
    let removed = fleetcron_conformance::store_fixtures::prune(&postgres, &retention)
        .await
        .expect("prune");
    assert_eq!(
        removed,
        fleetcron_conformance::store_fixtures::prune(&memory, &retention)
            .await
            .expect("memory prune")
    );
    assert_eq!(removed, 3);
    assert_eq!(run_ids(&postgres, "a").await, ["a6", "a4", "a3", "a2"]);
    assert_eq!(run_ids(&postgres, "a").await, run_ids(&memory, "a").await);
    assert!(run_ids(&postgres, "b").await.is_empty());

    // Both limits: rows removed for age do not count towards keep_last.
    let both = Retention {
        keep_last: Some(2),
        max_age: Some(std::time::Duration::from_secs(2 * 3600)),
    };
    let removed = fleetcron_conformance::store_fixtures::prune(&postgres, &both)
        .await
        .expect("prune");
    assert_eq!(
        removed,
        fleetcron_conformance::store_fixtures::prune(&memory, &both)
            .await
            .expect("memory prune")
    );
    assert_eq!(run_ids(&postgres, "a").await, run_ids(&memory, "a").await);
    assert_eq!(run_ids(&postgres, "a").await, ["a6", "a4", "a3"]);

    // A max_age too large for the calendar prunes nothing by age.
    let huge = Retention {
        keep_last: None,
        max_age: Some(std::time::Duration::MAX),
    };
    assert_eq!(
        fleetcron_conformance::store_fixtures::prune(&postgres, &huge)
            .await
            .expect("prune"),
        0
    );
}

#[tokio::test]
async fn prune_never_deletes_a_pending_row() {
    require_server!("prune_never_deletes_a_pending_row");
    let schema = TestSchema::new();
    let store = schema.store().await;
    insert_runs(
        &store,
        "t",
        vec![
            run("t", "r1", None, 1, RunStatus::Pending),
            finished_run("t", "r2", epoch()),
            finished_run("t", "r3", epoch()),
        ],
    )
    .await;
    let retention = Retention {
        keep_last: Some(0),
        max_age: Some(std::time::Duration::from_secs(1)),
    };
    // The rows ended in 2030: age them past max_age with a store a decade ahead.
    let ahead = schema.store_with_offset(Duration::days(3650)).await;
    assert_eq!(
        fleetcron_conformance::store_fixtures::prune(&ahead, &retention)
            .await
            .expect("prune"),
        2
    );
    assert_eq!(run_ids(&store, "t").await, ["r1"]);
}

#[tokio::test]
async fn now_is_monotonic_and_whole_milliseconds() {
    require_server!("now_is_monotonic_and_whole_milliseconds");
    let schema = TestSchema::new();
    let store = schema.store().await;
    let first = store.now().await.expect("now");
    assert!(whole_ms(first), "{first}");
    assert!(
        (Utc::now() - first).num_seconds().abs() < 5,
        "the server's clock: {first}"
    );

    // The server's clock steps back ten seconds: the store's does not.
    store.set_clock_offset(Duration::seconds(-10)).expect("offset");
    assert_eq!(store.now().await.expect("now"), first);
    let mutated_at = store
        .mutate(&["t".to_owned()], &mut |now, id, _| Mutation {
            state: Some(new_state(id, now)),
            ..Mutation::none()
        })
        .await
        .expect("mutate");
    assert_eq!(mutated_at, first);
    assert_eq!(store.due_for_attention(10).await.expect("poll").0, first);
    assert_eq!(store.load(None).await.expect("load").0, first);
    assert_eq!(store.load(Some(&["t".to_owned()])).await.expect("load").0, first);
    assert_eq!(
        store.mutate(&[], &mut |_, _, _| Mutation::none()).await.expect("empty"),
        first
    );

    // And moves on when the clock does.
    store.set_clock_offset(Duration::seconds(1)).expect("offset");
    let later = store.now().await.expect("now");
    assert!(later > first, "{later} > {first}");
    assert!(whole_ms(later));
    assert!(store.set_clock_offset(Duration::days(365 * 200)).is_err());
}

#[tokio::test]
async fn two_updates_of_a_run_in_one_batch_match_the_reference_store() {
    require_server!("two_updates_of_a_run_in_one_batch_match_the_reference_store");
    let schema = TestSchema::new();
    let rows = vec![("t", run("t", "r1", Some(0), 1, RunStatus::Running))];
    let (postgres, memory) = both_stores(&schema, Duration::zero(), &rows).await;

    async fn two_updates<S: Store>(store: &S) -> Vec<RunRecord> {
        store
            .mutate(&["t".to_owned()], &mut |now, _, _| Mutation {
                update_runs: vec![
                    RunUpdate {
                        reason: Some("superseded".to_owned()),
                        error: Some("first".to_owned()),
                        ..finish("r1", RunStatus::Cancelled, now)
                    },
                    RunUpdate {
                        result: Some(json!([1, 2])),
                        ..finish("r1", RunStatus::Failed, now + ms(5))
                    },
                    // A run of another task is not this task's to change.
                    finish("u1", RunStatus::Failed, now),
                ],
                ..Mutation::none()
            })
            .await
            .expect("mutate");
        store.runs("t", &RunQuery::default()).await.expect("runs")
    }
    let from_postgres = two_updates(&postgres).await;
    let from_memory = two_updates(&memory).await;
    // The two stores' clocks differ by the milliseconds between the calls: compare the rest.
    let without_end = |runs: &[RunRecord]| {
        runs.iter()
            .map(|run| RunRecord {
                finished_at: None,
                ..run.clone()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(without_end(&from_postgres), without_end(&from_memory));
    // The later update wins whole.
    assert_eq!(from_postgres[0].reason, None);
    assert_eq!(from_postgres[0].error, None);
    assert_eq!(from_postgres[0].status, RunStatus::Failed);
    assert_eq!(from_postgres[0].result, Some(json!([1, 2])));
    assert!(from_postgres[0].finished_at.is_some_and(whole_ms));
}

#[tokio::test]
async fn operations_before_migrate_say_to_migrate() {
    require_server!("operations_before_migrate_say_to_migrate");
    let schema = TestSchema::new();
    let store = schema.connect().await;
    assert_eq!(store.schema_version().await.expect("version"), 0);
    let error = store
        .mutate(&["t".to_owned()], &mut |_, _, _| Mutation::none())
        .await
        .expect_err("no schema yet");
    match error {
        StoreError::Config(message) => assert!(message.contains("migrate"), "{message}"),
        other => panic!("expected Config, got {other:?}"),
    }
    for error in [
        store.due_for_attention(10).await.expect_err("no schema yet"),
        store.runs("t", &RunQuery::default()).await.expect_err("no schema yet"),
        store.load(None).await.expect_err("no schema yet"),
    ] {
        assert!(matches!(error, StoreError::Config(_)), "{error:?}");
    }
    store.migrate().await.expect("migrate");
    assert_eq!(
        store.schema_version().await.expect("version"),
        fleetcron_postgres::SCHEMA_VERSION
    );
    store.migrate().await.expect("migrate again is a no-op");
    increment(&store, "t", "w").await.expect("the schema works");
}

#[tokio::test]
async fn a_corrupt_state_document_is_reported_as_corrupt() {
    require_server!("a_corrupt_state_document_is_reported_as_corrupt");
    let schema = TestSchema::new();
    let store = schema.store().await;
    put_state(&store, new_state("t", epoch())).await;
    let mut conn = raw_connection().await;
    sqlx::query(&format!(
        "UPDATE \"{}\".fleetcron_tasks SET state = '{{\"not\": \"a state\"}}' WHERE id = 't'",
        schema.name
    ))
    .execute(&mut conn)
    .await
    .expect("tamper");
    match store.load(None).await {
        Err(StoreError::Corrupt(message)) => assert!(message.contains("task t"), "{message}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let result = store.mutate(&["t".to_owned()], &mut |_, _, _| Mutation::none()).await;
    assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
    // The failed mutation released its locks and connection: other tasks still work.
    increment(&store, "other", "w").await.expect("another task");
}

#[tokio::test]
async fn nul_characters_in_texts_and_results_are_stored_not_refused() {
    require_server!("nul_characters_in_texts_and_results_are_stored_not_refused");
    let schema = TestSchema::new();
    let store = schema.store().await;
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
    require_server!("an_instant_postgresql_cannot_store_is_refused_not_retried");
    let schema = TestSchema::new();
    let store = schema.store().await;
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

/// Claims skip tasks already claimed up to their slot (their documents are neither sent nor decoded),
/// and only those; the server compares the marks exactly.
#[tokio::test]
async fn claims_leave_out_tasks_already_accounted_for() {
    require_server!("claims_leave_out_tasks_already_accounted_for");
    let schema = TestSchema::new();
    let store = schema.store().await;
    let left_out = fleetcron_conformance::store_cases::claims_leave_out_only_accounted_tasks(&store)
        .await
        .unwrap_or_else(|problem| panic!("{problem}"));
    assert_eq!(left_out, ["acc", "frac", "past"]);
}

/// Enabling after 30 days disabled is one range row in one transaction, in bounded work.
#[tokio::test]
async fn enabling_after_a_long_disable_is_bounded() {
    require_server!("enabling_after_a_long_disable_is_bounded");
    let schema = TestSchema::new();
    let store = schema.store().await;
    let elapsed = fleetcron_conformance::store_cases::enabling_after_a_long_disable_is_bounded(&store)
        .await
        .unwrap_or_else(|problem| panic!("{problem}"));
    println!("PostgreSQL: enabling after 30 days disabled took {elapsed:?}");
}

/// A completion-sized batch of large rows (300 tasks, 128 KiB of result and error text in each state
/// document and each history row) commits in one mutation, claim-like and completion-like, and reads back
/// intact (bounded statements: see ARCHITECTURE.md).
#[tokio::test]
async fn large_history_rows_commit_in_one_batch_and_read_back_intact() {
    require_server!("large_history_rows_commit_in_one_batch_and_read_back_intact");
    let schema = TestSchema::new();
    // About what fits, not how fast: encoding 75 MiB of documents in a debug build on a loaded machine
    // can keep the transaction idle longer than the default 5 s statement timeout.
    let store = schema
        .connect_with(
            schema
                .options()
                .with_statement_timeout(std::time::Duration::from_secs(120)),
        )
        .await;
    store.migrate().await.expect("migrate");
    fleetcron_conformance::store_cases::large_history_rows_round_trip_in_one_batch(&store, 300, 128 * 1024)
        .await
        .unwrap_or_else(|problem| panic!("{problem}"));
}

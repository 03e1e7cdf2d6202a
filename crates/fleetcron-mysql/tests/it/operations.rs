//! The store operations, one by one, and differentially against the in-memory reference store.

use crate::*;
use fleetcron_core::{Clock, MemoryStore, Retention, RunQuery, RunUpdate, SharedClock, StoreError};
use serde_json::json;
use std::sync::Arc;

/// A clock that always reads one instant (for the reference store next to a server-clocked one).
#[derive(Debug)]
struct FixedClock(Timestamp);

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        self.0
    }
}

fn fixed(at: Timestamp) -> SharedClock {
    Arc::new(FixedClock(at))
}

fn assert_whole_ms(at: Timestamp) {
    assert_eq!(
        at.timestamp_subsec_nanos() % 1_000_000,
        0,
        "{at} is not a whole millisecond"
    );
}

#[tokio::test]
async fn mutate_round_trips_state_runs_and_finish() {
    let Some(db) = TestDb::create("mutate_round_trips_state_runs_and_finish").await else {
        return;
    };
    let store = store(&db).await;
    let ids = vec!["a".to_owned(), "b".to_owned()];

    // First mutation: create `a` with a run; `b` stays missing.
    let mut seen = Vec::new();
    let mut written = None;
    let mut record = None;
    let before = Utc::now();
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
    // The store's clock is the server's (the same machine here), in whole milliseconds.
    assert_whole_ms(at);
    assert!(
        (at - before).num_seconds().abs() < 5,
        "server clock {at} vs local {before}"
    );
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

    // Second mutation: decide sees the stored state; end the run with a large result.
    let big = "x".repeat(1 << 20);
    let result = json!({"rows": 3, "note": "ok", "nested": [1, "two", null], "big": big, "utf8": "größe ✓ 🚀"});
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
                    result: Some(result.clone()),
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
        result: Some(result.clone()),
        // Every mutable column is set: no reason in the update clears the stored one.
        reason: None,
        error: None,
        // Identity columns never change.
        ..record.expect("run written")
    };
    assert_eq!(runs, vec![expected]);
    let (_, states) = store.load(None).await.expect("load");
    assert!(states[0].running.is_empty());

    // A JSON string result stays a string; a long error text and a reason are kept.
    let long_error = "boom ".repeat(40_000);
    store
        .mutate(&ids[..1], &mut |now, _, _| Mutation {
            update_runs: vec![RunUpdate {
                result: Some(json!("just text")),
                error: Some(long_error.clone()),
                reason: Some("second".to_owned()),
                ..finish("r1", RunStatus::Failed, now)
            }],
            ..Mutation::none()
        })
        .await
        .expect("third mutation");
    let runs = store.runs("a", &RunQuery::default()).await.expect("runs");
    assert_eq!(runs[0].result, Some(json!("just text")));
    assert_eq!(runs[0].error.as_deref(), Some(long_error.as_str()));
    assert_eq!(runs[0].reason.as_deref(), Some("second"));
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert_eq!(runs[0].trigger_id.as_deref(), Some("t-1"));
}

#[tokio::test]
async fn a_pending_row_starts_and_ends_like_in_the_reference_store() {
    let Some(db) = TestDb::create("a_pending_row_starts_and_ends_like_in_the_reference_store").await else {
        return;
    };
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
    let (mysql, memory) = both_stores(&db, &[("t", pending)]).await;

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
    let from_mysql = start_then_end(&mysql).await;
    assert_eq!(from_mysql, start_then_end(&memory).await);
    assert_eq!(from_mysql[0].status, RunStatus::Running);
    assert_eq!(from_mysql[0].worker.as_deref(), Some("w9"));
    assert_eq!(from_mysql[1].status, RunStatus::TimedOut);
    assert_eq!(from_mysql[1].trigger_id.as_deref(), Some("trigger-1"));
}

#[tokio::test]
async fn a_duplicate_in_the_middle_of_a_batch_leaves_nothing_written() {
    let Some(db) = TestDb::create("a_duplicate_in_the_middle_of_a_batch_leaves_nothing_written").await else {
        return;
    };
    let store = store(&db).await;
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
        }
        other => panic!("expected Duplicate, got {other:?}"),
    }
    // Nothing of the batch landed: not a's new row, not c's new fence, no run, no finish.
    let (_, states) = store.load(None).await.expect("load");
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].definition.id, "c");
    assert_eq!(states[0].fence, 0);
    assert!(store.runs("a", &RunQuery::default()).await.expect("runs").is_empty());
    let b_runs = store.runs("b", &RunQuery::default()).await.expect("runs");
    assert_eq!(b_runs.len(), 1);
    assert_eq!(b_runs[0].status, RunStatus::Succeeded);
    assert!(store.runs("c", &RunQuery::default()).await.expect("runs").is_empty());
    // And the store still works.
    assert_eq!(increment(&store, "a", "w").await.expect("a later mutation"), 1);
}

#[tokio::test]
async fn the_unique_key_refuses_a_second_row_for_a_slot_and_attempt() {
    let Some(db) = TestDb::create("the_unique_key_refuses_a_second_row_for_a_slot_and_attempt").await else {
        return;
    };
    let store = store(&db).await;
    let id = vec!["t".to_owned()];
    insert_runs(&store, "t", vec![run("t", "r1", Some(0), 1, RunStatus::Running)]).await;

    let try_insert = |records: Vec<RunRecord>| {
        let store = &store;
        let id = &id;
        async move {
            let mut records = Some(records);
            store
                .mutate(id, &mut |_, _, _| Mutation {
                    insert_runs: records.take().unwrap_or_default(),
                    ..Mutation::none()
                })
                .await
        }
    };
    // Same slot and attempt, new run id: refused, with a message naming the slot.
    match try_insert(vec![run("t", "r2", Some(0), 1, RunStatus::Running)]).await {
        Err(StoreError::Duplicate(message)) => {
            assert!(
                message.contains("task t slot 2030-01-01T00:00:00+00:00 attempt 1"),
                "{message}"
            )
        }
        other => panic!("expected Duplicate, got {other:?}"),
    }
    // Two rows for one slot inside one mutation: refused.
    match try_insert(vec![
        run("t", "r3", Some(5), 1, RunStatus::Skipped),
        run("t", "r4", Some(5), 1, RunStatus::Skipped),
    ])
    .await
    {
        Err(StoreError::Duplicate(message)) => assert!(message.contains("attempt 1"), "{message}"),
        other => panic!("expected Duplicate, got {other:?}"),
    }
    // A reused run id: refused.
    match try_insert(vec![run("t", "r1", Some(9), 1, RunStatus::Running)]).await {
        Err(StoreError::Duplicate(message)) => assert!(message.contains("run id r1"), "{message}"),
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
    let Some(db) = TestDb::create("due_for_attention_returns_due_ids_in_id_order_up_to_the_limit").await else {
        return;
    };
    let store = store(&db).await;
    let now = store.now().await.expect("now");
    put_state(
        &store,
        state_wanting_attention("p-past", now, now - Duration::seconds(1)),
    )
    .await;
    put_state(&store, state_wanting_attention("p-now", now, now)).await;
    put_state(
        &store,
        state_wanting_attention("p-future", now, now + Duration::minutes(10)),
    )
    .await;
    put_state(&store, state_with_lease("l-expired", now, now - Duration::seconds(3))).await;
    put_state(&store, state_with_lease("l-live", now, now + Duration::minutes(30))).await;
    put_state(&store, new_state("idle", now)).await;

    let (at, ids) = store.due_for_attention(100).await.expect("poll");
    assert!(at >= now);
    assert_whole_ms(at);
    assert_eq!(ids, ["l-expired", "p-now", "p-past"]);
    let (_, ids) = store.due_for_attention(2).await.expect("poll");
    assert_eq!(ids, ["l-expired", "p-now"]);
    let (at0, ids) = store.due_for_attention(0).await.expect("poll");
    assert!(ids.is_empty());
    assert!(at0 >= at);

    // A store whose clock runs 20 minutes ahead (the store clock decides, so it sees more).
    let ahead = store_at_offset(&db, Duration::minutes(20)).await;
    let (ahead_at, ids) = ahead.due_for_attention(100).await.expect("poll");
    assert!(ahead_at >= now + Duration::minutes(20));
    assert_eq!(ids, ["l-expired", "p-future", "p-now", "p-past"]);
    let much_later = store_at_offset(&db, Duration::hours(2)).await;
    let (_, ids) = much_later.due_for_attention(100).await.expect("poll");
    assert_eq!(ids, ["l-expired", "l-live", "p-future", "p-now", "p-past"]);

    // Clearing the pending work clears the attention mark.
    put_state(&store, new_state("p-now", now)).await;
    let (_, ids) = much_later.due_for_attention(100).await.expect("poll");
    assert!(!ids.contains(&"p-now".to_owned()));

    // Same answers as the reference store at the same instant.
    let (at, _) = much_later.due_for_attention(1).await.expect("poll");
    let memory = MemoryStore::with_clock(fixed(at));
    let (_, states) = store.load(None).await.expect("load");
    for state in states {
        put_state(&memory, state).await;
    }
    for limit in [0, 1, 3, 100] {
        assert_eq!(
            memory.due_for_attention(limit).await.expect("memory poll").1,
            much_later.due_for_attention(limit).await.expect("poll").1
        );
    }
}

#[tokio::test]
async fn the_idle_poll_is_one_statement_on_the_attention_index() {
    let Some(db) = TestDb::create("the_idle_poll_is_one_statement_on_the_attention_index").await else {
        return;
    };
    let store = store(&db).await;
    for n in 0..50 {
        put_state(&store, new_state(&format!("idle-{n:02}"), epoch())).await;
    }
    let mut conn = db.raw().await;
    // The statement MysqlStore::due_for_attention runs (kept in step with src/sql.rs).
    let plan = sqlx::query(
        "EXPLAIN SELECT c.now, t.id
         FROM (SELECT CAST(GREATEST(UTC_TIMESTAMP(3) + INTERVAL ? MICROSECOND, ?) AS DATETIME(3)) AS now) AS c
         LEFT JOIN fleetcron_tasks AS t FORCE INDEX (attention_at) ON t.attention_at <= c.now
         ORDER BY t.id LIMIT ?",
    )
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
async fn load_sorts_by_id_and_skips_unknown_ids() {
    let Some(db) = TestDb::create("load_sorts_by_id_and_skips_unknown_ids").await else {
        return;
    };
    let store = store(&db).await;
    for id in ["m", "b", "z", "a", "B"] {
        put_state(&store, new_state(id, epoch())).await;
    }
    let ids = |states: Vec<TaskState>| states.into_iter().map(|s| s.definition.id).collect::<Vec<_>>();
    // Byte order, as Rust sorts strings: upper case first; ids are case-sensitive.
    assert_eq!(ids(store.load(None).await.expect("load").1), ["B", "a", "b", "m", "z"]);
    let wanted: Vec<String> = ["z", "nope", "b"].map(str::to_owned).to_vec();
    assert_eq!(ids(store.load(Some(&wanted)).await.expect("load").1), ["b", "z"]);
    assert!(store.load(Some(&[])).await.expect("load").1.is_empty());
    let many: Vec<String> = (0..300)
        .map(|n| format!("missing-{n}"))
        .chain(["m".to_owned()])
        .collect();
    assert_eq!(ids(store.load(Some(&many)).await.expect("load").1), ["m"]);
}

#[tokio::test]
async fn runs_page_newest_first() {
    let Some(db) = TestDb::create("runs_page_newest_first").await else {
        return;
    };
    let store = store(&db).await;
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

/// The same history in the MySQL and the memory store, for differential checks.
async fn both_stores(db: &TestDb, rows: &[(&str, RunRecord)]) -> (MysqlStore, MemoryStore) {
    both_stores_at(db, Duration::zero(), rows).await
}

/// The same, with the MySQL store's clock `offset` ahead of the server; the memory store's clock
/// reads the MySQL store's now.
async fn both_stores_at(db: &TestDb, offset: Duration, rows: &[(&str, RunRecord)]) -> (MysqlStore, MemoryStore) {
    let mysql = store_at_offset(db, offset).await;
    let memory = MemoryStore::with_clock(fixed(mysql.now().await.expect("now")));
    for (task, record) in rows {
        insert_runs(&mysql, task, vec![record.clone()]).await;
        insert_runs(&memory, task, vec![record.clone()]).await;
    }
    (mysql, memory)
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
    let Some(db) = TestDb::create("prune_keep_last_keeps_the_newest_rows_and_every_running_row").await else {
        return;
    };
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
    let (mysql, memory) = both_stores_at(&db, Duration::days(3650), &rows).await;

    let retention = Retention {
        keep_last: Some(3),
        max_age: None,
    };
    let removed = fleetcron_conformance::store_fixtures::prune(&mysql, &retention)
        .await
        .expect("prune");
    assert_eq!(
        removed,
        fleetcron_conformance::store_fixtures::prune(&memory, &retention)
            .await
            .expect("memory prune")
    );
    assert_eq!(removed, 6);
    assert_eq!(run_ids(&mysql, "a").await, ["a7", "a6", "a5", "a00-running"]);
    assert_eq!(run_ids(&mysql, "a").await, run_ids(&memory, "a").await);
    assert_eq!(run_ids(&mysql, "b").await, ["b1", "b0"]);

    // keep_last = 0 removes everything but running rows; pruning again removes nothing more.
    let none_kept = Retention {
        keep_last: Some(0),
        max_age: None,
    };
    assert_eq!(
        fleetcron_conformance::store_fixtures::prune(&mysql, &none_kept)
            .await
            .expect("prune"),
        5
    );
    assert_eq!(run_ids(&mysql, "a").await, ["a00-running"]);
    assert_eq!(
        fleetcron_conformance::store_fixtures::prune(&mysql, &none_kept)
            .await
            .expect("prune"),
        0
    );

    // A freed slot key can be used again.
    insert_runs(&mysql, "a", vec![run("a", "a99", Some(5), 1, RunStatus::Running)]).await;
}

#[tokio::test]
async fn prune_max_age_uses_the_store_clock_and_end_times() {
    let Some(db) = TestDb::create("prune_max_age_uses_the_store_clock_and_end_times").await else {
        return;
    };
    // The store's clock runs 40 days ahead of the server's: ages count from the store's now.
    let probe = store_at_offset(&db, Duration::days(40)).await;
    let now = probe.now().await.expect("now");
    assert!(now > Utc::now() + Duration::days(39));
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
    let (mysql, memory) = both_stores_at(&db, Duration::days(40), &rows).await;

    let retention = Retention {
        keep_last: None,
        max_age: Some(std::time::Duration::from_secs(30 * 24 * 3600)),
    };
    let removed = fleetcron_conformance::store_fixtures::prune(&mysql, &retention)
        .await
        .expect("prune");
    assert_eq!(
        removed,
        fleetcron_conformance::store_fixtures::prune(&memory, &retention)
            .await
            .expect("memory prune")
    );
    assert_eq!(removed, 3);
    assert_eq!(run_ids(&mysql, "a").await, ["a6", "a4", "a3", "a2"]);
    assert_eq!(run_ids(&mysql, "a").await, run_ids(&memory, "a").await);
    assert!(run_ids(&mysql, "b").await.is_empty());

    // Both limits: rows removed for age do not count towards keep_last.
    let both = Retention {
        keep_last: Some(2),
        max_age: Some(std::time::Duration::from_secs(2 * 3600)),
    };
    let removed = fleetcron_conformance::store_fixtures::prune(&mysql, &both)
        .await
        .expect("prune");
    assert_eq!(
        removed,
        fleetcron_conformance::store_fixtures::prune(&memory, &both)
            .await
            .expect("memory prune")
    );
    assert_eq!(run_ids(&mysql, "a").await, run_ids(&memory, "a").await);
    assert_eq!(run_ids(&mysql, "a").await, ["a6", "a4", "a3"]);

    // The server's own clock (no offset) sees a6 as ended in the future: an hour is not old.
    let unshifted = store(&db).await;
    let hour = Retention {
        keep_last: None,
        max_age: Some(std::time::Duration::from_secs(3600)),
    };
    assert_eq!(
        fleetcron_conformance::store_fixtures::prune(&unshifted, &hour)
            .await
            .expect("prune"),
        0
    );

    // A max_age too large for the calendar prunes nothing by age.
    let huge = Retention {
        keep_last: None,
        max_age: Some(std::time::Duration::MAX),
    };
    assert_eq!(
        fleetcron_conformance::store_fixtures::prune(&mysql, &huge)
            .await
            .expect("prune"),
        0
    );
}

#[tokio::test]
async fn prune_never_deletes_a_pending_row() {
    // Deliberately stricter than MemoryStore (which only spares `running`): a pending row is work
    // accepted but not started, and its row is updated when it starts.
    let Some(db) = TestDb::create("prune_never_deletes_a_pending_row").await else {
        return;
    };
    let store = store(&db).await;
    insert_runs(
        &store,
        "t",
        vec![
            run("t", "r1", None, 1, RunStatus::Pending),
            finished_run("t", "r2", epoch() - Duration::days(3650)),
            finished_run("t", "r3", epoch() - Duration::days(3650)),
        ],
    )
    .await;
    let retention = Retention {
        keep_last: Some(0),
        max_age: Some(std::time::Duration::from_secs(1)),
    };
    assert_eq!(
        fleetcron_conformance::store_fixtures::prune(&store, &retention)
            .await
            .expect("prune"),
        2
    );
    assert_eq!(run_ids(&store, "t").await, ["r1"]);
}

#[tokio::test]
async fn now_is_monotonic_whole_milliseconds_and_offset() {
    let Some(db) = TestDb::create("now_is_monotonic_whole_milliseconds_and_offset").await else {
        return;
    };
    let plain = store(&db).await;
    let ahead = store_at_offset(&db, Duration::days(1) + Duration::microseconds(5_500)).await;

    let local = Utc::now();
    let first = ahead.now().await.expect("now");
    assert_whole_ms(first);
    let skew = first - local - Duration::days(1);
    assert!(
        skew.num_seconds().abs() < 5,
        "offset store reads {first}, local clock {local}"
    );
    let server = plain.now().await.expect("now");
    let gap = first - server;
    assert!(
        gap > Duration::hours(23) && gap <= Duration::days(1) + ms(5),
        "{first} vs {server}"
    );

    let mut last = first;
    for _ in 0..50 {
        let now = ahead.now().await.expect("now");
        assert_whole_ms(now);
        assert!(now >= last, "{now} < {last}");
        last = now;
    }
    let mutated_at = ahead
        .mutate(&["t".to_owned()], &mut |now, id, _| Mutation {
            state: Some(new_state(id, now)),
            ..Mutation::none()
        })
        .await
        .expect("mutate");
    assert!(mutated_at >= last);
    let polled_at = ahead.due_for_attention(10).await.expect("poll").0;
    assert!(polled_at >= mutated_at);
    let loaded_at = ahead.load(None).await.expect("load").0;
    assert!(loaded_at >= polled_at);
    let empty_at = ahead.mutate(&[], &mut |_, _, _| Mutation::none()).await.expect("empty");
    assert!(empty_at >= loaded_at);
    assert_whole_ms(empty_at);
    // Registration time is the store's (offset) time.
    let (_, states) = plain.load(None).await.expect("load");
    assert_eq!(states[0].registered_at, mutated_at);
}

#[tokio::test]
async fn two_updates_of_a_run_in_one_batch_match_the_reference_store() {
    let Some(db) = TestDb::create("two_updates_of_a_run_in_one_batch_match_the_reference_store").await else {
        return;
    };
    let rows = vec![("t", run("t", "r1", Some(0), 1, RunStatus::Running))];
    let (mysql, memory) = both_stores(&db, &rows).await;
    insert_runs(&mysql, "u", vec![run("u", "u1", Some(0), 1, RunStatus::Running)]).await;
    insert_runs(&memory, "u", vec![run("u", "u1", Some(0), 1, RunStatus::Running)]).await;

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
                    // A run of another task is not this task's to change, nor is a run that does not exist.
                    finish("u1", RunStatus::Failed, now),
                    finish("nope", RunStatus::Failed, now),
                ],
                ..Mutation::none()
            })
            .await
            .expect("mutate");
        let mut runs = store.runs("t", &RunQuery::default()).await.expect("runs");
        runs.extend(store.runs("u", &RunQuery::default()).await.expect("runs"));
        runs
    }
    let from_mysql = two_updates(&mysql).await;
    let from_memory = two_updates(&memory).await;
    assert_eq!(from_mysql.len(), 2, "no row appears for a run that does not exist");
    // The reference store stamps its own (fixed) now; compare everything else.
    assert_eq!(from_mysql[1], from_memory[1]);
    assert_eq!(from_mysql[1].status, RunStatus::Running);
    // The later update wins whole.
    assert_eq!(from_mysql[0].reason, None);
    assert_eq!(from_mysql[0].error, None);
    assert_eq!(from_mysql[0].status, RunStatus::Failed);
    assert_eq!(from_mysql[0].result, Some(json!([1, 2])));
    assert_eq!(from_memory[0].status, RunStatus::Failed);
    assert_eq!(from_memory[0].result, Some(json!([1, 2])));
}

#[tokio::test]
async fn operations_before_migrate_say_to_migrate() {
    let Some(db) = TestDb::create("operations_before_migrate_say_to_migrate").await else {
        return;
    };
    let store = MysqlStore::connect_with(&db.url, options()).await.expect("connect");
    assert_eq!(store.schema_version().await.expect("version"), 0);
    let error = store
        .mutate(&["t".to_owned()], &mut |_, _, _| Mutation::none())
        .await
        .expect_err("no schema yet");
    match error {
        StoreError::Config(message) => assert!(message.contains("migrate"), "{message}"),
        other => panic!("expected Config, got {other:?}"),
    }
    assert!(matches!(store.load(None).await, Err(StoreError::Config(_))));
    assert!(matches!(store.due_for_attention(10).await, Err(StoreError::Config(_))));
    store.migrate().await.expect("migrate");
    assert_eq!(
        store.schema_version().await.expect("version"),
        fleetcron_mysql::SCHEMA_VERSION
    );
    store.migrate().await.expect("migrate again is a no-op");
    assert!(store.due_for_attention(10).await.expect("poll").1.is_empty());
}

#[tokio::test]
async fn a_corrupt_state_document_is_reported_as_corrupt() {
    let Some(db) = TestDb::create("a_corrupt_state_document_is_reported_as_corrupt").await else {
        return;
    };
    let store = store(&db).await;
    put_state(&store, new_state("t", epoch())).await;
    let mut conn = db.raw().await;
    sqlx::query("UPDATE fleetcron_tasks SET state = '{not json' WHERE id = 't'")
        .execute(&mut conn)
        .await
        .expect("tamper");
    match store.load(None).await {
        Err(StoreError::Corrupt(message)) => assert!(message.contains("task t"), "{message}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let result = store.mutate(&["t".to_owned()], &mut |_, _, _| Mutation::none()).await;
    assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
    // The failed mutation released its lock: a raw write goes through at once.
    sqlx::query("SET SESSION innodb_lock_wait_timeout = 1")
        .execute(&mut conn)
        .await
        .expect("set");
    sqlx::query("UPDATE fleetcron_tasks SET enabled = 0 WHERE id = 't'")
        .execute(&mut conn)
        .await
        .expect("the row is not locked");
}

#[tokio::test]
async fn table_prefixes_keep_stores_apart_in_one_database() {
    let Some(db) = TestDb::create("table_prefixes_keep_stores_apart_in_one_database").await else {
        return;
    };
    let default = store(&db).await;
    let other = MysqlStore::connect_with(&format!("{}?table_prefix=other_", db.url), options())
        .await
        .expect("connect with a prefix");
    assert_eq!(other.table_prefix(), "other_");
    other.migrate().await.expect("migrate");
    let by_option = store_with(&db, options().with_table_prefix("third_")).await;
    assert_eq!(by_option.table_prefix(), "third_");

    put_state(&default, new_state("only-default", epoch())).await;
    put_state(&other, new_state("only-other", epoch())).await;
    let ids = |states: Vec<TaskState>| states.into_iter().map(|s| s.definition.id).collect::<Vec<_>>();
    assert_eq!(ids(default.load(None).await.expect("load").1), ["only-default"]);
    assert_eq!(ids(other.load(None).await.expect("load").1), ["only-other"]);
    assert!(by_option.load(None).await.expect("load").1.is_empty());

    let mut conn = db.raw().await;
    let tables: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT CAST(table_name AS BINARY), CAST(engine AS BINARY), CAST(table_collation AS BINARY)
         FROM information_schema.tables WHERE table_schema = DATABASE() ORDER BY table_name",
    )
    .fetch_all(&mut conn)
    .await
    .expect("tables");
    let tables: Vec<(String, String, String)> = tables
        .into_iter()
        .map(|(name, engine, collation)| {
            (
                String::from_utf8_lossy(&name).into_owned(),
                String::from_utf8_lossy(&engine).into_owned(),
                String::from_utf8_lossy(&collation).into_owned(),
            )
        })
        .collect();
    let names: Vec<&str> = tables.iter().map(|(name, _, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "fleetcron_runs",
            "fleetcron_schema",
            "fleetcron_tasks",
            "other_runs",
            "other_schema",
            "other_tasks",
            "third_runs",
            "third_schema",
            "third_tasks"
        ]
    );
    for (name, engine, collation) in &tables {
        assert_eq!(engine, "InnoDB", "{name}");
        assert_eq!(collation, "utf8mb4_bin", "{name}");
    }
}

/// Enabling after 30 days disabled is one range row in one transaction, in bounded work.
#[tokio::test]
async fn enabling_after_a_long_disable_is_bounded() {
    let Some(db) = TestDb::create("enabling_after_a_long_disable_is_bounded").await else {
        return;
    };
    let store = store(&db).await;
    let elapsed = fleetcron_conformance::store_cases::enabling_after_a_long_disable_is_bounded(&store)
        .await
        .unwrap_or_else(|problem| panic!("{problem}"));
    println!("MySQL/MariaDB: enabling after 30 days disabled took {elapsed:?}");
}

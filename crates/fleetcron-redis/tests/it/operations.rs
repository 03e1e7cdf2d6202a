//! The store operations, one by one, and differentially against the in-memory reference store.

use crate::*;
use fleetcron_core::{MemoryStore, OffsetClock, Retention, RunQuery, SharedClock, StoreError};
use serde_json::json;

/// Options whose store clock reads `at` now (and then advances at the real rate), give or take the
/// server's clock resolution: Redis can answer `TIME` from a time it cached up to about a millisecond
/// earlier than this process's `Utc::now()`, so the clock is set 2 ms later than `at` and a server read a
/// moment later is never before `at`.
fn starting_at(ns: &Namespace, at: Timestamp) -> RedisOptions {
    ns.options()
        .with_clock_offset(at + Duration::milliseconds(2) - Utc::now())
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
async fn mutate_round_trips_state_runs_and_finish() {
    let Some(ns) = Namespace::new("mutate_round_trips_state_runs_and_finish").await else {
        return;
    };
    let store = ns.store_with(starting_at(&ns, epoch())).await;
    let ids = vec!["a".to_owned(), "b".to_owned()];

    // First mutation: create `a` with a run; `b` stays missing.
    let mut seen = Vec::new();
    let mut written = None;
    let mut record = None;
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
    // The store keeps milliseconds, on the server's clock plus the offset.
    assert_eq!(at.timestamp_subsec_nanos() % 1_000_000, 0);
    assert!(at >= epoch() && at < epoch() + Duration::seconds(5), "{at}");
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
    // `b` was not written at all: no key of it exists.
    assert!(
        ns.keys().await.iter().all(|key| !key.contains(":b}")),
        "{:?}",
        ns.keys().await
    );

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
                    result: Some(json!({"rows": 3, "note": "ok", "nested": [1, "two", null]})),
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
        // Columns the update sets to None are cleared.
        reason: None,
        result: Some(json!({"rows": 3, "note": "ok", "nested": [1, "two", null]})),
        error: None,
        ..record.expect("run written")
    };
    assert_eq!(runs, vec![expected]);
    let state = state_of(&store, "a").await.expect("a is stored");
    assert!(state.running.is_empty());
}

#[tokio::test]
async fn the_unique_key_refuses_a_duplicate_and_writes_nothing() {
    let Some(ns) = Namespace::new("the_unique_key_refuses_a_duplicate_and_writes_nothing").await else {
        return;
    };
    let store = ns.store().await;
    insert_runs(&store, "t", vec![run("t", "r1", Some(0), 1, RunStatus::Running)]).await;

    let slot_clash = try_insert_runs(&store, "t", vec![run("t", "r2", Some(0), 1, RunStatus::Running)]).await;
    match slot_clash {
        Err(StoreError::Duplicate(message)) => {
            assert!(message.contains("task t"), "{message}");
            assert!(message.contains("2030-01-01T00:00:00"), "{message}");
            assert!(message.contains(&ns.prefix), "{message}");
        }
        other => panic!("expected Duplicate, got {other:?}"),
    }
    let id_clash = try_insert_runs(&store, "t", vec![run("t", "r1", Some(5), 1, RunStatus::Running)]).await;
    assert!(matches!(id_clash, Err(StoreError::Duplicate(_))), "{id_clash:?}");
    // Two new rows of one mutation clash with each other.
    let within = try_insert_runs(
        &store,
        "t",
        vec![
            run("t", "r3", Some(7), 1, RunStatus::Running),
            run("t", "r4", Some(7), 1, RunStatus::Running),
        ],
    )
    .await;
    assert!(matches!(within, Err(StoreError::Duplicate(_))), "{within:?}");
    assert_eq!(run_ids(&store, "t").await, ["r1"], "a refused mutation writes no row");

    // Another attempt of the same slot, a manual run (no slot) and another task's same slot are fine.
    insert_runs(
        &store,
        "t",
        vec![
            run("t", "r5", Some(0), 2, RunStatus::Running),
            run("t", "r6", None, 1, RunStatus::Running),
            run("t", "r7", None, 1, RunStatus::Running),
        ],
    )
    .await;
    insert_runs(&store, "u", vec![run("u", "r1", Some(0), 1, RunStatus::Running)]).await;

    // A clash anywhere in a batch writes nothing for any task of it (as the SQL stores roll back).
    let before = store.load(None).await.expect("load").1;
    let batch = store
        .mutate(&["fresh".to_owned(), "t".to_owned()], &mut |now, id, _| Mutation {
            state: Some(new_state(id, now)),
            insert_runs: vec![run(id, &format!("{id}-new"), Some(0), 1, RunStatus::Running)],
            update_runs: Vec::new(),
        })
        .await;
    assert!(matches!(batch, Err(StoreError::Duplicate(_))), "{batch:?}");
    assert_eq!(store.load(None).await.expect("load").1, before);
    assert!(run_ids(&store, "fresh").await.is_empty());
    assert_eq!(run_ids(&store, "t").await, ["r7", "r6", "r5", "r1"]);
}

#[tokio::test]
async fn the_layout_uses_hash_tags_and_no_expiring_keys() {
    let Some(ns) = Namespace::new("the_layout_uses_hash_tags_and_no_expiring_keys").await else {
        return;
    };
    let store = ns.store().await;
    assert_eq!(store.key_prefix(), ns.prefix);
    let now = store.now().await.expect("now");
    put_state(&store, state_wanting_attention("job.1", now, now)).await;
    insert_runs(
        &store,
        "job.1",
        vec![run("job.1", "r1", Some(0), 1, RunStatus::Running)],
    )
    .await;
    let p = &ns.prefix;
    let expected: Vec<String> = vec![
        format!("{{{p}:job.1}}:run:r1"),
        format!("{{{p}:job.1}}:runs"),
        format!("{{{p}:job.1}}:slots"),
        format!("{{{p}:job.1}}:state"),
        format!("{{{p}}}:attention"),
        format!("{{{p}}}:schema"),
        format!("{{{p}}}:tasks"),
    ];
    assert_eq!(ns.keys().await, expected);
    let mut conn = ns.raw().await;
    for key in &expected {
        let ttl: i64 = redis::cmd("TTL").arg(key).query_async(&mut conn).await.expect("TTL");
        assert_eq!(ttl, -1, "{key} must not expire");
    }
    let (version, attention): (i64, i64) = redis::cmd("HMGET")
        .arg(format!("{{{p}:job.1}}:state"))
        .arg("version")
        .arg("attention_at")
        .query_async(&mut conn)
        .await
        .expect("HMGET");
    assert_eq!(version, 2, "one write per mutation");
    assert_eq!(attention, now.timestamp_millis());
    let slot_keys: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("{{{p}:job.1}}:slots"))
        .query_async(&mut conn)
        .await
        .expect("SMEMBERS");
    assert_eq!(slot_keys, [format!("{}:1", epoch().timestamp_millis())]);
    assert!(store.key_pattern().starts_with(&format!("{{{p}")));
}

#[tokio::test]
async fn due_for_attention_reads_the_attention_index() {
    let Some(ns) = Namespace::new("due_for_attention_reads_the_attention_index").await else {
        return;
    };
    let store = ns.store_with(starting_at(&ns, epoch())).await;
    let now = store.now().await.expect("now");
    put_state(
        &store,
        state_wanting_attention("p-past", now, now - Duration::seconds(5)),
    )
    .await;
    put_state(&store, state_wanting_attention("p-now", now, now)).await;
    // Half a millisecond into the past: stored rounded up, still due now.
    put_state(
        &store,
        state_wanting_attention("p-sub-ms", now, now - ms(1) + Duration::microseconds(500)),
    )
    .await;
    put_state(
        &store,
        state_wanting_attention("p-future", now, now + Duration::seconds(20)),
    )
    .await;
    put_state(&store, state_with_lease("l-expired", now, now - Duration::seconds(3))).await;
    put_state(&store, state_with_lease("l-live", now, now + Duration::seconds(40))).await;
    put_state(&store, new_state("idle", now)).await;

    let (at, ids) = store.due_for_attention(100).await.expect("poll");
    assert!(at >= now);
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ["l-expired", "p-now", "p-past", "p-sub-ms"]);
    // Most overdue first.
    assert_eq!(ids[..2], ["p-past", "l-expired"]);
    let (_, ids) = store.due_for_attention(2).await.expect("poll");
    assert_eq!(ids, ["p-past", "l-expired"]);
    assert!(store.due_for_attention(0).await.expect("poll").1.is_empty());

    // Move the store's clock a minute on: everything that waits is due.
    store.set_clock_offset(store.clock_offset() + Duration::seconds(60));
    let (_, mut ids) = store.due_for_attention(100).await.expect("poll");
    ids.sort();
    assert_eq!(ids, ["l-expired", "l-live", "p-future", "p-now", "p-past", "p-sub-ms"]);

    // Clearing the pending work clears the attention mark.
    put_state(&store, new_state("p-now", now)).await;
    let (_, ids) = store.due_for_attention(100).await.expect("poll");
    assert!(!ids.contains(&"p-now".to_owned()));

    // Same answers as the reference store (with a limit that takes every due id).
    let memory = MemoryStore::with_clock(Arc::new(OffsetClock::new(store.clock_offset())));
    let (_, states) = store.load(None).await.expect("load");
    for state in states {
        put_state(&memory, state).await;
    }
    let mut from_memory = memory.due_for_attention(100).await.expect("memory poll").1;
    from_memory.sort();
    let mut from_redis = store.due_for_attention(100).await.expect("poll").1;
    from_redis.sort();
    assert_eq!(from_memory, from_redis);
}

#[tokio::test]
async fn load_sorts_by_id_and_skips_unknown_ids() {
    let Some(ns) = Namespace::new("load_sorts_by_id_and_skips_unknown_ids").await else {
        return;
    };
    let store = ns.store().await;
    for id in ["m", "b", "z", "a"] {
        put_state(&store, new_state(id, epoch())).await;
    }
    // A task with history but no state document is not loaded.
    insert_runs(
        &store,
        "history-only",
        vec![finished_run("history-only", "h1", epoch())],
    )
    .await;
    let ids = |states: Vec<TaskState>| states.into_iter().map(|s| s.definition.id).collect::<Vec<_>>();
    assert_eq!(ids(store.load(None).await.expect("load").1), ["a", "b", "m", "z"]);
    let wanted: Vec<String> = ["z", "nope", "b"].map(str::to_owned).to_vec();
    assert_eq!(ids(store.load(Some(&wanted)).await.expect("load").1), ["b", "z"]);
    assert!(store.load(Some(&[])).await.expect("load").1.is_empty());
    let empty = Namespace::new("load_sorts_by_id_and_skips_unknown_ids")
        .await
        .expect("reachable");
    assert!(empty.store().await.load(None).await.expect("load").1.is_empty());
}

#[tokio::test]
async fn runs_page_newest_first() {
    let Some(ns) = Namespace::new("runs_page_newest_first").await else {
        return;
    };
    let store = ns.store().await;
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
    // `before` need not be a stored id.
    let page = store
        .runs(
            "t",
            &RunQuery {
                limit: 2,
                before: Some("run-010x".to_owned()),
            },
        )
        .await
        .expect("page");
    assert_eq!(
        page.iter().map(|run| run.run_id.as_str()).collect::<Vec<_>>(),
        ["run-010", "run-009"]
    );
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

/// The same history in the Redis and the memory store, both clocks reading `at` now.
async fn both_stores(ns: &Namespace, at: Timestamp, rows: &[(&str, RunRecord)]) -> (RedisStore, MemoryStore) {
    let redis = ns.store_with(starting_at(ns, at)).await;
    let clock: SharedClock = Arc::new(OffsetClock::starting_at(at));
    let memory = MemoryStore::with_clock(clock);
    for (task, record) in rows {
        insert_runs(&redis, task, vec![record.clone()]).await;
        insert_runs(&memory, task, vec![record.clone()]).await;
    }
    (redis, memory)
}

#[tokio::test]
async fn prune_keep_last_keeps_the_newest_rows_and_every_running_row() {
    let Some(ns) = Namespace::new("prune_keep_last_keeps_the_newest_rows_and_every_running_row").await else {
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
    let (redis, memory) = both_stores(&ns, epoch() + Duration::days(1), &rows).await;

    let retention = Retention {
        keep_last: Some(3),
        max_age: None,
    };
    let removed = fleetcron_conformance::store_fixtures::prune(&redis, &retention)
        .await
        .expect("prune");
    assert_eq!(
        removed,
        fleetcron_conformance::store_fixtures::prune(&memory, &retention)
            .await
            .expect("memory prune")
    );
    assert_eq!(removed, 6);
    assert_eq!(run_ids(&redis, "a").await, ["a7", "a6", "a5", "a00-running"]);
    assert_eq!(run_ids(&redis, "a").await, run_ids(&memory, "a").await);
    assert_eq!(run_ids(&redis, "b").await, ["b1", "b0"]);

    // keep_last = 0 removes everything but running rows; pruning again removes nothing more.
    let none_kept = Retention {
        keep_last: Some(0),
        max_age: None,
    };
    assert_eq!(
        fleetcron_conformance::store_fixtures::prune(&redis, &none_kept)
            .await
            .expect("prune"),
        5
    );
    assert_eq!(run_ids(&redis, "a").await, ["a00-running"]);
    assert_eq!(
        fleetcron_conformance::store_fixtures::prune(&redis, &none_kept)
            .await
            .expect("prune"),
        0
    );

    // A freed slot key can be used again; a kept one cannot.
    insert_runs(&redis, "a", vec![run("a", "a99", Some(5), 1, RunStatus::Running)]).await;
    let kept = try_insert_runs(&redis, "a", vec![run("a", "a98", Some(0), 1, RunStatus::Running)]).await;
    assert!(matches!(kept, Err(StoreError::Duplicate(_))), "{kept:?}");
    // The pruned rows' hashes are gone, not only their index entries.
    let run_hashes = ns.keys().await.into_iter().filter(|key| key.contains(":run:")).count();
    assert_eq!(run_hashes, 2);
}

#[tokio::test]
async fn prune_max_age_uses_the_store_clock_and_end_times() {
    let Some(ns) = Namespace::new("prune_max_age_uses_the_store_clock_and_end_times").await else {
        return;
    };
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
    let (redis, memory) = both_stores(&ns, now, &rows).await;

    let retention = Retention {
        keep_last: None,
        max_age: Some(std::time::Duration::from_secs(30 * 24 * 3600)),
    };
    let removed = fleetcron_conformance::store_fixtures::prune(&redis, &retention)
        .await
        .expect("prune");
    assert_eq!(
        removed,
        fleetcron_conformance::store_fixtures::prune(&memory, &retention)
            .await
            .expect("memory prune")
    );
    assert_eq!(removed, 3);
    assert_eq!(run_ids(&redis, "a").await, ["a6", "a4", "a3", "a2"]);
    assert_eq!(run_ids(&redis, "a").await, run_ids(&memory, "a").await);
    assert!(run_ids(&redis, "b").await.is_empty());

    // Both limits: rows removed for age do not count towards keep_last.
    let both = Retention {
        keep_last: Some(2),
        max_age: Some(std::time::Duration::from_secs(2 * 3600)),
    };
    let removed = fleetcron_conformance::store_fixtures::prune(&redis, &both)
        .await
        .expect("prune");
    assert_eq!(
        removed,
        fleetcron_conformance::store_fixtures::prune(&memory, &both)
            .await
            .expect("memory prune")
    );
    assert_eq!(run_ids(&redis, "a").await, run_ids(&memory, "a").await);
    assert_eq!(run_ids(&redis, "a").await, ["a6", "a4", "a3"]);

    // A max_age too large for the calendar prunes nothing by age.
    let huge = Retention {
        keep_last: None,
        max_age: Some(std::time::Duration::MAX),
    };
    assert_eq!(
        fleetcron_conformance::store_fixtures::prune(&redis, &huge)
            .await
            .expect("prune"),
        0
    );
}

#[tokio::test]
async fn prune_never_deletes_a_pending_row() {
    let Some(ns) = Namespace::new("prune_never_deletes_a_pending_row").await else {
        return;
    };
    let store = ns.store().await;
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
async fn now_is_monotonic_and_whole_milliseconds() {
    let Some(ns) = Namespace::new("now_is_monotonic_and_whole_milliseconds").await else {
        return;
    };
    let store = ns.store_with(starting_at(&ns, epoch())).await;
    let first = store.now().await.expect("now");
    assert_eq!(first.timestamp_subsec_nanos() % 1_000_000, 0);
    assert!((first - epoch()).num_seconds().abs() < 5, "{first}");

    // The clock steps back an hour: the store does not.
    store.set_clock_offset(store.clock_offset() - Duration::hours(1));
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
    assert_eq!(
        store.mutate(&[], &mut |_, _, _| Mutation::none()).await.expect("empty"),
        first
    );

    // And moves on when the clock does.
    store.set_clock_offset(store.clock_offset() + Duration::hours(2));
    let later = store.now().await.expect("now");
    assert!(later >= first + Duration::minutes(59), "{later}");

    // Readings of one store never go back, whichever operation takes them.
    let mut previous = later;
    for round in 0..20 {
        let now = match round % 4 {
            0 => store.now().await.expect("now"),
            1 => store.due_for_attention(1).await.expect("poll").0,
            2 => store.load(None).await.expect("load").0,
            _ => store
                .mutate(&["t".to_owned()], &mut |_, _, _| Mutation::none())
                .await
                .expect("mutate"),
        };
        assert!(now >= previous, "{now} < {previous}");
        previous = now;
    }
}

#[tokio::test]
async fn two_updates_of_a_run_in_one_batch_match_the_reference_store() {
    let Some(ns) = Namespace::new("two_updates_of_a_run_in_one_batch_match_the_reference_store").await else {
        return;
    };
    let rows = vec![("t", run("t", "r1", Some(0), 1, RunStatus::Running))];
    let (redis, memory) = both_stores(&ns, epoch(), &rows).await;

    async fn two_updates<S: Store>(store: &S) -> Vec<RunRecord> {
        store
            .mutate(&["t".to_owned()], &mut |_, _, _| Mutation {
                update_runs: vec![
                    RunUpdate {
                        reason: Some("superseded".to_owned()),
                        error: Some("first".to_owned()),
                        ..finish("r1", RunStatus::Cancelled, epoch())
                    },
                    RunUpdate {
                        result: Some(json!([1, 2])),
                        ..finish("r1", RunStatus::Failed, epoch() + ms(5))
                    },
                    // A run of another task is not this task's to change.
                    finish("u1", RunStatus::Failed, epoch()),
                ],
                ..Mutation::none()
            })
            .await
            .expect("mutate");
        store.runs("t", &RunQuery::default()).await.expect("runs")
    }
    insert_runs(&redis, "u", vec![run("u", "u1", Some(0), 1, RunStatus::Running)]).await;
    let from_redis = two_updates(&redis).await;
    assert_eq!(from_redis, two_updates(&memory).await);
    // The later update wins whole.
    assert_eq!(from_redis[0].reason, None);
    assert_eq!(from_redis[0].error, None);
    assert_eq!(from_redis[0].status, RunStatus::Failed);
    assert_eq!(from_redis[0].result, Some(json!([1, 2])));
    assert_eq!(from_redis[0].finished_at, Some(epoch() + ms(5)));
    assert_eq!(
        redis.runs("u", &RunQuery::default()).await.expect("runs")[0].status,
        RunStatus::Running
    );
    // An update of a run that does not exist creates nothing.
    assert_eq!(run_ids(&redis, "t").await, ["r1"]);
}

#[tokio::test]
async fn a_corrupt_state_document_is_reported_as_corrupt() {
    let Some(ns) = Namespace::new("a_corrupt_state_document_is_reported_as_corrupt").await else {
        return;
    };
    let store = ns.store().await;
    put_state(&store, new_state("t", epoch())).await;
    let mut conn = ns.raw().await;
    let _: i64 = redis::cmd("HSET")
        .arg(format!("{{{}:t}}:state", ns.prefix))
        .arg("doc")
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .expect("tamper");
    match store.load(None).await {
        Err(StoreError::Corrupt(message)) => assert!(message.contains("task t"), "{message}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let result = store.mutate(&["t".to_owned()], &mut |_, _, _| Mutation::none()).await;
    assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");

    // A key of the wrong type is corrupt data too, not an outage to retry.
    let _: () = redis::cmd("SET")
        .arg(format!("{{{}:w}}:runs", ns.prefix))
        .arg("x")
        .query_async(&mut conn)
        .await
        .expect("tamper");
    let result = store.runs("w", &RunQuery::default()).await;
    assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
}

#[tokio::test]
async fn the_idle_poll_is_one_short_round_trip() {
    let Some(ns) = Namespace::new("the_idle_poll_is_one_short_round_trip").await else {
        return;
    };
    let store = ns.store().await;
    let now = store.now().await.expect("now");
    for n in 0..200 {
        put_state(&store, new_state(&format!("idle-{n:03}"), now)).await;
    }
    put_state(&store, state_wanting_attention("due", now, now - Duration::seconds(1))).await;
    let mut times = Vec::new();
    for _ in 0..200 {
        let started = std::time::Instant::now();
        let (_, ids) = store.due_for_attention(1000).await.expect("poll");
        times.push(started.elapsed());
        assert_eq!(ids, ["due"]);
    }
    times.sort();
    println!(
        "redis idle poll (due_for_attention, 201 tasks, 1 due) over 200 polls: p50 {:.3} ms, p99 {:.3} ms",
        times[100].as_secs_f64() * 1e3,
        times[197].as_secs_f64() * 1e3
    );
}

/// Enabling after 30 days disabled is one range row in one script, in bounded work.
#[tokio::test]
async fn enabling_after_a_long_disable_is_bounded() {
    let Some(ns) = Namespace::new("enabling_after_a_long_disable_is_bounded").await else {
        return;
    };
    let store = ns.store().await;
    let elapsed = fleetcron_conformance::store_cases::enabling_after_a_long_disable_is_bounded(&store)
        .await
        .unwrap_or_else(|problem| panic!("{problem}"));
    println!("Redis: enabling after 30 days disabled took {elapsed:?}");
}

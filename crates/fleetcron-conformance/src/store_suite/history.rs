//! States and history: what a mutation writes reads back as written, and as the reference store has it.

use super::fixtures::*;
use super::{StoreHarness, StoreNamespace, Suite};
use chrono::Duration;
use fleetcron_core::{MemoryStore, Mutation, RunKind, RunQuery, RunRecord, RunStatus, RunUpdate, Store, TaskState};
use serde_json::json;

/// The reference store on the case's clock.
pub(super) fn reference(clock: &std::sync::Arc<super::CaseClock>) -> MemoryStore {
    MemoryStore::with_clock(clock.shared())
}

/// `decide` sees every id in order with the store's now (whole milliseconds); the state and row it
/// writes read back equal; an update sets every mutable column of a row (a `None` clears) and keeps its
/// identity; JSON results keep their type (numbers, strings, nesting, a megabyte, UTF-8).
pub async fn mutate_round_trips_states_and_runs<H: StoreHarness>(suite: &Suite<'_, H>) {
    let fresh = suite.fresh(epoch()).await;
    let store = &fresh.store;
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
    assert!(whole_ms(at), "{at}");
    assert!(at >= before && at - before < Duration::seconds(5), "{before} then {at}");
    assert_eq!(
        seen,
        vec![(at, "a".to_owned(), None), (at, "b".to_owned(), None)],
        "decide sees every id in order, with the store's now"
    );
    let written = written.expect("state written");
    let record = record.expect("run written");
    assert_eq!(store.load(None).await.expect("load").1, vec![written.clone()]);
    assert_eq!(
        store.load(Some(&ids)).await.expect("load some").1,
        vec![written.clone()]
    );
    assert_eq!(all_runs(&**store, "a").await, vec![record.clone()]);
    assert!(all_runs(&**store, "b").await.is_empty());

    // Second mutation: decide sees the stored state; end the run with a large, varied result.
    let result = json!({
        "rows": 3, "note": "ok", "nested": [1, "two", null, 2.5, u64::MAX],
        "big": "x".repeat(1 << 20), "utf8": "größe ✓ 🚀 \"quoted\" \\ back'slash",
    });
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
    assert_eq!(seen_state, Some(written));
    let expected = RunRecord {
        status: RunStatus::Succeeded,
        fence: 9,
        worker: Some("w2".to_owned()),
        claimed_at: Some(at),
        started_at: Some(at + ms(3)),
        finished_at: Some(at2),
        result: Some(result),
        // Every mutable column is set: no reason in the update clears the stored one.
        reason: None,
        error: None,
        // Identity columns never change.
        ..record
    };
    assert_eq!(all_runs(&**store, "a").await, vec![expected]);
    assert!(state_of(&**store, "a").await.expect("a").running.is_empty());

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
    let runs = all_runs(&**store, "a").await;
    assert_eq!(runs[0].result, Some(json!("just text")));
    assert_eq!(runs[0].error.as_deref(), Some(long_error.as_str()));
    assert_eq!(runs[0].reason.as_deref(), Some("second"));
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert_eq!(runs[0].trigger_id.as_deref(), Some("t-1"));
}

/// A `pending` row (a trigger waiting) becomes `running` when it starts and ends `timed_out`, with the
/// same columns as in the reference store.
pub async fn a_pending_row_starts_and_ends_like_the_reference_store<H: StoreHarness>(suite: &Suite<'_, H>) {
    let fresh = suite.fresh(epoch()).await;
    let memory = reference(&fresh.clock);
    async fn start_then_end<S: Store + ?Sized>(store: &S) -> Vec<RunRecord> {
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
        insert_runs(store, "t", vec![pending]).await;
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
        let mut history = all_runs(store, "t").await;
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
        history.extend(all_runs(store, "t").await);
        history
    }
    let history = start_then_end(&*fresh.store).await;
    assert_eq!(history, start_then_end(&memory).await, "matches the reference store");
    assert_eq!(history[0].status, RunStatus::Running);
    assert_eq!(history[0].worker.as_deref(), Some("w9"));
    assert_eq!(history[1].status, RunStatus::TimedOut);
    assert_eq!(history[1].trigger_id.as_deref(), Some("trigger-1"));
}

/// Two updates of one run in one mutation: the later wins whole. An update of another task's run, or of
/// a run that does not exist, changes and creates nothing; a run inserted and updated in one mutation
/// ends updated. All as in the reference store.
pub async fn updates_in_one_batch_match_the_reference_store<H: StoreHarness>(suite: &Suite<'_, H>) {
    let fresh = suite.fresh(epoch()).await;
    let memory = reference(&fresh.clock);
    async fn updates<S: Store + ?Sized>(store: &S) -> Vec<RunRecord> {
        insert_runs(store, "t", vec![run("t", "r1", Some(0), 1, RunStatus::Running)]).await;
        insert_runs(store, "u", vec![run("u", "u1", Some(0), 1, RunStatus::Running)]).await;
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
                    // A run of another task is not this task's to change, nor is a run that does not exist.
                    finish("u1", RunStatus::Failed, epoch()),
                    finish("nope", RunStatus::Failed, epoch()),
                ],
                ..Mutation::none()
            })
            .await
            .expect("two updates");
        store
            .mutate(&["v".to_owned()], &mut |now, id, _| Mutation {
                state: Some(new_state(id, now)),
                insert_runs: vec![run("v", "v1", Some(0), 1, RunStatus::Pending)],
                update_runs: vec![finish("v1", RunStatus::Succeeded, epoch() + ms(7))],
            })
            .await
            .expect("insert and update");
        let mut runs = all_runs(store, "t").await;
        runs.extend(all_runs(store, "u").await);
        runs.extend(all_runs(store, "v").await);
        runs
    }
    let runs = updates(&*fresh.store).await;
    assert_eq!(runs, updates(&memory).await, "matches the reference store");
    assert_eq!(runs.len(), 3, "no row appears for a run that does not exist: {runs:#?}");
    // The later update wins whole.
    assert_eq!(runs[0].reason, None);
    assert_eq!(runs[0].error, None);
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert_eq!(runs[0].result, Some(json!([1, 2])));
    assert_eq!(runs[0].finished_at, Some(epoch() + ms(5)));
    assert_eq!(runs[1].status, RunStatus::Running, "another task's run is untouched");
    assert_eq!(runs[2].status, RunStatus::Succeeded, "inserted, then updated");
}

/// A range row (many skipped or missed slots in one row: `slot` … `slot_until`, `slot_count`) reads
/// back whole, keeps its range through an update, and holds the unique key of its first slot.
pub async fn range_rows_round_trip<H: StoreHarness>(suite: &Suite<'_, H>) {
    let fresh = suite.fresh(epoch()).await;
    let memory = reference(&fresh.clock);
    async fn ranges<S: Store + ?Sized>(store: &S) -> Vec<RunRecord> {
        let range = RunRecord {
            slot_until: Some(epoch() + Duration::days(30)),
            slot_count: Some(2_592_000),
            reason: Some("disabled".to_owned()),
            finished_at: Some(epoch() + Duration::days(30)),
            ..run("t", "range-1", Some(1_000), 1, RunStatus::Skipped)
        };
        let single = run("t", "single-2", Some(2_592_001_000), 1, RunStatus::Missed);
        insert_runs(store, "t", vec![range.clone(), single.clone()]).await;
        let mut history = all_runs(store, "t").await;
        assert_eq!(history, vec![single, range], "the rows read back whole");
        store
            .mutate(&["t".to_owned()], &mut |_, _, _| Mutation {
                update_runs: vec![RunUpdate {
                    reason: Some("catch-up".to_owned()),
                    ..finish("range-1", RunStatus::Missed, epoch() + Duration::days(31))
                }],
                ..Mutation::none()
            })
            .await
            .expect("update the range row");
        let refused = try_insert_runs(
            store,
            "t",
            vec![run("t", "range-2", Some(1_000), 1, RunStatus::Skipped)],
        )
        .await;
        assert!(
            matches!(refused, Err(fleetcron_core::StoreError::Duplicate(_))),
            "{refused:?}"
        );
        history.extend(all_runs(store, "t").await);
        history
    }
    let history = ranges(&*fresh.store).await;
    assert_eq!(history, ranges(&memory).await, "matches the reference store");
    let updated = &history[3];
    assert_eq!(updated.status, RunStatus::Missed);
    assert_eq!(updated.slot_until, Some(epoch() + Duration::days(30)), "{updated:?}");
    assert_eq!(updated.slot_count, Some(2_592_000));
}

/// `runs` pages a task's history newest first with `before` (which need not be a stored id), and
/// nothing of another task.
pub async fn runs_page_newest_first<H: StoreHarness>(suite: &Suite<'_, H>) {
    let fresh = suite.fresh(epoch()).await;
    let store = &*fresh.store;
    for batch in 0..5 {
        let records = (0..5)
            .map(|i| {
                let n = batch * 5 + i;
                run("t", &format!("run-{n:03}"), Some(n * 1_000), 1, RunStatus::Succeeded)
            })
            .collect();
        insert_runs(store, "t", records).await;
    }
    insert_runs(
        store,
        "other",
        vec![run("other", "run-999", Some(0), 1, RunStatus::Failed)],
    )
    .await;

    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let query = RunQuery {
            limit: 10,
            before: before.clone(),
        };
        let page = store.runs("t", &query).await.expect("page");
        if page.is_empty() {
            break;
        }
        before = page.last().map(|run| run.run_id.clone());
        pages.push(page.into_iter().map(|run| run.run_id).collect::<Vec<_>>());
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
    let expected: Vec<String> = (0..25).rev().map(|n| format!("run-{n:03}")).collect();
    assert_eq!(pages.concat(), expected);
    let query = RunQuery {
        limit: 2,
        before: Some("run-010x".to_owned()),
    };
    let page: Vec<String> = store
        .runs("t", &query)
        .await
        .expect("page")
        .into_iter()
        .map(|run| run.run_id)
        .collect();
    assert_eq!(page, ["run-010", "run-009"], "`before` need not be a stored id");
    let empty = RunQuery { limit: 0, before: None };
    assert!(store.runs("t", &empty).await.expect("empty page").is_empty());
    assert!(store
        .runs("nobody", &RunQuery::default())
        .await
        .expect("runs")
        .is_empty());
}

/// `load` answers states sorted by id in byte order (whatever the database's collation), skips ids it
/// does not know (also among many) and tasks that have history but no state, and answers an empty
/// namespace with nothing.
pub async fn load_sorts_by_id_and_skips_unknown_ids<H: StoreHarness>(suite: &Suite<'_, H>) {
    let (_clock, empty) = suite.namespace(epoch()).await;
    let (at, states) = super::migrated(&empty)
        .await
        .load(None)
        .await
        .expect("load an empty store");
    assert!(states.is_empty() && whole_ms(at));
    let fresh = suite.fresh(epoch()).await;
    let store = &*fresh.store;
    for id in ["m", "b", "z", "a", "B", "a-1", "a0"] {
        put_state(store, new_state(id, epoch())).await;
    }
    insert_runs(store, "history-only", vec![finished_run("history-only", "h1", epoch())]).await;
    let ids = |states: Vec<TaskState>| states.into_iter().map(|s| s.definition.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.load(None).await.expect("load").1),
        ["B", "a", "a-1", "a0", "b", "m", "z"]
    );
    let wanted: Vec<String> = ["z", "nope", "b", "history-only"].map(str::to_owned).to_vec();
    assert_eq!(ids(store.load(Some(&wanted)).await.expect("load").1), ["b", "z"]);
    assert!(store.load(Some(&[])).await.expect("load").1.is_empty());
    let many: Vec<String> = (0..300)
        .map(|n| format!("missing-{n}"))
        .chain(["m".to_owned()])
        .collect();
    assert_eq!(ids(store.load(Some(&many)).await.expect("load").1), ["m"]);
    // Another store of the namespace sees the same.
    let other = fresh.ns.open().await;
    assert_eq!(ids(other.load(None).await.expect("load").1).len(), 7);
}

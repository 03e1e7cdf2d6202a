//! Key prefixes are namespaces: two stores whose prefixes extend one another (`P` and `Px`, `P.x`,
//! `P-x`, `P_x`; `P:x` is refused, since `:` separates the prefix from the task id in every key) never
//! see, change or match each other's tasks, runs or keys — with task ids that contain `:` and ids that
//! exist under both prefixes.

use crate::*;
use chrono::Duration;
use fleetcron_core::{EngineStrategy, Retention, RunQuery, SchedulerStrategy, StoreError, UpdateScheduledTaskInput};
use fleetcron_core::{Mutation, RunStatus, TaskState};
use std::collections::BTreeSet;

/// What each prefix extends the first one with. Only the one with `:` may be (and must be) refused.
const EXTENSIONS: [&str; 5] = [":x", "x", ".x", "-x", "_x"];

/// The tasks of the shorter prefix: `x:y` is what `P:x`'s task `y` was stored as before prefixes lost
/// their colons.
const OUTER_TASKS: [&str; 4] = ["x:y", "y", "x", "a:b:c"];
/// The tasks of the longer prefix (`y` exists under both).
const INNER_TASKS: [&str; 3] = ["y", "b:c", "z"];

fn describe(state: &mut TaskState, owner: &str) {
    state.definition.description = format!("{} of {owner}", state.definition.id);
}

/// Writes `ids` under `store`: a state (the first one wanting attention now) and two runs each.
async fn populate(store: &RedisStore, owner: &str, ids: &[&str]) -> Vec<(String, Vec<String>)> {
    let now = store.now().await.expect("now");
    let mut written = Vec::new();
    for (index, id) in ids.iter().enumerate() {
        let mut state = if index == 0 {
            state_wanting_attention(id, now, now - Duration::seconds(1))
        } else {
            new_state(id, now)
        };
        describe(&mut state, owner);
        put_state(store, state).await;
        let run_ids: Vec<String> = (0..2).map(|n| format!("{owner}-{index}-{n}")).collect();
        let runs = run_ids
            .iter()
            .enumerate()
            .map(|(n, run_id)| {
                let mut record = run(
                    id,
                    run_id,
                    Some(i64::try_from(n).expect("small") * 1000),
                    1,
                    RunStatus::Succeeded,
                );
                record.finished_at = Some(epoch());
                record
            })
            .collect();
        insert_runs(store, id, runs).await;
        written.push(((*id).to_owned(), run_ids));
    }
    written
}

/// Every key of the server that `pattern` matches (SCAN, as an operator would), sorted.
async fn scan(ns: &Namespace, pattern: &str) -> BTreeSet<String> {
    let mut conn = ns.raw().await;
    let mut cursor = 0_u64;
    let mut keys = BTreeSet::new();
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .expect("SCAN");
        keys.extend(page);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// The keys the layout gives `written` under `prefix`.
fn expected_keys(prefix: &str, written: &[(String, Vec<String>)]) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = ["tasks", "attention", "schema"]
        .iter()
        .map(|name| format!("{{{prefix}}}:{name}"))
        .collect();
    for (id, runs) in written {
        for suffix in ["state", "runs", "slots"] {
            keys.insert(format!("{{{prefix}:{id}}}:{suffix}"));
        }
        for run_id in runs {
            keys.insert(format!("{{{prefix}:{id}}}:run:{run_id}"));
        }
    }
    keys
}

async fn all_runs(store: &RedisStore, id: &str) -> Vec<String> {
    let query = RunQuery {
        limit: 1000,
        before: None,
    };
    store
        .runs(id, &query)
        .await
        .expect("runs")
        .into_iter()
        .map(|run| run.run_id)
        .collect()
}

/// What a store holds, as its own reads see it: per task, (description, enabled, pending, run ids).
async fn contents(store: &RedisStore, ids: &[&str]) -> Vec<(String, String, bool, usize, Vec<String>)> {
    let (_, states) = store.load(None).await.expect("load every task");
    let mut seen = Vec::new();
    for state in states {
        let runs = all_runs(store, &state.definition.id).await;
        seen.push((
            state.definition.id.clone(),
            state.definition.description.clone(),
            state.enabled,
            state.pending.len(),
            runs,
        ));
    }
    // Asking by id finds the same documents (or nothing) as the full load.
    let wanted: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
    let (_, by_id) = store.load(Some(&wanted)).await.expect("load by id");
    let by_id: Vec<String> = by_id.into_iter().map(|state| state.definition.id).collect();
    let loaded: Vec<String> = seen
        .iter()
        .map(|(id, ..)| id.clone())
        .filter(|id| wanted.contains(id))
        .collect();
    assert_eq!(by_id, loaded, "load(ids) and load(None) disagree");
    seen
}

/// `outer`'s prefix is a prefix of `inner`'s; both stores are migrated.
async fn assert_isolated(outer_ns: &Namespace, outer: RedisStore, inner_ns: &Namespace, inner: RedisStore) {
    let (p, q) = (outer_ns.prefix.as_str(), inner_ns.prefix.as_str());
    let outer_written = populate(&outer, "outer", &OUTER_TASKS).await;
    let outer_before = contents(&outer, &OUTER_TASKS).await;
    assert_eq!(outer_before.len(), OUTER_TASKS.len(), "{p}: {outer_before:?}");

    // The inner prefix sees nothing of the outer one, by any read.
    let inner = Arc::new(inner);
    let admin = EngineStrategy::new(inner.clone());
    let every_id: Vec<String> = OUTER_TASKS
        .iter()
        .chain(&INNER_TASKS)
        .map(|id| (*id).to_owned())
        .collect();
    assert_eq!(
        inner.load(None).await.expect("load").1,
        Vec::new(),
        "{q} loads {p}'s tasks"
    );
    assert_eq!(
        inner.load(Some(&every_id)).await.expect("load").1,
        Vec::new(),
        "{q} reads {p}'s tasks by id"
    );
    for id in &every_id {
        assert!(all_runs(&inner, id).await.is_empty(), "{q} reads {p}'s runs of {id}");
        assert!(
            admin.get_task(id).await.expect("get_task").is_none(),
            "{q} reports {p}'s task {id}"
        );
        assert!(admin.trigger_task(id).await.is_err(), "{q} triggers {p}'s task {id}");
        let disable = UpdateScheduledTaskInput {
            id: id.clone(),
            enabled: Some(false),
        };
        assert!(
            admin.update_task(disable).await.is_err(),
            "{q} disables {p}'s task {id}"
        );
    }
    assert!(
        admin.get_tasks().await.expect("get_tasks").is_empty(),
        "{q} lists {p}'s tasks"
    );
    assert!(
        inner.due_for_attention(100).await.expect("poll").1.is_empty(),
        "{q} is told to attend to {p}'s tasks"
    );
    let prune_all = Retention {
        keep_last: Some(0),
        max_age: None,
    };
    assert_eq!(
        fleetcron_conformance::store_fixtures::prune(inner.as_ref(), &prune_all)
            .await
            .expect("prune"),
        0,
        "{q} prunes {p}'s runs"
    );
    let mut seen: Vec<String> = Vec::new();
    inner
        .mutate(&every_id, &mut |_, id, stored| {
            if stored.is_some() {
                seen.push(id.to_owned());
            }
            Mutation::none()
        })
        .await
        .expect("read-only mutation");
    assert!(seen.is_empty(), "{q}'s mutation sees {p}'s states of {seen:?}");
    assert_eq!(
        contents(&outer, &OUTER_TASKS).await,
        outer_before,
        "{q}'s reads and refused writes changed {p}'s tasks"
    );

    // The inner prefix writes its own tasks (one id shared with the outer prefix), triggers and
    // disables one, and prunes: the outer prefix sees none of it, and the other way round.
    let inner_written = populate(&inner, "inner", &INNER_TASKS).await;
    admin.trigger_task("y").await.expect("trigger the inner y");
    admin
        .update_task(UpdateScheduledTaskInput {
            id: "b:c".to_owned(),
            enabled: Some(false),
        })
        .await
        .expect("disable the inner b:c");
    assert_eq!(
        contents(&outer, &OUTER_TASKS).await,
        outer_before,
        "{q}'s writes changed {p}'s tasks"
    );
    let inner_now = contents(&inner, &INNER_TASKS).await;
    let inner_ids: Vec<&str> = inner_now.iter().map(|(id, ..)| id.as_str()).collect();
    assert_eq!(inner_ids, ["b:c", "y", "z"], "{q}: {inner_now:?}");
    for (id, description, enabled, pending, runs) in &inner_now {
        assert_eq!(
            description,
            &format!("{id} of inner"),
            "{q} reads {p}'s document of {id}"
        );
        assert_eq!(*enabled, id != "b:c", "{q}: {id}");
        assert!(
            runs.iter().all(|run| run.starts_with("inner-")),
            "{q}: runs of {id}: {runs:?}"
        );
        assert_eq!(*pending, usize::from(id == "y"), "{q}: pending runs of {id}");
    }
    let outer_due: BTreeSet<String> = outer
        .due_for_attention(100)
        .await
        .expect("poll")
        .1
        .into_iter()
        .collect();
    let inner_due: BTreeSet<String> = inner
        .due_for_attention(100)
        .await
        .expect("poll")
        .1
        .into_iter()
        .collect();
    assert_eq!(outer_due, BTreeSet::from(["x:y".to_owned()]), "{p} is due for");
    assert!(
        inner_due.contains("y") && !inner_due.contains("x:y"),
        "{q} is due for {inner_due:?}"
    );

    // Each key pattern matches exactly its own namespace's keys.
    let outer_keys = scan(outer_ns, &outer.key_pattern()).await;
    let inner_keys = scan(inner_ns, &inner.key_pattern()).await;
    assert_eq!(
        outer_keys,
        expected_keys(p, &outer_written),
        "{p}'s key pattern {}",
        outer.key_pattern()
    );
    assert_eq!(
        inner_keys,
        expected_keys(q, &inner_written),
        "{q}'s key pattern {}",
        inner.key_pattern()
    );
    assert!(outer_keys.is_disjoint(&inner_keys));

    // Pruning one prefix's history leaves the other's whole.
    let inner_runs: usize = inner_written.iter().map(|(_, runs)| runs.len()).sum();
    assert_eq!(
        fleetcron_conformance::store_fixtures::prune(inner.as_ref(), &prune_all)
            .await
            .expect("prune") as usize,
        inner_runs,
        "{q} prunes exactly its own runs"
    );
    assert_eq!(
        contents(&outer, &OUTER_TASKS).await,
        outer_before,
        "{q}'s pruning touched {p}"
    );
}

#[tokio::test]
async fn prefixes_that_extend_one_another_never_see_each_others_tasks_runs_or_keys() {
    let mut refused = Vec::new();
    for extension in EXTENSIONS {
        let outer_ns = namespace_or_skip!(RedisHarness);
        let inner_ns = Namespace::with_prefix(
            format!("{}{extension}", outer_ns.prefix),
            fleetcron_core::clock::system_clock(),
        );
        let outer = outer_ns.open_with(outer_ns.options()).await;
        outer.migrate().await.expect("migrate");
        match RedisStore::connect_with(&redis_url(), inner_ns.options()).await {
            Err(StoreError::Config(message)) => {
                assert!(
                    message.contains("A-Z a-z 0-9 . _ -"),
                    "the error names the allowed characters: {message}"
                );
                refused.push(extension);
                continue;
            }
            Err(other) => panic!("{}: {other:?}", inner_ns.prefix),
            Ok(inner) => {
                inner.migrate().await.expect("migrate");
                assert_isolated(&outer_ns, outer, &inner_ns, inner).await;
            }
        }
    }
    assert_eq!(refused, [":x"], "only the prefix with the separator is refused");
    // The same through a URL's prefix parameter.
    let url = format!("{}?prefix=fleet%3Aprod", redis_url());
    assert!(
        matches!(RedisStore::connect(&url).await, Err(StoreError::Config(_))),
        "{url} is accepted"
    );
}

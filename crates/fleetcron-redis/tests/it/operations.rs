//! What only Redis has: the key layout (hash tags, no expiring keys, one write per mutation), the idle
//! poll's cost, and keys of the wrong type. Every store operation itself is a case of the store suite.

use crate::*;
use chrono::Duration;
use fleetcron_core::{Mutation, RunQuery, RunStatus, TaskState};

#[tokio::test]
async fn the_layout_uses_hash_tags_and_no_expiring_keys() {
    let ns = namespace_or_skip!(RedisHarness);
    let store = migrated(&ns).await;
    assert_eq!(store.key_prefix(), ns.prefix);
    let now = store.now().await.expect("now");
    // A task whose decision writes nothing (`ghost`) gets no key at all.
    let ids = ["job.1".to_owned(), "ghost".to_owned()];
    store
        .mutate(&ids, &mut |now, id, _| Mutation {
            state: (id == "job.1").then(|| state_wanting_attention(id, now, now)),
            ..Mutation::none()
        })
        .await
        .expect("mutate");
    insert_runs(
        &*store,
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
    assert!(attention >= now.timestamp_millis(), "{attention}");
    let slot_keys: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("{{{p}:job.1}}:slots"))
        .query_async(&mut conn)
        .await
        .expect("SMEMBERS");
    assert_eq!(slot_keys, [format!("{}:1", epoch().timestamp_millis())]);
    assert!(store.key_pattern().starts_with(&format!("{{{p}")));
}

#[tokio::test]
async fn the_idle_poll_is_one_short_round_trip() {
    let ns = namespace_or_skip!(RedisHarness);
    let store = migrated(&ns).await;
    let now = store.now().await.expect("now");
    for n in 0..200 {
        put_state(&*store, new_state(&format!("idle-{n:03}"), now)).await;
    }
    put_state(&*store, state_wanting_attention("due", now, now - Duration::seconds(1))).await;
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

/// A key of the wrong type is corrupt data, not an outage to retry.
#[tokio::test]
async fn a_key_of_the_wrong_type_is_corrupt() {
    let ns = namespace_or_skip!(RedisHarness);
    let store = migrated(&ns).await;
    ns.command(redis::cmd("SET").arg(format!("{{{}:w}}:runs", ns.prefix)).arg("x"))
        .await;
    let result = store.runs("w", &RunQuery::default()).await;
    assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
}

/// Two workers read a task for the same claim; the second commits first. The first one's commit then
/// finds the task moved *and* accounted up to its floor: it is left out (no document sent back, no
/// second decision), not decided again on the winner's document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_finds_its_task_accounted_at_commit_leaves_it_out() {
    let ns = namespace_or_skip!(RedisHarness);
    let store = migrated(&ns).await;
    let winner = ns.open().await;
    let now = store.now().await.expect("now");
    put_state(&*store, new_state("t", now - Duration::seconds(10))).await;
    let ids = ["t".to_owned()];
    let floor = now;
    let advance = move |stored: Option<&TaskState>| Mutation {
        state: stored.map(|state| TaskState {
            high_water: floor,
            fence: state.fence + 1,
            ..state.clone()
        }),
        ..Mutation::none()
    };
    let runtime = tokio::runtime::Handle::current();
    let mut decisions = 0;
    let (_, left_out) = store
        .mutate_claims(&ids, &[floor], &mut |_, _, stored| {
            decisions += 1;
            if decisions == 1 {
                // Between this worker's read and its commit, another one claims the same slot.
                let (winner, ids) = (winner.clone(), ids.clone());
                let won = std::thread::scope(|scope| {
                    scope
                        .spawn(|| runtime.block_on(winner.mutate(&ids, &mut |_, _, stored| advance(stored))))
                        .join()
                });
                assert!(matches!(won, Ok(Ok(_))), "the other worker's claim commits");
            }
            advance(stored)
        })
        .await
        .expect("the claim");
    assert_eq!(decisions, 1, "a task found accounted at commit is not decided again");
    assert_eq!(left_out, ids);
    let (_, states) = store.load(Some(&ids)).await.expect("load");
    assert_eq!(
        states.first().map(|state| state.fence),
        Some(1),
        "only the winner's write stands"
    );
}

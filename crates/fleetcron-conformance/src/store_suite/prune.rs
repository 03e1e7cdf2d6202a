//! Retention: a store executes the prune plan the engine decided, exactly as the reference store does.

use super::fixtures::*;
use super::history::reference;
use super::{StoreHarness, Suite};
use chrono::Duration;
use fleetcron_core::{Retention, RunRecord, RunStatus, StoreError};

/// `rows` written to the case's store and to the reference store; both then prune under `retention`
/// and must remove as many rows and keep the same ones.
struct Both<'a, S: fleetcron_core::Store + ?Sized> {
    store: &'a S,
    memory: fleetcron_core::MemoryStore,
}

impl<'a, S: fleetcron_core::Store + ?Sized> Both<'a, S> {
    async fn new(store: &'a S, clock: &std::sync::Arc<super::CaseClock>, rows: &[(&str, RunRecord)]) -> Self {
        let memory = reference(clock);
        for (task, record) in rows {
            insert_runs(store, task, vec![record.clone()]).await;
            insert_runs(&memory, task, vec![record.clone()]).await;
        }
        Self { store, memory }
    }

    /// Prunes both; returns how many rows went (the same in both).
    async fn prune(&self, retention: Retention) -> u64 {
        let removed = prune(self.store, &retention).await.expect("prune");
        let expected = prune(&self.memory, &retention)
            .await
            .expect("prune the reference store");
        assert_eq!(removed, expected, "{retention:?}: as many rows as the reference store");
        removed
    }

    /// The task's run ids, the same in both.
    async fn run_ids(&self, task: &str) -> Vec<String> {
        let ids = run_ids(self.store, task).await;
        assert_eq!(
            ids,
            run_ids(&self.memory, task).await,
            "{task}: the rows the reference store keeps"
        );
        ids
    }
}

fn keep_last(keep: u32) -> Retention {
    Retention {
        keep_last: Some(keep),
        max_age: None,
    }
}

/// `keep_last` keeps the newest finished rows of each task (by run id) and every unfinished one; 0
/// keeps only the unfinished; pruning again removes nothing; a pruned row's slot key is free again,
/// a kept one's is not.
pub async fn prune_keep_last_keeps_the_newest_rows_and_every_unfinished_row<H: StoreHarness>(suite: &Suite<'_, H>) {
    let fresh = suite.fresh(epoch() + Duration::days(1)).await;
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
    let both = Both::new(&*fresh.store, &fresh.clock, &rows).await;

    assert_eq!(both.prune(keep_last(3)).await, 6);
    assert_eq!(both.run_ids("a").await, ["a7", "a6", "a5", "a00-running"]);
    assert_eq!(both.run_ids("b").await, ["b1", "b0"]);
    assert_eq!(both.prune(keep_last(0)).await, 5);
    assert_eq!(both.run_ids("a").await, ["a00-running"]);
    assert_eq!(both.prune(keep_last(0)).await, 0);

    let store = &*fresh.store;
    insert_runs(store, "a", vec![run("a", "a99", Some(5), 1, RunStatus::Running)]).await;
    let kept = try_insert_runs(store, "a", vec![run("a", "a98", Some(0), 1, RunStatus::Running)]).await;
    assert!(matches!(kept, Err(StoreError::Duplicate(_))), "{kept:?}");
}

/// `max_age` removes the finished rows that ended before the store's now minus the age — never an
/// unfinished row or one without an end time — and rows removed for age do not count towards
/// `keep_last`. An age beyond the calendar removes nothing.
pub async fn prune_max_age_uses_the_store_clock_and_end_times<H: StoreHarness>(suite: &Suite<'_, H>) {
    let now = epoch() + Duration::days(40);
    let fresh = suite.fresh(now).await;
    let rows = vec![
        ("a", finished_run("a", "a1", now - Duration::days(31))),
        ("a", finished_run("a", "a2", now - Duration::days(29))),
        // Never finished, still running although very old: kept.
        ("a", run("a", "a3", Some(0), 1, RunStatus::Running)),
        // No end time (a skipped slot recorded without one): kept by age.
        ("a", run("a", "a4", Some(1), 1, RunStatus::Skipped)),
        ("a", finished_run("a", "a5", now - Duration::days(35))),
        ("a", finished_run("a", "a6", now - Duration::hours(1))),
        ("b", finished_run("b", "b1", now - Duration::days(300))),
    ];
    let both = Both::new(&*fresh.store, &fresh.clock, &rows).await;
    let days = |n: u64| std::time::Duration::from_secs(n * 24 * 3600);

    let thirty_days = Retention {
        keep_last: None,
        max_age: Some(days(30)),
    };
    assert_eq!(both.prune(thirty_days).await, 3);
    assert_eq!(both.run_ids("a").await, ["a6", "a4", "a3", "a2"]);
    assert!(both.run_ids("b").await.is_empty());
    let two_hours_and_two = Retention {
        keep_last: Some(2),
        max_age: Some(std::time::Duration::from_secs(2 * 3600)),
    };
    assert_eq!(both.prune(two_hours_and_two).await, 1);
    assert_eq!(both.run_ids("a").await, ["a6", "a4", "a3"]);
    let huge = Retention {
        keep_last: None,
        max_age: Some(std::time::Duration::MAX),
    };
    assert_eq!(both.prune(huge).await, 0);
}

/// A `pending` row (work accepted, not started: its row is updated when it starts) is never pruned,
/// however old and whatever `keep_last`.
pub async fn prune_never_deletes_a_pending_row<H: StoreHarness>(suite: &Suite<'_, H>) {
    let fresh = suite.fresh(epoch() + Duration::days(1)).await;
    let rows = vec![
        ("t", run("t", "r1", None, 1, RunStatus::Pending)),
        ("t", finished_run("t", "r2", epoch())),
        ("t", finished_run("t", "r3", epoch())),
    ];
    let both = Both::new(&*fresh.store, &fresh.clock, &rows).await;
    let strict = Retention {
        keep_last: Some(0),
        max_age: Some(std::time::Duration::from_secs(1)),
    };
    assert_eq!(both.prune(strict).await, 2);
    assert_eq!(both.run_ids("t").await, ["r1"]);
}

//! A store that goes away for a while: claims, completions and renewals retry with backoff; nothing
//! runs twice, every slot is accounted for, and admin calls fail with a clear error instead of hanging.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fleetcron_core::{
    Decide, EngineConfig, EngineStrategy, MemoryStore, PrunePlan, RunQuery, RunRecord, RunStatus, ScheduledTask,
    Scheduler, SchedulerError, Store, StoreError, TaskState, Timestamp,
};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The memory store behind a switch: while `down`, every operation fails as a lost connection would.
struct FlakyStore {
    inner: MemoryStore,
    down: AtomicBool,
    refused: AtomicUsize,
}

impl FlakyStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Unavailable("connection refused (injected)".to_owned()));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for FlakyStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.migrate().await
    }

    async fn now(&self) -> Result<Timestamp, StoreError> {
        self.check()?;
        self.inner.now().await
    }

    async fn mutate(&self, ids: &[String], decide: &mut Decide<'_>) -> Result<Timestamp, StoreError> {
        self.check()?;
        self.inner.mutate(ids, decide).await
    }

    async fn load(&self, ids: Option<&[String]>) -> Result<(Timestamp, Vec<TaskState>), StoreError> {
        self.check()?;
        self.inner.load(ids).await
    }

    async fn due_for_attention(&self, limit: u32) -> Result<(Timestamp, Vec<String>), StoreError> {
        self.check()?;
        self.inner.due_for_attention(limit).await
    }

    async fn runs(&self, task_id: &str, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        self.check()?;
        self.inner.runs(task_id, query).await
    }

    async fn prune_runs(&self, plan: &PrunePlan) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.prune_runs(plan).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_is_retried_without_loss_or_duplicate() {
    let store = Arc::new(FlakyStore {
        inner: MemoryStore::new(),
        down: AtomicBool::new(false),
        refused: AtomicUsize::new(0),
    });
    let mut config = EngineConfig::default()
        .lease(Duration::from_secs(5))
        .poll_interval(Duration::from_millis(100));
    config.admin_retry_for = Duration::from_millis(500);
    let seen: Arc<Mutex<Vec<DateTime<Utc>>>> = Arc::new(Mutex::new(Vec::new()));
    let mut schedulers = Vec::new();
    for worker in ["a", "b"] {
        let seen = seen.clone();
        let task = ScheduledTask::builder("through-outage")
            .schedule("* * * * * *")
            .handler(move |context| {
                let seen = seen.clone();
                async move {
                    if let (Ok(mut seen), Some(slot)) = (seen.lock(), context.slot) {
                        seen.push(slot);
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok(serde_json::Value::Null)
                }
            })
            .build()
            .expect("valid task");
        let scheduler = Scheduler::builder()
            .strategy(EngineStrategy::with_config(store.clone(), config.clone()))
            .worker_id(worker)
            .task(task)
            .retention_schedule(None)
            .build()
            .expect("valid scheduler");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = scheduler.clone();
        let handle = tokio::spawn(async move { running.run_until(stopped).await });
        scheduler.ready().await;
        schedulers.push((scheduler, stop, handle));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    store.down.store(true, Ordering::SeqCst);
    // While the store is down, admin calls fail with a clear, retryable error instead of hanging.
    let admin = schedulers[0].0.clone();
    match admin.trigger("through-outage").await {
        Err(SchedulerError::Store(error)) => assert!(error.is_transient() && error.to_string().contains("unavailable")),
        other => panic!("expected a store error, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    store.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for (_, stop, handle) in schedulers {
        let _ = stop.send(());
        handle.await.expect("scheduler task").expect("clean shutdown");
    }
    assert!(
        store.refused.load(Ordering::SeqCst) > 0,
        "the outage must have been hit"
    );
    let seen = seen.lock().map(|seen| seen.clone()).unwrap_or_default();
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no slot may run twice: {seen:?}");
    let mut runs = admin
        .strategy()
        .runs(
            "through-outage",
            RunQuery {
                limit: 1000,
                before: None,
            },
        )
        .await
        .expect("history");
    runs.reverse();
    let mut slots: Vec<_> = runs.iter().filter_map(|run| run.slot).collect();
    slots.sort();
    for pair in slots.windows(2) {
        assert_eq!(
            (pair[1] - pair[0]).num_milliseconds(),
            1000,
            "every slot accounted exactly once: {runs:?}"
        );
    }
    assert!(slots.len() >= 5);
    assert!(
        runs.iter().all(|run| run.status != RunStatus::Running),
        "every run ended: {runs:?}"
    );
    let shown: Vec<_> = runs
        .iter()
        .map(|run| {
            (
                run.slot.map(|slot| slot.format("%S%.3f").to_string()),
                run.status,
                run.reason.clone(),
                run.claimed_at.map(|at| at.format("%S%.3f").to_string()),
            )
        })
        .collect();
    assert!(
        runs.iter().filter(|run| run.status == RunStatus::Succeeded).count() >= 3,
        "{shown:?}"
    );
}

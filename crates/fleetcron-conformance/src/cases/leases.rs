//! Leases: a worker that dies or stops renewing loses its run (abandoned, forgotten or retried), a
//! stale completion is refused by the fence, and a graceful shutdown cancels and releases.

use super::{factory, manual_task, must, setup, YEARLY};
use crate::support::{eventually, history, Recorder, Worker, WorkerOptions};
use crate::Backend;
use fleetcron_core::{OnAbandon, RunKind, RunStatus, ScheduledTask, SchedulerStrategy, TaskContext, TaskError};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

async fn abandon_case<B: Backend>(
    backend: &B,
    on_abandon: OnAbandon,
) -> (Arc<dyn SchedulerStrategy>, Recorder, Worker) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || {
            let recorder = recorder.clone();
            vec![must(
                ScheduledTask::builder("fragile")
                    .schedule(YEARLY)
                    .on_abandon(on_abandon)
                    .handler(move |context: TaskContext| {
                        recorder.record(&context);
                        async move {
                            if context.attempt == 1 {
                                tokio::time::sleep(Duration::from_secs(30)).await;
                            }
                            Ok(json!({ "attempt": context.attempt }))
                        }
                    })
                    .build(),
                "valid",
            )]
        })
    };
    let doomed = Worker::start("doomed", &namespace, make.clone(), WorkerOptions::default()).await;
    must(admin.trigger_task("fragile").await, "trigger");
    assert!(
        eventually(Duration::from_secs(5), || async { !recorder.of("fragile").is_empty() }).await,
        "the run must start on the first worker"
    );
    let survivor = Worker::start("survivor", &namespace, make, WorkerOptions::default()).await;
    doomed.kill().await;
    let abandoned = eventually(Duration::from_secs(6), || async {
        history(&admin, "fragile")
            .await
            .iter()
            .any(|run| run.status == RunStatus::Abandoned)
    })
    .await;
    assert!(
        abandoned,
        "the killed worker's run must be marked abandoned within the lease time"
    );
    (admin, recorder, survivor)
}

/// A worker dies mid-run: the run is marked `abandoned` within the lease time and, under `Forget`,
/// not run again.
pub async fn lease_expiry_abandons_and_forgets<B: Backend>(backend: &B) {
    let (admin, recorder, survivor) = abandon_case(backend, OnAbandon::Forget).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        recorder.of("fragile").len(),
        1,
        "Forget must not run the abandoned run again"
    );
    let report = must(admin.get_task("fragile").await, "report");
    assert!(report.is_some_and(|report| !report.is_running && report.last_status == Some(RunStatus::Abandoned)));
    survivor.stop().await;
}

/// Under `Retry`, the abandoned run's next attempt runs on a surviving worker.
pub async fn lease_expiry_retries<B: Backend>(backend: &B) {
    let (admin, recorder, survivor) = abandon_case(backend, OnAbandon::Retry { max_attempts: 2 }).await;
    let retried = eventually(Duration::from_secs(5), || async {
        history(&admin, "fragile")
            .await
            .iter()
            .any(|run| run.kind == RunKind::Retry && run.status == RunStatus::Succeeded)
    })
    .await;
    assert!(retried, "the retry must run and succeed");
    let events = recorder.of("fragile");
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].attempt, 2);
    assert_eq!(events[1].worker, "survivor");
    let runs = history(&admin, "fragile").await;
    assert_eq!(
        runs[0].trigger_id, runs[1].trigger_id,
        "the retry serves the same trigger"
    );
    assert!(runs[1].fence > runs[0].fence);
    survivor.stop().await;
}

/// A worker that stops renewing (a long pause) loses its lease: another worker marks the run abandoned,
/// the stale worker's completion is refused by the fence, and a handler that listens sees cancellation.
pub async fn stale_completion_rejected_by_fence<B: Backend>(backend: &B) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let make = {
        let (recorder, saw_cancel) = (recorder.clone(), saw_cancel.clone());
        factory(move || {
            let saw_cancel = saw_cancel.clone();
            vec![
                manual_task("stale-writer", &recorder, |_| async {
                    tokio::time::sleep(Duration::from_millis(2500)).await;
                    Ok(json!("late result"))
                }),
                manual_task("stale-listener", &recorder, move |context: TaskContext| {
                    let saw_cancel = saw_cancel.clone();
                    async move {
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(10)) => {}
                            () = context.cancellation.cancelled() => saw_cancel.store(true, Ordering::SeqCst),
                        }
                        Ok(json!("listener done"))
                    }
                }),
            ]
        })
    };
    // The paused worker: stopped for 3 s (its lease is 1.5 s) while both handlers run, like SIGSTOP.
    let paused = WorkerOptions {
        pausable: true,
        ..WorkerOptions::default()
    };
    let stale = Worker::start("paused", &namespace, make.clone(), paused).await;
    for id in ["stale-writer", "stale-listener"] {
        must(admin.trigger_task(id).await, "trigger");
    }
    assert!(eventually(Duration::from_secs(3), || async { recorder.events().len() == 2 }).await);
    stale.pause(Duration::from_secs(3));
    let reaper = Worker::start("reaper", &namespace, make, WorkerOptions::default()).await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    for id in ["stale-writer", "stale-listener"] {
        let runs = history(&admin, id).await;
        assert_eq!(runs.len(), 1, "{id}: {runs:?}");
        assert_eq!(
            runs[0].status,
            RunStatus::Abandoned,
            "{id}: the stale worker's completion must be refused: {runs:?}"
        );
        assert_eq!(runs[0].result, None);
    }
    assert!(
        saw_cancel.load(Ordering::SeqCst),
        "the stale handler must see its cancellation"
    );
    stale.stop().await;
    reaper.stop().await;
}
/// Shutdown waits for the grace period, then cancels the handler and records `cancelled`, releasing
/// the lease.
pub async fn graceful_shutdown_cancels_and_releases<B: Backend>(backend: &B) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let finished_quick = Arc::new(AtomicUsize::new(0));
    let make = {
        let (recorder, finished_quick) = (recorder.clone(), finished_quick.clone());
        factory(move || {
            let finished_quick = finished_quick.clone();
            vec![
                manual_task("long", &recorder, |context: TaskContext| async move {
                    context.cancellation.cancelled().await;
                    Err(TaskError::new("stopped"))
                }),
                manual_task("short", &recorder, move |_| {
                    let finished_quick = finished_quick.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        finished_quick.fetch_add(1, Ordering::SeqCst);
                        Ok(json!("finished during grace"))
                    }
                }),
            ]
        })
    };
    let mut options = WorkerOptions::default();
    options.config.shutdown_grace = Duration::from_millis(800);
    let worker = Worker::start("w", &namespace, make, options).await;
    must(admin.trigger_task("long").await, "trigger");
    must(admin.trigger_task("short").await, "trigger");
    assert!(eventually(Duration::from_secs(3), || async { recorder.events().len() == 2 }).await);
    let stopping = std::time::Instant::now();
    worker.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "shutdown took {:?}",
        stopping.elapsed()
    );
    assert_eq!(
        finished_quick.load(Ordering::SeqCst),
        1,
        "a run that ends within the grace period finishes normally"
    );
    assert_eq!(history(&admin, "short").await[0].status, RunStatus::Succeeded);
    let long = history(&admin, "long").await;
    assert_eq!(long[0].status, RunStatus::Cancelled, "{long:?}");
    assert_eq!(long[0].reason.as_deref(), Some("scheduler shutdown"));
    let report = must(admin.get_task("long").await, "report");
    assert!(
        report.is_some_and(|report| !report.is_running),
        "the lease is released at shutdown"
    );
}

//! Results: handler errors and panics, timeouts, and results and errors larger than the store keeps.

use super::{factory, manual_task, must, setup, YEARLY};
use crate::support::{count_status, eventually, history, Recorder, Worker, WorkerOptions};
use crate::Backend;
use fleetcron_core::clock::system_clock;
use fleetcron_core::{RunStatus, ScheduledTask, TaskContext, TaskError};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A handler that ignores its cancellation token past the timeout is dropped; the run is `timed_out`.
pub async fn timeout_cancels_handler<B: Backend>(backend: &B) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let dropped = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicBool::new(false));
    let make = {
        let (recorder, dropped, completed) = (recorder.clone(), dropped.clone(), completed.clone());
        factory(move || {
            let (dropped, completed) = (dropped.clone(), completed.clone());
            let recorder = recorder.clone();
            vec![must(
                ScheduledTask::builder("sleepy")
                    .schedule(YEARLY)
                    .timeout(Duration::from_millis(400))
                    .handler(move |context: TaskContext| {
                        recorder.record(&context);
                        let guard = DropFlag(dropped.clone());
                        let completed = completed.clone();
                        async move {
                            let _guard = guard;
                            tokio::time::sleep(Duration::from_secs(10)).await;
                            completed.store(true, Ordering::SeqCst);
                            Ok(Value::Null)
                        }
                    })
                    .build(),
                "valid",
            )]
        })
    };
    let worker = Worker::start("w", &namespace, make, WorkerOptions::default()).await;
    must(admin.trigger_task("sleepy").await, "trigger");
    let ended = eventually(Duration::from_secs(5), || async {
        history(&admin, "sleepy")
            .await
            .iter()
            .any(|run| run.status == RunStatus::TimedOut)
    })
    .await;
    assert!(ended, "the run must be recorded timed_out");
    assert!(dropped.load(Ordering::SeqCst), "the handler's future must be dropped");
    assert!(!completed.load(Ordering::SeqCst));
    let runs = history(&admin, "sleepy").await;
    assert!(
        runs[0].error.as_deref().is_some_and(|error| error.contains("timeout")),
        "{runs:?}"
    );
    let report = must(admin.get_task("sleepy").await, "report");
    assert!(report.is_some_and(|report| !report.is_running && report.last_status == Some(RunStatus::TimedOut)));
    worker.stop().await;
}
/// Sets its flag when dropped: shows that a handler's future was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Errors and panics are recorded as failures with their message; the worker keeps working.
pub async fn handler_error_and_panic_are_failures<B: Backend>(backend: &B) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || {
            vec![
                manual_task("fails", &recorder, |_| async { Err(TaskError::new("boom")) }),
                manual_task("panics", &recorder, |context: TaskContext| async move {
                    if context.attempt > 0 {
                        panic!("kaboom");
                    }
                    Ok(Value::Null)
                }),
                manual_task("works", &recorder, |_| async { Ok(json!("fine")) }),
            ]
        })
    };
    let worker = Worker::start("w", &namespace, make, WorkerOptions::default()).await;
    for id in ["fails", "panics"] {
        must(admin.trigger_task(id).await, "trigger");
    }
    let done = eventually(Duration::from_secs(5), || async {
        history(&admin, "fails")
            .await
            .iter()
            .any(|run| run.status == RunStatus::Failed)
            && history(&admin, "panics")
                .await
                .iter()
                .any(|run| run.status == RunStatus::Failed)
    })
    .await;
    assert!(done, "both runs must be recorded failed");
    assert_eq!(history(&admin, "fails").await[0].error.as_deref(), Some("boom"));
    // The report carries the error in `last_result` the way Vendure's does, and in `last_error`.
    let report = must(admin.get_task("fails").await, "report");
    assert!(
        report
            .as_ref()
            .is_some_and(|report| report.last_result == Some(json!({ "error": "boom" }))
                && report.last_error.as_deref() == Some("boom")),
        "{report:?}"
    );
    let panicked = history(&admin, "panics").await;
    assert!(
        panicked[0]
            .error
            .as_deref()
            .is_some_and(|error| error.contains("panicked") && error.contains("kaboom")),
        "{panicked:?}"
    );
    must(admin.trigger_task("works").await, "trigger");
    assert!(
        eventually(Duration::from_secs(5), || async {
            history(&admin, "works")
                .await
                .iter()
                .any(|run| run.status == RunStatus::Succeeded)
        })
        .await
    );
    worker.stop().await;
}
/// A result larger than the limit is replaced by a note; the run still succeeds.
pub async fn oversized_result_is_bounded<B: Backend>(backend: &B) {
    let namespace = backend.namespace(system_clock()).await;
    let mut options = WorkerOptions::default();
    options.config.max_result_bytes = 1024;
    let admin = namespace.strategy(options.config.clone()).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || {
            vec![manual_task("big", &recorder, |_| async {
                Ok(json!("x".repeat(10_000)))
            })]
        })
    };
    let worker = Worker::start("w", &namespace, make, options).await;
    must(admin.trigger_task("big").await, "trigger");
    assert!(
        eventually(Duration::from_secs(3), || async {
            count_status(&history(&admin, "big").await, RunStatus::Succeeded) == 1
        })
        .await
    );
    let runs = history(&admin, "big").await;
    assert_eq!(
        runs[0].result.as_ref().map(|result| result["truncated"].clone()),
        Some(json!(true)),
        "{runs:?}"
    );
    worker.stop().await;
}

/// A handler that fails with megabytes of error text (a command's whole output) is recorded `failed`
/// with a bounded error that keeps its beginning and its end — never an oversized row that the store
/// refuses and that leaves the run to be reaped as `abandoned`.
pub async fn oversized_error_is_bounded<B: Backend>(backend: &B) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || {
            vec![manual_task("loud-failure", &recorder, |_| async {
                // More than MariaDB's default max_allowed_packet (16 MiB) on its own.
                let text = format!("FIRST-LINE {} LAST-LINE", "y".repeat(20 * 1024 * 1024));
                Err::<serde_json::Value, _>(TaskError::new(text))
            })]
        })
    };
    let worker = Worker::start("w", &namespace, make, WorkerOptions::default()).await;
    must(admin.trigger_task("loud-failure").await, "trigger");
    assert!(
        eventually(Duration::from_secs(10), || async {
            count_status(&history(&admin, "loud-failure").await, RunStatus::Failed) == 1
        })
        .await,
        "{:?}",
        history(&admin, "loud-failure")
            .await
            .iter()
            .map(|run| run.status)
            .collect::<Vec<_>>()
    );
    let runs = history(&admin, "loud-failure").await;
    let error = runs[0].error.clone().unwrap_or_default();
    let limit = WorkerOptions::default().config.max_result_bytes;
    assert!(error.len() <= limit, "{} bytes kept of a limit of {limit}", error.len());
    assert!(error.starts_with("FIRST-LINE"), "the beginning is kept");
    assert!(error.ends_with("LAST-LINE"), "the end is kept");
    assert!(error.contains("bytes omitted"), "the cut is said");
    let report = must(admin.get_task("loud-failure").await, "report");
    assert!(report.is_some_and(|report| report.last_error.is_some_and(|last| last.len() <= limit)));
    worker.stop().await;
}

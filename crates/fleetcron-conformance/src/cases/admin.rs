//! Administration: enable and disable fleet-wide, reports and history, retention, and conflicting
//! definitions of one task.

use super::{every_second, factory, must, setup, started_rows};
use crate::support::{
    align_to_second, assert_contiguous_once, eventually, history, recorded, Recorder, Worker, WorkerOptions,
};
use crate::Backend;
use chrono::Utc;
use fleetcron_core::clock::system_clock;
use fleetcron_core::{Retention, RunKind, RunQuery, RunStatus, UpdateScheduledTaskInput};
use serde_json::json;
use std::time::Duration;

/// Disabling takes effect fleet-wide within one claim: slots are recorded skipped (`disabled`), never
/// caught up; enabling resumes them.
pub async fn disable_enable_fleet_wide<B: Backend>(backend: &B) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || vec![every_second("toggled", &recorder, Duration::ZERO)])
    };
    align_to_second().await;
    let workers = vec![
        Worker::start("a", &namespace, make.clone(), WorkerOptions::default()).await,
        Worker::start("b", &namespace, make, WorkerOptions::default()).await,
    ];
    tokio::time::sleep(Duration::from_millis(1500)).await;
    must(
        workers[0]
            .scheduler()
            .update(UpdateScheduledTaskInput {
                id: "toggled".into(),
                enabled: Some(false),
            })
            .await,
        "disable",
    );
    let disabled_at = Utc::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        recorder
            .of("toggled")
            .iter()
            .all(|event| event.started <= disabled_at + chrono::Duration::milliseconds(50)),
        "no run may start after the disable"
    );
    must(
        admin
            .update_task(UpdateScheduledTaskInput {
                id: "toggled".into(),
                enabled: Some(true),
            })
            .await,
        "enable",
    );
    let enabled_at = Utc::now();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    for worker in workers {
        worker.stop().await;
    }
    assert!(
        recorder
            .of("toggled")
            .iter()
            .filter(|event| event.started > enabled_at)
            .count()
            >= 1,
        "runs resume after enable"
    );
    let runs = history(&admin, "toggled").await;
    assert_contiguous_once("toggled", &runs);
    let skipped: Vec<_> = runs.iter().filter(|run| run.status == RunStatus::Skipped).collect();
    assert!(
        skipped.len() >= 2 && skipped.iter().all(|run| run.reason.as_deref() == Some("disabled")),
        "{runs:?}"
    );
    assert!(
        runs.iter().all(|run| run.kind != RunKind::CatchUp),
        "disabled slots are never caught up"
    );
    assert_eq!(recorder.duplicates(), vec![]);
}

/// Reports carry the seed's fields and more; the history pages newest first.
pub async fn reports_and_history<B: Backend>(backend: &B) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || {
            vec![must(
                recorded("reported", &recorder, Duration::from_millis(400))
                    .description("A reported task")
                    .timezone("Europe/Berlin")
                    .build(),
                "valid",
            )]
        })
    };
    align_to_second().await;
    let worker = Worker::start("reporter", &namespace, make, WorkerOptions::default()).await;
    // A run takes 400 ms of every second: the report shows it running on this worker (waited for, not
    // timed, so a loaded machine's slow start does not decide the test).
    let running_here = eventually(Duration::from_secs(6), || async {
        must(admin.get_task("reported").await, "report").is_some_and(|report| {
            report.is_running && report.running_on.first().map(|on| on.worker.as_str()) == Some("reporter")
        })
    })
    .await;
    assert!(
        running_here,
        "the report must show the run on its worker: {:?}",
        admin.get_task("reported").await
    );
    tokio::time::sleep(Duration::from_millis(2000)).await;
    worker.stop().await;
    let reports = must(admin.get_tasks().await, "reports");
    let Some(report) = reports.iter().find(|report| report.id == "reported") else {
        panic!("get_tasks must list the task: {reports:?}")
    };
    assert!(report.enabled);
    assert_eq!(report.description, "A reported task");
    assert_eq!(report.schedule, "* * * * * *");
    assert_eq!(report.timezone, "Europe/Berlin");
    assert_eq!(report.last_status, Some(RunStatus::Succeeded));
    assert!(report.last_executed_at.is_some());
    assert!(
        report.last_duration_ms.is_some_and(|ms| (350..2000).contains(&ms)),
        "{report:?}"
    );
    assert!(
        report
            .last_result
            .as_ref()
            .is_some_and(|result| result["worker"] == json!("reporter")),
        "{report:?}"
    );
    let now = Utc::now();
    assert!(report.next_run_at.is_some_and(|next| next > now - chrono::Duration::seconds(1) && next <= now + chrono::Duration::seconds(2)), "{report:?}");
    let runs = history(&admin, "reported").await;
    let started = started_rows(&runs);
    assert!(started.len() >= 2);
    // Vendure's `lastExecutedAt` is when the last run finished; its start is `last_started_at` (400 ms
    // earlier here, so the two cannot be confused).
    let newest = started.last().map(|run| (run.started_at, run.finished_at));
    assert_eq!(
        newest,
        Some((report.last_started_at, report.last_executed_at)),
        "{report:?}"
    );
    for pair in started.windows(2) {
        assert!(pair[1].fence > pair[0].fence, "the fence grows with every claim");
    }
    for run in &started {
        assert_eq!(run.worker.as_deref(), Some("reporter"));
        assert!(
            run.started_at >= run.slot && run.finished_at >= run.started_at,
            "{run:?}"
        );
        assert!(run.result.is_some());
    }
    let first_page = must(
        admin.runs("reported", RunQuery { limit: 2, before: None }).await,
        "page",
    );
    assert_eq!(first_page.len(), 2);
    assert!(first_page[0].run_id > first_page[1].run_id, "newest first");
    let second_page = must(
        admin
            .runs(
                "reported",
                RunQuery {
                    limit: 2,
                    before: Some(first_page[1].run_id.clone()),
                },
            )
            .await,
        "page 2",
    );
    assert!(second_page.iter().all(|run| run.run_id < first_page[1].run_id));
}

/// The retention policy prunes old history rows, never running ones.
pub async fn retention_prunes_history<B: Backend>(backend: &B) {
    let namespace = backend.namespace(system_clock()).await;
    let mut options = WorkerOptions::default();
    options.config.retention = Retention {
        keep_last: Some(3),
        max_age: None,
    };
    let admin = namespace.strategy(options.config.clone()).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || vec![every_second("pruned", &recorder, Duration::ZERO)])
    };
    let worker = Worker::start("w", &namespace, make, options).await;
    tokio::time::sleep(Duration::from_millis(5500)).await;
    worker.stop().await;
    let before = history(&admin, "pruned").await.len();
    assert!(before >= 5);
    let deleted = must(admin.prune_history().await, "prune");
    assert_eq!(deleted as usize, before - 3);
    assert_eq!(history(&admin, "pruned").await.len(), 3);
}
/// Two workers registering different definitions under one id: the newest registration wins and the
/// report shows the other one as a conflict; slots still run once.
pub async fn definition_conflict_is_reported<B: Backend>(backend: &B) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let first = {
        let recorder = recorder.clone();
        factory(move || vec![every_second("shared-id", &recorder, Duration::ZERO)])
    };
    let second = {
        let recorder = recorder.clone();
        factory(move || {
            vec![must(
                recorded("shared-id", &recorder, Duration::ZERO)
                    .schedule("*/2 * * * * *")
                    .build(),
                "valid",
            )]
        })
    };
    let a = Worker::start("old-build", &namespace, first, WorkerOptions::default()).await;
    let b = Worker::start("new-build", &namespace, second, WorkerOptions::default()).await;
    let report = must(admin.get_task("shared-id").await, "report");
    let Some(report) = report else {
        panic!("task must exist")
    };
    assert_eq!(
        report.schedule, "*/2 * * * * *",
        "the newest registration's definition is stored"
    );
    let conflict = report.definition_conflict.as_ref();
    assert!(
        conflict
            .is_some_and(|conflict| conflict.worker == "old-build" && conflict.definition.schedule == "* * * * * *"),
        "{report:?}"
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    a.stop().await;
    b.stop().await;
    assert_eq!(recorder.duplicates(), vec![]);
    let report = must(admin.get_task("shared-id").await, "report");
    assert!(
        report.is_some_and(|report| report.definition_conflict.is_some()),
        "a live disagreeing worker keeps the conflict reported"
    );
}

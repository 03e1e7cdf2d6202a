//! Manual triggers: run once, wait behind a running run, coalesce, are refused for unknown or disabled
//! tasks, survive a restart, and a manual firing's `execute_task` names the run it started.

use super::{factory, manual_task, must, setup};
use crate::support::{count_status, eventually, fast_config, history, Recorder, Worker, WorkerOptions};
use crate::Backend;
use fleetcron_core::{ExecuteOutcome, Firing, RunKind, RunQuery, RunStatus, SchedulerError, UpdateScheduledTaskInput};
use serde_json::{json, Value};
use std::time::Duration;

/// One trigger runs once, on one worker of many.
pub async fn manual_trigger_runs_once<B: Backend>(backend: &B) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || vec![manual_task("manual", &recorder, |_| async { Ok(json!("ok")) })])
    };
    let mut workers = Vec::new();
    for index in 0..3 {
        workers.push(Worker::start(&format!("w{index}"), &namespace, make.clone(), WorkerOptions::default()).await);
    }
    let receipt = must(admin.trigger_task("manual").await, "trigger");
    assert!(!receipt.coalesced);
    assert!(eventually(Duration::from_secs(3), || async { recorder.of("manual").len() == 1 }).await);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(recorder.of("manual").len(), 1);
    let runs = history(&admin, "manual").await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].kind, RunKind::Manual);
    assert_eq!(runs[0].slot, None);
    assert_eq!(runs[0].trigger_id.as_deref(), Some(receipt.trigger_id.as_str()));
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    let report = must(admin.get_task("manual").await, "report");
    assert!(report.is_some_and(|report| report.pending_trigger.is_none() && report.last_result == Some(json!("ok"))));
    for worker in workers {
        worker.stop().await;
    }
}

/// A trigger while a run is in progress waits and runs right after it.
pub async fn manual_trigger_waits_behind_running_run<B: Backend>(backend: &B) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || {
            vec![manual_task("busy", &recorder, |_| async {
                tokio::time::sleep(Duration::from_millis(1200)).await;
                Ok(Value::Null)
            })]
        })
    };
    let workers = vec![
        Worker::start("a", &namespace, make.clone(), WorkerOptions::default()).await,
        Worker::start("b", &namespace, make, WorkerOptions::default()).await,
    ];
    must(admin.trigger_task("busy").await, "trigger");
    assert!(eventually(Duration::from_secs(3), || async { recorder.of("busy").len() == 1 }).await);
    let second = must(admin.trigger_task("busy").await, "second trigger");
    assert!(!second.coalesced);
    let report = must(admin.get_task("busy").await, "report");
    assert!(
        report
            .as_ref()
            .is_some_and(|report| report.is_running && report.pending_trigger.is_some()),
        "{report:?}"
    );
    assert!(
        eventually(Duration::from_secs(4), || async {
            count_status(&history(&admin, "busy").await, RunStatus::Succeeded) == 2
        })
        .await,
        "the waiting trigger must run"
    );
    let runs = history(&admin, "busy").await;
    let gap = runs[1]
        .started_at
        .zip(runs[0].finished_at)
        .map(|(start, end)| (start - end).num_milliseconds());
    assert!(
        gap.is_some_and(|gap| (0..500).contains(&gap)),
        "the waiting trigger runs right after: gap {gap:?} ms"
    );
    for worker in workers {
        worker.stop().await;
    }
}

/// Triggers while one is pending coalesce into one run.
pub async fn manual_triggers_coalesce<B: Backend>(backend: &B) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || {
            vec![manual_task("coalesce", &recorder, |_| async {
                tokio::time::sleep(Duration::from_millis(1000)).await;
                Ok(Value::Null)
            })]
        })
    };
    let worker = Worker::start("w", &namespace, make, WorkerOptions::default()).await;
    must(admin.trigger_task("coalesce").await, "trigger");
    assert!(eventually(Duration::from_secs(3), || async { recorder.of("coalesce").len() == 1 }).await);
    let pending = must(admin.trigger_task("coalesce").await, "trigger");
    let joined_a = must(admin.trigger_task("coalesce").await, "trigger");
    let joined_b = must(admin.trigger_task("coalesce").await, "trigger");
    assert!(!pending.coalesced && joined_a.coalesced && joined_b.coalesced);
    assert_eq!(joined_a.trigger_id, pending.trigger_id);
    assert!(
        eventually(Duration::from_secs(4), || async {
            count_status(&history(&admin, "coalesce").await, RunStatus::Succeeded) == 2
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        recorder.of("coalesce").len(),
        2,
        "four triggers, one pending at a time: two runs"
    );
    worker.stop().await;
}

/// Triggers of unknown or disabled tasks are refused with a clear error and leave nothing pending.
pub async fn manual_trigger_refused_when_disabled_or_unknown<B: Backend>(backend: &B) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || vec![manual_task("gated", &recorder, |_| async { Ok(Value::Null) })])
    };
    let worker = Worker::start("w", &namespace, make, WorkerOptions::default()).await;
    assert!(
        matches!(admin.trigger_task("no-such-task").await, Err(SchedulerError::UnknownTask(id)) if id == "no-such-task")
    );
    assert!(matches!(
        admin
            .update_task(UpdateScheduledTaskInput {
                id: "no-such-task".into(),
                enabled: Some(false)
            })
            .await,
        Err(SchedulerError::UnknownTask(_))
    ));
    assert!(matches!(admin.get_task("no-such-task").await, Ok(None)));
    assert!(matches!(
        admin.runs("no-such-task", RunQuery::default()).await,
        Err(SchedulerError::UnknownTask(_))
    ));
    let report = must(
        admin
            .update_task(UpdateScheduledTaskInput {
                id: "gated".into(),
                enabled: Some(false),
            })
            .await,
        "disable",
    );
    assert!(!report.enabled && report.next_run_at.is_none());
    let refused = admin.trigger_task("gated").await;
    assert!(matches!(&refused, Err(SchedulerError::TaskDisabled(_))), "{refused:?}");
    assert!(refused
        .err()
        .is_some_and(|error| error.to_string().contains("disabled")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(recorder.of("gated").is_empty());
    let report = must(admin.get_task("gated").await, "report");
    assert!(report.is_some_and(|report| report.pending_trigger.is_none()));
    worker.stop().await;
}

/// A trigger accepted while no worker runs is durable: the next worker to start runs it.
pub async fn manual_trigger_survives_restart<B: Backend>(backend: &B) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || vec![manual_task("durable", &recorder, |_| async { Ok(Value::Null) })])
    };
    Worker::start("first", &namespace, make.clone(), WorkerOptions::default())
        .await
        .stop()
        .await;
    let receipt = must(admin.trigger_task("durable").await, "trigger with no worker running");
    let report = must(admin.get_task("durable").await, "report");
    assert!(report.is_some_and(|report| report.pending_trigger.is_some()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(recorder.of("durable").is_empty());
    let worker = Worker::start("second", &namespace, make, WorkerOptions::default()).await;
    assert!(
        eventually(Duration::from_secs(3), || async { recorder.of("durable").len() == 1 }).await,
        "the pending trigger must run when a worker starts"
    );
    let runs = history(&admin, "durable").await;
    assert_eq!(runs[0].trigger_id.as_deref(), Some(receipt.trigger_id.as_str()));
    worker.stop().await;
}

/// `execute_task` with a manual firing returns the run id and fence of the run it started — those of
/// its history row and of the handler's context — not placeholders. The call is made on a strategy that
/// was never started (`init`), so no poll loop of its own races it to the pending trigger (with a store
/// that pushes triggers, a running worker's loop would start it first).
pub async fn manual_execute_task_returns_its_run<B: Backend>(backend: &B) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || vec![manual_task("direct", &recorder, |_| async { Ok(Value::Null) })])
    };
    let Some(task) = make().pop() else {
        panic!("the factory builds the task")
    };
    // A running worker that registers another task migrates the store; it never starts `direct`
    // (workers attend only the tasks they registered).
    let bystander = {
        let recorder = recorder.clone();
        factory(move || vec![manual_task("bystander", &recorder, |_| async { Ok(Value::Null) })])
    };
    let worker = Worker::start("w", &namespace, bystander, WorkerOptions::default()).await;
    let direct = namespace.strategy(fast_config()).await;
    must(direct.register_task(task.clone()).await, "register");
    let receipt = must(admin.trigger_task("direct").await, "trigger");
    let firing = Firing::Manual {
        trigger: receipt.trigger_id.clone(),
    };
    let (run_id, fence) = match must(direct.execute_task(&task, firing).await, "execute_task") {
        ExecuteOutcome::Started { run_id, fence } => (run_id, fence),
        other => panic!("a manual firing of a pending trigger must start it: {other:?}"),
    };
    let runs = history(&admin, "direct").await;
    let row = runs
        .iter()
        .find(|run| run.trigger_id.as_deref() == Some(receipt.trigger_id.as_str()));
    assert!(
        row.is_some_and(|row| row.run_id == run_id && row.fence == fence && row.kind == RunKind::Manual),
        "execute_task returned run {run_id:?} fence {fence}; history: {row:?}"
    );
    assert!(fence > 0, "a started run holds a fence");
    assert!(
        eventually(Duration::from_secs(3), || async {
            recorder
                .of("direct")
                .iter()
                .any(|event| event.run_id == run_id && event.fence == fence)
        })
        .await,
        "the handler ran as run {run_id:?} fence {fence}: {:?}",
        recorder.of("direct")
    );
    // A second manual firing finds nothing pending: the trigger ran once.
    let again = Firing::Manual {
        trigger: receipt.trigger_id.clone(),
    };
    let outcome = must(direct.execute_task(&task, again).await, "execute_task again");
    assert!(matches!(outcome, ExecuteOutcome::NothingToRun), "{outcome:?}");
    worker.stop().await;
}

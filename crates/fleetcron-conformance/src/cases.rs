//! The cases. Each is a plain async function of a [`Backend`]; [`conformance_tests!`](crate::conformance_tests)
//! turns each into a test. They use real time and every-second schedules, and assert from two witnesses:
//! the strategy's history and the handlers' own [`Recorder`].

use crate::support::{
    align_to_second, assert_contiguous_once, count_status, eventually, fast_config, history, recorded, Recorder,
    TaskFactory, Worker, WorkerOptions,
};
use crate::{Backend, Namespace};
use chrono::{DateTime, TimeZone, Utc};
use fleetcron_core::clock::{system_clock, OffsetClock};
use fleetcron_core::{
    CatchUp, OnAbandon, Overlap, Retention, RunKind, RunQuery, RunStatus, Schedule, ScheduledTask, SchedulerError,
    SchedulerStrategy, TaskContext, TaskError, UpdateScheduledTaskInput,
};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const YEARLY: &str = "0 0 1 1 *";

async fn setup<B: Backend>(backend: &B) -> (Arc<dyn Namespace>, Arc<dyn SchedulerStrategy>) {
    let namespace = backend.namespace(system_clock()).await;
    let admin = namespace.strategy(fast_config()).await;
    (namespace, admin)
}

fn factory(build: impl Fn() -> Vec<ScheduledTask> + Send + Sync + 'static) -> TaskFactory {
    Arc::new(build)
}

fn must<T, E: std::fmt::Display>(result: Result<T, E>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{what}: {error}"),
    }
}

fn every_second(id: &str, recorder: &Recorder, work: Duration) -> ScheduledTask {
    must(recorded(id, recorder, work).build(), "valid task")
}

/// A manually triggered task whose handler runs `body`.
fn manual_task<F, Fut>(id: &str, recorder: &Recorder, body: F) -> ScheduledTask
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Value, TaskError>> + Send + 'static,
{
    let recorder = recorder.clone();
    let body = Arc::new(body);
    must(
        ScheduledTask::builder(id)
            .schedule(YEARLY)
            .handler(move |context: TaskContext| {
                recorder.record(&context);
                let body = body.clone();
                async move { body(context).await }
            })
            .build(),
        "valid task",
    )
}

fn started_rows(runs: &[fleetcron_core::RunRecord]) -> Vec<&fleetcron_core::RunRecord> {
    runs.iter().filter(|run| run.status.started()).collect()
}

/// Many workers race for every slot of three tasks; each slot runs once, and the history agrees with
/// the handlers' own log.
pub async fn single_winner_per_slot<B: Backend>(backend: &B) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let mut workers = Vec::new();
    align_to_second().await;
    for index in 0..4 {
        let recorder = recorder.clone();
        let tasks = factory(move || {
            (0..3)
                .map(|t| every_second(&format!("race-{t}"), &recorder, Duration::from_millis(50)))
                .collect()
        });
        workers.push(Worker::start(&format!("w{index}"), &namespace, tasks, WorkerOptions::default()).await);
    }
    tokio::time::sleep(Duration::from_millis(4200)).await;
    for worker in workers {
        worker.stop().await;
    }
    assert_eq!(recorder.duplicates(), vec![], "no slot may run twice");
    for t in 0..3 {
        let id = format!("race-{t}");
        let runs = history(&admin, &id).await;
        let slots = assert_contiguous_once(&id, &runs);
        assert!(slots >= 3, "task {id}: only {slots} slots accounted in 4 s");
        let events = recorder.of(&id);
        let started = started_rows(&runs);
        assert_eq!(
            started.len(),
            events.len(),
            "task {id}: history and handler log disagree"
        );
        for event in &events {
            assert!(
                started
                    .iter()
                    .any(|run| run.run_id == event.run_id && run.slot == event.slot),
                "task {id}: run {} missing from history",
                event.run_id
            );
        }
        assert_eq!(
            count_status(&runs, RunStatus::Missed),
            0,
            "task {id}: a live fleet misses nothing"
        );
    }
}

/// Many tasks due at one instant, split into small batches claimed four at a time by each of four
/// workers that start at different places: still one run per slot, every slot accounted, none missed.
pub async fn parallel_batches_claim_each_slot_once<B: Backend>(backend: &B) {
    const TASKS: usize = 240;
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let mut workers = Vec::new();
    for index in 0..4 {
        let recorder = recorder.clone();
        let tasks = factory(move || {
            (0..TASKS)
                .map(|t| every_second(&format!("wide-{t:03}"), &recorder, Duration::from_millis(10)))
                .collect()
        });
        let options = WorkerOptions {
            config: crate::support::fast_config().claim_batch(70).claim_parallelism(4),
            ..WorkerOptions::default()
        };
        workers.push(Worker::start(&format!("w{index}"), &namespace, tasks, options).await);
    }
    align_to_second().await;
    tokio::time::sleep(Duration::from_millis(3200)).await;
    for worker in workers {
        worker.stop().await;
    }
    assert_eq!(recorder.duplicates(), vec![], "no slot may run twice");
    let mut ran = 0;
    for t in 0..TASKS {
        let id = format!("wide-{t:03}");
        let runs = history(&admin, &id).await;
        let slots = assert_contiguous_once(&id, &runs);
        assert!(slots >= 2, "task {id}: only {slots} slots accounted in 3 s");
        assert_eq!(
            count_status(&runs, RunStatus::Missed),
            0,
            "task {id}: a live fleet misses nothing"
        );
        ran += started_rows(&runs).len();
    }
    assert_eq!(ran, recorder.events().len(), "history and handler log disagree");
}

/// A worker stops and starts again (same id); no slot runs twice and none is missed.
pub async fn no_slot_twice_after_restart<B: Backend>(backend: &B) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || vec![every_second("restart", &recorder, Duration::ZERO)])
    };
    align_to_second().await;
    for _ in 0..3 {
        let worker = Worker::start("same-worker", &namespace, make.clone(), WorkerOptions::default()).await;
        tokio::time::sleep(Duration::from_millis(1600)).await;
        worker.stop().await;
    }
    assert_eq!(recorder.duplicates(), vec![]);
    let runs = history(&admin, "restart").await;
    let slots = assert_contiguous_once("restart", &runs);
    assert!(slots >= 4, "only {slots} slots");
    assert_eq!(
        count_status(&runs, RunStatus::Missed),
        0,
        "restarts within the misfire threshold lose nothing"
    );
    assert_eq!(started_rows(&runs).len(), recorder.of("restart").len());
}

/// A handler slower than its interval: every slot is still accounted for exactly once, runs never
/// overlap, and the skipped ones say why.
pub async fn every_slot_accounted_with_slow_handler<B: Backend>(backend: &B) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    align_to_second().await;
    let mut workers = Vec::new();
    for index in 0..2 {
        let recorder = recorder.clone();
        workers.push(
            Worker::start(
                &format!("w{index}"),
                &namespace,
                factory(move || vec![every_second("slow", &recorder, Duration::from_millis(1500))]),
                WorkerOptions::default(),
            )
            .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(5200)).await;
    for worker in workers {
        worker.stop().await;
    }
    let runs = history(&admin, "slow").await;
    assert_contiguous_once("slow", &runs);
    let skipped: Vec<_> = runs.iter().filter(|run| run.status == RunStatus::Skipped).collect();
    assert!(!skipped.is_empty(), "a 1.5 s handler every second must skip slots");
    assert!(skipped.iter().all(|run| run.reason.as_deref() == Some("overlap")));
    let started = started_rows(&runs);
    for pair in started.windows(2) {
        let previous_end = pair[0].finished_at.unwrap_or(DateTime::<Utc>::MAX_UTC);
        assert!(
            pair[1].started_at >= Some(previous_end),
            "runs overlapped under Overlap::Skip: {:?} / {:?}",
            pair[0],
            pair[1]
        );
    }
}

async fn run_overlap_case<B: Backend>(
    backend: &B,
    overlap: Overlap,
    seconds: u64,
) -> (Arc<dyn SchedulerStrategy>, Vec<fleetcron_core::RunRecord>, Recorder) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || {
            vec![must(
                recorded("overlap", &recorder, Duration::from_millis(2500))
                    .overlap(overlap)
                    .build(),
                "valid",
            )]
        })
    };
    align_to_second().await;
    let worker = Worker::start("w", &namespace, make, WorkerOptions::default()).await;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    worker.stop().await;
    let runs = history(&admin, "overlap").await;
    assert_contiguous_once("overlap", &runs);
    (admin, runs, recorder)
}

/// `Overlap::Skip`: slots due during a run are recorded skipped (`overlap`).
pub async fn overlap_skip<B: Backend>(backend: &B) {
    let (_, runs, _) = run_overlap_case(backend, Overlap::Skip, 6).await;
    let skipped = count_status(&runs, RunStatus::Skipped);
    let started = started_rows(&runs).len();
    assert!(
        skipped >= 2 * started.saturating_sub(1),
        "expected about two skipped slots per 2.5 s run: {skipped} skipped, {started} started"
    );
    assert!(runs
        .iter()
        .filter(|run| run.status == RunStatus::Skipped)
        .all(|run| run.reason.as_deref() == Some("overlap")));
}

/// `Overlap::BufferOne`: one slot waits and starts right after the run ends; further ones are skipped.
pub async fn overlap_buffer_one<B: Backend>(backend: &B) {
    let (_, runs, _) = run_overlap_case(backend, Overlap::BufferOne, 7).await;
    let started = started_rows(&runs);
    assert!(started.len() >= 2, "the buffered slot must run: {runs:?}");
    let buffered = started.windows(2).find(|pair| {
        let late = pair[1]
            .started_at
            .zip(pair[1].slot)
            .map(|(started, slot)| (started - slot).num_milliseconds())
            .unwrap_or(0);
        late > 1000
    });
    let Some(pair) = buffered else {
        panic!("no run started late from the buffer: {started:?}")
    };
    let gap = pair[1]
        .started_at
        .zip(pair[0].finished_at)
        .map(|(start, end)| (start - end).num_milliseconds());
    assert!(
        gap.is_some_and(|gap| (0..500).contains(&gap)),
        "the buffered slot must start right after the previous run ended, gap {gap:?} ms"
    );
    assert!(
        count_status(&runs, RunStatus::Skipped) >= 1,
        "slots beyond the buffer of one are skipped"
    );
}

/// `Overlap::AllowConcurrent`: runs overlap; nothing is skipped.
pub async fn overlap_allow_concurrent<B: Backend>(backend: &B) {
    let (_, runs, _) = run_overlap_case(backend, Overlap::AllowConcurrent, 4).await;
    assert_eq!(count_status(&runs, RunStatus::Skipped), 0);
    let started = started_rows(&runs);
    assert!(started.len() >= 3);
    let overlapped = started
        .windows(2)
        .any(|pair| pair[1].started_at < pair[0].finished_at.or(Some(DateTime::<Utc>::MAX_UTC)));
    assert!(overlapped, "runs must overlap: {started:?}");
}

/// `Overlap::CancelPrevious`: each new slot cancels the running run, recorded `cancelled`.
pub async fn overlap_cancel_previous<B: Backend>(backend: &B) {
    let (_, runs, recorder) = run_overlap_case(backend, Overlap::CancelPrevious, 5).await;
    let cancelled: Vec<_> = runs
        .iter()
        .filter(|run| {
            run.status == RunStatus::Cancelled && run.reason.as_deref().is_some_and(|r| r.starts_with("superseded"))
        })
        .collect();
    assert!(cancelled.len() >= 2, "expected superseded runs: {runs:?}");
    assert_eq!(count_status(&runs, RunStatus::Skipped), 0);
    assert_eq!(started_rows(&runs).len(), recorder.of("overlap").len());
}

/// Runs a task, stops every worker for 3.5 s, then starts one again half a second past a slot.
async fn run_outage_case<B: Backend>(backend: &B, catch_up: CatchUp) -> (Vec<fleetcron_core::RunRecord>, Recorder) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || {
            vec![must(
                recorded("outage", &recorder, Duration::from_millis(100))
                    .catch_up(catch_up)
                    .build(),
                "valid",
            )]
        })
    };
    let mut options = WorkerOptions::default();
    options.config.misfire_threshold = Duration::from_millis(300);
    align_to_second().await;
    let first = Worker::start("before", &namespace, make.clone(), options.clone()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.stop().await;
    align_to_second().await;
    tokio::time::sleep(Duration::from_millis(3400)).await;
    let second = Worker::start("after", &namespace, make, options).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    second.stop().await;
    let runs = history(&admin, "outage").await;
    assert_contiguous_once("outage", &runs);
    assert_eq!(recorder.duplicates(), vec![]);
    (runs, recorder)
}

/// `CatchUp::Skip`: slots missed during an outage are recorded `missed`; none runs late.
pub async fn catch_up_skip<B: Backend>(backend: &B) {
    let (runs, _) = run_outage_case(backend, CatchUp::Skip).await;
    assert!(count_status(&runs, RunStatus::Missed) >= 3, "{runs:?}");
    assert!(runs.iter().all(|run| run.kind != RunKind::CatchUp));
    assert!(runs
        .iter()
        .filter(|run| run.status == RunStatus::Missed)
        .all(|run| run.reason.is_some()));
}

/// `CatchUp::Latest`: the newest missed slot runs once; the older ones are `missed`.
pub async fn catch_up_latest<B: Backend>(backend: &B) {
    let (runs, _) = run_outage_case(
        backend,
        CatchUp::Latest {
            within: Duration::from_secs(3600),
        },
    )
    .await;
    let caught: Vec<_> = runs.iter().filter(|run| run.kind == RunKind::CatchUp).collect();
    assert_eq!(caught.len(), 1, "exactly one catch-up run: {runs:?}");
    assert!(caught[0].status.started());
    assert!(count_status(&runs, RunStatus::Missed) >= 2);
    let newest_missed = runs
        .iter()
        .filter(|run| run.status == RunStatus::Missed)
        .filter_map(|run| run.slot)
        .max();
    assert!(
        caught[0].slot > newest_missed,
        "the caught-up slot is the newest missed one"
    );
}

/// `CatchUp::Latest` with a short window: a missed slot older than `within` does not run.
pub async fn catch_up_latest_too_old<B: Backend>(backend: &B) {
    let (runs, _) = run_outage_case(
        backend,
        CatchUp::Latest {
            within: Duration::from_millis(200),
        },
    )
    .await;
    assert!(runs.iter().all(|run| run.kind != RunKind::CatchUp), "{runs:?}");
    assert!(count_status(&runs, RunStatus::Missed) >= 3);
}

/// `CatchUp::All`: the newest `max` missed slots run in order, one after another.
pub async fn catch_up_all<B: Backend>(backend: &B) {
    let (runs, _) = run_outage_case(
        backend,
        CatchUp::All {
            within: Duration::from_secs(3600),
            max: 2,
        },
    )
    .await;
    let caught: Vec<_> = runs.iter().filter(|run| run.kind == RunKind::CatchUp).collect();
    assert_eq!(caught.len(), 2, "two catch-up runs: {runs:?}");
    assert!(caught[0].slot < caught[1].slot);
    assert!(
        caught[1].started_at >= caught[0].finished_at,
        "catch-up runs go one after another"
    );
    assert!(count_status(&runs, RunStatus::Missed) >= 1);
}

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
    tokio::time::sleep(Duration::from_millis(1150)).await;
    let running = must(admin.get_task("reported").await, "report");
    let Some(running) = running else {
        panic!("the task must be reported")
    };
    assert!(running.is_running, "{running:?}");
    assert_eq!(
        running.running_on.first().map(|on| on.worker.as_str()),
        Some("reporter")
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

/// A worker whose clock runs 2.5 s ahead fires early, but the store's clock holds the slot back.
pub async fn worker_clock_ahead_cannot_start_early<B: Backend>(backend: &B) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || vec![every_second("early", &recorder, Duration::ZERO)])
    };
    let options = WorkerOptions {
        clock: Some(Arc::new(OffsetClock::new(chrono::Duration::milliseconds(2500)))),
        ..WorkerOptions::default()
    };
    align_to_second().await;
    let worker = Worker::start("fast-clock", &namespace, make, options).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    worker.stop().await;
    let events = recorder.of("early");
    assert!(events.len() >= 3);
    for event in &events {
        let slot = event.slot.unwrap_or(DateTime::<Utc>::MAX_UTC);
        assert!(
            event.started >= slot,
            "started {} before its slot {}",
            event.started,
            slot
        );
    }
    for run in started_rows(&history(&admin, "early").await) {
        assert!(run.started_at >= run.slot, "{run:?}");
    }
}

/// Workers whose clocks disagree by seconds never run a slot twice.
pub async fn worker_clock_behind_cannot_run_twice<B: Backend>(backend: &B) {
    let (namespace, admin) = setup(backend).await;
    let recorder = Recorder::new();
    let make = {
        let recorder = recorder.clone();
        factory(move || vec![every_second("skewed", &recorder, Duration::from_millis(100))])
    };
    let mut workers = Vec::new();
    for (index, skew) in [-2500i64, 0, 2500].into_iter().enumerate() {
        let options = WorkerOptions {
            clock: Some(Arc::new(OffsetClock::new(chrono::Duration::milliseconds(skew)))),
            ..WorkerOptions::default()
        };
        workers.push(Worker::start(&format!("skew{index}"), &namespace, make.clone(), options).await);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    for worker in workers {
        worker.stop().await;
    }
    assert_eq!(recorder.duplicates(), vec![]);
    let runs = history(&admin, "skewed").await;
    assert_contiguous_once("skewed", &runs);
    assert_eq!(count_status(&runs, RunStatus::Missed), 0);
}

async fn dst_case<B: Backend>(
    backend: &B,
    start: DateTime<Utc>,
    pattern: &str,
    zone: &str,
) -> Option<(Vec<DateTime<Utc>>, Vec<DateTime<Utc>>)> {
    if !backend.injectable_store_clock() {
        eprintln!("SKIPPED: this backend keeps its own clock, so the store cannot be moved to a DST date");
        return None;
    }
    let clock: fleetcron_core::SharedClock = Arc::new(OffsetClock::starting_at(start));
    let namespace = backend.namespace(clock.clone()).await;
    let admin = namespace.strategy(fast_config()).await;
    let recorder = Recorder::new();
    let make = {
        let (recorder, pattern, zone) = (recorder.clone(), pattern.to_owned(), zone.to_owned());
        factory(move || {
            vec![must(
                recorded("dst", &recorder, Duration::ZERO)
                    .schedule(pattern.clone())
                    .timezone(zone.clone())
                    .build(),
                "valid",
            )]
        })
    };
    let options = WorkerOptions {
        clock: Some(clock),
        ..WorkerOptions::default()
    };
    let worker = Worker::start("dst", &namespace, make, options).await;
    tokio::time::sleep(Duration::from_millis(5500)).await;
    worker.stop().await;
    let runs = history(&admin, "dst").await;
    let ran: Vec<DateTime<Utc>> = runs.iter().filter_map(|run| run.slot).collect();
    let schedule = must(Schedule::parse(pattern, zone), "schedule");
    let last = ran.last().copied().unwrap_or(start);
    let expected = schedule.slots_between(start, last, 100);
    assert_eq!(recorder.duplicates(), vec![]);
    Some((ran, expected))
}

/// On the spring-forward day in Europe/London, local 01:xx does not exist: the fleet runs exactly
/// croner's slots, starting at 02:00 BST (01:00 UTC).
pub async fn dst_gap_day<B: Backend>(backend: &B) {
    let start = Utc
        .with_ymd_and_hms(2026, 3, 29, 0, 59, 57)
        .single()
        .unwrap_or_default();
    let Some((ran, expected)) = dst_case(backend, start, "* * 1,2 * * *", "Europe/London").await else {
        return;
    };
    assert!(!ran.is_empty());
    assert_eq!(ran, expected, "the fleet must run exactly croner's slots");
    let gap_end = Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).single().unwrap_or_default();
    assert_eq!(
        ran.first().copied(),
        Some(gap_end),
        "the first slot is 02:00:00 BST = 01:00:00 UTC"
    );
}

/// On the fall-back day, local 01:xx happens twice; the fleet runs exactly croner's slots, each once.
pub async fn dst_overlap_day<B: Backend>(backend: &B) {
    let start = Utc
        .with_ymd_and_hms(2026, 10, 25, 0, 59, 57)
        .single()
        .unwrap_or_default();
    let Some((ran, expected)) = dst_case(backend, start, "* * 1 * * *", "Europe/London").await else {
        return;
    };
    assert!(ran.len() >= 2, "{ran:?}");
    assert_eq!(ran, expected, "the fleet must run exactly croner's slots");
    for pair in ran.windows(2) {
        assert!(pair[0] < pair[1]);
    }
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

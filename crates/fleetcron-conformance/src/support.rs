//! Building blocks of the cases: workers that run in their own runtime (so a test can kill one the way
//! SIGKILL would: no shutdown, no lease release), a recorder that handlers write to, and polling waits.

use crate::Namespace;
use chrono::{DateTime, Utc};
use fleetcron_core::{
    EngineConfig, RunQuery, RunRecord, RunStatus, ScheduledTask, ScheduledTaskBuilder, Scheduler, SchedulerStrategy,
    SharedClock, TaskContext, TaskError,
};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// The engine settings the cases use: short leases and polls so failures show within seconds.
pub fn fast_config() -> EngineConfig {
    EngineConfig::default()
        .lease(Duration::from_millis(1500))
        .poll_interval(Duration::from_millis(100))
        .shutdown_grace(Duration::from_secs(2))
        .cancel_grace(Duration::from_millis(300))
}

/// One handler invocation as the handler itself saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Task id.
    pub task_id: String,
    /// Slot (None for manual).
    pub slot: Option<DateTime<Utc>>,
    /// Run id.
    pub run_id: String,
    /// Worker id.
    pub worker: String,
    /// Fence.
    pub fence: u64,
    /// Attempt.
    pub attempt: u32,
    /// System time when the handler started.
    pub started: DateTime<Utc>,
}

/// An append-only log the handlers write to: the suite's independent witness.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    events: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    /// A new, empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a handler start.
    pub fn record(&self, context: &TaskContext) {
        if let Ok(mut events) = self.events.lock() {
            events.push(Event {
                task_id: context.task_id.clone(),
                slot: context.slot,
                run_id: context.run_id.clone(),
                worker: context.worker_id.clone(),
                fence: context.fence,
                attempt: context.attempt,
                started: Utc::now(),
            });
        }
    }

    /// Everything recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|events| events.clone()).unwrap_or_default()
    }

    /// The events of one task.
    pub fn of(&self, task_id: &str) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|event| event.task_id == task_id)
            .collect()
    }

    /// Slots that more than one handler start saw (the same attempt), with their counts.
    pub fn duplicates(&self) -> Vec<(String, DateTime<Utc>, usize)> {
        let mut counts: HashMap<(String, DateTime<Utc>, u32), usize> = HashMap::new();
        for event in self.events() {
            if let Some(slot) = event.slot {
                *counts.entry((event.task_id, slot, event.attempt)).or_default() += 1;
            }
        }
        let mut duplicates: Vec<_> = counts
            .into_iter()
            .filter(|(_, count)| *count > 1)
            .map(|((task, slot, _), count)| (task, slot, count))
            .collect();
        duplicates.sort();
        duplicates
    }
}

/// A task that runs every second and records itself, then sleeps `work`.
pub fn recorded(id: &str, recorder: &Recorder, work: Duration) -> ScheduledTaskBuilder {
    let recorder = recorder.clone();
    ScheduledTask::builder(id)
        .schedule("* * * * * *")
        .handler(move |context: TaskContext| {
            let recorder = recorder.clone();
            async move {
                recorder.record(&context);
                if !work.is_zero() {
                    tokio::select! {
                        () = tokio::time::sleep(work) => {}
                        () = context.cancellation.cancelled() => return Err(TaskError::new("cancelled")),
                    }
                }
                Ok::<Value, TaskError>(serde_json::json!({ "slot": context.slot, "worker": context.worker_id }))
            }
        })
}

/// Builds a worker's tasks (called inside the worker's own runtime).
pub type TaskFactory = Arc<dyn Fn() -> Vec<ScheduledTask> + Send + Sync>;

/// A worker running in its own thread and runtime, like a separate process.
pub struct Worker {
    /// The worker id.
    pub id: String,
    stop: Option<oneshot::Sender<()>>,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    scheduler: Arc<Mutex<Option<Scheduler>>>,
    runtime: Arc<Mutex<Option<tokio::runtime::Handle>>>,
}

/// Options of a worker.
#[derive(Clone)]
pub struct WorkerOptions {
    /// Engine configuration.
    pub config: EngineConfig,
    /// The worker's clock (for skew tests); `None` = system clock.
    pub clock: Option<SharedClock>,
    /// Runs the worker on a single-threaded runtime, so [`Worker::pause`] can stop all of it at once,
    /// the way SIGSTOP stops a process.
    pub pausable: bool,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            config: fast_config(),
            clock: None,
            pausable: false,
        }
    }
}

impl Worker {
    /// Starts a worker on `namespace` running the tasks `factory` builds; returns once it is ready.
    pub async fn start(
        id: &str,
        namespace: &Arc<dyn Namespace>,
        factory: TaskFactory,
        options: WorkerOptions,
    ) -> Worker {
        let (stop_sender, stop_receiver) = oneshot::channel::<()>();
        let (kill_sender, kill_receiver) = oneshot::channel::<()>();
        let (ready_sender, ready_receiver) = oneshot::channel::<()>();
        let scheduler_slot: Arc<Mutex<Option<Scheduler>>> = Arc::new(Mutex::new(None));
        let namespace = namespace.clone();
        let worker_id = id.to_owned();
        let slot = scheduler_slot.clone();
        let runtime_slot: Arc<Mutex<Option<tokio::runtime::Handle>>> = Arc::new(Mutex::new(None));
        let handle_slot = runtime_slot.clone();
        let thread = std::thread::spawn(move || {
            let built = if options.pausable {
                tokio::runtime::Builder::new_current_thread().enable_all().build()
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
            };
            let runtime = match built {
                Ok(runtime) => runtime,
                Err(error) => panic!("worker runtime: {error}"),
            };
            if let Ok(mut slot) = handle_slot.lock() {
                *slot = Some(runtime.handle().clone());
            }
            runtime.block_on(async move {
                let strategy = namespace.strategy(options.config.clone()).await;
                let mut builder = Scheduler::builder()
                    .shared_strategy(strategy)
                    .worker_id(worker_id.clone())
                    .tasks(factory())
                    .retention_schedule(None);
                if let Some(clock) = options.clock.clone() {
                    builder = builder.clock(clock);
                }
                let scheduler = match builder.build() {
                    Ok(scheduler) => scheduler,
                    Err(error) => panic!("worker {worker_id}: {error}"),
                };
                if let Ok(mut slot) = slot.lock() {
                    *slot = Some(scheduler.clone());
                }
                let running = scheduler.clone();
                let run = tokio::spawn(async move {
                    running
                        .run_until(async {
                            let _ = stop_receiver.await;
                        })
                        .await
                });
                let ready = scheduler.clone();
                tokio::spawn(async move {
                    ready.ready().await;
                    let _ = ready_sender.send(());
                });
                tokio::select! {
                    joined = run => {
                        match joined {
                            Ok(Ok(())) => {}
                            Ok(Err(error)) => panic!("worker {worker_id} failed: {error}"),
                            Err(error) => panic!("worker {worker_id} panicked: {error}"),
                        }
                    }
                    _ = kill_receiver => {}
                }
            });
            // Dropping the runtime without shutdown: every task of this worker simply vanishes, as with SIGKILL.
            runtime.shutdown_background();
        });
        let _ = tokio::time::timeout(Duration::from_secs(20), ready_receiver).await;
        Worker {
            id: id.to_owned(),
            stop: Some(stop_sender),
            kill: Some(kill_sender),
            thread: Some(thread),
            scheduler: scheduler_slot,
            runtime: runtime_slot,
        }
    }

    /// Freezes the whole worker for `duration`, like SIGSTOP then SIGCONT: no timer, heartbeat,
    /// completion or handler of it runs meanwhile. Needs [`WorkerOptions::pausable`]. Returns at once.
    pub fn pause(&self, duration: Duration) {
        let handle = self.runtime.lock().ok().and_then(|handle| handle.clone());
        match handle {
            // On a single-threaded runtime, a task that blocks its thread blocks everything.
            Some(handle) => {
                handle.spawn(async move { std::thread::sleep(duration) });
            }
            None => panic!("worker {} has no runtime to pause", self.id),
        }
    }

    /// Runs `future` on this worker's runtime (where its engine runs, as inside its process: handlers it
    /// starts run there) and waits for its output.
    pub async fn inside<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = self.runtime.lock().ok().and_then(|handle| handle.clone());
        match handle {
            Some(handle) => match handle.spawn(future).await {
                Ok(output) => output,
                Err(error) => panic!("worker {}: {error}", self.id),
            },
            None => panic!("worker {} has no runtime", self.id),
        }
    }

    /// This worker's scheduler (for admin calls through it).
    pub fn scheduler(&self) -> Scheduler {
        match self.scheduler.lock().ok().and_then(|slot| slot.clone()) {
            Some(scheduler) => scheduler,
            None => panic!("worker {} has no scheduler", self.id),
        }
    }

    /// Graceful shutdown; waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join().await;
    }

    /// Kills the worker like SIGKILL: its tasks vanish, its leases stay held until they expire.
    pub async fn kill(mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        self.join().await;
    }

    async fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if let Ok(Err(panic)) = joined {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub async fn eventually<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A task's whole history, oldest first.
pub async fn history(strategy: &Arc<dyn SchedulerStrategy>, task_id: &str) -> Vec<RunRecord> {
    let mut runs = match strategy
        .runs(
            task_id,
            RunQuery {
                limit: 100_000,
                before: None,
            },
        )
        .await
    {
        Ok(runs) => runs,
        Err(error) => panic!("history of {task_id}: {error}"),
    };
    runs.reverse();
    runs
}

/// History rows per status.
pub fn count_status(runs: &[RunRecord], status: RunStatus) -> usize {
    runs.iter().filter(|run| run.status == status).count()
}

/// Asserts that the slotted rows of `runs` cover every slot of the every-second schedule from the first
/// to the last exactly once (attempt 1), and returns the number of slots.
pub fn assert_contiguous_once(task_id: &str, runs: &[RunRecord]) -> usize {
    let mut slots: Vec<DateTime<Utc>> = runs
        .iter()
        .filter(|run| run.attempt == 1)
        .filter_map(|run| run.slot)
        .collect();
    slots.sort();
    let count = slots.len();
    for pair in slots.windows(2) {
        assert!(
            pair[0] != pair[1],
            "task {task_id}: slot {} has two history rows",
            pair[0]
        );
        assert_eq!(
            (pair[1] - pair[0]).num_milliseconds(),
            1000,
            "task {task_id}: slots between {} and {} have no history row",
            pair[0],
            pair[1]
        );
    }
    count
}

/// Sleeps until just after the next whole second, so a test's timing does not straddle a slot.
pub async fn align_to_second() {
    let now = Utc::now();
    let into = u64::from(now.timestamp_subsec_millis());
    tokio::time::sleep(Duration::from_millis(1000 - into + 100)).await;
}

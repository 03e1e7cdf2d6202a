//! The engine every built-in strategy shares: batched slot claims, handler runs with timeouts that really
//! cancel, lease heartbeats, completion guarded by the fence, pending work (triggers, buffered slots,
//! catch-up, retries), abandonment, store retries with backoff and graceful shutdown.
//!
//! A backend only provides a [`Store`]; `EngineStrategy<ThatStore>` is its [`SchedulerStrategy`].

use crate::clock::StoreTime;
use crate::decide::{DecideConfig, Decision, FinishOutcome, SlotOutcome};
use crate::error::{SchedulerError, StoreError};
use crate::model::{
    Retention, RunLease, RunQuery, RunRecord, RunStatus, TaskReport, TaskState, Timestamp, TriggerReceipt,
    UpdateScheduledTaskInput,
};
use crate::store::{Mutation, Store};
use crate::strategy::{ExecuteOutcome, Registration, SchedulerStrategy};
use crate::task::{Firing, ScheduledTask, TaskContext};
use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Tuning of the engine; the defaults suit production.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EngineConfig {
    /// How long a claim or renewal holds a run's lease (default 30 s). A dead worker's run is marked
    /// abandoned within this time plus one poll interval.
    pub lease: Duration,
    /// How often leases are renewed (default a third of the lease).
    pub heartbeat_interval: Option<Duration>,
    /// How often an idle worker asks the store for triggers and expired leases (default 1 s): one statement.
    pub poll_interval: Duration,
    /// How late a slot may start and still count as on time rather than missed (default 60 s).
    pub misfire_threshold: Duration,
    /// How long shutdown waits for running handlers before cancelling them (default 30 s).
    pub shutdown_grace: Duration,
    /// How long a cancelled handler may take to return before its future is dropped (default 5 s).
    pub cancel_grace: Duration,
    /// Largest result stored, in bytes of JSON (default 64 KiB); larger results are replaced by a note.
    pub max_result_bytes: usize,
    /// History retention, applied by the fleet's retention task.
    pub retention: Retention,
    /// Most slot claims (and completions) sent to the store in one mutation (default 1,000).
    pub claim_batch: usize,
    /// Most claim mutations in flight at once (default: the store's preference, see
    /// [`Store::preferred_parallelism`]). With several, a big instant is split evenly into that many
    /// batches (of at least 64 claims) claimed concurrently, so the first handlers start before the last
    /// batch commits.
    pub claim_parallelism: Option<usize>,
    /// How long admin calls retry an unreachable store before failing (default 10 s).
    pub admin_retry_for: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            heartbeat_interval: None,
            poll_interval: Duration::from_secs(1),
            misfire_threshold: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
            cancel_grace: Duration::from_secs(5),
            max_result_bytes: 64 * 1024,
            retention: Retention::default(),
            claim_batch: 1000,
            claim_parallelism: None,
            admin_retry_for: Duration::from_secs(10),
        }
    }
}

impl EngineConfig {
    /// Sets the lease duration.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets the poll interval.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Sets the misfire threshold.
    pub fn misfire_threshold(mut self, threshold: Duration) -> Self {
        self.misfire_threshold = threshold;
        self
    }

    /// Sets the shutdown grace period.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Sets the cancellation grace period.
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = grace;
        self
    }

    /// Sets the retention policy.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Sets the largest stored result.
    pub fn max_result_bytes(mut self, bytes: usize) -> Self {
        self.max_result_bytes = bytes;
        self
    }

    /// Sets the largest batch of claims (or completions) per mutation (at least 1).
    pub fn claim_batch(mut self, batch: usize) -> Self {
        self.claim_batch = batch.max(1);
        self
    }

    /// Sets how many claim mutations may be in flight at once (at least 1).
    pub fn claim_parallelism(mut self, parallelism: usize) -> Self {
        self.claim_parallelism = Some(parallelism.max(1));
        self
    }

    /// How often leases are renewed: [`EngineConfig::heartbeat_interval`], else a third of the lease.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat_interval
            .unwrap_or(self.lease / 3)
            .max(crate::limits::MIN_INTERVAL)
    }

    /// Checks every setting against [`crate::limits`]. The strategy refuses to start with a setting out
    /// of range (`init` fails with [`SchedulerError::Config`]), so no absurd value ever reaches a
    /// computation at run time; the daemon's `--check` calls this too.
    ///
    /// A heartbeat must be at most half the lease: a renewal is retried for one heartbeat interval, so
    /// a lease renewed any less often could expire while its worker is alive.
    pub fn validate(&self) -> Result<(), crate::error::ConfigError> {
        use crate::error::ConfigError;
        use crate::limits::{self, check_count, check_duration};
        check_duration("engine.lease", self.lease, limits::MIN_LEASE, limits::MAX_LEASE)?;
        if let Some(heartbeat) = self.heartbeat_interval {
            check_duration(
                "engine.heartbeat_interval",
                heartbeat,
                limits::MIN_INTERVAL,
                limits::MAX_LEASE,
            )?;
            if heartbeat > self.lease / 2 {
                return Err(ConfigError::Invalid(format!(
                    "engine.heartbeat_interval = {} cannot keep engine.lease = {}: a lease must be renewed at \
                     least twice per lease (use a heartbeat of at most {}, or a longer lease)",
                    limits::format_duration(heartbeat),
                    limits::format_duration(self.lease),
                    limits::format_duration(self.lease / 2)
                )));
            }
        }
        check_duration(
            "engine.poll_interval",
            self.poll_interval,
            limits::MIN_INTERVAL,
            limits::MAX_POLL_INTERVAL,
        )?;
        check_duration(
            "engine.misfire_threshold",
            self.misfire_threshold,
            Duration::from_millis(1),
            limits::MAX_MISFIRE_THRESHOLD,
        )?;
        check_duration(
            "engine.shutdown_grace",
            self.shutdown_grace,
            Duration::ZERO,
            limits::MAX_SHUTDOWN_GRACE,
        )?;
        check_duration(
            "engine.cancel_grace",
            self.cancel_grace,
            Duration::ZERO,
            limits::MAX_CANCEL_GRACE,
        )?;
        check_duration(
            "engine.admin_retry_for",
            self.admin_retry_for,
            Duration::ZERO,
            limits::MAX_ADMIN_RETRY,
        )?;
        check_count(
            "engine.max_result_bytes",
            self.max_result_bytes as u64,
            256,
            limits::MAX_RESULT_BYTES as u64,
        )?;
        check_count(
            "engine.claim_batch",
            self.claim_batch as u64,
            1,
            limits::MAX_CLAIM_BATCH as u64,
        )?;
        if let Some(parallelism) = self.claim_parallelism {
            check_count(
                "engine.claim_parallelism",
                parallelism as u64,
                1,
                limits::MAX_CLAIM_PARALLELISM as u64,
            )?;
        }
        self.retention.validate()
    }
}

/// Most claims (and completions) queued for the store at once per worker.
const QUEUE_CAPACITY: usize = 1 << 16;

/// Smallest batch worth a mutation of its own when an instant is split over parallel mutations.
const MIN_PARALLEL_BATCH: usize = 64;

/// Why a local run was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    /// The lease is gone (abandoned by others, fence moved, or renewal impossible): write nothing.
    LeaseLost,
    /// A newer run superseded it (already recorded `cancelled`): write nothing.
    Superseded,
    /// This worker is shutting down: record `cancelled`.
    Shutdown,
}

struct LocalRun {
    task_id: String,
    fence: u64,
    token: CancellationToken,
    stop: Mutex<Option<StopReason>>,
    renewed_at: Mutex<Instant>,
}

impl LocalRun {
    fn stop(&self, reason: StopReason) {
        if let Ok(mut stop) = self.stop.lock() {
            stop.get_or_insert(reason);
        }
        self.token.cancel();
    }

    fn stop_reason(&self) -> Option<StopReason> {
        self.stop.lock().ok().and_then(|stop| *stop)
    }
}

/// A claim's outcome and, when it started a run, that run's id and fence.
type ClaimAnswer = (SlotOutcome, Option<(String, u64)>);

struct FinishRequest {
    task: Arc<ScheduledTask>,
    lease: RunLease,
    status: RunStatus,
    reason: Option<String>,
    result: Option<Value>,
    error: Option<String>,
    reply: oneshot::Sender<()>,
}

struct ClaimRequest {
    task: Arc<ScheduledTask>,
    slot: Timestamp,
    reply: oneshot::Sender<Result<ClaimAnswer, SchedulerError>>,
}

struct Engine<S: Store> {
    store: Arc<S>,
    config: EngineConfig,
    decide: OnceLock<DecideConfig>,
    tasks: RwLock<HashMap<String, Arc<ScheduledTask>>>,
    local_runs: Mutex<HashMap<String, Arc<LocalRun>>>,
    claims: mpsc::Sender<ClaimRequest>,
    claims_receiver: Mutex<Option<mpsc::Receiver<ClaimRequest>>>,
    finishes: mpsc::Sender<FinishRequest>,
    finishes_receiver: Mutex<Option<mpsc::Receiver<FinishRequest>>>,
    stopping: CancellationToken,
    handlers: TaskTracker,
    /// Loops that start runs (claims, polls): shutdown waits for them to finish their current step.
    starters: Mutex<Vec<JoinHandle<()>>>,
    /// Loops that serve running handlers (heartbeats, completions): stopped after the last handler.
    servants: Mutex<Vec<JoinHandle<()>>>,
    wake: Notify,
    /// Woken by every successful answer of the store: a mutation waiting to retry after an outage
    /// retries at once instead of sleeping out its backoff (up to 2 s of lag after a recovery).
    store_answered: Notify,
    started: AtomicBool,
    /// Set once, when one of the engine's loops died: the scheduler stops with this message.
    failure: watch::Sender<Option<String>>,
    /// The best recent reading of the store's clock (see [`StoreTime`]).
    store_time: Mutex<Option<StoreTime>>,
}

/// The built-in [`SchedulerStrategy`]: the shared engine over a [`Store`].
pub struct EngineStrategy<S: Store> {
    engine: Arc<Engine<S>>,
}

impl<S: Store> Clone for EngineStrategy<S> {
    fn clone(&self) -> Self {
        Self {
            engine: self.engine.clone(),
        }
    }
}

impl<S: Store> std::fmt::Debug for EngineStrategy<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineStrategy")
            .field("config", &self.engine.config)
            .finish_non_exhaustive()
    }
}

impl<S: Store> EngineStrategy<S> {
    /// A strategy over `store` with the default configuration.
    pub fn new(store: Arc<S>) -> Self {
        Self::with_config(store, EngineConfig::default())
    }

    /// A strategy over `store` with `config`.
    pub fn with_config(store: Arc<S>, config: EngineConfig) -> Self {
        // Bounded: a caller that outruns the store waits here (and the scheduler pauses its timers)
        // instead of growing memory without limit.
        let (claims, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let (finishes, finishes_receiver) = mpsc::channel(QUEUE_CAPACITY);
        Self {
            engine: Arc::new(Engine {
                store,
                config,
                decide: OnceLock::new(),
                tasks: RwLock::new(HashMap::new()),
                local_runs: Mutex::new(HashMap::new()),
                claims,
                claims_receiver: Mutex::new(Some(receiver)),
                finishes,
                finishes_receiver: Mutex::new(Some(finishes_receiver)),
                stopping: CancellationToken::new(),
                handlers: TaskTracker::new(),
                starters: Mutex::new(Vec::new()),
                servants: Mutex::new(Vec::new()),
                wake: Notify::new(),
                store_answered: Notify::new(),
                started: AtomicBool::new(false),
                failure: watch::Sender::new(None),
                store_time: Mutex::new(None),
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.engine.store
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.engine.config
    }

    /// Number of handlers running on this worker now.
    pub fn local_running(&self) -> usize {
        self.engine.local_runs.lock().map(|runs| runs.len()).unwrap_or(0)
    }
}

fn store_error(error: StoreError) -> SchedulerError {
    SchedulerError::Store(error)
}

/// A validated engine duration as chrono's; anything beyond chrono's range (never a validated value)
/// saturates at a century, which no instant arithmetic in `decide` can overflow with.
fn to_chrono(duration: Duration) -> chrono::Duration {
    const CENTURY: chrono::Duration = chrono::Duration::days(36_525);
    chrono::Duration::from_std(duration).map_or(CENTURY, |value| value.min(CENTURY))
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

/// An error text of at most `limit` bytes: a longer one keeps its beginning and its end (where
/// command output usually says what went wrong), cut at character boundaries, with the number of
/// bytes left out in between. Like results, errors are bounded so no history row, statement or
/// packet grows with a handler's output.
pub fn bound_text(text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    let marker_room = 64;
    let keep = limit.saturating_sub(marker_room);
    let mut head_end = keep / 2;
    while head_end > 0 && !text.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let mut tail_start = text.len() - (keep - head_end);
    while tail_start < text.len() && !text.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    let head = text.get(..head_end).unwrap_or_default();
    let tail = text.get(tail_start..).unwrap_or_default();
    let omitted = tail_start - head_end;
    format!("{head} […{omitted} bytes omitted…] {tail}")
}

/// Exponential backoff for store retries: 25 ms doubling to 2 s, with jitter from the clock's nanoseconds.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self {
            next: Duration::from_millis(25),
        }
    }

    fn step(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(2));
        let jitter_ms = u64::from(chrono::Utc::now().timestamp_subsec_nanos() % 25);
        base + Duration::from_millis(jitter_ms)
    }
}

impl<S: Store> Engine<S> {
    fn decide_config(&self) -> DecideConfig {
        self.decide.get().cloned().unwrap_or_else(|| DecideConfig {
            worker: format!("admin:{}", std::process::id()),
            lease: to_chrono(self.config.lease),
            misfire_threshold: to_chrono(self.config.misfire_threshold),
        })
    }

    /// Records that the engine cannot go on (a loop panicked or ended while the engine was not
    /// stopping): logs it as an error and wakes [`SchedulerStrategy::failed`], so the scheduler stops
    /// and `run_until` returns the error — a worker never stays up looking healthy while claiming
    /// nothing.
    fn fail(&self, message: String) {
        tracing::error!(error = %message, "the scheduler's engine failed; stopping this worker");
        self.failure.send_if_modified(|failure| {
            if failure.is_none() {
                *failure = Some(message);
                true
            } else {
                false
            }
        });
    }

    /// Spawns one of the engine's loops under supervision: a panic, or an end while the engine is not
    /// stopping, is fatal (see [`Engine::fail`]).
    fn supervise<F>(self: &Arc<Self>, name: &'static str, future: F) -> JoinHandle<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let engine = self.clone();
        tokio::spawn(async move {
            match std::panic::AssertUnwindSafe(future).catch_unwind().await {
                Ok(()) if engine.stopping.is_cancelled() => {}
                Ok(()) => engine.fail(format!("the {name} loop ended unexpectedly")),
                Err(panic) => engine.fail(format!("the {name} loop panicked: {}", panic_message(panic))),
            }
        })
    }

    /// Learns the store's time from an answer to a request sent at `sent`.
    fn observe(&self, sent: std::time::Instant, store_now: Timestamp) {
        self.store_answered.notify_waiters();
        let received = std::time::Instant::now();
        let reading = StoreTime::from_round_trip(sent, received, store_now);
        if let Ok(mut best) = self.store_time.lock() {
            *best = Some(match *best {
                Some(current) => current.better(reading, received),
                None => reading,
            });
        }
    }

    fn task(&self, id: &str) -> Option<Arc<ScheduledTask>> {
        self.tasks.read().ok().and_then(|tasks| tasks.get(id).cloned())
    }

    /// Runs `f` for each id inside one store mutation, retrying transient store errors with backoff
    /// (until `retry_for` elapses, or while the engine is not stopping when `None`). `f` may run more than
    /// once per id (optimistic stores), so only the results of the committed attempt are returned.
    async fn transact<T, F>(
        &self,
        ids: &[String],
        retry_for: Option<Duration>,
        f: F,
    ) -> Result<(Timestamp, HashMap<String, T>), StoreError>
    where
        T: Send,
        F: FnMut(Timestamp, &str, Option<&TaskState>) -> (Mutation, T) + Send,
    {
        let (now, results, _) = self.transact_with_floors(ids, None, retry_for, f).await?;
        Ok((now, results))
    }

    /// [`Engine::transact`]; with `floors` (claims), through [`Store::mutate_claims`], which may leave out
    /// tasks whose slots are already accounted for: their ids come back third.
    async fn transact_with_floors<T, F>(
        &self,
        ids: &[String],
        floors: Option<&[Timestamp]>,
        retry_for: Option<Duration>,
        mut f: F,
    ) -> Result<(Timestamp, HashMap<String, T>, Vec<String>), StoreError>
    where
        T: Send,
        F: FnMut(Timestamp, &str, Option<&TaskState>) -> (Mutation, T) + Send,
    {
        let started = Instant::now();
        let mut backoff = Backoff::new();
        loop {
            let mut results: HashMap<String, T> = HashMap::with_capacity(ids.len());
            let sent = std::time::Instant::now();
            let outcome = {
                let mut decide = |now: Timestamp, id: &str, state: Option<&TaskState>| {
                    let (mutation, result) = f(now, id, state);
                    results.insert(id.to_owned(), result);
                    mutation
                };
                match floors {
                    Some(floors) => self.store.mutate_claims(ids, floors, &mut decide).await,
                    None => self.store.mutate(ids, &mut decide).await.map(|now| (now, Vec::new())),
                }
            };
            match outcome {
                Ok((now, left_out)) => {
                    self.observe(sent, now);
                    return Ok((now, results, left_out));
                }
                Err(error) if error.is_transient() => {
                    let give_up = match retry_for {
                        Some(limit) => started.elapsed() >= limit,
                        None => self.stopping.is_cancelled() && started.elapsed() >= self.config.cancel_grace,
                    };
                    if give_up {
                        return Err(error);
                    }
                    let delay = backoff.step();
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "store unavailable; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.store_answered.notified() => {}
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn spawn_runs(self: &Arc<Self>, task: &Arc<ScheduledTask>, leases: Vec<RunLease>) {
        for lease in leases {
            let local = Arc::new(LocalRun {
                task_id: task.id().to_owned(),
                fence: lease.fence,
                token: CancellationToken::new(),
                stop: Mutex::new(None),
                renewed_at: Mutex::new(Instant::now()),
            });
            if let Ok(mut runs) = self.local_runs.lock() {
                runs.insert(lease.run_id.clone(), local.clone());
            }
            let engine = self.clone();
            let task = task.clone();
            self.handlers.spawn(async move {
                let supervisor = engine.clone();
                // The handler's own panics are caught inside (they are the run's failure); a panic
                // here is the engine's own, and leaves a lease nobody ends: fatal.
                let driven = std::panic::AssertUnwindSafe(engine.drive_run(task, lease, local))
                    .catch_unwind()
                    .await;
                if let Err(panic) = driven {
                    supervisor.fail(format!("a run driver panicked: {}", panic_message(panic)));
                }
            });
        }
    }

    fn stop_local(&self, run_ids: &[String], reason: StopReason) {
        if run_ids.is_empty() {
            return;
        }
        if let Ok(runs) = self.local_runs.lock() {
            for run_id in run_ids {
                if let Some(run) = runs.get(run_id) {
                    run.stop(reason);
                }
            }
        }
    }

    async fn drive_run(self: Arc<Self>, task: Arc<ScheduledTask>, lease: RunLease, local: Arc<LocalRun>) {
        let worker = self.decide_config().worker;
        let context = TaskContext {
            task_id: task.id().to_owned(),
            slot: lease.slot,
            run_id: lease.run_id.clone(),
            fence: lease.fence,
            attempt: lease.attempt,
            params: task.params().clone(),
            worker_id: worker,
            cancellation: local.token.clone(),
        };
        tracing::debug!(task = task.id(), run = %lease.run_id, slot = ?lease.slot, fence = lease.fence, "run started");
        let mut join = tokio::spawn((task.handler())(context));
        let timeout = task.policy().timeout;
        let (status, reason, result, error) = tokio::select! {
            joined = &mut join => Self::joined(joined),
            () = tokio::time::sleep(timeout) => {
                local.token.cancel();
                self.wait_or_abort(&mut join).await;
                (RunStatus::TimedOut, Some("timeout".to_owned()), None,
                 Some(format!("the handler exceeded its timeout of {} ms and was cancelled", timeout.as_millis())))
            }
            () = local.token.cancelled() => {
                self.wait_or_abort(&mut join).await;
                (RunStatus::Cancelled, Some("scheduler shutdown".to_owned()), None, Some("cancelled: the worker is shutting down".to_owned()))
            }
        };
        match local.stop_reason() {
            Some(StopReason::LeaseLost) => {
                tracing::warn!(task = task.id(), run = %lease.run_id, "lease lost; the run's end is not recorded by this worker");
            }
            Some(StopReason::Superseded) => {
                tracing::info!(task = task.id(), run = %lease.run_id, "run superseded by a newer run");
            }
            // A run that succeeded despite shutdown's cancellation keeps its outcome; one that ended
            // because of it (an error or an abort after the token fired) was cancelled.
            Some(StopReason::Shutdown) if status != RunStatus::Succeeded => {
                let error = error
                    .map(|text| bound_text(text, self.config.max_result_bytes))
                    .or_else(|| Some("cancelled: the worker is shutting down".to_owned()));
                self.record_finish(
                    &task,
                    &lease,
                    RunStatus::Cancelled,
                    Some("scheduler shutdown".to_owned()),
                    None,
                    error,
                )
                .await;
            }
            Some(StopReason::Shutdown) | None => {
                let result = result.map(|value| self.bound_result(value));
                let error = error.map(|text| bound_text(text, self.config.max_result_bytes));
                self.record_finish(&task, &lease, status, reason, result, error).await;
            }
        }
        if let Ok(mut runs) = self.local_runs.lock() {
            runs.remove(&lease.run_id);
        }
    }

    fn joined(
        joined: Result<Result<Value, crate::task::TaskError>, tokio::task::JoinError>,
    ) -> (RunStatus, Option<String>, Option<Value>, Option<String>) {
        match joined {
            Ok(Ok(value)) => (RunStatus::Succeeded, None, Some(value), None),
            Ok(Err(error)) => (RunStatus::Failed, None, None, Some(error.to_string())),
            Err(error) if error.is_panic() => (
                RunStatus::Failed,
                Some("panic".to_owned()),
                None,
                Some(format!("the handler panicked: {}", panic_message(error.into_panic()))),
            ),
            Err(_) => (
                RunStatus::Cancelled,
                None,
                None,
                Some("the handler was aborted".to_owned()),
            ),
        }
    }

    async fn wait_or_abort(&self, join: &mut JoinHandle<Result<Value, crate::task::TaskError>>) {
        if tokio::time::timeout(self.config.cancel_grace, &mut *join)
            .await
            .is_err()
        {
            join.abort();
            let _ = join.await;
        }
    }

    fn bound_result(&self, value: Value) -> Value {
        match serde_json::to_string(&value) {
            Ok(text) if text.len() <= self.config.max_result_bytes => value,
            Ok(text) => {
                tracing::warn!(
                    bytes = text.len(),
                    limit = self.config.max_result_bytes,
                    "handler result too large; storing a note instead"
                );
                serde_json::json!({
                    "truncated": true,
                    "bytes": text.len(),
                    "limit": self.config.max_result_bytes,
                    "note": "the handler's result exceeded max_result_bytes and was not stored",
                })
            }
            Err(error) => serde_json::json!({ "unserializable": error.to_string() }),
        }
    }

    /// Hands the run's end to the completion batcher and waits until it is written (or refused).
    async fn record_finish(
        self: &Arc<Self>,
        task: &Arc<ScheduledTask>,
        lease: &RunLease,
        status: RunStatus,
        reason: Option<String>,
        result: Option<Value>,
        error: Option<String>,
    ) {
        let (reply, written) = oneshot::channel();
        let request = FinishRequest {
            task: task.clone(),
            lease: lease.clone(),
            status,
            reason,
            result,
            error,
            reply,
        };
        if self.finishes.send(request).await.is_err() {
            tracing::error!(task = task.id(), run = %lease.run_id, "the completion writer is gone; the run's lease will expire and it will be marked abandoned");
            return;
        }
        let _ = written.await;
    }

    /// Writes the ends of many runs in one store mutation: completions that arrive together (the runs of
    /// one instant) cost one transaction, not one each.
    async fn finish_batch(self: &Arc<Self>, batch: Vec<FinishRequest>) {
        let config = self.decide_config();
        let start_next = !self.stopping.is_cancelled();
        let mut by_task: HashMap<String, Vec<FinishRequest>> = HashMap::new();
        let mut ids = Vec::new();
        for request in batch {
            let id = request.task.id().to_owned();
            if !by_task.contains_key(&id) {
                ids.push(id.clone());
            }
            by_task.entry(id).or_default().push(request);
        }
        // Retry for as long as the lease could still be ours; after that another worker owns the truth.
        let retry_for = self.config.lease.saturating_mul(2);
        let outcome = self
            .transact(&ids, Some(retry_for), |now, id, state| {
                let requests = by_task.get(id).map(Vec::as_slice).unwrap_or_default();
                let Some(state) = state else {
                    return (
                        Mutation::none(),
                        (vec![FinishOutcome::Fenced; requests.len()], Vec::new(), Vec::new()),
                    );
                };
                let mut decision = Decision::new(state.clone(), now, &config);
                let outcomes = requests
                    .iter()
                    .map(|request| {
                        decision.finish(
                            request.task.policy(),
                            &request.lease.run_id,
                            request.lease.fence,
                            request.status,
                            request.reason.clone(),
                            request.result.clone(),
                            request.error.clone(),
                            start_next,
                        )
                    })
                    .collect::<Vec<_>>();
                let (mutation, started, ended) = decision.into_mutation();
                (mutation, (outcomes, started, ended))
            })
            .await;
        match outcome {
            Ok((_, mut results)) => {
                for (id, requests) in by_task {
                    let Some((outcomes, started, ended)) = results.remove(&id) else {
                        continue;
                    };
                    for (request, outcome) in requests.iter().zip(outcomes) {
                        if outcome == FinishOutcome::Fenced {
                            tracing::warn!(task = %id, run = %request.lease.run_id, fence = request.lease.fence, "completion refused by the fence: the run no longer holds the lease");
                        } else {
                            tracing::debug!(task = %id, run = %request.lease.run_id, status = %request.status, "run finished");
                        }
                    }
                    self.stop_local(&ended, StopReason::LeaseLost);
                    if let Some(task) = requests.first().map(|request| request.task.clone()) {
                        self.spawn_runs(&task, started);
                    }
                    for request in requests {
                        let _ = request.reply.send(());
                    }
                }
            }
            Err(error) => {
                for request in by_task.into_values().flatten() {
                    tracing::error!(task = request.task.id(), run = %request.lease.run_id, %error, "could not record the run's end; its lease will expire and it will be marked abandoned");
                    let _ = request.reply.send(());
                }
            }
        }
    }

    /// Drains a request channel into batches: waits for one request, lets the others of the same instant
    /// arrive, takes up to the batch limit, and hands the batch to `handle`. Returns when the channel
    /// closes or, if `until_stopping`, when the engine stops.
    async fn batch_loop<R, F, Fut>(
        self: Arc<Self>,
        mut receiver: mpsc::Receiver<R>,
        until_stopping: bool,
        parallelism: usize,
        handle: F,
    ) where
        F: Fn(Arc<Self>, Vec<R>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let limit = self.config.claim_batch.max(1);
        let parallelism = parallelism.max(1);
        let mut in_flight = futures::stream::FuturesUnordered::new();
        loop {
            if in_flight.len() >= parallelism {
                let _ = in_flight.next().await;
                continue;
            }
            let first = tokio::select! {
                request = receiver.recv() => match request { Some(request) => request, None => break },
                Some(()) = in_flight.next(), if !in_flight.is_empty() => continue,
                () = self.stopping.cancelled(), if until_stopping => break,
            };
            tokio::task::yield_now().await;
            // Split what is queued evenly over the batches that may run at once.
            let queued = receiver.len() + 1;
            let share = queued.div_ceil(parallelism).max(MIN_PARALLEL_BATCH);
            let size = if parallelism > 1 { share.min(limit) } else { limit };
            let mut batch = vec![first];
            while batch.len() < size {
                match receiver.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            in_flight.push(handle(self.clone(), batch));
        }
        // Let the mutations already sent finish: their callers are waiting for the answers.
        while in_flight.next().await.is_some() {}
    }

    async fn claim_batch(self: &Arc<Self>, batch: Vec<ClaimRequest>) {
        let config = self.decide_config();
        let mut by_task: HashMap<String, Vec<ClaimRequest>> = HashMap::new();
        let mut ids = Vec::new();
        for request in batch {
            let id = request.task.id().to_owned();
            if !by_task.contains_key(&id) {
                ids.push(id.clone());
            }
            by_task.entry(id).or_default().push(request);
        }
        // The earliest slot each task wants: a store may skip tasks already claimed up to there.
        let floors: Vec<Timestamp> = ids
            .iter()
            .map(|id| {
                by_task
                    .get(id)
                    .and_then(|requests| requests.iter().map(|request| request.slot).min())
                    .unwrap_or(Timestamp::MIN_UTC)
            })
            .collect();
        let outcome = self
            .transact_with_floors(&ids, Some(&floors), None, |now, id, state| {
                let requests = by_task.get(id).map(Vec::as_slice).unwrap_or_default();
                let Some(state) = state else {
                    return (Mutation::none(), None);
                };
                let mut decision = Decision::new(state.clone(), now, &config);
                let outcomes: Vec<(SlotOutcome, Option<(String, u64)>)> = requests
                    .iter()
                    .map(|request| {
                        let before = decision.started.len();
                        let outcome = decision.claim_slot(&request.task, request.slot);
                        let lease = decision.started[before..]
                            .last()
                            .map(|lease| (lease.run_id.clone(), lease.fence));
                        (outcome, lease)
                    })
                    .collect();
                let (mutation, started, ended) = decision.into_mutation();
                (mutation, Some((outcomes, started, ended)))
            })
            .await;
        match outcome {
            Ok((_, mut results, left_out)) => {
                for id in left_out {
                    // Another worker claimed (or accounted for) every slot this one asked for.
                    for request in by_task.remove(&id).unwrap_or_default() {
                        let _ = request.reply.send(Ok((SlotOutcome::AlreadyAccounted, None)));
                    }
                }
                for (id, requests) in by_task {
                    let Some(task) = requests.first().map(|request| request.task.clone()) else {
                        continue;
                    };
                    match results.remove(&id).flatten() {
                        Some((outcomes, started, ended)) => {
                            self.stop_local(&ended, StopReason::Superseded);
                            self.spawn_runs(&task, started);
                            for (request, outcome) in requests.into_iter().zip(outcomes) {
                                let _ = request.reply.send(Ok(outcome));
                            }
                        }
                        None => {
                            for request in requests {
                                let _ = request.reply.send(Err(SchedulerError::UnknownTask(id.clone())));
                            }
                        }
                    }
                }
            }
            Err(StoreError::Duplicate(message)) if ids.len() > 1 => {
                // Isolate the task whose unique key fired; the others go through one by one.
                tracing::error!(%message, "a batch claim hit the unique key; retrying the batch one task at a time");
                for (_, requests) in by_task {
                    Box::pin(self.claim_batch(requests)).await;
                }
            }
            Err(error) => {
                for requests in by_task.into_values() {
                    for request in requests {
                        let _ = request.reply.send(Err(store_error(error.clone())));
                    }
                }
            }
        }
    }

    /// Reaps expired leases and starts pending work of these tasks on this worker.
    async fn attend(self: &Arc<Self>, ids: Vec<String>) -> Result<usize, StoreError> {
        let ids: Vec<String> = ids.into_iter().filter(|id| self.task(id).is_some()).collect();
        if ids.is_empty() || self.stopping.is_cancelled() {
            return Ok(0);
        }
        let config = self.decide_config();
        let (_, results) = self
            .transact(
                &ids,
                Some(self.config.poll_interval.saturating_mul(5)),
                |now, id, state| {
                    let (Some(state), Some(task)) = (state, self.task(id)) else {
                        return (Mutation::none(), (Vec::new(), Vec::new()));
                    };
                    let mut decision = Decision::new(state.clone(), now, &config);
                    decision.reap_expired(task.policy());
                    decision.start_pending();
                    let (mutation, started, ended) = decision.into_mutation();
                    (mutation, (started, ended))
                },
            )
            .await?;
        let mut count = 0;
        for (id, (started, ended)) in results {
            self.stop_local(&ended, StopReason::LeaseLost);
            if let Some(task) = self.task(&id) {
                count += started.len();
                self.spawn_runs(&task, started);
            }
        }
        Ok(count)
    }

    async fn poll_loop(self: Arc<Self>) {
        let mut subscription = self.store.subscribe();
        loop {
            let pushed = async {
                match subscription.as_mut() {
                    Some(receiver) => match receiver.recv().await {
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => false,
                    },
                    None => std::future::pending::<bool>().await,
                }
            };
            tokio::select! {
                () = self.stopping.cancelled() => return,
                () = tokio::time::sleep(self.config.poll_interval) => {}
                () = self.wake.notified() => {}
                open = pushed => {
                    if !open {
                        // The push channel is gone; polling alone still finds everything.
                        subscription = None;
                    }
                }
            }
            let sent = std::time::Instant::now();
            let polled = self.store.due_for_attention(1000).await;
            if let Ok((now, _)) = &polled {
                self.observe(sent, *now);
            }
            match polled {
                Ok((_, ids)) if !ids.is_empty() => {
                    if let Err(error) = self.attend(ids).await {
                        tracing::warn!(%error, "could not attend to due tasks");
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "poll for due work failed; retrying at the next interval"),
            }
        }
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let interval = self.config.heartbeat();
        // Leases are renewed during the shutdown grace period too; destroy() stops this loop once every
        // handler has ended.
        loop {
            tokio::time::sleep(interval).await;
            let mut by_task: HashMap<String, Vec<(String, u64)>> = HashMap::new();
            let local: Vec<(String, Arc<LocalRun>)> = match self.local_runs.lock() {
                Ok(runs) => runs.iter().map(|(id, run)| (id.clone(), run.clone())).collect(),
                Err(_) => Vec::new(),
            };
            for (run_id, run) in &local {
                if run.stop_reason().is_none() {
                    by_task
                        .entry(run.task_id.clone())
                        .or_default()
                        .push((run_id.clone(), run.fence));
                }
            }
            if by_task.is_empty() {
                continue;
            }
            let ids: Vec<String> = by_task.keys().cloned().collect();
            let config = self.decide_config();
            let attempt_started = Instant::now();
            let renewal = self
                .transact(&ids, Some(interval), |now, id, state| {
                    let runs = by_task.get(id).cloned().unwrap_or_default();
                    let Some(state) = state else {
                        return (Mutation::none(), runs.into_iter().map(|(run_id, _)| run_id).collect());
                    };
                    let mut decision = Decision::new(state.clone(), now, &config);
                    let lost = decision.renew(&runs);
                    (decision.into_mutation().0, lost)
                })
                .await;
            match renewal {
                Ok((_, results)) => {
                    // A run that ended normally while the renewal was in flight is not lost.
                    let still_local: Vec<String> = self
                        .local_runs
                        .lock()
                        .map(|runs| runs.keys().cloned().collect())
                        .unwrap_or_default();
                    let lost: Vec<String> = results
                        .into_values()
                        .flatten()
                        .filter(|run_id| still_local.contains(run_id))
                        .collect();
                    for (run_id, run) in &local {
                        if !lost.contains(run_id) {
                            if let Ok(mut renewed) = run.renewed_at.lock() {
                                *renewed = attempt_started;
                            }
                        }
                    }
                    if !lost.is_empty() {
                        tracing::warn!(runs = ?lost, "leases lost; cancelling those handlers");
                    }
                    self.stop_local(&lost, StopReason::LeaseLost);
                }
                Err(error) => {
                    tracing::warn!(%error, "lease renewal failed");
                    // Without a renewal, a lease is presumed lost once its full duration has passed.
                    for (_, run) in &local {
                        let expired = run
                            .renewed_at
                            .lock()
                            .map(|at| at.elapsed() >= self.config.lease)
                            .unwrap_or(true);
                        if expired {
                            run.stop(StopReason::LeaseLost);
                        }
                    }
                }
            }
        }
    }

    async fn claim(
        &self,
        task: Arc<ScheduledTask>,
        slot: Timestamp,
    ) -> Result<(SlotOutcome, Option<(String, u64)>), SchedulerError> {
        loop {
            if self.stopping.is_cancelled() {
                return Err(SchedulerError::NotRunning);
            }
            let (reply, answer) = oneshot::channel();
            let request = ClaimRequest {
                task: task.clone(),
                slot,
                reply,
            };
            tokio::select! {
                sent = self.claims.send(request) => sent.map_err(|_| SchedulerError::NotRunning)?,
                () = self.stopping.cancelled() => return Err(SchedulerError::NotRunning),
            }
            let (outcome, lease) = answer.await.map_err(|_| SchedulerError::NotRunning)??;
            match outcome {
                // The store's clock says the slot is still ahead: this worker's clock runs fast.
                SlotOutcome::NotDue(wait) => {
                    let wait = wait.to_std().unwrap_or_default() + Duration::from_millis(1);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.stopping.cancelled() => return Err(SchedulerError::NotRunning),
                    }
                }
                other => return Ok((other, lease)),
            }
        }
    }
}

#[async_trait]
impl<S: Store> SchedulerStrategy for EngineStrategy<S> {
    async fn init(&self, worker_id: &str) -> Result<(), SchedulerError> {
        let engine = &self.engine;
        if engine.started.swap(true, Ordering::SeqCst) {
            return Err(SchedulerError::Config(crate::error::ConfigError::Invalid(
                "this strategy was already initialised; create one strategy per scheduler".to_owned(),
            )));
        }
        engine.config.validate()?;
        engine.store.migrate().await.map_err(store_error)?;
        let _ = engine.decide.set(DecideConfig {
            worker: worker_id.to_owned(),
            lease: to_chrono(engine.config.lease),
            misfire_threshold: to_chrono(engine.config.misfire_threshold),
        });
        let claims = engine
            .claims_receiver
            .lock()
            .ok()
            .and_then(|mut receiver| receiver.take());
        let finishes = engine
            .finishes_receiver
            .lock()
            .ok()
            .and_then(|mut receiver| receiver.take());
        let mut starters = engine.starters.lock().map_err(|_| SchedulerError::NotRunning)?;
        let mut servants = engine.servants.lock().map_err(|_| SchedulerError::NotRunning)?;
        if let Some(receiver) = claims {
            // Claims of a big instant go out in parallel batches; completions, whose latency nobody
            // waits for, in one batch at a time (fewer, larger transactions).
            let parallelism = engine
                .config
                .claim_parallelism
                .unwrap_or_else(|| engine.store.preferred_parallelism());
            starters.push(
                engine.supervise(
                    "claim",
                    engine
                        .clone()
                        .batch_loop(receiver, true, parallelism, |engine, batch| async move {
                            engine.claim_batch(batch).await;
                        }),
                ),
            );
        }
        // Completions are written until every handler has ended, shutdown included.
        if let Some(receiver) = finishes {
            servants.push(
                engine.supervise(
                    "completion",
                    engine
                        .clone()
                        .batch_loop(receiver, false, 1, |engine, batch| async move {
                            engine.finish_batch(batch).await;
                        }),
                ),
            );
        }
        starters.push(engine.supervise("poll", engine.clone().poll_loop()));
        servants.push(engine.supervise("heartbeat", engine.clone().heartbeat_loop()));
        Ok(())
    }

    fn store_time(&self) -> Option<StoreTime> {
        self.engine.store_time.lock().ok().and_then(|reading| *reading)
    }

    async fn failed(&self) -> SchedulerError {
        let mut failure = self.engine.failure.subscribe();
        let message = failure
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|message| message.clone());
        match message {
            Some(message) => SchedulerError::EngineFailed(message),
            // The engine is gone, so it cannot fail any more.
            None => std::future::pending().await,
        }
    }

    async fn destroy(&self) -> Result<(), SchedulerError> {
        let engine = &self.engine;
        engine.stopping.cancel();
        // The claim and poll loops end after their current step; a claim that commits in that step still
        // gets its handler, which the wait below then covers. Nothing starts a run after this.
        let starters: Vec<JoinHandle<()>> = engine
            .starters
            .lock()
            .map(|mut handles| handles.drain(..).collect())
            .unwrap_or_default();
        for handle in starters {
            let _ = handle.await;
        }
        engine.handlers.close();
        if tokio::time::timeout(engine.config.shutdown_grace, engine.handlers.wait())
            .await
            .is_err()
        {
            let running: Vec<Arc<LocalRun>> = engine
                .local_runs
                .lock()
                .map(|runs| runs.values().cloned().collect())
                .unwrap_or_default();
            tracing::info!(
                runs = running.len(),
                "shutdown grace elapsed; cancelling running handlers"
            );
            for run in running {
                run.stop(StopReason::Shutdown);
            }
            let _ = tokio::time::timeout(
                engine
                    .config
                    .cancel_grace
                    .saturating_mul(2)
                    .saturating_add(Duration::from_secs(1)),
                engine.handlers.wait(),
            )
            .await;
        }
        let servants: Vec<JoinHandle<()>> = engine
            .servants
            .lock()
            .map(|mut handles| handles.drain(..).collect())
            .unwrap_or_default();
        for handle in servants {
            handle.abort();
            let _ = handle.await;
        }
        Ok(())
    }

    async fn register_task(&self, task: ScheduledTask) -> Result<Registration, SchedulerError> {
        let mut registrations = self.register_tasks(vec![task]).await?;
        registrations.pop().ok_or(SchedulerError::NotRunning)
    }

    async fn register_tasks(&self, tasks: Vec<ScheduledTask>) -> Result<Vec<Registration>, SchedulerError> {
        let engine = &self.engine;
        let config = engine.decide_config();
        let mut registrations = Vec::with_capacity(tasks.len());
        for chunk in tasks.chunks(engine.config.claim_batch.max(1)) {
            let definitions: HashMap<String, crate::task::TaskDefinition> = chunk
                .iter()
                .map(|task| (task.id().to_owned(), task.definition()))
                .collect();
            let ids: Vec<String> = chunk.iter().map(|task| task.id().to_owned()).collect();
            let (_, results) = engine
                .transact(&ids, Some(engine.config.admin_retry_for), |now, id, state| {
                    let Some(definition) = definitions.get(id) else {
                        return (Mutation::none(), (None, false));
                    };
                    let mut decision = match state {
                        Some(state) => Decision::new(state.clone(), now, &config),
                        None => Decision::create(TaskState::new(definition.clone(), now), now, &config),
                    };
                    let conflict = decision.register(definition) && decision.state.conflict.is_some();
                    let high_water = decision.state.high_water;
                    (decision.into_mutation().0, (Some(high_water), conflict))
                })
                .await
                .map_err(store_error)?;
            for task in chunk {
                let (accounted_until, conflict) = results.get(task.id()).cloned().unwrap_or((None, false));
                if conflict {
                    tracing::warn!(
                        task = task.id(),
                        schedule = task.schedule().pattern(),
                        "this worker's definition differs from the stored one; the report shows the conflict"
                    );
                }
                registrations.push(Registration { accounted_until });
            }
            if let Ok(mut registry) = engine.tasks.write() {
                for task in chunk {
                    registry.insert(task.id().to_owned(), Arc::new(task.clone()));
                }
            }
        }
        // Work that waited for a worker able to run these tasks can start now.
        engine.wake.notify_one();
        Ok(registrations)
    }

    async fn execute_task(&self, task: &ScheduledTask, firing: Firing) -> Result<ExecuteOutcome, SchedulerError> {
        let engine = &self.engine;
        let registered = engine
            .task(task.id())
            .ok_or_else(|| SchedulerError::UnknownTask(task.id().to_owned()))?;
        match firing {
            Firing::Scheduled { slot } => {
                let (outcome, lease) = engine.claim(registered, slot).await?;
                Ok(match (outcome, lease) {
                    (SlotOutcome::Started, Some((run_id, fence))) => ExecuteOutcome::Started { run_id, fence },
                    (SlotOutcome::Started, None) => ExecuteOutcome::AlreadyAccounted,
                    (SlotOutcome::Skipped(reason), _) => ExecuteOutcome::Skipped {
                        reason: reason.to_owned(),
                    },
                    (SlotOutcome::Buffered, _) => ExecuteOutcome::Buffered,
                    (SlotOutcome::Missed, _) => ExecuteOutcome::Missed,
                    (SlotOutcome::AlreadyAccounted | SlotOutcome::NotDue(_), _) => ExecuteOutcome::AlreadyAccounted,
                })
            }
            Firing::Manual { .. } => {
                let started = engine.attend(vec![task.id().to_owned()]).await.map_err(store_error)?;
                Ok(if started > 0 {
                    ExecuteOutcome::Started {
                        run_id: String::new(),
                        fence: 0,
                    }
                } else {
                    ExecuteOutcome::NothingToRun
                })
            }
        }
    }

    async fn get_tasks(&self) -> Result<Vec<TaskReport>, SchedulerError> {
        let (now, states) = self.engine.store.load(None).await.map_err(store_error)?;
        Ok(states.iter().map(|state| TaskReport::from_state(state, now)).collect())
    }

    async fn get_task(&self, id: &str) -> Result<Option<TaskReport>, SchedulerError> {
        let ids = [id.to_owned()];
        let (now, states) = self.engine.store.load(Some(&ids)).await.map_err(store_error)?;
        Ok(states.first().map(|state| TaskReport::from_state(state, now)))
    }

    async fn trigger_task(&self, id: &str) -> Result<TriggerReceipt, SchedulerError> {
        let engine = &self.engine;
        let config = engine.decide_config();
        let ids = [id.to_owned()];
        let (_, mut results) = engine
            .transact(&ids, Some(engine.config.admin_retry_for), |now, id, state| {
                let Some(state) = state else {
                    return (Mutation::none(), Err(SchedulerError::UnknownTask(id.to_owned())));
                };
                let mut decision = Decision::new(state.clone(), now, &config);
                match decision.trigger() {
                    Ok((trigger_id, coalesced)) => {
                        (decision.into_mutation().0, Ok(TriggerReceipt { trigger_id, coalesced }))
                    }
                    Err(crate::decide::TriggerRefused::Disabled) => {
                        (Mutation::none(), Err(SchedulerError::TaskDisabled(id.to_owned())))
                    }
                }
            })
            .await
            .map_err(store_error)?;
        let receipt = results
            .remove(id)
            .unwrap_or_else(|| Err(SchedulerError::UnknownTask(id.to_owned())))?;
        if let Err(error) = engine.store.notify(id).await {
            tracing::debug!(%error, "trigger notification failed; workers will see it at their next poll");
        }
        engine.wake.notify_one();
        Ok(receipt)
    }

    async fn update_task(&self, input: UpdateScheduledTaskInput) -> Result<TaskReport, SchedulerError> {
        let engine = &self.engine;
        let config = engine.decide_config();
        let ids = [input.id.clone()];
        let (_, mut results) = engine
            .transact(&ids, Some(engine.config.admin_retry_for), |now, id, state| {
                let Some(state) = state else {
                    return (Mutation::none(), Err(SchedulerError::UnknownTask(id.to_owned())));
                };
                let mut decision = Decision::new(state.clone(), now, &config);
                if let Some(enabled) = input.enabled {
                    decision.set_enabled(enabled);
                }
                let report = TaskReport::from_state(&decision.state, now);
                (decision.into_mutation().0, Ok(report))
            })
            .await
            .map_err(store_error)?;
        results
            .remove(&input.id)
            .unwrap_or_else(|| Err(SchedulerError::UnknownTask(input.id.clone())))
    }

    async fn runs(&self, id: &str, query: RunQuery) -> Result<Vec<RunRecord>, SchedulerError> {
        let ids = [id.to_owned()];
        let (_, states) = self.engine.store.load(Some(&ids)).await.map_err(store_error)?;
        if states.is_empty() {
            return Err(SchedulerError::UnknownTask(id.to_owned()));
        }
        self.engine.store.runs(id, &query).await.map_err(store_error)
    }

    async fn prune_history(&self) -> Result<u64, SchedulerError> {
        self.engine
            .store
            .prune_runs(&self.engine.config.retention)
            .await
            .map_err(store_error)
    }
}

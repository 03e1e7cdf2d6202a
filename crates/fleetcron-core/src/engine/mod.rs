//! The engine every built-in strategy shares: batched slot claims, handler runs with timeouts that really
//! cancel, lease heartbeats, completion guarded by the fence, pending work (triggers, buffered slots,
//! catch-up, retries), abandonment, store retries with backoff and graceful shutdown.
//!
//! A backend only provides a [`Store`]; `EngineStrategy<ThatStore>` is its [`SchedulerStrategy`].

mod batch;
mod config;
mod lease;
mod run;
mod strategy;

use batch::{ClaimRequest, FinishRequest, QUEUE_CAPACITY};
pub use config::EngineConfig;
pub use run::bound_text;
use run::{LocalRun, StopReason};

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
    /// The `store` label of this engine's metrics ([`crate::metrics::store_label`]).
    metrics_store: &'static str,
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
                metrics_store: crate::metrics::store_label::<S>(),
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

pub(super) fn store_error(error: StoreError) -> SchedulerError {
    SchedulerError::Store(error)
}

/// A validated engine duration as chrono's; anything beyond chrono's range (never a validated value)
/// saturates at a century, which no instant arithmetic in `decide` can overflow with.
pub(super) fn to_chrono(duration: Duration) -> chrono::Duration {
    const CENTURY: chrono::Duration = chrono::Duration::days(36_525);
    chrono::Duration::from_std(duration).map_or(CENTURY, |value| value.min(CENTURY))
}

pub(super) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

/// A fresh random seed for the run ids of one decision (a new one for every attempt of a mutation, so
/// a retried mutation never mints an id an earlier attempt may have written). From the standard
/// library's randomly keyed hasher: no dependency, no shared state.
pub(super) fn fresh_seed() -> u64 {
    use std::hash::BuildHasher;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::collections::hash_map::RandomState::new().hash_one(count)
}

/// Exponential backoff for store retries: 25 ms doubling to 2 s, with jitter from the clock's nanoseconds.
pub(super) struct Backoff {
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
    pub(super) fn decide_config(&self) -> DecideConfig {
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
    pub(super) fn fail(&self, message: String) {
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
    pub(super) fn supervise<F>(self: &Arc<Self>, name: &'static str, future: F) -> JoinHandle<()>
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
    pub(super) fn observe(&self, sent: std::time::Instant, store_now: Timestamp) {
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

    pub(super) fn task(&self, id: &str) -> Option<Arc<ScheduledTask>> {
        self.tasks.read().ok().and_then(|tasks| tasks.get(id).cloned())
    }

    /// Runs `f` for each id inside one store mutation, retrying transient store errors with backoff
    /// (until `retry_for` elapses, or while the engine is not stopping when `None`). `f` may run more than
    /// once per id (optimistic stores), so only the results of the committed attempt are returned.
    pub(super) async fn transact<T, F>(
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
    pub(super) async fn transact_with_floors<T, F>(
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
            // Metrics count what the committed attempt wrote, once (see `crate::metrics`).
            let mut written: HashMap<String, crate::metrics::Written> = HashMap::new();
            let sent = std::time::Instant::now();
            let outcome = {
                let mut decide = |now: Timestamp, id: &str, state: Option<&TaskState>| {
                    let (mutation, result) = f(now, id, state);
                    results.insert(id.to_owned(), result);
                    // A store that decides a task again (its version moved) keeps only the last decision.
                    match crate::metrics::Written::of(&mutation) {
                        Some(tally) => written.insert(id.to_owned(), tally),
                        None => written.remove(id),
                    };
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
                    // A store may leave out a task after deciding it (an optimistic store that found it
                    // accounted when committing): that decision was not written.
                    for id in &left_out {
                        written.remove(id);
                        results.remove(id);
                    }
                    for (task, tally) in &written {
                        tally.committed(self.metrics_store, task);
                    }
                    return Ok((now, results, left_out));
                }
                Err(error) if error.is_transient() => {
                    let give_up = match retry_for {
                        Some(limit) => started.elapsed() >= limit,
                        None => self.stopping.is_cancelled() && started.elapsed() >= self.config.cancel_grace,
                    };
                    crate::metrics::store_error(self.metrics_store, &error, !give_up);
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
                Err(error) => {
                    crate::metrics::store_error(self.metrics_store, &error, false);
                    return Err(error);
                }
            }
        }
    }
}

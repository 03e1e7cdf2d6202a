//! The runtime a service embeds: one timer over the next slot of every task (no polling for due slots),
//! firing each slot into the strategy at its instant; plus the admin calls.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use fleetcron_core::{MemoryStore, MemoryStrategy, ScheduledTask, Scheduler};
//! use std::sync::Arc;
//!
//! let strategy = MemoryStrategy::new(Arc::new(MemoryStore::new()));
//! let scheduler = Scheduler::builder()
//!     .strategy(strategy)
//!     .task(
//!         ScheduledTask::builder("report.daily")
//!             .schedule("0 6 * * *")
//!             .timezone("Europe/Berlin")
//!             .handler(|ctx| async move { Ok(serde_json::json!({ "slot": ctx.slot })) })
//!             .build()?,
//!     )
//!     .build()?;
//! scheduler.run_until(tokio::signal::ctrl_c()).await?;
//! # Ok(()) }
//! ```

use crate::clock::{system_clock, SharedClock};
use crate::error::{ConfigError, SchedulerError};
use crate::model::{RunQuery, RunRecord, TaskReport, Timestamp, TriggerReceipt, UpdateScheduledTaskInput};
use crate::strategy::{ExecuteOutcome, SchedulerStrategy};
use crate::task::{CatchUp, Firing, Overlap, ScheduledTask};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Id of the built-in task that prunes the run history once per slot across the fleet.
pub const RETENTION_TASK_ID: &str = "fleetcron.retention";

/// Builder for [`Scheduler`].
pub struct SchedulerBuilder {
    strategy: Option<Arc<dyn SchedulerStrategy>>,
    tasks: Vec<ScheduledTask>,
    worker_id: Option<String>,
    clock: SharedClock,
    retention_schedule: Option<String>,
}

impl SchedulerBuilder {
    /// The strategy that coordinates this worker with the fleet.
    pub fn strategy(mut self, strategy: impl SchedulerStrategy) -> Self {
        self.strategy = Some(Arc::new(strategy));
        self
    }

    /// The strategy, already shared.
    pub fn shared_strategy(mut self, strategy: Arc<dyn SchedulerStrategy>) -> Self {
        self.strategy = Some(strategy);
        self
    }

    /// Adds a task this worker runs.
    pub fn task(mut self, task: ScheduledTask) -> Self {
        self.tasks.push(task);
        self
    }

    /// Adds many tasks.
    pub fn tasks(mut self, tasks: impl IntoIterator<Item = ScheduledTask>) -> Self {
        self.tasks.extend(tasks);
        self
    }

    /// This worker's id in reports and history (default `HOST:PID:RANDOM`).
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// This worker's own clock (default the system clock). The timers run on the store's clock as soon
    /// as the strategy has read it ([`SchedulerStrategy::store_time`]), so this one only matters before
    /// that, and to measure the worker's skew (warned about when over a second). Due-ness is always
    /// judged by the store's clock.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// When the fleet prunes run history (default every ten minutes); `None` disables pruning.
    pub fn retention_schedule(mut self, pattern: Option<&str>) -> Self {
        self.retention_schedule = pattern.map(str::to_owned);
        self
    }

    /// Validates the configuration: a strategy is set and task ids are unique.
    pub fn build(self) -> Result<Scheduler, ConfigError> {
        let strategy = self.strategy.ok_or(ConfigError::MissingStrategy)?;
        let mut seen = HashSet::new();
        for task in &self.tasks {
            // Reserved whether or not this worker prunes: other workers of the fleet may.
            if task.id() == RETENTION_TASK_ID {
                return Err(ConfigError::ReservedTaskId(RETENTION_TASK_ID.to_owned()));
            }
            if !seen.insert(task.id().to_owned()) {
                return Err(ConfigError::DuplicateTaskId(task.id().to_owned()));
            }
        }
        let mut tasks = self.tasks;
        if let Some(pattern) = self.retention_schedule {
            tasks.push(retention_task(&pattern, Arc::downgrade(&strategy))?);
        }
        let worker_id = self.worker_id.unwrap_or_else(default_worker_id);
        crate::task::validate_task_id(&worker_id).map_err(|_| {
            ConfigError::Invalid(format!(
                "invalid worker id {worker_id:?}: use A-Z a-z 0-9 . _ : -, at most 128 characters"
            ))
        })?;
        let (ready, _) = watch::channel(false);
        Ok(Scheduler {
            inner: Arc::new(Inner {
                strategy,
                tasks: tasks.into_iter().map(Arc::new).collect(),
                worker_id,
                clock: self.clock,
                ready,
            }),
        })
    }
}

fn retention_task(pattern: &str, strategy: Weak<dyn SchedulerStrategy>) -> Result<ScheduledTask, ConfigError> {
    ScheduledTask::builder(RETENTION_TASK_ID)
        .description("Prunes run history beyond the retention policy")
        .schedule(pattern)
        .overlap(Overlap::Skip)
        .catch_up(CatchUp::Latest {
            within: Duration::from_secs(24 * 3600),
        })
        .timeout(Duration::from_secs(600))
        .handler(move |_| {
            let strategy = strategy.upgrade();
            async move {
                let strategy = strategy.ok_or("the scheduler is gone")?;
                let deleted = strategy.prune_history().await.map_err(crate::task::TaskError::new)?;
                Ok(serde_json::json!({ "deleted": deleted }))
            }
        })
        .build()
}

fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|host| {
            host.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                .collect::<String>()
        })
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let host: String = host.chars().take(64).collect();
    format!("{host}:{}:{}", std::process::id(), &suffix[suffix.len() - 6..])
}

struct Inner {
    strategy: Arc<dyn SchedulerStrategy>,
    tasks: Vec<Arc<ScheduledTask>>,
    worker_id: String,
    clock: SharedClock,
    ready: watch::Sender<bool>,
}

/// A worker: registers its tasks with the strategy and fires each slot at its instant.
/// Cheap to clone; clones share the worker.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("worker_id", &self.inner.worker_id)
            .field("tasks", &self.inner.tasks.len())
            .finish()
    }
}

impl Scheduler {
    /// Starts building a scheduler: a strategy (the store), the tasks this worker runs and, optionally,
    /// its worker id. [`Scheduler::run_until`] then registers the tasks and fires their slots.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use fleetcron_core::{MemoryStore, MemoryStrategy, ScheduledTask, Scheduler};
    /// use std::sync::Arc;
    ///
    /// let scheduler = Scheduler::builder()
    ///     .strategy(MemoryStrategy::new(Arc::new(MemoryStore::new())))
    ///     .worker_id("web-1")
    ///     .task(
    ///         ScheduledTask::builder("cache.warm")
    ///             .schedule("*/5 * * * *")
    ///             .handler(|_ctx| async { Ok(serde_json::Value::Null) })
    ///             .build()?,
    ///     )
    ///     .build()?;
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// let worker = tokio::spawn({
    ///     let scheduler = scheduler.clone();
    ///     async move { scheduler.run_until(stopped).await }
    /// });
    /// scheduler.ready().await; // every task registered, timers armed
    /// let report = scheduler.task("cache.warm").await?.expect("registered");
    /// assert_eq!(report.schedule, "*/5 * * * *");
    /// let _ = stop.send(()); // graceful shutdown
    /// worker.await??;
    /// # Ok(()) }
    /// ```
    pub fn builder() -> SchedulerBuilder {
        SchedulerBuilder {
            strategy: None,
            tasks: Vec::new(),
            worker_id: None,
            clock: system_clock(),
            retention_schedule: Some("*/10 * * * *".to_owned()),
        }
    }

    /// This worker's id.
    pub fn worker_id(&self) -> &str {
        &self.inner.worker_id
    }

    /// The strategy.
    pub fn strategy(&self) -> &Arc<dyn SchedulerStrategy> {
        &self.inner.strategy
    }

    /// Waits until [`Scheduler::run_until`] has registered every task and armed its timers.
    pub async fn ready(&self) {
        let mut ready = self.inner.ready.subscribe();
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// Runs the worker until `shutdown` completes, then shuts down gracefully: stops claiming, lets
    /// running handlers finish within the strategy's grace period, cancels the rest.
    pub async fn run_until(&self, shutdown: impl Future<Output = impl Sized>) -> Result<(), SchedulerError> {
        let inner = &self.inner;
        inner.strategy.init(&inner.worker_id).await?;
        let outcome = self.run_timers(shutdown).await;
        let destroyed = inner.strategy.destroy().await;
        inner.ready.send_replace(false);
        outcome.and(destroyed)
    }

    /// The time the timers run on: the store's clock as the strategy last read it, extrapolated along
    /// this process's monotonic clock; the worker's own clock until the strategy has a reading.
    fn now(&self) -> Timestamp {
        match self.inner.strategy.store_time() {
            Some(reading) => reading.now(),
            None => self.inner.clock.now(),
        }
    }

    async fn run_timers(&self, shutdown: impl Future<Output = impl Sized>) -> Result<(), SchedulerError> {
        let inner = &self.inner;
        let registrations = inner
            .strategy
            .register_tasks(inner.tasks.iter().map(|task| (**task).clone()).collect())
            .await?;
        let now = self.now();
        let mut timers: BinaryHeap<Reverse<(Timestamp, usize)>> = BinaryHeap::with_capacity(inner.tasks.len());
        for (index, (task, registration)) in inner.tasks.iter().zip(registrations).enumerate() {
            let schedule = task.schedule();
            // Slots that came due while no worker ran are claimed at once, so the catch-up policy applies.
            let overdue = registration
                .accounted_until
                .and_then(|accounted| schedule.next_after(accounted))
                .filter(|next| *next <= now)
                .and_then(|_| schedule.latest_at_or_before(now));
            if let Some(slot) = overdue.or_else(|| schedule.next_after(now)) {
                timers.push(Reverse((slot, index)));
            }
        }
        inner.ready.send_replace(true);
        tracing::info!(worker = %inner.worker_id, tasks = inner.tasks.len(), "scheduler running");
        let mut firings: JoinSet<(Timestamp, usize)> = JoinSet::new();
        let mut in_flight = InFlight::default();
        let mut watch = Watch::default();
        let failed = inner.strategy.failed();
        tokio::pin!(failed);
        tokio::pin!(shutdown);
        let outcome = loop {
            watch.skew(self.now(), inner.clock.now());
            // At the limit, no timer is popped until an instant's claims come back: the slots that come
            // due meanwhile are accounted (missed, or run by the catch-up policy) by the next claim of
            // their task, so memory stays bounded and nothing is lost.
            let saturated = in_flight.instants() >= MAX_INSTANTS_IN_FLIGHT;
            watch.load(&in_flight, saturated, self.now());
            let wait = match timers.peek() {
                Some(Reverse((slot, _))) if !saturated => (*slot - self.now()).to_std().unwrap_or_default(),
                _ => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = &mut shutdown => break Ok(()),
                error = &mut failed => break Err(error),
                () = tokio::time::sleep(wait) => {}
                Some(joined) = firings.join_next(), if !firings.is_empty() => {
                    match joined {
                        Ok((instant, count)) => in_flight.remove(instant, count),
                        Err(error) => {
                            let message = format!("a firing task failed: {error}");
                            tracing::error!(error = %message, "stopping this worker");
                            break Err(SchedulerError::EngineFailed(message));
                        }
                    }
                    continue;
                }
            }
            if in_flight.instants() >= MAX_INSTANTS_IN_FLIGHT {
                continue;
            }
            // Claims a hair early are answered "not due" by the store and retried at the exact instant.
            let now = self.now() + chrono::Duration::milliseconds(1);
            // Everything due now goes to the strategy in one call, so its claims share one store round trip.
            let mut due: Vec<(Arc<ScheduledTask>, Firing)> = Vec::new();
            let mut instant = None;
            while let Some(Reverse((slot, index))) = timers.peek().copied() {
                if slot > now {
                    break;
                }
                timers.pop();
                let Some(task) = inner.tasks.get(index).cloned() else {
                    continue;
                };
                let schedule = task.schedule();
                let mut next = schedule.next_after(slot);
                // A worker that was paused jumps to the latest due slot; the claim accounts for the gap.
                if next.is_some_and(|next| next < now - chrono::Duration::seconds(1)) {
                    next = schedule
                        .latest_at_or_before(now)
                        .filter(|latest| *latest > slot)
                        .or(next);
                }
                if let Some(next) = next {
                    timers.push(Reverse((next, index)));
                }
                instant = Some(instant.map_or(slot, |earliest: Timestamp| earliest.min(slot)));
                due.push((task, Firing::Scheduled { slot }));
            }
            if due.len() > 1 {
                // Workers start a big instant at different places, so with several claim batches in
                // flight they claim different tasks at once instead of queueing on the same locks (the
                // rest of each one's turn finds those tasks claimed and skips them cheaply).
                let offset = rotation(&inner.worker_id, due.len());
                due.rotate_left(offset);
            }
            if let Some(instant) = instant {
                let count = due.len();
                in_flight.add(instant, count);
                let strategy = inner.strategy.clone();
                firings.spawn(async move {
                    let outcomes = strategy.execute_many(due.clone()).await;
                    for ((task, firing), outcome) in due.iter().zip(outcomes) {
                        match outcome {
                            Ok(ExecuteOutcome::Started { run_id, fence }) => {
                                tracing::debug!(task = task.id(), ?firing, %run_id, fence, "slot claimed")
                            }
                            Ok(outcome) => tracing::debug!(task = task.id(), ?firing, ?outcome, "slot not run here"),
                            Err(SchedulerError::NotRunning) => {}
                            Err(error) => tracing::error!(task = task.id(), ?firing, %error, "slot claim failed"),
                        }
                    }
                    (instant, count)
                });
            }
        };
        inner.ready.send_replace(false);
        // A claim already sent is decided by the strategy whether or not anyone waits for the answer; a
        // run it starts is stopped by the strategy's graceful shutdown.
        firings.shutdown().await;
        outcome
    }

    /// Reports on every task in the store.
    pub async fn tasks(&self) -> Result<Vec<TaskReport>, SchedulerError> {
        self.inner.strategy.get_tasks().await
    }

    /// Report on one task.
    pub async fn task(&self, id: &str) -> Result<Option<TaskReport>, SchedulerError> {
        self.inner.strategy.get_task(id).await
    }

    /// Triggers a task manually (durable; runs after the running run, if any; coalesces).
    pub async fn trigger(&self, id: &str) -> Result<TriggerReceipt, SchedulerError> {
        self.inner.strategy.trigger_task(id).await
    }

    /// Enables or disables a task fleet-wide.
    pub async fn update(&self, input: UpdateScheduledTaskInput) -> Result<TaskReport, SchedulerError> {
        self.inner.strategy.update_task(input).await
    }

    /// A task's history, newest first.
    pub async fn runs(&self, id: &str, query: RunQuery) -> Result<Vec<RunRecord>, SchedulerError> {
        self.inner.strategy.runs(id, query).await
    }
}

/// Most instants whose claims may be waiting for the strategy at once. Beyond it the timers pause
/// (see `run_timers`), which bounds the memory a worker holds when its store is slower than its load.
const MAX_INSTANTS_IN_FLIGHT: usize = 16;

/// How late the oldest waiting instant may be before the worker warns that it is falling behind.
const FALLING_BEHIND_AFTER: chrono::Duration = chrono::Duration::seconds(2);

/// How often a warning of the same kind is repeated at most.
const WARNING_INTERVAL: Duration = Duration::from_secs(30);

/// The instants whose claims are with the strategy, with how many firings each.
#[derive(Default)]
struct InFlight {
    instants: std::collections::BTreeMap<Timestamp, (usize, usize)>,
    firings: usize,
}

impl InFlight {
    fn add(&mut self, instant: Timestamp, firings: usize) {
        let entry = self.instants.entry(instant).or_insert((0, 0));
        entry.0 += 1;
        entry.1 += firings;
        self.firings += firings;
    }

    fn remove(&mut self, instant: Timestamp, firings: usize) {
        if let Some(entry) = self.instants.get_mut(&instant) {
            entry.0 = entry.0.saturating_sub(1);
            entry.1 = entry.1.saturating_sub(firings);
            self.firings = self.firings.saturating_sub(firings);
            if entry.0 == 0 {
                self.instants.remove(&instant);
            }
        }
    }

    fn instants(&self) -> usize {
        self.instants.values().map(|(count, _)| count).sum()
    }

    fn oldest(&self) -> Option<Timestamp> {
        self.instants.keys().next().copied()
    }
}

/// Rate-limited warnings about this worker's health: clock skew against the store, and claims
/// falling behind.
#[derive(Default)]
struct Watch {
    checked_skew: Option<std::time::Instant>,
    warned_skew: Option<(std::time::Instant, i64)>,
    warned_load: Option<std::time::Instant>,
}

impl Watch {
    /// Warns (at most every ten minutes, or when it changes by another second) when this worker's
    /// clock is more than a second away from the store's; the timers follow the store's anyway.
    fn skew(&mut self, store_now: Timestamp, worker_now: Timestamp) {
        let now = std::time::Instant::now();
        if self
            .checked_skew
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
        {
            return;
        }
        self.checked_skew = Some(now);
        let offset_ms = (store_now - worker_now).num_milliseconds();
        crate::metrics::store_clock_offset(offset_ms);
        if offset_ms.abs() <= 1000 {
            return;
        }
        let repeat = match self.warned_skew {
            None => true,
            Some((at, warned)) => {
                now.duration_since(at) >= Duration::from_secs(600) || (offset_ms - warned).abs() > 1000
            }
        };
        if repeat {
            self.warned_skew = Some((now, offset_ms));
            tracing::warn!(
                offset_ms,
                "this worker's clock is {} ms {} the store's; its timers follow the store's clock, fix the \
                 worker's time synchronisation (NTP)",
                offset_ms.abs(),
                if offset_ms > 0 { "behind" } else { "ahead of" }
            );
        }
    }

    /// Warns (at most every [`WARNING_INTERVAL`]) when claims fall behind.
    fn load(&mut self, in_flight: &InFlight, saturated: bool, now: Timestamp) {
        let lag = in_flight.oldest().map(|oldest| now - oldest);
        let behind = lag.is_some_and(|lag| lag > FALLING_BEHIND_AFTER);
        if !(saturated || behind) {
            return;
        }
        let instant = std::time::Instant::now();
        if self
            .warned_load
            .is_some_and(|at| instant.duration_since(at) < WARNING_INTERVAL)
        {
            return;
        }
        self.warned_load = Some(instant);
        tracing::warn!(
            instants = in_flight.instants(),
            firings = in_flight.firings,
            oldest_lag_ms = lag.map_or(0, |lag| lag.num_milliseconds()),
            limit = MAX_INSTANTS_IN_FLIGHT,
            "claims are falling behind: the store answers slower than slots come due; {}",
            if saturated {
                "timers are paused until claims come back, and the slots due meanwhile are accounted as missed \
                 (or caught up) by the next claim of their task"
            } else {
                "slots start late"
            }
        );
    }
}

/// Where this worker starts in a list of `len` due firings: a hash of its id (FNV-1a), so different
/// workers start at different places and the same worker always at the same one.
fn rotation(worker_id: &str, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in worker_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % len as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::rotation;

    #[test]
    fn workers_start_an_instant_at_different_places() {
        assert_eq!(rotation("w1", 0), 0);
        assert_eq!(rotation("w1", 1), 0);
        let starts: std::collections::HashSet<usize> = (0..8).map(|n| rotation(&format!("host:{n}"), 1000)).collect();
        assert!(starts.len() >= 6, "{starts:?}");
        assert!(starts.iter().all(|start| *start < 1000));
        assert_eq!(rotation("w1", 1000), rotation("w1", 1000));
    }
}

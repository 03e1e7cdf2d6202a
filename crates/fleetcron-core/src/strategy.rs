//! The seed's `SchedulerStrategy`, in Rust.
//!
//! A strategy decides, for each firing the [`Scheduler`](crate::Scheduler)'s timers hand it, whether this
//! worker runs it, and keeps the reports operators read. The built-in strategies are all
//! [`EngineStrategy`](crate::EngineStrategy) over a [`Store`](crate::Store); implement this trait directly
//! only for a coordination service the stores do not cover, and validate it with `fleetcron-conformance`.
//!
//! # Contract
//! * **Exactly one claim per slot.** For a given `(task id, slot)`, across every worker of every process
//!   that shares the strategy's store, at most one `execute_task` call may return
//!   [`ExecuteOutcome::Started`] (a retry after abandonment under `OnAbandon::Retry` is a new attempt of
//!   the same slot, not a second claim of it). Timing must not be what enforces this.
//! * **Accounting.** Every slot from a task's first registration to now ends in the history exactly once
//!   as started, skipped (with reason) or missed.
//! * **Store clock.** Whether a slot is due and whether a lease expired is judged by the store's clock:
//!   `execute_task` for a slot in the future (by that clock) waits or returns `NotDue`, never starts it.
//! * **Durability.** A trigger acknowledged by `trigger_task` and an update acknowledged by `update_task`
//!   survive any worker's crash.
//! * **Errors.** `UnknownTask` for an id the store does not know; `TaskDisabled` for a trigger of a
//!   disabled task; `Store(Unavailable)` when the store could not be reached after retries: nothing was
//!   acknowledged, so the caller may retry.

use crate::error::SchedulerError;
use crate::model::{RunQuery, RunRecord, TaskReport, Timestamp, TriggerReceipt, UpdateScheduledTaskInput};
use crate::task::{Firing, ScheduledTask};
use async_trait::async_trait;
use std::sync::Arc;

/// What `execute_task` did with a firing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExecuteOutcome {
    /// This worker claimed the firing and started the handler.
    Started {
        /// The run id (the history row's).
        run_id: String,
        /// The fence of the claim (the history row's).
        fence: u64,
    },
    /// The slot was already accounted for (another worker claimed, skipped or missed it).
    AlreadyAccounted,
    /// The slot was recorded as skipped (`overlap` or `disabled`).
    Skipped {
        /// `overlap` or `disabled`.
        reason: String,
    },
    /// The slot was accepted and will run after the running run ends (`Overlap::BufferOne`).
    Buffered,
    /// The slot was late and the catch-up policy recorded it as missed.
    Missed,
    /// A manual firing found nothing pending to run, or could not start it yet.
    NothingToRun,
}

/// Where a task's timers resume after registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Registration {
    /// Every slot at or before this instant is already accounted for; `None` if the strategy does not say.
    pub accounted_until: Option<Timestamp>,
}

/// The scheduling strategy (see the module documentation for the contract).
#[async_trait]
pub trait SchedulerStrategy: Send + Sync + 'static {
    /// Prepares the strategy for `worker_id`: runs migrations, starts background work. Called once,
    /// before any task is registered.
    async fn init(&self, worker_id: &str) -> Result<(), SchedulerError>;

    /// Resolves when the strategy can no longer do its work (one of its background loops died): the
    /// [`Scheduler`](crate::Scheduler) then stops and `run_until` returns this error, so a broken worker
    /// stops loudly instead of staying up and idle. The default never resolves.
    async fn failed(&self) -> SchedulerError {
        std::future::pending().await
    }

    /// The best recent reading of the store's clock, if the strategy has one: the
    /// [`Scheduler`](crate::Scheduler) runs its timers on it, so a worker whose clock is off still starts
    /// slots on time. `None` (the default) leaves the timers on the worker's clock.
    fn store_time(&self) -> Option<crate::clock::StoreTime> {
        None
    }

    /// Stops claiming, lets running handlers finish within the grace period, cancels the rest and
    /// releases their leases.
    async fn destroy(&self) -> Result<(), SchedulerError>;

    /// Registers a task this worker can run (the seed's optional `registerTask`, required here: the
    /// strategy runs pending triggers and retries with the handler).
    async fn register_task(&self, task: ScheduledTask) -> Result<Registration, SchedulerError>;

    /// Registers many tasks; strategies batch this where they can.
    async fn register_tasks(&self, tasks: Vec<ScheduledTask>) -> Result<Vec<Registration>, SchedulerError> {
        let mut registrations = Vec::with_capacity(tasks.len());
        for task in tasks {
            registrations.push(self.register_task(task).await?);
        }
        Ok(registrations)
    }

    /// Claims the firing for this worker and, if the claim wins, starts the handler. Returns once the
    /// claim is decided; the handler runs in the background. [`ExecuteOutcome::Started`] carries the run
    /// id and fence of the run started, as its history row and the handler's `TaskContext` have them —
    /// for a manual firing too (the trigger's run, or the pending work that started ahead of it).
    async fn execute_task(&self, task: &ScheduledTask, firing: Firing) -> Result<ExecuteOutcome, SchedulerError>;

    /// Executes the firings that fell due at the same instant. The default polls every `execute_task`
    /// together, so the built-in strategies claim all of them in one store round trip; results come back
    /// in the order of `firings`.
    async fn execute_many(
        &self,
        firings: Vec<(Arc<ScheduledTask>, Firing)>,
    ) -> Vec<Result<ExecuteOutcome, SchedulerError>> {
        futures::future::join_all(
            firings
                .iter()
                .map(|(task, firing)| self.execute_task(task, firing.clone())),
        )
        .await
    }

    /// Reports on every task in the store.
    async fn get_tasks(&self) -> Result<Vec<TaskReport>, SchedulerError>;

    /// Report on one task, `None` when the store does not know it.
    async fn get_task(&self, id: &str) -> Result<Option<TaskReport>, SchedulerError>;

    /// Records a durable manual trigger, to run as soon as a worker can (after the running run, if any).
    async fn trigger_task(&self, id: &str) -> Result<TriggerReceipt, SchedulerError>;

    /// Enables or disables a task fleet-wide.
    async fn update_task(&self, input: UpdateScheduledTaskInput) -> Result<TaskReport, SchedulerError>;

    /// Enables or disables a task fleet-wide like [`Self::update_task`], and records the operator's
    /// `note` on the change in the task's report ([`TaskReport::note`]); an update without a note
    /// clears the previous one when it enables or disables. The default, for strategies that keep no
    /// notes, ignores the note.
    async fn update_task_noted(
        &self,
        input: UpdateScheduledTaskInput,
        note: Option<String>,
    ) -> Result<TaskReport, SchedulerError> {
        let _ = note;
        self.update_task(input).await
    }

    /// A task's run history, newest first.
    async fn runs(&self, id: &str, query: RunQuery) -> Result<Vec<RunRecord>, SchedulerError>;

    /// Deletes history beyond the retention policy; the scheduler runs it as a fleet task, so exactly one
    /// worker prunes per slot. Returns the rows deleted (0 for strategies that keep no history).
    async fn prune_history(&self) -> Result<u64, SchedulerError> {
        Ok(0)
    }
}

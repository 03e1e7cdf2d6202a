//! Records shared by the engine, the stores and the admin surfaces: the per-task state document, the
//! run history, reports and admin inputs.

use crate::task::TaskDefinition;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// A UTC instant.
pub type Timestamp = DateTime<Utc>;

/// Why a run exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// A slot that came due.
    Scheduled,
    /// An operator's trigger.
    Manual,
    /// A missed slot run later under the catch-up policy.
    CatchUp,
    /// A new attempt after the previous one was abandoned.
    Retry,
}

/// A run's state in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Accepted and waiting for the running run to end: a manual trigger, a buffered or catch-up slot,
    /// or a retry. The row becomes `running` (same run id) when it starts.
    Pending,
    /// Claimed and running under a lease.
    Running,
    /// The handler returned `Ok`.
    Succeeded,
    /// The handler returned `Err` or panicked.
    Failed,
    /// The handler exceeded its timeout and was cancelled.
    TimedOut,
    /// The worker vanished: its lease expired before the run ended.
    Abandoned,
    /// Stopped on purpose: superseded by a newer run, or scheduler shutdown.
    Cancelled,
    /// The slot was not run on purpose (`reason`: `overlap` or `disabled`).
    Skipped,
    /// No worker claimed the slot in time, and the catch-up policy did not run it.
    Missed,
}

impl RunStatus {
    /// The snake_case name used in stores and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Abandoned => "abandoned",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Skipped => "skipped",
            RunStatus::Missed => "missed",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "pending" => RunStatus::Pending,
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "timed_out" => RunStatus::TimedOut,
            "abandoned" => RunStatus::Abandoned,
            "cancelled" => RunStatus::Cancelled,
            "skipped" => RunStatus::Skipped,
            "missed" => RunStatus::Missed,
            _ => return None,
        })
    }

    /// Whether the handler actually started for this record.
    pub fn started(self) -> bool {
        matches!(
            self,
            RunStatus::Running
                | RunStatus::Succeeded
                | RunStatus::Failed
                | RunStatus::TimedOut
                | RunStatus::Abandoned
                | RunStatus::Cancelled
        )
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RunKind {
    /// The snake_case name used in stores and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Scheduled => "scheduled",
            RunKind::Manual => "manual",
            RunKind::CatchUp => "catch_up",
            RunKind::Retry => "retry",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "scheduled" => RunKind::Scheduled,
            "manual" => RunKind::Manual,
            "catch_up" => RunKind::CatchUp,
            "retry" => RunKind::Retry,
            _ => return None,
        })
    }
}

/// One row of the run history. Slots that were skipped or missed have a row too, so every slot is
/// accounted for exactly once: the store keeps `(task_id, slot, attempt)` unique.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Unique id of the run (a UUIDv7, so ids sort by creation time).
    pub run_id: String,
    /// The task.
    pub task_id: String,
    /// Why the run exists.
    pub kind: RunKind,
    /// The slot, or `None` for a manual trigger. For a row that accounts for a range of slots, the
    /// first slot of the range.
    pub slot: Option<Timestamp>,
    /// For a row that accounts for a range of skipped or missed slots (a long disable, a long outage):
    /// the last slot of the range. Every slot of the task's schedule from `slot` to `slot_until`
    /// (inclusive) is accounted for by this one row, so no transaction writes a row per slot of an
    /// unbounded gap. `None` for a row of one slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_until: Option<Timestamp>,
    /// For a range row, how many slots it accounts for; `None` for a row of one slot (or none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_count: Option<u64>,
    /// 1 for a first attempt; more for retries of an abandoned run.
    pub attempt: u32,
    /// The task's fence at the claim.
    pub fence: u64,
    /// The worker that claimed (or recorded) it.
    pub worker: Option<String>,
    /// The manual trigger this run serves, if any.
    pub trigger_id: Option<String>,
    /// When the claim committed (store clock).
    pub claimed_at: Option<Timestamp>,
    /// When the handler started (store clock).
    pub started_at: Option<Timestamp>,
    /// When the run ended (store clock).
    pub finished_at: Option<Timestamp>,
    /// The run's state.
    pub status: RunStatus,
    /// Why a slot was skipped or missed, or why a run was cancelled.
    pub reason: Option<String>,
    /// The handler's result.
    pub result: Option<Value>,
    /// The handler's error, or the engine's explanation.
    pub error: Option<String>,
}

impl RunRecord {
    /// How many slots this row accounts for: the range's count, 1 for a slot's row, 0 for a manual run.
    pub fn slots_accounted(&self) -> u64 {
        match (self.slot, self.slot_count) {
            (_, Some(count)) => count,
            (Some(_), None) => 1,
            (None, None) => 0,
        }
    }

    /// Whether this row accounts for the slot `slot` of its task's schedule: it is the row's slot, or
    /// lies within the row's range.
    pub fn covers(&self, slot: Timestamp) -> bool {
        match (self.slot, self.slot_until) {
            (Some(first), Some(last)) => first <= slot && slot <= last,
            (Some(only), None) => only == slot,
            (None, _) => false,
        }
    }
}

/// A change to an existing history row: a pending row starting, or a run ending. It is written in the
/// same atomic mutation as the task state that justifies it (so a completion lands only if the run still
/// held its lease with its fence). Every mutable column is set; identity columns (task, kind, slot,
/// attempt, trigger) never change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunUpdate {
    /// The run.
    pub run_id: String,
    /// Its new status.
    pub status: RunStatus,
    /// The fence of its claim.
    pub fence: u64,
    /// The worker running it.
    pub worker: Option<String>,
    /// When it was claimed (store clock).
    pub claimed_at: Option<Timestamp>,
    /// When it started (store clock).
    pub started_at: Option<Timestamp>,
    /// When it ended (store clock).
    pub finished_at: Option<Timestamp>,
    /// Why, when the engine ended or skipped it.
    pub reason: Option<String>,
    /// The handler's result.
    pub result: Option<Value>,
    /// The error text.
    pub error: Option<String>,
}

/// A run holding a lease on its task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunLease {
    /// The run.
    pub run_id: String,
    /// The fence of its claim.
    pub fence: u64,
    /// The worker running it.
    pub worker: String,
    /// Why it runs.
    pub kind: RunKind,
    /// Its slot.
    pub slot: Option<Timestamp>,
    /// Its attempt number.
    pub attempt: u32,
    /// The trigger it serves.
    pub trigger_id: Option<String>,
    /// When it started (store clock).
    pub started_at: Timestamp,
    /// When the lease expires unless renewed (store clock).
    pub lease_until: Timestamp,
}

/// Work accepted but not started yet: a manual trigger, a buffered slot, a catch-up slot or a retry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingRun {
    /// The run id it will have; its history row (status `pending`) exists already.
    pub run_id: String,
    /// Why it will run.
    pub kind: RunKind,
    /// Its slot (none for a manual trigger).
    pub slot: Option<Timestamp>,
    /// Its attempt number.
    pub attempt: u32,
    /// The trigger id for manual runs (and their retries).
    pub trigger_id: Option<String>,
    /// When it was accepted (store clock).
    pub requested_at: Timestamp,
}

/// Summary of the last finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastRun {
    /// The run.
    pub run_id: String,
    /// Its final status.
    pub status: RunStatus,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// Its result.
    pub result: Option<Value>,
    /// Its error.
    pub error: Option<String>,
}

impl LastRun {
    /// The run's result as a report shows it ([`TaskReport::last_result`]): its value, or
    /// `{"error": message}` when it ended with an error and no value.
    pub fn reported_result(&self) -> Option<Value> {
        match (&self.result, &self.error) {
            (Some(result), _) => Some(result.clone()),
            (None, Some(error)) => Some(serde_json::json!({ "error": error })),
            (None, None) => None,
        }
    }
}

/// A worker registered a definition that differs from the stored one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionConflict {
    /// The worker with the other definition.
    pub worker: String,
    /// Its definition.
    pub definition: TaskDefinition,
    /// When it registered (store clock).
    pub seen_at: Timestamp,
}

/// The name of [`TaskState::high_water`] in the stored document. Stores that read the mark inside the
/// database (to skip tasks already claimed) name the field with this constant, or a test of theirs ties
/// their SQL to it; `a_state_document_names_its_mark_as_the_stores_read_it` keeps it true.
pub const HIGH_WATER_FIELD: &str = "high_water";

/// Everything the fleet shares about one task: one document, changed only atomically by the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskState {
    /// The stored definition (the newest registration's).
    pub definition: TaskDefinition,
    /// The worker that registered the stored definition.
    #[serde(default)]
    pub registered_by: Option<String>,
    /// A differing definition seen recently from another worker, if any.
    pub conflict: Option<DefinitionConflict>,
    /// Whether slots run.
    pub enabled: bool,
    /// When the task was first registered (store clock): slots count from here.
    pub registered_at: Timestamp,
    /// Every slot at or before this instant has been accounted for (claimed, skipped or missed).
    pub high_water: Timestamp,
    /// Grows with every claim.
    pub fence: u64,
    /// Runs holding a lease.
    pub running: Vec<RunLease>,
    /// Accepted work waiting for the running run to end.
    pub pending: Vec<PendingRun>,
    /// When a run of this task last started.
    pub last_started_at: Option<Timestamp>,
    /// The last finished run.
    pub last_run: Option<LastRun>,
    /// The operator's note on the last enable/disable (absent in documents written before notes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<TaskNote>,
    /// The greatest run (or trigger) id minted for this task: the next decision mints greater ones, so
    /// the history's order (newest first, by run id) is the order of creation even within one
    /// millisecond. Absent in documents written before it; the ids in `running`, `pending` and
    /// `last_run` then stand in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_id: Option<String>,
}

/// Most bytes of an operator's note ([`TaskNote::text`]); a longer one is cut.
pub const MAX_NOTE_BYTES: usize = 500;

/// An operator's note on why a task was enabled or disabled, shown in its report. An enable or disable
/// without a note clears the previous one (it explained an earlier change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskNote {
    /// The note (at most [`MAX_NOTE_BYTES`]).
    pub text: String,
    /// Whether the task was enabled when the note was written.
    pub enabled: bool,
    /// When it was written (store clock).
    pub at: Timestamp,
}

impl TaskState {
    /// A new task's state at registration.
    pub fn new(definition: TaskDefinition, now: Timestamp) -> Self {
        Self {
            definition,
            registered_by: None,
            conflict: None,
            enabled: true,
            registered_at: now,
            high_water: now,
            fence: 0,
            running: Vec::new(),
            pending: Vec::new(),
            last_started_at: None,
            last_run: None,
            note: None,
            last_id: None,
        }
    }

    /// When some worker must look at this task without being woken by a timer: when a lease expires, or
    /// at once when pending work can start. `None` when nothing is waiting.
    pub fn attention_at(&self) -> Option<Timestamp> {
        let lease_expiry = self.running.iter().map(|run| run.lease_until).min();
        if self.running.is_empty() {
            self.pending.iter().map(|pending| pending.requested_at).min()
        } else {
            lease_expiry
        }
    }

    /// The pending manual trigger, if any.
    pub fn pending_trigger(&self) -> Option<&PendingRun> {
        self.pending.iter().find(|p| p.kind == RunKind::Manual)
    }
}

/// A worker running a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningOn {
    /// The worker id.
    pub worker: String,
    /// The run id.
    pub run_id: String,
    /// When the run started.
    pub since: Timestamp,
}

/// The state of a task as operators see it: the seed's `TaskReport` and more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    /// The task id.
    pub id: String,
    /// Description.
    pub description: String,
    /// Cron pattern.
    pub schedule: String,
    /// IANA time zone.
    pub timezone: String,
    /// When the last finished run ended (store clock), whatever its outcome: Vendure's `lastExecutedAt`,
    /// which its `DefaultSchedulerStrategy` sets when a run completes. `None` until a run has ended.
    /// (Vendure leaves it unchanged when a run fails; here it always describes the same run as
    /// `last_result`, `last_status` and `last_duration_ms`.)
    pub last_executed_at: Option<Timestamp>,
    /// When a run of this task last started (store clock), including one still running.
    #[serde(default)]
    pub last_started_at: Option<Timestamp>,
    /// Whether a run holds a lease now (a disabled task may still be finishing a run).
    pub is_running: bool,
    /// The last finished run's result, as Vendure's `lastResult`: the handler's value when it succeeded;
    /// when it ended with an error (failed, timed out, cancelled, abandoned) and no value,
    /// `{"error": "<message>"}`, the shape Vendure's `DefaultSchedulerStrategy` stores on failure (the
    /// message is also in `last_error`). `None` until a run has ended.
    pub last_result: Option<Value>,
    /// Whether slots run.
    pub enabled: bool,
    /// The next slot that will run (none while disabled).
    pub next_run_at: Option<Timestamp>,
    /// The last finished run's status.
    pub last_status: Option<RunStatus>,
    /// The last finished run's error.
    pub last_error: Option<String>,
    /// The last finished run's duration in milliseconds.
    pub last_duration_ms: Option<i64>,
    /// Who runs it now.
    pub running_on: Vec<RunningOn>,
    /// When the pending manual trigger was accepted, if one waits.
    pub pending_trigger: Option<Timestamp>,
    /// Differing definition registered by another worker.
    pub definition_conflict: Option<DefinitionConflict>,
    /// The operator's note on the last enable/disable, if one was given.
    #[serde(default)]
    pub note: Option<TaskNote>,
}

impl TaskReport {
    /// Builds the report of a stored state, computing the next slot after `now`.
    pub fn from_state(state: &TaskState, now: Timestamp) -> Self {
        let next_run_at = if state.enabled {
            crate::schedule::Schedule::parse_registered(&state.definition.schedule, &state.definition.timezone)
                .ok()
                .and_then(|schedule| schedule.next_after(now.max(state.high_water)))
        } else {
            None
        };
        let last = state.last_run.as_ref();
        Self {
            id: state.definition.id.clone(),
            description: state.definition.description.clone(),
            schedule: state.definition.schedule.clone(),
            timezone: state.definition.timezone.clone(),
            last_executed_at: last.map(|l| l.finished_at),
            last_started_at: state.last_started_at,
            is_running: !state.running.is_empty(),
            last_result: last.and_then(LastRun::reported_result),
            enabled: state.enabled,
            next_run_at,
            last_status: last.map(|l| l.status),
            last_error: last.and_then(|l| l.error.clone()),
            last_duration_ms: last.map(|l| (l.finished_at - l.started_at).num_milliseconds()),
            running_on: state
                .running
                .iter()
                .map(|run| RunningOn {
                    worker: run.worker.clone(),
                    run_id: run.run_id.clone(),
                    since: run.started_at,
                })
                .collect(),
            pending_trigger: state.pending_trigger().map(|p| p.requested_at),
            definition_conflict: state.conflict.clone(),
            note: state.note.clone(),
        }
    }
}

/// The seed's `UpdateScheduledTaskInput`: fields left `None` are unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateScheduledTaskInput {
    /// The task id.
    pub id: String,
    /// Enable or disable the task.
    pub enabled: Option<bool>,
}

/// A page request for the run history, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunQuery {
    /// Maximum rows.
    pub limit: u32,
    /// Only rows whose run id sorts before this one (for paging).
    pub before: Option<String>,
}

impl Default for RunQuery {
    fn default() -> Self {
        Self {
            limit: 100,
            before: None,
        }
    }
}

/// The answer to a manual trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerReceipt {
    /// The trigger's id; the run that serves it carries it.
    pub trigger_id: String,
    /// True when a pending trigger already existed and this one joined it.
    pub coalesced: bool,
}

/// How long history is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Keep at most this many rows per task (newest).
    pub keep_last: Option<u32>,
    /// Delete rows that ended longer ago than this.
    pub max_age: Option<std::time::Duration>,
}

/// What one pruning of the history deletes, decided by the engine ([`crate::decide::prune_plan`]) at the
/// store's time; a store executes it and decides nothing. Never a `running` or `pending` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunePlan {
    /// Delete finished rows that ended before this instant (the store's time minus the retention age).
    pub finished_before: Option<Timestamp>,
    /// Then keep, per task, only this many finished rows: the newest by run id, which is creation order by
    /// the store's clock (run ids are minted from it).
    pub keep_last: Option<u32>,
}

impl PrunePlan {
    /// Whether the plan deletes nothing.
    pub fn is_empty(&self) -> bool {
        self.finished_before.is_none() && self.keep_last.is_none()
    }
}

impl Retention {
    /// Checks the policy against [`crate::limits`]: `keep_last` at least 1, `max_age` from 1 s to 100 years.
    pub fn validate(&self) -> Result<(), crate::error::ConfigError> {
        if let Some(keep) = self.keep_last {
            crate::limits::check_count("engine.retention.keep_last", u64::from(keep), 1, u64::from(u32::MAX))?;
        }
        if let Some(age) = self.max_age {
            crate::limits::check_duration(
                "engine.retention.max_age",
                age,
                std::time::Duration::from_secs(1),
                crate::limits::MAX_RETENTION_AGE,
            )?;
        }
        Ok(())
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep_last: Some(1000),
            max_age: Some(std::time::Duration::from_secs(30 * 24 * 3600)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_document_names_its_mark_as_the_stores_read_it() {
        let definition = TaskDefinition {
            id: "t".to_owned(),
            schedule: "* * * * *".to_owned(),
            timezone: "UTC".to_owned(),
            description: String::new(),
        };
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let document = serde_json::to_value(TaskState::new(definition, now)).unwrap_or_default();
        assert_eq!(
            document.get(HIGH_WATER_FIELD).and_then(|mark| mark.as_str()),
            Some("2027-01-15T08:00:00Z"),
            "{document}"
        );
    }
}

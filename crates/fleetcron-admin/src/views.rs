//! The API's JSON shapes. They mirror the core's records field by field (so the API is a contract of its
//! own, described in the OpenAPI document) and add what operators read: the schedule in words and the
//! next runs.

use chrono::{DateTime, Utc};
use fleetcron_core::{RunRecord, Schedule, TaskReport, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How many upcoming slots a task view lists.
pub const NEXT_RUNS: usize = 5;

/// An error answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong and what to do, one line.
    pub error: String,
    /// The HTTP status, repeated.
    pub status: u16,
}

/// A worker running a task.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunningOnView {
    /// The worker id.
    pub worker: String,
    /// The run id.
    pub run_id: String,
    /// When the run started (store clock).
    pub since: DateTime<Utc>,
}

/// A differing definition registered by another worker.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConflictView {
    /// The worker with the other definition.
    pub worker: String,
    /// Its cron pattern.
    pub schedule: String,
    /// Its time zone.
    pub timezone: String,
    /// Its description.
    pub description: String,
    /// When it registered (store clock).
    pub seen_at: DateTime<Utc>,
}

/// The operator's note on the last enable/disable.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NoteView {
    /// The note.
    pub text: String,
    /// Whether the task was enabled when the note was written.
    pub enabled: bool,
    /// When it was written (store clock).
    pub at: DateTime<Utc>,
}

/// A task as operators see it: every field of the core's `TaskReport`, the schedule in words and
/// the next runs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskView {
    /// The task id.
    pub id: String,
    /// Description.
    pub description: String,
    /// Cron pattern.
    pub schedule: String,
    /// IANA time zone.
    pub timezone: String,
    /// The schedule in words (croner's description), or why the pattern does not parse.
    pub schedule_description: String,
    /// When the last finished run ended, whatever its outcome (Vendure's `lastExecutedAt`).
    pub last_executed_at: Option<DateTime<Utc>>,
    /// When a run last started, including one still running.
    pub last_started_at: Option<DateTime<Utc>>,
    /// Whether a run holds a lease now (a disabled task may still be finishing a run).
    pub is_running: bool,
    /// The last finished run's result (any JSON); `{"error": "<message>"}` when it ended with an error
    /// and no value (Vendure's `lastResult` on failure).
    pub last_result: Option<serde_json::Value>,
    /// Whether slots run.
    pub enabled: bool,
    /// The next slot that will run (none while disabled).
    pub next_run_at: Option<DateTime<Utc>>,
    /// The next slots (none while disabled), at most 5.
    pub next_runs: Vec<DateTime<Utc>>,
    /// The last finished run's status.
    pub last_status: Option<String>,
    /// The last finished run's error.
    pub last_error: Option<String>,
    /// The last finished run's duration in milliseconds.
    pub last_duration_ms: Option<i64>,
    /// Who runs it now.
    pub running_on: Vec<RunningOnView>,
    /// When the pending manual trigger was accepted, if one waits.
    pub pending_trigger: Option<DateTime<Utc>>,
    /// A differing definition registered by another worker.
    pub definition_conflict: Option<ConflictView>,
    /// The operator's note on the last enable/disable.
    pub note: Option<NoteView>,
}

impl TaskView {
    /// The view of a report at `now` (for the next runs).
    pub fn of(report: TaskReport, now: Timestamp) -> Self {
        let schedule = Schedule::parse_registered(&report.schedule, &report.timezone);
        let schedule_description = match &schedule {
            Ok(schedule) => schedule.describe(),
            Err(error) => format!("invalid schedule: {error}"),
        };
        let next_runs = match (&schedule, report.enabled, report.next_run_at) {
            (Ok(schedule), true, Some(next)) => {
                let mut runs = vec![next];
                runs.extend(schedule.upcoming(next, NEXT_RUNS - 1));
                runs
            }
            (Ok(schedule), true, None) => schedule.upcoming(now, NEXT_RUNS),
            _ => Vec::new(),
        };
        Self {
            id: report.id,
            description: report.description,
            schedule: report.schedule,
            timezone: report.timezone,
            schedule_description,
            last_executed_at: report.last_executed_at,
            last_started_at: report.last_started_at,
            is_running: report.is_running,
            last_result: report.last_result,
            enabled: report.enabled,
            next_run_at: report.next_run_at,
            next_runs,
            last_status: report.last_status.map(|status| status.as_str().to_owned()),
            last_error: report.last_error,
            last_duration_ms: report.last_duration_ms,
            running_on: report
                .running_on
                .into_iter()
                .map(|run| RunningOnView {
                    worker: run.worker,
                    run_id: run.run_id,
                    since: run.since,
                })
                .collect(),
            pending_trigger: report.pending_trigger,
            definition_conflict: report.definition_conflict.map(|conflict| ConflictView {
                worker: conflict.worker,
                schedule: conflict.definition.schedule,
                timezone: conflict.definition.timezone,
                description: conflict.definition.description,
                seen_at: conflict.seen_at,
            }),
            note: report.note.map(|note| NoteView {
                text: note.text,
                enabled: note.enabled,
                at: note.at,
            }),
        }
    }
}

/// Every task in the store.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskList {
    /// The tasks, sorted by id.
    pub tasks: Vec<TaskView>,
    /// The server's reading of the store's clock when the list was made.
    pub now: DateTime<Utc>,
}

/// One row of the run history. Skipped and missed slots have rows too; a row for a range of slots
/// has `slot_until` and `slot_count`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunView {
    /// The run id (UUIDv7: sorts by creation).
    pub run_id: String,
    /// The task.
    pub task_id: String,
    /// `scheduled`, `manual`, `catch_up` or `retry`.
    pub kind: String,
    /// The slot (the first of a range); none for a manual run.
    pub slot: Option<DateTime<Utc>>,
    /// The last slot of a range row.
    pub slot_until: Option<DateTime<Utc>>,
    /// How many slots a range row accounts for.
    pub slot_count: Option<u64>,
    /// 1, or more for retries.
    pub attempt: u32,
    /// The task's fence at the claim.
    pub fence: u64,
    /// The worker that claimed or recorded it.
    pub worker: Option<String>,
    /// The manual trigger it serves.
    pub trigger_id: Option<String>,
    /// When it was claimed (store clock).
    pub claimed_at: Option<DateTime<Utc>>,
    /// When the handler started (store clock).
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended (store clock).
    pub finished_at: Option<DateTime<Utc>>,
    /// `pending`, `running`, `succeeded`, `failed`, `timed_out`, `abandoned`, `cancelled`, `skipped` or `missed`.
    pub status: String,
    /// Why it was skipped, missed or cancelled.
    pub reason: Option<String>,
    /// The handler's result (any JSON).
    pub result: Option<serde_json::Value>,
    /// The handler's error, or the engine's explanation.
    pub error: Option<String>,
    /// Start lag in milliseconds: slot to start (runs with a slot that started).
    pub lag_ms: Option<i64>,
    /// Duration in milliseconds (runs that ended).
    pub duration_ms: Option<i64>,
}

impl From<RunRecord> for RunView {
    fn from(run: RunRecord) -> Self {
        let lag_ms = match (run.slot, run.started_at) {
            (Some(slot), Some(started)) => Some((started - slot).num_milliseconds()),
            _ => None,
        };
        let duration_ms = match (run.started_at, run.finished_at) {
            (Some(started), Some(finished)) => Some((finished - started).num_milliseconds()),
            _ => None,
        };
        Self {
            run_id: run.run_id,
            task_id: run.task_id,
            kind: run.kind.as_str().to_owned(),
            slot: run.slot,
            slot_until: run.slot_until,
            slot_count: run.slot_count,
            attempt: run.attempt,
            fence: run.fence,
            worker: run.worker,
            trigger_id: run.trigger_id,
            claimed_at: run.claimed_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
            status: run.status.as_str().to_owned(),
            reason: run.reason,
            result: run.result,
            error: run.error,
            lag_ms,
            duration_ms,
        }
    }
}

/// A page of a task's history, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunPage {
    /// The rows.
    pub runs: Vec<RunView>,
    /// Pass as `before` for the next (older) page; none when the history ends here.
    pub next_before: Option<String>,
}

/// The answer to a trigger.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TriggerView {
    /// The trigger's id; the run that serves it carries it.
    pub trigger_id: String,
    /// True when a pending trigger already existed and this one joined it.
    pub coalesced: bool,
}

/// The optional body of enable and disable.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    /// Why (shown in the task's report; at most 500 bytes). Without a note, the previous note is cleared.
    #[serde(default)]
    pub note: Option<String>,
}

/// Who the caller is.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    /// `read` or `admin`.
    pub role: String,
    /// Whether the server checks tokens at all.
    pub auth: bool,
}

/// A probe's answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` (readiness only).
    pub status: String,
}

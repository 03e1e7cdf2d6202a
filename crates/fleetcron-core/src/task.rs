//! The task model: what a task is, its policies, the context its handler receives.

use crate::error::ConfigError;
use crate::schedule::{parse_timezone, Schedule};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest accepted task id.
pub const MAX_TASK_ID_LEN: usize = 128;

/// Checks a task id: non-empty, at most 128 characters of `[A-Za-z0-9._:-]`.
pub fn validate_task_id(id: &str) -> Result<(), ConfigError> {
    let reason = if id.is_empty() {
        Some("must not be empty".to_owned())
    } else if id.len() > MAX_TASK_ID_LEN {
        Some(format!(
            "must be at most {MAX_TASK_ID_LEN} characters, has {}",
            id.len()
        ))
    } else {
        id.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
            .map(|c| format!("character {c:?} is not allowed; use A-Z a-z 0-9 . _ : -"))
    };
    match reason {
        Some(reason) => Err(ConfigError::InvalidTaskId {
            id: id.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// What happens when a slot comes due while the previous run of the task is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Record the slot as skipped (reason `overlap`). The seed's `preventOverlap: true`. Default.
    #[default]
    Skip,
    /// Keep one slot and run it right after the running run ends; further slots are skipped.
    BufferOne,
    /// Start the new run alongside the running one.
    AllowConcurrent,
    /// Cancel the running run (recorded `cancelled`), then start the new one.
    CancelPrevious,
}

/// What runs of the slots that no worker could claim in time (all workers down, store unreachable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "policy")]
pub enum CatchUp {
    /// Record every missed slot as `missed`; run none of them.
    Skip,
    /// Run the most recent missed slot once if it is younger than `within`; record the others `missed`.
    Latest {
        /// Maximum age of the slot to run.
        #[serde(with = "duration_ms")]
        within: Duration,
    },
    /// Run each missed slot younger than `within`, in order, at most `max` of them (the most recent).
    All {
        /// Maximum age of a slot to run.
        #[serde(with = "duration_ms")]
        within: Duration,
        /// Maximum number of slots to run.
        max: u32,
    },
}

impl Default for CatchUp {
    fn default() -> Self {
        CatchUp::Latest {
            within: DEFAULT_CATCH_UP_WITHIN,
        }
    }
}

/// What happens to a run whose lease expired because its worker vanished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "policy")]
pub enum OnAbandon {
    /// Record the run `abandoned` and do not run it again (at-most-once). Default.
    #[default]
    Forget,
    /// Record it `abandoned` and run the same slot again, up to `max_attempts` attempts in all (at-least-once).
    Retry {
        /// Attempts in all, the first one included.
        max_attempts: u32,
    },
}

mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(deserializer)?))
    }
}

/// The policies of one task, as the engine applies them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPolicy {
    /// Overlap policy.
    pub overlap: Overlap,
    /// Catch-up policy.
    pub catch_up: CatchUp,
    /// Abandonment policy.
    pub on_abandon: OnAbandon,
    /// Handler time limit.
    pub timeout: Duration,
}

impl TaskPolicy {
    /// Checks every policy value against [`crate::limits`]: a zero or absurd timeout, catch-up window,
    /// catch-up count or attempt count is refused here, never met at run time.
    pub fn validate(&self, task_id: &str) -> Result<(), ConfigError> {
        use crate::limits::{check_count, check_duration};
        let field = |name: &str| format!("task {}: {name}", crate::limits::echo(task_id));
        if self.timeout.is_zero() {
            return Err(ConfigError::NotPositive {
                task: task_id.to_owned(),
                field: "timeout",
            });
        }
        check_duration(
            &field("timeout"),
            self.timeout,
            Duration::from_millis(1),
            crate::limits::MAX_TIMEOUT,
        )?;
        match self.catch_up {
            CatchUp::All { max: 0, .. } => {
                return Err(ConfigError::NotPositive {
                    task: task_id.to_owned(),
                    field: "catch_up.max",
                })
            }
            CatchUp::Latest { within } | CatchUp::All { within, .. } if within.is_zero() => {
                return Err(ConfigError::NotPositive {
                    task: task_id.to_owned(),
                    field: "catch_up.within",
                })
            }
            CatchUp::Latest { within } => check_duration(
                &field("catch_up.within"),
                within,
                Duration::from_millis(1),
                crate::limits::MAX_CATCH_UP_WITHIN,
            )?,
            CatchUp::All { within, max } => {
                check_duration(
                    &field("catch_up.within"),
                    within,
                    Duration::from_millis(1),
                    crate::limits::MAX_CATCH_UP_WITHIN,
                )?;
                check_count(
                    &field("catch_up.max"),
                    u64::from(max),
                    1,
                    u64::from(crate::limits::MAX_CATCH_UP_RUNS),
                )?;
            }
            CatchUp::Skip => {}
        }
        match self.on_abandon {
            OnAbandon::Retry { max_attempts: 0 } => Err(ConfigError::NotPositive {
                task: task_id.to_owned(),
                field: "on_abandon.max_attempts",
            }),
            OnAbandon::Retry { max_attempts } => check_count(
                &field("on_abandon.max_attempts"),
                u64::from(max_attempts),
                1,
                u64::from(crate::limits::MAX_ATTEMPTS),
            ),
            OnAbandon::Forget => Ok(()),
        }
    }
}

/// An error returned by a task handler; the run is recorded `failed` with this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    message: String,
}

impl TaskError {
    /// An error with this message.
    pub fn new(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TaskError {}

impl From<String> for TaskError {
    fn from(message: String) -> Self {
        Self { message }
    }
}

impl From<&str> for TaskError {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

impl From<std::io::Error> for TaskError {
    fn from(error: std::io::Error) -> Self {
        Self::new(error)
    }
}

impl From<serde_json::Error> for TaskError {
    fn from(error: serde_json::Error) -> Self {
        Self::new(error)
    }
}

/// Why a handler was started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Firing {
    /// A scheduled slot came due.
    Scheduled {
        /// The slot's instant.
        slot: DateTime<Utc>,
    },
    /// An operator triggered the task.
    Manual {
        /// The trigger's id.
        trigger: String,
    },
}

/// Everything a handler knows about its run.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// The task's id.
    pub task_id: String,
    /// The slot being run; `None` for a manual trigger.
    pub slot: Option<DateTime<Utc>>,
    /// This run's id (unique across the fleet).
    pub run_id: String,
    /// The fence of this run's claim: it grows with every claim of the task. Pass it to downstream systems
    /// that can reject writes carrying an older fence.
    pub fence: u64,
    /// 1 for a first run; higher for a retry of an abandoned run.
    pub attempt: u32,
    /// The task's parameters, shared by every run of the task (no copy per run).
    pub params: Arc<Value>,
    /// The id of the worker running the handler.
    pub worker_id: String,
    /// Fires when the run must stop: timeout, lease lost, cancelled by a newer run, or shutdown.
    pub cancellation: CancellationToken,
}

impl TaskContext {
    /// Whether the run has been asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancellation.is_cancelled()
    }
}

/// The boxed handler type.
pub type Handler = Arc<dyn Fn(TaskContext) -> BoxFuture<'static, Result<Value, TaskError>> + Send + Sync>;

/// A registered unit of work: id, schedule, policies and handler. Build one with [`ScheduledTask::builder`].
///
/// Cheap to clone (the parts are shared): the scheduler and the strategy hold the same task.
#[derive(Clone)]
pub struct ScheduledTask {
    inner: Arc<TaskParts>,
}

struct TaskParts {
    id: String,
    description: String,
    schedule: Schedule,
    policy: TaskPolicy,
    params: Arc<Value>,
    handler: Handler,
}

impl fmt::Debug for ScheduledTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScheduledTask")
            .field("id", &self.inner.id)
            .field("schedule", &self.inner.schedule)
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

impl ScheduledTask {
    /// Starts building a task with this id.
    pub fn builder(id: impl Into<String>) -> ScheduledTaskBuilder {
        ScheduledTaskBuilder {
            id: id.into(),
            description: String::new(),
            schedule: None,
            timezone: "UTC".to_owned(),
            policy: TaskPolicy {
                overlap: Overlap::default(),
                catch_up: CatchUp::default(),
                on_abandon: OnAbandon::default(),
                timeout: DEFAULT_TIMEOUT,
            },
            params: Value::Null,
            handler: None,
        }
    }

    /// The task id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The description.
    pub fn description(&self) -> &str {
        &self.inner.description
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.inner.schedule
    }

    /// The policies.
    pub fn policy(&self) -> &TaskPolicy {
        &self.inner.policy
    }

    /// The parameters passed to every run.
    pub fn params(&self) -> &Value {
        &self.inner.params
    }

    /// The parameters as the shared handle every run's [`TaskContext::params`] holds.
    pub fn shared_params(&self) -> Arc<Value> {
        self.inner.params.clone()
    }

    /// The handler.
    pub fn handler(&self) -> &Handler {
        &self.inner.handler
    }

    /// The definition stored and compared across workers.
    pub fn definition(&self) -> TaskDefinition {
        TaskDefinition {
            id: self.inner.id.clone(),
            schedule: self.inner.schedule.pattern().to_owned(),
            timezone: self.inner.schedule.timezone().name().to_owned(),
            description: self.inner.description.clone(),
        }
    }
}

/// Default handler time limit: one hour.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default catch-up window: the newest missed slot still runs if it is at most an hour old
/// ([`CatchUp::default`] is `Latest` with this window; `within` defaults to it wherever it is left out).
pub const DEFAULT_CATCH_UP_WITHIN: Duration = Duration::from_secs(3600);
/// Default number of missed slots [`CatchUp::All`] runs when its `max` is left out.
pub const DEFAULT_CATCH_UP_MAX: u32 = 10;
/// Default attempts in all (the first included) of [`OnAbandon::Retry`] when `max_attempts` is left out.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 3;

/// The part of a task that all workers must agree on; stored with the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDefinition {
    /// The task id.
    pub id: String,
    /// The cron pattern.
    pub schedule: String,
    /// The IANA time zone.
    pub timezone: String,
    /// The description.
    pub description: String,
}

/// Builder for [`ScheduledTask`]; [`ScheduledTaskBuilder::build`] validates everything at once.
pub struct ScheduledTaskBuilder {
    id: String,
    description: String,
    schedule: Option<String>,
    timezone: String,
    policy: TaskPolicy,
    params: Value,
    handler: Option<Handler>,
}

impl ScheduledTaskBuilder {
    /// A human-readable description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// The cron pattern (5 fields, or 6 with seconds first; `L`, `W`, `#`, names and `@daily` etc. accepted).
    pub fn schedule(mut self, pattern: impl Into<String>) -> Self {
        self.schedule = Some(pattern.into());
        self
    }

    /// The IANA time zone the pattern is evaluated in (default `UTC`).
    pub fn timezone(mut self, zone: impl Into<String>) -> Self {
        self.timezone = zone.into();
        self
    }

    /// The handler's time limit (default one hour).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.policy.timeout = timeout;
        self
    }

    /// The overlap policy (default [`Overlap::Skip`]).
    pub fn overlap(mut self, overlap: Overlap) -> Self {
        self.policy.overlap = overlap;
        self
    }

    /// The catch-up policy (default [`CatchUp::Latest`] within one hour).
    pub fn catch_up(mut self, catch_up: CatchUp) -> Self {
        self.policy.catch_up = catch_up;
        self
    }

    /// The abandonment policy (default [`OnAbandon::Forget`]).
    pub fn on_abandon(mut self, on_abandon: OnAbandon) -> Self {
        self.policy.on_abandon = on_abandon;
        self
    }

    /// Parameters handed to every run.
    pub fn params(mut self, params: Value) -> Self {
        self.params = params;
        self
    }

    /// The handler: an async function of the run's [`TaskContext`].
    pub fn handler<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, TaskError>> + Send + 'static,
    {
        self.handler = Some(Arc::new(move |context| Box::pin(handler(context))));
        self
    }

    /// Validates the task: id, pattern, zone, timeout, policies and handler.
    pub fn build(self) -> Result<ScheduledTask, ConfigError> {
        validate_task_id(&self.id)?;
        let pattern = self.schedule.ok_or_else(|| ConfigError::Missing {
            task: self.id.clone(),
            field: "schedule",
        })?;
        let zone = parse_timezone(&self.timezone)?;
        let schedule = Schedule::with_zone(&pattern, zone)?;
        self.policy.validate(&self.id)?;
        let handler = self.handler.ok_or_else(|| ConfigError::Missing {
            task: self.id.clone(),
            field: "handler",
        })?;
        Ok(ScheduledTask {
            inner: Arc::new(TaskParts {
                id: self.id,
                description: self.description,
                schedule,
                policy: self.policy,
                params: Arc::new(self.params),
                handler,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop() -> ScheduledTaskBuilder {
        ScheduledTask::builder("t")
            .schedule("* * * * *")
            .handler(|_| async { Ok(Value::Null) })
    }

    #[test]
    fn ids_are_validated() {
        assert!(validate_task_id("billing.sync:eu-1_a").is_ok());
        for bad in ["", "has space", "slash/no", "ü"] {
            assert!(
                matches!(validate_task_id(bad), Err(ConfigError::InvalidTaskId { .. })),
                "{bad:?}"
            );
        }
        assert!(validate_task_id(&"a".repeat(128)).is_ok());
        assert!(validate_task_id(&"a".repeat(129)).is_err());
    }

    #[test]
    fn builder_rejects_bad_input_at_once() {
        assert!(noop().build().is_ok());
        assert!(matches!(
            noop().timeout(Duration::ZERO).build(),
            Err(ConfigError::NotPositive { field: "timeout", .. })
        ));
        assert!(matches!(
            noop().timezone("Nowhere/Land").build(),
            Err(ConfigError::UnknownTimezone(_))
        ));
        assert!(matches!(
            noop().schedule("bogus").build(),
            Err(ConfigError::InvalidSchedule { .. })
        ));
        assert!(matches!(
            ScheduledTask::builder("t").schedule("* * * * *").build(),
            Err(ConfigError::Missing { field: "handler", .. })
        ));
        assert!(matches!(
            noop()
                .catch_up(CatchUp::All {
                    within: Duration::from_secs(1),
                    max: 0
                })
                .build(),
            Err(ConfigError::NotPositive { .. })
        ));
        assert!(matches!(
            noop().on_abandon(OnAbandon::Retry { max_attempts: 0 }).build(),
            Err(ConfigError::NotPositive { .. })
        ));
    }

    #[test]
    fn absurd_durations_and_counts_are_refused_with_the_bounds() {
        let huge = Duration::from_secs(100_000_000 * 86_400);
        let message = |result: Result<ScheduledTask, ConfigError>| match result {
            Err(error @ ConfigError::OutOfRange { .. }) => error.to_string(),
            other => panic!("expected OutOfRange, got {other:?}"),
        };
        assert_eq!(
            message(noop().timeout(huge).build()),
            "task \"t\": timeout = 100000000d is out of range: use 1ms to 365d"
        );
        assert!(message(noop().catch_up(CatchUp::Latest { within: huge }).build()).contains("catch_up.within"));
        assert!(message(
            noop()
                .catch_up(CatchUp::All {
                    within: Duration::from_secs(60),
                    max: 1_000_000
                })
                .build()
        )
        .contains("catch_up.max = 1000000"));
        assert!(message(noop().on_abandon(OnAbandon::Retry { max_attempts: 5000 }).build()).contains("max_attempts"));
        assert!(noop()
            .timeout(crate::limits::MAX_TIMEOUT)
            .catch_up(CatchUp::Latest {
                within: crate::limits::MAX_CATCH_UP_WITHIN
            })
            .build()
            .is_ok());
    }

    #[test]
    fn a_huge_id_is_not_echoed_whole() {
        let id = "x".repeat(1 << 20);
        let error = match validate_task_id(&id) {
            Err(error) => error.to_string(),
            Ok(()) => String::new(),
        };
        assert!(error.len() < 300, "{} bytes", error.len());
    }
}

//! Error types. Every failure a user can cause or meet has its own variant and a message that says what to do.

use thiserror::Error;

/// Invalid configuration, reported when a task or scheduler is built — never at run time.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The task id is empty, too long or has characters outside `[A-Za-z0-9._:-]`.
    #[error("invalid task id {}: {reason}", crate::limits::echo(.id))]
    InvalidTaskId {
        /// The rejected id.
        id: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The cron pattern does not parse or never fires.
    #[error("invalid schedule {}: {reason}", crate::limits::echo(.pattern))]
    InvalidSchedule {
        /// The rejected pattern.
        pattern: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The time zone is not an IANA zone name.
    #[error("unknown time zone {}: use an IANA name such as \"Europe/Berlin\" or \"UTC\"", crate::limits::echo(.0))]
    UnknownTimezone(String),
    /// A required builder field was not set.
    #[error("task {task}: {field} is required")]
    Missing {
        /// The task id (or `?` when the id itself is missing).
        task: String,
        /// The missing field.
        field: &'static str,
    },
    /// A duration or count that must be positive is not.
    #[error("task {task}: {field} must be greater than zero")]
    NotPositive {
        /// The task id.
        task: String,
        /// The offending field.
        field: &'static str,
    },
    /// A duration or count outside its accepted range (see [`crate::limits`]).
    #[error("{field} = {value} is out of range: use {min} to {max}")]
    OutOfRange {
        /// The offending field.
        field: String,
        /// The value given.
        value: String,
        /// The smallest accepted value.
        min: String,
        /// The largest accepted value.
        max: String,
    },
    /// The id is reserved for a built-in task.
    #[error("task id {} is reserved for fleetcron's built-in task; choose another id", crate::limits::echo(.0))]
    ReservedTaskId(String),
    /// Two tasks in one scheduler share an id.
    #[error("duplicate task id {}: each task registered with one scheduler needs its own id", crate::limits::echo(.0))]
    DuplicateTaskId(String),
    /// A scheduler was built without a strategy.
    #[error("the scheduler needs a strategy: call .strategy(...) on the builder")]
    MissingStrategy,
    /// Another invalid value.
    #[error("{0}")]
    Invalid(String),
}

/// A failure of the shared store (database file, server, script).
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be reached or the operation failed in a way that may pass: retry with backoff.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store holds a schema newer than this build understands.
    #[error("the store's schema version {found} is newer than this build supports ({supported}); upgrade fleetcron")]
    SchemaTooNew {
        /// Version found in the store.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// The store cannot be written (read-only file, permissions).
    #[error("store is read-only or not writable: {0}")]
    ReadOnly(String),
    /// Stored data could not be decoded.
    #[error("corrupt store data: {0}")]
    Corrupt(String),
    /// A unique key refused a write: the last line of defence against a duplicate run fired.
    #[error("duplicate refused by the store: {0}")]
    Duplicate(String),
    /// The store URL or options are invalid.
    #[error("invalid store configuration: {0}")]
    Config(String),
}

impl StoreError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Errors of the scheduler's public operations.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No task with this id is registered in the store.
    #[error("unknown task {}", crate::limits::echo(.0))]
    UnknownTask(String),
    /// The task is disabled, so it cannot be triggered.
    #[error("task {} is disabled: enable it before triggering it", crate::limits::echo(.0))]
    TaskDisabled(String),
    /// The scheduler is shutting down or was not started.
    #[error("the scheduler is not running")]
    NotRunning,
    /// One of the engine's loops died (a bug): the worker cannot go on claiming and stops loudly
    /// rather than stay up and idle.
    #[error("the scheduler's engine failed and stopped: {0}")]
    EngineFailed(String),
}

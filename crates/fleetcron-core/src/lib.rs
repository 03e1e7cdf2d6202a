//! fleetcron's core: the task model, cron schedules, the [`SchedulerStrategy`] contract, the engine that
//! every built-in strategy shares, the [`Scheduler`] runtime and the in-memory store.
//!
//! This crate has no database dependency (an invariant CI checks); backends live in their own crates and
//! implement the narrow [`Store`] trait.

pub mod clock;
pub mod decide;
pub mod engine;
pub mod error;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod redact;
pub mod schedule;
pub mod scheduler;
pub mod store;
pub mod strategy;
pub mod task;

pub use clock::{Clock, OffsetClock, SharedClock, StoreTime, SystemClock};
pub use engine::{EngineConfig, EngineStrategy};
pub use error::{ConfigError, SchedulerError, StoreError};
pub use memory::MemoryStore;
pub use model::{
    LastRun, PrunePlan, Retention, RunKind, RunLease, RunQuery, RunRecord, RunStatus, RunUpdate, RunningOn, TaskNote,
    TaskReport, TaskState, Timestamp, TriggerReceipt, UpdateScheduledTaskInput, HIGH_WATER_FIELD,
};
pub use redact::{redact_url, Secrets, StoreLabel};
pub use schedule::Schedule;
pub use scheduler::{Scheduler, SchedulerBuilder};
pub use store::{Decide, Mutation, Store};
pub use strategy::{ExecuteOutcome, Registration, SchedulerStrategy};
pub use task::{
    CatchUp, Firing, OnAbandon, Overlap, ScheduledTask, ScheduledTaskBuilder, TaskContext, TaskDefinition, TaskError,
    TaskPolicy,
};

/// The in-memory strategy: the shared engine over a [`MemoryStore`].
pub type MemoryStrategy = EngineStrategy<MemoryStore>;
pub use serde_json::Value;
pub use tokio_util::sync::CancellationToken;

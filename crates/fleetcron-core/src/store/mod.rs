//! The narrow contract a backend implements. All policy lives in the engine; a store only keeps task
//! state documents and run history, and changes them atomically with its own clock.
//!
//! # Contract
//! * [`Store::mutate`] is the only way task state changes. It calls `decide` for each id with the
//!   store's current time and the stored state, and commits the returned [`Mutation`]s of **the whole
//!   batch all or nothing**: every task's new state document, inserted history rows and updated history
//!   rows land together, or nothing of any task of the batch does. A batch that is refused (a unique
//!   key, a corrupt document, any error) leaves no trace — not the states of the tasks before the one
//!   that failed, nor their rows. The engine relies on it: it starts the runs of a claim batch only
//!   after the batch committed, so a partly committed batch would leave leases that no handler runs.
//!   No other mutation of a task interleaves between the read that `decide` saw and the write. A store
//!   may lock the batch's tasks in one transaction (SQL stores) or compare-and-set every task of it on a
//!   version in one atomic step (optimistic stores); in the latter case it calls `decide` again for a
//!   task whose version moved, so `decide` must be a pure function of its arguments.
//! * The time handed to `decide` is the store's clock, never the worker's, in whole milliseconds. It
//!   must not go backwards between two readings of the same store instance.
//! * A committed mutation survives a crash of the worker that made it (durability is the backend's:
//!   SQLite in WAL mode with `synchronous=NORMAL` or stronger).
//! * Inserting a history row whose `(task_id, slot, attempt)` already exists (slot not null), or whose
//!   run id the task's history already holds (or that the batch inserts twice), fails the whole batch
//!   with [`StoreError::Duplicate`]: the last line of defence against a duplicate run.
//! * Errors: [`StoreError::Unavailable`] means "nothing was committed, or it is unknown whether it was;
//!   retry"; the engine retries with backoff and its decisions are idempotent on the state it reads.
//!
//! `fleetcron_conformance::store_suite` checks every clause on every store (`store_suite!`), with
//! [`crate::MemoryStore`] as the reference.

pub mod frame;

use crate::error::StoreError;
use crate::model::PrunePlan;
use crate::model::{RunQuery, RunRecord, RunUpdate, TaskState, Timestamp};
use async_trait::async_trait;
use tokio::sync::broadcast;

/// What `decide` asks the store to write for one task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mutation {
    /// The new state document; `None` leaves the task unchanged (and inserts no row for a missing task).
    pub state: Option<TaskState>,
    /// History rows to insert.
    pub insert_runs: Vec<RunRecord>,
    /// Existing history rows to change (by run id).
    pub update_runs: Vec<RunUpdate>,
}

impl Mutation {
    /// A mutation that changes nothing.
    pub fn none() -> Self {
        Self::default()
    }
}

/// The decision function handed to [`Store::mutate`]: `(store_now, task_id, stored_state) -> Mutation`.
pub type Decide<'a> = dyn FnMut(Timestamp, &str, Option<&TaskState>) -> Mutation + Send + 'a;

/// A backend: task state documents plus run history, changed a batch at a time, all or nothing, with the
/// store's clock.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates or upgrades the schema to this build's version. Safe when many workers call it at once;
    /// fails with [`StoreError::SchemaTooNew`] on a store written by a newer build.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// The store's clock.
    async fn now(&self) -> Result<Timestamp, StoreError>;

    /// Reads, decides and writes the tasks of `ids` as one all-or-nothing batch (see the module
    /// contract). `ids` has no duplicates. Returns the store time the decisions were made at.
    async fn mutate(&self, ids: &[String], decide: &mut Decide<'_>) -> Result<Timestamp, StoreError>;

    /// [`Store::mutate`] for claims: `floors[i]` is the earliest slot `ids[i]` wants claimed. A store may
    /// leave out — neither read nor pass to `decide` — a stored task whose high-water mark
    /// ([`TaskState::high_water`]) is at or after its floor: every slot it wants is then already accounted
    /// for, and `decide` would change nothing. It must never leave out any other task (when in doubt, keep
    /// it). This spares the workers that lose a race for an instant's slots from reading and decoding the
    /// winner's documents. Returns the store time and the ids left out; the default leaves none out.
    async fn mutate_claims(
        &self,
        ids: &[String],
        floors: &[Timestamp],
        decide: &mut Decide<'_>,
    ) -> Result<(Timestamp, Vec<String>), StoreError> {
        let _ = floors;
        let now = self.mutate(ids, decide).await?;
        Ok((now, Vec::new()))
    }

    /// How many claim mutations a worker should keep in flight at once when many are
    /// due together (default 1). A server that runs transactions on disjoint tasks in parallel gains
    /// from several; a single-writer store does not.
    fn preferred_parallelism(&self) -> usize {
        1
    }

    /// The states of these tasks (all tasks when `ids` is `None`), sorted by id, with the store's time.
    async fn load(&self, ids: Option<&[String]>) -> Result<(Timestamp, Vec<TaskState>), StoreError>;

    /// Ids of tasks whose [`TaskState::attention_at`] is at or before the store's now, at most `limit`.
    /// This is the one statement an idle worker runs per poll interval.
    async fn due_for_attention(&self, limit: u32) -> Result<(Timestamp, Vec<String>), StoreError>;

    /// A task's history, newest first.
    async fn runs(&self, task_id: &str, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError>;

    /// Executes a pruning the engine decided ([`crate::decide::prune_plan`]): deletes the finished rows
    /// that ended before `plan.finished_before`, then the finished rows beyond the newest
    /// `plan.keep_last` of each task (newest by run id); never a `running` or `pending` row, and never
    /// a task's state. Returns how many rows went.
    async fn prune_runs(&self, plan: &PrunePlan) -> Result<u64, StoreError>;

    /// Push notifications of tasks that want attention (triggers), for stores that can push. `None`
    /// means the engine relies on polling alone.
    fn subscribe(&self) -> Option<broadcast::Receiver<String>> {
        None
    }

    /// Announces that `task_id` wants attention (after a trigger), for stores that can push.
    async fn notify(&self, task_id: &str) -> Result<(), StoreError> {
        let _ = task_id;
        Ok(())
    }
}

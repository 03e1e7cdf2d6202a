//! The frame every store shares around its own SQL or scripts: the monotonic store clock, the batch of
//! writes a mutation collects from `decide` (updates of one run de-duplicated), the migration policy,
//! and the messages of a refused duplicate. Written once here so the backends keep only their dialect.

use crate::error::StoreError;
use crate::model::{RunRecord, RunUpdate, TaskState, Timestamp};
use crate::store::Decide;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// A store's clock as every store keeps it: readings truncated to whole milliseconds (every store
/// keeps instants to the millisecond, so what the engine derives from `now` round-trips exactly), and
/// never earlier than a previous answer of the same store instance.
#[derive(Debug, Default)]
pub struct MonotonicClock {
    last: Mutex<Option<Timestamp>>,
}

impl MonotonicClock {
    /// A clock with no reading yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The store's now from a reading (offset already applied): truncated to the millisecond and
    /// never before the previous answer.
    pub fn observe(&self, reading: Timestamp) -> Timestamp {
        let reading = truncate_to_millis(reading);
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = last.map_or(reading, |last| last.max(reading));
        *last = Some(now);
        now
    }

    /// The previous answer, the floor of the next one (`None` before the first).
    pub fn floor(&self) -> Option<Timestamp> {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `at` truncated to whole milliseconds (towards the past, also before 1970).
pub fn truncate_to_millis(at: Timestamp) -> Timestamp {
    Timestamp::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at)
}

/// A task's new state in a batch, and whether the store had one before (an update, not an insert).
#[derive(Debug)]
pub struct StateWrite {
    /// The task.
    pub id: String,
    /// Its new state document.
    pub state: TaskState,
    /// Whether it was stored before the mutation.
    pub existed: bool,
}

/// Everything one batch writes, collected from `decide` over its tasks (see [`collect_writes`]).
#[derive(Debug, Default)]
pub struct BatchWrites {
    /// New state documents, in the order of the ids.
    pub states: Vec<StateWrite>,
    /// History rows to insert.
    pub inserts: Vec<RunRecord>,
    /// Changes of existing rows, with their task: one per run (of two updates of a run in a batch only
    /// the later counts — each sets every mutable column — and one statement must not update a row
    /// twice), in the order each run was first updated.
    pub updates: Vec<(String, RunUpdate)>,
}

impl BatchWrites {
    /// Whether the batch writes nothing (the store then ends its transaction without a commit record).
    pub fn is_empty(&self) -> bool {
        self.states.is_empty() && self.inserts.is_empty() && self.updates.is_empty()
    }
}

/// Runs `decide` once for each of `ids` on its stored state (`stored`) at the store's `now`, and
/// collects the writes of the whole batch.
pub fn collect_writes<'s>(
    ids: impl IntoIterator<Item = &'s String>,
    stored: impl Fn(&str) -> Option<&'s TaskState>,
    now: Timestamp,
    decide: &mut Decide<'_>,
) -> BatchWrites {
    let mut writes = BatchWrites::default();
    let mut update_index: HashMap<(String, String), usize> = HashMap::new();
    for id in ids {
        let existing = stored(id);
        let mutation = decide(now, id, existing);
        if let Some(state) = mutation.state {
            writes.states.push(StateWrite {
                id: id.clone(),
                state,
                existed: existing.is_some(),
            });
        }
        writes.inserts.extend(mutation.insert_runs);
        for update in mutation.update_runs {
            let key = (id.clone(), update.run_id.clone());
            match update_index.get(&key).and_then(|index| writes.updates.get_mut(*index)) {
                Some(earlier) => earlier.1 = update,
                None => {
                    update_index.insert(key, writes.updates.len());
                    writes.updates.push((id.clone(), update));
                }
            }
        }
    }
    writes
}

/// The migration policy every store applies under its own lock: read the stored version, refuse a
/// newer one, apply each missing version in order (each records itself).
#[async_trait::async_trait]
pub trait MigrationSteps: Send {
    /// The schema version stored (0 for a fresh store).
    async fn stored_version(&mut self) -> Result<i64, StoreError>;
    /// Applies migration `version` and records it.
    async fn apply(&mut self, version: i64) -> Result<(), StoreError>;
}

/// Migrates `steps` to `supported` (migrations are numbered from 1 without gaps); returns the versions
/// applied. Fails with [`StoreError::SchemaTooNew`] on a store written by a newer build.
pub async fn run_migrations(steps: &mut dyn MigrationSteps, supported: i64) -> Result<Vec<i64>, StoreError> {
    let found = steps.stored_version().await?;
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    let mut applied = Vec::new();
    for version in (found + 1)..=supported {
        steps.apply(version).await?;
        applied.push(version);
    }
    Ok(applied)
}

/// The error of a history row refused by the unique key `(task_id, slot, attempt)`, naming the store.
pub fn duplicate_slot(task_id: &str, slot: Timestamp, attempt: u32, store: &str) -> StoreError {
    StoreError::Duplicate(format!(
        "task {task_id} slot {} attempt {attempt} already has a history row ({store})",
        slot.to_rfc3339()
    ))
}

/// The error of a history row refused because its run id exists, naming the store.
pub fn duplicate_run_id(run_id: &str, store: &str) -> StoreError {
    StoreError::Duplicate(format!("run id {run_id} already has a history row ({store})"))
}

/// Refuses a [`crate::store::Store::mutate_claims`] call whose floors do not pair with its ids (a bug
/// of the caller, never a reason to guess).
pub fn check_floors(ids: &[String], floors: &[Timestamp]) -> Result<(), StoreError> {
    if floors.len() == ids.len() {
        return Ok(());
    }
    Err(StoreError::Corrupt(format!(
        "mutate_claims: {} ids but {} floors",
        ids.len(),
        floors.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RunStatus, TaskState};
    use crate::store::Mutation;
    use crate::task::TaskDefinition;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_timestamp_millis(1_800_000_000_000 + ms).unwrap_or_default()
    }

    #[test]
    fn the_clock_truncates_and_never_goes_back() {
        let clock = MonotonicClock::new();
        assert_eq!(clock.floor(), None);
        let first = clock.observe(at(5) + chrono::Duration::microseconds(900));
        assert_eq!(first, at(5));
        assert_eq!(
            clock.observe(at(2)),
            at(5),
            "a reading behind is answered with the floor"
        );
        assert_eq!(clock.observe(at(9)), at(9));
        assert_eq!(clock.floor(), Some(at(9)));
        let before_1970 =
            Timestamp::from_timestamp_millis(-1_500).unwrap_or_default() - chrono::Duration::microseconds(1);
        assert_eq!(truncate_to_millis(before_1970).timestamp_millis(), -1_501);
    }

    fn update(run: &str, status: RunStatus) -> RunUpdate {
        RunUpdate {
            run_id: run.to_owned(),
            status,
            fence: 1,
            worker: None,
            claimed_at: None,
            started_at: None,
            finished_at: None,
            reason: None,
            result: None,
            error: None,
        }
    }

    #[test]
    fn updates_of_one_run_keep_the_later_in_first_seen_order() {
        let definition = TaskDefinition {
            id: "a".to_owned(),
            schedule: "* * * * *".to_owned(),
            timezone: "UTC".to_owned(),
            description: String::new(),
        };
        let stored = TaskState::new(definition, at(0));
        let ids = vec!["a".to_owned(), "b".to_owned()];
        let mut calls = Vec::new();
        let writes = collect_writes(
            &ids,
            |id| (id == "a").then_some(&stored),
            at(1),
            &mut |now, id, existing| {
                calls.push((now, id.to_owned(), existing.is_some()));
                Mutation {
                    state: existing.cloned(),
                    insert_runs: Vec::new(),
                    update_runs: vec![
                        update("r1", RunStatus::Running),
                        update("r2", RunStatus::Running),
                        update("r1", RunStatus::Succeeded),
                    ],
                }
            },
        );
        assert_eq!(
            calls,
            vec![(at(1), "a".to_owned(), true), (at(1), "b".to_owned(), false)]
        );
        assert_eq!(writes.states.len(), 1);
        assert!(writes.states[0].existed);
        let updates: Vec<(&str, &str, RunStatus)> = writes
            .updates
            .iter()
            .map(|(task, update)| (task.as_str(), update.run_id.as_str(), update.status))
            .collect();
        assert_eq!(
            updates,
            vec![
                ("a", "r1", RunStatus::Succeeded),
                ("a", "r2", RunStatus::Running),
                ("b", "r1", RunStatus::Succeeded),
                ("b", "r2", RunStatus::Running),
            ]
        );
        assert!(!writes.is_empty());
    }
}

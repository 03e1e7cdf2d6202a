//! The in-memory store: one process, many schedulers. For tests, examples and single-process services
//! that need no persistence. It honours the whole [`Store`] contract — a batch commits all or nothing,
//! the unique `(task_id, slot, attempt)` key and run ids, a monotonic clock in whole milliseconds — so
//! the conformance suite runs against it and the store suite uses it as the reference store.

use crate::clock::{system_clock, SharedClock};
use crate::error::StoreError;
use crate::model::{PrunePlan, RunQuery, RunRecord, RunStatus, TaskState, Timestamp};
use crate::store::frame::MonotonicClock;
use crate::store::{Decide, Mutation, Store};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::broadcast;

#[derive(Default)]
struct Inner {
    tasks: BTreeMap<String, TaskState>,
    runs: HashMap<String, Vec<RunRecord>>,
    slot_keys: HashSet<SlotKey>,
    run_ids: HashSet<RunKey>,
}

/// A store held in this process's memory.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    clock: SharedClock,
    last_now: MonotonicClock,
    wakeups: broadcast::Sender<String>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_clock(system_clock())
    }
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose clock is `clock` (the authority for leases and due slots).
    pub fn with_clock(clock: SharedClock) -> Self {
        let (wakeups, _) = broadcast::channel(1024);
        Self {
            inner: Mutex::new(Inner::default()),
            clock,
            last_now: MonotonicClock::new(),
            wakeups,
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Corrupt("memory store mutex poisoned".to_owned()))
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn now(&self) -> Result<Timestamp, StoreError> {
        Ok(self.last_now.observe(self.clock.now()))
    }

    async fn mutate(&self, ids: &[String], decide: &mut Decide<'_>) -> Result<Timestamp, StoreError> {
        let mut inner = self.lock()?;
        let now = self.last_now.observe(self.clock.now());
        // Decide every task of the batch on the states as they were before it...
        let mutations: Vec<(&String, Mutation)> = ids
            .iter()
            .map(|id| (id, decide(now, id, inner.tasks.get(id))))
            .collect();
        // ...check every unique key of the whole batch before writing anything, so a refused batch
        // changes nothing of any of its tasks (all or nothing, as the engine relies on)...
        let (slot_keys, run_ids) = new_keys(&inner, &mutations)?;
        // ...and only then write.
        inner.slot_keys.extend(slot_keys);
        inner.run_ids.extend(run_ids);
        for (id, mutation) in mutations {
            if let Some(state) = mutation.state {
                inner.tasks.insert(id.clone(), state);
            }
            let runs = inner.runs.entry(id.clone()).or_default();
            runs.extend(mutation.insert_runs);
            for update in mutation.update_runs {
                if let Some(run) = runs.iter_mut().rev().find(|run| run.run_id == update.run_id) {
                    run.status = update.status;
                    run.fence = update.fence;
                    run.worker = update.worker;
                    run.claimed_at = update.claimed_at;
                    run.started_at = update.started_at;
                    run.finished_at = update.finished_at;
                    run.reason = update.reason;
                    run.result = update.result;
                    run.error = update.error;
                }
            }
        }
        Ok(now)
    }

    /// Leaves out the tasks whose high-water mark is at or after their floor (the losers of an instant
    /// cost no clone and no decision), then mutates the rest as [`Store::mutate`] does.
    async fn mutate_claims(
        &self,
        ids: &[String],
        floors: &[Timestamp],
        decide: &mut Decide<'_>,
    ) -> Result<(Timestamp, Vec<String>), StoreError> {
        crate::store::frame::check_floors(ids, floors)?;
        let (kept, left_out): (Vec<String>, Vec<String>) = {
            let inner = self.lock()?;
            let (kept, left_out): (Vec<_>, Vec<_>) = ids.iter().zip(floors).partition(|(id, floor)| {
                inner
                    .tasks
                    .get(id.as_str())
                    .is_none_or(|state| state.high_water < **floor)
            });
            (
                kept.into_iter().map(|(id, _)| id.clone()).collect(),
                left_out.into_iter().map(|(id, _)| id.clone()).collect(),
            )
        };
        // A task left out cannot move back below its floor: high-water marks only grow.
        let now = self.mutate(&kept, decide).await?;
        Ok((now, left_out))
    }

    async fn load(&self, ids: Option<&[String]>) -> Result<(Timestamp, Vec<TaskState>), StoreError> {
        let inner = self.lock()?;
        let now = self.last_now.observe(self.clock.now());
        let states = match ids {
            None => inner.tasks.values().cloned().collect(),
            Some(ids) => {
                let mut states: Vec<TaskState> = ids.iter().filter_map(|id| inner.tasks.get(id).cloned()).collect();
                states.sort_by(|a, b| a.definition.id.cmp(&b.definition.id));
                states
            }
        };
        Ok((now, states))
    }

    async fn due_for_attention(&self, limit: u32) -> Result<(Timestamp, Vec<String>), StoreError> {
        let inner = self.lock()?;
        let now = self.last_now.observe(self.clock.now());
        let ids = inner
            .tasks
            .iter()
            .filter(|(_, state)| state.attention_at().is_some_and(|at| at <= now))
            .map(|(id, _)| id.clone())
            .take(limit as usize)
            .collect();
        Ok((now, ids))
    }

    async fn runs(&self, task_id: &str, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        let inner = self.lock()?;
        let Some(runs) = inner.runs.get(task_id) else {
            return Ok(Vec::new());
        };
        let mut sorted: Vec<&RunRecord> = runs.iter().collect();
        sorted.sort_by(|a, b| b.run_id.cmp(&a.run_id));
        Ok(sorted
            .into_iter()
            .filter(|run| query.before.as_ref().is_none_or(|before| &run.run_id < before))
            .take(query.limit as usize)
            .cloned()
            .collect())
    }

    async fn prune_runs(&self, plan: &PrunePlan) -> Result<u64, StoreError> {
        let mut inner = self.lock()?;
        let cutoff = plan.finished_before;
        let mut removed = Vec::new();
        for (task_id, runs) in inner.runs.iter_mut() {
            runs.sort_by(|a, b| b.run_id.cmp(&a.run_id));
            let mut kept = 0u32;
            runs.retain(|run| {
                // Unfinished work keeps its row: a pruned pending row would lose the run's history.
                if matches!(run.status, RunStatus::Running | RunStatus::Pending) {
                    return true;
                }
                let too_old = cutoff
                    .zip(run.finished_at)
                    .is_some_and(|(cutoff, finished)| finished < cutoff);
                let too_many = plan.keep_last.is_some_and(|keep| kept >= keep);
                if too_old || too_many {
                    removed.push((task_id.clone(), run.clone()));
                    false
                } else {
                    kept += 1;
                    true
                }
            });
        }
        for (task_id, run) in &removed {
            if let Some(slot) = run.slot {
                inner.slot_keys.remove(&(run.task_id.clone(), slot, run.attempt));
            }
            inner.run_ids.remove(&(task_id.clone(), run.run_id.clone()));
        }
        Ok(removed.len() as u64)
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<String>> {
        Some(self.wakeups.subscribe())
    }

    async fn notify(&self, task_id: &str) -> Result<(), StoreError> {
        // No receiver is fine: workers poll as well.
        let _ = self.wakeups.send(task_id.to_owned());
        Ok(())
    }
}

/// `(task_id, slot, attempt)` of a history row with a slot.
type SlotKey = (String, Timestamp, u32);
/// `(task id, run id)` of a history row.
type RunKey = (String, String);

/// The unique keys the batch's new history rows add — `(task_id, slot, attempt)` for rows with a slot,
/// and `(task, run id)` — or [`StoreError::Duplicate`] when one of them is stored already or appears
/// twice in the batch.
fn new_keys(
    inner: &Inner,
    mutations: &[(&String, Mutation)],
) -> Result<(HashSet<SlotKey>, HashSet<RunKey>), StoreError> {
    let mut slot_keys = HashSet::new();
    let mut run_ids = HashSet::new();
    for (id, mutation) in mutations {
        for run in &mutation.insert_runs {
            let run_key = ((*id).clone(), run.run_id.clone());
            if inner.run_ids.contains(&run_key) {
                return Err(StoreError::Duplicate(format!(
                    "run id {} already has a history row (memory store)",
                    run.run_id
                )));
            }
            if !run_ids.insert(run_key) {
                return Err(StoreError::Duplicate(format!(
                    "run id {} appears twice in one mutation (memory store)",
                    run.run_id
                )));
            }
            if let Some(slot) = run.slot {
                let key = (run.task_id.clone(), slot, run.attempt);
                if inner.slot_keys.contains(&key) || !slot_keys.insert(key) {
                    return Err(StoreError::Duplicate(format!(
                        "task {} slot {} attempt {} already has a history row (memory store)",
                        run.task_id,
                        slot.to_rfc3339(),
                        run.attempt
                    )));
                }
            }
        }
    }
    Ok((slot_keys, run_ids))
}

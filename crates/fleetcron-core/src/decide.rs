//! The policy decisions, as pure functions of a task's stored state and the store's clock.
//!
//! Every change to a task goes through a [`Decision`] opened on the stored [`TaskState`]: claims of slots,
//! the start of pending work, completions (guarded by the fence), lease renewals, abandonment, triggers,
//! enable/disable and registration. The engine runs these inside [`Store::mutate`](crate::Store::mutate), so
//! they see a consistent state and their writes land atomically. Nothing here does I/O or reads a clock.

use crate::model::{
    DefinitionConflict, LastRun, PendingRun, RunKind, RunLease, RunRecord, RunStatus, RunUpdate, TaskState, Timestamp,
};
use crate::schedule::Schedule;
use crate::store::Mutation;
use crate::task::{CatchUp, OnAbandon, Overlap, ScheduledTask, TaskDefinition, TaskPolicy};
use chrono::Duration;
use serde_json::Value;

/// Most skipped or missed slots of one gap written as a row each; a longer gap is one range row
/// ([`RunRecord::slot_until`], [`RunRecord::slot_count`]), so the rows one decision writes are bounded
/// however long a task was disabled or unclaimed.
pub const MAX_SINGLE_ROWS: u64 = 16;

/// How long a definition conflict stays reported without new evidence of it (10 minutes).
pub const CONFLICT_EVIDENCE_TTL_SECONDS: i64 = 600;

/// Reason recorded for a slot skipped because the previous run was still running.
pub const REASON_OVERLAP: &str = "overlap";
/// Reason recorded for a slot skipped because the task was disabled.
pub const REASON_DISABLED: &str = "disabled";
/// Reason recorded for a slot no worker claimed in time.
pub const REASON_MISSED: &str = "no worker claimed the slot in time";

/// The worker-side settings decisions depend on.
#[derive(Debug, Clone)]
pub struct DecideConfig {
    /// This worker's id.
    pub worker: String,
    /// How long a claim or renewal holds the lease.
    pub lease: Duration,
    /// How late a slot may be claimed and still count as on time rather than missed.
    pub misfire_threshold: Duration,
}

/// What a slot claim decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotOutcome {
    /// The slot is not due yet by the store's clock; ask again after this long.
    NotDue(Duration),
    /// The slot was accounted for before (by any worker).
    AlreadyAccounted,
    /// A run started on this worker.
    Started,
    /// Recorded as skipped with this reason.
    Skipped(&'static str),
    /// Buffered behind the running run.
    Buffered,
    /// Recorded as missed.
    Missed,
}

/// Why a trigger was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerRefused {
    /// The task is disabled.
    Disabled,
}

/// The answer to a completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishOutcome {
    /// The run's end was recorded.
    Recorded,
    /// The run no longer holds the lease (abandoned, cancelled, or the fence moved): the write was refused.
    Fenced,
}

/// A decision in progress on one task's state: collects the new state, history writes and the runs this
/// worker must start.
#[derive(Debug)]
pub struct Decision<'a> {
    /// The state being changed.
    pub state: TaskState,
    now: Timestamp,
    config: &'a DecideConfig,
    changed: bool,
    inserts: Vec<RunRecord>,
    updates: Vec<RunUpdate>,
    /// Runs this worker must start once the mutation commits.
    pub started: Vec<RunLease>,
    /// Runs this decision ended on purpose (CancelPrevious) or found abandoned: if one is local, stop it.
    pub ended: Vec<String>,
}

impl<'a> Decision<'a> {
    /// Opens a decision on a stored state at the store's `now`.
    pub fn new(state: TaskState, now: Timestamp, config: &'a DecideConfig) -> Self {
        Self {
            state,
            now,
            config,
            changed: false,
            inserts: Vec::new(),
            updates: Vec::new(),
            started: Vec::new(),
            ended: Vec::new(),
        }
    }

    /// Opens a decision that creates a task's state.
    pub fn create(state: TaskState, now: Timestamp, config: &'a DecideConfig) -> Self {
        let mut decision = Self::new(state, now, config);
        decision.changed = true;
        decision
    }

    /// The store's time this decision is made at.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// The writes to commit (nothing when the state did not change).
    pub fn into_mutation(self) -> (Mutation, Vec<RunLease>, Vec<String>) {
        let mutation = if self.changed {
            Mutation {
                state: Some(self.state),
                insert_runs: self.inserts,
                update_runs: self.updates,
            }
        } else {
            Mutation::none()
        };
        (mutation, self.started, self.ended)
    }

    /// When a lease taken or renewed now expires. Checked arithmetic: the engine validates the lease
    /// (at most a day), and a value that slipped past saturates instead of panicking a worker's loop.
    fn lease_until(&self) -> Timestamp {
        self.now
            .checked_add_signed(self.config.lease)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
    }

    fn new_run_id() -> String {
        uuid::Uuid::now_v7().to_string()
    }

    fn start(&mut self, kind: RunKind, slot: Option<Timestamp>, attempt: u32, trigger_id: Option<String>) {
        self.begin(Self::new_run_id(), kind, slot, attempt, trigger_id, false);
    }

    /// Claims a run for this worker: bumps the fence, takes a lease, and inserts its history row (or turns
    /// its pending row into a running one).
    fn begin(
        &mut self,
        run_id: String,
        kind: RunKind,
        slot: Option<Timestamp>,
        attempt: u32,
        trigger_id: Option<String>,
        has_pending_row: bool,
    ) {
        self.changed = true;
        self.state.fence += 1;
        let lease = RunLease {
            run_id,
            fence: self.state.fence,
            worker: self.config.worker.clone(),
            kind,
            slot,
            attempt,
            trigger_id: trigger_id.clone(),
            started_at: self.now,
            lease_until: self.lease_until(),
        };
        if has_pending_row {
            self.updates.push(RunUpdate {
                run_id: lease.run_id.clone(),
                status: RunStatus::Running,
                fence: lease.fence,
                worker: Some(self.config.worker.clone()),
                claimed_at: Some(self.now),
                started_at: Some(self.now),
                finished_at: None,
                reason: None,
                result: None,
                error: None,
            });
        } else {
            self.inserts.push(RunRecord {
                run_id: lease.run_id.clone(),
                task_id: self.state.definition.id.clone(),
                kind,
                slot,
                slot_until: None,
                slot_count: None,
                attempt,
                fence: lease.fence,
                worker: Some(self.config.worker.clone()),
                trigger_id,
                claimed_at: Some(self.now),
                started_at: Some(self.now),
                finished_at: None,
                status: RunStatus::Running,
                reason: None,
                result: None,
                error: None,
            });
        }
        self.state.last_started_at = Some(self.now);
        self.state.running.push(lease.clone());
        self.started.push(lease);
    }

    /// Accepts work to run after the running run: its history row (status `pending`) is written now, so
    /// the slot or trigger is accounted for even if no worker ever starts it.
    fn queue(
        &mut self,
        kind: RunKind,
        slot: Option<Timestamp>,
        attempt: u32,
        trigger_id: Option<String>,
        first: bool,
    ) -> String {
        self.changed = true;
        let run_id = Self::new_run_id();
        self.inserts.push(RunRecord {
            run_id: run_id.clone(),
            task_id: self.state.definition.id.clone(),
            kind,
            slot,
            slot_until: None,
            slot_count: None,
            attempt,
            fence: self.state.fence,
            worker: Some(self.config.worker.clone()),
            trigger_id: trigger_id.clone(),
            claimed_at: None,
            started_at: None,
            finished_at: None,
            status: RunStatus::Pending,
            reason: None,
            result: None,
            error: None,
        });
        let pending = PendingRun {
            run_id: run_id.clone(),
            kind,
            slot,
            attempt,
            trigger_id,
            requested_at: self.now,
        };
        if first {
            self.state.pending.insert(0, pending);
        } else {
            self.state.pending.push(pending);
        }
        run_id
    }

    fn record(
        &mut self,
        kind: RunKind,
        slot: Option<Timestamp>,
        trigger_id: Option<String>,
        status: RunStatus,
        reason: &str,
    ) {
        self.changed = true;
        self.inserts.push(RunRecord {
            run_id: Self::new_run_id(),
            task_id: self.state.definition.id.clone(),
            kind,
            slot,
            slot_until: None,
            slot_count: None,
            attempt: 1,
            fence: self.state.fence,
            worker: Some(self.config.worker.clone()),
            trigger_id,
            claimed_at: None,
            started_at: None,
            finished_at: Some(self.now),
            status,
            reason: Some(reason.to_owned()),
            result: None,
            error: None,
        });
    }

    fn end_run(
        &mut self,
        index: usize,
        status: RunStatus,
        reason: Option<String>,
        result: Option<Value>,
        error: Option<String>,
    ) -> RunLease {
        self.changed = true;
        let lease = self.state.running.remove(index);
        self.updates.push(RunUpdate {
            run_id: lease.run_id.clone(),
            status,
            fence: lease.fence,
            worker: Some(lease.worker.clone()),
            claimed_at: Some(lease.started_at),
            started_at: Some(lease.started_at),
            finished_at: Some(self.now),
            reason,
            result: result.clone(),
            error: error.clone(),
        });
        self.state.last_run = Some(LastRun {
            run_id: lease.run_id.clone(),
            status,
            started_at: lease.started_at,
            finished_at: self.now,
            result,
            error,
        });
        lease
    }

    /// Ends every run whose lease expired as `abandoned`; under `OnAbandon::Retry` queues its next
    /// attempt first in line.
    pub fn reap_expired(&mut self, policy: &TaskPolicy) {
        while let Some(index) = self.state.running.iter().position(|run| run.lease_until <= self.now) {
            let worker = self.state.running[index].worker.clone();
            let lease = self.end_run(
                index,
                RunStatus::Abandoned,
                Some("lease expired".to_owned()),
                None,
                Some(format!(
                    "worker {worker} stopped renewing its lease; the run was abandoned"
                )),
            );
            self.ended.push(lease.run_id.clone());
            if let OnAbandon::Retry { max_attempts } = policy.on_abandon {
                if lease.attempt < max_attempts {
                    self.queue(RunKind::Retry, lease.slot, lease.attempt + 1, lease.trigger_id, true);
                }
            }
        }
    }

    /// Starts the first pending item on this worker if nothing runs. Pending work of a disabled task is
    /// recorded as skipped (`disabled`) rather than silently dropped.
    pub fn start_pending(&mut self) -> bool {
        if !self.state.running.is_empty() {
            return false;
        }
        while !self.state.pending.is_empty() {
            self.changed = true;
            let pending = self.state.pending.remove(0);
            if self.state.enabled {
                self.begin(
                    pending.run_id,
                    pending.kind,
                    pending.slot,
                    pending.attempt,
                    pending.trigger_id,
                    true,
                );
                return true;
            }
            self.updates.push(RunUpdate {
                run_id: pending.run_id,
                status: RunStatus::Skipped,
                fence: self.state.fence,
                worker: Some(self.config.worker.clone()),
                claimed_at: None,
                started_at: None,
                finished_at: Some(self.now),
                reason: Some(REASON_DISABLED.to_owned()),
                result: None,
                error: None,
            });
        }
        false
    }

    /// Claims the slot `slot` of `task` for this worker, accounting for every earlier slot since the
    /// high-water mark under the catch-up policy, and applying the overlap policy. However long the gap,
    /// the work is bounded: runs of more than [`MAX_SINGLE_ROWS`] skipped or missed slots are one range
    /// row, and counting them costs a few steps per day of the gap.
    pub fn claim_slot(&mut self, task: &ScheduledTask, slot: Timestamp) -> SlotOutcome {
        if slot > self.now {
            return SlotOutcome::NotDue(slot - self.now);
        }
        if slot <= self.state.high_water {
            return SlotOutcome::AlreadyAccounted;
        }
        let policy = task.policy();
        self.reap_expired(policy);
        let schedule = task.schedule();
        let previous_mark = self.state.high_water;
        let Some(latest) = schedule
            .latest_at_or_before(slot)
            .filter(|latest| *latest > previous_mark)
        else {
            // No slot of this schedule in (mark, slot] (another worker's definition differs): nothing to do.
            return SlotOutcome::AlreadyAccounted;
        };
        self.changed = true;
        self.state.high_water = latest;
        self.note_definition(task);
        if !self.state.enabled {
            self.account(schedule, previous_mark, latest, RunStatus::Skipped, REASON_DISABLED);
            return SlotOutcome::Skipped(REASON_DISABLED);
        }
        let on_time = latest == slot && self.now - latest <= self.config.misfire_threshold;
        // The newest slot that is late (everything in (mark, newest_late] is late).
        let newest_late = if on_time {
            earlier_slot(schedule, latest).filter(|earlier| *earlier > previous_mark)
        } else {
            Some(latest)
        };
        let age_ok = |candidate: Timestamp, within: std::time::Duration| {
            Duration::from_std(within).is_ok_and(|within| self.now - candidate <= within)
        };
        // The late slots to run after all: the newest ones, walked backwards (bounded by the policy).
        let mut to_run: Vec<(Timestamp, RunKind)> = Vec::new();
        match (policy.catch_up, newest_late) {
            (CatchUp::Latest { within }, Some(newest)) if !on_time && age_ok(newest, within) => {
                to_run.push((newest, RunKind::CatchUp));
            }
            (CatchUp::All { within, max }, Some(newest)) => {
                let mut cursor = Some(newest);
                while let Some(candidate) = cursor.filter(|c| *c > previous_mark && age_ok(*c, within)) {
                    if to_run.len() >= max as usize {
                        break;
                    }
                    to_run.push((candidate, RunKind::CatchUp));
                    cursor = earlier_slot(schedule, candidate);
                }
                to_run.reverse();
            }
            _ => {}
        }
        // Every late slot before the first one that runs is missed.
        if let Some(newest) = newest_late {
            let missed_until = match to_run.first() {
                Some((first, _)) => earlier_slot(schedule, *first).filter(|earlier| *earlier > previous_mark),
                None => Some(newest),
            };
            if let Some(until) = missed_until {
                self.account(schedule, previous_mark, until, RunStatus::Missed, REASON_MISSED);
            }
        }
        if on_time {
            to_run.push((latest, RunKind::Scheduled));
        }
        self.run_or_queue(policy.overlap, to_run)
    }

    /// Records every slot of `schedule` in `(after, until]` as `status` with `reason`: a row per slot
    /// for a short gap, one range row for a long one (see [`MAX_SINGLE_ROWS`]).
    fn account(&mut self, schedule: &Schedule, after: Timestamp, until: Timestamp, status: RunStatus, reason: &str) {
        let count = schedule.count_between(after, until);
        if count == 0 {
            return;
        }
        if count <= MAX_SINGLE_ROWS {
            for slot in schedule.slots_between(after, until, MAX_SINGLE_ROWS as usize) {
                self.record(RunKind::Scheduled, Some(slot), None, status, reason);
            }
            return;
        }
        let (Some(first), Some(last)) = (schedule.next_after(after), schedule.latest_at_or_before(until)) else {
            return;
        };
        self.record(RunKind::Scheduled, Some(first), None, status, reason);
        if let Some(row) = self.inserts.last_mut() {
            row.slot_until = Some(last);
            row.slot_count = Some(count);
        }
    }

    /// Records the slots of `items` (consecutive slots of one schedule, oldest first) as skipped for
    /// overlap: one row each, or one range row when there are more than [`MAX_SINGLE_ROWS`].
    fn skip_for_overlap(&mut self, items: &[(Timestamp, RunKind)]) {
        match items {
            [] => {}
            [(first, kind), .., (last, _)] if items.len() as u64 > MAX_SINGLE_ROWS => {
                self.record(*kind, Some(*first), None, RunStatus::Skipped, REASON_OVERLAP);
                if let Some(row) = self.inserts.last_mut() {
                    row.slot_until = Some(*last);
                    row.slot_count = Some(items.len() as u64);
                }
            }
            _ => {
                for (slot, kind) in items {
                    self.record(*kind, Some(*slot), None, RunStatus::Skipped, REASON_OVERLAP);
                }
            }
        }
    }

    fn run_or_queue(&mut self, overlap: Overlap, to_run: Vec<(Timestamp, RunKind)>) -> SlotOutcome {
        if to_run.is_empty() {
            return SlotOutcome::Missed;
        }
        let queue = |decision: &mut Self, items: &[(Timestamp, RunKind)]| {
            for (slot, kind) in items {
                decision.queue(*kind, Some(*slot), 1, None, false);
            }
        };
        let active = !self.state.running.is_empty();
        match overlap {
            Overlap::AllowConcurrent => {
                for (slot, kind) in to_run {
                    self.start(kind, Some(slot), 1, None);
                }
                SlotOutcome::Started
            }
            Overlap::Skip if active => {
                self.skip_for_overlap(&to_run);
                SlotOutcome::Skipped(REASON_OVERLAP)
            }
            Overlap::BufferOne if active => {
                let buffered = self
                    .state
                    .pending
                    .iter()
                    .any(|p| matches!(p.kind, RunKind::Scheduled | RunKind::CatchUp));
                let (keep, skip) = if buffered {
                    (None, &to_run[..])
                } else {
                    to_run
                        .split_last()
                        .map_or((None, &to_run[..]), |(last, rest)| (Some(*last), rest))
                };
                self.skip_for_overlap(skip);
                match keep {
                    Some(item) => {
                        queue(self, &[item]);
                        SlotOutcome::Buffered
                    }
                    None => SlotOutcome::Skipped(REASON_OVERLAP),
                }
            }
            Overlap::CancelPrevious if active => {
                while !self.state.running.is_empty() {
                    let superseded = format!("superseded by slot {}", to_run[0].0.to_rfc3339());
                    let lease = self.end_run(0, RunStatus::Cancelled, Some(superseded), None, None);
                    self.ended.push(lease.run_id);
                }
                let (first, rest) = (to_run[0], &to_run[1..]);
                self.start(first.1, Some(first.0), 1, None);
                queue(self, rest);
                SlotOutcome::Started
            }
            _ => {
                let (first, rest) = (to_run[0], &to_run[1..]);
                self.start(first.1, Some(first.0), 1, None);
                queue(self, rest);
                SlotOutcome::Started
            }
        }
    }

    /// Records the end of run `run_id` if it still holds the lease with `fence`; then, when `start_next`,
    /// starts the next pending item on this worker.
    #[allow(clippy::too_many_arguments)]
    pub fn finish(
        &mut self,
        policy: &TaskPolicy,
        run_id: &str,
        fence: u64,
        status: RunStatus,
        reason: Option<String>,
        result: Option<Value>,
        error: Option<String>,
        start_next: bool,
    ) -> FinishOutcome {
        let Some(index) = self
            .state
            .running
            .iter()
            .position(|run| run.run_id == run_id && run.fence == fence)
        else {
            return FinishOutcome::Fenced;
        };
        self.end_run(index, status, reason, result, error);
        self.reap_expired(policy);
        if start_next {
            self.start_pending();
        }
        FinishOutcome::Recorded
    }

    /// Renews the leases of these runs; returns the ids of those that no longer hold one.
    pub fn renew(&mut self, runs: &[(String, u64)]) -> Vec<String> {
        let lease_until = self.lease_until();
        let mut lost = Vec::new();
        for (run_id, fence) in runs {
            match self
                .state
                .running
                .iter_mut()
                .find(|run| &run.run_id == run_id && run.fence == *fence && run.lease_until > self.now)
            {
                Some(run) => {
                    run.lease_until = lease_until;
                    self.changed = true;
                }
                None => lost.push(run_id.clone()),
            }
        }
        lost
    }

    /// Accepts a manual trigger (the caller checked the task exists). Coalesces with a pending trigger.
    /// Returns the trigger id and whether it coalesced; errors when the task is disabled.
    pub fn trigger(&mut self) -> Result<(String, bool), TriggerRefused> {
        if !self.state.enabled {
            return Err(TriggerRefused::Disabled);
        }
        if let Some(existing) = self.state.pending_trigger().and_then(|p| p.trigger_id.clone()) {
            return Ok((existing, true));
        }
        let trigger_id = Self::new_run_id();
        self.queue(RunKind::Manual, None, 1, Some(trigger_id.clone()), false);
        Ok((trigger_id, false))
    }

    /// Enables or disables the task. Enabling accounts every slot that came due while it was disabled as
    /// skipped (`disabled`), so they are never caught up.
    pub fn set_enabled(&mut self, enabled: bool) {
        if self.state.enabled == enabled {
            return;
        }
        self.changed = true;
        if enabled {
            if let Ok(schedule) = Schedule::parse(&self.state.definition.schedule, &self.state.definition.timezone) {
                let previous_mark = self.state.high_water;
                self.account(&schedule, previous_mark, self.now, RunStatus::Skipped, REASON_DISABLED);
            }
            self.state.high_water = self.state.high_water.max(self.now);
        }
        self.state.enabled = enabled;
    }

    /// Registers this worker's definition. The newest registration wins (a deploy or a reload takes
    /// effect); when it replaces another worker's different definition, that one is kept as the
    /// reported conflict. Returns whether the stored definition changed.
    pub fn register(&mut self, definition: &TaskDefinition) -> bool {
        let me = self.config.worker.clone();
        if &self.state.definition == definition {
            if self.state.registered_by.is_none() {
                self.state.registered_by = Some(me);
                self.changed = true;
            }
            return false;
        }
        let previous = std::mem::replace(&mut self.state.definition, definition.clone());
        let previous_worker = self.state.registered_by.replace(me.clone());
        // A worker changing its own definition (a restart with new code) is no conflict.
        self.state.conflict = match previous_worker {
            Some(worker) if worker != me => Some(DefinitionConflict {
                worker,
                definition: previous,
                seen_at: self.now,
            }),
            _ => None,
        };
        self.changed = true;
        true
    }

    /// Keeps the conflict report current from a claim's evidence: a worker claiming with a definition
    /// other than the stored one is live and disagrees; a conflict with no evidence for
    /// [`CONFLICT_EVIDENCE_TTL`] is over.
    fn note_definition(&mut self, task: &ScheduledTask) {
        let stored = &self.state.definition;
        let same = stored.schedule == task.schedule().pattern()
            && stored.timezone == task.schedule().timezone().name()
            && stored.description == task.description();
        if !same {
            self.state.conflict = Some(DefinitionConflict {
                worker: self.config.worker.clone(),
                definition: task.definition(),
                seen_at: self.now,
            });
        } else if self
            .state
            .conflict
            .as_ref()
            .is_some_and(|conflict| self.now - conflict.seen_at > Duration::seconds(CONFLICT_EVIDENCE_TTL_SECONDS))
        {
            self.state.conflict = None;
        }
    }
}

/// The slot of `schedule` just before `slot` (slots are whole seconds, so a millisecond earlier is
/// before it and after any earlier slot).
fn earlier_slot(schedule: &Schedule, slot: Timestamp) -> Option<Timestamp> {
    schedule.latest_at_or_before(slot.checked_sub_signed(Duration::milliseconds(1))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{CatchUp, OnAbandon, Overlap, ScheduledTask};
    use chrono::TimeZone;
    use std::time::Duration as StdDuration;

    fn at(second: i64) -> Timestamp {
        Utc.timestamp_opt(1_800_000_000 + second, 0)
            .single()
            .unwrap_or_default()
    }

    use chrono::Utc;

    fn config() -> DecideConfig {
        DecideConfig {
            worker: "w1".to_owned(),
            lease: Duration::seconds(10),
            misfire_threshold: Duration::seconds(2),
        }
    }

    fn task(overlap: Overlap, catch_up: CatchUp, on_abandon: OnAbandon) -> ScheduledTask {
        ScheduledTask::builder("t")
            .schedule("* * * * * *")
            .overlap(overlap)
            .catch_up(catch_up)
            .on_abandon(on_abandon)
            .handler(|_| async { Ok(Value::Null) })
            .build()
            .expect("valid test task")
    }

    fn default_task() -> ScheduledTask {
        task(Overlap::Skip, CatchUp::default(), OnAbandon::Forget)
    }

    fn state() -> TaskState {
        TaskState::new(default_task().definition(), at(0))
    }

    fn statuses(mutation: &Mutation) -> Vec<(Option<Timestamp>, RunStatus, RunKind)> {
        mutation
            .insert_runs
            .iter()
            .map(|run| (run.slot, run.status, run.kind))
            .collect()
    }

    #[test]
    fn on_time_slot_starts_a_run_and_bumps_the_fence() {
        let config = config();
        let mut decision = Decision::new(state(), at(1), &config);
        assert_eq!(decision.claim_slot(&default_task(), at(1)), SlotOutcome::Started);
        assert_eq!(decision.state.fence, 1);
        assert_eq!(decision.state.high_water, at(1));
        assert_eq!(decision.state.running.len(), 1);
        assert_eq!(decision.state.running[0].lease_until, at(11));
        let (mutation, started, _) = decision.into_mutation();
        assert_eq!(
            statuses(&mutation),
            vec![(Some(at(1)), RunStatus::Running, RunKind::Scheduled)]
        );
        assert_eq!(started.len(), 1);
    }

    #[test]
    fn future_and_accounted_slots_change_nothing() {
        let config = config();
        let mut decision = Decision::new(state(), at(1), &config);
        assert_eq!(
            decision.claim_slot(&default_task(), at(3)),
            SlotOutcome::NotDue(Duration::seconds(2))
        );
        assert_eq!(
            decision.claim_slot(&default_task(), at(0)),
            SlotOutcome::AlreadyAccounted
        );
        assert_eq!(decision.into_mutation().0, Mutation::none());
    }

    #[test]
    fn a_claim_accounts_for_every_earlier_slot() {
        let config = config();
        let mut decision = Decision::new(state(), at(5), &config);
        assert_eq!(decision.claim_slot(&default_task(), at(5)), SlotOutcome::Started);
        let (mutation, _, _) = decision.into_mutation();
        let rows = statuses(&mutation);
        assert_eq!(rows.len(), 5);
        assert_eq!(
            &rows[..4],
            &(1..5)
                .map(|s| (Some(at(s)), RunStatus::Missed, RunKind::Scheduled))
                .collect::<Vec<_>>()[..]
        );
        assert_eq!(rows[4], (Some(at(5)), RunStatus::Running, RunKind::Scheduled));
    }

    #[test]
    fn catch_up_policies_for_a_late_slot() {
        let config = config();
        // Slot 5 claimed at 10: 5 s late, beyond the 2 s misfire threshold.
        let cases = [
            (CatchUp::Skip, vec![]),
            (
                CatchUp::Latest {
                    within: StdDuration::from_secs(60),
                },
                vec![at(5)],
            ),
            (
                CatchUp::Latest {
                    within: StdDuration::from_secs(3),
                },
                vec![],
            ),
            (
                CatchUp::All {
                    within: StdDuration::from_secs(60),
                    max: 2,
                },
                vec![at(4), at(5)],
            ),
            (
                CatchUp::All {
                    within: StdDuration::from_secs(7),
                    max: 10,
                },
                vec![at(3), at(4), at(5)],
            ),
        ];
        for (catch_up, expected_runs) in cases {
            let task = task(Overlap::Skip, catch_up, OnAbandon::Forget);
            let mut decision = Decision::new(state(), at(10), &config);
            decision.claim_slot(&task, at(5));
            let mut ran: Vec<Timestamp> = decision.state.running.iter().filter_map(|run| run.slot).collect();
            ran.extend(decision.state.pending.iter().filter_map(|pending| pending.slot));
            assert_eq!(ran, expected_runs, "{catch_up:?}");
            let (mutation, _, _) = decision.into_mutation();
            let missed = mutation
                .insert_runs
                .iter()
                .filter(|run| run.status == RunStatus::Missed)
                .count();
            assert_eq!(
                missed,
                5 - expected_runs.len(),
                "{catch_up:?}: every slot is run or missed"
            );
            assert!(mutation
                .insert_runs
                .iter()
                .filter(|run| run.status == RunStatus::Running)
                .all(|run| run.kind == RunKind::CatchUp));
        }
    }

    fn running_state(overlap: Overlap) -> (ScheduledTask, TaskState) {
        let task = task(overlap, CatchUp::default(), OnAbandon::Forget);
        let config = config();
        let mut decision = Decision::new(state(), at(1), &config);
        decision.claim_slot(&task, at(1));
        (task, decision.state)
    }

    #[test]
    fn overlap_policies() {
        let config = config();
        let (task, busy) = running_state(Overlap::Skip);
        let mut decision = Decision::new(busy, at(2), &config);
        assert_eq!(decision.claim_slot(&task, at(2)), SlotOutcome::Skipped(REASON_OVERLAP));

        let (task, busy) = running_state(Overlap::BufferOne);
        let mut decision = Decision::new(busy, at(2), &config);
        assert_eq!(decision.claim_slot(&task, at(2)), SlotOutcome::Buffered);
        decision.now = at(3);
        assert_eq!(decision.claim_slot(&task, at(3)), SlotOutcome::Skipped(REASON_OVERLAP));
        assert_eq!(decision.state.pending.len(), 1);
        assert_eq!(decision.state.pending[0].slot, Some(at(2)));

        let (task, busy) = running_state(Overlap::AllowConcurrent);
        let mut decision = Decision::new(busy, at(2), &config);
        assert_eq!(decision.claim_slot(&task, at(2)), SlotOutcome::Started);
        assert_eq!(decision.state.running.len(), 2);

        let (task, busy) = running_state(Overlap::CancelPrevious);
        let previous = busy.running[0].run_id.clone();
        let mut decision = Decision::new(busy, at(2), &config);
        assert_eq!(decision.claim_slot(&task, at(2)), SlotOutcome::Started);
        assert_eq!(decision.state.running.len(), 1);
        assert_eq!(decision.ended, vec![previous.clone()]);
        let (mutation, _, _) = decision.into_mutation();
        assert!(mutation
            .update_runs
            .iter()
            .any(|finish| finish.run_id == previous && finish.status == RunStatus::Cancelled));
    }

    #[test]
    fn completion_is_fenced_and_starts_pending_work() {
        let config = config();
        let (task, busy) = running_state(Overlap::BufferOne);
        let lease = busy.running[0].clone();
        let mut decision = Decision::new(busy.clone(), at(2), &config);
        decision.claim_slot(&task, at(2));
        let buffered = decision.state.clone();

        let mut stale = Decision::new(buffered.clone(), at(3), &config);
        let outcome = stale.finish(
            task.policy(),
            &lease.run_id,
            lease.fence + 1,
            RunStatus::Succeeded,
            None,
            None,
            None,
            true,
        );
        assert_eq!(outcome, FinishOutcome::Fenced);
        assert_eq!(
            stale.into_mutation().0,
            Mutation::none(),
            "a fenced completion writes nothing"
        );

        let mut decision = Decision::new(buffered, at(3), &config);
        let outcome = decision.finish(
            task.policy(),
            &lease.run_id,
            lease.fence,
            RunStatus::Succeeded,
            None,
            Some(Value::from(7)),
            None,
            true,
        );
        assert_eq!(outcome, FinishOutcome::Recorded);
        assert_eq!(decision.state.running.len(), 1, "the buffered slot starts right away");
        assert_eq!(decision.state.running[0].slot, Some(at(2)));
        assert_eq!(
            decision.state.last_run.as_ref().map(|last| last.result.clone()),
            Some(Some(Value::from(7)))
        );
    }

    #[test]
    fn expired_leases_are_abandoned_and_retried_up_to_the_limit() {
        let config = config();
        let task = task(Overlap::Skip, CatchUp::default(), OnAbandon::Retry { max_attempts: 2 });
        let mut decision = Decision::new(state(), at(1), &config);
        decision.claim_slot(&task, at(1));
        let mut decision = Decision::new(decision.state, at(12), &config);
        decision.reap_expired(task.policy());
        assert!(decision.start_pending());
        assert_eq!(decision.state.running[0].attempt, 2);
        assert_eq!(decision.state.running[0].kind, RunKind::Retry);
        assert_eq!(decision.state.running[0].slot, Some(at(1)));
        let mut decision = Decision::new(decision.state, at(30), &config);
        decision.reap_expired(task.policy());
        assert!(!decision.start_pending(), "no third attempt");
        let (mutation, _, _) = decision.into_mutation();
        assert_eq!(mutation.update_runs[0].status, RunStatus::Abandoned);
    }

    #[test]
    fn renewal_extends_live_leases_only() {
        let config = config();
        let (_, busy) = running_state(Overlap::Skip);
        let lease = busy.running[0].clone();
        let mut decision = Decision::new(busy.clone(), at(5), &config);
        assert!(decision.renew(&[(lease.run_id.clone(), lease.fence)]).is_empty());
        assert_eq!(decision.state.running[0].lease_until, at(15));
        let mut late = Decision::new(busy, at(11), &config);
        assert_eq!(late.renew(&[(lease.run_id.clone(), lease.fence)]), vec![lease.run_id]);
    }

    #[test]
    fn triggers_coalesce_and_are_refused_when_disabled() {
        let config = config();
        let mut decision = Decision::new(state(), at(1), &config);
        let (first, coalesced) = decision.trigger().expect("enabled");
        assert!(!coalesced);
        let (second, coalesced) = decision.trigger().expect("enabled");
        assert!(coalesced);
        assert_eq!(first, second);
        decision.set_enabled(false);
        assert!(decision.trigger().is_err());
    }

    #[test]
    fn enabling_accounts_disabled_slots_as_skipped() {
        let config = config();
        let mut decision = Decision::new(state(), at(0), &config);
        decision.set_enabled(false);
        let mut decision = Decision::new(decision.state, at(3), &config);
        decision.set_enabled(true);
        assert_eq!(decision.state.high_water, at(3));
        let (mutation, _, _) = decision.into_mutation();
        assert_eq!(
            statuses(&mutation),
            (1..=3)
                .map(|s| (Some(at(s)), RunStatus::Skipped, RunKind::Scheduled))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn queued_work_is_in_the_history_at_once_and_starts_in_place() {
        let config = config();
        let (task, busy) = running_state(Overlap::BufferOne);
        let lease = busy.running[0].clone();
        let mut decision = Decision::new(busy, at(2), &config);
        decision.claim_slot(&task, at(2));
        let (mutation, _, _) = decision.into_mutation();
        let pending = mutation
            .insert_runs
            .iter()
            .find(|run| run.slot == Some(at(2)))
            .expect("a row for slot 2");
        assert_eq!(pending.status, RunStatus::Pending);
        let buffered = mutation.state.expect("state changed");
        assert_eq!(buffered.pending[0].run_id, pending.run_id);
        let mut decision = Decision::new(buffered, at(3), &config);
        decision.finish(
            task.policy(),
            &lease.run_id,
            lease.fence,
            RunStatus::Succeeded,
            None,
            None,
            None,
            true,
        );
        let (mutation, started, _) = decision.into_mutation();
        assert!(
            mutation.insert_runs.is_empty(),
            "starting pending work inserts no second row"
        );
        let starting = mutation
            .update_runs
            .iter()
            .find(|update| update.run_id == pending.run_id)
            .expect("the pending row is updated");
        assert_eq!(starting.status, RunStatus::Running);
        assert_eq!(started[0].run_id, pending.run_id);
    }

    #[test]
    fn the_newest_definition_wins_and_the_other_is_reported() {
        let first = config();
        let mut decision = Decision::new(state(), at(1), &first);
        assert!(!decision.register(&default_task().definition()));
        assert_eq!(decision.state.registered_by.as_deref(), Some("w1"));
        let mut other = default_task().definition();
        other.schedule = "*/2 * * * * *".to_owned();
        // The same worker changing its own definition (a restart with new code): no conflict.
        assert!(decision.register(&other));
        assert_eq!(decision.state.conflict, None);
        let second = DecideConfig {
            worker: "w2".to_owned(),
            ..config()
        };
        let mut decision = Decision::new(decision.state, at(2), &second);
        assert!(decision.register(&default_task().definition()));
        assert_eq!(decision.state.definition.schedule, "* * * * * *");
        let conflict = decision.state.conflict.clone().expect("w1's definition differs");
        assert_eq!(
            (conflict.worker.as_str(), conflict.definition.schedule.as_str()),
            ("w1", "*/2 * * * * *")
        );
        // Claims by workers that agree clear the conflict once the evidence is old.
        let later_at = at(2 + CONFLICT_EVIDENCE_TTL_SECONDS + 1);
        let mut later = Decision::new(decision.state, later_at, &second);
        later.claim_slot(&default_task(), later_at);
        assert_eq!(later.state.conflict, None);
    }

    #[test]
    fn an_absurd_lease_saturates_instead_of_panicking() {
        let config = DecideConfig {
            lease: Duration::days(100_000_000),
            ..config()
        };
        let mut decision = Decision::new(state(), at(1), &config);
        assert_eq!(decision.claim_slot(&default_task(), at(1)), SlotOutcome::Started);
        assert_eq!(decision.state.running[0].lease_until, chrono::DateTime::<Utc>::MAX_UTC);
        let lease = decision.state.running[0].clone();
        assert!(decision.renew(&[(lease.run_id, lease.fence)]).is_empty());
    }

    fn rows(mutation: &Mutation) -> Vec<(Option<Timestamp>, Option<Timestamp>, u64, RunStatus)> {
        mutation
            .insert_runs
            .iter()
            .map(|run| (run.slot, run.slot_until, run.slots_accounted(), run.status))
            .collect()
    }

    #[test]
    fn enabling_after_thirty_days_writes_one_range_row() {
        let config = config();
        let mut decision = Decision::new(state(), at(0), &config);
        decision.set_enabled(false);
        let thirty_days = 30 * 86_400;
        let started = std::time::Instant::now();
        let mut decision = Decision::new(decision.state, at(thirty_days), &config);
        decision.set_enabled(true);
        let elapsed = started.elapsed();
        assert_eq!(decision.state.high_water, at(thirty_days));
        let (mutation, _, _) = decision.into_mutation();
        assert_eq!(
            rows(&mutation),
            vec![(
                Some(at(1)),
                Some(at(thirty_days)),
                thirty_days as u64,
                RunStatus::Skipped
            )]
        );
        assert_eq!(mutation.insert_runs[0].reason.as_deref(), Some(REASON_DISABLED));
        // Bounded work (2.6 million slots are counted, not walked); loose for unoptimised builds.
        assert!(elapsed < std::time::Duration::from_secs(2), "{elapsed:?}");
    }

    #[test]
    fn short_gaps_keep_a_row_per_slot_and_long_ones_become_ranges() {
        let config = config();
        let gap = MAX_SINGLE_ROWS as i64;
        // A gap of exactly MAX_SINGLE_ROWS late slots before an on-time one: a row each.
        let mut decision = Decision::new(state(), at(gap + 1), &config);
        let task = task(Overlap::Skip, CatchUp::Skip, OnAbandon::Forget);
        assert_eq!(decision.claim_slot(&task, at(gap + 1)), SlotOutcome::Started);
        let (mutation, _, _) = decision.into_mutation();
        assert_eq!(mutation.insert_runs.len(), MAX_SINGLE_ROWS as usize + 1);
        assert!(mutation.insert_runs.iter().all(|run| run.slot_until.is_none()));
        // One more: the missed slots become one range row.
        let mut decision = Decision::new(state(), at(gap + 2), &config);
        assert_eq!(decision.claim_slot(&task, at(gap + 2)), SlotOutcome::Started);
        let (mutation, _, _) = decision.into_mutation();
        assert_eq!(
            rows(&mutation),
            vec![
                (Some(at(1)), Some(at(gap + 1)), gap as u64 + 1, RunStatus::Missed),
                (Some(at(gap + 2)), None, 1, RunStatus::Running),
            ]
        );
    }

    #[test]
    fn a_week_long_outage_is_accounted_in_a_few_rows_under_every_catch_up_policy() {
        let config = config();
        let week = 7 * 86_400;
        let cases = [
            (CatchUp::Skip, 0u64),
            (
                CatchUp::Latest {
                    within: StdDuration::from_secs(3600),
                },
                0,
            ),
            (
                CatchUp::All {
                    within: StdDuration::from_secs(30),
                    max: 5,
                },
                5,
            ),
        ];
        for (catch_up, caught_up) in cases {
            let task = task(Overlap::AllowConcurrent, catch_up, OnAbandon::Forget);
            let mut decision = Decision::new(state(), at(week), &config);
            assert_eq!(
                decision.claim_slot(&task, at(week)),
                SlotOutcome::Started,
                "{catch_up:?}"
            );
            let (mutation, started, _) = decision.into_mutation();
            assert!(mutation.insert_runs.len() <= 7, "{catch_up:?}: {:?}", rows(&mutation));
            let accounted: u64 = mutation.insert_runs.iter().map(RunRecord::slots_accounted).sum();
            assert_eq!(accounted, week as u64, "{catch_up:?}: every slot exactly once");
            assert_eq!(started.len() as u64, caught_up + 1, "{catch_up:?}");
            let covered = |slot: i64| mutation.insert_runs.iter().filter(|run| run.covers(at(slot))).count();
            for slot in [1, 2, week / 2, week - 6, week - 1, week] {
                assert_eq!(covered(slot), 1, "{catch_up:?}: slot {slot}");
            }
        }
    }

    #[test]
    fn a_late_claim_after_a_long_disable_is_one_skipped_range() {
        let config = config();
        let mut decision = Decision::new(state(), at(0), &config);
        decision.set_enabled(false);
        let day = 86_400;
        let mut decision = Decision::new(decision.state, at(day), &config);
        assert_eq!(
            decision.claim_slot(&default_task(), at(day)),
            SlotOutcome::Skipped(REASON_DISABLED)
        );
        let (mutation, _, _) = decision.into_mutation();
        assert_eq!(
            rows(&mutation),
            vec![(Some(at(1)), Some(at(day)), day as u64, RunStatus::Skipped)]
        );
    }
}

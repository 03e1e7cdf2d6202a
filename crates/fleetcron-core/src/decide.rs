//! The policy decisions, as pure functions of a task's stored state and the store's clock.
//!
//! Every change to a task goes through a [`Decision`] opened on the stored [`TaskState`]: claims of slots,
//! the start of pending work, completions (guarded by the fence), lease renewals, abandonment, triggers,
//! enable/disable and registration. The engine runs these inside [`Store::mutate`](crate::Store::mutate), so
//! they see a consistent state and their writes land atomically. Nothing here does I/O or reads a clock.

use crate::model::{
    DefinitionConflict, LastRun, PendingRun, RunFinish, RunKind, RunLease, RunRecord, RunStatus, TaskState, Timestamp,
};
use crate::schedule::Schedule;
use crate::store::Mutation;
use crate::task::{CatchUp, OnAbandon, Overlap, ScheduledTask, TaskDefinition, TaskPolicy};
use chrono::Duration;
use serde_json::Value;

/// Most slots one decision accounts for; a longer gap is worked through in several mutations.
pub const MAX_SLOTS_PER_DECISION: usize = 10_000;

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
    /// A long gap was partly accounted for; call again for the rest.
    Progress,
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
    finishes: Vec<RunFinish>,
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
            finishes: Vec::new(),
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
                finish_runs: self.finishes,
            }
        } else {
            Mutation::none()
        };
        (mutation, self.started, self.ended)
    }

    fn new_run_id() -> String {
        uuid::Uuid::now_v7().to_string()
    }

    fn start(&mut self, kind: RunKind, slot: Option<Timestamp>, attempt: u32, trigger_id: Option<String>) {
        self.changed = true;
        self.state.fence += 1;
        let lease = RunLease {
            run_id: Self::new_run_id(),
            fence: self.state.fence,
            worker: self.config.worker.clone(),
            kind,
            slot,
            attempt,
            trigger_id: trigger_id.clone(),
            started_at: self.now,
            lease_until: self.now + self.config.lease,
        };
        self.inserts.push(RunRecord {
            run_id: lease.run_id.clone(),
            task_id: self.state.definition.id.clone(),
            kind,
            slot,
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
        self.state.last_started_at = Some(self.now);
        self.state.running.push(lease.clone());
        self.started.push(lease);
    }

    fn record(&mut self, kind: RunKind, slot: Option<Timestamp>, trigger_id: Option<String>, status: RunStatus, reason: &str) {
        self.changed = true;
        self.inserts.push(RunRecord {
            run_id: Self::new_run_id(),
            task_id: self.state.definition.id.clone(),
            kind,
            slot,
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

    fn end_run(&mut self, index: usize, status: RunStatus, reason: Option<String>, result: Option<Value>, error: Option<String>) -> RunLease {
        self.changed = true;
        let lease = self.state.running.remove(index);
        self.finishes.push(RunFinish {
            run_id: lease.run_id.clone(),
            status,
            finished_at: self.now,
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
                Some(format!("worker {worker} stopped renewing its lease; the run was abandoned")),
            );
            self.ended.push(lease.run_id.clone());
            if let OnAbandon::Retry { max_attempts } = policy.on_abandon {
                if lease.attempt < max_attempts {
                    self.state.pending.insert(
                        0,
                        PendingRun {
                            kind: RunKind::Retry,
                            slot: lease.slot,
                            attempt: lease.attempt + 1,
                            trigger_id: lease.trigger_id,
                            requested_at: self.now,
                        },
                    );
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
                self.start(pending.kind, pending.slot, pending.attempt, pending.trigger_id);
                return true;
            }
            self.record(pending.kind, pending.slot, pending.trigger_id, RunStatus::Skipped, REASON_DISABLED);
        }
        false
    }

    /// Claims the slot `slot` of `task` for this worker, accounting for every earlier slot since the
    /// high-water mark under the catch-up policy, and applying the overlap policy.
    pub fn claim_slot(&mut self, task: &ScheduledTask, slot: Timestamp) -> SlotOutcome {
        if slot > self.now {
            return SlotOutcome::NotDue(slot - self.now);
        }
        if slot <= self.state.high_water {
            return SlotOutcome::AlreadyAccounted;
        }
        let policy = task.policy();
        self.reap_expired(policy);
        let candidates = task
            .schedule()
            .slots_between(self.state.high_water, slot, MAX_SLOTS_PER_DECISION);
        let Some(&latest) = candidates.last() else {
            // `slot` is not a slot of this schedule (another worker's definition differs): nothing to do.
            return SlotOutcome::AlreadyAccounted;
        };
        self.changed = true;
        self.state.high_water = latest;
        if !self.state.enabled {
            for candidate in &candidates {
                self.record(RunKind::Scheduled, Some(*candidate), None, RunStatus::Skipped, REASON_DISABLED);
            }
            return if latest < slot { SlotOutcome::Progress } else { SlotOutcome::Skipped(REASON_DISABLED) };
        }
        let on_time = latest == slot && self.now - latest <= self.config.misfire_threshold;
        let late = if on_time { &candidates[..candidates.len() - 1] } else { &candidates[..] };
        let age_ok = |candidate: &Timestamp, within: std::time::Duration| {
            Duration::from_std(within).is_ok_and(|within| self.now - *candidate <= within)
        };
        let mut to_run: Vec<(Timestamp, RunKind)> = Vec::new();
        let mut missed: Vec<Timestamp> = Vec::new();
        match policy.catch_up {
            CatchUp::Skip => missed.extend_from_slice(late),
            CatchUp::Latest { within } => match late.split_last() {
                Some((newest, older)) if !on_time && age_ok(newest, within) => {
                    missed.extend_from_slice(older);
                    to_run.push((*newest, RunKind::CatchUp));
                }
                _ => missed.extend_from_slice(late),
            },
            CatchUp::All { within, max } => {
                let eligible: Vec<Timestamp> = late.iter().copied().filter(|c| age_ok(c, within)).collect();
                let keep_from = eligible.len().saturating_sub(max as usize);
                let kept = &eligible[keep_from..];
                missed.extend(late.iter().copied().filter(|c| !kept.contains(c)));
                to_run.extend(kept.iter().map(|c| (*c, RunKind::CatchUp)));
            }
        }
        if on_time {
            to_run.push((latest, RunKind::Scheduled));
        }
        for candidate in missed {
            self.record(RunKind::Scheduled, Some(candidate), None, RunStatus::Missed, REASON_MISSED);
        }
        let outcome = self.run_or_queue(policy.overlap, to_run);
        if latest < slot {
            SlotOutcome::Progress
        } else {
            outcome
        }
    }

    fn run_or_queue(&mut self, overlap: Overlap, to_run: Vec<(Timestamp, RunKind)>) -> SlotOutcome {
        if to_run.is_empty() {
            return SlotOutcome::Missed;
        }
        let queue = |decision: &mut Self, items: &[(Timestamp, RunKind)]| {
            for (slot, kind) in items {
                decision.state.pending.push(PendingRun {
                    kind: *kind,
                    slot: Some(*slot),
                    attempt: 1,
                    trigger_id: None,
                    requested_at: decision.now,
                });
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
                for (slot, kind) in to_run {
                    self.record(kind, Some(slot), None, RunStatus::Skipped, REASON_OVERLAP);
                }
                SlotOutcome::Skipped(REASON_OVERLAP)
            }
            Overlap::BufferOne if active => {
                let buffered = self.state.pending.iter().any(|p| matches!(p.kind, RunKind::Scheduled | RunKind::CatchUp));
                let (keep, skip) = if buffered { (None, &to_run[..]) } else { to_run.split_last().map_or((None, &to_run[..]), |(last, rest)| (Some(*last), rest)) };
                for (slot, kind) in skip {
                    self.record(*kind, Some(*slot), None, RunStatus::Skipped, REASON_OVERLAP);
                }
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
    pub fn finish(&mut self, policy: &TaskPolicy, run_id: &str, fence: u64, status: RunStatus, reason: Option<String>, result: Option<Value>, error: Option<String>, start_next: bool) -> FinishOutcome {
        let Some(index) = self.state.running.iter().position(|run| run.run_id == run_id && run.fence == fence) else {
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
        let mut lost = Vec::new();
        for (run_id, fence) in runs {
            match self.state.running.iter_mut().find(|run| &run.run_id == run_id && run.fence == *fence && run.lease_until > self.now) {
                Some(run) => {
                    run.lease_until = self.now + self.config.lease;
                    self.changed = true;
                }
                None => lost.push(run_id.clone()),
            }
        }
        lost
    }

    /// Accepts a manual trigger (the caller checked the task exists). Coalesces with a pending trigger.
    /// Returns the trigger id and whether it coalesced; errors when the task is disabled.
    pub fn trigger(&mut self) -> Result<(String, bool), ()> {
        if !self.state.enabled {
            return Err(());
        }
        if let Some(existing) = self.state.pending_trigger().and_then(|p| p.trigger_id.clone()) {
            return Ok((existing, true));
        }
        let trigger_id = Self::new_run_id();
        self.changed = true;
        self.state.pending.push(PendingRun {
            kind: RunKind::Manual,
            slot: None,
            attempt: 1,
            trigger_id: Some(trigger_id.clone()),
            requested_at: self.now,
        });
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
                loop {
                    let slots = schedule.slots_between(self.state.high_water, self.now, MAX_SLOTS_PER_DECISION);
                    let Some(&last) = slots.last() else { break };
                    for slot in slots {
                        self.record(RunKind::Scheduled, Some(slot), None, RunStatus::Skipped, REASON_DISABLED);
                    }
                    self.state.high_water = last;
                }
            }
            self.state.high_water = self.state.high_water.max(self.now);
        }
        self.state.enabled = enabled;
    }

    /// Registers this worker's definition: notes a conflict when it differs from the stored one.
    pub fn register(&mut self, definition: &TaskDefinition) -> bool {
        if &self.state.definition == definition {
            if self.state.conflict.as_ref().is_some_and(|c| c.worker == self.config.worker) {
                self.state.conflict = None;
                self.changed = true;
            }
            return false;
        }
        self.state.conflict = Some(DefinitionConflict {
            worker: self.config.worker.clone(),
            definition: definition.clone(),
            seen_at: self.now,
        });
        self.changed = true;
        true
    }
}

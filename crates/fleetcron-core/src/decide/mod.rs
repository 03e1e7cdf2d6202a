//! The policy decisions, as pure functions of a task's stored state and the store's clock.
//!
//! Every change to a task goes through a [`Decision`] opened on the stored [`TaskState`]: claims of slots,
//! the start of pending work, completions (guarded by the fence), lease renewals, abandonment, triggers,
//! enable/disable and registration. The engine runs these inside [`Store::mutate`](crate::Store::mutate), so
//! they see a consistent state and their writes land atomically. Nothing here does I/O or reads a clock.

use crate::model::{
    DefinitionConflict, LastRun, PendingRun, PrunePlan, Retention, RunKind, RunLease, RunRecord, RunStatus, RunUpdate,
    TaskState, Timestamp,
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
    ids: RunIds,
}

/// Mints the run (and trigger) ids of one decision as UUIDv7 from the store's time and an injected seed,
/// so the decision stays a pure function of its inputs and the history sorts by the store's clock: the
/// 48-bit timestamp is the store's `now` in milliseconds, the next 26 bits count the ids of this
/// decision (their order is their order of creation), and the last 48 bits are the seed's (distinct
/// across decisions: the engine draws a fresh seed for every attempt of every mutation).
///
/// Ids of one task only grow: a decision starts after the greatest id its state knows (`floor`), taking
/// that id's millisecond and the next sequence number when the store's clock has not passed it, so two
/// decisions in the same millisecond (a trigger right after a claim) still sort in the order they were
/// made.
#[derive(Debug, Clone)]
struct RunIds {
    millis: u64,
    random: u64,
    next: u32,
    last: Option<u128>,
}

/// Largest sequence number of one millisecond (26 bits).
const MAX_SEQUENCE: u32 = 0x3FF_FFFF;

impl RunIds {
    fn new(now: Timestamp, seed: u64, floor: Option<u128>) -> Self {
        let mut millis = u64::try_from(now.timestamp_millis()).unwrap_or(0) & 0xFFFF_FFFF_FFFF;
        let mut next = 0;
        if let Some(floor) = floor {
            let floor_millis = (floor >> 80) as u64;
            let floor_sequence = ((((floor >> 64) & 0xFFF) << 14) | ((floor >> 48) & 0x3FFF)) as u32;
            if millis <= floor_millis {
                if floor_sequence >= MAX_SEQUENCE {
                    millis = (floor_millis + 1) & 0xFFFF_FFFF_FFFF;
                } else {
                    millis = floor_millis;
                    next = floor_sequence + 1;
                }
            }
        }
        Self {
            millis,
            random: seed & 0xFFFF_FFFF_FFFF,
            next,
            last: None,
        }
    }

    /// The greatest id among `ids` that parses as one of ours.
    fn floor<'s>(ids: impl Iterator<Item = &'s str>) -> Option<u128> {
        ids.filter_map(|id| uuid::Uuid::parse_str(id).ok())
            .map(|id| id.as_u128())
            .max()
    }

    fn mint(&mut self) -> String {
        let sequence = u128::from(self.next.min(MAX_SEQUENCE));
        self.next = self.next.saturating_add(1);
        // 48 bits of time | version 7 | 12 bits (sequence, high) | variant 0b10 | 14 bits (sequence, low)
        // | 48 bits of seed.
        let value = (u128::from(self.millis) << 80)
            | (0x7 << 76)
            | ((sequence >> 14) << 64)
            | (0b10 << 62)
            | ((sequence & 0x3FFF) << 48)
            | u128::from(self.random);
        self.last = Some(value);
        uuid::Uuid::from_u128(value).to_string()
    }
}

/// The greatest id a task's state knows: its `last_id`, or for documents written before that field, the
/// ids of its running, pending and last runs.
fn task_id_floor(state: &TaskState) -> Option<u128> {
    let known = state
        .last_id
        .as_deref()
        .into_iter()
        .chain(state.running.iter().map(|run| run.run_id.as_str()))
        .chain(state.pending.iter().map(|pending| pending.run_id.as_str()))
        .chain(state.pending.iter().filter_map(|pending| pending.trigger_id.as_deref()))
        .chain(state.last_run.iter().map(|run| run.run_id.as_str()));
    RunIds::floor(known)
}

impl<'a> Decision<'a> {
    /// Opens a decision on a stored state at the store's `now`. The run ids it mints take their time from
    /// `now` and their random part from `seed`: a decision reads no clock and no random source, so equal
    /// inputs give equal decisions (the engine draws a fresh seed for every attempt of a mutation).
    pub fn new(state: TaskState, now: Timestamp, config: &'a DecideConfig, seed: u64) -> Self {
        let floor = task_id_floor(&state);
        Self {
            state,
            now,
            config,
            changed: false,
            inserts: Vec::new(),
            updates: Vec::new(),
            started: Vec::new(),
            ended: Vec::new(),
            ids: RunIds::new(now, seed, floor),
        }
    }

    /// Opens a decision that creates a task's state.
    pub fn create(state: TaskState, now: Timestamp, config: &'a DecideConfig, seed: u64) -> Self {
        let mut decision = Self::new(state, now, config, seed);
        decision.changed = true;
        decision
    }

    /// The store's time this decision is made at.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// The writes to commit (nothing when the state did not change).
    pub fn into_mutation(mut self) -> (Mutation, Vec<RunLease>, Vec<String>) {
        let mutation = if self.changed {
            if let Some(last) = self.ids.last {
                self.state.last_id = Some(uuid::Uuid::from_u128(last).to_string());
            }
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

    fn new_run_id(&mut self) -> String {
        self.ids.mint()
    }

    fn start(&mut self, kind: RunKind, slot: Option<Timestamp>, attempt: u32, trigger_id: Option<String>) {
        let run_id = self.new_run_id();
        self.begin(run_id, kind, slot, attempt, trigger_id, false);
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
        let run_id = self.new_run_id();
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
        let run_id = self.new_run_id();
        self.inserts.push(RunRecord {
            run_id,
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
        let trigger_id = self.new_run_id();
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
            if let Ok(schedule) =
                Schedule::parse_registered(&self.state.definition.schedule, &self.state.definition.timezone)
            {
                let previous_mark = self.state.high_water;
                self.account(&schedule, previous_mark, self.now, RunStatus::Skipped, REASON_DISABLED);
            }
            self.state.high_water = self.state.high_water.max(self.now);
        }
        self.state.enabled = enabled;
    }

    /// Sets the operator's note (see [`crate::model::TaskNote`]); `None` clears it. Call after
    /// [`Decision::set_enabled`], so the note records the state it explains.
    pub fn set_note(&mut self, text: Option<&str>) {
        let note = text.map(|text| crate::model::TaskNote {
            text: crate::engine::bound_text(text.to_owned(), crate::model::MAX_NOTE_BYTES),
            enabled: self.state.enabled,
            at: self.now,
        });
        if self.state.note != note {
            self.changed = true;
            self.state.note = note;
        }
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

/// What a pruning under `retention` deletes at the store's `now`: rows that finished more than
/// `max_age` ago, then all but the newest `keep_last` finished rows per task. The only place retention
/// is decided; stores execute the plan.
pub fn prune_plan(retention: &Retention, now: Timestamp) -> PrunePlan {
    PrunePlan {
        finished_before: retention
            .max_age
            .and_then(|age| Duration::from_std(age).ok())
            .and_then(|age| now.checked_sub_signed(age)),
        keep_last: retention.keep_last,
    }
}

/// The slot of `schedule` just before `slot` (slots are whole seconds, so a millisecond earlier is
/// before it and after any earlier slot).
fn earlier_slot(schedule: &Schedule, slot: Timestamp) -> Option<Timestamp> {
    schedule.latest_at_or_before(slot.checked_sub_signed(Duration::milliseconds(1))?)
}

#[cfg(test)]
mod tests;

//! The engine's metrics and its per-run tracing span: every metric name and label set is defined here,
//! once, and the engine calls the small functions below.
//!
//! Metrics go through the [`metrics`](https://docs.rs/metrics) facade: the library installs no recorder,
//! so a service that embeds fleetcron exports them through its own (the `fleetcron` binary installs a
//! Prometheus recorder and serves `/metrics`). Without a recorder every call is a no-op.
//!
//! # Labels (all bounded)
//! * `task`: a registered task id (user-defined, bounded by the tasks the fleet registers). Never a run
//!   id, a trigger id, a worker id or an error text. An admin call for an id the store does not know is
//!   counted with `task=""`, so a client guessing ids cannot grow the label set.
//! * `store`: the backend kind (`sqlite`, `postgres`, `mysql`, `redis`, `memory`, or `custom`), never a URL.
//! * `status`, `kind`, `reason`, `outcome`, `error`: the fixed vocabularies documented on each name.
//!
//! # Counting rule
//! Counters that mirror the history (runs started and finished, slots skipped and missed, abandoned
//! runs) are counted from what a committed store mutation wrote, by the worker that wrote it, so their
//! sum over the fleet equals the history (a range row counts its `slot_count` slots). A mutation the
//! store retried counts once: only the committed attempt is counted.

use crate::decide::{REASON_DISABLED, REASON_MISSED, REASON_OVERLAP};
use crate::model::{RunKind, RunStatus};
use crate::store::Mutation;
use ::metrics::{counter, gauge, histogram};
use std::time::Duration;

/// Counter `{task, store, kind}`: runs whose handler this worker started (`kind`: `scheduled`,
/// `manual`, `catch_up`, `retry`). Summed over the fleet: the history rows whose status shows a start.
pub const RUNS_STARTED: &str = "fleetcron_runs_started_total";
/// Counter `{task, store, status}`: runs whose end was recorded (`status`: `succeeded`, `failed`,
/// `timed_out`, `cancelled`, `abandoned`), counted by the worker that wrote the end (the reaper for
/// `abandoned`).
pub const RUNS_FINISHED: &str = "fleetcron_runs_finished_total";
/// Histogram `{task, store, kind}`, seconds: from a run's slot to its handler's start, by the store's
/// clock (runs with a slot only: scheduled, catch-up and retry runs).
pub const START_LAG: &str = "fleetcron_start_lag_seconds";
/// Histogram `{task, store, status}`, seconds: how long handlers ran on this worker.
pub const RUN_DURATION: &str = "fleetcron_run_duration_seconds";
/// Counter `{task, store, reason}`: slots recorded skipped (`reason`: `overlap`, `disabled`); a range
/// row adds its `slot_count`.
pub const SLOTS_SKIPPED: &str = "fleetcron_slots_skipped_total";
/// Counter `{task, store, reason}`: slots recorded missed (`reason`: `no_worker`: no worker claimed the
/// slot in time and the catch-up policy did not run it); a range row adds its `slot_count`.
pub const SLOTS_MISSED: &str = "fleetcron_slots_missed_total";
/// Counter `{task, store, reason}`: accepted work (a trigger, a buffered or catch-up slot, a retry)
/// recorded skipped before it started (`reason`: `disabled`).
pub const PENDING_SKIPPED: &str = "fleetcron_pending_skipped_total";
/// Counter `{task, store}`: runs of this worker whose lease was lost (a renewal found another fence, or
/// renewals failed for a whole lease): their handlers were cancelled.
pub const LEASES_LOST: &str = "fleetcron_lease_renewals_lost_total";
/// Counter `{task, store}`: runs found with an expired lease and recorded `abandoned` by this worker.
pub const RUNS_ABANDONED: &str = "fleetcron_runs_abandoned_total";
/// Histogram `{store}`: slot claims per claim batch (one store mutation).
pub const CLAIM_BATCH_SIZE: &str = "fleetcron_claim_batch_size";
/// Histogram `{store}`, seconds: how long a claim batch took, store retries included.
pub const CLAIM_BATCH_SECONDS: &str = "fleetcron_claim_batch_seconds";
/// Counter `{store, error}`: store operations that failed (`error`: `unavailable`, `duplicate`,
/// `corrupt`, `other`).
pub const STORE_ERRORS: &str = "fleetcron_store_errors_total";
/// Counter `{store}`: store mutations retried after a transient error.
pub const STORE_RETRIES: &str = "fleetcron_store_retries_total";
/// Counter `{task, store, outcome}`: manual triggers (`outcome`: `accepted`, `coalesced`,
/// `refused_disabled`, `refused_unknown` — the last with `task=""`).
pub const TRIGGERS: &str = "fleetcron_triggers_total";
/// Gauge `{task, store}`: handlers running on this worker now.
pub const RUNS_RUNNING: &str = "fleetcron_runs_running";
/// Gauge (no labels), seconds: the store's clock minus this worker's clock, as the scheduler last
/// measured it (positive: the worker's clock is behind). 0 until the strategy has read the store's clock.
pub const STORE_CLOCK_OFFSET: &str = "fleetcron_store_clock_offset_seconds";

/// Every metric name, for documentation and tests.
pub const ALL: &[&str] = &[
    RUNS_STARTED,
    RUNS_FINISHED,
    START_LAG,
    RUN_DURATION,
    SLOTS_SKIPPED,
    SLOTS_MISSED,
    PENDING_SKIPPED,
    LEASES_LOST,
    RUNS_ABANDONED,
    CLAIM_BATCH_SIZE,
    CLAIM_BATCH_SECONDS,
    STORE_ERRORS,
    STORE_RETRIES,
    TRIGGERS,
    RUNS_RUNNING,
    STORE_CLOCK_OFFSET,
];

/// The `store` label of a store type: its backend kind, from the type's name (`SqliteStore` →
/// `sqlite`), never from a URL.
pub fn store_label<S: ?Sized>() -> &'static str {
    let name = std::any::type_name::<S>().rsplit("::").next().unwrap_or_default();
    match name.to_ascii_lowercase().as_str() {
        "sqlitestore" => "sqlite",
        "postgresstore" => "postgres",
        "mysqlstore" => "mysql",
        "redisstore" => "redis",
        "memorystore" => "memory",
        _ => "custom",
    }
}

/// The `reason` label of a recorded reason (a fixed vocabulary; anything else is `other`).
fn reason_label(reason: Option<&str>) -> &'static str {
    match reason {
        Some(REASON_OVERLAP) => "overlap",
        Some(REASON_DISABLED) => "disabled",
        Some(REASON_MISSED) => "no_worker",
        _ => "other",
    }
}

/// What one task's mutation wrote to the history, as the metrics count it: kept per attempt of a
/// store mutation and counted ([`Written::committed`]) only once the attempt committed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    /// `(metric, reason label, slots)` of inserted skipped or missed rows.
    slots: Vec<(&'static str, &'static str, u64)>,
    /// Status labels of run ends written (and `disabled`-skipped pending rows as `skipped`).
    ends: Vec<RunStatus>,
    /// Reason labels of pending rows recorded skipped.
    pending_skipped: Vec<&'static str>,
}

impl Written {
    /// The tally of `mutation`, `None` when it writes no history row that a metric counts.
    pub fn of(mutation: &Mutation) -> Option<Self> {
        let mut tally = Self::default();
        for row in &mutation.insert_runs {
            let slots = row.slots_accounted();
            match row.status {
                RunStatus::Skipped if slots > 0 => {
                    tally
                        .slots
                        .push((SLOTS_SKIPPED, reason_label(row.reason.as_deref()), slots));
                }
                RunStatus::Missed if slots > 0 => {
                    tally
                        .slots
                        .push((SLOTS_MISSED, reason_label(row.reason.as_deref()), slots));
                }
                _ => {}
            }
        }
        for update in &mutation.update_runs {
            match update.status {
                RunStatus::Skipped => tally.pending_skipped.push(reason_label(update.reason.as_deref())),
                RunStatus::Succeeded
                | RunStatus::Failed
                | RunStatus::TimedOut
                | RunStatus::Cancelled
                | RunStatus::Abandoned => tally.ends.push(update.status),
                RunStatus::Pending | RunStatus::Running | RunStatus::Missed => {}
            }
        }
        (!tally.slots.is_empty() || !tally.ends.is_empty() || !tally.pending_skipped.is_empty()).then_some(tally)
    }

    /// Counts the tally of a committed mutation of `task`.
    pub fn committed(&self, store: &'static str, task: &str) {
        for (name, reason, slots) in &self.slots {
            counter!(*name, "task" => task.to_owned(), "store" => store, "reason" => *reason).increment(*slots);
        }
        for reason in &self.pending_skipped {
            counter!(PENDING_SKIPPED, "task" => task.to_owned(), "store" => store, "reason" => *reason).increment(1);
        }
        for status in &self.ends {
            counter!(RUNS_FINISHED, "task" => task.to_owned(), "store" => store, "status" => status.as_str())
                .increment(1);
            if *status == RunStatus::Abandoned {
                counter!(RUNS_ABANDONED, "task" => task.to_owned(), "store" => store).increment(1);
            }
        }
    }
}

/// A handler started on this worker; `lag` is the slot-to-start delay by the store's clock, for runs
/// with a slot.
pub fn run_started(store: &'static str, task: &str, kind: RunKind, lag: Option<chrono::Duration>) {
    counter!(RUNS_STARTED, "task" => task.to_owned(), "store" => store, "kind" => kind.as_str()).increment(1);
    gauge!(RUNS_RUNNING, "task" => task.to_owned(), "store" => store).increment(1.0);
    if let Some(lag) = lag {
        let seconds = lag.num_microseconds().map_or(0.0, |micros| micros as f64 / 1e6);
        histogram!(START_LAG, "task" => task.to_owned(), "store" => store, "kind" => kind.as_str())
            .record(seconds.max(0.0));
    }
}

/// A handler on this worker ended (whatever gets recorded) after running for `ran`.
pub fn run_ended(store: &'static str, task: &str, status: RunStatus, ran: Duration) {
    gauge!(RUNS_RUNNING, "task" => task.to_owned(), "store" => store).decrement(1.0);
    histogram!(RUN_DURATION, "task" => task.to_owned(), "store" => store, "status" => status.as_str())
        .record(ran.as_secs_f64());
}

/// A run of this worker lost its lease.
pub fn lease_lost(store: &'static str, task: &str) {
    counter!(LEASES_LOST, "task" => task.to_owned(), "store" => store).increment(1);
}

/// A store operation failed with `error`; `retrying` when the engine will try again.
pub fn store_error(store: &'static str, error: &crate::error::StoreError, retrying: bool) {
    use crate::error::StoreError;
    let kind = match error {
        StoreError::Unavailable(_) => "unavailable",
        StoreError::Duplicate(_) => "duplicate",
        StoreError::Corrupt(_) => "corrupt",
        _ => "other",
    };
    counter!(STORE_ERRORS, "store" => store, "error" => kind).increment(1);
    if retrying {
        counter!(STORE_RETRIES, "store" => store).increment(1);
    }
}

/// What a manual trigger came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerOutcome {
    /// A new pending trigger.
    Accepted,
    /// Joined the pending one.
    Coalesced,
    /// The task is disabled.
    RefusedDisabled,
    /// The store knows no such task (counted with `task=""`).
    RefusedUnknown,
}

impl TriggerOutcome {
    /// The outcome of a trigger call's result.
    pub fn of(result: &Result<crate::model::TriggerReceipt, crate::error::SchedulerError>) -> Self {
        match result {
            Ok(receipt) if receipt.coalesced => Self::Coalesced,
            Ok(_) => Self::Accepted,
            Err(crate::error::SchedulerError::TaskDisabled(_)) => Self::RefusedDisabled,
            Err(_) => Self::RefusedUnknown,
        }
    }
}

/// Counts a manual trigger.
pub fn trigger(store: &'static str, task: &str, outcome: TriggerOutcome) {
    let (task, outcome) = match outcome {
        TriggerOutcome::Accepted => (task, "accepted"),
        TriggerOutcome::Coalesced => (task, "coalesced"),
        TriggerOutcome::RefusedDisabled => (task, "refused_disabled"),
        TriggerOutcome::RefusedUnknown => ("", "refused_unknown"),
    };
    counter!(TRIGGERS, "task" => task.to_owned(), "store" => store, "outcome" => outcome).increment(1);
}

/// Records a claim batch's size and duration when dropped (so every way out of the batch counts).
#[must_use = "the batch is recorded when this guard drops"]
pub struct ClaimBatchTimer {
    store: &'static str,
    size: usize,
    started: std::time::Instant,
}

impl ClaimBatchTimer {
    /// Starts timing a batch of `size` claims.
    pub fn start(store: &'static str, size: usize) -> Self {
        Self {
            store,
            size,
            started: std::time::Instant::now(),
        }
    }
}

impl Drop for ClaimBatchTimer {
    fn drop(&mut self) {
        histogram!(CLAIM_BATCH_SIZE, "store" => self.store).record(self.size as f64);
        histogram!(CLAIM_BATCH_SECONDS, "store" => self.store).record(self.started.elapsed().as_secs_f64());
    }
}

/// The worker's measured offset to the store's clock, in milliseconds (store minus worker).
pub fn store_clock_offset(offset_ms: i64) {
    gauge!(STORE_CLOCK_OFFSET).set(offset_ms as f64 / 1000.0);
}

/// The tracing span of one run: every event the engine and the handler log during the run carries the
/// task id, slot, run id, fence, attempt and worker.
pub fn run_span(
    task: &str,
    slot: Option<crate::model::Timestamp>,
    run_id: &str,
    fence: u64,
    attempt: u32,
    worker: &str,
) -> tracing::Span {
    tracing::info_span!(
        "run",
        task = %task,
        slot = slot.map(|slot| slot.to_rfc3339()).unwrap_or_default(),
        run_id = %run_id,
        fence,
        attempt,
        worker = %worker,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_labels_come_from_the_type_never_a_url() {
        assert_eq!(store_label::<crate::memory::MemoryStore>(), "memory");
        assert_eq!(store_label::<String>(), "custom");
    }

    #[test]
    fn metric_names_are_prometheus_names_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for name in ALL {
            assert!(name.starts_with("fleetcron_"), "{name}");
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{name}");
            assert!(seen.insert(name), "{name} twice");
        }
    }

    #[test]
    fn reasons_map_to_a_fixed_vocabulary() {
        assert_eq!(reason_label(Some(REASON_OVERLAP)), "overlap");
        assert_eq!(reason_label(Some(REASON_DISABLED)), "disabled");
        assert_eq!(reason_label(Some(REASON_MISSED)), "no_worker");
        assert_eq!(reason_label(Some("anything a store wrote")), "other");
    }
}

//! The cases. Each is a plain async function of a [`Backend`]; [`conformance_tests!`](crate::conformance_tests)
//! turns each into a test. They use real time and every-second schedules, and assert from two witnesses:
//! the strategy's history and the handlers' own [`Recorder`].
//!
//! One file per area: `claims.rs` (one winner per slot, parallel batches, restart, accounting),
//! `overlap.rs`, `catch_up.rs`, `leases.rs` (expiry, abandon, retry, fencing, shutdown), `triggers.rs`,
//! `admin.rs` (enable/disable, reports and history, retention, definition conflicts), `clocks_and_dst.rs`
//! (skewed workers, DST days) and `results.rs` (handler errors and panics, timeouts, oversized results
//! and errors). Every case is re-exported here, as `cases::NAME`, which is what
//! [`conformance_tests!`](crate::conformance_tests) calls. The helpers below are shared by the files.

mod admin;
mod catch_up;
mod claims;
mod clocks_and_dst;
mod leases;
mod overlap;
mod results;
mod triggers;

pub use admin::{
    definition_conflict_is_reported, disable_enable_fleet_wide, reports_and_history, retention_prunes_history,
};
pub use catch_up::{catch_up_all, catch_up_latest, catch_up_latest_too_old, catch_up_skip};
pub use claims::{
    every_slot_accounted_with_slow_handler, no_slot_twice_after_restart, parallel_batches_claim_each_slot_once,
    single_winner_per_slot,
};
pub use clocks_and_dst::{
    dst_gap_day, dst_overlap_day, worker_clock_ahead_cannot_start_early, worker_clock_behind_cannot_run_twice,
};
pub use leases::{
    graceful_shutdown_cancels_and_releases, lease_expiry_abandons_and_forgets, lease_expiry_retries,
    stale_completion_rejected_by_fence,
};
pub use overlap::{overlap_allow_concurrent, overlap_buffer_one, overlap_cancel_previous, overlap_skip};
pub use results::{
    handler_error_and_panic_are_failures, oversized_error_is_bounded, oversized_result_is_bounded,
    timeout_cancels_handler,
};
pub use triggers::{
    manual_execute_task_returns_its_run, manual_trigger_refused_when_disabled_or_unknown, manual_trigger_runs_once,
    manual_trigger_survives_restart, manual_trigger_waits_behind_running_run, manual_triggers_coalesce,
};

use crate::support::{fast_config, recorded, Recorder, TaskFactory};
use crate::{Backend, Namespace};
use fleetcron_core::clock::system_clock;
use fleetcron_core::{ScheduledTask, SchedulerStrategy, TaskContext, TaskError};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const YEARLY: &str = "0 0 1 1 *";

async fn setup<B: Backend>(backend: &B) -> (Arc<dyn Namespace>, Arc<dyn SchedulerStrategy>) {
    let namespace = backend.namespace(system_clock()).await;
    let admin = namespace.strategy(fast_config()).await;
    (namespace, admin)
}

fn factory(build: impl Fn() -> Vec<ScheduledTask> + Send + Sync + 'static) -> TaskFactory {
    Arc::new(build)
}

fn must<T, E: std::fmt::Display>(result: Result<T, E>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{what}: {error}"),
    }
}

fn every_second(id: &str, recorder: &Recorder, work: Duration) -> ScheduledTask {
    must(recorded(id, recorder, work).build(), "valid task")
}

/// A manually triggered task whose handler runs `body`.
fn manual_task<F, Fut>(id: &str, recorder: &Recorder, body: F) -> ScheduledTask
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Value, TaskError>> + Send + 'static,
{
    let recorder = recorder.clone();
    let body = Arc::new(body);
    must(
        ScheduledTask::builder(id)
            .schedule(YEARLY)
            .handler(move |context: TaskContext| {
                recorder.record(&context);
                let body = body.clone();
                async move { body(context).await }
            })
            .build(),
        "valid task",
    )
}

fn started_rows(runs: &[fleetcron_core::RunRecord]) -> Vec<&fleetcron_core::RunRecord> {
    runs.iter().filter(|run| run.status.started()).collect()
}

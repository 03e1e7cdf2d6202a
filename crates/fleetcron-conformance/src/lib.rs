//! The conformance suite every fleetcron strategy passes.
//!
//! A backend implements [`Backend`]: it hands out isolated [`Namespace`]s (a fresh database file, schema
//! or key prefix each), and each namespace makes as many strategies as a test wants — every strategy is
//! a separate worker sharing that namespace's store, as separate processes would. Then one line expands
//! every case into a `#[tokio::test]` of the backend's crate:
//!
//! ```text
//! fleetcron_conformance::conformance_tests!(crate::MyBackend);
//! ```
//!
//! The cases are plain async functions in [`cases`], so a custom [`SchedulerStrategy`] can be validated
//! the same way. Tests run real time with second-granularity schedules; each takes a few seconds.
//!
//! Below the engine, [`mod@store_suite`] checks a [`fleetcron_core::Store`] itself: a backend implements
//! [`store_suite::StoreHarness`] and expands every store case with [`store_suite!`]; the same harness
//! gives the engine-level [`Backend`] ([`store_suite::StoreBackend`]).

pub mod cases;
pub mod memory;
pub use fleetcron_faultproxy as proxy;
pub mod store_suite;
pub mod support;

/// The store suite's fixtures under their former name.
pub use store_suite::fixtures as store_fixtures;

use fleetcron_core::{EngineConfig, SchedulerStrategy, SharedClock};
pub use futures::future::BoxFuture as BoxedFuture;
use std::sync::Arc;

/// A store namespace shared by the workers of one test.
pub trait Namespace: Send + Sync + 'static {
    /// A new worker's strategy on this namespace. `clock` is the store's clock when the backend's
    /// clock can be injected (embedded stores); server-clocked backends may ignore it, and then
    /// [`Backend::injectable_store_clock`] returns false.
    fn strategy(&self, config: EngineConfig) -> BoxedFuture<'_, Arc<dyn SchedulerStrategy>>;
}

/// A backend under test.
pub trait Backend: Send + Sync + 'static {
    /// A fresh, isolated namespace whose store reads `store_clock`.
    fn namespace(&self, store_clock: SharedClock) -> BoxedFuture<'_, Arc<dyn Namespace>>;

    /// Whether the store's clock follows `store_clock` (false for servers that keep their own time;
    /// the cases that move the store clock to another date are then skipped with a message).
    fn injectable_store_clock(&self) -> bool {
        true
    }

    /// Whether the backend's service can be reached. `Err(reason)` when it cannot: the case then fails
    /// under `FLEETCRON_REQUIRE_SERVICES=1` (as in CI) and is skipped with a loud message otherwise.
    fn available(&self) -> BoxedFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// The service policy of backend tests: `Ok(true)` to run, `Ok(false)` to skip (after printing why),
/// and a panic when the service is required (`FLEETCRON_REQUIRE_SERVICES=1`) but unreachable.
pub async fn service_ready<B: Backend>(backend: &B, test: &str) -> bool {
    service_policy(backend.available().await, test)
}

/// [`service_ready`] for a service whose reachability is known: true to run; false (after a loud
/// message) to skip; a panic when `FLEETCRON_REQUIRE_SERVICES=1` and `available` is an error.
pub fn service_policy(available: Result<(), String>, test: &str) -> bool {
    match available {
        Ok(()) => true,
        Err(reason) => {
            let required = std::env::var("FLEETCRON_REQUIRE_SERVICES").is_ok_and(|value| value == "1");
            if required {
                panic!("{test}: the backend's service is required (FLEETCRON_REQUIRE_SERVICES=1) but unreachable: {reason}");
            }
            eprintln!("\n*** SKIPPED {test}: the backend's service is unreachable: {reason}");
            eprintln!("*** (set FLEETCRON_REQUIRE_SERVICES=1 to make this a failure, as CI does)\n");
            false
        }
    }
}

/// Expands every conformance case into a `#[tokio::test]` for the backend expression `$backend`
/// (a value implementing [`Backend`]). The calling crate needs `tokio` as a dev-dependency.
#[macro_export]
macro_rules! conformance_tests {
    ($backend:expr) => {
        $crate::__conformance_cases!(
            $backend;
            single_winner_per_slot,
            parallel_batches_claim_each_slot_once,
            no_slot_twice_after_restart,
            every_slot_accounted_with_slow_handler,
            overlap_skip,
            overlap_buffer_one,
            overlap_allow_concurrent,
            overlap_cancel_previous,
            catch_up_skip,
            catch_up_latest,
            catch_up_all,
            catch_up_latest_too_old,
            timeout_cancels_handler,
            handler_error_and_panic_are_failures,
            lease_expiry_abandons_and_forgets,
            lease_expiry_retries,
            stale_completion_rejected_by_fence,
            manual_trigger_runs_once,
            manual_trigger_waits_behind_running_run,
            manual_triggers_coalesce,
            manual_trigger_refused_when_disabled_or_unknown,
            manual_trigger_survives_restart,
            manual_execute_task_returns_its_run,
            disable_enable_fleet_wide,
            reports_and_history,
            retention_prunes_history,
            worker_clock_ahead_cannot_start_early,
            worker_clock_behind_cannot_run_twice,
            dst_gap_day,
            dst_overlap_day,
            oversized_result_is_bounded,
            oversized_error_is_bounded,
            graceful_shutdown_cancels_and_releases,
            definition_conflict_is_reported
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($backend:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if $crate::service_ready(&$backend, stringify!($case)).await {
                    $crate::cases::$case(&$backend).await;
                }
            }
        )*
    };
}

//! `EngineConfig`: the engine's settings, their defaults and their bounds.

use super::*;

/// Tuning of the engine; the defaults suit production.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EngineConfig {
    /// How long a claim or renewal holds a run's lease (default 30 s). A dead worker's run is marked
    /// abandoned within this time plus one poll interval.
    pub lease: Duration,
    /// How often leases are renewed (default a third of the lease).
    pub heartbeat_interval: Option<Duration>,
    /// How often an idle worker asks the store for triggers and expired leases (default 1 s): one statement.
    pub poll_interval: Duration,
    /// How late a slot may start and still count as on time rather than missed (default 60 s).
    pub misfire_threshold: Duration,
    /// How long shutdown waits for running handlers before cancelling them (default 30 s).
    pub shutdown_grace: Duration,
    /// How long a cancelled handler may take to return before its future is dropped (default 5 s).
    pub cancel_grace: Duration,
    /// Largest result stored, in bytes of JSON (default 64 KiB); larger results are replaced by a note.
    pub max_result_bytes: usize,
    /// History retention, applied by the fleet's retention task.
    pub retention: Retention,
    /// Most slot claims (and completions) sent to the store in one mutation (default 1,000).
    pub claim_batch: usize,
    /// Most claim mutations in flight at once (default: the store's preference, see
    /// [`Store::preferred_parallelism`]). With several, a big instant is split evenly into that many
    /// batches (of at least 64 claims) claimed concurrently, so the first handlers start before the last
    /// batch commits.
    pub claim_parallelism: Option<usize>,
    /// How long admin calls retry an unreachable store before failing (default 10 s).
    pub admin_retry_for: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            heartbeat_interval: None,
            poll_interval: Duration::from_secs(1),
            misfire_threshold: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
            cancel_grace: Duration::from_secs(5),
            max_result_bytes: 64 * 1024,
            retention: Retention::default(),
            claim_batch: 1000,
            claim_parallelism: None,
            admin_retry_for: Duration::from_secs(10),
        }
    }
}

impl EngineConfig {
    /// Sets the lease duration.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets the poll interval.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Sets the misfire threshold.
    pub fn misfire_threshold(mut self, threshold: Duration) -> Self {
        self.misfire_threshold = threshold;
        self
    }

    /// Sets the shutdown grace period.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Sets the cancellation grace period.
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = grace;
        self
    }

    /// Sets the retention policy.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Sets the largest stored result.
    pub fn max_result_bytes(mut self, bytes: usize) -> Self {
        self.max_result_bytes = bytes;
        self
    }

    /// Sets the largest batch of claims (or completions) per mutation (at least 1).
    pub fn claim_batch(mut self, batch: usize) -> Self {
        self.claim_batch = batch.max(1);
        self
    }

    /// Sets how many claim mutations may be in flight at once (at least 1).
    pub fn claim_parallelism(mut self, parallelism: usize) -> Self {
        self.claim_parallelism = Some(parallelism.max(1));
        self
    }

    /// How often leases are renewed: [`EngineConfig::heartbeat_interval`], else a third of the lease.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat_interval
            .unwrap_or(self.lease / 3)
            .max(crate::limits::MIN_INTERVAL)
    }

    /// Checks every setting against [`crate::limits`]. The strategy refuses to start with a setting out
    /// of range (`init` fails with [`SchedulerError::Config`]), so no absurd value ever reaches a
    /// computation at run time; the daemon's `--check` calls this too.
    ///
    /// A heartbeat must be at most half the lease: a renewal is retried for one heartbeat interval, so
    /// a lease renewed any less often could expire while its worker is alive.
    pub fn validate(&self) -> Result<(), crate::error::ConfigError> {
        use crate::error::ConfigError;
        use crate::limits::{self, check_count, check_duration};
        check_duration("engine.lease", self.lease, limits::MIN_LEASE, limits::MAX_LEASE)?;
        if let Some(heartbeat) = self.heartbeat_interval {
            check_duration(
                "engine.heartbeat_interval",
                heartbeat,
                limits::MIN_INTERVAL,
                limits::MAX_LEASE,
            )?;
            if heartbeat > self.lease / 2 {
                return Err(ConfigError::Invalid(format!(
                    "engine.heartbeat_interval = {} cannot keep engine.lease = {}: a lease must be renewed at \
                     least twice per lease (use a heartbeat of at most {}, or a longer lease)",
                    limits::format_duration(heartbeat),
                    limits::format_duration(self.lease),
                    limits::format_duration(self.lease / 2)
                )));
            }
        }
        check_duration(
            "engine.poll_interval",
            self.poll_interval,
            limits::MIN_INTERVAL,
            limits::MAX_POLL_INTERVAL,
        )?;
        check_duration(
            "engine.misfire_threshold",
            self.misfire_threshold,
            Duration::from_millis(1),
            limits::MAX_MISFIRE_THRESHOLD,
        )?;
        check_duration(
            "engine.shutdown_grace",
            self.shutdown_grace,
            Duration::ZERO,
            limits::MAX_SHUTDOWN_GRACE,
        )?;
        check_duration(
            "engine.cancel_grace",
            self.cancel_grace,
            Duration::ZERO,
            limits::MAX_CANCEL_GRACE,
        )?;
        check_duration(
            "engine.admin_retry_for",
            self.admin_retry_for,
            Duration::ZERO,
            limits::MAX_ADMIN_RETRY,
        )?;
        check_count(
            "engine.max_result_bytes",
            self.max_result_bytes as u64,
            256,
            limits::MAX_RESULT_BYTES as u64,
        )?;
        check_count(
            "engine.claim_batch",
            self.claim_batch as u64,
            1,
            limits::MAX_CLAIM_BATCH as u64,
        )?;
        if let Some(parallelism) = self.claim_parallelism {
            check_count(
                "engine.claim_parallelism",
                parallelism as u64,
                1,
                limits::MAX_CLAIM_PARALLELISM as u64,
            )?;
        }
        self.retention.validate()
    }
}

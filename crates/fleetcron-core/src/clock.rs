//! Injectable time. Logic never reads the system clock directly: workers and stores each get a [`Clock`],
//! so tests can skew a worker ahead or behind the store, or move both to a DST transition.

use chrono::{DateTime, Duration, Utc};
use std::sync::Arc;

/// A source of wall-clock time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current instant according to this clock.
    fn now(&self) -> DateTime<Utc>;
}

/// Shared handle to a clock.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system clock shifted by a fixed offset: a worker whose clock runs ahead (positive) or behind
/// (negative), or a whole test moved to another date while time still passes at the real rate.
#[derive(Debug, Clone, Copy)]
pub struct OffsetClock {
    offset: Duration,
}

impl OffsetClock {
    /// A clock that reads `offset` later than the system clock.
    pub fn new(offset: Duration) -> Self {
        Self { offset }
    }

    /// A clock that reads `at` now and then advances at the real rate.
    pub fn starting_at(at: DateTime<Utc>) -> Self {
        Self::new(at - Utc::now())
    }

    /// The offset from the system clock.
    pub fn offset(&self) -> Duration {
        self.offset
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }
}

/// The system clock as a shared handle.
pub fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}

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

/// A reading of the store's clock tied to this process's monotonic clock: the store's time now is
/// `store_now + (Instant::now() - at)`, without asking the store. Workers run their timers on it, so a
/// worker whose own clock is off still starts slots on time by the store's clock (the authority).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreTime {
    /// The monotonic instant the reading stands for: the middle of the round trip that brought it.
    pub at: std::time::Instant,
    /// The store's time at `at`.
    pub store_now: DateTime<Utc>,
    /// How far the reading may be off: half its round trip.
    pub uncertainty: std::time::Duration,
}

impl StoreTime {
    /// A reading taken by a request sent at `sent` and answered at `received` with `store_now`.
    pub fn from_round_trip(sent: std::time::Instant, received: std::time::Instant, store_now: DateTime<Utc>) -> Self {
        let half = received.saturating_duration_since(sent) / 2;
        Self {
            at: sent + half,
            store_now,
            uncertainty: half,
        }
    }

    /// The store's time now, extrapolated along this process's monotonic clock.
    pub fn now(&self) -> DateTime<Utc> {
        let elapsed = Duration::from_std(self.at.elapsed()).unwrap_or(Duration::MAX);
        self.store_now
            .checked_add_signed(elapsed)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// How far the extrapolated time may be off at `instant`: the reading's own uncertainty plus a
    /// drift allowance of 100 ppm between the two clocks since the reading.
    pub fn error_at(&self, instant: std::time::Instant) -> std::time::Duration {
        self.uncertainty + instant.saturating_duration_since(self.at) / 10_000
    }

    /// Keeps the better of two readings at `instant`: the one whose extrapolation is more certain, and
    /// never one older than a minute when a newer exists (clocks can be stepped).
    pub fn better(self, other: StoreTime, instant: std::time::Instant) -> StoreTime {
        let (older, newer) = if self.at <= other.at {
            (self, other)
        } else {
            (other, self)
        };
        if instant.saturating_duration_since(older.at) > std::time::Duration::from_secs(60)
            || newer.error_at(instant) <= older.error_at(instant)
        {
            newer
        } else {
            older
        }
    }
}

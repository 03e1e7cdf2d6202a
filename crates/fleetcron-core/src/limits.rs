//! The bounds every user-supplied duration and size is checked against, once, where it enters (the
//! builders, [`EngineConfig::validate`](crate::EngineConfig::validate), the daemon's `--check`).
//!
//! Inside those bounds no arithmetic on instants can overflow (a lease added to the store's clock, a
//! catch-up window subtracted from it), so the engine's loops never meet a value that makes them panic;
//! and the decision layer uses checked arithmetic anyway, so a value that slipped past would saturate
//! rather than stop a worker.

use crate::error::ConfigError;
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Shortest lease: a renewal must have time to reach the store.
pub const MIN_LEASE: Duration = Duration::from_millis(100);
/// Longest lease: heartbeats renew it, so a dead worker's run need not wait longer than a day.
pub const MAX_LEASE: Duration = DAY;
/// Shortest heartbeat and poll interval.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Longest poll interval.
pub const MAX_POLL_INTERVAL: Duration = HOUR;
/// Longest misfire threshold.
pub const MAX_MISFIRE_THRESHOLD: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest shutdown grace period.
pub const MAX_SHUTDOWN_GRACE: Duration = DAY;
/// Longest cancellation grace period.
pub const MAX_CANCEL_GRACE: Duration = HOUR;
/// Longest time admin calls retry an unreachable store.
pub const MAX_ADMIN_RETRY: Duration = HOUR;
/// Largest stored result or error text.
pub const MAX_RESULT_BYTES: usize = 1024 * 1024;
/// Largest claim batch.
pub const MAX_CLAIM_BATCH: usize = 100_000;
/// Most claim mutations in flight.
pub const MAX_CLAIM_PARALLELISM: usize = 64;
/// Longest history retention age (100 years).
pub const MAX_RETENTION_AGE: Duration = Duration::from_secs(36_500 * 24 * 3600);
/// Longest handler timeout (one year).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);
/// Longest catch-up window (ten years).
pub const MAX_CATCH_UP_WITHIN: Duration = Duration::from_secs(3650 * 24 * 3600);
/// Most missed slots one catch-up runs.
pub const MAX_CATCH_UP_RUNS: u32 = 10_000;
/// Most attempts of an abandoned run.
pub const MAX_ATTEMPTS: u32 = 1000;
/// Longest text of user input repeated in a message.
pub const MAX_ECHO_CHARS: usize = 80;

/// Formats a duration the way the configuration file writes them (`250ms`, `30s`, `2h`, `1d`).
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    let units: [(u128, &str); 5] = [
        (DAY.as_millis(), "d"),
        (HOUR.as_millis(), "h"),
        (MINUTE.as_millis(), "m"),
        (SECOND.as_millis(), "s"),
        (1, "ms"),
    ];
    if millis == 0 {
        return "0s".to_owned();
    }
    for (size, unit) in units {
        if millis % size == 0 {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

/// Checks `value` against `min..=max`, naming `field` in the error.
pub fn check_duration(field: &str, value: Duration, min: Duration, max: Duration) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::OutOfRange {
            field: field.to_owned(),
            value: format_duration(value),
            min: format_duration(min),
            max: format_duration(max),
        });
    }
    Ok(())
}

/// Checks a count against `min..=max`, naming `field` in the error.
pub fn check_count(field: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::OutOfRange {
            field: field.to_owned(),
            value: value.to_string(),
            min: min.to_string(),
            max: max.to_string(),
        });
    }
    Ok(())
}

/// User input for a message: at most [`MAX_ECHO_CHARS`] characters, quoted and escaped like `{:?}`,
/// with the length of what was cut off. A one-megabyte task id is not repeated back whole.
pub fn echo(input: &str) -> String {
    let mut chars = input.char_indices();
    match chars.nth(MAX_ECHO_CHARS) {
        None => format!("{input:?}"),
        Some((cut, _)) => {
            let head = input.get(..cut).unwrap_or_default();
            format!("{head:?}… ({} bytes in all)", input.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_like_the_config_file() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::from_secs(86_400 * 3)), "3d");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn out_of_range_values_name_the_field_and_the_bounds() {
        assert!(check_duration("engine.lease", Duration::from_secs(30), MIN_LEASE, MAX_LEASE).is_ok());
        let error = check_duration(
            "engine.lease",
            Duration::from_secs(100_000_000 * 86_400),
            MIN_LEASE,
            MAX_LEASE,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert_eq!(error, "engine.lease = 100000000d is out of range: use 100ms to 1d");
        assert!(check_count("claim_batch", 0, 1, 10).is_err());
    }

    #[test]
    fn echoed_input_is_bounded() {
        assert_eq!(echo("short"), "\"short\"");
        let long = "x".repeat(1 << 20);
        let shown = echo(&long);
        assert!(shown.len() < 120, "{shown}");
        assert!(shown.ends_with("(1048576 bytes in all)"), "{shown}");
        // Multi-byte characters are cut at a character boundary.
        let wide = "é".repeat(200);
        assert!(echo(&wide).starts_with("\"éé"));
    }
}

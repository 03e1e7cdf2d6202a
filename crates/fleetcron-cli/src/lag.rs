//! `fleetcron lag --log PATH`: start lag (slot instant → handler start) from a handlers' log, as
//! percentiles. Every log line of a scheduled run carries its slot and the handler's start instant.

use crate::summary::read_log;
use crate::{CliError, CliResult};
use clap::Args;
use std::path::PathBuf;

/// Flags of `fleetcron lag`.
#[derive(Debug, Args)]
pub struct LagArgs {
    /// The handlers' log written by `fleetcron worker`.
    #[arg(long, value_name = "PATH")]
    pub log: PathBuf,
    /// Ignore runs whose slot is earlier than this many seconds after the first slot (warm-up).
    #[arg(long, default_value_t = 0)]
    pub skip_seconds: i64,
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((fraction * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Prints one JSON line: count and p50/p90/p99/max start lag in milliseconds.
pub fn run(args: LagArgs) -> CliResult {
    let (lines, malformed) = read_log(&args.log).map_err(CliError::runtime)?;
    let first = lines.iter().filter_map(|line| line.slot).min();
    let cutoff = first.map(|first| first + chrono::Duration::seconds(args.skip_seconds));
    let mut lags: Vec<f64> = lines
        .iter()
        .filter(|line| line.slot >= cutoff)
        .filter_map(|line| Some((line.started? - line.slot?).num_microseconds()? as f64 / 1000.0))
        .collect();
    if lags.is_empty() {
        return Err(CliError::runtime("no scheduled run with a start time in the log"));
    }
    lags.sort_by(f64::total_cmp);
    println!(
        "{{\"runs\":{},\"malformed_lines\":{},\"lag_ms\":{{\"p50\":{:.2},\"p90\":{:.2},\"p99\":{:.2},\"max\":{:.2},\"min\":{:.2}}}}}",
        lags.len(),
        malformed,
        percentile(&lags, 0.50),
        percentile(&lags, 0.90),
        percentile(&lags, 0.99),
        percentile(&lags, 1.0),
        lags[0],
    );
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), 50.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&values, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }
}

//! Percentiles (nearest rank) and the median / min / max summary of a figure across runs.

use serde::Serialize;

/// The nearest-rank percentile of `sorted` (ascending): the smallest value such that at least `p`
/// percent of the values are at or below it. `p` is clamped to 0..=100; `None` for no values.
pub fn nearest_rank<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 100.0) };
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    // Rank 0 (p = 0) is the first value.
    sorted.get(rank.max(1) - 1).copied()
}

/// The median of `values` (any order): the middle value, or the mean of the two middle values.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|value| !value.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted.get(middle).copied()
    } else {
        Some((sorted[middle - 1] + sorted[middle]) / 2.0)
    }
}

/// One figure summarised across runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Median across runs.
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Every run's value, in run order.
    pub values: Vec<f64>,
}

impl Summary {
    /// The summary of `values`, `None` when there is none (a figure that does not apply).
    pub fn of(values: &[f64]) -> Option<Self> {
        let values: Vec<f64> = values.iter().copied().filter(|value| value.is_finite()).collect();
        let median = median(&values)?;
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Self {
            median: round(median),
            min: round(min),
            max: round(max),
            values: values.into_iter().map(round).collect(),
        })
    }
}

/// Rounds to 4 significant decimals in JSON (enough for ms with µs precision).
pub fn round(value: f64) -> f64 {
    if value.abs() >= 1e12 || value == 0.0 {
        return value;
    }
    (value * 10_000.0).round() / 10_000.0
}

/// Formats a value for the human table: integers without decimals, small values with a few.
pub fn human(value: f64) -> String {
    let magnitude = value.abs();
    if (value.fract() == 0.0 && magnitude < 1e15) || magnitude >= 1000.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 0.1 {
        format!("{value:.2}")
    } else {
        format!("{value:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_matches_the_textbook_examples() {
        // The classic example: 15, 20, 35, 40, 50.
        let values = [15, 20, 35, 40, 50];
        assert_eq!(nearest_rank(&values, 5.0), Some(15));
        assert_eq!(nearest_rank(&values, 30.0), Some(20));
        assert_eq!(nearest_rank(&values, 40.0), Some(20));
        assert_eq!(nearest_rank(&values, 50.0), Some(35));
        assert_eq!(nearest_rank(&values, 100.0), Some(50));
        assert_eq!(nearest_rank(&values, 0.0), Some(15));
    }

    #[test]
    fn nearest_rank_of_a_hundred_values_is_the_value_itself() {
        let values: Vec<u32> = (1..=100).collect();
        assert_eq!(nearest_rank(&values, 50.0), Some(50));
        assert_eq!(nearest_rank(&values, 90.0), Some(90));
        assert_eq!(nearest_rank(&values, 99.0), Some(99));
        assert_eq!(nearest_rank(&values, 99.5), Some(100));
        assert_eq!(nearest_rank(&values, 150.0), Some(100));
        assert_eq!(nearest_rank(&values, -3.0), Some(1));
    }

    #[test]
    fn nearest_rank_of_nothing_is_none_and_of_one_value_is_it() {
        assert_eq!(nearest_rank::<u32>(&[], 50.0), None);
        assert_eq!(nearest_rank(&[7], 1.0), Some(7));
        assert_eq!(nearest_rank(&[7], 99.0), Some(7));
    }

    #[test]
    fn median_takes_the_middle_or_the_mean_of_the_two_middles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn summary_reports_median_min_max_in_run_order() {
        let summary = Summary::of(&[3.0, 1.0, 2.0]).expect("values");
        assert_eq!(summary.median, 2.0);
        assert_eq!(summary.min, 1.0);
        assert_eq!(summary.max, 3.0);
        assert_eq!(summary.values, vec![3.0, 1.0, 2.0]);
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[f64::INFINITY]), None);
    }

    #[test]
    fn human_formatting_keeps_integers_plain() {
        assert_eq!(human(3.0), "3");
        assert_eq!(human(12345.6), "12346");
        assert_eq!(human(12.34), "12.3");
        assert_eq!(human(1.234), "1.23");
        assert_eq!(human(0.01234), "0.0123");
    }
}

//! One JSON line per (bench, backend) and the final markdown tables.

use crate::stats::{human, Summary};
use serde_json::{json, Map, Value};

/// The figures of one run, in display order (`None`: does not apply, shown as n/a).
#[derive(Debug, Clone, Default)]
pub struct RunFigures {
    /// Name (with unit suffix) and value.
    pub figures: Vec<(&'static str, Option<f64>)>,
    /// Extra detail of the run (statement breakdowns and the like), reported for the last run.
    pub detail: Map<String, Value>,
    /// Exactly-once violations seen in the run.
    pub duplicates: u64,
}

impl RunFigures {
    /// Adds a figure.
    pub fn add(&mut self, name: &'static str, value: impl Into<Option<f64>>) {
        self.figures.push((name, value.into()));
    }
}

/// Every run of one benchmark on one backend.
#[derive(Debug)]
pub struct BenchReport {
    /// Benchmark name.
    pub bench: &'static str,
    /// Backend name.
    pub backend: &'static str,
    /// Sizes and settings.
    pub params: Value,
    /// What the figures mean and how they were taken.
    pub notes: Vec<String>,
    /// The statement counter's self-check for the backend.
    pub counter_check: Option<String>,
    /// Successful runs.
    pub runs: Vec<RunFigures>,
    /// Failed runs' errors.
    pub failures: Vec<String>,
}

impl BenchReport {
    /// Figure names in display order (from the first run that has them).
    pub fn figure_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        for run in &self.runs {
            for (name, _) in &run.figures {
                if !names.contains(name) {
                    names.push(*name);
                }
            }
        }
        names
    }

    /// A figure across runs; `None` when no run has a value.
    pub fn summary(&self, name: &str) -> Option<Summary> {
        let values: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|run| run.figures.iter().find(|(figure, _)| *figure == name))
            .filter_map(|(_, value)| *value)
            .collect();
        Summary::of(&values)
    }

    /// Total exactly-once violations across runs.
    pub fn duplicates(&self) -> u64 {
        self.runs.iter().map(|run| run.duplicates).sum()
    }

    /// The JSON line.
    pub fn json(&self) -> Value {
        let mut line = Map::new();
        line.insert("bench".to_owned(), json!(self.bench));
        line.insert("backend".to_owned(), json!(self.backend));
        line.insert("runs".to_owned(), json!(self.runs.len()));
        for name in self.figure_names() {
            let value = match self.summary(name) {
                Some(summary) => json!(summary),
                None => Value::Null,
            };
            line.insert(name.to_owned(), value);
        }
        line.insert("params".to_owned(), self.params.clone());
        if !self.failures.is_empty() {
            line.insert("failed_runs".to_owned(), json!(self.failures));
        }
        if let Some(check) = &self.counter_check {
            line.insert("counter_check".to_owned(), json!(check));
        }
        if let Some(last) = self.runs.last() {
            if !last.detail.is_empty() {
                line.insert("last_run".to_owned(), Value::Object(last.detail.clone()));
            }
        }
        line.insert("notes".to_owned(), json!(self.notes));
        Value::Object(line)
    }

    fn cell(&self, name: &str) -> String {
        match self.summary(name) {
            None => "n/a".to_owned(),
            Some(summary) if summary.values.len() == 1 || summary.min == summary.max => human(summary.median),
            Some(summary) => format!(
                "{} [{}–{}]",
                human(summary.median),
                human(summary.min),
                human(summary.max)
            ),
        }
    }
}

/// Markdown tables, one per benchmark, one row per backend: medians with [min–max] across runs.
pub fn markdown(reports: &[BenchReport]) -> String {
    let mut out = String::new();
    out.push_str("## fleetcron benchmark summary (median [min–max] across runs)\n");
    let mut benches: Vec<&'static str> = Vec::new();
    for report in reports {
        if !benches.contains(&report.bench) {
            benches.push(report.bench);
        }
    }
    for bench in benches {
        let rows: Vec<&BenchReport> = reports.iter().filter(|report| report.bench == bench).collect();
        let mut names: Vec<&'static str> = Vec::new();
        for row in &rows {
            for name in row.figure_names() {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        out.push_str(&format!("\n### {bench}\n\n| backend | runs |"));
        for name in &names {
            out.push_str(&format!(" {name} |"));
        }
        out.push_str("\n|---|---|");
        for _ in &names {
            out.push_str("---|");
        }
        out.push('\n');
        for row in rows {
            let runs = if row.failures.is_empty() {
                row.runs.len().to_string()
            } else {
                format!("{} ({} failed)", row.runs.len(), row.failures.len())
            };
            out.push_str(&format!("| {} | {runs} |", row.backend));
            for name in &names {
                out.push_str(&format!(" {} |", row.cell(name)));
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(values: &[Option<f64>]) -> BenchReport {
        BenchReport {
            bench: "lag",
            backend: "sqlite",
            params: json!({}),
            notes: vec![],
            counter_check: None,
            runs: values
                .iter()
                .map(|value| {
                    let mut run = RunFigures::default();
                    run.add("p99_ms", *value);
                    run.add("statements_per_slot", None);
                    run
                })
                .collect(),
            failures: vec![],
        }
    }

    #[test]
    fn the_json_line_has_the_summary_of_every_figure() {
        let line = report(&[Some(3.0), Some(1.0), Some(2.0)]).json();
        assert_eq!(line["bench"], "lag");
        assert_eq!(line["backend"], "sqlite");
        assert_eq!(line["runs"], 3);
        assert_eq!(line["p99_ms"]["median"], 2.0);
        assert_eq!(line["p99_ms"]["min"], 1.0);
        assert_eq!(line["p99_ms"]["max"], 3.0);
        assert_eq!(line["statements_per_slot"], Value::Null);
    }

    #[test]
    fn the_table_shows_medians_ranges_and_na() {
        let table = markdown(&[report(&[Some(3.0), Some(1.0), Some(2.0)])]);
        assert!(
            table.contains("| backend | runs | p99_ms | statements_per_slot |"),
            "{table}"
        );
        assert!(table.contains("| sqlite | 3 | 2 [1–3] | n/a |"), "{table}");
    }
}

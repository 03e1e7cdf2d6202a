//! The exactly-once check of the demo, computed from the store's history and the handlers' own log —
//! never from counters kept by the demo.
//!
//! For each task, the slots of its history rows (manual runs aside) must form the schedule's contiguous
//! sequence from the first to the last; every slot of that sequence is then classified:
//! * **ran_once**: exactly one started row (running, succeeded, failed, timed_out, abandoned or
//!   cancelled; attempt 1) and at most one log line;
//! * **duplicates**: more than one started row, or more than one log line;
//! * **skipped**: a `skipped` row (overlap or disabled);
//! * **missed**: no row at all (a hole in the history), or a `missed` row.
//!
//! Anything else that contradicts the guarantees — a log line without a started row, a slot with two
//! rows, a log line naming another run than the history — is reported as a problem and fails the check.

use crate::process::{say, warn};
use crate::schedule_cmd::format_utc;
use crate::{CliError, CliResult};
use chrono::{DateTime, Utc};
use clap::Args;
use fleetcron::{DefaultSchedulerStrategy, RunKind, RunQuery, RunRecord, RunStatus, Schedule, SchedulerStrategy};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Most slots examined per task (a year of every-second slots would be far beyond a demo).
const MAX_SLOTS_PER_TASK: usize = 5_000_000;
/// History rows read per page.
const PAGE: u32 = 10_000;
/// Problems printed before the rest are only counted.
const MAX_PROBLEMS_SHOWN: usize = 20;

/// Arguments of `fleetcron summary`.
#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Store URL (sqlite://PATH).
    #[arg(long, value_name = "URL")]
    pub store: String,
    /// The handlers' log written by the workers.
    #[arg(long, value_name = "PATH")]
    pub log: PathBuf,
    /// Only tasks whose id starts with this (default: every task but fleetcron's own).
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub prefix: String,
}

/// One line of the handlers' log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The task.
    pub task: String,
    /// The slot, `None` for a manual run.
    pub slot: Option<DateTime<Utc>>,
    /// The run id the handler saw.
    pub run_id: String,
    /// The worker that ran it.
    pub worker: String,
    /// The fence the handler saw.
    pub fence: u64,
    /// When the handler started, by the worker's clock (absent in logs of older builds).
    pub started: Option<DateTime<Utc>>,
}

/// Parses one log line; `None` when it is malformed (e.g. cut by a crash).
pub fn parse_log_line(line: &str) -> Option<LogLine> {
    let mut fields = line.split_whitespace();
    let task = fields.next()?.to_owned();
    let slot = match fields.next()? {
        "manual" => None,
        text => Some(DateTime::parse_from_rfc3339(text).ok()?.with_timezone(&Utc)),
    };
    let run_id = fields.next()?.to_owned();
    let worker = fields.next()?.to_owned();
    let fence = fields.next()?.parse().ok()?;
    let started = match fields.next() {
        Some(text) => Some(DateTime::parse_from_rfc3339(text).ok()?.with_timezone(&Utc)),
        None => None,
    };
    if fields.next().is_some() {
        return None;
    }
    Some(LogLine {
        task,
        slot,
        run_id,
        worker,
        fence,
        started,
    })
}

/// Reads the handlers' log: its lines, and how many were malformed.
pub fn read_log(path: &Path) -> Result<(Vec<LogLine>, usize), String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(format!("cannot read the handlers' log {}: {error}", path.display())),
    };
    let mut lines = Vec::new();
    let mut malformed = 0;
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        match parse_log_line(line) {
            Some(parsed) => lines.push(parsed),
            None => malformed += 1,
        }
    }
    Ok((lines, malformed))
}

/// Counts for one task or for all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Slots of the schedule from the first recorded slot to the last.
    pub slots: u64,
    /// Slots that ran exactly once.
    pub ran_once: u64,
    /// Slots that ran more than once (history or log).
    pub duplicates: u64,
    /// Slots with no row or a `missed` row.
    pub missed: u64,
    /// Slots recorded `skipped`.
    pub skipped: u64,
    /// Of the slots that ran once, those whose run failed or timed out.
    pub failed: u64,
    /// Of the slots that ran once, those whose run was abandoned (its worker died).
    pub abandoned: u64,
    /// Of the slots that ran once, those still running (never finished nor reaped).
    pub running: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.slots += other.slots;
        self.ran_once += other.ran_once;
        self.duplicates += other.duplicates;
        self.missed += other.missed;
        self.skipped += other.skipped;
        self.failed += other.failed;
        self.abandoned += other.abandoned;
        self.running += other.running;
    }

    /// The summary line: `summary: slots=.. ran_once=.. duplicates=.. missed=.. skipped=..`.
    pub fn summary_line(&self) -> String {
        format!(
            "summary: slots={} ran_once={} duplicates={} missed={} skipped={}",
            self.slots, self.ran_once, self.duplicates, self.missed, self.skipped
        )
    }
}

/// The check of one task.
#[derive(Debug, Clone)]
pub struct TaskCheck {
    /// The task id.
    pub id: String,
    /// Its pattern.
    pub schedule: String,
    /// Its counts.
    pub counts: Counts,
    /// First and last slot examined.
    pub span: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// The whole check.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Per task, in id order.
    pub tasks: Vec<TaskCheck>,
    /// Sums over the tasks.
    pub total: Counts,
    /// Contradictions other than duplicates and misses.
    pub problems: Vec<String>,
    /// Log lines that could not be parsed.
    pub malformed_log_lines: usize,
}

impl Report {
    /// Whether the guarantees held: no duplicate, no miss, no contradiction, and something was checked.
    pub fn passed(&self) -> bool {
        self.total.duplicates == 0 && self.total.missed == 0 && self.problems.is_empty() && self.total.slots > 0
    }
}

/// Every history row of a task, oldest page last (the store answers newest first).
pub async fn all_runs(strategy: &dyn SchedulerStrategy, id: &str) -> Result<Vec<RunRecord>, String> {
    let mut runs: Vec<RunRecord> = Vec::new();
    loop {
        let query = RunQuery {
            limit: PAGE,
            before: runs.last().map(|run| run.run_id.clone()),
        };
        let page = strategy
            .runs(id, query)
            .await
            .map_err(|error| format!("cannot read the history of {id}: {error}"))?;
        let done = page.len() < PAGE as usize;
        runs.extend(page);
        if done {
            return Ok(runs);
        }
    }
}

/// Checks one task's history and log lines.
fn check_task(
    id: &str,
    schedule: &Schedule,
    runs: &[RunRecord],
    log: &[&LogLine],
    problems: &mut Vec<String>,
) -> TaskCheck {
    let mut rows: BTreeMap<DateTime<Utc>, Vec<&RunRecord>> = BTreeMap::new();
    for run in runs.iter().filter(|run| run.kind != RunKind::Manual) {
        match (run.slot, run.slot_until) {
            // A range row accounts for every slot of the schedule from its slot to its last.
            (Some(slot), Some(until)) => {
                let before = slot - chrono::Duration::milliseconds(1);
                for covered in schedule.slots_between(before, until, MAX_SLOTS_PER_TASK) {
                    rows.entry(covered).or_default().push(run);
                }
            }
            (Some(slot), None) => rows.entry(slot).or_default().push(run),
            (None, _) => problems.push(format!(
                "{id}: history row {} of kind {} has no slot",
                run.run_id,
                run.kind.as_str()
            )),
        }
    }
    let mut lines: BTreeMap<DateTime<Utc>, Vec<&LogLine>> = BTreeMap::new();
    for line in log {
        if let Some(slot) = line.slot {
            lines.entry(slot).or_default().push(line);
        }
    }
    let mut counts = Counts::default();
    let (Some(&first), Some(&last)) = (rows.keys().next(), rows.keys().next_back()) else {
        if !lines.is_empty() {
            problems.push(format!("{id}: {} log lines but no history row at all", lines.len()));
        }
        return TaskCheck {
            id: id.to_owned(),
            schedule: schedule.pattern().to_owned(),
            counts,
            span: None,
        };
    };
    let mut expected = vec![first];
    expected.extend(schedule.slots_between(first, last, MAX_SLOTS_PER_TASK));
    if expected.last() != Some(&last) {
        problems.push(format!(
            "{id}: the history's last slot {} is not reached from its first {} by the schedule (or more than {MAX_SLOTS_PER_TASK} slots)",
            format_utc(last),
            format_utc(first)
        ));
    }
    let expected_set: BTreeSet<DateTime<Utc>> = expected.iter().copied().collect();
    for slot in rows.keys().filter(|slot| !expected_set.contains(slot)) {
        problems.push(format!(
            "{id}: history row for {} which is not a slot of {:?}",
            format_utc(*slot),
            schedule.pattern()
        ));
    }
    for slot in lines.keys().filter(|slot| !expected_set.contains(slot)) {
        problems.push(format!(
            "{id}: log line for {} outside the recorded slots",
            format_utc(*slot)
        ));
    }
    for slot in &expected {
        let slot_rows = rows.get(slot).map(Vec::as_slice).unwrap_or_default();
        let slot_lines = lines.get(slot).map(Vec::as_slice).unwrap_or_default();
        let first_attempts: Vec<&&RunRecord> = slot_rows.iter().filter(|run| run.attempt == 1).collect();
        let started: Vec<&&&RunRecord> = first_attempts.iter().filter(|run| run.status.started()).collect();
        counts.slots += 1;
        if started.len() > 1 || slot_lines.len() > 1 {
            counts.duplicates += 1;
            continue;
        }
        if first_attempts.len() > 1 {
            problems.push(format!(
                "{id}: slot {} has {} history rows ({})",
                format_utc(*slot),
                first_attempts.len(),
                first_attempts
                    .iter()
                    .map(|run| run.status.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Some(run) = started.first() {
            counts.ran_once += 1;
            match run.status {
                RunStatus::Failed | RunStatus::TimedOut => counts.failed += 1,
                RunStatus::Abandoned => counts.abandoned += 1,
                RunStatus::Running => counts.running += 1,
                _ => {}
            }
            if let Some(line) = slot_lines.first() {
                if line.run_id != run.run_id {
                    problems.push(format!(
                        "{id}: slot {}: the log names run {} but the history run {}",
                        format_utc(*slot),
                        line.run_id,
                        run.run_id
                    ));
                }
            }
            continue;
        }
        if !slot_lines.is_empty() {
            problems.push(format!(
                "{id}: slot {} ran (log: worker {}) but the history has no started run for it",
                format_utc(*slot),
                slot_lines
                    .iter()
                    .map(|line| line.worker.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if first_attempts.iter().any(|run| run.status == RunStatus::Skipped) {
            counts.skipped += 1;
        } else {
            counts.missed += 1;
        }
    }
    TaskCheck {
        id: id.to_owned(),
        schedule: schedule.pattern().to_owned(),
        counts,
        span: Some((first, last)),
    }
}

/// Computes the check for every task of the store that `include` accepts.
pub async fn compute(
    strategy: &dyn SchedulerStrategy,
    log: &Path,
    include: &dyn Fn(&str) -> bool,
) -> Result<Report, String> {
    let (lines, malformed) = read_log(log)?;
    let mut by_task: HashMap<&str, Vec<&LogLine>> = HashMap::new();
    for line in &lines {
        by_task.entry(line.task.as_str()).or_default().push(line);
    }
    let mut reports = strategy
        .get_tasks()
        .await
        .map_err(|error| format!("cannot read the tasks: {error}"))?;
    reports.retain(|report| include(&report.id));
    reports.sort_by(|a, b| a.id.cmp(&b.id));
    let mut report = Report {
        malformed_log_lines: malformed,
        ..Report::default()
    };
    for task in &reports {
        let schedule = match Schedule::parse(&task.schedule, &task.timezone) {
            Ok(schedule) => schedule,
            Err(error) => {
                report
                    .problems
                    .push(format!("{}: stored schedule unusable: {error}", task.id));
                continue;
            }
        };
        let runs = all_runs(strategy, &task.id).await?;
        let log = by_task.remove(task.id.as_str()).unwrap_or_default();
        let check = check_task(&task.id, &schedule, &runs, &log, &mut report.problems);
        report.total.add(&check.counts);
        report.tasks.push(check);
    }
    for (task, lines) in by_task {
        if include(task) {
            report.problems.push(format!(
                "{task}: {} log lines for a task the store does not know",
                lines.len()
            ));
        }
    }
    Ok(report)
}

/// The per-task table, the problems and, last, the summary line.
pub fn render(report: &Report) -> Vec<String> {
    let width = report.tasks.iter().map(|task| task.id.len()).max().unwrap_or(4).max(4);
    let mut out = vec![format!(
        "{:<width$}  {:<14}  {:>6}  {:>8}  {:>10}  {:>6}  {:>7}  {:>6}  {:>9}",
        "task", "schedule", "slots", "ran_once", "duplicates", "missed", "skipped", "failed", "abandoned"
    )];
    for task in &report.tasks {
        let c = &task.counts;
        out.push(format!(
            "{:<width$}  {:<14}  {:>6}  {:>8}  {:>10}  {:>6}  {:>7}  {:>6}  {:>9}",
            task.id, task.schedule, c.slots, c.ran_once, c.duplicates, c.missed, c.skipped, c.failed, c.abandoned
        ));
    }
    if let (Some(first), Some(last)) = (
        report
            .tasks
            .iter()
            .filter_map(|task| task.span.map(|span| span.0))
            .min(),
        report
            .tasks
            .iter()
            .filter_map(|task| task.span.map(|span| span.1))
            .max(),
    ) {
        out.push(format!("slots from {} to {}", format_utc(first), format_utc(last)));
    }
    if report.total.running > 0 {
        out.push(format!(
            "note: {} run(s) still marked running (a worker died and no live worker reaped its lease yet)",
            report.total.running
        ));
    }
    if report.malformed_log_lines > 0 {
        out.push(format!(
            "note: {} malformed line(s) in the handlers' log were ignored",
            report.malformed_log_lines
        ));
    }
    for problem in report.problems.iter().take(MAX_PROBLEMS_SHOWN) {
        out.push(format!("problem: {problem}"));
    }
    if report.problems.len() > MAX_PROBLEMS_SHOWN {
        out.push(format!(
            "problem: ... and {} more",
            report.problems.len() - MAX_PROBLEMS_SHOWN
        ));
    }
    if report.total.slots == 0 {
        out.push("problem: no slot was recorded in the history: nothing ran".to_owned());
    }
    out.push(report.total.summary_line());
    out
}

/// Prints the report; exit code 0 when the guarantees held, 1 otherwise.
pub fn print(report: &Report) -> ExitCode {
    for line in render(report) {
        say(&line);
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `fleetcron summary`: the check on any store and log.
pub async fn run(args: SummaryArgs) -> CliResult {
    // A check only reads: do not let opening the store create an empty database file.
    if let Some(path) = args
        .store
        .strip_prefix("sqlite://")
        .or_else(|| args.store.strip_prefix("sqlite:"))
    {
        if !path.contains('%') && !Path::new(path).exists() {
            return Err(CliError::runtime(format!(
                "the store {} does not exist",
                fleetcron::redact_url(&args.store)
            )));
        }
    }
    let strategy = DefaultSchedulerStrategy::connect(&args.store).await.map_err(|error| {
        CliError::runtime(format!(
            "cannot open the store {}: {error}",
            fleetcron::redact_url(&args.store)
        ))
    })?;
    let prefix = args.prefix.clone();
    let include = move |id: &str| {
        if prefix.is_empty() {
            !id.starts_with("fleetcron.")
        } else {
            id.starts_with(&prefix)
        }
    };
    let report = compute(&strategy, &args.log, &include)
        .await
        .map_err(CliError::runtime)?;
    if !report.passed() {
        warn("the exactly-once check failed");
    }
    Ok(print(&report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, second)
            .single()
            .unwrap_or_default()
    }

    fn row(second: u32, status: RunStatus, run: &str) -> RunRecord {
        RunRecord {
            run_id: run.to_owned(),
            task_id: "t".to_owned(),
            kind: RunKind::Scheduled,
            slot: Some(at(second)),
            slot_until: None,
            slot_count: None,
            attempt: 1,
            fence: 1,
            worker: Some("w".to_owned()),
            trigger_id: None,
            claimed_at: None,
            started_at: None,
            finished_at: None,
            status,
            reason: None,
            result: None,
            error: None,
        }
    }

    fn line(second: u32, run: &str) -> LogLine {
        LogLine {
            task: "t".to_owned(),
            slot: Some(at(second)),
            run_id: run.to_owned(),
            worker: "w".to_owned(),
            fence: 1,
            started: None,
        }
    }

    #[test]
    fn log_lines_parse_and_reject_garbage() {
        let parsed = parse_log_line("demo.tick-a 2026-01-01T00:00:05Z 0193-aa w2 17").expect("valid line");
        assert_eq!(parsed.slot, Some(at(5)));
        assert_eq!(parsed.fence, 17);
        assert_eq!(parse_log_line("t manual r w 3").and_then(|line| line.slot), None);
        let timed = parse_log_line("t 2026-01-01T00:00:05Z r w 3 2026-01-01T00:00:05.001500Z").expect("valid line");
        assert_eq!(
            timed.started.map(|started| (started - at(5)).num_microseconds()),
            Some(Some(1500))
        );
        assert!(parse_log_line("t 2026-01-01T00:00:05Z r w").is_none());
        assert!(parse_log_line("t not-a-date r w 1").is_none());
    }

    #[test]
    fn classification() {
        let schedule = Schedule::parse("* * * * * *", "UTC").expect("valid pattern");
        let runs = vec![
            row(1, RunStatus::Succeeded, "a"),
            row(2, RunStatus::Skipped, "b"),
            // 3: no row at all -> missed
            row(4, RunStatus::Missed, "c"),
            row(5, RunStatus::Abandoned, "d"),
            row(6, RunStatus::Succeeded, "e"),
            row(6, RunStatus::Failed, "f"),
            row(7, RunStatus::Failed, "g"),
        ];
        let log = [line(1, "a"), line(5, "d"), line(6, "e"), line(7, "g"), line(7, "g")];
        let log: Vec<&LogLine> = log.iter().collect();
        let mut problems = Vec::new();
        let check = check_task("t", &schedule, &runs, &log, &mut problems);
        assert_eq!(
            check.counts,
            Counts {
                slots: 7,
                ran_once: 2,
                duplicates: 2,
                missed: 2,
                skipped: 1,
                failed: 0,
                abandoned: 1,
                running: 0
            }
        );
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn contradictions_are_problems() {
        let schedule = Schedule::parse("* * * * * *", "UTC").expect("valid pattern");
        let runs = vec![row(1, RunStatus::Skipped, "a"), row(2, RunStatus::Succeeded, "b")];
        let log = [line(1, "x"), line(2, "y"), line(9, "z")];
        let log: Vec<&LogLine> = log.iter().collect();
        let mut problems = Vec::new();
        check_task("t", &schedule, &runs, &log, &mut problems);
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn summary_line_format() {
        let counts = Counts {
            slots: 5,
            ran_once: 3,
            duplicates: 0,
            missed: 1,
            skipped: 1,
            ..Counts::default()
        };
        assert_eq!(
            counts.summary_line(),
            "summary: slots=5 ran_once=3 duplicates=0 missed=1 skipped=1"
        );
    }
}

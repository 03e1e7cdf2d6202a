//! The torture checker: proves the guarantees from the store's history and the handlers' own log.
//!
//! It is a pure function of what was recorded, so it is unit-tested on hand-made histories. Modelled on
//! Jepsen's Chronos analysis: every expected slot is matched to the rows and log lines that claim it;
//! an expected slot with nothing is unaccounted, a slot with two runs is a duplicate.
//!
//! Checks, per task:
//! * **duplicates**: a slot with more than one started row (any attempt), or log lines naming more than
//!   one run, or one run logged twice;
//! * **early**: a scheduled row claimed or started before its slot, by the store's clock (the history's
//!   timestamps are the store's);
//! * **unaccounted**: a slot of the schedule, from the task's first recorded slot to `until`, with no row,
//!   or whose only row is still `pending`, or a `skipped`/`missed` row without a reason;
//! * **overlaps**: two started runs of a `Skip` task whose intervals (store clock) intersect;
//!   **fenced_writes**: the earlier of such a pair ended by its own worker's write (not by the reaper),
//!   i.e. a completion landed after a newer fence had taken over;
//! * **phantoms**: a log line for a run the history does not show as started;
//! * **ran_while_disabled**: a run of a slot that fell inside a window where the harness had the task
//!   disabled (with a margin on both ends);
//! * **unfinished**: a run still `running` after the fleet was drained and stopped;
//! * **lost_triggers**: an accepted trigger with no started run carrying its id, or with more than one.

use crate::summary::LogLine;
use chrono::{DateTime, Duration, Utc};
use fleetcron::{RunKind, RunRecord, RunStatus, Schedule};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Most slots examined per task.
const MAX_SLOTS_PER_TASK: usize = 10_000_000;
/// Problems kept verbatim (the rest are only counted).
const MAX_PROBLEMS: usize = 50;

/// One task as the checker needs it.
pub struct TaskUnderTest {
    /// The task id.
    pub id: String,
    /// Its schedule (`None`: only manual runs are checked).
    pub schedule: Option<Schedule>,
    /// Whether its overlap policy forbids two concurrent runs.
    pub exclusive: bool,
    /// Its whole history.
    pub runs: Vec<RunRecord>,
}

/// A window in which the harness held a task disabled: from the moment `update_task` returned to the
/// moment the enabling call was sent (harness clock, which is the store host's clock).
#[derive(Debug, Clone)]
pub struct DisabledWindow {
    /// The task.
    pub task: String,
    /// The disable was acknowledged.
    pub from: DateTime<Utc>,
    /// The enable was sent.
    pub to: DateTime<Utc>,
}

/// What the checker is given besides the tasks.
pub struct Evidence<'a> {
    /// The handlers' log.
    pub log: &'a [LogLine],
    /// The ids of triggers the store accepted.
    pub accepted_triggers: &'a HashSet<String>,
    /// Windows of disablement.
    pub disabled: &'a [DisabledWindow],
    /// Slots after this are not required to be accounted (the fleet was being stopped).
    pub until: DateTime<Utc>,
}

/// The verdict, as counts (and a few problems spelled out).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Verdict {
    /// Slots expected by the schedules.
    pub slots: u64,
    /// Expected slots with exactly one started run.
    pub ran_once: u64,
    /// Expected slots recorded skipped (overlap or disabled).
    pub skipped: u64,
    /// Expected slots recorded missed (the fleet was down past the misfire threshold, or superseded).
    pub missed: u64,
    /// Slots that ran more than once.
    pub duplicates: u64,
    /// Runs claimed or started before their slot.
    pub early: u64,
    /// Expected slots without a final row.
    pub unaccounted: u64,
    /// Accepted triggers.
    pub triggers: u64,
    /// Manual runs in the history (a coalesced trigger shares its run).
    pub manual_runs: u64,
    /// Accepted triggers that did not run exactly once.
    pub lost_triggers: u64,
    /// Intersecting runs of an exclusive task.
    pub overlaps: u64,
    /// Completions that landed after a newer fence took over.
    pub fenced_writes: u64,
    /// Log lines without a started row.
    pub phantoms: u64,
    /// Slots run while the harness held the task disabled.
    pub ran_while_disabled: u64,
    /// Runs still `running` at the end.
    pub unfinished: u64,
    /// Runs recorded `abandoned` (their worker was killed, paused or cut off).
    pub abandoned: u64,
    /// Log lines that could not be parsed (a write cut by SIGKILL).
    pub malformed_log_lines: u64,
    /// The first problems, spelled out.
    #[serde(skip)]
    pub problems: Vec<String>,
    /// How many problems there were in all.
    #[serde(skip)]
    pub problem_count: u64,
}

impl Verdict {
    /// Violations of the guarantees (zero for a passing run).
    pub fn violations(&self) -> u64 {
        self.duplicates
            + self.early
            + self.unaccounted
            + self.lost_triggers
            + self.overlaps
            + self.fenced_writes
            + self.phantoms
            + self.ran_while_disabled
            + self.unfinished
    }

    fn problem(&mut self, text: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(text);
        }
    }
}

/// Whether a handler was started for this row (it may have ended any way since).
pub fn started(status: RunStatus) -> bool {
    matches!(
        status,
        RunStatus::Running
            | RunStatus::Succeeded
            | RunStatus::Failed
            | RunStatus::TimedOut
            | RunStatus::Abandoned
            | RunStatus::Cancelled
    )
}

/// Whether the run's own worker wrote this end (the reaper writes `abandoned`).
fn ended_by_its_worker(status: RunStatus) -> bool {
    matches!(
        status,
        RunStatus::Succeeded | RunStatus::Failed | RunStatus::TimedOut | RunStatus::Cancelled
    )
}

fn show(instant: DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Checks every task against the evidence.
pub fn check(tasks: &[TaskUnderTest], evidence: &Evidence<'_>, malformed_log_lines: u64) -> Verdict {
    let mut verdict = Verdict {
        malformed_log_lines,
        triggers: evidence.accepted_triggers.len() as u64,
        ..Verdict::default()
    };
    let mut log_by_task: HashMap<&str, Vec<&LogLine>> = HashMap::new();
    for line in evidence.log {
        log_by_task.entry(line.task.as_str()).or_default().push(line);
    }
    let mut trigger_runs: HashMap<&str, u64> = HashMap::new();
    for task in tasks {
        let log = log_by_task.remove(task.id.as_str()).unwrap_or_default();
        check_task(task, &log, evidence, &mut verdict);
        for run in &task.runs {
            if run.kind == RunKind::Manual && started(run.status) {
                verdict.manual_runs += 1;
                if let Some(trigger) = &run.trigger_id {
                    *trigger_runs.entry(trigger.as_str()).or_default() += 1;
                }
            }
        }
    }
    for (task, lines) in log_by_task {
        for line in lines {
            verdict.phantoms += 1;
            verdict.problem(format!(
                "log line for {task} run {} but the task has no history",
                line.run_id
            ));
        }
    }
    for trigger in evidence.accepted_triggers {
        let runs = trigger_runs.get(trigger.as_str()).copied().unwrap_or(0);
        if runs != 1 {
            verdict.lost_triggers += 1;
            verdict.problem(format!(
                "accepted trigger {trigger} started {runs} runs (expected exactly 1)"
            ));
        }
    }
    verdict
}

fn check_task(task: &TaskUnderTest, log: &[&LogLine], evidence: &Evidence<'_>, verdict: &mut Verdict) {
    let id = task.id.as_str();
    let runs_by_id: HashMap<&str, &RunRecord> = task.runs.iter().map(|run| (run.run_id.as_str(), run)).collect();

    // Every row on its own.
    for run in &task.runs {
        if run.status == RunStatus::Running {
            verdict.unfinished += 1;
            verdict.problem(format!(
                "{id} run {} is still running after the fleet stopped",
                run.run_id
            ));
        }
        if run.status == RunStatus::Abandoned {
            verdict.abandoned += 1;
        }
        if let (Some(slot), true) = (run.slot, run.kind != RunKind::Manual) {
            let claimed_early = run.claimed_at.is_some_and(|at| at < slot);
            let started_early = run.started_at.is_some_and(|at| at < slot);
            if started(run.status) && (claimed_early || started_early) {
                verdict.early += 1;
                verdict.problem(format!(
                    "{id} slot {} claimed at {:?} / started at {:?}: before its instant",
                    show(slot),
                    run.claimed_at.map(show),
                    run.started_at.map(show)
                ));
            }
        }
    }

    // The log against the history.
    let mut logged: HashMap<&str, u64> = HashMap::new();
    for line in log {
        *logged.entry(line.run_id.as_str()).or_default() += 1;
        match runs_by_id.get(line.run_id.as_str()) {
            Some(run) if started(run.status) && run.slot == line.slot => {}
            Some(run) => {
                verdict.phantoms += 1;
                verdict.problem(format!(
                    "{id} run {} logged by {} for slot {:?} but the history has it {} for slot {:?}",
                    line.run_id,
                    line.worker,
                    line.slot.map(show),
                    run.status,
                    run.slot.map(show)
                ));
            }
            None => {
                verdict.phantoms += 1;
                verdict.problem(format!(
                    "{id} run {} logged by {} but absent from the history",
                    line.run_id, line.worker
                ));
            }
        }
    }

    // Slot by slot.
    let mut rows_by_slot: BTreeMap<DateTime<Utc>, Vec<&RunRecord>> = BTreeMap::new();
    // Rows that account for a range of skipped or missed slots: each covers every slot in its range.
    let mut ranges: Vec<&RunRecord> = Vec::new();
    for run in task.runs.iter().filter(|run| run.kind != RunKind::Manual) {
        match (run.slot, run.slot_until) {
            (Some(_), Some(_)) => ranges.push(run),
            (Some(slot), None) => rows_by_slot.entry(slot).or_default().push(run),
            (None, _) => {}
        }
    }
    let mut log_by_slot: HashMap<DateTime<Utc>, HashSet<&str>> = HashMap::new();
    for line in log {
        if let Some(slot) = line.slot {
            log_by_slot.entry(slot).or_default().insert(line.run_id.as_str());
        }
    }
    let first_row = rows_by_slot
        .keys()
        .next()
        .copied()
        .into_iter()
        .chain(ranges.iter().filter_map(|run| run.slot))
        .min();
    if let (Some(schedule), Some(first)) = (&task.schedule, first_row) {
        let mut expected = vec![first];
        if evidence.until > first {
            expected.extend(schedule.slots_between(first, evidence.until, MAX_SLOTS_PER_TASK));
        }
        for slot in expected {
            verdict.slots += 1;
            let mut rows: Vec<&RunRecord> = rows_by_slot.get(&slot).cloned().unwrap_or_default();
            let covering = ranges.iter().filter(|run| run.covers(slot)).count();
            rows.extend(ranges.iter().filter(|run| run.covers(slot)).copied());
            if covering > 0 && rows.len() > 1 {
                verdict.duplicates += 1;
                verdict.problem(format!(
                    "{id} slot {} is accounted for twice: a range row and {} other row(s)",
                    show(slot),
                    rows.len() - 1
                ));
                continue;
            }
            let rows = rows.as_slice();
            let started_rows: Vec<&&RunRecord> = rows.iter().filter(|run| started(run.status)).collect();
            let logged_runs = log_by_slot.get(&slot).map_or(0, HashSet::len);
            let logged_twice = started_rows
                .iter()
                .any(|run| logged.get(run.run_id.as_str()).copied().unwrap_or(0) > 1);
            if started_rows.len() > 1 || logged_runs > 1 || logged_twice {
                verdict.duplicates += 1;
                verdict.problem(format!(
                    "{id} slot {} ran more than once: {} started rows, {} runs in the log",
                    show(slot),
                    started_rows.len(),
                    logged_runs
                ));
                continue;
            }
            if let Some(run) = started_rows.first() {
                verdict.ran_once += 1;
                if let Some(window) = evidence.disabled.iter().find(|window| {
                    window.task == id
                        && slot > window.from + Duration::milliseconds(100)
                        && slot < window.to - Duration::milliseconds(100)
                }) {
                    verdict.ran_while_disabled += 1;
                    verdict.problem(format!(
                        "{id} slot {} ran (run {}) while the task was disabled ({} – {})",
                        show(slot),
                        run.run_id,
                        show(window.from),
                        show(window.to)
                    ));
                }
                continue;
            }
            let settled = rows
                .iter()
                .find(|run| matches!(run.status, RunStatus::Skipped | RunStatus::Missed));
            match settled {
                Some(run) if run.reason.as_deref().is_some_and(|reason| !reason.is_empty()) => {
                    if run.status == RunStatus::Skipped {
                        verdict.skipped += 1;
                    } else {
                        verdict.missed += 1;
                    }
                }
                Some(run) => {
                    verdict.unaccounted += 1;
                    verdict.problem(format!("{id} slot {} is {} without a reason", show(slot), run.status));
                }
                None => {
                    verdict.unaccounted += 1;
                    let what = if rows.is_empty() {
                        "has no row".to_owned()
                    } else {
                        let statuses: Vec<&str> = rows.iter().map(|run| run.status.as_str()).collect();
                        format!("never ran (rows: {})", statuses.join(", "))
                    };
                    verdict.problem(format!("{id} slot {} {what}", show(slot)));
                }
            }
        }
    }

    // Overlaps of an exclusive task, by the store's clock.
    if task.exclusive {
        let mut intervals: Vec<&RunRecord> = task
            .runs
            .iter()
            .filter(|run| started(run.status) && run.started_at.is_some())
            .collect();
        intervals.sort_by_key(|run| run.started_at);
        for pair in intervals.windows(2) {
            let (earlier, later) = (pair[0], pair[1]);
            let Some(next_start) = later.started_at else { continue };
            let overlapping = earlier.finished_at.is_none_or(|end| end > next_start);
            if overlapping {
                verdict.overlaps += 1;
                if ended_by_its_worker(earlier.status) && earlier.fence < later.fence {
                    verdict.fenced_writes += 1;
                }
                verdict.problem(format!(
                    "{id} runs overlap: {} (fence {}, {}, ended {:?}) and {} (fence {}, started {})",
                    earlier.run_id,
                    earlier.fence,
                    earlier.status,
                    earlier.finished_at.map(show),
                    later.run_id,
                    later.fence,
                    show(next_start)
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(second: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_800_000_000_000 + second * 1000)
            .single()
            .unwrap_or_default()
    }

    fn row(run_id: &str, slot: Option<i64>, status: RunStatus, fence: u64, span: (f64, f64)) -> RunRecord {
        let ms = |seconds: f64| Duration::milliseconds((seconds * 1000.0) as i64);
        let base = slot.map_or(at(0), at);
        RunRecord {
            run_id: run_id.to_owned(),
            task_id: "t".to_owned(),
            kind: if slot.is_some() {
                RunKind::Scheduled
            } else {
                RunKind::Manual
            },
            slot: slot.map(at),
            slot_until: None,
            slot_count: None,
            attempt: 1,
            fence,
            worker: Some("w".to_owned()),
            trigger_id: None,
            claimed_at: Some(base + ms(span.0)),
            started_at: started(status).then(|| base + ms(span.0)),
            finished_at: (status != RunStatus::Running).then(|| base + ms(span.1)),
            status,
            reason: matches!(status, RunStatus::Skipped | RunStatus::Missed).then(|| "overlap".to_owned()),
            result: None,
            error: None,
        }
    }

    fn line(run_id: &str, slot: Option<i64>) -> LogLine {
        LogLine {
            task: "t".to_owned(),
            slot: slot.map(at),
            run_id: run_id.to_owned(),
            worker: "w".to_owned(),
            fence: 1,
            started: None,
        }
    }

    fn every_second() -> Option<Schedule> {
        Schedule::parse("* * * * * *", "UTC").ok()
    }

    fn run_check(runs: Vec<RunRecord>, log: &[LogLine], triggers: &[&str], until: i64) -> Verdict {
        let tasks = [TaskUnderTest {
            id: "t".to_owned(),
            schedule: every_second(),
            exclusive: true,
            runs,
        }];
        let accepted: HashSet<String> = triggers.iter().map(|id| (*id).to_owned()).collect();
        let evidence = Evidence {
            log,
            accepted_triggers: &accepted,
            disabled: &[],
            until: at(until),
        };
        check(&tasks, &evidence, 0)
    }

    #[test]
    fn a_clean_history_passes() {
        let runs = vec![
            row("a", Some(1), RunStatus::Succeeded, 1, (0.01, 0.1)),
            row("b", Some(2), RunStatus::Skipped, 1, (0.0, 0.0)),
            row("c", Some(3), RunStatus::Abandoned, 2, (0.01, 2.5)),
            row("d", Some(4), RunStatus::Missed, 2, (2.6, 2.6)),
        ];
        let log = [line("a", Some(1)), line("c", Some(3))];
        let verdict = run_check(runs, &log, &[], 4);
        assert_eq!(verdict.violations(), 0, "{:?}", verdict.problems);
        assert_eq!(
            (
                verdict.slots,
                verdict.ran_once,
                verdict.skipped,
                verdict.missed,
                verdict.abandoned
            ),
            (4, 2, 1, 1, 1)
        );
    }

    #[test]
    fn duplicates_in_history_or_log_are_caught() {
        let runs = vec![
            row("a", Some(1), RunStatus::Succeeded, 1, (0.01, 0.1)),
            row("b", Some(1), RunStatus::Succeeded, 2, (0.2, 0.3)),
            row("c", Some(2), RunStatus::Succeeded, 3, (0.01, 0.1)),
        ];
        let log = [line("c", Some(2)), line("c", Some(2))];
        let verdict = run_check(runs, &log, &[], 2);
        assert_eq!(verdict.duplicates, 2, "{:?}", verdict.problems);
    }

    #[test]
    fn holes_pending_rows_and_reasonless_skips_are_unaccounted() {
        let mut reasonless = row("c", Some(3), RunStatus::Skipped, 1, (0.0, 0.0));
        reasonless.reason = None;
        let runs = vec![
            row("a", Some(1), RunStatus::Succeeded, 1, (0.01, 0.1)),
            row("b", Some(4), RunStatus::Pending, 1, (0.0, 0.0)),
            reasonless,
        ];
        // Slot 2 has no row, 3 is skipped without a reason, 4 is still pending, 5 never came.
        let verdict = run_check(runs, &[], &[], 5);
        assert_eq!(verdict.unaccounted, 4, "{:?}", verdict.problems);
    }

    #[test]
    fn early_starts_and_phantom_log_lines_are_caught() {
        let mut early = row("a", Some(1), RunStatus::Succeeded, 1, (0.0, 0.1));
        early.started_at = Some(at(1) - Duration::milliseconds(3));
        let log = [line("ghost", Some(1)), line("a", Some(2))];
        let verdict = run_check(vec![early], &log, &[], 1);
        assert_eq!(verdict.early, 1);
        assert_eq!(verdict.phantoms, 2, "{:?}", verdict.problems);
    }

    #[test]
    fn overlaps_and_fenced_writes_are_caught() {
        let runs = vec![
            // Ended by its own worker after a newer fence started: a fenced-out write landed.
            row("a", Some(1), RunStatus::Succeeded, 1, (0.01, 3.0)),
            row("b", Some(2), RunStatus::Succeeded, 2, (0.01, 0.2)),
        ];
        let verdict = run_check(runs, &[], &[], 2);
        assert_eq!((verdict.overlaps, verdict.fenced_writes), (1, 1));
        let runs = vec![
            row("a", Some(1), RunStatus::Abandoned, 1, (0.01, 1.5)),
            row("b", Some(2), RunStatus::Succeeded, 2, (0.01, 0.2)),
        ];
        let verdict = run_check(runs, &[], &[], 2);
        assert_eq!((verdict.overlaps, verdict.fenced_writes), (1, 0));
    }

    #[test]
    fn triggers_must_run_exactly_once() {
        let mut once = row("m1", None, RunStatus::Succeeded, 5, (0.0, 0.1));
        once.trigger_id = Some("x".to_owned());
        let mut twice_a = row("m2", None, RunStatus::Succeeded, 6, (1.0, 1.1));
        twice_a.trigger_id = Some("y".to_owned());
        let mut twice_b = row("m3", None, RunStatus::Abandoned, 7, (2.0, 2.1));
        twice_b.trigger_id = Some("y".to_owned());
        let mut waiting = row("m4", None, RunStatus::Pending, 8, (3.0, 3.0));
        waiting.trigger_id = Some("z".to_owned());
        let verdict = run_check(vec![once, twice_a, twice_b, waiting], &[], &["x", "y", "z"], 0);
        assert_eq!(
            (verdict.triggers, verdict.lost_triggers),
            (3, 2),
            "{:?}",
            verdict.problems
        );
    }

    #[test]
    fn runs_inside_a_disabled_window_are_caught() {
        let runs = vec![
            row("a", Some(1), RunStatus::Succeeded, 1, (0.01, 0.1)),
            row("b", Some(2), RunStatus::Skipped, 1, (0.0, 0.0)),
            row("c", Some(3), RunStatus::Succeeded, 2, (0.01, 0.1)),
        ];
        let tasks = [TaskUnderTest {
            id: "t".to_owned(),
            schedule: every_second(),
            exclusive: true,
            runs,
        }];
        let accepted = HashSet::new();
        let disabled = [DisabledWindow {
            task: "t".to_owned(),
            from: at(1) + Duration::milliseconds(500),
            to: at(4),
        }];
        let evidence = Evidence {
            log: &[],
            accepted_triggers: &accepted,
            disabled: &disabled,
            until: at(3),
        };
        let verdict = check(&tasks, &evidence, 0);
        assert_eq!(verdict.ran_while_disabled, 1, "{:?}", verdict.problems);
        assert_eq!(verdict.skipped, 1);
    }
}

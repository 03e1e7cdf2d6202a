//! `fleetcron tasks list|show|runs|trigger|enable|disable` and `fleetcron migrate`: admin calls against
//! any store URL, no running daemon needed.
//!
//! Exit codes: 0 done; 1 unknown task id (or a trigger of a disabled task); 2 usage; 3 the store could not
//! be reached or opened. Admin commands call only the strategy's admin methods (no `init`), except
//! `migrate`, which opens the store and runs its migrations.

use crate::process::say;
use crate::{CliError, CliResult};
use chrono::SecondsFormat;
use clap::{Args, Subcommand};
use fleetcron::{
    redact_url, DefaultSchedulerStrategy, EngineConfig, RunQuery, RunRecord, SchedulerError, SchedulerStrategy,
    Secrets, StoreError, TaskReport, Timestamp, UpdateScheduledTaskInput,
};
use std::process::ExitCode;
use std::time::Duration;

/// The store options every admin command takes.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Store URL: sqlite://PATH, postgres://…, mysql://…, redis://…
    #[arg(
        long,
        value_name = "URL",
        env = "FLEETCRON_STORE",
        hide_env_values = true,
        default_value = "sqlite://fleetcron.db"
    )]
    pub store: String,
    /// How long to retry an unreachable store before giving up (ms, s, m).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration_arg)]
    pub retry_for: Duration,
}

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    crate::config::parse_duration(text)
}

/// `fleetcron tasks …`
#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// Every task in the store, as a table (or JSON with every report field).
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Print every TaskReport field as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One task's full report.
    Show {
        /// Task id.
        id: String,
        #[command(flatten)]
        store: StoreArgs,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A task's run history, newest first.
    Runs {
        /// Task id.
        id: String,
        #[command(flatten)]
        store: StoreArgs,
        /// At most this many runs.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
        /// Print the runs as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Trigger a task now (durable: runs on the next worker that can, after the running run if any).
    Trigger {
        /// Task id.
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Enable a task fleet-wide.
    Enable {
        /// Task id.
        id: String,
        /// Why (shown in the task's report; at most 500 bytes).
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Disable a task fleet-wide (a running run is not killed; its slots are recorded skipped).
    Disable {
        /// Task id.
        id: String,
        /// Why (shown in the task's report; at most 500 bytes).
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `fleetcron migrate`
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    store: StoreArgs,
}

/// Maps a store failure to exit code 3 (or 2 for an invalid URL). The URL is shown redacted and the
/// message scrubbed of its secrets.
pub fn store_error(url: &str, error: &StoreError) -> CliError {
    let error = Secrets::of_url(url).scrub_store_error(error.clone());
    match error {
        StoreError::Config(_) => CliError::usage(format!("{error}")),
        _ => CliError::unreachable(format!("cannot use the store {}: {error}", redact_url(url))),
    }
}

fn admin_error(url: &str, id: &str, error: SchedulerError) -> CliError {
    match error {
        SchedulerError::UnknownTask(_) => CliError::runtime(format!(
            "unknown task {} in the store {}: `fleetcron tasks list` with the same --store shows the known ids",
            fleetcron::limits::echo(id),
            redact_url(url)
        )),
        SchedulerError::TaskDisabled(_) => {
            CliError::runtime(format!("task {id:?} is disabled: `fleetcron tasks enable {id}` first"))
        }
        SchedulerError::Store(store) => store_error(url, &store),
        other => CliError::runtime(other),
    }
}

async fn connect(store: &StoreArgs) -> Result<DefaultSchedulerStrategy, CliError> {
    let mut config = EngineConfig::default();
    config.admin_retry_for = store.retry_for;
    DefaultSchedulerStrategy::connect_with(&store.store, config)
        .await
        .map_err(|error| store_error(&store.store, &error))
}

fn time(instant: Option<Timestamp>) -> String {
    instant.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

fn json_line<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(CliError::runtime)?;
    say(&text);
    Ok(())
}

/// Formats rows as aligned columns.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        cells
            .iter()
            .enumerate()
            .map(|(index, cell)| {
                if index == last {
                    cell.clone()
                } else {
                    let pad = widths
                        .get(index)
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(cell.chars().count());
                    format!("{cell}{}", " ".repeat(pad))
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = vec![line(header.iter().map(|h| (*h).to_owned()).collect())];
    out.extend(rows.iter().map(|row| line(row.clone())));
    out.join("\n")
}

fn status_of(report: &TaskReport) -> String {
    if report.is_running {
        "running".to_owned()
    } else {
        report.last_status.map_or_else(|| "-".to_owned(), |s| s.to_string())
    }
}

fn shorten(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > max {
        format!("{}…", one_line.chars().take(max.saturating_sub(1)).collect::<String>())
    } else {
        one_line
    }
}

fn show(report: &TaskReport) -> String {
    let mut lines = vec![
        format!("id:               {}", report.id),
        format!("description:      {}", report.description),
        format!("schedule:         {} ({})", report.schedule, report.timezone),
        format!("enabled:          {}", report.enabled),
        format!("next run:         {}", time(report.next_run_at)),
        format!("last started:     {}", time(report.last_started_at)),
        format!("last finished:    {}", time(report.last_executed_at)),
        format!(
            "last status:      {}",
            report.last_status.map_or_else(|| "-".to_owned(), |s| s.to_string())
        ),
        format!(
            "last duration:    {}",
            report
                .last_duration_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms"))
        ),
        format!(
            "last result:      {}",
            report
                .last_result
                .as_ref()
                .map_or_else(|| "-".to_owned(), |r| shorten(&r.to_string(), 200))
        ),
        format!(
            "last error:       {}",
            report
                .last_error
                .as_deref()
                .map_or_else(|| "-".to_owned(), |e| shorten(e, 200))
        ),
        format!("running:          {}", report.is_running),
    ];
    for run in &report.running_on {
        lines.push(format!(
            "  on {} run {} since {}",
            run.worker,
            run.run_id,
            time(Some(run.since))
        ));
    }
    lines.push(format!("pending trigger:  {}", time(report.pending_trigger)));
    if let Some(note) = &report.note {
        lines.push(format!(
            "note:             {} ({} at {})",
            note.text,
            if note.enabled { "enabled" } else { "disabled" },
            time(Some(note.at))
        ));
    }
    if let Some(conflict) = &report.definition_conflict {
        lines.push(format!(
            "definition conflict: worker {} registered schedule {:?} tz {} at {}",
            conflict.worker,
            conflict.definition.schedule,
            conflict.definition.timezone,
            time(Some(conflict.seen_at))
        ));
    }
    lines.join("\n")
}

fn run_rows(runs: &[RunRecord]) -> Vec<Vec<String>> {
    runs.iter()
        .map(|run| {
            let duration = match (run.started_at, run.finished_at) {
                (Some(start), Some(end)) => format!("{} ms", (end - start).num_milliseconds()),
                _ => "-".to_owned(),
            };
            let note = run
                .error
                .as_deref()
                .or(run.reason.as_deref())
                .map_or_else(String::new, |text| shorten(text, 60));
            vec![
                run.run_id.clone(),
                run.kind.as_str().to_owned(),
                match (run.slot_until, run.slot_count) {
                    (Some(until), count) => format!(
                        "{} … {} ({} slots)",
                        time(run.slot),
                        time(Some(until)),
                        count.unwrap_or_default()
                    ),
                    (None, _) => time(run.slot),
                },
                run.attempt.to_string(),
                run.fence.to_string(),
                run.worker.clone().unwrap_or_else(|| "-".to_owned()),
                run.status.to_string(),
                duration,
                note,
            ]
        })
        .collect()
}

/// Runs a `tasks` subcommand.
pub async fn tasks(command: TasksCommand) -> CliResult {
    match command {
        TasksCommand::List { store, json } => {
            let strategy = connect(&store).await?;
            let mut reports = strategy
                .get_tasks()
                .await
                .map_err(|e| admin_error(&store.store, "", e))?;
            reports.sort_by(|a, b| a.id.cmp(&b.id));
            if json {
                json_line(&reports)?;
            } else if reports.is_empty() {
                say(&format!("no tasks in {}", redact_url(&store.store)));
            } else {
                let rows: Vec<Vec<String>> = reports
                    .iter()
                    .map(|r| {
                        vec![
                            r.id.clone(),
                            if r.enabled { "yes" } else { "no" }.to_owned(),
                            format!("{} {}", r.schedule, r.timezone),
                            time(r.next_run_at),
                            time(r.last_started_at),
                            status_of(r),
                            if r.pending_trigger.is_some() { "pending" } else { "-" }.to_owned(),
                        ]
                    })
                    .collect();
                say(&table(
                    &[
                        "ID",
                        "ENABLED",
                        "SCHEDULE",
                        "NEXT RUN",
                        "LAST START",
                        "STATUS",
                        "TRIGGER",
                    ],
                    &rows,
                ));
            }
        }
        TasksCommand::Show { id, store, json } => {
            let strategy = connect(&store).await?;
            let report = strategy
                .get_task(&id)
                .await
                .map_err(|e| admin_error(&store.store, &id, e))?
                .ok_or_else(|| admin_error(&store.store, &id, SchedulerError::UnknownTask(id.clone())))?;
            if json {
                json_line(&report)?;
            } else {
                say(&show(&report));
            }
        }
        TasksCommand::Runs { id, store, limit, json } => {
            let strategy = connect(&store).await?;
            // The history of an id the store does not know is an error, not an empty list.
            strategy
                .get_task(&id)
                .await
                .map_err(|e| admin_error(&store.store, &id, e))?
                .ok_or_else(|| admin_error(&store.store, &id, SchedulerError::UnknownTask(id.clone())))?;
            let runs = strategy
                .runs(&id, RunQuery { limit, before: None })
                .await
                .map_err(|e| admin_error(&store.store, &id, e))?;
            if json {
                json_line(&runs)?;
            } else if runs.is_empty() {
                say(&format!("no runs of {id} yet"));
            } else {
                say(&table(
                    &[
                        "RUN ID", "KIND", "SLOT", "ATTEMPT", "FENCE", "WORKER", "STATUS", "DURATION", "NOTE",
                    ],
                    &run_rows(&runs),
                ));
            }
        }
        TasksCommand::Trigger { id, store } => {
            let strategy = connect(&store).await?;
            let receipt = strategy
                .trigger_task(&id)
                .await
                .map_err(|e| admin_error(&store.store, &id, e))?;
            if receipt.coalesced {
                say(&format!(
                    "{id}: a trigger was already pending; joined it (trigger {})",
                    receipt.trigger_id
                ));
            } else {
                say(&format!(
                    "{id}: triggered (trigger {}); a worker runs it as soon as it can",
                    receipt.trigger_id
                ));
            }
        }
        TasksCommand::Enable { id, note, store } => update(&store, &id, true, note).await?,
        TasksCommand::Disable { id, note, store } => update(&store, &id, false, note).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn update(store: &StoreArgs, id: &str, enabled: bool, note: Option<String>) -> Result<(), CliError> {
    if note
        .as_ref()
        .is_some_and(|note| note.len() > fleetcron::model::MAX_NOTE_BYTES)
    {
        return Err(CliError::usage(format!(
            "--note is over {} bytes",
            fleetcron::model::MAX_NOTE_BYTES
        )));
    }
    let strategy = connect(store).await?;
    let report = strategy
        .update_task_noted(
            UpdateScheduledTaskInput {
                id: id.to_owned(),
                enabled: Some(enabled),
            },
            note.filter(|note| !note.trim().is_empty()),
        )
        .await
        .map_err(|e| admin_error(&store.store, id, e))?;
    if enabled {
        say(&format!("{id}: enabled; next run {}", time(report.next_run_at)));
    } else if report.is_running {
        say(&format!(
            "{id}: disabled; the run in progress is not killed and finishes on its own"
        ));
    } else {
        say(&format!(
            "{id}: disabled; its slots are recorded as skipped until enabled"
        ));
    }
    Ok(())
}

/// `fleetcron migrate`: opens the store and runs its migrations.
pub async fn migrate(args: MigrateArgs) -> CliResult {
    let strategy = connect(&args.store).await?;
    strategy
        .init("fleetcron-migrate")
        .await
        .map_err(|e| admin_error(&args.store.store, "", e))?;
    strategy
        .destroy()
        .await
        .map_err(|e| admin_error(&args.store.store, "", e))?;
    say(&format!("{}: schema is up to date", redact_url(&args.store.store)));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let text = table(&["A", "BB"], &[vec!["long".into(), "x".into()]]);
        assert_eq!(text, "A     BB\nlong  x");
    }
}

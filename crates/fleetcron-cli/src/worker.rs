//! `fleetcron worker` (hidden): one worker process of the demo and of the multi-process tests.
//!
//! Every handler first appends one line to the handlers' log — `<task_id> <slot|manual> <run_id>
//! <worker_id> <fence> <started>` — with a single `write_all` on a file opened in append mode, so lines written
//! by many processes never interleave; then it prints a human line on stdout and does its work. The
//! log is the independent witness the exactly-once checks compare with the store's history.

use crate::process::{say, Shutdown};
use crate::{CliError, CliResult};
use chrono::{SecondsFormat, Timelike};
use clap::{Args, ValueEnum};
use fleetcron::{DefaultSchedulerStrategy, EngineConfig, ScheduledTask, Scheduler, TaskContext, TaskError, Value};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// The task sets a worker can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// demo.tick-a/b/c every second, demo.flaky every 2 s (fails one run in three), demo.slow every
    /// 3 s taking 4 s (its overlapping slots are skipped).
    Demo,
    /// `--tasks` tasks t000.. every second (50 ms each) plus `hold` every 2 s (1.5 s each).
    Test,
}

/// Arguments of `fleetcron worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Store URL: sqlite://PATH (shared by processes) or memory:// (this process only).
    #[arg(long, value_name = "URL")]
    pub store: String,
    /// The handlers' log, appended to by every run.
    #[arg(long, value_name = "PATH")]
    pub log: PathBuf,
    /// This worker's id in the history and the log (default HOST:PID:RANDOM).
    #[arg(long, value_name = "ID")]
    pub worker_id: Option<String>,
    /// Which tasks to run.
    #[arg(long, value_enum, default_value_t = Profile::Demo)]
    pub profile: Profile,
    /// Number of every-second tasks of the `test` profile.
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub tasks: u32,
    /// Lease of a run, in milliseconds: a killed worker's run is abandoned within about this time.
    #[arg(long, value_name = "MS", default_value_t = 3000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub lease_ms: u64,
    /// How often an idle worker polls for expired leases and triggers, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 250,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub poll_ms: u64,
    /// How long SIGTERM waits for running handlers before cancelling them, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub shutdown_grace_ms: u64,
    /// Shifts this worker's clock by this many milliseconds (positive: ahead), to simulate clock skew.
    /// Only when to ask changes: the store's clock still decides whether a slot is due.
    #[arg(long, value_name = "MS", env = "FLEETCRON_CLOCK_SKEW_MS", default_value_t = 0,
          allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(-86_400_000..=86_400_000))]
    pub clock_skew_ms: i64,
    /// Most claims (and completions) per store mutation.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub claim_batch: u32,
    /// Most claim mutations in flight at once (default: the store's preference).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub claim_parallelism: Option<u32>,
    /// Also shut down when stdin reaches its end (the parent holding the pipe is gone).
    #[arg(long)]
    pub watch_stdin: bool,
}

/// The handlers' shared log file and output.
struct Journal {
    file: File,
}

impl Journal {
    /// Appends the run's line to the log (one write), then prints the human line.
    fn record(&self, context: &TaskContext) -> Result<(), TaskError> {
        let slot = context.slot.map_or_else(
            || "manual".to_owned(),
            |slot| slot.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        );
        let started = chrono::Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        let line = format!(
            "{} {} {} {} {} {}\n",
            context.task_id, slot, context.run_id, context.worker_id, context.fence, started
        );
        (&self.file)
            .write_all(line.as_bytes())
            .map_err(|error| TaskError::new(format!("cannot append to the handlers' log: {error}")))?;
        let shown = context
            .slot
            .map_or_else(|| "manual".to_owned(), |slot| slot.format("%H:%M:%S").to_string());
        say(&format!(
            "{} ran {} slot {} run {} fence {}",
            context.worker_id, context.task_id, shown, context.run_id, context.fence
        ));
        Ok(())
    }
}

/// Sleeps `duration` unless the run is cancelled first (timeout, lost lease, shutdown).
async fn work(context: &TaskContext, duration: Duration) -> Result<(), TaskError> {
    tokio::select! {
        () = tokio::time::sleep(duration) => Ok(()),
        () = context.cancellation.cancelled() => Err(TaskError::new("cancelled before the work was done")),
    }
}

/// What a demo handler does after logging.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Sleep this long, succeed.
    Sleep(Duration),
    /// Sleep this long, then fail for one slot in three (chosen from the slot's second).
    Flaky(Duration),
}

fn task(
    journal: &Arc<Journal>,
    id: &str,
    pattern: &str,
    description: &str,
    behaviour: Behaviour,
) -> Result<ScheduledTask, CliError> {
    let journal = journal.clone();
    ScheduledTask::builder(id)
        .schedule(pattern)
        .description(description)
        .timeout(Duration::from_secs(60))
        .handler(move |context: TaskContext| {
            let journal = journal.clone();
            async move {
                journal.record(&context)?;
                match behaviour {
                    Behaviour::Sleep(duration) => work(&context, duration).await?,
                    Behaviour::Flaky(duration) => {
                        work(&context, duration).await?;
                        let second = context.slot.map_or(0, |slot| slot.second());
                        if (second / 2) % 3 == 0 {
                            return Err(TaskError::new(format!(
                                "simulated failure (slot second {second:02} is a multiple of 6)"
                            )));
                        }
                    }
                }
                Ok(Value::from(context.worker_id.clone()))
            }
        })
        .build()
        .map_err(|error| CliError::runtime(format!("cannot build task {id}: {error}")))
}

/// The tasks of a profile, every handler writing to `journal`.
fn profile_tasks(profile: Profile, count: u32, journal: &Arc<Journal>) -> Result<Vec<ScheduledTask>, CliError> {
    let ms = Duration::from_millis;
    match profile {
        Profile::Demo => Ok(vec![
            task(
                journal,
                "demo.tick-a",
                "* * * * * *",
                "Ticks every second",
                Behaviour::Sleep(ms(100)),
            )?,
            task(
                journal,
                "demo.tick-b",
                "* * * * * *",
                "Ticks every second",
                Behaviour::Sleep(ms(100)),
            )?,
            task(
                journal,
                "demo.tick-c",
                "* * * * * *",
                "Ticks every second",
                Behaviour::Sleep(ms(100)),
            )?,
            task(
                journal,
                "demo.flaky",
                "*/2 * * * * *",
                "Every 2 s; fails one run in three",
                Behaviour::Flaky(ms(100)),
            )?,
            task(
                journal,
                "demo.slow",
                "*/3 * * * * *",
                "Every 3 s, takes 4 s: overlapping slots are skipped",
                Behaviour::Sleep(ms(4000)),
            )?,
        ]),
        Profile::Test => {
            let mut tasks = (0..count)
                .map(|index| {
                    task(
                        journal,
                        &format!("t{index:03}"),
                        "* * * * * *",
                        "Every second, 50 ms",
                        Behaviour::Sleep(ms(50)),
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            tasks.push(task(
                journal,
                "hold",
                "*/2 * * * * *",
                "Every 2 s, holds its lease 1.5 s",
                Behaviour::Sleep(ms(1500)),
            )?);
            // Scheduled once a year: for manual triggers (trigger-to-start latency), never busy.
            tasks.push(task(
                journal,
                "manual",
                "0 0 1 1 *",
                "Yearly; triggered by hand",
                Behaviour::Sleep(ms(10)),
            )?);
            Ok(tasks)
        }
    }
}

/// Runs one worker until SIGINT, SIGTERM or (with `--watch-stdin`) the end of stdin.
pub async fn run(args: WorkerArgs) -> CliResult {
    let mut shutdown = Shutdown::install(args.watch_stdin)?;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.log)
        .map_err(|error| CliError::runtime(format!("cannot open the handlers' log {}: {error}", args.log.display())))?;
    let journal = Arc::new(Journal { file });
    let tasks = profile_tasks(args.profile, args.tasks, &journal)?;
    let task_count = tasks.len();
    let config = EngineConfig::default()
        .lease(Duration::from_millis(args.lease_ms))
        .poll_interval(Duration::from_millis(args.poll_ms))
        .shutdown_grace(Duration::from_millis(args.shutdown_grace_ms))
        .claim_batch(args.claim_batch as usize);
    let config = match args.claim_parallelism {
        Some(parallelism) => config.claim_parallelism(parallelism as usize),
        None => config,
    };
    let strategy = DefaultSchedulerStrategy::connect_with(&args.store, config)
        .await
        .map_err(|error| {
            CliError::runtime(format!(
                "cannot open the store {}: {error}",
                fleetcron::redact_url(&args.store)
            ))
        })?;
    // History pruning stays off: the checks read the whole history.
    let mut builder = Scheduler::builder()
        .strategy(strategy)
        .tasks(tasks)
        .retention_schedule(None);
    if let Some(id) = &args.worker_id {
        builder = builder.worker_id(id.clone());
    }
    if args.clock_skew_ms != 0 {
        builder = builder.clock(Arc::new(fleetcron_core::OffsetClock::new(
            chrono::Duration::milliseconds(args.clock_skew_ms),
        )));
    }
    let scheduler = builder.build().map_err(CliError::usage)?;
    let id = scheduler.worker_id().to_owned();
    say(&format!(
        "{id} started: pid {}, {task_count} tasks, lease {} ms",
        std::process::id(),
        args.lease_ms
    ));
    let stop = async {
        let why = shutdown.recv().await;
        say(&format!("{id} stopping ({why}): finishing running handlers"));
    };
    scheduler
        .run_until(stop)
        .await
        .map_err(|error| CliError::runtime(format!("worker {id}: {error}")))?;
    say(&format!("{id} stopped"));
    Ok(ExitCode::SUCCESS)
}

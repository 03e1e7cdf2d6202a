//! `fleetcron run --config fleetcron.toml`: the daemon. It validates the whole file (every problem at
//! once, exit code 2), connects to the store (exit code 3 when it cannot), registers the file's tasks and
//! runs them until SIGTERM or SIGINT (graceful: running handlers get the engine's `shutdown_grace`).
//!
//! SIGHUP reloads the file. A valid new file gets a new scheduler on the same store, started before the
//! old one stops: slots due during the handover are claimed by whichever scheduler asks first (the store
//! lets exactly one claim win), and the new scheduler's registration resumes from the store's high-water
//! mark, so no slot is lost or run twice. An invalid file is reported and the old configuration keeps
//! running. Tasks removed from the file stay in the store (reports, history); nobody claims their slots.
//!
//! Under systemd (`Type=notify`, see `dist/systemd/fleetcron.service`) it reports `READY=1` once it is
//! up and `STOPPING=1` on SIGTERM/SIGINT ([`crate::notify`]), and logs in the journal's form
//! ([`crate::logging`]).

use crate::admin::store_error;
use crate::config::{self, DaemonConfig, Issue};
use crate::logging::LogFormat;
use crate::notify::notify;
use crate::process::{say, warn};
use crate::{exec, CliError, CliResult};
use clap::Args;
use fleetcron::{DefaultSchedulerStrategy, ScheduledTask, Scheduler, SchedulerError};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Arguments of `fleetcron run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configuration file.
    #[arg(long, short, value_name = "PATH", default_value = "fleetcron.toml")]
    pub config: PathBuf,
    /// Store URL; overrides `store` in the file (default sqlite://fleetcron.db).
    #[arg(long, value_name = "URL", env = "FLEETCRON_STORE", hide_env_values = true)]
    pub store: Option<String>,
    /// This worker's id (default: `worker_id` in the file, else HOST:PID:RANDOM).
    #[arg(long, value_name = "ID", env = "FLEETCRON_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Validate the file and exit: 0 when valid, 2 with every problem otherwise.
    #[arg(long)]
    pub check: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The admin HTTP surface (`--admin-listen`, `--admin-token-file`, `--insecure-no-auth`).
    #[command(flatten)]
    pub admin: crate::admin_config::AdminArgs,
}

const DEFAULT_STORE: &str = "sqlite://fleetcron.db";

/// Prints every issue and returns the exit-2 error.
fn report_issues(path: &Path, issues: &[Issue]) -> CliError {
    for issue in issues {
        if issue.line == 0 {
            warn(&format!("error: {}", issue.message));
        } else {
            warn(&format!("error: {}:{issue}", path.display()));
        }
    }
    CliError::usage(format!(
        "{}: {} problem{} found; nothing was started",
        path.display(),
        issues.len(),
        if issues.len() == 1 { "" } else { "s" }
    ))
}

fn build_tasks(config: &DaemonConfig, client: &reqwest::Client) -> Result<Vec<ScheduledTask>, CliError> {
    config
        .tasks
        .iter()
        .map(|spec| {
            ScheduledTask::builder(spec.id.clone())
                .schedule(spec.schedule.clone())
                .timezone(spec.timezone.clone())
                .description(spec.description.clone())
                .timeout(spec.timeout)
                .overlap(spec.overlap)
                .catch_up(spec.catch_up)
                .on_abandon(spec.on_abandon)
                .params(spec.params.clone())
                .handler(exec::handler(spec, client.clone()))
                .build()
                .map_err(|error| CliError::usage(format!("task {}: {error}", spec.id)))
        })
        .collect()
}

/// One running generation of the configuration.
struct Generation {
    scheduler: Scheduler,
    stop: oneshot::Sender<()>,
    handle: JoinHandle<Result<(), SchedulerError>>,
}

impl Generation {
    /// Stops this generation gracefully and waits for it.
    async fn stop(self) -> Result<(), CliError> {
        let id = self.scheduler.worker_id().to_owned();
        let _ = self.stop.send(());
        match self.handle.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(CliError::runtime(format!("worker {id}: {error}"))),
            Err(error) => Err(CliError::runtime(format!("worker {id} failed: {error}"))),
        }
    }
}

async fn start(
    config: &DaemonConfig,
    url: &str,
    worker_id: Option<String>,
    client: &reqwest::Client,
) -> Result<Generation, CliError> {
    let tasks = build_tasks(config, client)?;
    let strategy = DefaultSchedulerStrategy::connect_with(url, config.engine.clone())
        .await
        .map_err(|error| store_error(url, &error))?;
    let mut builder = Scheduler::builder().strategy(strategy).tasks(tasks);
    if let Some(id) = worker_id {
        builder = builder.worker_id(id);
    }
    let scheduler = builder.build().map_err(CliError::usage)?;
    let (stop, stopped) = oneshot::channel::<()>();
    let runner = scheduler.clone();
    let handle = tokio::spawn(async move { runner.run_until(stopped).await });
    // Ready, or the reason it could not start (store unreachable, migrations failed).
    let mut handle = handle;
    tokio::select! {
        () = scheduler.ready() => {}
        joined = &mut handle => {
            let error = match joined {
                Ok(Ok(())) => "stopped before it was ready".to_owned(),
                Ok(Err(SchedulerError::Store(error))) => return Err(store_error(url, &error)),
                Ok(Err(error)) => error.to_string(),
                Err(error) => error.to_string(),
            };
            return Err(CliError::runtime(format!("the scheduler could not start: {error}")));
        }
    }
    Ok(Generation {
        scheduler,
        stop,
        handle,
    })
}

/// The one-line status `systemctl status` shows.
fn status(worker: &str, tasks: usize) -> String {
    format!(
        "running {tasks} task{} as worker {worker}",
        if tasks == 1 { "" } else { "s" }
    )
}

/// The outcome of a reload.
enum Reloaded {
    /// The new generation runs; the old one is to be stopped.
    Started {
        /// The new generation.
        next: Box<Generation>,
        /// Its number of tasks.
        tasks: usize,
    },
    /// The file was invalid or the new generation could not start: the old one keeps running.
    Refused,
}

/// Reads the file again (on a blocking thread: a file of 100,000 tasks takes a while) and starts the
/// new generation on the same store.
async fn reload_generation(
    path: PathBuf,
    file_names_store: bool,
    url: String,
    worker_id: Option<String>,
    client: reqwest::Client,
) -> Reloaded {
    let parse_path = path.clone();
    let parsed = match tokio::task::spawn_blocking(move || config::load(&parse_path)).await {
        Ok(parsed) => parsed,
        Err(error) => {
            tracing::error!(%error, "reload refused: reading the file failed; the running configuration stays");
            return Reloaded::Refused;
        }
    };
    let new_config = match parsed {
        Ok(new_config) => {
            crate::secrets::protect_config(&new_config);
            new_config
        }
        Err(issues) => {
            for issue in &issues {
                tracing::error!(file = %path.display(), line = issue.line, column = issue.column,
                    field = %issue.field, "{}", issue.message);
            }
            tracing::error!(
                problems = issues.len(),
                "reload refused: the file is invalid; the running configuration stays"
            );
            return Reloaded::Refused;
        }
    };
    if file_names_store && new_config.store.as_deref().unwrap_or(DEFAULT_STORE) != url {
        tracing::warn!("the file names another store; a reload keeps the current one (restart to switch)");
    }
    match start(&new_config, &url, worker_id, &client).await {
        Ok(next) => Reloaded::Started {
            next: Box::new(next),
            tasks: new_config.tasks.len(),
        },
        Err(error) => {
            tracing::error!(%error, "reload failed; the running configuration stays");
            Reloaded::Refused
        }
    }
}

/// Runs the daemon (or, with `--check`, validates its file).
pub async fn run(args: RunArgs) -> CliResult {
    let config = config::load(&args.config).map_err(|issues| report_issues(&args.config, &issues))?;
    crate::secrets::protect_config(&config);
    if args.check {
        // Everything `run` would refuse before touching the store: the tasks as the library builds
        // them, the engine settings and the scheduler's own checks (ids, worker id).
        let client = reqwest::Client::new();
        let tasks = build_tasks(&config, &client)?;
        config
            .engine
            .validate()
            .map_err(|error| CliError::usage(format!("{}: {error}", args.config.display())))?;
        let mut builder = Scheduler::builder()
            .strategy(fleetcron::MemoryStrategy::new(std::sync::Arc::new(
                fleetcron::MemoryStore::new(),
            )))
            .tasks(tasks);
        if let Some(id) = args.worker_id.clone().or_else(|| config.worker_id.clone()) {
            builder = builder.worker_id(id);
        }
        builder
            .build()
            .map_err(|error| CliError::usage(format!("{}: {error}", args.config.display())))?;
        let url = args
            .store
            .clone()
            .or_else(|| config.store.clone())
            .unwrap_or_else(|| DEFAULT_STORE.to_owned());
        DefaultSchedulerStrategy::check_url(&url).map_err(|error| store_error(&url, &error))?;
        say(&format!(
            "{}: valid ({} task{})",
            args.config.display(),
            config.tasks.len(),
            if config.tasks.len() == 1 { "" } else { "s" }
        ));
        return Ok(ExitCode::SUCCESS);
    }
    crate::logging::init("info", args.log_format);
    crate::admin_config::install_recorder();
    let install = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|error| CliError::runtime(format!("cannot install the {name} handler: {error}")))
    };
    let mut interrupt = install(SignalKind::interrupt(), "SIGINT")?;
    let mut terminate = install(SignalKind::terminate(), "SIGTERM")?;
    let mut hangup = install(SignalKind::hangup(), "SIGHUP")?;

    let url = args
        .store
        .clone()
        .or_else(|| config.store.clone())
        .unwrap_or_else(|| DEFAULT_STORE.to_owned());
    let base_id = args.worker_id.clone().or_else(|| config.worker_id.clone());
    let client =
        exec::http_client().map_err(|error| CliError::runtime(format!("cannot create the HTTP client: {error}")))?;
    // A signal while the store is still being reached (or migrated) ends the wait.
    let mut generation = tokio::select! {
        started = start(&config, &url, base_id.clone(), &client) => started?,
        _ = interrupt.recv() => return Ok(ExitCode::SUCCESS),
        _ = terminate.recv() => return Ok(ExitCode::SUCCESS),
    };
    tracing::info!(
        worker = generation.scheduler.worker_id(),
        store = %fleetcron::redact_url(&url),
        tasks = config.tasks.len(),
        config = %args.config.display(),
        "fleetcron daemon running"
    );
    // The admin surface (if asked for) on a strategy of its own: reloads do not touch it.
    let _admin = crate::admin_config::start_for_daemon(&args.admin, &args.config, &url).await?;
    // Only now is the daemon up: store reached and migrated, tasks registered, admin server listening.
    notify(&format!(
        "READY=1\nSTATUS={}",
        status(generation.scheduler.worker_id(), config.tasks.len())
    ));
    let mut reloads = 0u32;
    // A reload (parsing the file, then starting the new generation) runs beside this loop, never in
    // it: a big file must not delay SIGTERM. Dropping it (at shutdown) drops the new generation's stop
    // handle, which stops that generation by itself.
    let mut reload: Option<std::pin::Pin<Box<dyn std::future::Future<Output = Reloaded> + Send>>> = None;
    loop {
        tokio::select! {
            _ = interrupt.recv() => { tracing::info!("SIGINT: shutting down"); notify("STOPPING=1"); break; }
            _ = terminate.recv() => { tracing::info!("SIGTERM: shutting down"); notify("STOPPING=1"); break; }
            _ = hangup.recv() => {
                if reload.is_some() {
                    tracing::warn!("SIGHUP while a reload is in progress: it will be the configuration read now");
                    continue;
                }
                // Each generation is a distinct worker in the store, so leases never mix.
                let id = base_id.as_ref().map(|id| format!("{id}.r{}", reloads + 1));
                reload = Some(Box::pin(reload_generation(
                    args.config.clone(),
                    args.store.is_none(),
                    url.clone(),
                    id,
                    client.clone(),
                )));
            }
            reloaded = async { match reload.as_mut() { Some(future) => future.await, None => std::future::pending().await } } => {
                reload = None;
                match reloaded {
                    Reloaded::Started { next, tasks } => {
                        reloads += 1;
                        let old = std::mem::replace(&mut generation, *next);
                        tracing::info!(worker = generation.scheduler.worker_id(), tasks,
                            "configuration reloaded; stopping the previous generation");
                        notify(&format!("STATUS={}", status(generation.scheduler.worker_id(), tasks)));
                        if let Err(error) = old.stop().await {
                            tracing::error!(%error, "the previous generation did not stop cleanly");
                        }
                    }
                    Reloaded::Refused => {}
                }
            }
            joined = &mut generation.handle => {
                return match joined {
                    Ok(Ok(())) => Ok(ExitCode::SUCCESS),
                    Ok(Err(SchedulerError::Store(error))) => Err(store_error(&url, &error)),
                    Ok(Err(error)) => Err(CliError::runtime(error)),
                    Err(error) => Err(CliError::runtime(error)),
                };
            }
        }
    }
    generation.stop().await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

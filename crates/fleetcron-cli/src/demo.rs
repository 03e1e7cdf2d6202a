//! `fleetcron demo`: the README's first command.
//!
//! It creates an SQLite store and a handlers' log in a temporary directory, starts several worker
//! processes of this same binary (`fleetcron worker --profile demo`), relays their output live, SIGKILLs
//! one of them halfway (preferably the one running the slow task, so its run is abandoned) and starts a
//! replacement, stops everyone with SIGTERM after `--seconds` (or at Ctrl-C), and finally checks from
//! the store's history and the handlers' log that every slot ran exactly once. The last line is
//! `summary: slots=.. ran_once=.. duplicates=.. missed=.. skipped=..`; the exit code is 0 when no slot
//! ran twice and none was missed.

use crate::process::{say, sigterm, sqlite_url, warn, Shutdown};
use crate::summary;
use crate::{CliError, CliResult};
use clap::Args;
use fleetcron::{DefaultSchedulerStrategy, SchedulerStrategy};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Lease of the demo's workers: a killed worker's run is recorded abandoned within about this long.
const LEASE_MS: u64 = 3000;
/// Poll interval of the demo's workers.
const POLL_MS: u64 = 250;
/// Longest wait for the workers to stop after SIGTERM before they are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Arguments of `fleetcron demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How long the workers run, in seconds (Ctrl-C stops earlier).
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(4..=86_400))]
    pub seconds: u64,
    /// How many worker processes to start (one of them is killed and replaced halfway).
    #[arg(long, value_name = "W", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(2..=64))]
    pub workers: u32,
    /// Keep the temporary directory (store and handlers' log) and print its path.
    #[arg(long)]
    pub keep: bool,
    /// Serve the dashboard and the admin API here (loopback, no token; port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
}

/// A worker process started by the demo.
struct Worker {
    label: String,
    pid: u32,
    child: Child,
    /// Held open: the worker stops by itself when the demo dies and this pipe closes.
    stdin: Option<ChildStdin>,
    relays: Vec<JoinHandle<()>>,
}

fn relay<R: AsyncRead + Unpin + Send + 'static>(stream: R, label: String, to_stderr: bool) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if to_stderr {
                warn(&format!("{label} ! {line}"));
            } else if line.starts_with(&format!("{label} ")) {
                say(&line);
            } else {
                say(&format!("{label} | {line}"));
            }
        }
    })
}

fn spawn_worker(exe: &Path, url: &str, log: &Path, label: &str) -> Result<Worker, CliError> {
    let mut command = Command::new(exe);
    command
        .arg("worker")
        .args(["--store", url, "--worker-id", label, "--profile", "demo"])
        .arg("--log")
        .arg(log)
        .args([
            "--lease-ms",
            &LEASE_MS.to_string(),
            "--poll-ms",
            &POLL_MS.to_string(),
            "--watch-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: Ctrl-C reaches the demo only, which then stops the workers in order.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|error| CliError::runtime(format!("cannot start worker {label} ({}): {error}", exe.display())))?;
    let pid = child
        .id()
        .ok_or_else(|| CliError::runtime(format!("worker {label} exited at once")))?;
    let mut relays = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        relays.push(relay(stdout, label.to_owned(), false));
    }
    if let Some(stderr) = child.stderr.take() {
        relays.push(relay(stderr, label.to_owned(), true));
    }
    Ok(Worker {
        label: label.to_owned(),
        pid,
        stdin: child.stdin.take(),
        child,
        relays,
    })
}

/// Picks the worker to kill: the one running `demo.slow` now (its run will be abandoned), else the
/// second worker.
async fn pick_victim(strategy: &DefaultSchedulerStrategy, workers: &[Worker]) -> (usize, Option<String>) {
    if let Ok(Some(report)) = strategy.get_task("demo.slow").await {
        for running in &report.running_on {
            if let Some(index) = workers.iter().position(|worker| worker.label == running.worker) {
                return (index, Some(format!("while it runs demo.slow (run {})", running.run_id)));
            }
        }
    }
    (1.min(workers.len().saturating_sub(1)), None)
}

/// Sleeps until `until`; `true` when a shutdown signal came first.
async fn sleep_or_signal(until: Instant, shutdown: &mut Shutdown) -> bool {
    tokio::select! {
        () = tokio::time::sleep_until(until) => false,
        why = shutdown.recv() => {
            say(&format!("demo: {why} received: stopping early"));
            true
        }
    }
}

async fn stop_all(workers: &mut [Worker], shutdown: &mut Shutdown) {
    let pids: Vec<u32> = workers.iter().map(|worker| worker.pid).collect();
    say(&format!(
        "demo: stopping {} workers with SIGTERM (running handlers finish first)",
        workers.len()
    ));
    if let Err(error) = sigterm(&pids).await {
        warn(&format!("demo: {error}; closing the workers' stdin instead"));
        for worker in workers.iter_mut() {
            worker.stdin = None;
        }
    }
    let wait_all = async {
        for worker in workers.iter_mut() {
            match worker.child.wait().await {
                Ok(status) if status.success() => {}
                Ok(status) => warn(&format!("demo: worker {} exited with {status}", worker.label)),
                Err(error) => warn(&format!("demo: cannot wait for worker {}: {error}", worker.label)),
            }
        }
    };
    let killed = tokio::select! {
        () = wait_all => false,
        () = tokio::time::sleep(STOP_TIMEOUT) => {
            warn("demo: workers did not stop in time; killing them");
            true
        }
        why = shutdown.recv() => {
            warn(&format!("demo: {why} again: killing the workers"));
            true
        }
    };
    if killed {
        for worker in workers.iter_mut() {
            let _ = worker.child.start_kill();
            let _ = worker.child.wait().await;
        }
    }
    for worker in workers.iter_mut() {
        worker.stdin = None;
        for relay in worker.relays.drain(..) {
            // Output still buffered in the pipe is printed before the summary.
            let _ = tokio::time::timeout(Duration::from_secs(5), relay).await;
        }
    }
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> CliResult {
    let mut shutdown = Shutdown::install(false)?;
    let exe = std::env::current_exe()
        .map_err(|error| CliError::runtime(format!("cannot locate the fleetcron binary: {error}")))?;
    let dir = tempfile::Builder::new()
        .prefix("fleetcron-demo-")
        .tempdir()
        .map_err(|error| CliError::runtime(format!("cannot create a temporary directory: {error}")))?;
    let db: PathBuf = dir.path().join("fleetcron.db");
    let log: PathBuf = dir.path().join("handlers.log");
    let url = sqlite_url(&db);
    say(&format!("demo: store {url}"));
    say(&format!("demo: handlers' log {}", log.display()));

    // The `fleetcron migrate` step: create the schema once before the workers start.
    let strategy = DefaultSchedulerStrategy::connect(&url)
        .await
        .map_err(|error| CliError::runtime(format!("cannot open the store {url}: {error}")))?;
    strategy
        .init("demo-setup")
        .await
        .map_err(|error| CliError::runtime(format!("cannot prepare the store {url}: {error}")))?;
    strategy
        .destroy()
        .await
        .map_err(|error| CliError::runtime(format!("cannot prepare the store {url}: {error}")))?;

    // The dashboard, over a strategy of its own on the demo's store.
    let admin = DefaultSchedulerStrategy::connect(&url)
        .await
        .map_err(|error| CliError::runtime(format!("cannot open the store {url}: {error}")))?;
    let dashboard = crate::admin_config::start(
        std::sync::Arc::new(admin),
        args.listen,
        crate::admin_config::auth(None, false)?,
        "demo",
    )
    .await?;
    say(&format!(
        "demo: dashboard at http://{}/ (open it while the demo runs)",
        dashboard.address
    ));
    say(&format!(
        "demo: {} workers for {} s; tasks demo.tick-a/b/c every second, demo.flaky every 2 s (fails one run in three), \
         demo.slow every 3 s taking 4 s (overlapping slots skipped); lease {} ms",
        args.workers, args.seconds, LEASE_MS
    ));
    let start = Instant::now();
    let mut workers = Vec::new();
    for index in 1..=args.workers {
        match spawn_worker(&exe, &url, &log, &format!("w{index}")) {
            Ok(worker) => workers.push(worker),
            Err(error) => {
                stop_all(&mut workers, &mut shutdown).await;
                return Err(error);
            }
        }
    }

    let halfway = start + Duration::from_secs(args.seconds) / 2;
    let end = start + Duration::from_secs(args.seconds);
    let mut interrupted = sleep_or_signal(halfway, &mut shutdown).await;
    if !interrupted {
        let (index, doing) = pick_victim(&strategy, &workers).await;
        let mut victim = workers.remove(index);
        say(&format!(
            "demo: SIGKILL {} (pid {}){}; its run is recorded abandoned once its {} ms lease expires",
            victim.label,
            victim.pid,
            doing.map(|doing| format!(" {doing}")).unwrap_or_default(),
            LEASE_MS
        ));
        if let Err(error) = victim.child.start_kill() {
            warn(&format!("demo: cannot kill {}: {error}", victim.label));
        }
        let _ = victim.child.wait().await;
        for relay in victim.relays.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), relay).await;
        }
        interrupted = sleep_or_signal(Instant::now() + Duration::from_secs(1), &mut shutdown).await;
        if !interrupted {
            let label = format!("w{}", args.workers + 1);
            match spawn_worker(&exe, &url, &log, &label) {
                Ok(worker) => {
                    say(&format!(
                        "demo: restarted {} as {} (pid {})",
                        victim.label, worker.label, worker.pid
                    ));
                    workers.push(worker);
                }
                Err(error) => warn(&format!("demo: {error}")),
            }
        }
    }
    if !interrupted {
        sleep_or_signal(end, &mut shutdown).await;
    }
    stop_all(&mut workers, &mut shutdown).await;

    say(&format!(
        "demo: all workers stopped after {:.1} s; checking the store's history against the handlers' log",
        start.elapsed().as_secs_f64()
    ));
    let include = |id: &str| id.starts_with("demo.");
    let report = summary::compute(&strategy, &log, &include)
        .await
        .map_err(|error| CliError::runtime(format!("cannot compute the summary: {error}")))?;
    if args.keep {
        let kept = dir.keep();
        say(&format!("demo: kept {} (store and handlers' log)", kept.display()));
    }
    Ok(summary::print(&report))
}

//! The five measurements. Each run gets a fresh namespace and cleans it up.

use crate::backend::{Backend, Namespace, Urls};
use crate::counter::{Counts, StatementCounter};
use crate::fleet::{duplicates, idle_tasks, recording_tasks, Fleet, Recorder};
use crate::procfs;
use crate::report::RunFigures;
use crate::stats::nearest_rank;
use crate::Error;
use chrono::{DateTime, Datelike, DurationRound, Timelike, Utc};
use fleetcron::{DefaultSchedulerStrategy, EngineConfig, ScheduledTask, SchedulerStrategy, TaskContext, Value};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A schedule that does not fire during any benchmark (midnight, January 1st).
pub const YEARLY: &str = "0 0 1 1 *";

/// Sizes of every benchmark.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// In-process workers of lag, burst and idle.
    pub workers: usize,
    /// lag: tasks due every second.
    pub lag_tasks: usize,
    /// lag: seconds after the workers are ready, warm-up included.
    pub lag_seconds: u64,
    /// lag: seconds dropped at the start.
    pub lag_warmup: u64,
    /// burst: tasks due at one instant.
    pub burst_tasks: usize,
    /// burst: first guess of the seconds between the start and the instant (registration must fit).
    pub burst_margin: u64,
    /// register: tasks registered by one worker.
    pub register_tasks: usize,
    /// register: seconds of idle CPU measured after registration.
    pub register_idle: u64,
    /// idle: tasks per worker.
    pub idle_tasks: usize,
    /// idle: seconds measured.
    pub idle_seconds: u64,
    /// trigger: measured triggers.
    pub triggers: usize,
    /// trigger: pause between triggers.
    pub trigger_gap: Duration,
}

impl Sizes {
    /// The sizes of DESIGN §9.
    pub fn full() -> Self {
        Self {
            workers: 4,
            lag_tasks: 1000,
            lag_seconds: 20,
            lag_warmup: 5,
            burst_tasks: 10_000,
            burst_margin: 10,
            register_tasks: 100_000,
            register_idle: 10,
            idle_tasks: 10,
            idle_seconds: 10,
            triggers: 30,
            trigger_gap: Duration::from_millis(200),
        }
    }

    /// Everything smaller, for a smoke run.
    pub fn quick() -> Self {
        Self {
            workers: 4,
            lag_tasks: 100,
            lag_seconds: 6,
            lag_warmup: 2,
            burst_tasks: 1000,
            burst_margin: 4,
            register_tasks: 10_000,
            register_idle: 3,
            idle_tasks: 10,
            idle_seconds: 3,
            triggers: 10,
            trigger_gap: Duration::from_millis(200),
        }
    }
}

const CLOCK_NOTE: &str = "start lag = handler start (Utc::now() in the handler) - slot; the store's clock is this host's clock for every local backend, so host time stands for store time";

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn us_to_ms(us: i64) -> f64 {
    us as f64 / 1000.0
}

fn chrono_ms(ms: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(ms)
}

/// The first whole second at or after `at`.
fn ceil_second(at: DateTime<Utc>) -> DateTime<Utc> {
    let floor = at.duration_trunc(chrono::Duration::seconds(1)).unwrap_or(at);
    if floor == at {
        at
    } else {
        floor + chrono::Duration::seconds(1)
    }
}

async fn sleep_until_utc(at: DateTime<Utc>) {
    if let Ok(wait) = (at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}

/// Cleans the namespace up whatever the run's outcome; a failed cleanup is a warning, not a failed run.
async fn finish(namespace: Namespace, outcome: Result<RunFigures, Error>) -> Result<RunFigures, Error> {
    let name = namespace.name.clone();
    if let Err(error) = namespace.cleanup().await {
        eprintln!("warning: cleanup of namespace {name} failed: {error}");
    }
    outcome
}

/// Stops the fleet whatever the outcome; a failure to stop fails the run.
async fn stop(fleet: Fleet, outcome: Result<RunFigures, Error>) -> Result<RunFigures, Error> {
    let stopped = fleet.stop().await;
    let figures = outcome?;
    stopped.map_err(|error| format!("workers did not stop cleanly: {error}"))?;
    Ok(figures)
}

fn breakdown_json(counts: &Counts, divisor: f64) -> Value {
    let map: serde_json::Map<String, Value> = counts
        .breakdown
        .iter()
        .map(|(key, value)| (key.clone(), json!(crate::stats::round(*value as f64 / divisor))))
        .collect();
    Value::Object(map)
}

/// Counter snapshot and process CPU minus the counter's own.
async fn sample(counter: &mut StatementCounter) -> Result<(Option<Counts>, Duration), Error> {
    let cpu = procfs::process_cpu()?.saturating_sub(counter.own_cpu()?);
    let counts = counter.snapshot().await?;
    Ok((counts, cpu))
}

// ---------------------------------------------------------------------------------------------------------
// lag

/// Notes and parameters of the lag benchmark.
pub fn lag_describe(sizes: &Sizes, method: &str) -> (Value, Vec<String>) {
    (
        json!({
            "workers": sizes.workers,
            "tasks": sizes.lag_tasks,
            "schedule": "* * * * * *",
            "seconds": sizes.lag_seconds,
            "warmup_seconds": sizes.lag_warmup,
        }),
        vec![
            CLOCK_NOTE.to_owned(),
            format!(
                "every worker registers the same {} tasks and they compete for each slot; slots of the first {} s after all workers were ready are dropped",
                sizes.lag_tasks, sizes.lag_warmup
            ),
            "cpu_ms_per_slot: process CPU (utime+stime from /proc/self/stat, 10 ms ticks) over the window / slots started; it includes all in-process workers and the statement counter".to_owned(),
            format!("statements: {method}"),
        ],
    )
}

/// W workers × T tasks due every second.
pub async fn lag(backend: Backend, urls: &Urls, sizes: &Sizes) -> Result<RunFigures, Error> {
    let namespace = Namespace::new(backend, urls)?;
    let outcome = lag_in(&namespace, sizes).await;
    finish(namespace, outcome).await
}

async fn lag_in(namespace: &Namespace, sizes: &Sizes) -> Result<RunFigures, Error> {
    let (mut counter, url) = namespace.counter().await?;
    let recorder = Arc::new(Recorder::default());
    let tasks = recording_tasks("lag", sizes.lag_tasks, "* * * * * *", &recorder)?;
    let mut fleet = Fleet::start(&url, &tasks, sizes.workers, &namespace.name).await?;
    let outcome = async {
        fleet.ready(Duration::from_secs(300)).await?;
        let window_start = ceil_second(Utc::now() + chrono::Duration::seconds(sizes.lag_warmup as i64));
        let measured = sizes.lag_seconds.saturating_sub(sizes.lag_warmup).max(1);
        let window_end = window_start + chrono::Duration::seconds(measured as i64);
        // Each slot's work happens just after its instant: sampling half a second before the first and
        // the last slot brackets exactly the work of the window's slots.
        sleep_until_utc(window_start - chrono_ms(500)).await;
        let (counts_before, cpu_before) = sample(&mut counter).await?;
        sleep_until_utc(window_end - chrono_ms(500)).await;
        let (counts_after, cpu_after) = sample(&mut counter).await?;
        let (from_us, to_us) = (window_start.timestamp_micros(), window_end.timestamp_micros());
        let expected = sizes.lag_tasks * measured as usize;
        let deadline = window_end + chrono::Duration::seconds(5);
        while recorder.count_slots_in(from_us, to_us) < expected && Utc::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(failure) = fleet.failure() {
            return Err(failure.into());
        }
        let starts = recorder.starts();
        let mut lags: Vec<i64> = starts
            .iter()
            .filter(|start| start.slot_us >= from_us && start.slot_us < to_us)
            .map(|start| start.at_us - start.slot_us)
            .collect();
        lags.sort_unstable();
        let started = lags.len();
        let window = counter.window(&counts_before, &counts_after);
        let cpu = cpu_after.saturating_sub(cpu_before);
        let mut run = RunFigures {
            duplicates: duplicates(&starts),
            ..RunFigures::default()
        };
        let per_slot = |value: f64| (started > 0).then(|| value / started as f64);
        run.add("p50_ms", nearest_rank(&lags, 50.0).map(us_to_ms));
        run.add("p90_ms", nearest_rank(&lags, 90.0).map(us_to_ms));
        run.add("p99_ms", nearest_rank(&lags, 99.0).map(us_to_ms));
        run.add("max_ms", lags.last().copied().map(us_to_ms));
        run.add("slots_started", started as f64);
        run.add("slots_missing", expected.saturating_sub(started) as f64);
        run.add("duplicates", run.duplicates as f64);
        run.add("slots_per_s", started as f64 / measured as f64);
        run.add("cpu_ms_per_slot", per_slot(ms(cpu)));
        run.add(
            "statements_per_slot",
            window.as_ref().and_then(|counts| per_slot(counts.total as f64)),
        );
        if let Some(server) = window.as_ref().and_then(|counts| counts.server.as_deref()) {
            run.add("server_commands_per_slot", per_slot(server.total as f64));
        }
        if let Some(counts) = &window {
            run.detail.insert(
                "statements_per_slot_by_kind".to_owned(),
                breakdown_json(counts, started.max(1) as f64),
            );
            if let Some(server) = &counts.server {
                run.detail.insert(
                    "server_commands_per_slot_by_kind".to_owned(),
                    breakdown_json(server, started.max(1) as f64),
                );
            }
        }
        Ok(run)
    }
    .await;
    let result = stop(fleet, outcome).await;
    counter.close().await;
    result
}

// ---------------------------------------------------------------------------------------------------------
// burst

/// Notes and parameters of the burst benchmark.
pub fn burst_describe(sizes: &Sizes) -> (Value, Vec<String>) {
    (
        json!({ "workers": sizes.workers, "tasks": sizes.burst_tasks }),
        vec![
            CLOCK_NOTE.to_owned(),
            format!(
                "{} tasks on one 6-field pattern naming a single second a few seconds ahead, registered by all {} workers before it (registration excluded); seconds = last handler start - the instant; slots_per_s = slots / seconds",
                sizes.burst_tasks, sizes.workers
            ),
        ],
    )
}

/// T tasks due at one instant, W workers.
pub async fn burst(backend: Backend, urls: &Urls, sizes: &Sizes) -> Result<RunFigures, Error> {
    let mut margin = sizes.burst_margin;
    for _ in 0..3 {
        let namespace = Namespace::new(backend, urls)?;
        let outcome = burst_in(&namespace, sizes, margin).await;
        match finish(namespace, outcome.map(|figures| figures.unwrap_or_default())).await {
            Ok(figures) if figures.figures.is_empty() => {
                eprintln!(
                    "  burst: registration took longer than the {margin} s margin; retrying with {} s",
                    margin * 2
                );
                margin *= 2;
            }
            other => return other,
        }
    }
    Err("burst: registration never finished 1 s before the instant".into())
}

/// `Ok(None)` when registration ended less than a second before the instant (the run is retried).
async fn burst_in(namespace: &Namespace, sizes: &Sizes, margin: u64) -> Result<Option<RunFigures>, Error> {
    let recorder = Arc::new(Recorder::default());
    let started_at = Utc::now();
    let instant = ceil_second(started_at + chrono::Duration::seconds(margin as i64));
    let pattern = format!(
        "{} {} {} {} {} *",
        instant.second(),
        instant.minute(),
        instant.hour(),
        instant.day(),
        instant.month()
    );
    let tasks = recording_tasks("burst", sizes.burst_tasks, &pattern, &recorder)?;
    let mut fleet = Fleet::start(&namespace.url, &tasks, sizes.workers, &namespace.name).await?;
    let outcome: Result<Option<RunFigures>, Error> = async {
        fleet.ready(Duration::from_secs(600)).await?;
        let ready_at = Utc::now();
        if ready_at > instant - chrono::Duration::seconds(1) {
            return Ok(None);
        }
        let registration = (ready_at - started_at).to_std().unwrap_or_default();
        let slot_us = instant.timestamp_micros();
        let deadline = instant + chrono::Duration::seconds(120);
        while recorder.count_slots_in(slot_us, slot_us + 1) < sizes.burst_tasks && Utc::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(failure) = fleet.failure() {
            return Err(failure.into());
        }
        let starts = recorder.starts();
        let mut lags: Vec<i64> = starts
            .iter()
            .filter(|start| start.slot_us == slot_us)
            .map(|start| start.at_us - slot_us)
            .collect();
        lags.sort_unstable();
        let slots = lags.len();
        let seconds = lags.last().map(|last| *last as f64 / 1e6);
        let mut run = RunFigures {
            duplicates: duplicates(&starts),
            ..RunFigures::default()
        };
        run.add("slots", slots as f64);
        run.add("slots_missing", sizes.burst_tasks.saturating_sub(slots) as f64);
        run.add("seconds", seconds);
        run.add(
            "slots_per_s",
            seconds
                .filter(|seconds| *seconds > 0.0)
                .map(|seconds| slots as f64 / seconds),
        );
        run.add("p50_ms", nearest_rank(&lags, 50.0).map(us_to_ms));
        run.add("p99_ms", nearest_rank(&lags, 99.0).map(us_to_ms));
        run.add("duplicates", run.duplicates as f64);
        run.add("registration_s_excluded", registration.as_secs_f64());
        Ok(Some(run))
    }
    .await;
    let stopped = fleet.stop().await;
    let figures = outcome?;
    stopped.map_err(|error| format!("workers did not stop cleanly: {error}"))?;
    Ok(figures)
}

// ---------------------------------------------------------------------------------------------------------
// register

/// Notes and parameters of the register benchmark.
pub fn register_describe(sizes: &Sizes) -> (Value, Vec<String>) {
    (
        json!({ "tasks": sizes.register_tasks, "schedule": YEARLY, "idle_seconds": sizes.register_idle, "workers": 1 }),
        vec![
            "each run is a child process of its own, so freed memory of an earlier run cannot hide growth".to_owned(),
            "registration_s: Scheduler::build() + run_until() start until ready() returns (every task registered in the store, timers armed); build_tasks_s: building the ScheduledTask values before that".to_owned(),
            "rss_bytes_per_task: VmRSS after ready - VmRSS before the tasks were built (strategy already connected), / tasks; for memory the store's documents live in the process and count too".to_owned(),
            "idle_cpu_ms_per_s: process CPU (10 ms ticks) over the idle window after a 1 s settle, per second".to_owned(),
        ],
    )
}

/// One worker registers many tasks; runs in a child process (see [`register_child`]).
pub async fn register(backend: Backend, urls: &Urls, sizes: &Sizes) -> Result<RunFigures, Error> {
    let namespace = Namespace::new(backend, urls)?;
    let outcome = register_in(&namespace, sizes).await;
    finish(namespace, outcome).await
}

async fn register_in(namespace: &Namespace, sizes: &Sizes) -> Result<RunFigures, Error> {
    let exe = std::env::current_exe().map_err(|error| format!("cannot find this executable: {error}"))?;
    let child = tokio::process::Command::new(exe)
        .arg("--register-child")
        .arg(&namespace.url)
        .arg("--child-tasks")
        .arg(sizes.register_tasks.to_string())
        .arg("--child-idle-seconds")
        .arg(sizes.register_idle.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot start the registration child process: {error}"))?;
    let output = tokio::time::timeout(Duration::from_secs(1200), child.wait_with_output())
        .await
        .map_err(|_| "the registration child process took over 20 minutes")?
        .map_err(|error| format!("the registration child process failed: {error}"))?;
    if !output.status.success() {
        return Err(format!("the registration child process failed ({})", output.status).into());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .ok_or("the registration child process printed nothing")?;
    let result: Value = serde_json::from_str(line)
        .map_err(|error| format!("the registration child process printed {line:?}: {error}"))?;
    let mut run = RunFigures::default();
    for name in [
        "registration_s",
        "rss_bytes_per_task",
        "idle_cpu_ms_per_s",
        "build_tasks_s",
    ] {
        run.add(name, result.get(name).and_then(Value::as_f64));
    }
    for name in ["rss_before_bytes", "rss_after_build_bytes", "rss_after_bytes"] {
        if let Some(value) = result.get(name) {
            run.detail.insert(name.to_owned(), value.clone());
        }
    }
    Ok(run)
}

/// The child process of the register benchmark: prints one JSON object on stdout.
pub async fn register_child(url: &str, count: usize, idle_seconds: u64) -> Result<Value, Error> {
    let strategy = DefaultSchedulerStrategy::connect_with(url, EngineConfig::default())
        .await
        .map_err(|error| format!("cannot connect to {}: {error}", fleetcron::redact_url(url)))?;
    let rss_before = procfs::rss_bytes()?;
    let built = Instant::now();
    let tasks = idle_tasks("reg", count, YEARLY)?;
    let build_tasks = built.elapsed();
    let rss_built = procfs::rss_bytes()?;
    let started = Instant::now();
    let scheduler = fleetcron::Scheduler::builder()
        .strategy(strategy)
        .tasks(tasks)
        .worker_id("bench-register")
        .retention_schedule(None)
        .build()
        .map_err(|error| format!("invalid scheduler: {error}"))?;
    let (shutdown, mut stop) = tokio::sync::watch::channel(false);
    let running = scheduler.clone();
    let mut handle = tokio::spawn(async move {
        running
            .run_until(async move {
                let _ = stop.wait_for(|stop| *stop).await;
            })
            .await
    });
    tokio::select! {
        () = scheduler.ready() => {}
        joined = &mut handle => {
            return Err(match joined {
                Ok(Ok(())) => "the worker stopped before it was ready".to_owned(),
                Ok(Err(error)) => format!("the worker failed: {error}"),
                Err(error) => format!("the worker panicked: {error}"),
            }.into());
        }
    }
    let registration = started.elapsed();
    let rss_after = procfs::rss_bytes()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_before = procfs::process_cpu()?;
    let idle_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
    let cpu_after = procfs::process_cpu()?;
    let idle = idle_started.elapsed();
    shutdown.send_replace(true);
    match tokio::time::timeout(Duration::from_secs(120), handle).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => return Err(format!("the worker failed: {error}").into()),
        Ok(Err(error)) => return Err(format!("the worker panicked: {error}").into()),
        Err(_) => return Err("the worker did not stop within 120 s".into()),
    }
    let growth = rss_after.saturating_sub(rss_before) as f64;
    Ok(json!({
        "registration_s": registration.as_secs_f64(),
        "build_tasks_s": build_tasks.as_secs_f64(),
        "rss_bytes_per_task": growth / count.max(1) as f64,
        "rss_before_bytes": rss_before,
        "rss_after_build_bytes": rss_built,
        "rss_after_bytes": rss_after,
        "idle_cpu_ms_per_s": ms(cpu_after.saturating_sub(cpu_before)) / idle.as_secs_f64(),
    }))
}

// ---------------------------------------------------------------------------------------------------------
// idle

/// Notes and parameters of the idle benchmark.
pub fn idle_describe(sizes: &Sizes, method: &str) -> (Value, Vec<String>) {
    (
        json!({ "workers": sizes.workers, "tasks_per_worker": sizes.idle_tasks, "schedule": YEARLY, "seconds": sizes.idle_seconds, "poll_interval_s": 1 }),
        vec![
            format!("statements: {method}"),
            "measured after all workers were ready plus 1.5 s; engine poll_interval is the default 1 s".to_owned(),
            "cpu_ms_per_s: process CPU of all idle workers (10 ms ticks) per second".to_owned(),
        ],
    )
}

/// W idle workers.
pub async fn idle(backend: Backend, urls: &Urls, sizes: &Sizes) -> Result<RunFigures, Error> {
    let namespace = Namespace::new(backend, urls)?;
    let outcome = idle_in(&namespace, sizes).await;
    finish(namespace, outcome).await
}

async fn idle_in(namespace: &Namespace, sizes: &Sizes) -> Result<RunFigures, Error> {
    let (mut counter, url) = namespace.counter().await?;
    let tasks = idle_tasks("idle", sizes.idle_tasks, YEARLY)?;
    let mut fleet = Fleet::start(&url, &tasks, sizes.workers, &namespace.name).await?;
    let outcome = async {
        fleet.ready(Duration::from_secs(120)).await?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let started = Instant::now();
        let (counts_before, cpu_before) = sample(&mut counter).await?;
        tokio::time::sleep(Duration::from_secs(sizes.idle_seconds)).await;
        let (counts_after, cpu_after) = sample(&mut counter).await?;
        let seconds = started.elapsed().as_secs_f64();
        if let Some(failure) = fleet.failure() {
            return Err(failure.into());
        }
        let window = counter.window(&counts_before, &counts_after);
        let divisor = seconds * sizes.workers as f64;
        let mut run = RunFigures::default();
        run.add(
            "statements_per_s_per_worker",
            window.as_ref().map(|counts| counts.total as f64 / divisor),
        );
        run.add("cpu_ms_per_s", ms(cpu_after.saturating_sub(cpu_before)) / seconds);
        if let Some(server) = window.as_ref().and_then(|counts| counts.server.as_deref()) {
            run.add("server_commands_per_s_per_worker", server.total as f64 / divisor);
        }
        if let Some(counts) = &window {
            run.detail.insert(
                "statements_per_s_per_worker_by_kind".to_owned(),
                breakdown_json(counts, divisor),
            );
            if let Some(server) = &counts.server {
                run.detail.insert(
                    "server_commands_per_s_per_worker_by_kind".to_owned(),
                    breakdown_json(server, divisor),
                );
            }
        }
        Ok(run)
    }
    .await;
    let result = stop(fleet, outcome).await;
    counter.close().await;
    result
}

// ---------------------------------------------------------------------------------------------------------
// trigger

/// Notes and parameters of the trigger benchmark.
pub fn trigger_describe(sizes: &Sizes, backend: Backend) -> (Value, Vec<String>) {
    let wake = match backend {
        Backend::Postgres => "PostgreSQL wakes the worker with LISTEN/NOTIFY",
        Backend::Redis => "Redis wakes the worker with pub/sub",
        Backend::Memory => "the memory store wakes the worker through an in-process broadcast",
        Backend::Sqlite | Backend::Mysql => {
            "no push: the worker finds the trigger at its next poll (poll_interval = the engine default, 1 s)"
        }
    };
    (
        json!({ "triggers": sizes.triggers, "gap_ms": ms(sizes.trigger_gap), "workers": 1, "poll_interval_s": 1 }),
        vec![
            format!(
                "{} sequential SchedulerStrategy::trigger_task calls from a second strategy (own pool, not a worker), one unmeasured warm-up first; latency = trigger call start -> handler start (monotonic clock)",
                sizes.triggers
            ),
            format!(
                "pause between triggers: {} ms plus 0-1 s spread by a golden-ratio sequence, so triggers meet every phase of a polling worker's 1 s cycle (a fixed pause would lock onto one phase)",
                sizes.trigger_gap.as_millis()
            ),
            wake.to_owned(),
        ],
    )
}

/// The extra pause before trigger `index + 1`: a golden-ratio sequence over one poll interval (1 s), so
/// that triggers land evenly over every phase of a polling worker's cycle instead of locking onto one
/// (a worker that just ran a handler polls again exactly 1 s later).
fn phase_offset(index: usize) -> Duration {
    const GOLDEN: f64 = 0.618_033_988_749_895;
    let fraction = (index as f64 * GOLDEN).fract();
    Duration::from_secs_f64(fraction)
}

/// Manual trigger → handler start.
pub async fn trigger(backend: Backend, urls: &Urls, sizes: &Sizes) -> Result<RunFigures, Error> {
    let namespace = Namespace::new(backend, urls)?;
    let outcome = trigger_in(&namespace, sizes).await;
    finish(namespace, outcome).await
}

async fn trigger_in(namespace: &Namespace, sizes: &Sizes) -> Result<RunFigures, Error> {
    let (sender, mut started) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let tasks: Vec<ScheduledTask> = (0..10)
        .map(|index| {
            let sender = sender.clone();
            ScheduledTask::builder(format!("trigger.{index}"))
                .schedule(YEARLY)
                .handler(move |context: TaskContext| {
                    let sender = sender.clone();
                    async move {
                        let at = Instant::now();
                        if context.slot.is_none() {
                            let _ = sender.send(at);
                        }
                        Ok(Value::Null)
                    }
                })
                .build()
                .map_err(|error| Error::from(format!("invalid benchmark task: {error}")))
        })
        .collect::<Result<_, _>>()?;
    let mut fleet = Fleet::start(&namespace.url, &tasks, 1, &namespace.name).await?;
    let outcome = async {
        fleet.ready(Duration::from_secs(120)).await?;
        let admin = DefaultSchedulerStrategy::connect_with(&namespace.url, EngineConfig::default())
            .await
            .map_err(|error| format!("admin connection: {error}"))?;
        // Let the worker's push listener (LISTEN / SUBSCRIBE) come up.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut latencies = Vec::with_capacity(sizes.triggers);
        for index in 0..=sizes.triggers {
            while started.try_recv().is_ok() {}
            let called = Instant::now();
            admin
                .trigger_task("trigger.0")
                .await
                .map_err(|error| format!("trigger {index} failed: {error}"))?;
            let at = tokio::time::timeout(Duration::from_secs(10), started.recv())
                .await
                .map_err(|_| format!("trigger {index}: the handler did not start within 10 s"))?
                .ok_or("the handler channel closed")?;
            if index > 0 {
                latencies.push(at.saturating_duration_since(called));
            }
            tokio::time::sleep(sizes.trigger_gap + phase_offset(index)).await;
        }
        if let Some(failure) = fleet.failure() {
            return Err(failure.into());
        }
        latencies.sort_unstable();
        let mut run = RunFigures::default();
        run.add("p50_ms", nearest_rank(&latencies, 50.0).map(ms));
        run.add("p99_ms", nearest_rank(&latencies, 99.0).map(ms));
        run.add("max_ms", latencies.last().copied().map(ms));
        Ok(run)
    }
    .await;
    stop(fleet, outcome).await
}

// ---------------------------------------------------------------------------------------------------------
// counter self-check

/// Checks the statement counter against calls whose statements are known from the stores' source:
/// `get_tasks()` is one statement on the SQL stores (`SELECT … FROM tasks`) and two commands on Redis
/// (`ZRANGE` of the task-id set and one `EVALSHA` of the state-read script). Also probes the backend: an error means it cannot
/// be used. Returns a one-line verdict.
pub async fn check_counter(backend: Backend, urls: &Urls) -> Result<String, Error> {
    let namespace = Namespace::new(backend, urls)?;
    let outcome = check_in(&namespace).await;
    let name = namespace.name.clone();
    let cleaned = namespace.cleanup().await;
    // An unreachable backend cannot be cleaned up either: only the skip is worth saying.
    if let (Ok(_), Err(error)) = (&outcome, cleaned) {
        eprintln!("warning: cleanup of namespace {name} failed: {error}");
    }
    outcome
}

async fn check_in(namespace: &Namespace) -> Result<String, Error> {
    let (mut counter, url) = namespace.counter().await?;
    let outcome = check_calls(namespace.backend, &mut counter, &url).await;
    counter.close().await;
    outcome
}

async fn check_calls(backend: Backend, counter: &mut StatementCounter, url: &str) -> Result<String, Error> {
    let connect = DefaultSchedulerStrategy::connect_with(url, EngineConfig::default());
    let strategy = tokio::time::timeout(Duration::from_secs(30), connect)
        .await
        .map_err(|_| "no answer within 30 s")??;
    strategy.init("bench-check").await?;
    let registered = strategy.register_tasks(idle_tasks("check", 1, YEARLY)?).await;
    // Stop the worker's poll loop so only the calls below reach the store.
    strategy.destroy().await?;
    registered?;
    let expected = if backend == Backend::Redis { 2 } else { 1 };
    strategy.get_tasks().await?;
    // A pool may open a connection during a call (its set-up statements count too): up to three tries
    // for a call on a warm connection.
    let mut get_tasks = None;
    let mut tries = Vec::new();
    for _ in 0..3 {
        let before = counter.snapshot().await?;
        let tasks = strategy.get_tasks().await?;
        let after = counter.snapshot().await?;
        if tasks.len() != 1 {
            return Err(format!("check: expected 1 task in the store, found {}", tasks.len()).into());
        }
        let window = counter.window(&before, &after);
        let total = window.as_ref().map(|counts| counts.total);
        tries.push(total);
        get_tasks = window;
        if total.is_none_or(|total| total == expected) {
            break;
        }
    }
    let before = counter.snapshot().await?;
    strategy.trigger_task("check.000000").await?;
    let after = counter.snapshot().await?;
    let trigger = counter.window(&before, &after);
    let (Some(get_tasks), Some(trigger)) = (get_tasks, trigger) else {
        return Ok("n/a (no statements to count)".to_owned());
    };
    let verdict = if get_tasks.total == expected { "ok" } else { "MISMATCH" };
    let tries: Vec<String> = tries.iter().flatten().map(u64::to_string).collect();
    let mut message = format!(
        "{verdict}: get_tasks() counted {} (expected {expected}; tries {}) {:?}; trigger_task() counted {} {:?}",
        get_tasks.total,
        tries.join(","),
        get_tasks.breakdown,
        trigger.total,
        trigger.breakdown
    );
    if let (Some(get_server), Some(trigger_server)) = (&get_tasks.server, &trigger.server) {
        message.push_str(&format!(
            "; server-side (script calls included): get_tasks() {} {:?}, trigger_task() {} {:?}",
            get_server.total, get_server.breakdown, trigger_server.total, trigger_server.breakdown
        ));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn phase_offsets_cover_the_poll_interval_evenly() {
        let mut tenths = [0usize; 10];
        for index in 0..30 {
            let offset = phase_offset(index);
            assert!(offset < Duration::from_secs(1));
            tenths[(offset.as_secs_f64() * 10.0) as usize] += 1;
        }
        assert!(tenths.iter().all(|count| (2..=4).contains(count)), "{tenths:?}");
    }

    #[test]
    fn ceil_second_rounds_up_to_the_next_whole_second() {
        let at = Utc.timestamp_opt(100, 250_000_000).single().expect("valid");
        assert_eq!(ceil_second(at).timestamp(), 101);
        let whole = Utc.timestamp_opt(100, 0).single().expect("valid");
        assert_eq!(ceil_second(whole), whole);
    }
}

//! `fleetcron torture`: tries hard to break exactly-once on a real store, then proves it held.
//!
//! It starts `--workers` real worker processes (`fleetcron worker --profile test`: tasks every second,
//! a slower `hold` task, a `manual` one) on one store and, for `--seconds`, injects faults at random:
//! * `kill`: SIGKILL a worker, restart it a moment later (its leases stay held until they expire);
//! * `pause`: SIGSTOP a worker for longer than the lease, then SIGCONT (its late writes must be fenced);
//! * `skew`: every worker incarnation runs with its clock off by up to ±`--max-skew-ms`;
//! * `cut`: on server stores each worker talks through its own fault-injecting proxy, which cuts its
//!   connections, or refuses them for a while (an outage seen from that worker only);
//! * `restart`: the store restarts — on SQLite every worker dies at once and the file survives; on a
//!   server store only when `--store-restart-cmd` says how;
//! * `trigger`: concurrent manual triggers from an operator connection;
//! * `flip`: disable a task for a few seconds, then enable it.
//!
//! Then it lets the fleet settle, stops it with SIGTERM, reads the store's history and the handlers'
//! own log, and runs [`check::check`]. The last stdout line is one JSON object; the exit code is 1 if
//! any guarantee was violated.

pub mod check;

use crate::process::{say, signal, sqlite_url, warn};
use crate::summary::{all_runs, read_log};
use crate::{CliError, CliResult};
use check::{DisabledWindow, Evidence, TaskUnderTest};
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use fleetcron::{
    DefaultSchedulerStrategy, EngineConfig, Schedule, SchedulerError, SchedulerStrategy, UpdateScheduledTaskInput,
};
use fleetcron_conformance::proxy::FaultProxy;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The faults the harness can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum)]
pub enum Fault {
    /// Every fault below.
    All,
    /// No fault: a plain run.
    None,
    /// SIGKILL a worker and restart it.
    Kill,
    /// SIGSTOP a worker longer than the lease, then SIGCONT.
    Pause,
    /// Skewed worker clocks.
    Skew,
    /// Connection cuts and per-worker outages through a proxy (server stores).
    Cut,
    /// Store restart (SQLite: every worker dies at once; servers: `--store-restart-cmd`).
    Restart,
    /// Concurrent manual triggers.
    Trigger,
    /// Enable/disable flips.
    Flip,
}

/// Arguments of `fleetcron torture`.
#[derive(Debug, Args)]
pub struct TortureArgs {
    /// The store: `sqlite`, `postgres`, `mysql`, `redis` (local services, or the URLs in
    /// FLEETCRON_TEST_{POSTGRES,MYSQL,REDIS}_URL), or a store URL. A fresh schema / table prefix / key
    /// prefix is used unless the URL names one.
    #[arg(long, value_name = "BACKEND|URL", default_value = "sqlite")]
    pub store: String,
    /// Worker processes.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    /// How long faults are injected, in seconds (the fleet then settles and stops).
    #[arg(long, value_name = "S", default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..=86_400))]
    pub seconds: u64,
    /// Tasks every second (the first two are flipped; the `hold` and `manual` tasks come in addition).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(3..=1000))]
    pub tasks: u32,
    /// Faults to inject, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub faults: Vec<Fault>,
    /// Mean time between two faults, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2500, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub fault_every_ms: u64,
    /// The workers' lease, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(200..=600_000))]
    pub lease_ms: u64,
    /// The workers' poll interval, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub poll_ms: u64,
    /// Largest clock skew of a worker, either way, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 3000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub max_skew_ms: u64,
    /// Shell command that restarts a server store (e.g. `pg_ctlcluster 15 main restart`); without it
    /// only SQLite stores are "restarted".
    #[arg(long, value_name = "CMD")]
    pub store_restart_cmd: Option<String>,
    /// Seed of the fault schedule (default: from the clock; printed either way).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Keep the handlers' log, the SQLite file and the workers' output here (default: a temporary
    /// directory, removed after a passing run).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// A small deterministic generator (xorshift64*): the fault schedule is reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        low + self.next() % (high - low + 1)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            return None;
        }
        let index = (self.next() % items.len() as u64) as usize;
        items.get(index).copied()
    }
}

/// The kind of store, which decides what a restart and a cut mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
    Mysql,
    Redis,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::Mysql => "mysql",
            Backend::Redis => "redis",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Backend::Sqlite => 0,
            Backend::Postgres => 5432,
            Backend::Mysql => 3306,
            Backend::Redis => 6379,
        }
    }
}

/// Resolves `--store` into a backend and a URL with a namespace of its own.
fn resolve_store(store: &str, dir: &Path, tag: &str) -> Result<(Backend, String), CliError> {
    let from_env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let url = match store {
        "sqlite" => return Ok((Backend::Sqlite, sqlite_url(&dir.join("torture.db")))),
        "postgres" | "postgresql" => from_env("FLEETCRON_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test"),
        "mysql" | "mariadb" => from_env("FLEETCRON_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
        "redis" => from_env("FLEETCRON_TEST_REDIS_URL", "redis://127.0.0.1:6379"),
        url => url.to_owned(),
    };
    let scheme = url.split_once("://").map(|(scheme, _)| scheme).unwrap_or_default();
    let (backend, parameter, value) = match scheme {
        "sqlite" => return Ok((Backend::Sqlite, url)),
        "postgres" | "postgresql" => (Backend::Postgres, "schema", tag.to_owned()),
        "mysql" | "mariadb" => (Backend::Mysql, "table_prefix", format!("{tag}_")),
        "redis" => (Backend::Redis, "prefix", tag.to_owned()),
        _ => {
            return Err(CliError::usage(format!(
                "--store {:?}: expected sqlite, postgres, mysql, redis or a sqlite://, postgres://, \
                 mysql://, mariadb:// or redis:// URL (the memory store lives in one process and cannot be \
                 shared by worker processes)",
                fleetcron::redact_url(store)
            )))
        }
    };
    let query = url.split_once('?').map(|(_, query)| query).unwrap_or_default();
    if query.split('&').any(|pair| pair.split('=').next() == Some(parameter)) {
        return Ok((backend, url));
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok((backend, format!("{url}{separator}{parameter}={value}")))
}

/// Splits a server URL around its `host[:port]`: (before, host, port, after).
fn split_host(url: &str, default_port: u16) -> Option<(String, String, u16, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(end);
    let (userinfo, host_port) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !port.contains(']') => (host.to_owned(), port.parse().ok()?),
        _ => (host_port.to_owned(), default_port),
    };
    Some((format!("{scheme}://{userinfo}"), host, port, after.to_owned()))
}

/// One worker position in the fleet, whatever incarnation runs in it.
struct Seat {
    index: u32,
    incarnation: u32,
    child: Option<Child>,
    url: String,
    proxy: Option<FaultProxy>,
    paused: bool,
}

impl Seat {
    fn id(&self) -> String {
        format!("w{}.{}", self.index, self.incarnation)
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }
}

/// Everything the fleet needs to start a worker.
struct Plan {
    exe: PathBuf,
    dir: PathBuf,
    log: PathBuf,
    tasks: u32,
    lease_ms: u64,
    poll_ms: u64,
    max_skew_ms: u64,
    skew: bool,
}

impl Plan {
    fn spawn(&self, seat: &mut Seat, rng: &mut Rng, counts: &mut FaultCounts) -> Result<(), CliError> {
        seat.incarnation += 1;
        let id = seat.id();
        let skew = if self.skew {
            let span = self.max_skew_ms.saturating_mul(2);
            rng.between(0, span) as i64 - self.max_skew_ms as i64
        } else {
            0
        };
        counts.max_skew_ms = counts.max_skew_ms.max(skew.unsigned_abs());
        let output = |suffix: &str| {
            File::create(self.dir.join(format!("{id}.{suffix}")))
                .map_err(|error| CliError::runtime(format!("cannot create the output file of worker {id}: {error}")))
        };
        let child = Command::new(&self.exe)
            .arg("worker")
            .args(["--store", &seat.url, "--worker-id", &id, "--profile", "test"])
            .args(["--tasks", &self.tasks.to_string()])
            .args(["--lease-ms", &self.lease_ms.to_string()])
            .args(["--poll-ms", &self.poll_ms.to_string()])
            .args(["--shutdown-grace-ms", "3000", "--watch-stdin"])
            .arg("--log")
            .arg(&self.log)
            .env("FLEETCRON_CLOCK_SKEW_MS", skew.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::from(output("out")?))
            .stderr(Stdio::from(output("err")?))
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| CliError::runtime(format!("cannot start worker {id}: {error}")))?;
        seat.child = Some(child);
        seat.paused = false;
        counts.spawned += 1;
        Ok(())
    }
}

/// What was injected, for the report.
#[derive(Debug, Default)]
struct FaultCounts {
    spawned: u64,
    kill: u64,
    pause: u64,
    cut: u64,
    outage: u64,
    restart: u64,
    flip: u64,
    max_skew_ms: u64,
    worker_exits: u64,
}

/// Deferred actions: the second half of a fault.
#[derive(Debug, Clone)]
enum Action {
    Respawn(u32),
    Continue { seat: u32, incarnation: u32 },
    Resume(u32),
    Enable(String, DateTime<Utc>),
}

/// The end of an operator's enable or disable, which runs beside the fault loop: a SIGSTOPped worker
/// may hold the SQLite write lock, and the loop must stay free to send it SIGCONT.
enum AdminOutcome {
    Disabled {
        id: String,
        at: DateTime<Utc>,
    },
    DisableFailed {
        id: String,
        error: String,
    },
    Enabled {
        id: String,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    EnableFailed {
        id: String,
        error: String,
    },
}

/// Enables `id` again, retried until it lands (a task left disabled would make every later slot
/// "skipped"): the disabled window ran from `from` to now.
async fn enable(operator: Arc<dyn SchedulerStrategy>, id: String, from: DateTime<Utc>) -> AdminOutcome {
    let to = Utc::now();
    let mut attempts = 0;
    loop {
        let input = UpdateScheduledTaskInput {
            id: id.clone(),
            enabled: Some(true),
        };
        match operator.update_task(input).await {
            Ok(_) => return AdminOutcome::Enabled { id, from, to },
            Err(error) if attempts < 30 => {
                attempts += 1;
                warn(&format!("torture: enabling {id} failed ({error}); retrying"));
                tokio::time::sleep(ms(500)).await;
            }
            Err(error) => {
                return AdminOutcome::EnableFailed {
                    id,
                    error: error.to_string(),
                }
            }
        }
    }
}

/// Triggers sent by the operator connection.
#[derive(Debug, Default)]
struct Triggers {
    sent: u64,
    accepted: HashSet<String>,
    coalesced: u64,
    refused: u64,
    unconfirmed: u64,
}

fn ms(duration: u64) -> Duration {
    Duration::from_millis(duration)
}

/// Runs the torture test; exit code 1 when a guarantee was violated.
pub async fn run(args: TortureArgs) -> CliResult {
    let exe = std::env::current_exe()
        .map_err(|error| CliError::runtime(format!("cannot find this program's path: {error}")))?;
    let faults: HashSet<Fault> = if args.faults.contains(&Fault::All) {
        [
            Fault::Kill,
            Fault::Pause,
            Fault::Skew,
            Fault::Cut,
            Fault::Restart,
            Fault::Trigger,
            Fault::Flip,
        ]
        .into_iter()
        .collect()
    } else {
        args.faults
            .iter()
            .copied()
            .filter(|fault| *fault != Fault::None)
            .collect()
    };
    let seed = args.seed.unwrap_or_else(|| {
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
        nanos ^ u64::from(std::process::id()).rotate_left(32)
    });
    let mut rng = Rng(seed | 1);
    let (dir, _temporary) = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|error| CliError::runtime(format!("cannot create {}: {error}", dir.display())))?;
            (dir.clone(), None)
        }
        None => {
            let temporary = tempfile::Builder::new()
                .prefix("fleetcron-torture-")
                .tempdir()
                .map_err(|error| CliError::runtime(format!("cannot create a temporary directory: {error}")))?;
            (temporary.path().to_path_buf(), Some(temporary))
        }
    };
    let tag = format!("torture_{}_{}", std::process::id(), Utc::now().timestamp());
    let (backend, url) = resolve_store(&args.store, &dir, &tag)?;
    let cuts = faults.contains(&Fault::Cut) && backend != Backend::Sqlite;
    say(&format!(
        "torture: {} workers on {} ({}) for {} s, faults {:?}, seed {seed}, files in {}",
        args.workers,
        backend.name(),
        fleetcron::redact_url(&url),
        args.seconds,
        {
            let mut names: Vec<_> = faults.iter().collect();
            names.sort();
            names
        },
        dir.display()
    ));

    let operator = DefaultSchedulerStrategy::connect_with(&url, EngineConfig::default())
        .await
        .map_err(|error| {
            CliError::unreachable(format!(
                "cannot open the store {}: {error}",
                fleetcron::redact_url(&url)
            ))
        })?;
    let operator: Arc<dyn SchedulerStrategy> = Arc::new(operator);

    let plan = Plan {
        exe,
        dir: dir.clone(),
        log: dir.join("handlers.log"),
        tasks: args.tasks,
        lease_ms: args.lease_ms,
        poll_ms: args.poll_ms,
        max_skew_ms: args.max_skew_ms,
        skew: faults.contains(&Fault::Skew),
    };
    let mut counts = FaultCounts::default();
    let mut seats = Vec::new();
    for index in 1..=args.workers {
        let (seat_url, proxy) = if cuts {
            let (before, host, port, after) = split_host(&url, backend.default_port()).ok_or_else(|| {
                CliError::usage(format!(
                    "cannot find the host and port in {}",
                    fleetcron::redact_url(&url)
                ))
            })?;
            let upstream = tokio::net::lookup_host((host.as_str(), port))
                .await
                .ok()
                .and_then(|mut addresses| addresses.next())
                .ok_or_else(|| CliError::unreachable(format!("cannot resolve {host}:{port}")))?;
            let proxy = FaultProxy::start(upstream)
                .await
                .map_err(|error| CliError::runtime(format!("cannot start a fault proxy: {error}")))?;
            (format!("{before}{}{after}", proxy.address()), Some(proxy))
        } else {
            (url.clone(), None)
        };
        let mut seat = Seat {
            index,
            incarnation: 0,
            child: None,
            url: seat_url,
            proxy,
            paused: false,
        };
        plan.spawn(&mut seat, &mut rng, &mut counts)?;
        seats.push(seat);
    }

    // Wait until the workers have registered their tasks.
    let expected_tasks = args.tasks as usize + 2;
    let registered_by = Instant::now() + Duration::from_secs(60);
    loop {
        let registered = operator.get_tasks().await.map(|tasks| tasks.len()).unwrap_or(0);
        if registered >= expected_tasks {
            break;
        }
        if Instant::now() > registered_by {
            stop_fleet(&mut seats).await;
            return Err(CliError::runtime(format!(
                "the workers registered {registered} of {expected_tasks} tasks within 60 s; see {}",
                dir.display()
            )));
        }
        tokio::time::sleep(ms(200)).await;
    }

    let flippable: Vec<String> = (0..2).map(|index| format!("t{index:03}")).collect();
    let mut trigger_targets: Vec<String> = (2..args.tasks).map(|index| format!("t{index:03}")).collect();
    trigger_targets.extend(["hold".to_owned(), "manual".to_owned()]);
    let mut kinds = Vec::new();
    for (fault, enabled) in [
        (Fault::Kill, true),
        (Fault::Pause, true),
        (Fault::Cut, cuts),
        (
            Fault::Restart,
            backend == Backend::Sqlite || args.store_restart_cmd.is_some(),
        ),
        (Fault::Flip, true),
    ] {
        if enabled && faults.contains(&fault) {
            kinds.push(fault);
        }
    }

    let triggers = Arc::new(Mutex::new(Triggers::default()));
    let mut in_flight = JoinSet::new();
    let mut admin: JoinSet<AdminOutcome> = JoinSet::new();
    let mut disabled: Vec<DisabledWindow> = Vec::new();
    let mut flipped: HashSet<String> = HashSet::new();
    let mut actions: BTreeMap<(Instant, u64), Action> = BTreeMap::new();
    let mut sequence = 0u64;
    let mut schedule = |actions: &mut BTreeMap<(Instant, u64), Action>, after: Duration, action: Action| {
        sequence += 1;
        actions.insert((Instant::now() + after, sequence), action);
    };
    let started = Instant::now();
    let faults_end = started + Duration::from_secs(args.seconds);
    let mut next_fault = started + ms(rng.between(args.fault_every_ms / 2, args.fault_every_ms * 3 / 2));
    let mut next_trigger = started + ms(500);
    let mut last_restart = started;
    let mut tick = tokio::time::interval(ms(100));

    while Instant::now() < faults_end {
        tick.tick().await;
        let now = Instant::now();
        for index in reap_exits(&mut seats, &mut counts) {
            schedule(&mut actions, ms(500), Action::Respawn(index));
        }
        while let Some(joined) = admin.try_join_next() {
            let outcome = joined.map_err(|error| CliError::runtime(format!("an operator call failed: {error}")))?;
            if let Some((after, action)) = settle_admin(outcome, &mut counts, &mut disabled, &mut flipped, &mut rng)? {
                schedule(&mut actions, after, action);
            }
        }
        // Deferred halves of earlier faults.
        while let Some(entry) = actions.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let action = entry.remove();
            apply(action, &mut seats, &plan, &mut rng, &mut counts, &operator, &mut admin).await?;
        }
        if faults.contains(&Fault::Trigger) && now >= next_trigger {
            next_trigger = now + ms(rng.between(200, 900));
            for _ in 0..rng.between(1, 4) {
                if let Some(target) = rng.pick(&trigger_targets.iter().collect::<Vec<_>>()) {
                    let (operator, triggers, target) = (operator.clone(), triggers.clone(), target.clone());
                    in_flight.spawn(async move {
                        let outcome = operator.trigger_task(&target).await;
                        if let Ok(mut triggers) = triggers.lock() {
                            triggers.sent += 1;
                            match outcome {
                                Ok(receipt) => {
                                    triggers.coalesced += u64::from(receipt.coalesced);
                                    triggers.accepted.insert(receipt.trigger_id);
                                }
                                Err(SchedulerError::TaskDisabled(_) | SchedulerError::UnknownTask(_)) => {
                                    triggers.refused += 1;
                                }
                                Err(_) => triggers.unconfirmed += 1,
                            }
                        }
                    });
                }
            }
        }
        while in_flight.try_join_next().is_some() {}
        if now < next_fault {
            continue;
        }
        next_fault = now + ms(rng.between(args.fault_every_ms / 2, args.fault_every_ms * 3 / 2));
        let Some(mut kind) = rng.pick(&kinds) else { continue };
        if kind == Fault::Restart && now.duration_since(last_restart) < Duration::from_secs(15) {
            kind = Fault::Kill;
        }
        let live: Vec<u32> = seats
            .iter()
            .filter(|seat| seat.child.is_some())
            .map(|seat| seat.index)
            .collect();
        match kind {
            Fault::Kill => {
                if let Some(index) = rng.pick(&live) {
                    if let Some(seat) = seats.iter_mut().find(|seat| seat.index == index) {
                        say(&format!("torture: SIGKILL {}", seat.id()));
                        kill(seat).await;
                        counts.kill += 1;
                        schedule(&mut actions, ms(rng.between(200, 2500)), Action::Respawn(index));
                    }
                }
            }
            Fault::Pause => {
                let candidates: Vec<u32> = seats
                    .iter()
                    .filter(|seat| seat.child.is_some() && !seat.paused)
                    .map(|seat| seat.index)
                    .collect();
                if let Some(index) = rng.pick(&candidates) {
                    if let Some(seat) = seats.iter_mut().find(|seat| seat.index == index) {
                        if let Some(pid) = seat.pid() {
                            let pause = args.lease_ms + rng.between(500, 2500);
                            say(&format!("torture: SIGSTOP {} for {pause} ms", seat.id()));
                            if signal("STOP", &[pid]).await.is_ok() {
                                seat.paused = true;
                                counts.pause += 1;
                                let incarnation = seat.incarnation;
                                schedule(
                                    &mut actions,
                                    ms(pause),
                                    Action::Continue {
                                        seat: index,
                                        incarnation,
                                    },
                                );
                            }
                        }
                    }
                }
            }
            Fault::Cut => {
                let index = rng.between(1, u64::from(args.workers)) as u32;
                if let Some(proxy) = seats
                    .iter()
                    .find(|seat| seat.index == index)
                    .and_then(|seat| seat.proxy.as_ref())
                {
                    if rng.between(0, 1) == 0 {
                        say(&format!("torture: cut the connections of seat w{index}"));
                        proxy.cut();
                        counts.cut += 1;
                    } else {
                        let outage = rng.between(300, args.lease_ms + 2000);
                        say(&format!("torture: network outage of seat w{index} for {outage} ms"));
                        proxy.refuse();
                        proxy.cut();
                        counts.outage += 1;
                        schedule(&mut actions, ms(outage), Action::Resume(index));
                    }
                }
            }
            Fault::Restart => {
                last_restart = now;
                counts.restart += 1;
                match &args.store_restart_cmd {
                    Some(command) => {
                        say(&format!("torture: restarting the store: {command}"));
                        let status = tokio::time::timeout(
                            Duration::from_secs(120),
                            Command::new("sh").args(["-c", command]).stdin(Stdio::null()).status(),
                        )
                        .await;
                        match status {
                            Ok(Ok(status)) if status.success() => {}
                            other => warn(&format!("torture: the store restart command failed: {other:?}")),
                        }
                    }
                    None => {
                        say("torture: the whole fleet dies at once (SIGKILL); the store file survives");
                        for seat in seats.iter_mut().filter(|seat| seat.child.is_some()) {
                            kill(seat).await;
                            let index = seat.index;
                            schedule(&mut actions, ms(rng.between(500, 2000)), Action::Respawn(index));
                        }
                    }
                }
            }
            Fault::Flip => {
                let candidates: Vec<&String> = flippable.iter().filter(|id| !flipped.contains(*id)).collect();
                if let Some(id) = rng.pick(&candidates).cloned() {
                    flipped.insert(id.clone());
                    let operator = operator.clone();
                    admin.spawn(async move {
                        let input = UpdateScheduledTaskInput {
                            id: id.clone(),
                            enabled: Some(false),
                        };
                        match operator.update_task(input).await {
                            Ok(_) => AdminOutcome::Disabled { id, at: Utc::now() },
                            Err(error) => AdminOutcome::DisableFailed {
                                id,
                                error: error.to_string(),
                            },
                        }
                    });
                }
            }
            Fault::All | Fault::None | Fault::Skew | Fault::Trigger => {}
        }
    }

    // End of the faults: undo every pending half, then let the fleet settle.
    say("torture: faults stop; undoing paused processes, outages and disabled tasks");
    let pending: Vec<Action> = std::mem::take(&mut actions).into_values().collect();
    for action in pending {
        apply(action, &mut seats, &plan, &mut rng, &mut counts, &operator, &mut admin).await?;
    }
    while let Some(joined) = admin.join_next().await {
        let outcome = joined.map_err(|error| CliError::runtime(format!("an operator call failed: {error}")))?;
        if let Some((_, Action::Enable(id, from))) =
            settle_admin(outcome, &mut counts, &mut disabled, &mut flipped, &mut rng)?
        {
            admin.spawn(enable(operator.clone(), id, from));
        }
    }
    while in_flight.join_next().await.is_some() {}
    let settle = Instant::now() + ms(args.lease_ms + 3 * args.poll_ms + 3000);
    while Instant::now() < settle {
        tokio::time::sleep(ms(100)).await;
        reap_exits(&mut seats, &mut counts);
        for seat in seats.iter_mut().filter(|seat| seat.child.is_none()) {
            plan.spawn(seat, &mut rng, &mut counts)?;
        }
    }
    let stopped_at = Utc::now();
    say("torture: stopping the fleet (SIGTERM)");
    let stragglers = stop_fleet(&mut seats).await;

    // The verdict.
    let reports = operator
        .get_tasks()
        .await
        .map_err(|error| CliError::unreachable(format!("cannot list the tasks: {error}")))?;
    let mut tasks = Vec::new();
    for report in reports.iter().filter(|report| !report.id.starts_with("fleetcron.")) {
        let runs = all_runs(operator.as_ref(), &report.id)
            .await
            .map_err(CliError::unreachable)?;
        tasks.push(TaskUnderTest {
            id: report.id.clone(),
            schedule: Schedule::parse(&report.schedule, &report.timezone).ok(),
            exclusive: true,
            runs,
        });
    }
    let (log, malformed) = read_log(&plan.log).map_err(CliError::runtime)?;
    let triggers = match Arc::try_unwrap(triggers) {
        Ok(triggers) => triggers.into_inner().unwrap_or_default(),
        Err(shared) => shared
            .lock()
            .map(|mut triggers| std::mem::take(&mut *triggers))
            .unwrap_or_default(),
    };
    let evidence = Evidence {
        log: &log,
        accepted_triggers: &triggers.accepted,
        disabled: &disabled,
        until: stopped_at - chrono::Duration::seconds(2),
    };
    let verdict = check::check(&tasks, &evidence, malformed as u64);
    let (fenced_out, leases_lost) = worker_warnings(&dir);
    for problem in &verdict.problems {
        warn(&format!("violation: {problem}"));
    }
    if verdict.problem_count > verdict.problems.len() as u64 {
        warn(&format!(
            "… and {} more violations",
            verdict.problem_count - verdict.problems.len() as u64
        ));
    }
    let line = json!({
        "backend": backend.name(),
        "workers": args.workers,
        "seconds": args.seconds,
        "seed": seed,
        "tasks": tasks.len(),
        "slots": verdict.slots,
        "ran_once": verdict.ran_once,
        "skipped": verdict.skipped,
        "missed": verdict.missed,
        "duplicates": verdict.duplicates,
        "early": verdict.early,
        "unaccounted": verdict.unaccounted,
        "triggers": verdict.triggers,
        "lost_triggers": verdict.lost_triggers,
        "manual_runs": verdict.manual_runs,
        "overlaps": verdict.overlaps,
        "fenced_writes": verdict.fenced_writes,
        "phantoms": verdict.phantoms,
        "ran_while_disabled": verdict.ran_while_disabled,
        "unfinished": verdict.unfinished,
        "abandoned": verdict.abandoned,
        "malformed_log_lines": verdict.malformed_log_lines,
        "log_lines": log.len(),
        "violations": verdict.violations(),
        "faults": {
            "kill": counts.kill,
            "pause": counts.pause,
            "cut": counts.cut,
            "outage": counts.outage,
            "store_restart": counts.restart,
            "flip": counts.flip,
            "max_skew_ms": counts.max_skew_ms,
            "triggers_sent": triggers.sent,
            "triggers_coalesced": triggers.coalesced,
            "triggers_refused": triggers.refused,
            "triggers_unconfirmed": triggers.unconfirmed,
            "worker_starts": counts.spawned,
            "worker_exits": counts.worker_exits,
            "fenced_out": fenced_out,
            "leases_lost": leases_lost,
            "stop_stragglers": stragglers,
        },
    });
    say(&line.to_string());
    if verdict.violations() > 0 {
        if let Some(temporary) = _temporary {
            // Keep the evidence of a failing run.
            let kept = temporary.keep();
            warn(&format!("torture: FAILED; the evidence is kept in {}", kept.display()));
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Books an operator call's end; returns the action it schedules (the enable after a disable).
fn settle_admin(
    outcome: AdminOutcome,
    counts: &mut FaultCounts,
    disabled: &mut Vec<DisabledWindow>,
    flipped: &mut HashSet<String>,
    rng: &mut Rng,
) -> Result<Option<(Duration, Action)>, CliError> {
    Ok(match outcome {
        AdminOutcome::Disabled { id, at } => {
            say(&format!("torture: disabled {id}"));
            counts.flip += 1;
            Some((ms(rng.between(1500, 4000)), Action::Enable(id, at)))
        }
        AdminOutcome::DisableFailed { id, error } => {
            // It may have been applied: make sure it is enabled again, but claim no window.
            warn(&format!("torture: disabling {id} failed: {error}"));
            Some((ms(1000), Action::Enable(id, DateTime::<Utc>::MAX_UTC)))
        }
        AdminOutcome::Enabled { id, from, to } => {
            if from < to {
                disabled.push(DisabledWindow {
                    task: id.clone(),
                    from,
                    to,
                });
            }
            flipped.remove(&id);
            say(&format!("torture: enabled {id}"));
            None
        }
        AdminOutcome::EnableFailed { id, error } => {
            return Err(CliError::unreachable(format!("cannot enable {id}: {error}")));
        }
    })
}

/// Applies the second half of a fault.
#[allow(clippy::too_many_arguments)]
async fn apply(
    action: Action,
    seats: &mut [Seat],
    plan: &Plan,
    rng: &mut Rng,
    counts: &mut FaultCounts,
    operator: &Arc<dyn SchedulerStrategy>,
    admin: &mut JoinSet<AdminOutcome>,
) -> Result<(), CliError> {
    match action {
        Action::Respawn(index) => {
            if let Some(seat) = seats
                .iter_mut()
                .find(|seat| seat.index == index && seat.child.is_none())
            {
                plan.spawn(seat, rng, counts)?;
                say(&format!("torture: started {}", seat.id()));
            }
        }
        Action::Continue {
            seat: index,
            incarnation,
        } => {
            if let Some(seat) = seats
                .iter_mut()
                .find(|seat| seat.index == index && seat.incarnation == incarnation && seat.paused)
            {
                if let Some(pid) = seat.pid() {
                    let _ = signal("CONT", &[pid]).await;
                }
                seat.paused = false;
                say(&format!("torture: SIGCONT {}", seat.id()));
            }
        }
        Action::Resume(index) => {
            if let Some(proxy) = seats
                .iter()
                .find(|seat| seat.index == index)
                .and_then(|seat| seat.proxy.as_ref())
            {
                proxy.resume();
            }
        }
        Action::Enable(id, from) => {
            admin.spawn(enable(operator.clone(), id, from));
        }
    }
    Ok(())
}

/// SIGKILLs a seat's process and waits for it.
async fn kill(seat: &mut Seat) {
    if let Some(mut child) = seat.child.take() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    seat.paused = false;
}

/// Notices workers that exited on their own (e.g. the store was unreachable when they started);
/// returns their seats, to be restarted.
fn reap_exits(seats: &mut [Seat], counts: &mut FaultCounts) -> Vec<u32> {
    let mut exited = Vec::new();
    for seat in seats.iter_mut() {
        let status = match seat.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => status,
            _ => continue,
        };
        warn(&format!(
            "torture: worker {} exited by itself ({status}); restarting it",
            seat.id()
        ));
        seat.child = None;
        seat.paused = false;
        counts.worker_exits += 1;
        exited.push(seat.index);
    }
    exited
}

/// SIGTERMs every worker and waits for them (SIGKILL after a deadline); returns how many needed it.
async fn stop_fleet(seats: &mut [Seat]) -> u64 {
    let pids: Vec<u32> = seats.iter().filter_map(Seat::pid).collect();
    let _ = signal("CONT", &pids).await;
    let _ = signal("TERM", &pids).await;
    let mut stragglers = 0;
    for seat in seats.iter_mut() {
        if let Some(mut child) = seat.child.take() {
            if tokio::time::timeout(Duration::from_secs(20), child.wait())
                .await
                .is_err()
            {
                stragglers += 1;
                warn(&format!(
                    "torture: worker {} ignored SIGTERM for 20 s; killing it",
                    seat.id()
                ));
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
    }
    stragglers
}

/// Counts the workers' warnings that show fencing at work: refused completions and lost leases.
fn worker_warnings(dir: &Path) -> (u64, u64) {
    let mut fenced_out = 0;
    let mut leases_lost = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    for entry in entries.flatten() {
        if entry.path().extension().and_then(|extension| extension.to_str()) != Some("err") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        for line in text.lines() {
            if line.contains("completion refused by the fence") {
                fenced_out += 1;
            } else if line.contains("leases lost") || line.contains("lease lost") {
                leases_lost += 1;
            }
        }
    }
    (fenced_out, leases_lost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_get_a_namespace_of_their_own() {
        let dir = Path::new("/tmp/x");
        let resolved = resolve_store("postgres://u@h:1/db", dir, "tag")
            .map(|(_, url)| url)
            .ok();
        assert_eq!(resolved.as_deref(), Some("postgres://u@h:1/db?schema=tag"));
        let resolved = resolve_store("mysql://u@h/db?x=1", dir, "tag").map(|(_, url)| url).ok();
        assert_eq!(resolved.as_deref(), Some("mysql://u@h/db?x=1&table_prefix=tag_"));
        let resolved = resolve_store("redis://h?prefix=mine", dir, "tag")
            .map(|(_, url)| url)
            .ok();
        assert_eq!(resolved.as_deref(), Some("redis://h?prefix=mine"));
        let resolved = resolve_store("sqlite", dir, "tag").map(|(_, url)| url).ok();
        assert_eq!(resolved.as_deref(), Some("sqlite:///tmp/x/torture.db"));
        assert!(resolve_store("memory://x", dir, "tag").is_err());
    }

    #[test]
    fn server_urls_are_split_around_the_host() {
        assert_eq!(
            split_host("postgres://u@127.0.0.1:5432/test?schema=a", 1),
            Some((
                "postgres://u@".to_owned(),
                "127.0.0.1".to_owned(),
                5432,
                "/test?schema=a".to_owned()
            ))
        );
        assert_eq!(
            split_host("redis://localhost?prefix=p", 6379),
            Some((
                "redis://".to_owned(),
                "localhost".to_owned(),
                6379,
                "?prefix=p".to_owned()
            ))
        );
    }

    #[test]
    fn the_generator_is_reproducible_and_in_range() {
        let mut a = Rng(42);
        let mut b = Rng(42);
        for _ in 0..1000 {
            let x = a.between(3, 9);
            assert_eq!(x, b.between(3, 9));
            assert!((3..=9).contains(&x));
        }
    }
}

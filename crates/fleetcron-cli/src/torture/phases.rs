//! The phases of a torture run, in order: start (namespace, operator connection, the fleet, every
//! task registered), faults (`--seconds` of them), settle (undo, restart, let every lease expire),
//! stop (SIGTERM), verdict (history and handlers' log through [`check::check`], one JSON line).

use super::check::{self, Evidence, TaskUnderTest};
use super::faults::{self, Fault, Faults, Injected, Rng};
use super::fleet::{Fleet, Plan};
use super::namespace::{self, Backend};
use super::{ms, TortureArgs};
use crate::process::{say, warn};
use crate::summary::{all_runs, read_log};
use crate::{CliError, CliResult};
use chrono::{DateTime, Utc};
use fleetcron::{DefaultSchedulerStrategy, EngineConfig, Schedule, SchedulerStrategy};
use serde_json::json;
use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tokio::time::Instant;

/// A run under way.
pub(super) struct Torture {
    seed: u64,
    rng: Rng,
    selected: HashSet<Fault>,
    backend: Backend,
    /// The operator's connection: registration, triggers, flips, the history read at the end.
    operator: Arc<dyn SchedulerStrategy>,
    fleet: Fleet,
    /// The temporary directory, removed when the run is dropped (declared last: dropped last).
    temporary: Option<TempDir>,
}

/// How the fleet stopped.
pub(super) struct Stopped {
    at: DateTime<Utc>,
    /// Workers that ignored SIGTERM for 20 s.
    stragglers: u64,
}

/// Opens the store's namespace, starts a worker in every seat and waits until the workers have
/// registered their tasks.
pub(super) async fn start(args: &TortureArgs) -> Result<Torture, CliError> {
    let exe = std::env::current_exe()
        .map_err(|error| CliError::runtime(format!("cannot find this program's path: {error}")))?;
    let selected = faults::selected(&args.faults);
    let seed = args.seed.unwrap_or_else(|| {
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
        nanos ^ u64::from(std::process::id()).rotate_left(32)
    });
    let mut rng = Rng::seeded(seed);
    let (dir, temporary) = namespace::directory(args.dir.as_deref())?;
    let (backend, url) = namespace::resolve_store(&args.store, &dir, &namespace::tag())?;
    let cuts = faults::cuts(&selected, backend);
    say(&format!(
        "torture: {} workers on {} ({}) for {} s, faults {:?}, seed {seed}, files in {}",
        args.workers,
        backend.name(),
        fleetcron::redact_url(&url),
        args.seconds,
        {
            let mut names: Vec<_> = selected.iter().collect();
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

    let mut fleet = Fleet::new(Plan {
        exe,
        dir: dir.clone(),
        log: dir.join("handlers.log"),
        tasks: args.tasks,
        lease_ms: args.lease_ms,
        poll_ms: args.poll_ms,
        max_skew_ms: args.max_skew_ms,
        skew: selected.contains(&Fault::Skew),
    });
    for index in 1..=args.workers {
        let (seat_url, proxy) = if cuts {
            let (seat_url, proxy) = namespace::proxied(&url, backend).await?;
            (seat_url, Some(proxy))
        } else {
            (url.clone(), None)
        };
        fleet.add_seat(index, seat_url, proxy, &mut rng)?;
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
            fleet.stop().await;
            return Err(CliError::runtime(format!(
                "the workers registered {registered} of {expected_tasks} tasks within 60 s; see {}",
                dir.display()
            )));
        }
        tokio::time::sleep(ms(200)).await;
    }
    Ok(Torture {
        seed,
        rng,
        selected,
        backend,
        operator,
        fleet,
        temporary,
    })
}

/// Injects faults for `--seconds`, then undoes every fault still in effect.
pub(super) async fn faults(torture: &mut Torture, args: &TortureArgs) -> Result<Injected, CliError> {
    let started = Instant::now();
    let faults_end = started + Duration::from_secs(args.seconds);
    let mut faults = Faults::new(
        args,
        &torture.selected,
        torture.backend,
        torture.operator.clone(),
        started,
        &mut torture.rng,
    );
    let mut tick = tokio::time::interval(ms(100));
    while Instant::now() < faults_end {
        tick.tick().await;
        faults
            .step(Instant::now(), &mut torture.fleet, &mut torture.rng)
            .await?;
    }
    faults.wind_down(&mut torture.fleet, &mut torture.rng).await
}

/// Lets the fleet settle: every lease taken during the faults expires and is reaped, and a worker
/// that exits is restarted.
pub(super) async fn settle(torture: &mut Torture, args: &TortureArgs) -> Result<(), CliError> {
    let settle = Instant::now() + ms(args.lease_ms + 3 * args.poll_ms + 3000);
    while Instant::now() < settle {
        tokio::time::sleep(ms(100)).await;
        torture.fleet.reap_exits();
        torture.fleet.fill(&mut torture.rng)?;
    }
    Ok(())
}

/// Stops the fleet with SIGTERM.
pub(super) async fn stop(torture: &mut Torture) -> Stopped {
    let at = Utc::now();
    say("torture: stopping the fleet (SIGTERM)");
    let stragglers = torture.fleet.stop().await;
    Stopped { at, stragglers }
}

/// Reads the store's history and the handlers' log, checks them, prints the violations and the JSON
/// line; exit code 1 when a guarantee was violated (the temporary directory is then kept).
pub(super) async fn verdict(
    mut torture: Torture,
    injected: Injected,
    stopped: Stopped,
    args: &TortureArgs,
) -> CliResult {
    let operator = torture.operator.as_ref();
    let reports = operator
        .get_tasks()
        .await
        .map_err(|error| CliError::unreachable(format!("cannot list the tasks: {error}")))?;
    let mut tasks = Vec::new();
    for report in reports.iter().filter(|report| !report.id.starts_with("fleetcron.")) {
        let runs = all_runs(operator, &report.id).await.map_err(CliError::unreachable)?;
        tasks.push(TaskUnderTest {
            id: report.id.clone(),
            schedule: Schedule::parse(&report.schedule, &report.timezone).ok(),
            exclusive: true,
            runs,
        });
    }
    let (log, malformed) = read_log(torture.fleet.log()).map_err(CliError::runtime)?;
    let Injected {
        counts,
        triggers,
        disabled,
    } = injected;
    let evidence = Evidence {
        log: &log,
        accepted_triggers: &triggers.accepted,
        disabled: &disabled,
        until: stopped.at - chrono::Duration::seconds(2),
    };
    let verdict = check::check(&tasks, &evidence, malformed as u64);
    let (fenced_out, leases_lost) = torture.fleet.warnings();
    for problem in &verdict.problems {
        warn(&format!("violation: {problem}"));
    }
    if verdict.problem_count > verdict.problems.len() as u64 {
        warn(&format!(
            "… and {} more violations",
            verdict.problem_count - verdict.problems.len() as u64
        ));
    }
    let fleet = &torture.fleet.counts;
    let line = json!({
        "backend": torture.backend.name(),
        "workers": args.workers,
        "seconds": args.seconds,
        "seed": torture.seed,
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
            "max_skew_ms": fleet.max_skew_ms,
            "triggers_sent": triggers.sent,
            "triggers_coalesced": triggers.coalesced,
            "triggers_refused": triggers.refused,
            "triggers_unconfirmed": triggers.unconfirmed,
            "worker_starts": fleet.spawned,
            "worker_exits": fleet.worker_exits,
            "fenced_out": fenced_out,
            "leases_lost": leases_lost,
            "stop_stragglers": stopped.stragglers,
        },
    });
    say(&line.to_string());
    if verdict.violations() > 0 {
        if let Some(temporary) = torture.temporary.take() {
            // Keep the evidence of a failing run.
            let kept = temporary.keep();
            warn(&format!("torture: FAILED; the evidence is kept in {}", kept.display()));
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

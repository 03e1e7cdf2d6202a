//! The multi-process test: 4 worker processes on one SQLite file, 10 tasks every second plus `hold`
//! (every 2 s, 1.5 s long), about 32 s; the worker holding `hold`'s lease is SIGKILLed at ~15 s and a
//! replacement started; then everyone is stopped with SIGTERM. From the handlers' own log and from the
//! store's history it asserts: no slot ran twice, every slot from the first to the last is accounted for
//! exactly once (run, skipped or missed), none was missed, and the killed worker's run is `abandoned`
//! within about a lease.

use crate::common::{sigterm, wait_with_deadline, BIN};
use chrono::{DateTime, Utc};
use fleetcron::{DefaultSchedulerStrategy, RunKind, RunQuery, RunRecord, RunStatus, Schedule, SchedulerStrategy};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

const WORKERS: usize = 4;
const TASKS: usize = 10;
const LEASE_MS: u64 = 2000;
const POLL_MS: u64 = 200;
const KILL_AFTER: Duration = Duration::from_secs(15);
const RUN_FOR: Duration = Duration::from_secs(32);

struct Worker {
    id: String,
    child: Child,
}

/// Clock skew of each worker: `mp1` runs 3 s ahead, `mp2` 3 s behind, the others on time. The store's
/// clock still decides, so neither may start a slot early or twice.
fn skew_ms(id: &str) -> i64 {
    match id {
        "mp1" => 3000,
        "mp2" => -3000,
        _ => 0,
    }
}

fn spawn_worker(dir: &Path, url: &str, log: &Path, id: &str) -> Worker {
    let out = File::create(dir.join(format!("{id}.out"))).expect("create the worker's stdout file");
    let err = File::create(dir.join(format!("{id}.err"))).expect("create the worker's stderr file");
    let child = Command::new(BIN)
        .arg("worker")
        .args([
            "--store",
            url,
            "--worker-id",
            id,
            "--profile",
            "test",
            "--tasks",
            &TASKS.to_string(),
        ])
        .args(["--lease-ms", &LEASE_MS.to_string(), "--poll-ms", &POLL_MS.to_string()])
        .args(["--shutdown-grace-ms", "5000"])
        .env("FLEETCRON_CLOCK_SKEW_MS", skew_ms(id).to_string())
        .arg("--log")
        .arg(log)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn a worker");
    Worker {
        id: id.to_owned(),
        child,
    }
}

/// A line of the handlers' log: `<task> <slot> <run_id> <worker> <fence> <started>`.
#[derive(Debug, Clone)]
struct LogLine {
    task: String,
    slot: DateTime<Utc>,
    run_id: String,
    worker: String,
    fence: u64,
    /// When the handler started, by the host's real clock (the store's clock on this host).
    started: DateTime<Utc>,
}

fn read_log(path: &Path) -> Vec<LogLine> {
    let text = std::fs::read_to_string(path).expect("read the handlers' log");
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields.len(), 6, "malformed log line {line:?}");
            LogLine {
                task: fields[0].to_owned(),
                slot: DateTime::parse_from_rfc3339(fields[1])
                    .unwrap_or_else(|error| panic!("bad slot in {line:?}: {error}"))
                    .with_timezone(&Utc),
                run_id: fields[2].to_owned(),
                worker: fields[3].to_owned(),
                fence: fields[4]
                    .parse()
                    .unwrap_or_else(|error| panic!("bad fence in {line:?}: {error}")),
                started: DateTime::parse_from_rfc3339(fields[5])
                    .unwrap_or_else(|error| panic!("bad start instant in {line:?}: {error}"))
                    .with_timezone(&Utc),
            }
        })
        .collect()
}

async fn all_runs(strategy: &DefaultSchedulerStrategy, id: &str) -> Vec<RunRecord> {
    let mut runs: Vec<RunRecord> = Vec::new();
    loop {
        let query = RunQuery {
            limit: 1000,
            before: runs.last().map(|run| run.run_id.clone()),
        };
        let page = strategy.runs(id, query).await.expect("read the history");
        let done = page.len() < 1000;
        runs.extend(page);
        if done {
            return runs;
        }
    }
}

fn dump(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "err") {
            let content = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = content.lines().rev().take(20).collect();
            text.push_str(&format!(
                "--- {}\n{}\n",
                path.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_one_sqlite_file_kill_and_restart() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("fleet.db").display());
    kill_and_restart(dir, &url).await;
}

/// The same on PostgreSQL, on a schema of its own: workers on separate connections to one server,
/// judged by the server's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_one_postgres_schema_kill_and_restart() {
    let base = std::env::var("FLEETCRON_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("fc_mp_{}", std::process::id());
    let url = format!("{base}?schema={schema}");
    if let Err(error) = DefaultSchedulerStrategy::connect(&url).await {
        if std::env::var("FLEETCRON_REQUIRE_SERVICES").is_ok_and(|value| value == "1") {
            panic!("{url} is required (FLEETCRON_REQUIRE_SERVICES=1) but unreachable: {error}");
        }
        eprintln!("\n*** SKIPPED four_workers_one_postgres_schema_kill_and_restart: {url}: {error}\n");
        return;
    }
    let dir = tempfile::tempdir().expect("create a temporary directory");
    kill_and_restart(dir, &url).await;
    let dropped = std::process::Command::new("psql")
        .args([
            base.as_str(),
            "-qc",
            &format!("SET client_min_messages = warning; DROP SCHEMA {schema} CASCADE"),
        ])
        .status();
    if !dropped.is_ok_and(|status| status.success()) {
        eprintln!("note: could not drop the test schema {schema}");
    }
}

/// The same on Redis, under a key prefix of its own: claims are Lua scripts on the server's TIME.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_one_redis_prefix_kill_and_restart() {
    let base = std::env::var("FLEETCRON_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("fc_mp_{}", std::process::id());
    let url = format!("{base}?prefix={prefix}");
    if let Err(error) = DefaultSchedulerStrategy::connect(&url).await {
        if std::env::var("FLEETCRON_REQUIRE_SERVICES").is_ok_and(|value| value == "1") {
            panic!("{url} is required (FLEETCRON_REQUIRE_SERVICES=1) but unreachable: {error}");
        }
        eprintln!("\n*** SKIPPED four_workers_one_redis_prefix_kill_and_restart: {url}: {error}\n");
        return;
    }
    let dir = tempfile::tempdir().expect("create a temporary directory");
    kill_and_restart(dir, &url).await;
    // Leave nothing behind on the shared server.
    let host = base
        .trim_start_matches("redis://")
        .split(['/', ':'])
        .next()
        .unwrap_or("127.0.0.1")
        .to_owned();
    let cleaned = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "redis-cli -h {host} --scan --pattern '*{prefix}*' | xargs -r redis-cli -h {host} del >/dev/null"
        ))
        .status();
    if !cleaned.is_ok_and(|status| status.success()) {
        eprintln!("note: could not delete the test keys *{prefix}*");
    }
}

/// Four workers (one 3 s ahead, one 3 s behind) on `url` for 32 s; the holder of `hold`'s lease is
/// SIGKILLed at 15 s and replaced; then the handlers' log and the history are checked.
async fn kill_and_restart(dir: tempfile::TempDir, url: &str) {
    let url = url.to_owned();
    let log = dir.path().join("handlers.log");

    let started = Instant::now();
    let started_utc = Utc::now();
    let mut workers: Vec<Worker> = (1..=WORKERS)
        .map(|index| spawn_worker(dir.path(), &url, &log, &format!("mp{index}")))
        .collect();

    // Watch the store the way an operator would.
    let strategy = DefaultSchedulerStrategy::connect(&url).await.expect("open the store");

    // At ~15 s, SIGKILL the worker that holds `hold`'s lease (hold runs 1.5 s of every 2 s).
    tokio::time::sleep_until(started + KILL_AFTER).await;
    let deadline = Instant::now() + Duration::from_secs(6);
    let (victim_index, victim_run) = loop {
        let report = match strategy.get_task("hold").await {
            Ok(Some(report)) => report,
            other => panic!(
                "the hold task is not readable ({other:?}); workers' stderr:\n{}",
                dump(dir.path())
            ),
        };
        let found = report.running_on.iter().find_map(|running| {
            workers
                .iter()
                .position(|worker| worker.id == running.worker)
                .map(|index| (index, running.run_id.clone()))
        });
        if let Some(found) = found {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no worker ran `hold` for 6 s\n{}",
            dump(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut victim = workers.remove(victim_index);
    victim.child.kill().expect("SIGKILL the worker holding the lease");
    let killed_at = Utc::now();
    victim.child.wait().expect("reap the killed worker");
    workers.push(spawn_worker(dir.path(), &url, &log, &format!("mp{}", WORKERS + 1)));

    tokio::time::sleep_until(started + RUN_FOR).await;
    let stopped_at = Utc::now();
    sigterm(&workers.iter().map(|worker| worker.child.id()).collect::<Vec<_>>());
    for worker in &mut workers {
        let status = wait_with_deadline(&mut worker.child, Duration::from_secs(20), &worker.id);
        assert!(
            status.success(),
            "worker {} exited with {status}\n{}",
            worker.id,
            dump(dir.path())
        );
    }
    let elapsed = started.elapsed();

    // The handlers' log: one line per run, never two for a slot.
    let lines = read_log(&log);
    let mut log_by_slot: HashMap<(String, DateTime<Utc>), Vec<&LogLine>> = HashMap::new();
    for line in &lines {
        log_by_slot
            .entry((line.task.clone(), line.slot))
            .or_default()
            .push(line);
    }
    let twice: Vec<_> = log_by_slot.iter().filter(|(_, lines)| lines.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "slots that ran twice according to the handlers' log: {twice:?}"
    );
    // None early, although mp1's clock runs 3 s ahead: the store's clock decides. (Whether a skewed
    // worker wins any slot is a race; the single-worker conformance case proves it cannot run early.)
    let early: Vec<_> = lines.iter().filter(|line| line.started < line.slot).collect();
    assert!(early.is_empty(), "runs that started before their slot: {early:?}");

    // The history, task by task.
    let schedules: Vec<(String, &str)> = (0..TASKS)
        .map(|index| (format!("t{index:03}"), "* * * * * *"))
        .chain([("hold".to_owned(), "*/2 * * * * *")])
        .collect();
    let mut slots_total = 0;
    let mut ran = 0;
    let mut skipped = 0;
    let mut abandoned = 0;
    let mut still_running = 0;
    let mut by_worker: BTreeMap<String, usize> = BTreeMap::new();
    let mut victim_record = None;
    for (task, pattern) in &schedules {
        let schedule = Schedule::parse(pattern, "UTC").expect("valid pattern");
        let runs = all_runs(&strategy, task).await;
        let mut rows: BTreeMap<DateTime<Utc>, Vec<&RunRecord>> = BTreeMap::new();
        for run in &runs {
            assert_ne!(run.kind, RunKind::Manual, "{task}: unexpected manual run {run:?}");
            let slot = run
                .slot
                .unwrap_or_else(|| panic!("{task}: scheduled row without a slot: {run:?}"));
            rows.entry(slot).or_default().push(run);
            if run.run_id == victim_run {
                victim_record = Some(run.clone());
            }
        }
        let (&first, &last) = (
            rows.keys().next().unwrap_or_else(|| panic!("{task}: empty history")),
            rows.keys()
                .next_back()
                .unwrap_or_else(|| panic!("{task}: empty history")),
        );
        // The history covers the whole run: from the first slot after start-up to the stop.
        assert!(
            first <= started_utc + chrono::Duration::seconds(8),
            "{task}: first slot {first} too late"
        );
        assert!(
            last >= stopped_at - chrono::Duration::seconds(3),
            "{task}: last slot {last} too early"
        );
        let mut expected = vec![first];
        expected.extend(schedule.slots_between(first, last, 100_000));
        assert_eq!(
            expected.last(),
            Some(&last),
            "{task}: {last} is not a slot of {pattern}"
        );
        assert_eq!(
            rows.len(),
            expected.len(),
            "{task}: history rows for slots outside the schedule"
        );
        for slot in &expected {
            let slot_rows = rows.get(slot).map(Vec::as_slice).unwrap_or_default();
            // Accounted for exactly once: one row per slot (no retries are configured).
            assert_eq!(
                slot_rows.len(),
                1,
                "{task} slot {slot}: {} history rows: {slot_rows:?}",
                slot_rows.len()
            );
            let row = slot_rows[0];
            assert_eq!(row.attempt, 1, "{task} slot {slot}: {row:?}");
            assert_ne!(row.status, RunStatus::Missed, "{task} slot {slot} was missed: {row:?}");
            slots_total += 1;
            let logged = log_by_slot
                .get(&(task.clone(), *slot))
                .map(Vec::as_slice)
                .unwrap_or_default();
            if row.status.started() {
                ran += 1;
                *by_worker.entry(row.worker.clone().unwrap_or_default()).or_default() += 1;
                match row.status {
                    RunStatus::Abandoned => abandoned += 1,
                    RunStatus::Running => still_running += 1,
                    RunStatus::Succeeded => {
                        // A run that finished normally was logged, by its own worker, with its own id and fence.
                        assert_eq!(
                            logged.len(),
                            1,
                            "{task} slot {slot} succeeded but was not logged: {row:?}"
                        );
                    }
                    other => panic!("{task} slot {slot}: unexpected status {other}: {row:?}"),
                }
                if let Some(line) = logged.first() {
                    assert_eq!(line.run_id, row.run_id, "{task} slot {slot}: log and history disagree");
                    assert_eq!(
                        Some(&line.worker),
                        row.worker.as_ref(),
                        "{task} slot {slot}: log and history disagree"
                    );
                    assert_eq!(line.fence, row.fence, "{task} slot {slot}: log and history disagree");
                }
            } else {
                assert_eq!(row.status, RunStatus::Skipped, "{task} slot {slot}: {row:?}");
                assert!(
                    logged.is_empty(),
                    "{task} slot {slot} was recorded skipped but its handler ran: {logged:?}"
                );
                skipped += 1;
            }
        }
        // Every log line belongs to a history row of this task.
        for line in lines.iter().filter(|line| &line.task == task) {
            assert!(
                rows.contains_key(&line.slot),
                "{task}: log line for unrecorded slot {line:?}"
            );
        }
    }

    // The killed worker's in-flight run was abandoned, by another worker, within about a lease.
    let victim_record = victim_record.unwrap_or_else(|| panic!("the killed run {victim_run} is not in the history"));
    assert_eq!(
        victim_record.status,
        RunStatus::Abandoned,
        "the killed run: {victim_record:?}"
    );
    assert_eq!(victim_record.worker.as_deref(), Some(victim.id.as_str()));
    let reaped_at = victim_record.finished_at.expect("an abandoned run has an end");
    let reap_delay = reaped_at - killed_at;
    assert!(
        reap_delay <= chrono::Duration::milliseconds(i64::try_from(LEASE_MS).unwrap_or(0) + 2000),
        "abandoned {reap_delay} after the kill (lease {LEASE_MS} ms)"
    );

    eprintln!(
        "multi-process: {elapsed:?}, {} tasks, {slots_total} slots: ran {ran} (abandoned {abandoned}, still running {still_running}), \
         skipped {skipped}, missed 0; log lines {}; killed {} during run {victim_run}, abandoned {reap_delay} after the kill; runs per worker {by_worker:?}",
        schedules.len(),
        lines.len(),
        victim.id,
    );
    assert!(slots_total >= TASKS * 25, "too few slots: {slots_total}");
}

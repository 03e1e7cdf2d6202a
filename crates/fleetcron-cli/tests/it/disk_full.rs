//! A worker survives a full disk: a real `fleetcron worker` process runs on a SQLite file on a tmpfs
//! of a few MiB; the disk is filled (and kept full by topping the filler up) for a few seconds, then
//! freed, three times. Each time the worker must report the full disk, resume claiming within a few
//! seconds of the space coming back, and never run a slot twice (handlers' log and history, checked by
//! `fleetcron summary`). The recovery times (free → first handler start) are printed.
//!
//! Where mounting a tmpfs is not permitted, the worker runs with `SIGXFSZ` ignored and its file size
//! limit (`RLIMIT_FSIZE`, set with `prlimit`) is dropped to zero instead of filling a disk;
//! `FLEETCRON_TEST_DISK_FULL=fsize` forces that fallback.

use crate::common::{run, sigterm, wait_with_deadline, BIN};
use chrono::{DateTime, Utc};
use fleetcron::{DefaultSchedulerStrategy, RunQuery, RunStatus, SchedulerStrategy};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DISK_BYTES: u64 = 16 * 1024 * 1024;
const TASKS: u32 = 4;
const LEASE_MS: u64 = 2000;
const CYCLES: usize = 3;
/// How long the disk stays full once the worker has reported it.
const FULL_FOR: Duration = Duration::from_secs(3);
/// "Within a few seconds": the engine's store backoff tops out at 2 s.
const RECOVERY_LIMIT: Duration = Duration::from_secs(5);

/// How the test takes the space away.
enum Disk {
    /// A tmpfs on `dir`; `filler` takes its free space.
    Tmpfs {
        dir: tempfile::TempDir,
        filler: Option<std::fs::File>,
    },
    /// The worker's `RLIMIT_FSIZE` drops to zero (its files live in `dir`, on an ordinary disk).
    Fsize { dir: tempfile::TempDir, pid: Option<u32> },
}

impl Disk {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory for the database");
        if std::env::var("FLEETCRON_TEST_DISK_FULL").is_ok_and(|mode| mode == "fsize") {
            return Self::Fsize { dir, pid: None };
        }
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={DISK_BYTES},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .output();
        match output {
            Ok(output) if output.status.success() => Self::Tmpfs { dir, filler: None },
            other => {
                eprintln!("note: cannot mount a tmpfs ({other:?}); using RLIMIT_FSIZE on the worker instead");
                Self::Fsize { dir, pid: None }
            }
        }
    }

    fn dir(&self) -> &Path {
        match self {
            Self::Tmpfs { dir, .. } | Self::Fsize { dir, .. } => dir.path(),
        }
    }

    /// The command that starts a worker (in the fallback: with SIGXFSZ ignored, so that a write past
    /// the limit fails with EFBIG instead of killing it).
    fn worker_command(&self) -> Command {
        match self {
            Self::Tmpfs { .. } => Command::new(BIN),
            Self::Fsize { .. } => {
                let mut command = Command::new("sh");
                command.args(["-c", "trap '' XFSZ; exec \"$0\" \"$@\"", BIN]);
                command
            }
        }
    }

    fn watch(&mut self, worker: u32) {
        if let Self::Fsize { pid, .. } = self {
            *pid = Some(worker);
        }
    }

    /// Takes the free space (again: called repeatedly while the disk must stay full).
    fn fill(&mut self) {
        match self {
            Self::Tmpfs { dir, filler } => {
                let file = filler.get_or_insert_with(|| {
                    std::fs::File::create(dir.path().join("filler")).expect("create the filler file")
                });
                let chunk = vec![0x5a_u8; 4096];
                loop {
                    match file.write_all(&chunk) {
                        Ok(()) => {}
                        Err(error) if error.raw_os_error() == Some(28) => break, // ENOSPC
                        Err(error) => panic!("filling the disk: {error}"),
                    }
                }
            }
            Self::Fsize { pid, .. } => prlimit(pid.expect("a worker to limit"), "0:unlimited"),
        }
    }

    fn free(&mut self) {
        match self {
            Self::Tmpfs { dir, filler } => {
                if filler.take().is_some() {
                    std::fs::remove_file(dir.path().join("filler")).expect("remove the filler file");
                }
            }
            Self::Fsize { pid, .. } => prlimit(pid.expect("a worker to limit"), "unlimited:unlimited"),
        }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if let Self::Tmpfs { dir, filler } = self {
            filler.take();
            let _ = Command::new("umount").arg("-l").arg(dir.path()).status();
        }
    }
}

fn prlimit(pid: u32, limits: &str) {
    let status = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--fsize={limits}")])
        .status()
        .expect("run prlimit");
    assert!(status.success(), "prlimit --fsize={limits} on {pid} failed: {status}");
}

/// A stream of the worker read into memory as it comes.
fn collect<R: Read + Send + 'static>(stream: Option<R>) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        let Some(mut stream) = stream else { return };
        let mut buffer = [0_u8; 8192];
        while let Ok(read) = stream.read(&mut buffer) {
            if read == 0 {
                break;
            }
            sink.lock()
                .expect("output buffer")
                .push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    });
    text
}

/// When each handler started, by the handlers' log (`<task> <slot> <run> <worker> <fence> <started>`).
fn starts(log: &Path) -> Vec<DateTime<Utc>> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(5))
        .filter_map(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|instant| instant.with_timezone(&Utc))
        .collect()
}

/// How many times the worker has logged that the disk is full (with RLIMIT_FSIZE a write cut short can
/// also surface as an I/O error).
fn reports(stderr: &Mutex<String>, fsize: bool) -> usize {
    let text = stderr.lock().expect("stderr buffer");
    text.matches("the disk is full").count() + if fsize { text.matches("I/O error").count() } else { 0 }
}

/// Polls `condition` every 20 ms until it holds or `limit` passes.
fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}

/// The worker process, killed when the test ends early (a failed assertion), so that it never outlives
/// the test (nor keeps the tmpfs busy).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_worker(disk: &Disk, url: &str, log: &Path) -> Child {
    disk.worker_command()
        .arg("worker")
        .args(["--store", url, "--worker-id", "df1", "--profile", "test"])
        .args(["--tasks", &TASKS.to_string(), "--lease-ms", &LEASE_MS.to_string()])
        .args(["--poll-ms", "200", "--shutdown-grace-ms", "3000"])
        .arg("--log")
        .arg(log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a worker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_resumes_claiming_after_its_disk_was_full() {
    let mut disk = Disk::new();
    let fsize = matches!(disk, Disk::Fsize { .. });
    let db: PathBuf = disk.dir().join("fleet.db");
    let url = format!("sqlite://{}", db.display());
    // The handlers' log and the worker's output live on an ordinary disk.
    let logs = tempfile::tempdir().expect("temporary directory for the logs");
    let log = logs.path().join("handlers.log");

    let mut worker = Reaped(spawn_worker(&disk, &url, &log));
    let worker = &mut worker.0;
    disk.watch(worker.id());
    let stdout = collect(worker.stdout.take());
    let stderr = collect(worker.stderr.take());
    let shown = |stderr: &Arc<Mutex<String>>| {
        let text = stderr.lock().expect("stderr buffer").clone();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    };

    let mut recoveries = Vec::new();
    let mut outages = Vec::new();
    for cycle in 1..=CYCLES {
        // Running normally: handlers start.
        let since = Utc::now();
        assert!(
            wait_for(Duration::from_secs(15), || starts(&log)
                .iter()
                .filter(|s| **s > since)
                .count()
                >= 6),
            "cycle {cycle}: the worker runs nothing before the disk fills\n{}",
            shown(&stderr)
        );

        let reported_before = reports(&stderr, fsize);
        let full_at = Utc::now();
        disk.fill();
        // The worker's commits fail and it says why.
        let reported = wait_for(Duration::from_secs(15), || {
            disk.fill();
            reports(&stderr, fsize) > reported_before
        });
        assert!(
            reported,
            "cycle {cycle}: the worker never reported the full disk\n{}",
            shown(&stderr)
        );
        // Keep it full (whatever SQLite frees, the filler takes) for a few seconds.
        let hold_until = Instant::now() + FULL_FOR;
        while Instant::now() < hold_until {
            disk.fill();
            std::thread::sleep(Duration::from_millis(50));
        }
        let freed_at = Utc::now();
        disk.free();
        outages.push((full_at, freed_at));

        let mut first = None;
        let resumed = wait_for(RECOVERY_LIMIT + Duration::from_secs(10), || {
            first = starts(&log).into_iter().filter(|start| *start > freed_at).min();
            first.is_some()
        });
        assert!(
            resumed,
            "cycle {cycle}: no handler started in {:?} after the disk was freed\n{}",
            RECOVERY_LIMIT + Duration::from_secs(10),
            shown(&stderr)
        );
        let recovery = first.map(|first| first - freed_at).unwrap_or_default();
        recoveries.push(recovery);
        assert!(
            recovery <= chrono::Duration::from_std(RECOVERY_LIMIT).unwrap_or_default(),
            "cycle {cycle}: the worker resumed only {recovery} after the disk was freed\n{}",
            shown(&stderr)
        );
        let during = starts(&log)
            .into_iter()
            .filter(|start| *start > full_at + chrono::Duration::seconds(1) && *start < freed_at)
            .count();
        eprintln!(
            "disk-full cycle {cycle}: resumed {recovery} after the space came back; {during} handler starts while full"
        );
    }
    // Still healthy a little later.
    let since = Utc::now();
    assert!(
        wait_for(Duration::from_secs(10), || starts(&log)
            .iter()
            .filter(|s| **s > since)
            .count()
            >= 6),
        "the worker stops running tasks after recovering\n{}",
        shown(&stderr)
    );
    sigterm(&[worker.id()]);
    let status = wait_with_deadline(worker, Duration::from_secs(20), "the worker");
    assert!(status.success(), "the worker exited with {status}\n{}", shown(&stderr));
    let _ = stdout;

    // The exactly-once check of the demo: no slot ran twice, the log and the history agree.
    let summary = run(
        &["summary", "--store", &url, "--log", &log.display().to_string()],
        Duration::from_secs(60),
    );
    let last = summary.stdout.lines().last().unwrap_or_default().to_owned();
    assert!(
        last.starts_with("summary:") && last.contains(" duplicates=0 "),
        "summary: {}\n{}",
        summary.stdout,
        summary.stderr
    );
    let problems: Vec<&str> = summary
        .stdout
        .lines()
        .filter(|line| line.starts_with("problem:"))
        .collect();
    assert!(problems.is_empty(), "{}", summary.stdout);

    // Slots no worker could claim are recorded missed — only while the disk was full.
    let strategy = DefaultSchedulerStrategy::connect(&url).await.expect("open the store");
    let mut outcomes: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for task in (0..TASKS)
        .map(|index| format!("t{index:03}"))
        .chain(["hold".to_owned()])
    {
        let runs = strategy
            .runs(
                &task,
                RunQuery {
                    limit: 10_000,
                    before: None,
                },
            )
            .await
            .expect("read the history");
        for run in &runs {
            let key = format!(
                "{}{}",
                run.status,
                run.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
            );
            *outcomes.entry(key).or_default() += 1;
        }
        for missed in runs.iter().filter(|run| run.status == RunStatus::Missed) {
            let slot = missed.slot.expect("a missed run has a slot");
            assert!(
                outages
                    .iter()
                    .any(|(full, freed)| slot >= *full - chrono::Duration::seconds(2)
                        && slot <= *freed + chrono::Duration::from_std(RECOVERY_LIMIT).unwrap_or_default()),
                "{task}: slot {slot} was missed outside the disk-full windows {outages:?}"
            );
        }
    }
    eprintln!(
        "disk full ({}): recovery times {:?}; {}; history {outcomes:?}",
        if fsize { "RLIMIT_FSIZE" } else { "tmpfs" },
        recoveries
            .iter()
            .map(|recovery| format!("{} ms", recovery.num_milliseconds()))
            .collect::<Vec<_>>(),
        last
    );
}

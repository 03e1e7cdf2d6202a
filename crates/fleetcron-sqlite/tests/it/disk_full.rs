//! A full disk never wedges a store: a COMMIT that fails (or a transaction dropped half-way) never puts
//! an open transaction back into the pool, so once space is free again the same store instance writes.
//!
//! The store sits on a tmpfs of a few MiB mounted for the test (`mount -t tmpfs`, unmounted by a
//! guard). Where mounting is not permitted, the test runs itself again in a child process whose file
//! size limit (`RLIMIT_FSIZE`, set with `prlimit`, `SIGXFSZ` ignored) makes the writes fail instead.
//! `FLEETCRON_TEST_DISK_FULL=fsize` forces that fallback.

use crate::*;
use fleetcron_core::{PrunePlan, RunQuery, RunRecord, RunStatus, StoreError};
use serde_json::json;
use std::io::Write;
use std::process::Command;
use std::time::Duration as StdDuration;

/// Size of the test's file system.
const DISK_BYTES: u64 = 4 * 1024 * 1024;
/// Set in the child process of the `RLIMIT_FSIZE` fallback.
const CHILD_ENV: &str = "FLEETCRON_TEST_FSIZE_CHILD";
/// This test's name, for the child process of the fallback.
const TEST_NAME: &str = "disk_full::a_commit_that_fails_on_a_full_disk_never_wedges_the_store";

/// How the test makes writes fail.
enum Disk {
    /// A tmpfs mounted on a temporary directory; a filler file takes the free space.
    Tmpfs {
        dir: tempfile::TempDir,
        filler: Option<PathBuf>,
    },
    /// This process's file size limit is lowered to nothing: every write to a file fails (EFBIG).
    Fsize { dir: tempfile::TempDir },
}

impl Disk {
    /// A tmpfs of `DISK_BYTES`, or the reason it cannot be mounted.
    fn tmpfs() -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|error| format!("temporary directory: {error}"))?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={DISK_BYTES},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|error| format!("cannot run mount: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Self::Tmpfs { dir, filler: None })
    }

    fn dir(&self) -> &Path {
        match self {
            Self::Tmpfs { dir, .. } | Self::Fsize { dir } => dir.path(),
        }
    }

    /// Takes every free byte (tmpfs), or forbids any file to grow (fsize).
    fn fill(&mut self) {
        match self {
            Self::Tmpfs { dir, filler } => {
                let path = dir.path().join("filler");
                let mut file = std::fs::File::create(&path).expect("create the filler file");
                let chunk = vec![0xa5_u8; 4096];
                loop {
                    match file.write_all(&chunk) {
                        Ok(()) => {}
                        Err(error) if error.raw_os_error() == Some(28) => break, // ENOSPC
                        Err(error) => panic!("filling the disk: {error}"),
                    }
                }
                let _ = file.sync_all();
                *filler = Some(path);
            }
            // No write to any regular file of this process may succeed (the WAL can be reset to its
            // start when the last connection closes, so a limit at its current end is not enough).
            Self::Fsize { .. } => set_own_fsize_limit("0"),
        }
    }

    /// Gives the space back.
    fn free(&mut self) {
        match self {
            Self::Tmpfs { filler, .. } => {
                if let Some(path) = filler.take() {
                    std::fs::remove_file(path).expect("remove the filler file");
                }
            }
            Self::Fsize { .. } => set_own_fsize_limit("unlimited"),
        }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if let Self::Tmpfs { dir, .. } = self {
            // Lazy: a connection closing in the background may still hold a file open.
            let _ = Command::new("umount").arg("-l").arg(dir.path()).status();
        }
    }
}

/// Sets this process's soft `RLIMIT_FSIZE` (the hard limit stays unlimited, so it can be raised again).
fn set_own_fsize_limit(soft: &str) {
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--fsize={soft}:unlimited"),
        ])
        .status()
        .expect("run prlimit");
    assert!(status.success(), "prlimit --fsize={soft} failed: {status}");
}

/// A mutation inserting one run of `task` whose result is `bytes` long (it needs that much new space).
async fn insert_big_run(store: &SqliteStore, task: &str, run_id: &str, bytes: usize) -> Result<(), StoreError> {
    let mut record = run(task, run_id, None, 1, RunStatus::Succeeded);
    record.result = Some(json!("r".repeat(bytes)));
    try_insert_runs(store, task, vec![record]).await.map(|_| ())
}

fn assert_disk_full(error: &StoreError, fsize: bool, during: &str) {
    let text = error.to_string();
    assert!(error.is_transient(), "{during}: not a transient error: {error:?}");
    // A write cut short by RLIMIT_FSIZE can also surface as an I/O error (EFBIG).
    assert!(
        text.contains("the disk is full") || (fsize && text.contains("I/O error")),
        "{during}: the error does not say the disk is full: {text}"
    );
}

async fn scenario(mut disk: Disk) {
    let fsize = matches!(disk, Disk::Fsize { .. });
    let path = disk.dir().join("fleetcron.db");
    let store = store(&path).await;
    for _ in 0..3 {
        increment(&store, "counter", "w1")
            .await
            .expect("increment before the disk fills");
    }

    disk.fill();
    // The first write that needs space fails at COMMIT (WAL mode writes pages when committing).
    let error = insert_big_run(&store, "big", "big-1", 256 * 1024)
        .await
        .expect_err("a mutation needing 256 KiB commits on a full disk");
    assert_disk_full(&error, fsize, "the first failed mutation");
    assert!(
        error.to_string().contains("committing"),
        "the test must make the COMMIT fail: {error}"
    );
    // While the disk stays full, every write fails the same clear way — several at once, so that every
    // connection of the pool meets a failed commit — and none with a leftover transaction.
    let attempts = (0..6).map(|index| {
        let store = &store;
        async move { insert_big_run(store, "big", &format!("big-full-{index}"), 64 * 1024).await }
    });
    for (index, outcome) in futures_join_all(attempts).await.into_iter().enumerate() {
        let error = outcome.expect_err("a mutation on a full disk");
        assert_disk_full(&error, fsize, &format!("concurrent mutation {index} on the full disk"));
    }
    let error = store
        .prune_runs(&PrunePlan {
            keep_last: Some(1),
            finished_before: None,
        })
        .await
        .expect_err("pruning on a full disk");
    assert_disk_full(&error, fsize, "pruning on the full disk");
    let error = increment(&store, "counter", "w1")
        .await
        .expect_err("an increment on a full disk");
    assert_disk_full(&error, fsize, "an increment on the full disk");

    disk.free();
    // The same store instance writes again: sequentially, then on every connection of its pool at once.
    for _ in 0..5 {
        tokio::time::timeout(StdDuration::from_secs(10), increment(&store, "counter", "w1"))
            .await
            .expect("an increment after the disk was freed hangs")
            .expect("an increment after the disk was freed");
    }
    let concurrent = (0..8).map(|index| {
        let store = &store;
        async move { increment(store, &format!("parallel-{index}"), "w2").await }
    });
    for outcome in futures_join_all(concurrent).await {
        outcome.expect("concurrent increments after the disk was freed");
    }
    insert_big_run(&store, "big", "big-2", 256 * 1024)
        .await
        .expect("the big mutation once space is free");
    let removed = store
        .prune_runs(&PrunePlan {
            keep_last: Some(100),
            finished_before: None,
        })
        .await
        .expect("pruning once space is free");
    assert_eq!(removed, 0);

    // Nothing of the failed mutations was written; everything after them was.
    assert_eq!(final_fence(&store, "counter").await, 8);
    assert_one_run_per_fence(&store, "counter", 8).await;
    let big: Vec<String> = store
        .runs("big", &RunQuery::default())
        .await
        .expect("runs")
        .into_iter()
        .map(|run| run.run_id)
        .collect();
    assert_eq!(big, vec!["big-2".to_owned()]);
    let mut conn = raw_connection(&path).await;
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .expect("integrity check");
    assert_eq!(integrity, "ok");
    store.close().await;
}

/// Runs the futures concurrently on this task (no `futures` dependency for one helper).
async fn futures_join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in set.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_fails_on_a_full_disk_never_wedges_the_store() {
    let forced = std::env::var("FLEETCRON_TEST_DISK_FULL").unwrap_or_default();
    if std::env::var_os(CHILD_ENV).is_some() {
        // The child of the fallback below: SIGXFSZ is ignored, so a write past the limit fails (EFBIG).
        let dir = tempfile::tempdir().expect("temporary directory");
        scenario(Disk::Fsize { dir }).await;
        return;
    }
    if forced != "fsize" {
        match Disk::tmpfs() {
            Ok(disk) => return scenario(disk).await,
            Err(reason) => eprintln!("note: {reason}; falling back to RLIMIT_FSIZE in a child process"),
        }
    }
    let exe = std::env::current_exe().expect("the test binary");
    let output = Command::new("sh")
        .args(["-c", "trap '' XFSZ; exec \"$0\" \"$@\""])
        .arg(exe)
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run the test in a child process");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the RLIMIT_FSIZE child failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A write whose future is dropped at any point (a caller's timeout, a cancelled task) leaves the store
/// usable and its batch all-or-nothing: the connection it held never returns to the pool mid-transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_dropped_at_any_point_leaves_the_store_usable() {
    let db = test_db();
    let store = store(&db.path).await;
    let mut increments = 0;
    for step in 0..60_u32 {
        let runs: Vec<RunRecord> = (0..50)
            .map(|index| {
                let mut record = run(
                    "dropped",
                    &format!("d{step:03}-{index:03}"),
                    None,
                    1,
                    RunStatus::Succeeded,
                );
                record.result = Some(json!("x".repeat(2048)));
                record
            })
            .collect();
        let budget = StdDuration::from_micros(u64::from(step) * 100);
        let _ = tokio::time::timeout(budget, try_insert_runs(&store, "dropped", runs)).await;
        tokio::time::timeout(StdDuration::from_secs(10), increment(&store, "counter", "w1"))
            .await
            .unwrap_or_else(|_| panic!("step {step}: the next write hangs"))
            .unwrap_or_else(|error| panic!("step {step}: the next write fails: {error}"));
        increments += 1;
    }
    assert_one_run_per_fence(&store, "counter", increments).await;
    let rows = store
        .runs(
            "dropped",
            &RunQuery {
                limit: 10_000,
                before: None,
            },
        )
        .await
        .expect("runs");
    let mut per_step: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for row in &rows {
        *per_step.entry(&row.run_id[..4]).or_default() += 1;
    }
    assert!(
        per_step.values().all(|&count| count == 50),
        "a dropped batch was partly written: {per_step:?}"
    );
    // Most budgets must cut the batch short, or the test proves nothing.
    eprintln!(
        "dropped writes: {} of 60 committed before their deadline",
        per_step.len()
    );
    assert!(per_step.len() <= 55, "too few writes were dropped: {per_step:?}");
}

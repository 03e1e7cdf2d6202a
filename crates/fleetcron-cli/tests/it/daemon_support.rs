//! Helpers for the daemon tests: write a config, start `fleetcron run` in the background, query the
//! store with the admin commands.

use crate::common::{run, BIN};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `fleetcron run`.
pub struct Daemon {
    /// The process.
    pub child: Child,
    /// Its stderr (logs) file.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts a daemon on `config` with `--worker-id id`.
    pub fn start(dir: &Path, config: &Path, id: &str) -> Self {
        let log = dir.join(format!("{id}.log"));
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .args(["--worker-id", id])
            .env("RUST_LOG", "info")
            .env_remove("FLEETCRON_STORE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("create the daemon log"))
            .spawn()
            .expect("spawn fleetcron run");
        Daemon { child, log }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -{name} failed");
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) -> String {
        self.signal("TERM");
        let status = crate::common::wait_with_deadline(&mut self.child, Duration::from_secs(20), "daemon");
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert_eq!(status.code(), Some(0), "daemon exit: {status}\n{log}");
        log
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `text` as `dir/NAME` and returns its path.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

/// Runs an admin command with `--store url` and parses its JSON output.
pub fn admin_json(args: &[&str], url: &str) -> serde_json::Value {
    let mut full: Vec<&str> = args.to_vec();
    full.extend(["--store", url, "--json"]);
    let out = run(&full, Duration::from_secs(30));
    assert_eq!(out.code(), Some(0), "fleetcron {full:?}: {}", out.stderr);
    serde_json::from_str(&out.stdout).expect("admin JSON")
}

/// The runs of a task, newest first; empty while the store or the task does not exist yet.
pub fn runs(url: &str, id: &str) -> Vec<serde_json::Value> {
    let out = run(
        &["tasks", "runs", id, "--limit", "1000", "--store", url, "--json"],
        Duration::from_secs(30),
    );
    if out.code() != Some(0) {
        return Vec::new();
    }
    serde_json::from_str::<serde_json::Value>(&out.stdout)
        .expect("admin JSON")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until `check` holds (polling every 100 ms), at most `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !check() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `sqlite://` URL of a file.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

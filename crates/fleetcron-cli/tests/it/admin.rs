//! Admin commands on a SQLite store a daemon used: list (table and JSON), show, runs, trigger, enable,
//! disable, migrate; unknown ids exit 1, an unreachable store exits 3, never a stack trace.

use crate::common::run;
use crate::daemon_support::{admin_json, runs, sqlite_url, wait_until, write_config, Daemon};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

#[test]
fn admin_commands_on_a_sqlite_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(&dir.path().join("admin.db"));

    let migrate = run(&["migrate", "--store", &url], T);
    assert_eq!(migrate.code(), Some(0), "{}", migrate.stderr);
    assert!(migrate.stdout.contains("schema is up to date"));
    let empty = run(&["tasks", "list", "--store", &url], T);
    assert_eq!(empty.code(), Some(0), "{}", empty.stderr);
    assert!(empty.stdout.contains("no tasks"), "{}", empty.stdout);

    let config = write_config(
        dir.path(),
        "a.toml",
        &format!(
            "store = \"{url}\"\n[engine]\npoll_interval = \"100ms\"\n\
             [[task]]\nid = \"every.second\"\ndescription = \"ticks\"\nschedule = \"* * * * * *\"\nshell = \"echo tick\"\n\
             [[task]]\nid = \"yearly\"\nschedule = \"0 0 1 1 *\"\ntimezone = \"Europe/Berlin\"\nshell = \"echo manual\"\n"
        ),
    );
    let daemon = Daemon::start(dir.path(), &config, "admin1");
    wait_until(Duration::from_secs(15), "two runs", || {
        runs(&url, "every.second").len() >= 2
    });

    let list = run(&["tasks", "list", "--store", &url], T);
    assert_eq!(list.code(), Some(0));
    let header = list.stdout.lines().next().unwrap_or_default();
    for column in ["ID", "ENABLED", "SCHEDULE", "NEXT RUN", "LAST START", "STATUS"] {
        assert!(header.contains(column), "{}", list.stdout);
    }
    assert!(list.stdout.contains("yearly") && list.stdout.contains("0 0 1 1 * Europe/Berlin"));

    let json = admin_json(&["tasks", "list"], &url);
    let reports = json.as_array().expect("array");
    let tick = reports
        .iter()
        .find(|r| r["id"] == "every.second")
        .expect("every.second listed");
    for field in [
        "id",
        "description",
        "schedule",
        "timezone",
        "last_executed_at",
        "last_started_at",
        "is_running",
        "last_result",
        "enabled",
        "next_run_at",
        "last_status",
        "last_error",
        "last_duration_ms",
        "running_on",
        "pending_trigger",
        "definition_conflict",
    ] {
        assert!(tick.get(field).is_some(), "field {field} missing in {tick}");
    }
    assert_eq!(tick["description"], "ticks");

    let show = run(&["tasks", "show", "every.second", "--store", &url], T);
    assert_eq!(show.code(), Some(0));
    assert!(
        show.stdout.contains("schedule:         * * * * * * (UTC)"),
        "{}",
        show.stdout
    );

    let history = run(&["tasks", "runs", "every.second", "--limit", "2", "--store", &url], T);
    assert_eq!(history.code(), Some(0));
    assert_eq!(history.stdout.lines().count(), 3, "{}", history.stdout);
    assert!(history.stdout.contains("admin1"), "{}", history.stdout);

    let trigger = run(&["tasks", "trigger", "yearly", "--store", &url], T);
    assert_eq!(trigger.code(), Some(0), "{}", trigger.stderr);
    assert!(trigger.stdout.contains("triggered"));
    wait_until(Duration::from_secs(10), "the manual run", || {
        runs(&url, "yearly")
            .iter()
            .any(|r| r["kind"] == "manual" && r["status"] == "succeeded")
    });
    // `last_executed_at` is when the last run finished (Vendure's meaning); `last_started_at` its start.
    let manual = runs(&url, "yearly")
        .into_iter()
        .find(|r| r["kind"] == "manual")
        .expect("the manual run");
    let yearly = admin_json(&["tasks", "show", "yearly"], &url);
    assert_eq!(yearly["last_executed_at"], manual["finished_at"], "{yearly}");
    assert_eq!(yearly["last_started_at"], manual["started_at"], "{yearly}");
    let shown = run(&["tasks", "show", "yearly", "--store", &url], T);
    assert!(
        shown.stdout.contains("last started:     20") && shown.stdout.contains("last finished:    20"),
        "{}",
        shown.stdout
    );

    let disable = run(
        &[
            "tasks",
            "disable",
            "every.second",
            "--note",
            "db migration",
            "--store",
            &url,
        ],
        T,
    );
    assert_eq!(disable.code(), Some(0), "{}", disable.stderr);
    assert!(disable.stdout.contains("disabled"));
    let report = admin_json(&["tasks", "show", "every.second"], &url);
    assert_eq!(report["enabled"], false);
    assert_eq!(report["note"]["text"], "db migration", "{report}");
    wait_until(Duration::from_secs(10), "a skipped slot", || {
        runs(&url, "every.second")
            .iter()
            .any(|r| r["status"] == "skipped" && r["reason"] == "disabled")
    });
    let refused = run(&["tasks", "trigger", "every.second", "--store", &url], T);
    assert_eq!(refused.code(), Some(1));
    assert!(refused.stderr.contains("is disabled"), "{}", refused.stderr);
    let enable = run(&["tasks", "enable", "every.second", "--store", &url], T);
    assert_eq!(enable.code(), Some(0));
    assert_eq!(admin_json(&["tasks", "show", "every.second"], &url)["enabled"], true);
    daemon.stop();

    for args in [
        vec!["tasks", "show", "nope"],
        vec!["tasks", "runs", "nope"],
        vec!["tasks", "trigger", "nope"],
        vec!["tasks", "enable", "nope"],
        vec!["tasks", "disable", "nope"],
    ] {
        let mut full = args.clone();
        full.extend(["--store", &url]);
        let out = run(&full, T);
        assert_eq!(out.code(), Some(1), "{full:?}: {}", out.stderr);
        assert!(out.stderr.starts_with("error: unknown task \"nope\""), "{}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    }
}

#[test]
fn an_unreachable_store_exits_3_without_a_trace() {
    let url = "sqlite:///nonexistent-dir/x.db";
    for args in [
        vec!["tasks", "list"],
        vec!["tasks", "show", "a"],
        vec!["tasks", "runs", "a"],
        vec!["tasks", "trigger", "a"],
        vec!["tasks", "enable", "a"],
        vec!["tasks", "disable", "a"],
        vec!["migrate"],
    ] {
        let mut full = args.clone();
        full.extend(["--store", url, "--retry-for", "200ms"]);
        let out = run(&full, T);
        assert_eq!(out.code(), Some(3), "{full:?}: {} {}", out.stdout, out.stderr);
        assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
        assert!(out.stderr.contains("/nonexistent-dir/x.db"), "{}", out.stderr);
        assert!(!out.stderr.contains("panicked") && !out.stderr.contains("backtrace"));
    }
    let bad_scheme = run(&["tasks", "list", "--store", "nope://x"], T);
    assert_eq!(bad_scheme.code(), Some(2), "{}", bad_scheme.stderr);
    let daemon = run(
        &[
            "run",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../fleetcron.toml"),
            "--store",
            url,
        ],
        T,
    );
    assert_eq!(daemon.code(), Some(3), "{}", daemon.stderr);
}

/// An unknown id of 100 KiB is answered with a short message: echoed input is bounded.
#[test]
fn a_huge_unknown_id_is_not_echoed_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(&dir.path().join("echo.db"));
    let migrate = run(&["migrate", "--store", &url], T);
    assert_eq!(migrate.code(), Some(0), "{}", migrate.stderr);
    let id = "x".repeat(100 * 1024);
    for command in ["show", "runs", "trigger", "enable", "disable"] {
        let out = run(&["tasks", command, &id, "--store", &url], T);
        assert_eq!(out.code(), Some(1), "{command}: {}", out.stderr);
        assert!(out.stderr.contains("unknown task \"xxx"), "{command}: {}", out.stderr);
        assert!(
            out.stderr.len() < 1024,
            "{command}: {} bytes of stderr",
            out.stderr.len()
        );
    }
}

//! The CI profile of the torture harness (`fleetcron torture`): four worker processes for 40 s on
//! SQLite and on PostgreSQL under random SIGKILLs, SIGSTOP/SIGCONT longer than the lease, clock skew
//! of up to ±3 s, connection cuts and outages (PostgreSQL, through a proxy per worker), a whole-fleet
//! crash (SQLite), concurrent manual triggers and enable/disable flips. The harness's checker must
//! find zero violations, and the run must really have injected faults and exercised the tasks.
//!
//! The seed is random (printed, so a failure can be replayed with `--seed`), unless
//! FLEETCRON_TORTURE_SEED is set.

use crate::common::run;
use serde_json::Value;
use std::time::Duration;

fn torture(store: &str) -> Value {
    let seed = std::env::var("FLEETCRON_TORTURE_SEED").unwrap_or_else(|_| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos())
            .unwrap_or(1);
        (u64::from(nanos) ^ u64::from(std::process::id())).to_string()
    });
    let output = run(
        &[
            "torture",
            "--store",
            store,
            "--workers",
            "4",
            "--seconds",
            "40",
            "--tasks",
            "6",
            "--seed",
            &seed,
        ],
        Duration::from_secs(240),
    );
    assert_eq!(
        output.code(),
        Some(0),
        "torture on {store} (seed {seed}) failed\nstdout:\n{}\nstderr:\n{}",
        output.stdout,
        output.stderr
    );
    let last = output.stdout.lines().last().unwrap_or_default();
    let verdict: Value = serde_json::from_str(last).unwrap_or_else(|error| panic!("last line {last:?}: {error}"));
    let number = |key: &str| {
        verdict[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} missing in {verdict}"))
    };
    let fault = |key: &str| {
        verdict["faults"][key]
            .as_u64()
            .unwrap_or_else(|| panic!("faults.{key} missing in {verdict}"))
    };
    for key in [
        "duplicates",
        "early",
        "unaccounted",
        "lost_triggers",
        "overlaps",
        "fenced_writes",
        "phantoms",
        "ran_while_disabled",
        "unfinished",
        "violations",
    ] {
        assert_eq!(number(key), 0, "{key} in {verdict}");
    }
    // It really ran and really hurt: 7 tasks' slots for ~50 s, faults about every 2.5 s.
    assert!(number("slots") >= 250, "too few slots checked: {verdict}");
    assert!(
        number("ran_once") * 2 >= number("slots"),
        "most slots should run: {verdict}"
    );
    assert!(number("triggers") >= 20, "too few accepted triggers: {verdict}");
    let injected =
        fault("kill") + fault("pause") + fault("cut") + fault("outage") + fault("store_restart") + fault("flip");
    assert!(injected >= 6, "too few faults injected: {verdict}");
    assert!(fault("max_skew_ms") > 0, "no clock skew: {verdict}");
    verdict
}

#[test]
fn torture_ci_profile_sqlite() {
    let verdict = torture("sqlite");
    assert_eq!(verdict["backend"], "sqlite");
}

#[test]
fn torture_ci_profile_postgres() {
    let base = std::env::var("FLEETCRON_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let reachable = std::process::Command::new("psql")
        .args([base.as_str(), "-qtAc", "SELECT 1"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !reachable {
        if std::env::var("FLEETCRON_REQUIRE_SERVICES").is_ok_and(|value| value == "1") {
            panic!("{base} is required (FLEETCRON_REQUIRE_SERVICES=1) but unreachable");
        }
        eprintln!("\n*** SKIPPED torture_ci_profile_postgres: {base} is unreachable\n");
        return;
    }
    let schema = format!("fc_torture_{}", std::process::id());
    let verdict = torture(&format!("{base}?schema={schema}"));
    assert_eq!(verdict["backend"], "postgres");
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

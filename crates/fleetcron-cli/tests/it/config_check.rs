//! `fleetcron run --check`: the example file validates; every kind of problem is reported with its line,
//! column and field, several at once, with exit code 2.

use crate::common::run;
use std::time::Duration;

fn check(text: &str) -> crate::common::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fleetcron.toml");
    std::fs::write(&path, text).expect("write config");
    run(
        &["run", "--config", path.to_str().expect("utf-8 path"), "--check"],
        Duration::from_secs(20),
    )
}

#[test]
fn the_repository_example_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fleetcron.toml");
    let out = run(&["run", "--config", example, "--check"], Duration::from_secs(20));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("valid (4 tasks)"), "{}", out.stdout);
}

const OK_TASK: &str = "[[task]]\nid = \"t\"\nschedule = \"* * * * *\"\n";

/// (file text, expected `line:column: field: message` fragment)
const CASES: &[(&str, &str)] = &[
    ("stor = \"x\"\n", "1:1: stor: unknown key"),
    ("[engine]\nlease = \"30 parsecs\"\n", "2:9: engine.lease: invalid duration \"30 parsecs\""),
    ("[engine]\nlease = 30\n", "2:9: engine.lease: expected a string, found integer"),
    ("[engine]\npoll_interval = \"0s\"\n", "2:17: engine.poll_interval: must be greater than zero"),
    ("[engine]\nleese = \"1s\"\n", "2:1: engine.leese: unknown key"),
    ("[engine]\nlease = \"2s\"\nheartbeat_interval = \"3s\"\n", "3:22: engine.heartbeat_interval: engine.heartbeat_interval = 3s cannot keep engine.lease = 2s"),
    ("[engine]\nheartbeat_interval = \"20s\"\n", "2:22: engine.heartbeat_interval: engine.heartbeat_interval = 20s cannot keep engine.lease = 30s"),
    ("[engine]\nlease = \"100000000d\"\n", "2:9: engine.lease: engine.lease = 100000000d is out of range: use 100ms to 1d"),
    ("[engine]\ncancel_grace = \"30d\"\n", "2:16: engine.cancel_grace: engine.cancel_grace = 30d is out of range"),
    ("[[task]]\nid = \"t\"\nschedule = \"* * * * *\"\nshell = \"true\"\ntimeout = \"400d\"\n", "1:1: task[0]: task \"t\": timeout = 400d is out of range: use 1ms to 365d"),
    ("[[task]]\nid = \"t\"\nschedule = \"* * * * *\"\nshell = \"true\"\ncatch_up = { policy = \"latest\", within = \"100000d\" }\n", "task \"t\": catch_up.within = 100000d is out of range"),
    ("[[task]]\nid = \"fleetcron.retention\"\nschedule = \"* * * * *\"\nshell = \"true\"\n", "2:6: task[0].id: task id \"fleetcron.retention\" is reserved"),
    ("[[task]]\nid = \"t\"\nschedule = \"* * * * *\"\nshell = \"true\"\nkill_grace = \"2h\"\n", "5:14: task[0].kill_grace: task[0].kill_grace = 2h is out of range"),
    ("[engine]\nretention = { keep_last = 0 }\n", "engine.retention.keep_last: 0 is out of range"),
    ("[engine]\nclaim_parallelism = 0\n", "engine.claim_parallelism: 0 is out of range"),
    ("[[task]]\nschedule = \"* * * * *\"\nshell = \"true\"\n", "1:1: task[0].id: is required"),
    ("[[task]]\nid = \"has space\"\nschedule = \"* * * * *\"\nshell = \"true\"\n", "2:6: task[0].id: invalid task id \"has space\""),
    ("[[task]]\nid = \"t\"\nshell = \"true\"\n", "1:1: task[0].schedule: is required"),
    ("[[task]]\nid = \"t\"\nschedule = \"* * * *\"\nshell = \"true\"\n", "3:12: task[0].schedule: invalid schedule \"* * * *\""),
    ("[[task]]\nid = \"t\"\nschedule = \"61 * * * *\"\nshell = \"true\"\n", "3:12: task[0].schedule: invalid schedule"),
    ("[[task]]\nid = \"t\"\nschedule = \"* * * * *\"\ntimezone = \"Mars/Olympus\"\nshell = \"true\"\n", "4:12: task[0].timezone: unknown time zone \"Mars/Olympus\""),
    ("[[task]]\nid = \"t\"\nschedule = \"* * * * *\"\n", "1:1: task[0]: needs one of command, shell or http"),
    ("[[task]]\nid = \"t\"\nschedule = \"* * * * *\"\ncommand = [\"true\"]\nshell = \"true\"\n", "4:11: task[0]: has both command and shell"),
    ("[[task]]\nid = \"t\"\nschedule = \"* * * * *\"\ncommand = []\n", "4:11: task[0].command: must not be empty"),
    ("[[task]]\nid = \"t\"\nschedule = \"* * * * *\"\ncommand = \"ls -l\"\n", "4:11: task[0].command: expected an array of strings (argv), found string"),
    ("[[task]]\nid = \"t\"\nschedule = \"* * * * *\"\nshell = \"true\"\ntimeout = \"1.5s\"\n", "5:11: task[0].timeout: invalid duration \"1.5s\""),
    ("[[task]]\nid = \"t\"\nschedule = \"* * * * *\"\nshell = \"true\"\noverlap = \"sometimes\"\n", "5:11: task[0].overlap: unknown overlap policy \"sometimes\""),
    ("[[task]]\nid = \"t\"\nschedule = \"* * * * *\"\nshell = \"true\"\ncatch_up = \"never\"\n", "5:12: task[0].catch_up: unknown catch_up policy \"never\""),
    ("[[task]]\nid = \"t\"\nschedule = \"* * * * *\"\nshell = \"true\"\ncatch_up = { policy = \"all\", max = 0 }\n", "5:36: task[0].catch_up.max: 0 is out of range"),
    ("[[task]]\nid = \"t\"\nschedule = \"* * * * *\"\nshell = \"true\"\ncatch_up = { policy = \"latest\", max = 3 }\n", "5:33: task[0].catch_up.max: unknown key"),
    ("[[task]]\nid = \"t\"\nschedule = \"* * * * *\"\nshell = \"true\"\ncatch_up = { within = \"1h\" }\n", "5:12: task[0].catch_up.policy: is required"),
    ("[[task]]\nid = \"t\"\nschedule = \"* * * * *\"\nshell = \"true\"\non_abandon = { policy = \"retry\", max_attempts = 0 }\n", "5:49: task[0].on_abandon.max_attempts: 0 is out of range"),
    ("[[task]]\nid = \"t\"\nschedule = \"* * * * *\"\nshell = \"true\"\non_abandon = \"again\"\n", "5:14: task[0].on_abandon: unknown on_abandon policy \"again\""),
    ("[[task]]\nid = \"t\"\nschedule = \"* * * * *\"\nshell = \"true\"\nbogus = 1\n", "5:1: task[0].bogus: unknown key"),
    ("[[task]]\nid = \"t\"\nschedule = \"* * * * *\"\nhttp = { url = \"ftp://x\" }\n", "4:16: task[0].http.url: invalid URL \"ftp://x\""),
    ("[[task]]\nid = \"t\"\nschedule = \"* * * * *\"\nhttp = { method = \"POST\" }\n", "4:8: task[0].http.url: is required"),
    ("[[task]]\nid = \"t\"\nschedule = \"* * * * *\"\nhttp = { url = \"http://x/\", expect_status = [99] }\n", "task[0].http.expect_status: 99 is out of range"),
    ("[[task]]\nid = \"t\"\nschedule = \"* * * * *\"\nhttp = { url = \"http://x/\", verb = \"GET\" }\n", "task[0].http.verb: unknown key"),
    ("[[task]]\nid = \"t\"\nschedule = \"* * * * *\"\nhttp = { url = \"http://x/\" }\nworkdir = \"/\"\n", "5:11: task[0].workdir: applies only to command and shell tasks"),
    ("[[task]]\nid = \"t\"\nschedule = \"* * * * *\"\nshell = \"true\"\nenv = { A = 1 }\n", "5:13: task[0].env.A: expected a string, found integer"),
    ("task = 3\n", "1:8: task: expected an array of tables ([[task]]), found integer"),
    ("[[task]\n", "1:"),
];

#[test]
fn every_problem_has_its_message_line_and_field() {
    let mut failures = Vec::new();
    for (text, expected) in CASES {
        let out = check(text);
        if out.code() != Some(2) || !out.stderr.contains(expected) {
            failures.push(format!(
                "--- {text:?}\nexpected exit 2 and {expected:?}\ngot {:?}: {}",
                out.code(),
                out.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn params_too_large_to_hand_to_a_run_are_refused() {
    let big = "x".repeat(fleetcron_cli_max_params() + 1);
    let text = format!("{OK_TASK}shell = \"true\"\nparams = {{ blob = \"{big}\" }}\n");
    let out = check(&text);
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("task[0].params: is "), "{}", out.stderr);
    assert!(
        out.stderr.len() < 2000,
        "the blob is not echoed: {} bytes",
        out.stderr.len()
    );
}

/// The bound of `params` (the daemon's `MAX_PARAMS_BYTES`, 1 MiB).
fn fleetcron_cli_max_params() -> usize {
    1024 * 1024
}

/// `--check` on tens of thousands of tasks is linear in the file's size: every position is a binary
/// search, not a scan from the top of the file (which took minutes, quadratically). The bound is loose:
/// an unoptimised build on a shared machine; the closing note has the release figure for 100,000.
#[test]
fn checking_thirty_thousand_tasks_is_linear() {
    let mut text = String::with_capacity(3_300_000);
    for index in 0..30_000 {
        text.push_str(&format!(
            "[[task]]\nid = \"task-{index:06}\"\nschedule = \"*/5 * * * *\"\ncommand = [\"/bin/true\"]\n\n"
        ));
    }
    // One problem at the very end: its line number must still be right.
    text.push_str("[[task]]\nid = \"last\"\nschedule = \"bad\"\nshell = \"true\"\n");
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fleetcron.toml");
    std::fs::write(&path, &text).expect("write config");
    let out = run(
        &["run", "--config", path.to_str().expect("utf-8 path"), "--check"],
        Duration::from_secs(90),
    );
    let elapsed = started.elapsed();
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains(":150003:12: task[30000].schedule"),
        "{}",
        out.stderr
    );
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
}

#[test]
fn duplicate_ids_name_the_first_line() {
    let text = format!("{OK_TASK}shell = \"true\"\n{OK_TASK}shell = \"true\"\n");
    let out = check(&text);
    assert_eq!(out.code(), Some(2));
    assert!(
        out.stderr
            .contains(":6:6: task[1].id: duplicate task id \"t\" (first defined on line 2)"),
        "{}",
        out.stderr
    );
}

#[test]
fn all_problems_are_reported_at_once_in_file_order() {
    let text = "stor = 1\n[engine]\nlease = \"x\"\n[[task]]\nid = \"a\"\nschedule = \"bad\"\n[[task]]\nid = \"b\"\nschedule = \"* * * * *\"\ntimezone = \"No/Where\"\nshell = \"true\"\ntimeout = \"0s\"\n";
    let out = check(text);
    assert_eq!(out.code(), Some(2));
    let lines: Vec<&str> = out.stderr.lines().collect();
    let positions: Vec<&str> = lines
        .iter()
        .filter_map(|line| line.split(".toml:").nth(1))
        .filter(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        .filter_map(|rest| rest.split(": ").next())
        .collect();
    assert_eq!(
        positions,
        ["1:1", "3:9", "4:1", "6:12", "10:12", "12:11"],
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("6 problems found; nothing was started"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_missing_file_is_a_usage_error() {
    let out = run(
        &["run", "--config", "/nonexistent-dir/fleetcron.toml", "--check"],
        Duration::from_secs(20),
    );
    assert_eq!(out.code(), Some(2));
    assert!(
        out.stderr.contains("cannot read /nonexistent-dir/fleetcron.toml"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"));
}

/// `--check` refuses a store URL that `run` would refuse (a misspelt parameter), without connecting.
#[test]
fn a_store_url_run_would_refuse_fails_the_check() {
    let out = check(&format!(
        "store = \"postgres://u@127.0.0.1:1/db?Schema=jobs\"\n{OK_TASK}shell = \"true\"\n"
    ));
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("\"Schema\""), "{}", out.stderr);
    let fine = check(&format!(
        "store = \"postgres://u@127.0.0.1:1/db?schema=jobs\"\n{OK_TASK}shell = \"true\"\n"
    ));
    assert_eq!(fine.code(), Some(0), "no connection is attempted: {}", fine.stderr);
}

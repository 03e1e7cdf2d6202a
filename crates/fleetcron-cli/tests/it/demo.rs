//! `fleetcron demo`: runs to the end, and its last line is the exactly-once summary with no duplicate
//! and no missed slot.

use crate::common::run;
use std::time::Duration;

/// Parses `summary: slots=<int> ran_once=<int> duplicates=<int> missed=<int> skipped=<int>` exactly.
fn parse_summary(line: &str) -> Option<[u64; 5]> {
    let rest = line.strip_prefix("summary: ")?;
    let keys = ["slots", "ran_once", "duplicates", "missed", "skipped"];
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.len() != keys.len() {
        return None;
    }
    let mut values = [0u64; 5];
    for ((field, key), value) in fields.iter().zip(keys).zip(values.iter_mut()) {
        let number = field.strip_prefix(key)?.strip_prefix('=')?;
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *value = number.parse().ok()?;
    }
    Some(values)
}

#[test]
fn summary_parser_is_strict() {
    assert_eq!(
        parse_summary("summary: slots=10 ran_once=8 duplicates=0 missed=0 skipped=2"),
        Some([10, 8, 0, 0, 2])
    );
    assert_eq!(
        parse_summary("summary: slots=10 ran_once=8 duplicates=0 missed=0"),
        None
    );
    assert_eq!(
        parse_summary("summary: slots=-1 ran_once=8 duplicates=0 missed=0 skipped=2"),
        None
    );
    assert_eq!(
        parse_summary(" summary: slots=1 ran_once=1 duplicates=0 missed=0 skipped=0"),
        None
    );
}

#[test]
fn demo_runs_every_slot_once() {
    let output = run(&["demo", "--seconds", "12", "--workers", "3"], Duration::from_secs(90));
    let last = output.stdout.lines().last().unwrap_or_default();
    assert_eq!(
        output.code(),
        Some(0),
        "demo failed; stdout tail:\n{}\nstderr:\n{}",
        output
            .stdout
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n"),
        output.stderr
    );
    let [slots, ran_once, duplicates, missed, skipped] =
        parse_summary(last).unwrap_or_else(|| panic!("last line is not a summary: {last:?}"));
    assert_eq!(duplicates, 0, "{last}");
    assert_eq!(missed, 0, "{last}");
    assert_eq!(slots, ran_once + duplicates + missed + skipped, "{last}");
    // 12 s of three every-second tasks alone is over 30 slots.
    assert!(slots >= 30 && ran_once >= 30, "{last}");
    // The slow task overruns its interval, so some of its slots are skipped.
    assert!(skipped >= 1, "{last}");
    // The live log shows which worker ran which slot, and the kill and restart.
    assert!(output.stdout.contains(" ran demo.tick-a slot "), "{}", output.stdout);
    assert!(output.stdout.contains("demo: SIGKILL w"), "{}", output.stdout);
    assert!(output.stdout.contains("demo: restarted w"), "{}", output.stdout);
    // The demo serves its dashboard and says where.
    assert!(
        output.stdout.contains("demo: dashboard at http://127.0.0.1:"),
        "{}",
        output.stdout
    );
}

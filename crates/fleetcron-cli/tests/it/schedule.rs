//! `fleetcron schedule next|explain`: exact output for a table of patterns, zones and start instants
//! (DST gaps and overlaps in Europe/London and America/New_York, `L`, `W`, `#`, `@` macros, 6 fields),
//! and the usage errors (exit code 2, one line on stderr).

use crate::common::run;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

/// `(pattern, zone, from, expected slots)`; the count asked is the number of expected slots.
const CASES: &[(&str, &str, &str, &[&str])] = &[
    // Plain steps, strictly after --from.
    (
        "*/15 * * * *",
        "UTC",
        "2026-01-01T00:00:00Z",
        &["2026-01-01T00:15:00Z", "2026-01-01T00:30:00Z", "2026-01-01T00:45:00Z"],
    ),
    // Six fields: seconds first.
    (
        "*/20 * * * * *",
        "UTC",
        "2026-01-01T00:00:00Z",
        &["2026-01-01T00:00:20Z", "2026-01-01T00:00:40Z", "2026-01-01T00:01:00Z"],
    ),
    (
        "30 15 10 * * *",
        "UTC",
        "2026-01-01T10:15:30Z",
        &["2026-01-02T10:15:30Z", "2026-01-03T10:15:30Z"],
    ),
    // A fractional --from: the next whole slot after it.
    (
        "0 * * * *",
        "UTC",
        "2026-03-29T00:59:59.999Z",
        &["2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"],
    ),
    // Macros.
    (
        "@daily",
        "UTC",
        "2026-01-31T12:00:00Z",
        &["2026-02-01T00:00:00Z", "2026-02-02T00:00:00Z"],
    ),
    (
        "@hourly",
        "UTC",
        "2026-01-01T00:00:00Z",
        &["2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"],
    ),
    (
        "@weekly",
        "UTC",
        "2026-01-01T00:00:00Z",
        &["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"],
    ),
    (
        "@monthly",
        "UTC",
        "2026-01-15T00:00:00Z",
        &["2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"],
    ),
    // L: last day of the month (2026 is not a leap year).
    (
        "0 12 L * *",
        "UTC",
        "2026-01-01T00:00:00Z",
        &["2026-01-31T12:00:00Z", "2026-02-28T12:00:00Z", "2026-03-31T12:00:00Z"],
    ),
    // Last Friday of the month, two spellings.
    (
        "0 0 * * 5L",
        "UTC",
        "2026-01-01T00:00:00Z",
        &["2026-01-30T00:00:00Z", "2026-02-27T00:00:00Z", "2026-03-27T00:00:00Z"],
    ),
    (
        "0 0 * * FRI#L",
        "UTC",
        "2026-01-01T00:00:00Z",
        &["2026-01-30T00:00:00Z", "2026-02-27T00:00:00Z", "2026-03-27T00:00:00Z"],
    ),
    // W: nearest weekday to the 15th (15 Feb and 15 Mar 2026 are Sundays -> Monday 16th).
    (
        "0 9 15W * *",
        "UTC",
        "2026-01-01T00:00:00Z",
        &["2026-01-15T09:00:00Z", "2026-02-16T09:00:00Z", "2026-03-16T09:00:00Z"],
    ),
    // #: second Friday.
    (
        "0 9 * * 5#2",
        "UTC",
        "2026-01-01T00:00:00Z",
        &["2026-01-09T09:00:00Z", "2026-02-13T09:00:00Z", "2026-03-13T09:00:00Z"],
    ),
    // Day of month and day of week both restricted: either matches (croner's default, like Vixie cron).
    (
        "0 0 13 * FRI",
        "UTC",
        "2026-01-01T00:00:00Z",
        &["2026-01-02T00:00:00Z", "2026-01-09T00:00:00Z", "2026-01-13T00:00:00Z"],
    ),
    // Names and ranges, in a zone (London is on BST from 29 March).
    (
        "0 9 * * MON-FRI",
        "Europe/London",
        "2026-03-27T12:00:00Z",
        &["2026-03-30T08:00:00Z", "2026-03-31T08:00:00Z", "2026-04-01T08:00:00Z"],
    ),
    (
        "0 9 * JAN,MAR *",
        "Europe/Berlin",
        "2026-01-30T12:00:00Z",
        &["2026-01-31T08:00:00Z", "2026-03-01T08:00:00Z"],
    ),
    // Europe/London spring forward, 2026-03-29 01:00 GMT -> 02:00 BST. A fixed time inside the gap runs
    // at the first valid instant after it (02:00 BST = 01:00Z), once.
    (
        "30 1 * * *",
        "Europe/London",
        "2026-03-27T00:00:00Z",
        &[
            "2026-03-27T01:30:00Z",
            "2026-03-28T01:30:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-30T00:30:00Z",
        ],
    ),
    // An hourly pattern simply has no 01:30 that day.
    (
        "30 * * * *",
        "Europe/London",
        "2026-03-28T23:45:00Z",
        &["2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z", "2026-03-29T02:30:00Z"],
    ),
    // Europe/London fall back, 2026-10-25 02:00 BST -> 01:00 GMT. A fixed time in the repeated hour runs
    // once, at its first occurrence (01:30 BST = 00:30Z).
    (
        "30 1 * * *",
        "Europe/London",
        "2026-10-24T00:00:00Z",
        &["2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
    ),
    // An hourly pattern runs in both passes of the repeated hour.
    (
        "30 * * * *",
        "Europe/London",
        "2026-10-24T23:45:00Z",
        &[
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:30:00Z",
            "2026-10-25T02:30:00Z",
            "2026-10-25T03:30:00Z",
        ],
    ),
    // America/New_York spring forward, 2026-03-08 02:00 EST -> 03:00 EDT.
    (
        "30 2 * * *",
        "America/New_York",
        "2026-03-07T00:00:00Z",
        &["2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"],
    ),
    // Interval slots inside the gap are skipped.
    (
        "*/30 * * * *",
        "America/New_York",
        "2026-03-08T06:45:00Z",
        &["2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z", "2026-03-08T08:00:00Z"],
    ),
    // America/New_York fall back, 2026-11-01 02:00 EDT -> 01:00 EST.
    (
        "30 1 * * *",
        "America/New_York",
        "2026-10-31T00:00:00Z",
        &["2026-10-31T05:30:00Z", "2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"],
    ),
    (
        "0 * * * *",
        "America/New_York",
        "2026-11-01T04:30:00Z",
        &["2026-11-01T05:00:00Z", "2026-11-01T06:00:00Z", "2026-11-01T07:00:00Z"],
    ),
    // --from with an offset is the same instant in UTC.
    (
        "0 0 * * *",
        "UTC",
        "2026-03-29T02:00:00+01:00",
        &["2026-03-30T00:00:00Z"],
    ),
];

#[test]
fn next_prints_exact_slots() {
    let mut failures = Vec::new();
    for (pattern, zone, from, expected) in CASES {
        let count = expected.len().to_string();
        let args = [
            "schedule", "next", pattern, "--tz", zone, "--from", from, "--count", &count,
        ];
        let output = run(&args, TIMEOUT);
        let lines: Vec<&str> = output.stdout.lines().collect();
        if output.code() != Some(0) || lines != *expected || !output.stderr.is_empty() {
            failures.push(format!(
                "{pattern:?} --tz {zone} --from {from}: exit {:?}, got {lines:?}, expected {expected:?}, stderr {:?}",
                output.code(),
                output.stderr
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "schedule next mismatches:\n{}",
        failures.join("\n")
    );
}

#[test]
fn next_defaults_to_five_slots_from_now_in_utc() {
    let output = run(&["schedule", "next", "* * * * * *"], TIMEOUT);
    assert_eq!(output.code(), Some(0), "stderr: {}", output.stderr);
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    for line in &lines {
        assert_eq!(line.len(), "2026-03-29T01:00:00Z".len(), "{line}");
        assert!(line.ends_with('Z'), "{line}");
    }
    assert!(lines.windows(2).all(|pair| pair[0] < pair[1]), "{lines:?}");
}

#[test]
fn next_handles_large_and_zero_counts() {
    let output = run(
        &[
            "schedule",
            "next",
            "* * * * * *",
            "--from",
            "2026-01-01T00:00:00Z",
            "--count",
            "100000",
        ],
        TIMEOUT,
    );
    assert_eq!(output.code(), Some(0), "stderr: {}", output.stderr);
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert_eq!(lines.len(), 100_000);
    assert_eq!(lines.first().copied(), Some("2026-01-01T00:00:01Z"));
    assert_eq!(lines.last().copied(), Some("2026-01-02T03:46:40Z"));

    let output = run(&["schedule", "next", "* * * * *", "--count", "0"], TIMEOUT);
    assert_eq!(output.code(), Some(0));
    assert_eq!(output.stdout, "");
}

#[test]
fn invalid_input_exits_2_with_one_clear_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["schedule", "next", "bogus"], "error: invalid schedule \"bogus\""),
        (
            &["schedule", "next", "61 * * * *"],
            "error: invalid schedule \"61 * * * *\"",
        ),
        (&["schedule", "next", "* * *"], "error: invalid schedule \"* * *\""),
        (
            &["schedule", "next", "0 0 30 2 *"],
            "error: invalid schedule \"0 0 30 2 *\"",
        ),
        (
            &["schedule", "next", "* * * * *", "--tz", "Mars/Olympus"],
            "error: unknown time zone \"Mars/Olympus\"",
        ),
        (
            &["schedule", "next", "* * * * *", "--from", "yesterday"],
            "error: invalid --from \"yesterday\"",
        ),
        (
            &["schedule", "next", "* * * * *", "--from", "2026-13-01T00:00:00Z"],
            "error: invalid --from",
        ),
        (
            &["schedule", "explain", "nope nope"],
            "error: invalid schedule \"nope nope\"",
        ),
        (
            &["schedule", "explain", "* * * * *", "--tz", "Nowhere"],
            "error: unknown time zone \"Nowhere\"",
        ),
    ];
    for (args, prefix) in cases {
        let output = run(args, TIMEOUT);
        assert_eq!(output.code(), Some(2), "{args:?}: stderr {:?}", output.stderr);
        assert_eq!(output.stdout, "", "{args:?}");
        assert!(
            output.stderr.starts_with(prefix),
            "{args:?}: stderr {:?}",
            output.stderr
        );
        assert_eq!(output.stderr.lines().count(), 1, "{args:?}: stderr {:?}", output.stderr);
    }
    // Usage errors from the argument parser exit 2 too.
    for args in [
        &["schedule", "next"][..],
        &["schedule", "next", "* * * * *", "--count", "100001"],
        &["schedule", "next", "* * * * *", "--count", "-1"],
        &["schedule", "next", "* * * * *", "--bogus"],
        &["schedule", "frobnicate"],
    ] {
        let output = run(args, TIMEOUT);
        assert_eq!(output.code(), Some(2), "{args:?}: stderr {:?}", output.stderr);
        assert!(
            output.stderr.starts_with("error:"),
            "{args:?}: stderr {:?}",
            output.stderr
        );
    }
}

/// A mistyped pattern (which croner alone would read as something else) gets the same message, naming
/// the field and the item, from `schedule next` and from the daemon's `--check`, and both exit 2.
#[test]
fn schedule_next_and_the_config_check_refuse_mistyped_patterns_alike() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: &[(&str, &str)] = &[
        ("*/61 * * * *", "the minute field \"*/61\" has step 61"),
        ("0 */25 * * *", "the hour field \"*/25\" has step 25"),
        ("0 0 * * */8", "the day-of-week field \"*/8\" has step 8"),
        ("1,,2 * * * *", "the minute field \"1,,2\" has an empty list item"),
        ("0 0 * MON *", "the month field \"MON\" holds the weekday name MON"),
        ("0 0 * * JAN", "the day-of-week field \"JAN\" holds the month name JAN"),
    ];
    for (index, (pattern, fragment)) in cases.iter().enumerate() {
        let next = run(&["schedule", "next", pattern], TIMEOUT);
        assert_eq!(next.code(), Some(2), "{pattern}: {}", next.stderr);
        assert!(next.stderr.contains(fragment), "{pattern}: {}", next.stderr);
        let message = next.stderr.trim_end().trim_start_matches("error: ");
        let path = dir.path().join(format!("case{index}.toml"));
        let text = format!("[[task]]\nid = \"t\"\nschedule = \"{pattern}\"\nshell = \"true\"\n");
        std::fs::write(&path, text).expect("write config");
        let config = path.to_str().expect("utf-8 path");
        let check = run(&["run", "--config", config, "--check"], TIMEOUT);
        assert_eq!(check.code(), Some(2), "{pattern}: {}", check.stderr);
        assert!(
            check.stderr.contains(&format!("3:12: task[0].schedule: {message}")),
            "{pattern}: schedule next said {message:?}, --check said {:?}",
            check.stderr
        );
    }
}

#[test]
fn explain_describes_and_previews() {
    let output = run(
        &[
            "schedule",
            "explain",
            "0 9 * * MON-FRI",
            "--tz",
            "Europe/London",
            "--from",
            "2026-03-27T12:00:00Z",
        ],
        TIMEOUT,
    );
    assert_eq!(output.code(), Some(0), "stderr: {}", output.stderr);
    assert!(output.stdout.contains("09:00"), "{}", output.stdout);
    assert!(
        output
            .stdout
            .contains("2026-03-30T08:00:00Z  (Mon 2026-03-30 09:00:00 BST)"),
        "{}",
        output.stdout
    );
    let slots = output.stdout.lines().filter(|line| line.starts_with("  2026-")).count();
    assert_eq!(slots, 5, "{}", output.stdout);
}

#[test]
fn help_lists_the_public_commands_only() {
    let output = run(&["--help"], TIMEOUT);
    assert_eq!(output.code(), Some(0));
    assert!(
        output.stdout.contains("schedule") && output.stdout.contains("demo"),
        "{}",
        output.stdout
    );
    let commands: Vec<&str> = output
        .stdout
        .lines()
        .filter_map(|line| line.strip_prefix("  "))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(
        commands.contains(&"schedule") && commands.contains(&"demo"),
        "{commands:?}"
    );
    assert!(
        !commands.contains(&"worker") && !commands.contains(&"summary"),
        "{commands:?}"
    );
}

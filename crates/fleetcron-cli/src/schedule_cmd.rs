//! `fleetcron schedule next|explain`: previews of a cron pattern in a time zone, computed by the same
//! [`Schedule`] the scheduler uses (croner semantics, DST gaps and overlaps included).

use crate::{CliError, CliResult};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use fleetcron_core::Schedule;
use std::io::Write;
use std::process::ExitCode;

/// Largest `--count` accepted.
pub const MAX_COUNT: u32 = 100_000;

/// The `schedule` subcommands.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Print the next slots of PATTERN strictly after --from, one RFC 3339 UTC instant per line.
    Next(NextArgs),
    /// Describe PATTERN in words and show its next 5 slots.
    Explain(ExplainArgs),
}

/// Arguments of `schedule next`.
#[derive(Debug, Args)]
pub struct NextArgs {
    /// The cron pattern: 5 fields, or 6 with seconds first; `L`, `W`, `#`, names and `@daily` etc.
    /// Quote it: '0 9 * * MON-FRI'.
    pub pattern: String,
    /// IANA time zone the pattern is evaluated in.
    #[arg(long, value_name = "ZONE", default_value = "UTC")]
    pub tz: String,
    /// Start instant, RFC 3339 (e.g. 2026-03-29T00:00:00Z or 2026-03-29T01:00:00+01:00); default now.
    #[arg(long, value_name = "RFC3339")]
    pub from: Option<String>,
    /// How many slots to print (at most 100000).
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_COUNT)))]
    pub count: u32,
}

/// Arguments of `schedule explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The cron pattern (quote it).
    pub pattern: String,
    /// IANA time zone the pattern is evaluated in.
    #[arg(long, value_name = "ZONE", default_value = "UTC")]
    pub tz: String,
    /// Start instant, RFC 3339; default now.
    #[arg(long, value_name = "RFC3339")]
    pub from: Option<String>,
}

/// Runs a `schedule` subcommand.
pub fn run(command: ScheduleCommand) -> CliResult {
    match command {
        ScheduleCommand::Next(args) => next(&args),
        ScheduleCommand::Explain(args) => explain(&args),
    }
}

/// Parses `--from`: an RFC 3339 instant (any offset), or `now`.
pub fn parse_from(from: Option<&str>) -> Result<DateTime<Utc>, CliError> {
    match from.map(str::trim) {
        None => Ok(Utc::now()),
        Some(text) if text.eq_ignore_ascii_case("now") => Ok(Utc::now()),
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map(|instant| instant.with_timezone(&Utc))
            .map_err(|error| {
                CliError::usage(format!(
                    "invalid --from {text:?}: {error}; expected an RFC 3339 instant such as 2026-03-29T01:00:00Z"
                ))
            }),
    }
}

fn parse_schedule(pattern: &str, zone: &str) -> Result<Schedule, CliError> {
    Schedule::parse(pattern, zone).map_err(CliError::usage)
}

/// An instant as RFC 3339 UTC with whole seconds and a `Z` suffix.
pub fn format_utc(instant: DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Writes `text` to stdout; a closed pipe (`| head`) ends the command quietly.
fn emit(text: &str) -> CliResult {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(error) => Err(CliError::runtime(format!("cannot write to stdout: {error}"))),
    }
}

/// The lines `schedule next` prints.
pub fn next_lines(schedule: &Schedule, from: DateTime<Utc>, count: usize) -> String {
    let mut out = String::with_capacity(count.min(1 << 16) * 21);
    for slot in schedule.upcoming(from, count) {
        out.push_str(&format_utc(slot));
        out.push('\n');
    }
    out
}

fn next(args: &NextArgs) -> CliResult {
    let schedule = parse_schedule(&args.pattern, &args.tz)?;
    let from = parse_from(args.from.as_deref())?;
    let count = usize::try_from(args.count.min(MAX_COUNT)).unwrap_or(0);
    emit(&next_lines(&schedule, from, count))
}

fn explain(args: &ExplainArgs) -> CliResult {
    let schedule = parse_schedule(&args.pattern, &args.tz)?;
    let from = parse_from(args.from.as_deref())?;
    let zone = schedule.timezone();
    let mut out = format!(
        "pattern:  {}\ntimezone: {}\nmeaning:  {}\nnext 5 slots after {}:\n",
        schedule.pattern(),
        zone.name(),
        schedule.describe(),
        format_utc(from)
    );
    let slots = schedule.upcoming(from, 5);
    if slots.is_empty() {
        out.push_str("  (none)\n");
    }
    for slot in slots {
        out.push_str(&format!(
            "  {}  ({})\n",
            format_utc(slot),
            slot.with_timezone(&zone).format("%a %Y-%m-%d %H:%M:%S %Z")
        ));
    }
    emit(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_accepts_offsets_and_rejects_garbage() {
        let parsed = parse_from(Some("2026-03-29T02:00:00+01:00")).expect("valid instant");
        assert_eq!(format_utc(parsed), "2026-03-29T01:00:00Z");
        assert!(parse_from(Some("yesterday")).is_err());
        assert!(parse_from(Some("2026-03-29")).is_err());
        assert!(parse_from(Some("now")).is_ok());
    }

    #[test]
    fn next_lines_are_whole_second_utc() {
        let schedule = Schedule::parse("0 * * * *", "UTC").expect("valid pattern");
        let from = parse_from(Some("2026-03-29T00:30:00.250Z")).expect("valid instant");
        assert_eq!(
            next_lines(&schedule, from, 2),
            "2026-03-29T01:00:00Z\n2026-03-29T02:00:00Z\n"
        );
    }
}

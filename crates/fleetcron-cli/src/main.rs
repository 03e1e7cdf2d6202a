//! The `fleetcron` command: the daemon (`run`), admin commands (`tasks`, `migrate`), schedule previews,
//! the demo, the worker processes the demo and the multi-process tests start, and what a package
//! installs beside the binary (`completions`, `man`).
//!
//! Exit codes: 0 success; 1 a runtime failure (unknown task id, the demo's check failed); 2 a usage
//! error (bad flags, invalid configuration file, schedule pattern, time zone or instant); 3 the store
//! could not be reached or opened. Every error is one line on stderr starting with `error:` (an invalid
//! configuration file prints one such line per problem).

mod admin;
mod admin_config;
mod config;
mod daemon;
mod demo;
mod dist;
mod exec;
mod lag;
mod logging;
mod notify;
mod process;
mod schedule_cmd;
mod secrets;
mod serve;
mod summary;
mod torture;
mod worker;

use clap::{CommandFactory, Parser, Subcommand};
use std::fmt;
use std::io::Write;
use std::process::ExitCode;

/// Distributed cron: every scheduled firing runs exactly once across a fleet of workers.
#[derive(Debug, Parser)]
#[command(name = "fleetcron", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the tasks of a configuration file on a store, as one worker of the fleet.
    Run(daemon::RunArgs),
    /// Inspect and control the tasks in a store: list, show, runs, trigger, enable, disable.
    #[command(subcommand)]
    Tasks(admin::TasksCommand),
    /// Create or upgrade the store's schema.
    Migrate(admin::MigrateArgs),
    /// Serve the admin API, Prometheus /metrics and the web dashboard for a store.
    Serve(serve::ServeArgs),
    /// Preview cron schedules: when a pattern fires, and what it means.
    #[command(subcommand)]
    Schedule(schedule_cmd::ScheduleCommand),
    /// Run several worker processes on an embedded SQLite store for a while, show which worker ran
    /// which slot, and check from the store's history and the handlers' log that each slot ran once.
    Demo(demo::DemoArgs),
    /// Torture test: worker processes on one store under random kills, pauses, clock skew, cuts,
    /// store restarts, triggers and enable/disable flips; then a check that every guarantee held.
    Torture(torture::TortureArgs),
    /// Print a shell completion script on stdout (bash, zsh, fish, elvish, powershell).
    Completions(dist::CompletionsArgs),
    /// Print the man page fleetcron(1) on stdout, or write every page into a directory.
    Man(dist::ManArgs),
    /// One worker process (used by `fleetcron demo` and the multi-process tests).
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
    /// The demo's exactly-once check, on any store and handlers' log.
    #[command(hide = true)]
    Summary(summary::SummaryArgs),
    /// Start lag (slot instant to handler start) from a handlers' log, as JSON percentiles.
    #[command(hide = true)]
    Lag(lag::LagArgs),
}

/// A failure of a subcommand: its message (one line) and the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    message: String,
    code: u8,
}

impl CliError {
    /// A usage error (exit code 2): invalid pattern, zone or instant.
    pub fn usage(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            code: 2,
        }
    }

    /// A runtime failure (exit code 1).
    pub fn runtime(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            code: 1,
        }
    }

    /// The store could not be reached or opened (exit code 3).
    pub fn unreachable(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            code: 3,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keep the message on one line whatever the underlying error printed.
        let mut first = true;
        for line in self.message.lines().map(str::trim).filter(|line| !line.is_empty()) {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(line)?;
            first = false;
        }
        Ok(())
    }
}

/// What a subcommand returns: its exit code on success (a demo whose check failed exits 1 without an
/// error message of its own), or an error.
pub type CliResult = Result<ExitCode, CliError>;

fn init_tracing(default_filter: &str) {
    logging::init(default_filter, logging::LogFormat::Text);
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| CliError::runtime(format!("cannot start the async runtime: {error}")))
}

fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Schedule(command) => schedule_cmd::run(command),
        Command::Run(args) => {
            let runtime = runtime()?;
            let outcome = runtime.block_on(daemon::run(args));
            // A reload still parsing a big file on a blocking thread must not hold up the exit.
            runtime.shutdown_timeout(std::time::Duration::from_millis(100));
            outcome
        }
        Command::Tasks(command) => {
            init_tracing("error");
            runtime()?.block_on(admin::tasks(command))
        }
        Command::Migrate(args) => {
            init_tracing("error");
            runtime()?.block_on(admin::migrate(args))
        }
        Command::Serve(args) => {
            init_tracing("info");
            runtime()?.block_on(serve::run(args))
        }
        Command::Demo(args) => {
            init_tracing("warn");
            runtime()?.block_on(demo::run(args))
        }
        Command::Worker(args) => {
            init_tracing("warn");
            runtime()?.block_on(worker::run(args))
        }
        Command::Lag(args) => lag::run(args),
        Command::Completions(args) => dist::completions(args, Cli::command()),
        Command::Man(args) => dist::man(args, Cli::command()),
        Command::Torture(args) => {
            init_tracing("warn");
            runtime()?.block_on(torture::run(args))
        }
        Command::Summary(args) => {
            init_tracing("warn");
            runtime()?.block_on(summary::run(args))
        }
    }
}

fn main() -> ExitCode {
    secrets::protect_invocation();
    secrets::install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            // Nothing more can be done if stderr itself is gone.
            let _ = writeln!(std::io::stderr().lock(), "error: {error}");
            ExitCode::from(error.code)
        }
    }
}

/// Prints a command-line parse error (or `--help`, `--version`) as clap would, scrubbed of the secrets
/// of the arguments: clap quotes a misplaced argument whole, which may be a store URL.
fn usage_error(error: clap::Error) -> ExitCode {
    let code = u8::try_from(error.exit_code()).unwrap_or(2);
    let rendered = error.render().to_string();
    let scrubbed = secrets::scrub(&rendered);
    if scrubbed == rendered {
        // Nothing to hide: clap's own output, with its colours.
        let _ = error.print();
    } else if error.use_stderr() {
        let _ = write!(std::io::stderr().lock(), "{scrubbed}");
    } else {
        let _ = write!(std::io::stdout().lock(), "{scrubbed}");
    }
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn errors_print_on_one_line() {
        let error = CliError::runtime("first\n  second\n\nthird");
        assert_eq!(error.to_string(), "first second third");
        assert_eq!(CliError::usage("x").code, 2);
    }
}
